// The Admin "Reports" tab: reports by state, each showing the reported
// message, with "Resolve" / "Dismiss" and the moderation they usually call
// for: "Delete message" and "Ban sender" (from the message's room).
import * as api from './api.js';
import { confirmAction, h, showError } from './dom.js';
import { formatDate } from './invites.js';
import { displayName, rememberUser } from './users.js';

const REASONS = { spam: 'Spam', abuse: 'Abuse', illegal: 'Illegal content', other: 'Other' };
const STATES = [['open', 'Open'], ['resolved', 'Resolved'], ['dismissed', 'Dismissed']];

let reportCount = 0;

export class ReportsPanel {
  // onDecided() after a report leaves the open state (the badge recounts).
  constructor({ onDecided }) {
    this.onDecided = onDecided;
    this.cursor = null;
    this.state = h('select', { id: 'reports-state', onchange: () => this.reload() },
      STATES.map(([value, label]) => h('option', { value }, label)));
    this.list = h('ul', { class: 'admin-list', 'aria-label': 'Reports' });
    this.error = h('p', { class: 'error', role: 'alert' });
    this.more = h('button', { type: 'button', hidden: true, onclick: () => this.#loadPage() }, 'More reports');
    this.element = h('div', {},
      h('div', { class: 'field-row' }, h('label', { for: 'reports-state' }, 'Show'), this.state),
      this.error, this.list, this.more);
  }

  async reload() {
    this.cursor = null;
    this.list.replaceChildren();
    await this.#loadPage();
  }

  // A report.new frame: shown at the top when open reports are listed.
  add(report) {
    if (this.state.value !== 'open' || !this.list.isConnected) return;
    this.list.querySelector('.empty')?.remove();
    this.list.prepend(this.#render(report));
  }

  async #loadPage() {
    showError(this.error, null);
    try {
      const page = await api.get('/admin/reports', { state: this.state.value, limit: 50, cursor: this.cursor });
      this.cursor = page.next_cursor;
      this.more.hidden = !this.cursor;
      this.list.append(...page.items.map((report) => this.#render(report)));
      this.#markEmpty();
    } catch (failure) {
      showError(this.error, failure);
    }
  }

  #markEmpty() {
    if (!this.list.children.length) this.list.append(h('li', { class: 'hint empty' }, 'No reports here.'));
  }

  #render(report) {
    reportCount += 1;
    const labelId = `report-${reportCount}`;
    const { message, room } = report;
    const roomName = room.kind === 'dm' ? 'a direct message' : `#${room.name}`;
    rememberUser(report.reporter);
    const error = h('p', { class: 'error', role: 'alert' });
    const note = h('p', { class: 'hint', 'aria-live': 'polite' });
    const item = h('li', { class: 'admin-item report', 'aria-labelledby': labelId });
    const act = async (button, action) => {
      button.disabled = true;
      showError(error, null);
      try {
        await action();
      } catch (failure) {
        showError(error, failure);
      } finally {
        button.disabled = false;
      }
    };
    const button = (label, action, className) => {
      const element = h('button', { type: 'button', class: className, 'aria-describedby': labelId }, label);
      element.addEventListener('click', () => act(element, action));
      return element;
    };
    const decide = (state) => async () => {
      const decided = await api.patch(`/admin/reports/${report.id}`, { state });
      if (this.state.value === 'open') item.remove();
      else item.replaceWith(this.#render(decided));
      this.#markEmpty();
      this.onDecided();
    };
    const sender = message.sender_id;
    const actions = [];
    if (report.state === 'open') {
      actions.push(button('Resolve', decide('resolved'), 'primary'), button('Dismiss', decide('dismissed')));
    }
    if (!message.deleted) {
      actions.push(button('Delete message', async () => {
        if (!(await confirmAction('Delete the reported message for everyone?'))) return;
        await api.del(`/rooms/${room.id}/messages/${message.id}`);
        item.replaceWith(this.#render({ ...report, message: { ...message, body: '', deleted: true } }));
      }, 'danger'));
    }
    actions.push(button('Ban sender', async () => {
      if (!(await confirmAction(`Ban ${displayName(sender)} from ${roomName}?`))) return;
      await api.post(`/rooms/${room.id}/bans`, { user_id: sender, reason: `Reported message (${report.reason})` });
      note.textContent = `${displayName(sender)} is banned from ${roomName}.`;
    }, 'danger'));
    item.append(
      h('div', { class: 'admin-item-text' },
        h('span', { id: labelId, class: 'report-title' },
          `${REASONS[report.reason] ?? report.reason} in ${roomName}`),
        h('span', { class: 'hint' },
          'Reported by ', h('span', { 'data-user-name': report.reporter.id }, displayName(report.reporter.id)),
          ` · ${formatDate(report.created_at)} · ${report.state}`),
        report.comment ? h('p', { class: 'report-comment' }, report.comment) : null,
        h('blockquote', { class: 'reported-message', 'aria-label': 'Reported message' },
          h('span', { class: 'sender', 'data-user-name': sender }, displayName(sender)),
          message.deleted
            ? h('p', { class: 'body deleted' }, 'This message was deleted.')
            : h('p', { class: 'body' }, message.body || `(${message.attachments.length} attachment(s))`))),
      h('div', { class: 'admin-item-actions' }, actions),
      error, note);
    return item;
  }
}
