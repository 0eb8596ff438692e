// The open room: the message log (unread line, scroll-back and -forward,
// jump to latest, read marker, live updates, edit, delete) and the typing
// line; the composer below it is composer.js.
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
// This close to the bottom, newer history loads, or new messages keep the log
// pinned there.
const BOTTOM_THRESHOLD_PX = 60;
const TYPING_SHOW_MS = 5000;
const READ_DELAY_MS = 500; // the read marker goes out at most this often
const ANCHOR_DELAY_MS = 300; // onAnchor waits for scrolling to pause this long
const UNREAD_CONTEXT_PX = 16; // room above the last read message when a room opens at the unread line

function sameContent(a, b) {
  return a.body === b.body && a.edited_at === b.edited_at && a.deleted === b.deleted
    && a.attachments.length === b.attachments.length;
}

// The log holds one window of a room's history, seqs lo..hi without holes.
// It opens at the first unread message (below a "New messages" line), at a
// message asked for (`open`'s `at`), or at the newest; it grows at the top
// and at the bottom as the reader scrolls. While it does not reach the
// newest message, live messages are not added and `Jump to latest` shows.
// The read marker follows what has been on screen (IntersectionObserver).
export class MessageView {
  // onRead(roomId, seq) when messages up to seq have been seen; onAnchor(anchor)
  // when scrolling pauses, with currentAnchor(); sendFrame and onSent are the
  // composer's (see composer.js); parts renders reactions, pins and reply
  // counts (see parts.js).
  constructor({ me, sendFrame, onRead, onSent, parts, onAnchor = () => {} }) {
    this.me = me;
    this.parts = parts;
    this.onRead = onRead;
    this.onAnchor = onAnchor;
    this.pane = $('#room-pane');
    this.heading = $('#room-title');
    this.log = $('#log');
    this.list = $('#message-list');
    this.outbox = $('#outbox');
    this.note = $('#history-note');
    this.typingLine = $('#typing');
    this.roomId = null;
    this.generation = 0; // bumped whenever the window is emptied; stale responses compare it
    this.typers = new Map();
    this.readTimer = null;
    this.anchorTimer = null;
    this.unreadLine = h('div', { class: 'unread-line', role: 'separator', 'aria-label': 'New messages' },
      h('span', { class: 'unread-label' }, 'New messages'));
    this.jumpButton = h('button', { type: 'button', class: 'jump-latest', hidden: true, onclick: () => this.jumpToLatest() },
      h('span', { 'aria-hidden': 'true' }, '↓ '), 'Jump to latest');
    this.jumpDock = h('div', { class: 'jump-dock' }, this.jumpButton);
    this.log.after(this.jumpDock);
    this.observer = new IntersectionObserver((entries) => this.#onIntersect(entries),
      { root: this.log, threshold: [0, 0.25, 0.5, 0.75, 1] });

    this.listeners = new AbortController();
    const signal = this.listeners.signal;
    this.log.addEventListener('scroll', () => this.#onScroll(), { signal });
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') this.#noteSeen();
      else this.#flushRead();
    }, { signal });
    window.addEventListener('pagehide', () => this.#flushRead(), { signal });
    this.composer = new Composer({
      me,
      sendFrame,
      onSent,
      showPending: (element) => {
        if (this.hasNewer) this.jumpToLatest();
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
    this.observer.disconnect();
    this.jumpDock.remove();
  }

  close() {
    this.#flushRead();
    this.roomId = null;
    this.#reset();
    this.pane.hidden = true;
  }

  // Whether newer messages exist than the window shows.
  get hasNewer() {
    return (this.hi ?? 0) < this.latestSeq;
  }

  // Empties the window (not the room's other state); returns the new generation.
  #clearWindow() {
    this.generation++;
    this.observer.disconnect();
    this.onScreen = new Set(); // seqs of messages wholly on screen
    this.items = new Map(); // seq → { message, element }
    this.lo = null; // lowest and highest seq shown; the log holds lo..hi without holes
    this.hi = null;
    this.loaded = false;
    this.loadingOlder = false;
    this.loadingNewer = false;
    this.editing = null; // seq of the message being edited
    this.list.replaceChildren();
    return this.generation;
  }

  #reset() {
    this.#clearWindow();
    clearTimeout(this.readTimer);
    clearTimeout(this.anchorTimer);
    this.readTimer = null;
    this.readUpTo = 0; // the highest seq seen on screen, and the one last reported
    this.readSent = 0;
    this.latestSeq = 0; // the room's newest seq as far as known
    this.unreadSeq = null; // the first unread message when the room opened
    this.missed = false; // new messages arrived below while scrolled up
    this.failedRoom = null;
    this.failedAt = null;
    this.stick = true;
    this.jumpButton.hidden = true;
    for (const timer of this.typers.values()) clearTimeout(timer);
    this.typers.clear();
    this.outbox.replaceChildren();
    this.note.textContent = '';
    this.typingLine.textContent = '';
    this.composer.setRoom(this.roomId);
  }

  // Opens a room. `at` null: at the first unread message, under a "New
  // messages" line (a room never read with a long history opens at the
  // newest, as after joining it), else at the newest. `at` {seq, highlight}:
  // history around message seq; with highlight it is centred, focused and
  // flashed (a search result, a link), without it goes to the top (a scroll
  // position restored from currentAnchor()). With `at`, an open room only
  // moves to the message.
  async open(room, title, at = null) {
    if (at && room.id === this.roomId && this.loaded) {
      this.setTitle(title);
      await this.#goTo(at);
      return;
    }
    this.#flushRead();
    this.roomId = room.id;
    this.#reset();
    this.setTitle(title);
    this.pane.hidden = false;
    this.latestSeq = room.last_seq;
    const read = room.my_last_read_seq;
    if (read < room.last_seq && (read > 0 || room.last_seq <= PAGE_SIZE)) this.unreadSeq = read + 1;
    const generation = this.generation;
    this.note.textContent = 'Loading messages…';
    // Members' names come first, in one request, so that rendering does not
    // look each sender up separately.
    const members = api.get(`/rooms/${room.id}/members`, { limit: 100 }).then(
      ({ items }) => items.forEach((member) => rememberUser(member.user)),
      () => {}, // names then load one by one
    );
    try {
      const [fetched] = await Promise.all([this.#fetchWindow(at?.seq ?? this.unreadSeq), members]);
      if (generation !== this.generation) return;
      this.#show(fetched);
      this.#place(at);
      if (await this.#fillViewport()) this.#place(at);
    } catch (error) {
      if (generation !== this.generation) return;
      this.note.textContent = `Could not load messages: ${error.message}`;
      this.failedRoom = room;
      this.failedAt = at;
    }
  }

  // After a reconnect: try again if the room's first page failed to load.
  retryFailedLoad() {
    if (this.failedRoom && !this.loaded) this.open(this.failedRoom, this.heading.textContent, this.failedAt);
  }

  setTitle(title) {
    this.heading.textContent = title;
  }

  // The top message on screen, to come back to after a reload:
  // {roomId, seq}, or null when the log shows the newest messages (where a
  // room opens anyway) or no room.
  currentAnchor() {
    if (this.roomId === null || !this.loaded || this.stick) return null;
    const top = this.log.getBoundingClientRect().top;
    for (const element of this.list.children) {
      if (element.tagName !== 'ARTICLE') continue;
      if (element.getBoundingClientRect().bottom > top) return { roomId: this.roomId, seq: Number(element.dataset.seq) };
    }
    return null;
  }

  // Scrolls to the newest message, loading it first if the window does not
  // reach it.
  async jumpToLatest() {
    if (this.roomId === null) return;
    if (document.activeElement === this.jumpButton) this.log.focus({ preventScroll: true });
    if (this.hasNewer && !(await this.#replaceWindow(null))) return;
    this.#scrollToBottom();
    this.#noteSeen();
  }

  // A new message for any room (live event, replay or our own send).
  accept(message) {
    if (message.room_id !== this.roomId) return;
    this.#stopTyping(message.sender_id);
    const wasLatest = !this.hasNewer;
    this.latestSeq = Math.max(this.latestSeq, message.seq);
    if (!this.loaded) return; // the window being loaded fills up to latestSeq
    // Older than what is shown: scroll-back will fetch it when wanted.
    if (this.lo !== null && message.seq < this.lo) return;
    // Only a send from this tab's message box moves the reader to it (not a
    // thread reply, nor a message from the same account elsewhere).
    const mine = this.#answersPending(message);
    const previousHi = this.hi;
    if (!wasLatest && (previousHi === null || message.seq > previousHi)) {
      // The window shows older history; `Jump to latest` leads here.
      if (mine) this.jumpToLatest();
      else this.#paintJump();
      return;
    }
    if (!this.#put(message)) return;
    if (previousHi !== null && message.seq > previousHi + 1) {
      // The live stream never skips, but a REST reply can overtake it.
      this.fill(previousHi + 1, message.seq - 1);
    }
    this.#updateNote();
    if (this.stick || mine) this.#scrollToBottom();
    else if (message.seq > (previousHi ?? 0)) this.missed = true;
    this.#paintJump();
    this.#noteSeen();
  }

  #answersPending(message) {
    if (!message.client_id || message.sender_id !== this.me.id || message.thread_id) return false;
    return [...this.outbox.children].some((pending) => pending.dataset.clientId === message.client_id);
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

  // Scrolls to a message of the open room (loading the history around it if
  // it is not in the window) and focuses and flashes it, e.g. when it is
  // chosen from the pinned list. Whether it is shown.
  async reveal(seq) {
    return this.#goTo({ seq, highlight: true });
  }

  async #goTo(at) {
    if (!this.loaded) return false;
    if (!this.items.has(at.seq) && !(await this.#replaceWindow(at.seq))) return false;
    const shown = this.#place(at);
    await this.#fillViewport();
    return shown;
  }

  // Fetches messages from..to (inclusive) over REST: the range a `gap` event
  // says was not replayed, or a hole. Retries until it has them, since
  // nothing else would bring them back.
  async fill(from, to) {
    const generation = this.generation;
    if (!this.loaded) return; // the first page and scroll-back will cover it
    let after = Math.max(from, this.lo ?? 0) - 1;
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
    this.#updateNote();
    if (this.stick) this.#scrollToBottom();
    this.#paintJump();
    this.#noteSeen();
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

  // --- the window: loading, placing, growing ---

  // The first window of history: the newest page (around null), or a page
  // before message `around` and a page from it on. atEnd: it reaches the
  // newest message.
  async #fetchWindow(around) {
    const path = `/rooms/${this.roomId}/messages`;
    if (around === null) return { items: (await api.get(path, { limit: PAGE_SIZE })).items, atEnd: true };
    const [before, after] = await Promise.all([
      api.get(path, { before_seq: around, limit: PAGE_SIZE }),
      api.get(path, { after_seq: around - 1, limit: PAGE_SIZE }),
    ]);
    return { items: [...before.items, ...after.items], atEnd: !after.has_more };
  }

  #show({ items, atEnd }) {
    for (const message of items) this.#put(message);
    this.loaded = true;
    this.latestSeq = Math.max(this.latestSeq, atEnd ? this.hi ?? 0 : this.hi + 1);
    this.#updateNote();
    // Messages that arrived while it loaded.
    if (atEnd && this.hasNewer) this.fill((this.hi ?? 0) + 1, this.latestSeq);
  }

  // Swaps the window for the history around seq (null: the newest), fetched
  // first: a failed fetch leaves the window as it was (and says so), and
  // messages arriving meanwhile are filled in by #show. Whether it was swapped.
  async #replaceWindow(around) {
    const generation = this.generation;
    this.note.textContent = 'Loading messages…';
    let fetched;
    try {
      fetched = await this.#fetchWindow(around);
    } catch (error) {
      if (generation === this.generation) this.note.textContent = `Could not load messages: ${error.message}`;
      return false;
    }
    if (generation !== this.generation) return false;
    this.#clearWindow();
    this.#show(fetched);
    return true;
  }

  // Scrolls the window as `open` describes; whether the message asked for
  // is shown.
  #place(at) {
    const target = at ? this.#shownElement(at.seq) : null;
    if (at && target) {
      // A stand-in for a reply is not focused: its thread panel may be opening.
      if (at.highlight) this.#flash(target, { focus: target === this.items.get(at.seq).element });
      else target.scrollIntoView({ block: 'start' });
    } else if (!at && this.unreadLine.isConnected) {
      // The line near the top, under the last message read (if it fits).
      const before = this.unreadLine.previousElementSibling;
      const context = Math.min(this.log.clientHeight / 3, UNREAD_CONTEXT_PX + (before?.offsetHeight ?? 0));
      const offset = this.unreadLine.getBoundingClientRect().top - this.log.getBoundingClientRect().top;
      this.log.scrollTop += offset - context;
    } else {
      this.#scrollToBottom();
    }
    this.#updateStick();
    return Boolean(target);
  }

  // The element showing message seq. A reply is hidden here (it shows in
  // its thread): its thread's first message stands in, or else the nearest
  // message before it.
  #shownElement(seq) {
    const item = this.items.get(seq);
    if (!item) return null;
    const root = item.message.thread_id ? this.findById(item.message.thread_id) : null;
    if (root) return this.items.get(root.seq).element;
    let element = item.element;
    while (element && (element.hidden || element.tagName !== 'ARTICLE')) element = element.previousElementSibling;
    return element;
  }

  #flash(element, { focus = true } = {}) {
    element.tabIndex = -1;
    element.scrollIntoView({ block: 'center' });
    if (focus) element.focus({ preventScroll: true });
    element.classList.remove('flash');
    requestAnimationFrame(() => element.classList.add('flash'));
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
      this.#swap(known.element, element);
      decorateLog(this.list);
      if (hadFocus) ($('button', element) ?? this.log).focus();
      return true;
    }
    // Walk back from the end: new messages almost always go last.
    let next = null;
    for (let node = this.list.lastElementChild; node && this.#seqOf(node) > message.seq; node = node.previousElementSibling) {
      next = node;
    }
    this.list.insertBefore(element, next);
    if (message.seq === this.unreadSeq) element.before(this.unreadLine);
    if (!element.hidden) this.observer.observe(element);
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

  // Where a log child sorts: its message's seq; the unread line just before
  // the first unread message.
  #seqOf(node) {
    return node === this.unreadLine ? this.unreadSeq - 0.5 : Number(node.dataset.seq);
  }

  #swap(old, element) {
    this.observer.unobserve(old);
    this.onScreen.delete(Number(old.dataset.seq));
    old.replaceWith(element);
    if (!element.hidden) this.observer.observe(element);
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
    if (this.lo === null) this.note.textContent = this.loaded ? 'No messages yet.' : '';
    else if (this.lo <= 1) this.note.textContent = 'This is the start of the room.';
    else this.note.textContent = '';
  }

  #nearBottom() {
    const { scrollTop, scrollHeight, clientHeight } = this.log;
    return scrollHeight - scrollTop - clientHeight < BOTTOM_THRESHOLD_PX;
  }

  #onScroll() {
    this.#updateStick();
    if (this.log.scrollTop < TOP_THRESHOLD_PX) this.#loadOlder();
    if (this.hasNewer && this.#nearBottom()) this.#loadNewer();
    this.#noteSeen();
    clearTimeout(this.anchorTimer);
    this.anchorTimer = setTimeout(() => this.onAnchor(this.currentAnchor()), ANCHOR_DELAY_MS);
  }

  // At the bottom of the newest messages, new ones keep the log pinned there.
  #updateStick() {
    this.stick = this.#nearBottom() && !this.hasNewer;
    if (this.stick) this.missed = false;
    this.#paintJump();
  }

  #paintJump() {
    this.jumpButton.hidden = !this.loaded || !(this.hasNewer || (this.missed && !this.stick));
  }

  #scrollToBottom() {
    this.log.scrollTop = this.log.scrollHeight;
    this.stick = !this.hasNewer;
    if (this.stick) this.missed = false;
    this.#paintJump();
  }

  // seq numbers start at 1 with no gaps, so lo > 1 means older ones exist.
  async #loadOlder() {
    if (!this.loaded || this.loadingOlder || this.lo === null || this.lo <= 1) return false;
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

  // The page after the window, when it does not reach the newest message.
  async #loadNewer() {
    if (!this.loaded || this.loadingNewer || !this.hasNewer || this.hi === null) return false;
    const generation = this.generation;
    this.loadingNewer = true;
    try {
      const page = await api.get(`/rooms/${this.roomId}/messages`, { after_seq: this.hi, limit: PAGE_SIZE });
      if (generation !== this.generation) return false;
      for (const message of page.items) this.#put(message);
      // Nothing after hi: the server's word beats a stale last_seq.
      if (!page.items.length) this.latestSeq = this.hi;
      this.loadingNewer = false;
      this.#updateStick();
      this.#noteSeen();
      if (this.hasNewer && this.#nearBottom()) this.#loadNewer();
      return page.items.length > 0;
    } catch (error) {
      if (generation === this.generation) {
        this.loadingNewer = false;
        this.#paintJump(); // the way to try again
      }
      return false;
    }
  }

  // A short window leaves nothing to scroll: load until there is. Whether
  // anything was loaded.
  async #fillViewport() {
    let loaded = false;
    while (this.log.scrollHeight <= this.log.clientHeight
      && await (this.hasNewer ? this.#loadNewer() : this.#loadOlder())) {
      loaded = true;
    }
    return loaded;
  }

  // --- the read marker ---

  #onIntersect(entries) {
    for (const entry of entries) {
      const seq = Number(entry.target.dataset.seq);
      if (this.items.get(seq)?.element !== entry.target) continue; // replaced meanwhile
      // Seen: wholly on screen, or its end is (a message taller than the log).
      const seen = entry.isIntersecting && (entry.intersectionRatio > 0.99
        || entry.boundingClientRect.bottom <= entry.rootBounds.bottom);
      if (seen) this.onScreen.add(seq);
      else this.onScreen.delete(seq);
    }
    this.#noteSeen();
  }

  // Moves the read marker to the newest message seen on screen, at most once
  // per READ_DELAY_MS; at the bottom of the newest, to the newest (hidden
  // replies included).
  #noteSeen() {
    if (this.roomId === null || !this.loaded || document.visibilityState !== 'visible') return;
    let seen = Math.max(0, ...this.onScreen);
    if (this.stick && this.hi !== null) seen = Math.max(seen, this.hi);
    if (seen <= this.readUpTo) return;
    this.readUpTo = seen;
    this.readTimer ??= setTimeout(() => this.#flushRead(), READ_DELAY_MS);
  }

  #flushRead() {
    clearTimeout(this.readTimer);
    this.readTimer = null;
    if (this.roomId === null || this.readUpTo <= this.readSent) return;
    this.readSent = this.readUpTo;
    this.onRead(this.roomId, this.readUpTo);
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
    this.#swap(item.element, element);
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
