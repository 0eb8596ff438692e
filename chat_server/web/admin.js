// The "Admin" button (server admins only; its badge counts open reports) and
// its dialog with the tabs "Users", "Invites", "Reports" and "Audit log".
import * as api from './api.js';
import { confirmAction, h, openDialog, showError } from './dom.js';
import { InviteList, formatDate, inviteForm, managedRooms } from './invites.js';
import { ReportsPanel } from './reports.js';
import { makeTabs } from './tabs.js';
import { displayName } from './users.js';

const SEARCH_DELAY_MS = 250;

function userName(user) {
  return user.display_name || user.username;
}

// Users: search, filter by state, and per user deactivate/reactivate and
// make admin/remove admin.
class UsersPanel {
  constructor() {
    this.cursor = null;
    this.query = h('input', { id: 'admin-user-search', type: 'search', autocomplete: 'off', spellcheck: 'false' });
    this.state = h('select', { id: 'admin-user-state' },
      h('option', { value: 'all' }, 'All'),
      h('option', { value: 'active' }, 'Active'),
      h('option', { value: 'deactivated' }, 'Deactivated'));
    this.list = h('ul', { class: 'admin-list', 'aria-label': 'Users' });
    this.error = h('p', { class: 'error', role: 'alert' });
    this.more = h('button', { type: 'button', hidden: true, onclick: () => this.#loadPage() }, 'More users');
    let timer = null;
    this.query.addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(() => this.reload(), SEARCH_DELAY_MS);
    });
    this.state.addEventListener('change', () => this.reload());
    this.element = h('div', {},
      this.#createForm(),
      h('div', { class: 'field-row' },
        h('span', {}, h('label', { for: 'admin-user-search' }, 'Search users'), this.query),
        h('span', {}, h('label', { for: 'admin-user-state' }, 'Show'), this.state)),
      this.error, this.list, this.more);
  }

  // "Create user": how accounts are made when sign-up is closed.
  #createForm() {
    const field = (name, label, attributes = {}) => [
      h('label', { for: `admin-new-${name}` }, label),
      h('input', { id: `admin-new-${name}`, name, autocomplete: 'off', ...attributes }),
    ];
    const error = h('p', { class: 'error', role: 'alert' });
    const done = h('p', { class: 'hint', 'aria-live': 'polite' });
    const form = h('form', { class: 'settings-form' },
      ...field('username', 'Username', { required: true, maxlength: 32, autocapitalize: 'none', spellcheck: 'false' }),
      ...field('password', 'Password', { type: 'password', required: true, minlength: 8, autocomplete: 'new-password' }),
      ...field('display_name', 'Display name'),
      h('label', { class: 'checkbox' }, h('input', { type: 'checkbox', name: 'is_admin' }), 'Server admin'),
      error,
      h('div', { class: 'buttons' }, h('button', { type: 'submit' }, 'Create user')),
      done);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      showError(error, null);
      done.textContent = '';
      try {
        const user = await api.post('/admin/users', {
          username: data.get('username').trim(),
          password: data.get('password'),
          display_name: data.get('display_name').trim() || undefined,
          is_admin: data.get('is_admin') === 'on',
        });
        form.reset();
        done.textContent = `${userName(user)} (@${user.username}) can log in now.`;
        this.reload();
      } catch (failure) {
        showError(error, failure);
      }
    });
    return h('details', { class: 'create-user' }, h('summary', {}, 'New account'), form);
  }

  async reload() {
    this.cursor = null;
    this.generation = (this.generation ?? 0) + 1;
    this.list.replaceChildren();
    await this.#loadPage();
  }

  async #loadPage() {
    const generation = this.generation;
    showError(this.error, null);
    try {
      const page = await api.get('/admin/users', {
        q: this.query.value.trim() || undefined,
        state: this.state.value,
        limit: 50,
        cursor: this.cursor,
      });
      if (generation !== this.generation) return; // a newer search started
      this.cursor = page.next_cursor;
      this.more.hidden = !this.cursor;
      this.list.append(...page.items.map((user) => this.#render(user)));
      if (!this.list.children.length) this.list.append(h('li', { class: 'hint' }, 'No users found.'));
    } catch (failure) {
      showError(this.error, failure);
    }
  }

  #render(user) {
    const nameId = `admin-user-${user.id}`;
    const error = h('p', { class: 'error', role: 'alert' });
    const change = (label, changes, question) => {
      const button = h('button', { type: 'button', 'aria-describedby': nameId }, label);
      button.addEventListener('click', async () => {
        if (question && !(await confirmAction(question))) return;
        button.disabled = true;
        showError(error, null);
        try {
          const updated = await api.patch(`/admin/users/${user.id}`, changes);
          const fresh = this.#render(updated);
          item.replaceWith(fresh);
          fresh.querySelector('button')?.focus();
        } catch (failure) {
          showError(error, failure);
          button.disabled = false;
        }
      });
      return button;
    };
    const tags = [user.is_admin && 'admin', user.is_bot && 'bot', user.deactivated && 'deactivated'].filter(Boolean);
    const seen = user.last_seen_at ? `last seen ${formatDate(user.last_seen_at)}` : 'never seen';
    const sessions = `${user.session_count} session${user.session_count === 1 ? '' : 's'}`;
    const actions = [
      user.deactivated
        ? change('Reactivate', { deactivated: false })
        : change('Deactivate', { deactivated: true },
          `Deactivate ${userName(user)}? They are signed out everywhere and removed from every room; their messages stay.`),
    ];
    if (!user.is_bot && !user.deactivated) {
      actions.push(user.is_admin
        ? change('Remove admin', { is_admin: false }, `Remove ${userName(user)}'s admin rights?`)
        : change('Make admin', { is_admin: true }, `Make ${userName(user)} a server admin?`));
    }
    const item = h('li', { class: `admin-item${user.deactivated ? ' inactive' : ''}` },
      h('div', { class: 'admin-item-text' },
        h('span', { id: nameId },
          h('strong', {}, userName(user)), ` @${user.username}`,
          tags.map((tag) => h('span', { class: 'tag' }, tag))),
        h('span', { class: 'hint' }, `${seen} · ${sessions}`)),
      h('div', { class: 'admin-item-actions' }, actions),
      error);
    return item;
  }
}

// Audit log: newest first, a page at a time.
class AuditPanel {
  constructor() {
    this.cursor = null;
    this.rows = h('tbody');
    this.error = h('p', { class: 'error', role: 'alert' });
    this.more = h('button', { type: 'button', hidden: true, onclick: () => this.#loadPage() }, 'Older entries');
    this.element = h('div', {},
      this.error,
      h('div', { class: 'table-scroll' },
        h('table', { class: 'audit' },
          h('caption', { class: 'visually-hidden' }, 'Audit log, newest first'),
          h('thead', {}, h('tr', {}, ['When', 'Who', 'Action', 'Target', 'IP', 'Details'].map((name) => h('th', { scope: 'col' }, name)))),
          this.rows)),
      this.more);
  }

  async reload() {
    this.cursor = null;
    this.rows.replaceChildren();
    await this.#loadPage();
  }

  async #loadPage() {
    showError(this.error, null);
    try {
      const page = await api.get('/admin/audit', { limit: 50, cursor: this.cursor });
      this.cursor = page.next_cursor;
      this.more.hidden = !this.cursor;
      this.rows.append(...page.items.map((entry) => h('tr', {},
        h('td', {}, h('time', { datetime: entry.at }, formatDate(entry.at))),
        h('td', {}, entry.actor_id === null ? 'system' : h('span', { 'data-user-name': entry.actor_id }, displayName(entry.actor_id))),
        h('td', {}, entry.action),
        h('td', {}, `${entry.target_type} ${entry.target_id ?? ''}`.trim()),
        h('td', {}, entry.ip ?? ''),
        h('td', {}, h('code', {}, Object.keys(entry.details ?? {}).length ? JSON.stringify(entry.details) : '')))));
      if (!this.rows.children.length) this.rows.append(h('tr', {}, h('td', { colspan: 6, class: 'hint' }, 'Nothing yet.')));
    } catch (failure) {
      showError(this.error, failure);
    }
  }
}

// button: the topbar's Admin button; getContext() → the signed-in Session.
export class AdminArea {
  constructor(button, getContext) {
    this.button = button;
    this.getContext = getContext;
    this.openReports = 0;
    this.badge = h('span', { class: 'badge', 'aria-hidden': 'true', hidden: true });
    this.badgeText = h('span', { id: 'admin-badge-text', hidden: true });
    button.append(this.badge);
    button.after(this.badgeText);
    button.setAttribute('aria-describedby', 'admin-badge-text');

    this.users = new UsersPanel();
    this.reports = new ReportsPanel({ onDecided: () => this.countReports() });
    this.audit = new AuditPanel();
    this.invitesPanel = h('div');
    this.tabs = makeTabs('Administration', [
      { name: 'Users', panel: this.users.element, onShow: () => this.users.reload() },
      { name: 'Invites', panel: this.invitesPanel, onShow: () => this.#showInvites() },
      { name: 'Reports', panel: this.reports.element, onShow: () => this.reports.reload() },
      { name: 'Audit log', panel: this.audit.element, onShow: () => this.audit.reload() },
    ]);
    this.dialog = h('dialog', { class: 'wide admin', 'aria-labelledby': 'admin-title' },
      h('h2', { id: 'admin-title' }, 'Administration'),
      this.tabs.element,
      h('div', { class: 'buttons' }, h('button', { type: 'button', onclick: () => this.dialog.close() }, 'Close')));
    document.body.append(this.dialog);
    button.addEventListener('click', () => this.open());
  }

  // On sign-in and whenever the signed-in user changes (admin rights may
  // come or go).
  userChanged(me) {
    const wasAdmin = !this.button.hidden;
    this.button.hidden = !me.is_admin;
    if (!me.is_admin) {
      this.dialog.close();
      this.#paintBadge(0);
    } else if (!wasAdmin) {
      this.countReports();
    }
  }

  signedOut() {
    this.button.hidden = true;
    this.dialog.close();
    this.#paintBadge(0);
  }

  // A report.new frame.
  onReport(report) {
    this.#paintBadge(this.openReports + 1);
    if (this.dialog.open && this.tabs.selected() === 'Reports') this.reports.add(report);
  }

  async countReports() {
    try {
      const page = await api.get('/admin/reports', { state: 'open', limit: 100 });
      this.#paintBadge(page.items.length + (page.next_cursor ? 1 : 0), Boolean(page.next_cursor));
    } catch {
      // The badge is a hint; the Reports tab shows the truth.
    }
  }

  #paintBadge(count, more = false) {
    this.openReports = count;
    this.badge.hidden = count === 0;
    this.badge.textContent = more || count > 99 ? '99+' : String(count);
    this.badgeText.textContent = count === 0 ? '' : `${more ? 'More than 100' : count} open report${count === 1 ? '' : 's'}`;
  }

  #showInvites() {
    const session = this.getContext();
    const list = new InviteList({ roomName: (id) => session.list.get(id)?.name });
    this.invitesPanel.replaceChildren(
      inviteForm({ rooms: () => managedRooms(session), selected: session.view.roomId, onCreated: () => list.reload() }),
      list.element);
    list.reload();
  }

  open() {
    this.tabs.select(this.openReports > 0 ? 'Reports' : 'Users');
    openDialog(this.dialog);
    // The dialog would focus its first tab; focus the selected one.
    this.dialog.querySelector('[role=tab][aria-selected=true]').focus();
  }
}
