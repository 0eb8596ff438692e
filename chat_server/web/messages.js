// The open room: the message log (scroll-back, live updates, edit, delete)
// and the typing line; the composer below it is composer.js.
import * as api from './api.js';
import { messageArticle } from './article.js';
import { Composer } from './composer.js';
import { $, backoff, confirmAction, h, sleep } from './dom.js';
import { startEdit } from './edit.js';
import { decorateLog } from './logdecor.js';
import { withReply } from './parts.js';
import { displayName, rememberUser } from './users.js';

const PAGE_SIZE = 50;
const FILL_PAGE_SIZE = 100; // the API's maximum page
const TOP_THRESHOLD_PX = 80; // this close to the top, older messages load
const BOTTOM_THRESHOLD_PX = 60; // this close to the bottom, new messages keep the log pinned there
const TYPING_SHOW_MS = 5000;

function sameContent(a, b) {
  return a.body === b.body && a.edited_at === b.edited_at && a.deleted === b.deleted
    && a.attachments.length === b.attachments.length;
}

export class MessageView {
  // onRead(roomId, seq) when messages have been seen; sendFrame and onSent
  // are the composer's (see composer.js); parts renders reactions, pins and
  // reply counts (see parts.js).
  constructor({ me, sendFrame, onRead, onSent, parts }) {
    this.me = me;
    this.parts = parts;
    this.onRead = onRead;
    this.pane = $('#room-pane');
    this.heading = $('#room-title');
    this.log = $('#log');
    this.list = $('#message-list');
    this.outbox = $('#outbox');
    this.note = $('#history-note');
    this.typingLine = $('#typing');
    this.roomId = null;
    this.generation = 0; // bumped on every room switch; stale responses compare it
    this.typers = new Map();

    this.listeners = new AbortController();
    const signal = this.listeners.signal;
    this.log.addEventListener('scroll', () => this.#onScroll(), { signal });
    document.addEventListener('visibilitychange', () => this.#markRead(), { signal });
    this.composer = new Composer({
      me,
      sendFrame,
      onSent,
      showPending: (element) => {
        this.outbox.append(element);
        this.#scrollToBottom();
      },
      signal,
    });
    this.#reset();
  }

  destroy() {
    this.listeners.abort();
    this.close();
  }

  close() {
    this.roomId = null;
    this.#reset();
    this.pane.hidden = true;
  }

  #reset() {
    this.generation++;
    this.items = new Map(); // seq → { message, element }
    this.lo = null; // lowest and highest seq shown; the log holds lo..hi without holes
    this.hi = null;
    this.loaded = false;
    this.failedRoom = null;
    this.loadingOlder = false;
    this.editing = null; // seq of the message being edited
    this.stick = true;
    for (const timer of this.typers.values()) clearTimeout(timer);
    this.typers.clear();
    this.list.replaceChildren();
    this.outbox.replaceChildren();
    this.note.textContent = '';
    this.typingLine.textContent = '';
    this.composer.setRoom(this.roomId);
  }

  async open(room, title) {
    this.roomId = room.id;
    this.#reset();
    this.setTitle(title);
    this.pane.hidden = false;
    const generation = this.generation;
    this.note.textContent = 'Loading messages…';
    // Members' names come first, in one request, so that rendering does not
    // look each sender up separately.
    const members = api.get(`/rooms/${room.id}/members`, { limit: 100 }).then(
      ({ items }) => items.forEach((member) => rememberUser(member.user)),
      () => {}, // names then load one by one
    );
    try {
      const [page] = await Promise.all([api.get(`/rooms/${room.id}/messages`, { limit: PAGE_SIZE }), members]);
      if (generation !== this.generation) return;
      for (const message of page.items) this.#put(message);
      this.loaded = true;
      this.#updateNote();
      this.#scrollToBottom();
      this.#markRead();
      await this.#fillViewport();
    } catch (error) {
      if (generation !== this.generation) return;
      this.note.textContent = `Could not load messages: ${error.message}`;
      this.failedRoom = room;
    }
  }

  // After a reconnect: try again if the room's first page failed to load.
  retryFailedLoad() {
    if (this.failedRoom && !this.loaded) this.open(this.failedRoom, this.heading.textContent);
  }

  setTitle(title) {
    this.heading.textContent = title;
  }

  // A new message for any room (live event, replay or our own send).
  accept(message) {
    if (message.room_id !== this.roomId) return;
    // Older than what is shown: scroll-back will fetch it when wanted.
    if (this.loaded && message.seq < this.lo) return;
    const previousHi = this.hi;
    if (!this.#put(message)) return;
    this.#stopTyping(message.sender_id);
    if (this.loaded && previousHi !== null && message.seq > previousHi + 1) {
      // The live stream never skips, but a REST reply can overtake it.
      this.fill(previousHi + 1, message.seq - 1);
    }
    this.#updateNote();
    if (this.stick || message.sender_id === this.me.id) this.#scrollToBottom();
    this.#markRead();
  }

  // An edited or deleted message: only matters if it is on screen.
  update(message) {
    if (message.room_id === this.roomId && this.items.has(message.seq)) this.#put(message);
  }

  // Applies change(message) → message to a message on screen (reactions).
  patch(roomId, seq, change) {
    const item = roomId === this.roomId ? this.items.get(seq) : undefined;
    if (item) this.#put(change(item.message));
  }

  findById(id) {
    for (const item of this.items.values()) if (item.message.id === id) return item.message;
    return null;
  }

  // Scrolls to a message (loading older pages until it is there) and
  // focuses it, e.g. when it is chosen from the pinned list.
  async reveal(seq) {
    const generation = this.generation;
    while (this.loaded && this.lo > seq && await this.#loadOlder());
    const item = this.items.get(seq);
    if (generation !== this.generation || !item) return false;
    item.element.tabIndex = -1;
    item.element.scrollIntoView({ block: 'center' });
    item.element.focus({ preventScroll: true });
    item.element.classList.remove('flash');
    requestAnimationFrame(() => item.element.classList.add('flash'));
    return true;
  }

  // Fetches messages from..to (inclusive) over REST: the range a `gap` event
  // says was not replayed, or a hole. Retries until it has them, since
  // nothing else would bring them back.
  async fill(from, to) {
    const generation = this.generation;
    if (!this.loaded) return; // the first page and scroll-back will cover it
    let after = Math.max(from, this.lo) - 1;
    for (let attempt = 0; after < to && generation === this.generation;) {
      try {
        const page = await api.get(`/rooms/${this.roomId}/messages`, { after_seq: after, limit: FILL_PAGE_SIZE });
        if (generation !== this.generation) return;
        for (const message of page.items) this.#put(message);
        if (!page.items.length || !page.has_more) break;
        after = page.items.at(-1).seq;
      } catch (error) {
        if (!api.isTransient(error)) return;
        await sleep(backoff(attempt++));
      }
    }
    if (generation !== this.generation) return;
    if (this.stick) this.#scrollToBottom();
    this.#markRead();
  }

  typing(userId) {
    if (userId === this.me.id) return;
    clearTimeout(this.typers.get(userId));
    this.typers.set(userId, setTimeout(() => this.#stopTyping(userId), TYPING_SHOW_MS));
    this.#paintTyping();
  }

  #stopTyping(userId) {
    if (!this.typers.has(userId)) return;
    clearTimeout(this.typers.get(userId));
    this.typers.delete(userId);
    this.#paintTyping();
  }

  #paintTyping() {
    const names = [...this.typers.keys()].map(displayName);
    this.typingLine.textContent = names.length === 0 ? ''
      : names.length === 1 ? `${names[0]} is typing…`
        : names.length === 2 ? `${names[0]} and ${names[1]} are typing…`
          : 'Several people are typing…';
  }

  // Inserts or replaces a message; returns false if nothing changed.
  #put(message) {
    const known = this.items.get(message.seq);
    if (known && sameContent(known.message, message)) {
      known.message = message;
      this.parts.refresh(known.element, message);
      return false;
    }
    const element = this.#render(message);
    this.items.set(message.seq, { message, element });
    if (known) {
      const hadFocus = known.element.contains(document.activeElement);
      if (this.editing === message.seq) this.editing = null;
      known.element.replaceWith(element);
      decorateLog(this.list);
      if (hadFocus) ($('button', element) ?? this.log).focus();
      return true;
    }
    // Walk back from the end: new messages almost always go last.
    let next = null;
    for (let node = this.list.lastElementChild; node && Number(node.dataset.seq) > message.seq; node = node.previousElementSibling) {
      next = node;
    }
    this.list.insertBefore(element, next);
    decorateLog(this.list);
    this.lo = this.lo === null ? message.seq : Math.min(this.lo, message.seq);
    this.hi = this.hi === null ? message.seq : Math.max(this.hi, message.seq);
    if (message.client_id && message.sender_id === this.me.id) {
      for (const pending of this.outbox.children) {
        if (pending.dataset.clientId === message.client_id) pending.remove();
      }
    }
    // Replies live in the thread panel; here they only count on their root.
    const root = message.thread_id ? this.findById(message.thread_id) : null;
    if (root) this.#put(withReply(root, message));
    return true;
  }

  #render(message) {
    // Replies show in the thread panel: a hidden placeholder keeps the log's
    // seq range whole.
    if (message.thread_id) return h('div', { class: 'reply-placeholder', hidden: true, 'data-seq': message.seq });
    return messageArticle(message, {
      me: this.me,
      parts: this.parts,
      onEdit: () => this.#startEdit(message.seq),
      onDelete: () => this.#delete(message),
    });
  }

  #updateNote() {
    if (this.loadingOlder) return;
    if (this.lo === null) this.note.textContent = 'No messages yet.';
    else if (this.lo <= 1) this.note.textContent = 'This is the start of the room.';
    else this.note.textContent = '';
  }

  #onScroll() {
    const { scrollTop, scrollHeight, clientHeight } = this.log;
    this.stick = scrollHeight - scrollTop - clientHeight < BOTTOM_THRESHOLD_PX;
    if (scrollTop < TOP_THRESHOLD_PX) this.#loadOlder();
  }

  #scrollToBottom() {
    this.log.scrollTop = this.log.scrollHeight;
    this.stick = true;
  }

  // seq numbers start at 1 with no gaps, so lo > 1 means older ones exist.
  async #loadOlder() {
    if (!this.loaded || this.loadingOlder || this.lo <= 1) return false;
    const generation = this.generation;
    this.loadingOlder = true;
    this.note.textContent = 'Loading older messages…';
    try {
      const page = await api.get(`/rooms/${this.roomId}/messages`, { before_seq: this.lo, limit: PAGE_SIZE });
      if (generation !== this.generation) return false;
      // Keep the reader's place: same distance from the bottom as before.
      const fromBottom = this.log.scrollHeight - this.log.scrollTop;
      for (const message of page.items) this.#put(message);
      this.log.scrollTop = this.log.scrollHeight - fromBottom;
      this.loadingOlder = false;
      this.#updateNote();
      return page.items.length > 0;
    } catch (error) {
      if (generation === this.generation) {
        this.loadingOlder = false;
        this.note.textContent = `Could not load older messages: ${error.message}`;
      }
      return false;
    }
  }

  // A short first page leaves nothing to scroll; load until there is.
  async #fillViewport() {
    while (this.log.scrollHeight <= this.log.clientHeight && await this.#loadOlder()) {
      this.#scrollToBottom();
    }
  }

  #markRead() {
    if (this.roomId !== null && this.hi !== null && document.visibilityState === 'visible') {
      this.onRead(this.roomId, this.hi);
    }
  }

  // --- edit and delete ---

  #startEdit(seq) {
    if (this.editing !== null) this.#endEdit();
    const item = this.items.get(seq);
    if (!item) return;
    this.editing = seq;
    startEdit(item.element, item.message, {
      onSaved: (message) => this.update(message),
      onCancel: () => this.#endEdit(),
    });
  }

  // Leaves edit mode without saving: re-render the message as it was.
  #endEdit() {
    const item = this.items.get(this.editing);
    this.editing = null;
    if (!item) return;
    const element = this.#render(item.message);
    item.element.replaceWith(element);
    item.element = element;
    decorateLog(this.list);
    $('.edit-button', element)?.focus();
  }

  async #delete(message) {
    if (!(await confirmAction('Delete this message?'))) return;
    try {
      await api.del(`/rooms/${message.room_id}/messages/${message.id}`);
      this.update({ ...message, body: '', attachments: [], reactions: [], deleted: true });
    } catch (error) {
      this.composer.showError(error);
    }
  }
}
