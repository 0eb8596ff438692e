// The `Pinned` button in the room header and the list it opens: the room's
// pinned messages, newest pin first (GET /rooms/{id}/pins). Choosing one
// shows it (scrolled to and focused). The list follows message.pinned and
// message.unpinned events while it is open.
import * as api from './api.js';
import { $, h } from './dom.js';
import { displayName } from './users.js';

const EXCERPT_CHARS = 120;

function excerpt(message) {
  if (message.deleted) return 'This message was deleted.';
  const text = message.body || message.attachments.map((media) => media.filename).join(', ');
  return text.length > EXCERPT_CHARS ? `${text.slice(0, EXCERPT_CHARS)}…` : text;
}

export class PinnedPanel {
  // onChoose(message) when a pinned message is picked from the list.
  constructor({ onChoose }) {
    this.onChoose = onChoose;
    this.button = $('#pinned-button');
    this.panel = $('#pinned-panel');
    this.list = $('#pinned-list');
    this.note = $('#pinned-note');
    this.roomId = null;
    this.generation = 0;
    this.listeners = new AbortController();
    const signal = this.listeners.signal;
    this.button.addEventListener('click', () => (this.isOpen ? this.close() : this.open()), { signal });
    this.panel.addEventListener('keydown', (event) => {
      if (event.key !== 'Escape') return;
      event.preventDefault();
      this.close();
    }, { signal });
    document.addEventListener('pointerdown', (event) => {
      if (this.isOpen && !this.panel.contains(event.target) && !this.button.contains(event.target)) {
        this.close({ restoreFocus: false });
      }
    }, { signal, capture: true });
  }

  get isOpen() {
    return !this.panel.hidden;
  }

  destroy() {
    this.listeners.abort();
    this.close({ restoreFocus: false });
  }

  setRoom(roomId) {
    this.close({ restoreFocus: false });
    this.roomId = roomId;
  }

  async open() {
    if (this.roomId === null) return;
    this.panel.hidden = false;
    this.button.setAttribute('aria-expanded', 'true');
    await this.#load();
    if (this.isOpen) ($('button', this.list) ?? this.panel).focus();
  }

  close({ restoreFocus = true } = {}) {
    if (!this.isOpen) return;
    this.generation++;
    this.panel.hidden = true;
    this.button.setAttribute('aria-expanded', 'false');
    if (restoreFocus) this.button.focus();
  }

  // A pin or unpin in some room: reload the list if it shows that room.
  changed(roomId) {
    if (this.isOpen && roomId === this.roomId) this.#load();
  }

  async #load() {
    const generation = ++this.generation;
    const roomId = this.roomId;
    if (!this.list.children.length) this.note.textContent = 'Loading…';
    try {
      const { items } = await api.get(`/rooms/${roomId}/pins`);
      if (generation !== this.generation) return;
      const hadFocus = this.list.contains(document.activeElement);
      this.list.replaceChildren(...items.map((message) => this.#render(message)));
      this.note.textContent = items.length ? '' : 'Nothing is pinned in this room yet.';
      if (hadFocus) ($('button', this.list) ?? this.panel).focus();
    } catch (error) {
      if (generation === this.generation) this.note.textContent = `Could not load the pinned messages: ${error.message}`;
    }
  }

  #render(message) {
    const button = h('button', { type: 'button', class: 'pinned-item' },
      h('span', { class: 'sender', 'data-user-name': message.sender_id }, displayName(message.sender_id)),
      h('span', { class: 'pinned-text' }, excerpt(message)));
    button.addEventListener('click', () => {
      this.close({ restoreFocus: false });
      this.onChoose(message);
    });
    return h('li', {}, button);
  }
}
