// Mentions: whether a message mentions me, `@name` tokens styled in message
// bodies, and `@` autocomplete of the room's members in a message box.
import * as api from './api.js';
import { h } from './dom.js';
import { renderMarkdown } from './markdown.js';
import { cachedUser, rememberUser } from './users.js';

const MAX_SUGGESTIONS = 8;
// `@` at a word start, then username characters (see API.md "Mentions").
const TOKEN = /(^|[^\p{L}\p{N}_])@([a-z0-9_.-]{1,32})/giu;
// The token being typed: `@` at a word start up to the caret.
const TYPING = /(?:^|[^\p{L}\p{N}_])@([a-z0-9_.-]{0,32})$/iu;

export function mentionsMe(message, myId) {
  if (message.deleted || message.sender_id === myId) return false;
  const mentions = message.mentions;
  return Boolean(mentions && (mentions.room || mentions.user_ids.includes(myId)));
}

// The usernames a message really mentions (the server's `mentions`, not
// every `@word`), with `room` when @room counted.
function mentionedNames(message) {
  const names = new Set();
  if (message.mentions?.room) names.add('room');
  for (const id of message.mentions?.user_ids ?? []) {
    const user = cachedUser(id);
    if (user) names.add(user.username);
  }
  return names;
}

// The body as sanitized Markdown (markdown.js) with its mentions styled;
// the caller's own name (and @room) get the `me` style.
export function renderBody(message, me) {
  const names = mentionedNames(message);
  const decorateText = names.size ? (text) => mentionParts(text, names, me) : undefined;
  return renderMarkdown(message.body, { decorateText });
}

// A text as strings and styled spans for its mentions. A username may end a
// sentence ("@bob."), so the longest known prefix of the token is what counts.
function mentionParts(text, names, me) {
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(TOKEN)) {
    let name = match[2].toLowerCase();
    while (name && !names.has(name)) name = name.slice(0, -1);
    if (!name) continue;
    const start = match.index + match[1].length;
    parts.push(text.slice(last, start));
    const mention = text.slice(start, start + 1 + name.length);
    const isMe = name === me.username || name === 'room';
    parts.push(h('span', { class: isMe ? 'mention me' : 'mention' }, mention));
    last = start + mention.length;
  }
  parts.push(text.slice(last));
  return parts;
}

// Members per room, fetched when first needed and forgotten when the room's
// membership changes.
const members = new Map();

export function forgetMembers(roomId) {
  members.delete(roomId);
}

function roomMembers(roomId) {
  if (!members.has(roomId)) {
    const users = (async () => {
      const found = [];
      let cursor = null;
      do {
        const page = await api.get(`/rooms/${roomId}/members`, { limit: 100, cursor });
        for (const member of page.items) {
          rememberUser(member.user);
          found.push(member.user);
        }
        cursor = page.next_cursor;
      } while (cursor && found.length < 1000);
      return found;
    })();
    users.catch(() => members.delete(roomId)); // try again next time
    members.set(roomId, users);
  }
  return members.get(roomId);
}

function matches(user, query) {
  const q = query.toLowerCase();
  if (user.username.startsWith(q)) return true;
  return (user.display_name || '').toLowerCase().split(/\s+/).some((word) => word.startsWith(q));
}

let listboxCount = 0;

// `@` autocomplete on a textarea: a listbox of matching members above it.
// ArrowDown/ArrowUp move, Enter or Tab insert `@username `, Escape closes.
// The textarea keeps focus (aria-activedescendant names the active option).
export class MentionAutocomplete {
  // getRoomId() → the room whose members are offered.
  constructor(input, { me, getRoomId }) {
    this.input = input;
    this.me = me;
    this.getRoomId = getRoomId;
    this.id = `mention-list-${++listboxCount}`;
    this.listbox = h('ul', { id: this.id, class: 'mention-list', role: 'listbox', 'aria-label': 'People to mention', hidden: true });
    this.listbox.addEventListener('pointerdown', (event) => event.preventDefault()); // keep focus in the box
    this.listbox.addEventListener('click', (event) => {
      const option = event.target.closest('[role=option]');
      if (option) this.#choose(option);
    });
    input.after(this.listbox);
    input.setAttribute('aria-autocomplete', 'list');
    this.options = [];
    this.active = -1;
    this.query = null;
    this.generation = 0;
    input.addEventListener('input', () => this.#update());
    input.addEventListener('click', () => this.#update());
    input.addEventListener('blur', () => this.close());
    // Capture, so that Enter picks a name instead of sending the message.
    input.addEventListener('keydown', (event) => this.#onKey(event), { capture: true });
  }

  get isOpen() {
    return !this.listbox.hidden;
  }

  close() {
    this.generation++;
    this.listbox.hidden = true;
    this.listbox.replaceChildren();
    this.options = [];
    this.active = -1;
    this.input.removeAttribute('aria-controls');
    this.input.removeAttribute('aria-activedescendant');
  }

  async #update() {
    const before = this.input.value.slice(0, this.input.selectionStart);
    const typed = this.input.selectionStart === this.input.selectionEnd ? before.match(TYPING) : null;
    const roomId = this.getRoomId();
    if (!typed || roomId === null) {
      this.close();
      return;
    }
    const query = typed[1];
    const generation = ++this.generation;
    let users;
    try {
      users = await roomMembers(roomId);
    } catch {
      return;
    }
    if (generation !== this.generation) return; // typed on meanwhile
    const found = users
      .filter((user) => user.id !== this.me.id && !user.deactivated && matches(user, query))
      .sort((a, b) => a.username.localeCompare(b.username))
      .slice(0, MAX_SUGGESTIONS);
    const everyone = 'room'.startsWith(query.toLowerCase()) ? [{ username: 'room', display_name: 'Everyone in this room' }] : [];
    this.#show([...found, ...everyone], query);
  }

  #show(users, query) {
    if (!users.length) {
      this.close();
      return;
    }
    this.query = query;
    this.options = users.map((user, index) => h('li', {
      id: `${this.id}-${index}`, role: 'option', class: 'mention-option', 'data-username': user.username,
    },
    h('span', { class: 'mention-name' }, user.display_name || user.username),
    h('span', { class: 'hint' }, ` @${user.username}`)));
    this.listbox.replaceChildren(...this.options);
    this.listbox.hidden = false;
    this.input.setAttribute('aria-controls', this.id);
    this.#activate(0);
  }

  #activate(index) {
    const count = this.options.length;
    this.active = (index + count) % count;
    this.options.forEach((option, i) => option.setAttribute('aria-selected', String(i === this.active)));
    const option = this.options[this.active];
    this.input.setAttribute('aria-activedescendant', option.id);
    option.scrollIntoView({ block: 'nearest' });
  }

  // Replaces the `@query` before the caret with `@username `.
  #choose(option) {
    const caret = this.input.selectionStart;
    const start = caret - this.query.length - 1;
    const insert = `@${option.dataset.username} `;
    this.input.setRangeText(insert, start, caret, 'end');
    this.close();
    this.input.focus();
    this.input.dispatchEvent(new Event('input', { bubbles: true })); // typing notice
  }

  #onKey(event) {
    if (!this.isOpen || event.isComposing) return;
    if (event.key === 'ArrowDown') this.#activate(this.active + 1);
    else if (event.key === 'ArrowUp') this.#activate(this.active - 1);
    else if ((event.key === 'Enter' && !event.shiftKey) || event.key === 'Tab') this.#choose(this.options[this.active]);
    else if (event.key === 'Escape') this.close();
    else return;
    event.preventDefault();
    event.stopImmediatePropagation();
  }
}
