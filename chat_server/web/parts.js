// The conversation parts of a rendered message, shared by the room log
// (messages.js) and the thread panel (thread.js): the body with its
// mentions, the "Pinned" mark, the reaction chips, the reply count of a
// thread's first message, and the React / Reply / Pin buttons. refresh()
// brings them up to date in place, so focus and scroll position survive
// live updates.
import { $, h } from './dom.js';
import { mentionsMe, renderBody } from './mentions.js';
import { paintReactions, reactionRow } from './reactions.js';

function repliesLabel(count) {
  return `${count} ${count === 1 ? 'reply' : 'replies'}`;
}

export class MessageParts {
  // handlers: react(message, button), toggleReaction(message, emoji),
  // openThread(message, opener), pin(message, pinned); canPin(message).
  constructor({ me, canPin, handlers }) {
    this.me = me;
    this.canPin = canPin;
    this.handlers = handlers;
    this.current = new WeakMap(); // article → the message it shows now
  }

  setMe(me) {
    this.me = me;
  }

  // The message an element inside a rendered article belongs to.
  #messageOf(element) {
    return this.current.get(element.closest('article'));
  }

  body(message) {
    return renderBody(message, this.me);
  }

  pinMark() {
    return h('span', { class: 'pin-mark', hidden: true }, h('span', { 'aria-hidden': 'true' }, '📌 '), 'Pinned');
  }

  // Reaction chips, then (outside the thread panel) the reply count.
  extras({ inThread = false } = {}) {
    const row = reactionRow((emoji, chip) => this.handlers.toggleReaction(this.#messageOf(chip), emoji));
    if (inThread) return [row];
    const summary = h('p', { class: 'thread-summary', hidden: true },
      h('button', {
        type: 'button',
        class: 'replies-button',
        onclick: (event) => this.handlers.openThread(this.#messageOf(event.currentTarget), event.currentTarget),
      }),
      h('time', { class: 'hint' }));
    return [row, summary];
  }

  // React, Reply (outside the thread panel) and Pin/Unpin when allowed.
  actions(message, { inThread = false } = {}) {
    if (message.deleted) return [];
    const react = h('button', {
      type: 'button',
      class: 'react-button',
      'aria-haspopup': 'dialog',
      'aria-expanded': 'false',
      onclick: (event) => this.handlers.react(this.#messageOf(event.currentTarget), event.currentTarget),
    }, 'React');
    const reply = inThread ? null : h('button', {
      type: 'button',
      class: 'reply-button',
      onclick: (event) => this.handlers.openThread(this.#messageOf(event.currentTarget), event.currentTarget),
    }, 'Reply');
    const pin = this.canPin(message) ? h('button', {
      type: 'button',
      class: 'pin-button',
      onclick: (event) => {
        const current = this.#messageOf(event.currentTarget);
        this.handlers.pin(current, !current.pinned);
      },
    }) : null;
    return [react, reply, pin];
  }

  // Called once on a freshly rendered article, and by refresh().
  mark(article, message) {
    this.current.set(article, message);
    article.dataset.id = message.id;
    const mentioned = mentionsMe(message, this.me.id);
    article.classList.toggle('mentioned', mentioned);
    article.classList.toggle('pinned', Boolean(message.pinned));
    const pinMark = $('.pin-mark', article);
    if (pinMark) pinMark.hidden = !message.pinned;
    const pin = $('.pin-button', article);
    if (pin) pin.textContent = message.pinned ? 'Unpin' : 'Pin';
    const row = $('.reactions', article);
    if (row) paintReactions(row, message);
    const summary = $('.thread-summary', article);
    if (summary) {
      const thread = message.thread;
      summary.hidden = !thread || thread.reply_count === 0;
      if (!summary.hidden) {
        $('.replies-button', summary).textContent = repliesLabel(thread.reply_count);
        const time = $('time', summary);
        time.dateTime = thread.last_reply_at;
        time.textContent = `Last reply ${new Date(thread.last_reply_at).toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' })}`;
      }
    }
  }

  // Same content (body, attachments), newer reactions, pin or thread.
  refresh(article, message) {
    if (this.current.has(article)) this.mark(article, message);
  }
}

// A root message with one more reply counted, unless the reply is already in
// its count: a REST copy of the root counts every reply up to when it was
// read, and replies are newer than the ones before them.
export function withReply(root, reply) {
  const thread = root.thread;
  if (thread && reply.created_at <= thread.last_reply_at) return root;
  return { ...root, thread: { reply_count: (thread?.reply_count ?? 0) + 1, last_reply_at: reply.created_at } };
}
