// One message as an `article`: the log's and the thread panel's one renderer.
// logdecor.js groups consecutive articles and adds day headings from the
// data-sender, data-created and data-day set here.
import { avatarBadge } from './avatar.js';
import { h } from './dom.js';
import { renderAttachment } from './media.js';
import { reportMessage } from './report.js';
import { dayKey, messageTime } from './time.js';
import { cachedUser, displayName, presenceDot } from './users.js';
import { openViewer } from './viewer.js';

// The body: Markdown with mentions (parts.body), "(edited)" after its last
// paragraph; a deleted message's notice.
function messageBody(message, parts) {
  if (message.deleted) return h('p', { class: 'body deleted' }, 'This message was deleted.');
  const edited = message.edited_at ? h('span', { class: 'hint edited' }, '(edited)') : null;
  if (!message.body) return edited;
  const body = h('div', { class: 'body markdown' }, parts.body(message));
  if (edited) {
    const last = body.lastElementChild;
    if (last?.localName === 'p') last.append(' ', edited);
    else body.append(h('p', {}, edited));
  }
  return body;
}

// parts renders reactions, pins and reply counts (parts.js); inThread: in the
// thread panel; root: the thread's first message there; onEdit/onDelete act on
// the caller's own message (others' get `Report`).
export function messageArticle(message, { me, parts, inThread = false, root = false, onEdit, onDelete }) {
  const mine = message.sender_id === me.id;
  const sender = message.sender_id;
  const name = displayName(sender);
  const header = h('header', { class: 'message-header' },
    presenceDot(sender),
    h('span', { class: 'sender', 'data-user-name': sender }, name),
    messageTime(message.created_at),
    parts.pinMark());
  const attachments = message.attachments.length
    ? h('div', { class: 'attachments' }, message.attachments.map((media) => renderAttachment(media, { view: openViewer })))
    : null;
  const own = mine
    ? [h('button', { type: 'button', class: 'edit-button', onclick: onEdit }, 'Edit'),
      h('button', { type: 'button', onclick: onDelete }, 'Delete')]
    : h('button', { type: 'button', onclick: () => reportMessage(message) }, 'Report');
  const actions = message.deleted ? null
    : h('div', { class: 'actions' }, parts.actions(message, { inThread }), own);
  const classes = ['message', mine ? 'mine' : null, root ? 'thread-root' : null].filter(Boolean).join(' ');
  const article = h('article', {
    class: classes,
    'data-seq': message.seq,
    'data-sender': sender,
    'data-created': message.created_at,
    'data-day': dayKey(message.created_at),
  },
  avatarBadge(sender, cachedUser(sender), name),
  header, messageBody(message, parts), attachments, parts.extras({ inThread }), actions);
  parts.mark(article, message);
  return article;
}
