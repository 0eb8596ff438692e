// The "Room settings" dialog of the open room: its members, "Leave" for
// everyone; for the room's owner and admins (and server admins) name and
// topic, "Invite" by username, "Kick", "Ban" and the ban list; for the owner
// (and server admins) "Delete room"; for the room's own owner and admins its
// "Webhooks" (webhooks.js). Member lists follow live events.
import * as api from './api.js';
import { confirmAction, h, openDialog, showError } from './dom.js';
import { rememberUser } from './users.js';
import { WebhookSection } from './webhooks.js';

const MEMBER_EVENTS = new Set(['member.joined', 'member.left', 'member.role']);

function userName(user) {
  return user.display_name || user.username;
}

export class RoomSettings {
  // button: the room header's "Room settings"; getContext() → the Session.
  constructor(button, getContext) {
    this.getContext = getContext;
    this.roomId = null;
    this.dialog = h('dialog', { class: 'wide', 'aria-labelledby': 'room-settings-title' });
    document.body.append(this.dialog);
    this.dialog.addEventListener('close', () => {
      this.roomId = null;
      this.dialog.replaceChildren();
    });
    button.addEventListener('click', () => this.open());
  }

  // The Session's view of a room event or room.removed, for the open dialog.
  onEvent(frame) {
    if (!this.dialog.open) return;
    const roomId = frame.room_id ?? frame.room?.id;
    if (roomId !== this.roomId) return;
    if (frame.type === 'room.removed') this.dialog.close();
    else if (MEMBER_EVENTS.has(frame.type)) this.#loadMembers();
  }

  open() {
    const session = this.getContext();
    const room = session.list.get(session.view.roomId);
    if (!room) return;
    this.roomId = room.id;
    const isDm = room.kind === 'dm';
    this.manager = !isDm && (session.me.is_admin || ['owner', 'admin'].includes(room.my_role));
    const owner = !isDm && (session.me.is_admin || room.my_role === 'owner');
    // Webhooks are the room's owner and admins' own, not server admins'.
    const webhooks = !isDm && ['owner', 'admin'].includes(room.my_role) ? new WebhookSection(room.id) : null;
    this.error = h('p', { class: 'error', role: 'alert' });
    this.members = h('ul', { class: 'admin-list', 'aria-label': 'Members' });
    this.bans = h('ul', { class: 'admin-list', 'aria-label': 'Banned' });
    const title = session.list.title(room);
    this.dialog.replaceChildren(
      h('h2', { id: 'room-settings-title' }, 'Room settings'),
      h('p', { class: 'hint' }, isDm ? `Direct message with ${title}` : `#${title}`),
      this.error,
      this.manager ? this.#detailsForm(room) : null,
      h('h3', {}, 'Members'),
      this.members,
      this.manager ? this.#inviteForm(room) : null,
      this.manager ? h('div', {}, h('h3', {}, 'Banned'), this.bans) : null,
      webhooks?.element,
      h('div', { class: 'buttons' },
        owner ? h('button', { type: 'button', class: 'danger', onclick: () => this.#deleteRoom(room, title) }, 'Delete room') : null,
        h('button', { type: 'button', onclick: () => this.#leave(room, title) }, 'Leave'),
        h('button', { type: 'button', onclick: () => this.dialog.close() }, 'Close')));
    openDialog(this.dialog);
    this.#loadMembers();
    webhooks?.reload();
  }

  // Runs an action of the dialog, showing a failure in it.
  async #act(action) {
    showError(this.error, null);
    try {
      await action();
    } catch (failure) {
      showError(this.error, failure);
    }
  }

  async #loadMembers() {
    const roomId = this.roomId;
    await this.#act(async () => {
      const [members, bans] = await Promise.all([
        api.get(`/rooms/${roomId}/members`, { limit: 100 }),
        this.manager ? api.get(`/rooms/${roomId}/bans`, { limit: 100 }) : null,
      ]);
      if (roomId !== this.roomId) return;
      const me = this.getContext().me.id;
      this.members.replaceChildren(...members.items.map((member) => this.#member(member, me)));
      if (bans) {
        this.bans.replaceChildren(...bans.items.map((ban) => this.#ban(ban)));
        if (!bans.items.length) this.bans.append(h('li', { class: 'hint' }, 'Nobody is banned.'));
      }
    });
  }

  #member({ user, role }, me) {
    rememberUser(user);
    const nameId = `room-member-${user.id}`;
    const moderate = this.manager && user.id !== me && role !== 'owner';
    const roomId = this.roomId;
    return h('li', { class: 'admin-item' },
      h('div', { class: 'admin-item-text' },
        h('span', { id: nameId },
          h('strong', {}, userName(user)), ` @${user.username}`,
          role === 'member' ? null : h('span', { class: 'tag' }, role),
          user.is_bot ? h('span', { class: 'tag' }, 'bot') : null)),
      moderate ? h('div', { class: 'admin-item-actions' },
        h('button', {
          type: 'button',
          'aria-describedby': nameId,
          onclick: async () => {
            if (!(await confirmAction(`Remove ${userName(user)} from the room?`))) return;
            await this.#act(() => api.del(`/rooms/${roomId}/members/${user.id}`));
          },
        }, 'Kick'),
        h('button', {
          type: 'button',
          class: 'danger',
          'aria-describedby': nameId,
          onclick: async () => {
            if (!(await confirmAction(`Ban ${userName(user)} from the room? They cannot come back until the ban is lifted.`))) return;
            await this.#act(async () => {
              await api.post(`/rooms/${roomId}/bans`, { user_id: user.id });
              await this.#loadMembers();
            });
          },
        }, 'Ban')) : null);
  }

  #ban(ban) {
    const nameId = `room-ban-${ban.user.id}`;
    return h('li', { class: 'admin-item' },
      h('div', { class: 'admin-item-text' },
        h('span', { id: nameId }, h('strong', {}, userName(ban.user)), ` @${ban.user.username}`),
        ban.reason ? h('span', { class: 'hint' }, ban.reason) : null),
      h('div', { class: 'admin-item-actions' },
        h('button', {
          type: 'button',
          'aria-describedby': nameId,
          onclick: () => this.#act(async () => {
            await api.del(`/rooms/${this.roomId}/bans/${ban.user.id}`);
            await this.#loadMembers();
          }),
        }, 'Unban')));
  }

  #detailsForm(room) {
    const form = h('form', { class: 'settings-form' },
      h('label', { for: 'room-settings-name' }, 'Room name'),
      h('input', { id: 'room-settings-name', name: 'name', required: true, value: room.name }),
      h('label', { for: 'room-settings-topic' }, 'Topic'),
      h('input', { id: 'room-settings-topic', name: 'topic', value: room.topic ?? '' }),
      h('div', { class: 'buttons' }, h('button', { type: 'submit' }, 'Save')));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const data = new FormData(form);
      this.#act(async () => {
        const updated = await api.patch(`/rooms/${room.id}`, {
          name: data.get('name').trim(),
          topic: data.get('topic').trim(),
        });
        this.getContext().addRoom(updated);
      });
    });
    return form;
  }

  // Adds a member by exact username.
  #inviteForm(room) {
    const done = h('p', { class: 'hint', 'aria-live': 'polite' });
    const field = h('input', { id: 'room-invite-username', name: 'username', required: true, autocapitalize: 'none', spellcheck: 'false', maxlength: 32 });
    const form = h('form', { class: 'settings-form' },
      h('h3', {}, 'Add a member'),
      h('label', { for: 'room-invite-username' }, 'Username'),
      h('div', { class: 'copy-row' }, field, h('button', { type: 'submit' }, 'Invite')),
      done);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      done.textContent = '';
      const username = field.value.trim().toLowerCase();
      this.#act(async () => {
        const { items } = await api.get('/users', { q: username, limit: 100 });
        const user = items.find((candidate) => candidate.username === username);
        if (!user) throw new Error(`There is no user named “${username}”.`);
        await api.post(`/rooms/${room.id}/members`, { user_id: user.id });
        field.value = '';
        done.textContent = `${userName(user)} was added to the room.`;
        await this.#loadMembers();
      });
    });
    return form;
  }

  async #leave(room, title) {
    if (!(await confirmAction(`Leave ${title}?`))) return;
    await this.#act(async () => {
      await api.post(`/rooms/${room.id}/leave`);
      this.dialog.close();
      this.getContext().removeRoom(room.id);
    });
  }

  async #deleteRoom(room, title) {
    if (!(await confirmAction(`Delete ${title} for everyone? Its messages are gone for good.`))) return;
    await this.#act(async () => {
      await api.del(`/rooms/${room.id}`);
      this.dialog.close();
      this.getContext().removeRoom(room.id);
    });
  }
}
