// One message as an `article`: the log's and the thread panel's one renderer.
import { h } from './dom.js';
import { avatarImage, renderAttachment } from './media.js';
import { reportMessage } from './report.js';
import { cachedUser, displayName, presenceDot } from './users.js';

export function formatTime(iso) {
  const date = new Date(iso);
  const today = date.toDateString() === new Date().toDateString();
  return today
    ? date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : date.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

// parts renders reactions, pins and reply counts (parts.js); inThread: in the
// thread panel; root: the thread's first message there; onEdit/onDelete act on
// the caller's own message (others' get `Report`).
export function messageArticle(message, { me, parts, inThread = false, root = false, onEdit, onDelete }) {
  const mine = message.sender_id === me.id;
  const sender = message.sender_id;
  const header = h('header', { class: 'message-header' },
    avatarImage(sender, cachedUser(sender)),
    presenceDot(sender),
    h('span', { class: 'sender', 'data-user-name': sender }, displayName(sender)),
    h('time', { datetime: message.created_at, title: new Date(message.created_at).toLocaleString() }, formatTime(message.created_at)),
    message.edited_at && !message.deleted ? h('span', { class: 'hint' }, '(edited)') : null,
    parts.pinMark());
  let body = null;
  if (message.deleted) body = h('p', { class: 'body deleted' }, 'This message was deleted.');
  else if (message.body) body = h('p', { class: 'body' }, parts.body(message));
  const attachments = message.attachments.length
    ? h('div', { class: 'attachments' }, message.attachments.map(renderAttachment))
    : null;
  const own = mine
    ? [h('button', { type: 'button', class: 'edit-button', onclick: onEdit }, 'Edit'),
      h('button', { type: 'button', onclick: onDelete }, 'Delete')]
    : h('button', { type: 'button', onclick: () => reportMessage(message) }, 'Report');
  const actions = message.deleted ? null
    : h('div', { class: 'actions' }, parts.actions(message, { inThread }), own);
  const classes = ['message', mine ? 'mine' : null, root ? 'thread-root' : null].filter(Boolean).join(' ');
  const article = h('article', { class: classes, 'data-seq': message.seq },
    header, body, attachments, parts.extras({ inThread }), actions);
  parts.mark(article, message);
  return article;
}
