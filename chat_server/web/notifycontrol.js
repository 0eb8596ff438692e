// The room header's "Notifications" control: a button showing the open
// room's setting that opens a small dialog with the choices `All`,
// `Mentions`, `Nothing` and `Mute` (for 1 hour, 8 hours, 1 day or until
// unmuted). A choice is saved at once (PUT /rooms/{id}/notify); changes made
// in another tab arrive as `notify` frames and show here live.
import { h, openDialog, showError } from './dom.js';
import { isMuted, notifySettings } from './notifications.js';

const LEVELS = [
  { level: 'all', label: 'All', hint: 'Every new message' },
  { level: 'mentions', label: 'Mentions', hint: 'Messages that mention you (@name or @room)' },
  { level: 'none', label: 'Nothing', hint: 'No notifications' },
];
const LABELS = { all: 'All', mentions: 'Mentions', none: 'Nothing' };
const HOUR_MS = 3_600_000;
const MUTE_CHOICES = [
  { value: '1h', label: '1 hour', ms: HOUR_MS },
  { value: '8h', label: '8 hours', ms: 8 * HOUR_MS },
  { value: '1d', label: '1 day', ms: 24 * HOUR_MS },
  { value: 'forever', label: 'Until I unmute', ms: null },
];
// "Until I unmute": the latest time the server accepts.
const FOREVER = '9999-01-01T00:00:00Z';
const FOREVER_MS = Date.parse(FOREVER);
const MAX_TIMER_MS = 2 ** 31 - 1;

function mutedText(settings) {
  const until = Date.parse(settings.muted_until);
  if (until >= FOREVER_MS) return 'Muted until you unmute.';
  const date = new Date(until);
  const sameDay = date.toDateString() === new Date().toDateString();
  const time = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return `Muted until ${sameDay ? time : `${date.toLocaleDateString()} ${time}`}.`;
}

export class NotifyControl {
  // button: the room header's "Notifications"; getContext() → the Session.
  constructor(button, getContext) {
    this.button = button;
    this.getContext = getContext;
    this.roomId = null; // of the open dialog
    this.saving = 0; // choices on their way to the server
    this.level = null; // the level last shown or chosen in the dialog
    this.expiry = null; // timer that repaints when a mute ends
    this.#build();
    button.addEventListener('click', () => this.open());
  }

  #build() {
    this.error = h('p', { class: 'error', role: 'alert' });
    this.note = h('p', { class: 'hint', 'aria-live': 'polite' });
    this.subtitle = h('p', { class: 'hint' });
    this.muteFor = h('select', { id: 'notify-mute-for', 'aria-label': 'Mute for' },
      MUTE_CHOICES.map(({ value, label }) => h('option', { value }, label)));
    this.radios = new Map();
    const option = (value, label, hint, extra = null) => {
      const id = `notify-${value}`;
      const radio = h('input', { type: 'radio', name: 'notify-level', value, id, 'aria-describedby': `${id}-hint` });
      this.radios.set(value, radio);
      return h('div', { class: 'notify-option' },
        radio,
        h('label', { for: id, class: 'notify-label' }, label),
        h('span', { id: `${id}-hint`, class: 'hint' }, hint),
        extra);
    };
    this.form = h('form', { method: 'dialog' },
      h('h2', { id: 'notify-title' }, 'Notifications'),
      this.subtitle,
      h('fieldset', { class: 'notify-levels' },
        h('legend', { class: 'visually-hidden' }, 'Notify me about'),
        LEVELS.map(({ level, label, hint }) => option(level, label, hint)),
        option('mute', 'Mute', 'Nothing for a while', this.muteFor)),
      this.note,
      this.error,
      h('div', { class: 'buttons' }, h('button', { type: 'submit', value: 'close' }, 'Close')));
    this.form.addEventListener('change', (event) => {
      if (event.target === this.muteFor) this.radios.get('mute').checked = true;
      this.#save();
    });
    this.dialog = h('dialog', { class: 'notify-dialog', 'aria-labelledby': 'notify-title' }, this.form);
    this.dialog.addEventListener('close', () => { this.roomId = null; });
    document.body.append(this.dialog);
  }

  #room(id) {
    return this.getContext()?.list.get(id) ?? null;
  }

  open() {
    const session = this.getContext();
    const room = this.#room(session?.list.openId);
    if (!room) return;
    this.roomId = room.id;
    this.subtitle.textContent = room.kind === 'dm' ? `Direct message with ${session.list.title(room)}` : `#${session.list.title(room)}`;
    showError(this.error, null);
    const settings = notifySettings(room);
    this.muteFor.value = isMuted(settings) && Date.parse(settings.muted_until) >= FOREVER_MS ? 'forever' : '1h';
    this.#paintDialog(settings);
    openDialog(this.dialog);
    this.radios.get(isMuted(settings) ? 'mute' : settings.level).focus();
  }

  // The open room or a room's settings changed: repaint the button (and the
  // dialog, unless the user's own choice is on its way to the server).
  refresh() {
    const room = this.#room(this.getContext()?.list.openId);
    if (!room) return;
    const settings = notifySettings(room);
    const muted = isMuted(settings);
    const state = muted ? 'Muted' : LABELS[settings.level];
    // "Notifications: " is only read out on phones, where a bell stands for it.
    if (this.button.textContent !== `Notifications: ${state}`) {
      this.button.replaceChildren(h('span', { class: 'notify-word' }, 'Notifications: '), state);
    }
    this.button.classList.toggle('muted', muted || settings.level === 'none');
    clearTimeout(this.expiry);
    const left = muted ? Date.parse(settings.muted_until) - Date.now() : 0;
    if (left > 0 && left < MAX_TIMER_MS) this.expiry = setTimeout(() => this.refresh(), left + 100);
    if (this.dialog.open && this.saving === 0 && this.roomId !== null) {
      const shown = this.#room(this.roomId);
      if (shown) this.#paintDialog(notifySettings(shown));
    }
  }

  #paintDialog(settings) {
    const muted = isMuted(settings);
    this.level = settings.level;
    this.radios.get(muted ? 'mute' : settings.level).checked = true;
    this.note.textContent = muted ? mutedText(settings) : '';
  }

  // The dialog's choice, as the PUT body: a level clears any mute; `Mute`
  // keeps the level (the one last chosen, even if still being saved) and sets
  // muted_until.
  #choice() {
    const picked = [...this.radios].find(([, radio]) => radio.checked)?.[0];
    if (picked !== 'mute') {
      this.level = picked;
      return { level: picked, muted_until: null };
    }
    const { ms } = MUTE_CHOICES.find(({ value }) => value === this.muteFor.value);
    return { level: this.level, muted_until: ms === null ? FOREVER : new Date(Date.now() + ms).toISOString() };
  }

  async #save() {
    const roomId = this.roomId;
    if (!this.#room(roomId)) return;
    const body = this.#choice();
    this.saving++;
    showError(this.error, null);
    try {
      await this.getContext().notifications.saveSettings(roomId, body);
    } catch (failure) {
      showError(this.error, failure);
    } finally {
      this.saving--;
      this.refresh();
    }
  }
}
