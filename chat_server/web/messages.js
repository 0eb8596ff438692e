// The open room: the message log (scroll-back, live updates, edit, delete),
// the typing line and the composer with attachments.
import * as api from './api.js';
import { $, backoff, confirmAction, h, randomId, showError, sleep } from './dom.js';
import { avatarImage, renderAttachment } from './media.js';
import { cachedUser, displayName, presenceDot, rememberUser } from './users.js';

const PAGE_SIZE = 50;
const FILL_PAGE_SIZE = 100; // the API's maximum page
const MAX_BODY = 4000;
const TOP_THRESHOLD_PX = 80; // this close to the top, older messages load
const BOTTOM_THRESHOLD_PX = 60; // this close to the bottom, new messages keep the log pinned there
const TYPING_SEND_INTERVAL_MS = 3000;
const TYPING_SHOW_MS = 5000;

function sameContent(a, b) {
  return a.body === b.body && a.edited_at === b.edited_at && a.deleted === b.deleted
    && a.attachments.length === b.attachments.length;
}

function formatTime(iso) {
  const date = new Date(iso);
  const today = date.toDateString() === new Date().toDateString();
  return today
    ? date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : date.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

// Posts over REST, retrying transient failures with the same client_id, so a
// send that reached the server before the connection broke is not doubled.
async function deliver(roomId, payload, onRetry) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await api.post(`/rooms/${roomId}/messages`, payload);
    } catch (error) {
      if (!api.isTransient(error)) throw error;
      onRetry();
      await sleep(backoff(attempt));
    }
  }
}

export class MessageView {
  // sendFrame(frame) → whether the WebSocket took it; onRead(roomId, seq);
  // onSent(message) with the server's copy of a message we posted.
  constructor({ me, sendFrame, onRead, onSent }) {
    Object.assign(this, { me, sendFrame, onRead, onSent });
    this.pane = $('#room-pane');
    this.heading = $('#room-title');
    this.log = $('#log');
    this.list = $('#message-list');
    this.outbox = $('#outbox');
    this.note = $('#history-note');
    this.typingLine = $('#typing');
    this.form = $('#composer');
    this.input = $('#message-input');
    this.attach = $('#attach-input');
    this.stagedList = $('#staged');
    this.composerError = $('#composer-error');
    this.roomId = null;
    this.generation = 0; // bumped on every room switch; stale responses compare it
    this.typers = new Map();

    this.listeners = new AbortController();
    const signal = this.listeners.signal;
    this.log.addEventListener('scroll', () => this.#onScroll(), { signal });
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.#send();
    }, { signal });
    this.input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.#send();
      }
    }, { signal });
    this.input.addEventListener('input', () => this.#typed(), { signal });
    this.attach.addEventListener('change', () => this.#stageFiles(), { signal });
    document.addEventListener('visibilitychange', () => this.#markRead(), { signal });
    this.#reset();
  }

  destroy() {
    this.listeners.abort();
    this.close();
  }

  close() {
    this.#reset();
    this.roomId = null;
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
    this.lastTypingSent = 0;
    for (const timer of this.typers.values()) clearTimeout(timer);
    this.typers.clear();
    this.staged = [];
    this.list.replaceChildren();
    this.outbox.replaceChildren();
    this.stagedList.replaceChildren();
    this.note.textContent = '';
    this.typingLine.textContent = '';
    showError(this.composerError, null);
  }

  async open(room, title) {
    this.#reset();
    this.roomId = room.id;
    this.setTitle(title);
    this.pane.hidden = false;
    this.input.value = '';
    const generation = this.generation;
    this.note.textContent = 'Loading messages…';
    // Members' names, fetched in one request rather than one per sender.
    api.get(`/rooms/${room.id}/members`, { limit: 100 }).then(({ items }) => {
      for (const member of items) rememberUser(member.user);
    }, () => {});
    try {
      const page = await api.get(`/rooms/${room.id}/messages`, { limit: PAGE_SIZE });
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
    if (known && sameContent(known.message, message)) return false;
    const element = this.#render(message);
    this.items.set(message.seq, { message, element });
    if (known) {
      const hadFocus = known.element.contains(document.activeElement);
      if (this.editing === message.seq) this.editing = null;
      known.element.replaceWith(element);
      if (hadFocus) ($('button', element) ?? this.log).focus();
      return true;
    }
    // Walk back from the end: new messages almost always go last.
    let next = null;
    for (let node = this.list.lastElementChild; node && Number(node.dataset.seq) > message.seq; node = node.previousElementSibling) {
      next = node;
    }
    this.list.insertBefore(element, next);
    this.lo = this.lo === null ? message.seq : Math.min(this.lo, message.seq);
    this.hi = this.hi === null ? message.seq : Math.max(this.hi, message.seq);
    if (message.client_id && message.sender_id === this.me.id) {
      for (const pending of this.outbox.children) {
        if (pending.dataset.clientId === message.client_id) pending.remove();
      }
    }
    return true;
  }

  #render(message) {
    const mine = message.sender_id === this.me.id;
    const sender = message.sender_id;
    const header = h('header', { class: 'message-header' },
      avatarImage(sender, cachedUser(sender)),
      presenceDot(sender),
      h('span', { class: 'sender', 'data-user-name': sender }, displayName(sender)),
      h('time', { datetime: message.created_at, title: new Date(message.created_at).toLocaleString() }, formatTime(message.created_at)),
      message.edited_at && !message.deleted ? h('span', { class: 'hint' }, '(edited)') : null);
    let body = null;
    if (message.deleted) body = h('p', { class: 'body deleted' }, 'This message was deleted.');
    else if (message.body) body = h('p', { class: 'body' }, message.body);
    const attachments = message.attachments.length
      ? h('div', { class: 'attachments' }, message.attachments.map((media) => renderAttachment(media, () => this.#keepPinned())))
      : null;
    const actions = mine && !message.deleted
      ? h('div', { class: 'actions' },
        h('button', { type: 'button', onclick: () => this.#startEdit(message.seq) }, 'Edit'),
        h('button', { type: 'button', onclick: () => this.#delete(message) }, 'Delete'))
      : null;
    return h('article', { class: mine ? 'message mine' : 'message', 'data-seq': message.seq },
      header, body, attachments, actions);
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

  #keepPinned() {
    if (this.stick) this.#scrollToBottom();
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

  #typed() {
    const now = Date.now();
    if (this.input.value.trim() && now - this.lastTypingSent > TYPING_SEND_INTERVAL_MS
      && this.sendFrame({ type: 'typing', room_id: this.roomId })) {
      this.lastTypingSent = now;
    }
  }

  // --- composer ---

  #stageFiles() {
    for (const file of this.attach.files) {
      const item = { file, upload: api.upload(file) };
      const state = h('span', { class: 'hint' }, ' uploading…');
      const remove = h('button', { type: 'button', 'aria-label': `Remove ${file.name}` }, '×');
      const chip = h('li', { class: 'chip' }, h('span', {}, file.name), state, remove);
      item.upload.then(() => { state.textContent = ''; }, (error) => { state.textContent = ` failed: ${error.message}`; });
      remove.addEventListener('click', () => {
        this.staged = this.staged.filter((staged) => staged !== item);
        chip.remove();
        this.input.focus();
      });
      this.staged.push(item);
      this.stagedList.append(chip);
    }
    this.attach.value = ''; // so choosing the same file again fires `change`
  }

  #renderPending(body, files, clientId) {
    const state = h('span', { class: 'hint' }, 'Sending…');
    const element = h('article', { class: 'message mine pending', 'data-client-id': clientId },
      h('header', { class: 'message-header' },
        h('span', { class: 'sender', 'data-user-name': this.me.id }, displayName(this.me.id)), state),
      body ? h('p', { class: 'body' }, body) : null,
      files.length ? h('p', { class: 'hint' }, files.map((item) => item.file.name).join(', ')) : null);
    return { element, state };
  }

  async #send() {
    const body = this.input.value.trim();
    const staged = this.staged;
    if (!body && !staged.length) return;
    if (body.length > MAX_BODY) {
      showError(this.composerError, new Error(`A message can be at most ${MAX_BODY} characters.`));
      return;
    }
    const roomId = this.roomId;
    this.input.value = '';
    this.staged = [];
    this.stagedList.replaceChildren();
    showError(this.composerError, null);
    const clientId = randomId();
    const pending = this.#renderPending(body, staged, clientId);
    this.outbox.append(pending.element);
    this.#scrollToBottom();
    try {
      const media = await Promise.all(staged.map((item) => item.upload));
      const message = await deliver(
        roomId,
        { body, client_id: clientId, attachments: media.map((item) => item.id) },
        () => { pending.state.textContent = 'Waiting for the server…'; },
      );
      this.onSent(message);
    } catch (error) {
      pending.element.remove();
      if (roomId !== this.roomId) return;
      showError(this.composerError, error);
      if (!this.input.value) this.input.value = body;
    }
  }

  // --- edit and delete ---

  #startEdit(seq) {
    if (this.editing !== null) this.#endEdit();
    const item = this.items.get(seq);
    if (!item) return;
    this.editing = seq;
    const field = h('textarea', { class: 'edit-field', 'aria-label': 'Edit message', rows: 3 });
    field.value = item.message.body;
    const error = h('p', { class: 'error', role: 'alert' });
    const form = h('form', { class: 'edit-form' }, field, error,
      h('div', { class: 'buttons' },
        h('button', { type: 'button', onclick: () => this.#endEdit() }, 'Cancel'),
        h('button', { type: 'submit' }, 'Save')));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.#saveEdit(item.message, field.value, error);
    });
    field.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      } else if (event.key === 'Escape') {
        this.#endEdit();
      }
    });
    $('.actions', item.element).hidden = true;
    const body = $('.body', item.element);
    if (body) body.replaceWith(form);
    else $('.message-header', item.element).after(form);
    field.focus();
  }

  // Leaves edit mode without saving: re-render the message as it was.
  #endEdit() {
    const item = this.items.get(this.editing);
    this.editing = null;
    if (!item) return;
    const element = this.#render(item.message);
    item.element.replaceWith(element);
    item.element = element;
    $('.actions button', element)?.focus();
  }

  async #saveEdit(message, text, error) {
    const body = text.trim();
    if (body === message.body) {
      this.#endEdit();
      return;
    }
    if (!body && !message.attachments.length) {
      showError(error, new Error('A message cannot be empty; use Delete to remove it.'));
      return;
    }
    try {
      this.update(await api.patch(`/rooms/${message.room_id}/messages/${message.id}`, { body }));
    } catch (failure) {
      showError(error, failure);
    }
  }

  async #delete(message) {
    if (!(await confirmAction('Delete this message?'))) return;
    try {
      await api.del(`/rooms/${message.room_id}/messages/${message.id}`);
      this.update({ ...message, body: '', attachments: [], deleted: true });
    } catch (error) {
      showError(this.composerError, error);
    }
  }
}
