// Invites: the "Create invite" form (rooms, uses, lifetime) that shows the
// new invite's link with a "Copy" button, and the list of invites with
// "Revoke". Used by the "Invite people" dialog and the Admin "Invites" tab.
import * as api from './api.js';
import { copyField, fieldId, h, openDialog, showError } from './dom.js';

const LIFETIMES = [
  ['1 hour', 3600],
  ['1 day', 86_400],
  ['7 days', 604_800],
  ['30 days', 2_592_000],
];
const DEFAULT_LIFETIME = 604_800;

export function formatDate(iso) {
  return new Date(iso).toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' });
}

// The form. rooms() → the rooms the user may invite into (owner/admin);
// selected → a room id to tick at first; onCreated(invite) after each one.
export function inviteForm({ rooms, selected = null, onCreated = () => {} }) {
  const usesId = fieldId('invite-uses');
  const expiresId = fieldId('invite-expires');
  const linkId = fieldId('invite-link');
  const roomBoxes = rooms().map((room) => h('label', { class: 'checkbox' },
    h('input', { type: 'checkbox', name: 'room_ids', value: room.id, checked: room.id === selected }),
    room.name));
  const error = h('p', { class: 'error', role: 'alert' });
  const linkField = h('input', { id: linkId, readonly: true, class: 'invite-link' });
  const copied = h('span', { class: 'hint', 'aria-live': 'polite' });
  const copy = h('button', { type: 'button', onclick: () => copyField(linkField, copied) }, 'Copy');
  const result = h('div', { class: 'invite-result', hidden: true },
    h('label', { for: linkId }, 'Invite link'),
    h('div', { class: 'copy-row' }, linkField, copy),
    copied);
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Create invite');
  const form = h('form', { class: 'invite-form' },
    h('fieldset', {},
      h('legend', {}, 'Rooms to join'),
      roomBoxes.length ? roomBoxes : h('p', { class: 'hint' }, 'Only the server: to add rooms, be an owner or admin of them.')),
    h('div', { class: 'field-row' },
      h('span', {},
        h('label', { for: usesId }, 'Uses'),
        h('input', { id: usesId, name: 'max_uses', type: 'number', min: 1, max: 1000, value: 1, required: true })),
      h('span', {},
        h('label', { for: expiresId }, 'Expires after'),
        h('select', { id: expiresId, name: 'expires_in' },
          LIFETIMES.map(([label, seconds]) => h('option', { value: seconds, selected: seconds === DEFAULT_LIFETIME }, label))))),
    error,
    h('div', { class: 'buttons' }, submit),
    result);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    submit.disabled = true;
    showError(error, null);
    try {
      const invite = await api.post('/invites', {
        max_uses: Number(data.get('max_uses')),
        expires_in: Number(data.get('expires_in')),
        room_ids: data.getAll('room_ids').map(Number),
      });
      linkField.value = invite.url;
      copied.textContent = '';
      result.hidden = false;
      copy.focus();
      onCreated(invite);
    } catch (failure) {
      showError(error, failure);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function inviteState(invite) {
  if (invite.revoked) return 'revoked';
  if (new Date(invite.expires_at) <= new Date()) return 'expired';
  if (invite.uses >= invite.max_uses) return 'used up';
  return 'active';
}

// The list of invites (the caller's; every invite for admins), newest first
// as the server pages them, with "Revoke" on those still usable.
// roomName(id) → a room's name if known.
export class InviteList {
  constructor({ roomName }) {
    this.roomName = roomName;
    this.list = h('ul', { class: 'admin-list', 'aria-label': 'Invites' });
    this.error = h('p', { class: 'error', role: 'alert' });
    this.more = h('button', { type: 'button', hidden: true, onclick: () => this.#loadPage() }, 'More invites');
    this.element = h('div', {}, h('h3', {}, 'Invites'), this.error, this.list, this.more);
    this.cursor = null;
  }

  async reload() {
    this.cursor = null;
    this.list.replaceChildren();
    await this.#loadPage();
  }

  async #loadPage() {
    showError(this.error, null);
    try {
      const page = await api.get('/invites', { limit: 50, cursor: this.cursor });
      this.cursor = page.next_cursor;
      this.more.hidden = !this.cursor;
      this.list.append(...page.items.map((invite) => this.#render(invite)));
      if (!this.list.children.length) this.list.append(h('li', { class: 'hint' }, 'No invites yet.'));
    } catch (failure) {
      showError(this.error, failure);
    }
  }

  #render(invite) {
    const state = inviteState(invite);
    const urlId = fieldId('invite-url');
    const rooms = invite.room_ids.map((id) => this.roomName(id) ?? `room ${id}`);
    const revoke = state === 'revoked' ? null : h('button', {
      type: 'button',
      class: 'danger',
      'aria-describedby': urlId,
      onclick: async () => {
        revoke.disabled = true;
        try {
          await api.del(`/invites/${invite.id}`);
          item.replaceWith(this.#render({ ...invite, revoked: true }));
        } catch (failure) {
          showError(this.error, failure);
          revoke.disabled = false;
        }
      },
    }, 'Revoke');
    const item = h('li', { class: `admin-item invite-${state.replace(' ', '-')}` },
      h('div', { class: 'admin-item-text' },
        h('code', { id: urlId, class: 'invite-url' }, invite.url),
        h('span', { class: 'hint' },
          `${state} · ${invite.uses} of ${invite.max_uses} uses · expires ${formatDate(invite.expires_at)}`,
          rooms.length ? ` · ${rooms.join(', ')}` : '')),
      h('div', { class: 'admin-item-actions' }, revoke));
    return item;
  }
}

// The rooms (not DMs) the signed-in user may invite into: those they own or
// administer, and every one of theirs for a server admin.
export function managedRooms(session) {
  return session.list.ids().map((id) => session.list.get(id))
    .filter((room) => room.kind !== 'dm' && (session.me.is_admin || ['owner', 'admin'].includes(room.my_role)))
    .sort((a, b) => a.name.localeCompare(b.name));
}

// The "Invite people" dialog: the form for the open room, and the caller's
// invites. getContext() → the signed-in Session.
export function setupInvitePeople(button, getContext) {
  const dialog = h('dialog', { 'aria-labelledby': 'invite-people-title', class: 'wide' });
  document.body.append(dialog);
  button.addEventListener('click', async () => {
    const session = getContext();
    const managed = () => managedRooms(session);
    const list = new InviteList({ roomName: (id) => session.list.get(id)?.name });
    dialog.replaceChildren(
      h('h2', { id: 'invite-people-title' }, 'Invite people'),
      h('p', { class: 'hint' }, 'Anyone with the link can create an account here, and joins the rooms you tick.'),
      inviteForm({ rooms: managed, selected: session.view.roomId, onCreated: () => list.reload() }),
      list.element,
      h('div', { class: 'buttons' }, h('button', { type: 'button', onclick: () => dialog.close() }, 'Close')));
    list.reload();
    await openDialog(dialog);
    dialog.replaceChildren();
  });
}
