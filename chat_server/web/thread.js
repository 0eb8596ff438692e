// The thread panel (region "Thread"): a thread's first message, its replies
// (live from message.new events whose thread_id is the root's id) and a
// `Reply` box. Beside the room on wide screens, full screen on phones.
import * as api from './api.js';
import { messageArticle } from './article.js';
import { deliver } from './composer.js';
import { $, backoff, confirmAction, randomId, showError, sleep } from './dom.js';
import { startEdit } from './edit.js';
import { decorateLog } from './logdecor.js';
import { withReply } from './parts.js';

const PAGE_SIZE = 100;
const MAX_BODY = 4000;
// As style.css: at this width the thread covers the screen.
const FULL_SCREEN = window.matchMedia('(max-width: 700px)');

function sameContent(a, b) {
  return a.body === b.body && a.edited_at === b.edited_at && a.deleted === b.deleted;
}

export class ThreadView {
  // onSent(message) with the server's copy of a reply we posted.
  constructor({ me, parts, onSent }) {
    Object.assign(this, { me, parts, onSent });
    this.panel = $('#thread-panel');
    this.rootSlot = $('#thread-root');
    this.countLine = $('#thread-count');
    this.replies = $('#thread-replies');
    this.scroller = $('.thread-body', this.panel);
    this.note = $('#thread-note');
    this.form = $('#thread-composer');
    this.input = $('#thread-input');
    this.error = $('.error', this.form);
    this.roomId = null;
    this.rootId = null;
    this.root = null; // { message, element } once known
    this.items = new Map(); // seq → { message, element } of replies
    this.opener = null;
    this.generation = 0;
    this.listeners = new AbortController();
    const signal = this.listeners.signal;
    $('#thread-close').addEventListener('click', () => this.close(), { signal });
    this.panel.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && !event.defaultPrevented) this.close();
    }, { signal });
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
    FULL_SCREEN.addEventListener('change', () => this.#coverRoom(), { signal });
  }

  // Full screen, the thread is the whole page: what it covers is inert
  // (out of the tab order and the accessibility tree) until it closes.
  #coverRoom() {
    const cover = this.isOpen && FULL_SCREEN.matches;
    for (const element of [...this.panel.parentElement.children, $('.topbar')]) {
      if (element !== this.panel) element.inert = cover;
    }
  }

  get isOpen() {
    return this.rootId !== null;
  }

  destroy() {
    this.listeners.abort();
    this.close({ restoreFocus: false });
  }

  // Opens the thread of `message` (its root, or the thread a reply is in);
  // root is the root message when the caller has it. opener gets focus back.
  open(message, root, opener) {
    const rootId = message.thread_id ?? message.id;
    this.opener = opener ?? null;
    if (this.roomId === message.room_id && this.rootId === rootId) {
      this.input.focus();
      return;
    }
    this.generation++;
    this.roomId = message.room_id;
    this.rootId = rootId;
    this.root = null;
    this.items.clear();
    this.rootSlot.replaceChildren();
    this.replies.replaceChildren();
    this.input.value = '';
    showError(this.error, null);
    if (root) this.#putRoot(root);
    this.#paintCount();
    this.panel.hidden = false;
    this.#coverRoom();
    this.input.focus();
    this.#load(this.generation);
  }

  close({ restoreFocus = true } = {}) {
    if (!this.isOpen) return;
    this.generation++;
    this.roomId = null;
    this.rootId = null;
    this.root = null;
    this.items.clear();
    this.panel.hidden = true;
    this.#coverRoom();
    const opener = this.opener;
    this.opener = null;
    if (restoreFocus) ((opener?.isConnected && opener) || $('#message-input')).focus();
  }

  // A new message (live, replayed or our own): a reply of this thread, or
  // the root itself arriving late.
  accept(message) {
    if (!this.isOpen || message.room_id !== this.roomId) return;
    if (message.id === this.rootId) this.#putRoot(message);
    else if (message.thread_id === this.rootId) this.#putReply(message);
  }

  // An edit, deletion or pin of a message that may be shown here.
  update(message) {
    if (!this.isOpen || message.room_id !== this.roomId) return;
    if (message.id === this.rootId) this.#putRoot(message);
    else if (this.items.has(message.seq)) this.#putReply(message);
  }

  patch(roomId, seq, change) {
    if (!this.isOpen || roomId !== this.roomId) return;
    if (this.root?.message.seq === seq) this.#putRoot(change(this.root.message));
    else if (this.items.has(seq)) this.#putReply(change(this.items.get(seq).message));
  }

  async #load(generation) {
    this.note.textContent = 'Loading replies…';
    let after = this.root?.message.seq;
    for (let attempt = 0; generation === this.generation;) {
      try {
        const page = await api.get(`/rooms/${this.roomId}/messages/${this.rootId}/thread`, { after_seq: after, limit: PAGE_SIZE });
        if (generation !== this.generation) return;
        for (const message of page.items) this.#putReply(message);
        if (!page.has_more || !page.items.length) break;
        after = page.items.at(-1).seq;
      } catch (error) {
        if (generation !== this.generation) return;
        if (!api.isTransient(error)) {
          this.note.textContent = `Could not load the replies: ${error.message}`;
          return;
        }
        await sleep(backoff(attempt++));
      }
    }
    if (generation === this.generation) this.note.textContent = '';
  }

  #putRoot(message) {
    const known = this.root;
    if (known && sameContent(known.message, message)) {
      known.message = message;
      this.parts.refresh(known.element, message);
    } else {
      const element = this.#render(message, { root: true });
      if (known) this.#replace(known.element, element);
      else this.rootSlot.append(element);
      this.root = { message, element };
      this.#decorate();
    }
    this.#paintCount();
  }

  #putReply(message) {
    const known = this.items.get(message.seq);
    if (known && sameContent(known.message, message)) {
      known.message = message;
      this.parts.refresh(known.element, message);
      return;
    }
    const element = this.#render(message, { root: false });
    this.items.set(message.seq, { message, element });
    if (known) {
      this.#replace(known.element, element);
      this.#decorate();
      return;
    }
    let next = null;
    for (let node = this.replies.lastElementChild; node && Number(node.dataset.seq) > message.seq; node = node.previousElementSibling) {
      next = node;
    }
    const { scrollHeight, scrollTop, clientHeight } = this.scroller;
    const atBottom = scrollHeight - scrollTop - clientHeight < 40;
    this.replies.insertBefore(element, next);
    this.#decorate();
    if (atBottom || message.sender_id === this.me.id) this.scroller.scrollTop = this.scroller.scrollHeight;
    if (this.root) this.#putRoot(withReply(this.root.message, message));
    else this.#paintCount();
  }

  #replace(old, element) {
    const hadFocus = old.contains(document.activeElement);
    old.replaceWith(element);
    if (hadFocus) ($('button', element) ?? this.input).focus();
  }

  // Day headings and grouping (logdecor.js); the replies continue the root's day.
  #decorate() {
    decorateLog(this.rootSlot);
    decorateLog(this.replies, { startDay: this.root?.element.dataset.day });
  }

  #paintCount() {
    const count = Math.max(this.root?.message.thread?.reply_count ?? 0, this.items.size);
    this.countLine.textContent = count === 0 ? 'No replies yet.' : `${count} ${count === 1 ? 'reply' : 'replies'}`;
  }

  #render(message, { root }) {
    return messageArticle(message, {
      me: this.me,
      parts: this.parts,
      inThread: true,
      root,
      onEdit: () => this.#startEdit(message.seq),
      onDelete: () => this.#delete(message),
    });
  }

  // The root or a reply, by seq.
  #entry(seq) {
    return this.root?.message.seq === seq ? this.root : this.items.get(seq);
  }

  #startEdit(seq) {
    const entry = this.#entry(seq);
    if (!entry) return;
    startEdit(entry.element, entry.message, {
      onSaved: (message) => this.update(message),
      onCancel: () => {
        // As it is now: events may have changed it while the form was open.
        const current = this.#entry(seq);
        if (!current) return;
        const element = this.#render(current.message, { root: current === this.root });
        current.element.replaceWith(element);
        current.element = element;
        this.#decorate();
        $('.edit-button', element)?.focus();
      },
    });
  }

  async #delete(message) {
    if (!(await confirmAction('Delete this message?'))) return;
    try {
      await api.del(`/rooms/${message.room_id}/messages/${message.id}`);
      this.update({ ...this.#entry(message.seq)?.message ?? message, body: '', attachments: [], reactions: [], deleted: true });
    } catch (error) {
      showError(this.error, error);
    }
  }

  async #send() {
    const body = this.input.value.trim();
    if (!body || !this.isOpen) return;
    if (body.length > MAX_BODY) {
      showError(this.error, new Error(`A message can be at most ${MAX_BODY} characters.`));
      return;
    }
    const { roomId, rootId, generation } = this;
    this.input.value = '';
    showError(this.error, null);
    try {
      const message = await deliver(roomId, { body, client_id: randomId(), reply_to: rootId }, () => {
        if (generation === this.generation) this.note.textContent = 'Waiting for the server…';
      });
      if (generation === this.generation) this.note.textContent = '';
      this.onSent(message);
    } catch (error) {
      if (generation !== this.generation) return;
      this.note.textContent = '';
      showError(this.error, error);
      if (!this.input.value) this.input.value = body;
    }
  }
}
