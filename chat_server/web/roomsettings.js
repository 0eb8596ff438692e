// The "Room settings" dialog of the open room: its members with presence
// and role, "Invite" by username (with suggestions) and "Leave" for
// everyone; for the room's owner and admins (and server admins) name and
// topic, "Make admin" / "Make member", "Kick", "Ban" and the ban list; for
// the owner (and server admins) "Delete room"; for the room's own owner and
// admins its "Webhooks" (webhooks.js). It follows the room's member.* and
// room.updated events live, including changes of the user's own role.
import * as api from './api.js';
import { $, confirmAction, h, openDialog, showError } from './dom.js';
import { UserPicker } from './userpicker.js';
import { presenceDot, rememberUser } from './users.js';
import { WebhookSection } from './webhooks.js';

const MEMBER_EVENTS = new Set(['member.joined', 'member.left', 'member.role']);
const MANAGERS = ['owner', 'admin'];
const ROLE_ORDER = { owner: 0, admin: 1, member: 2 };

function userName(user) {
  return user.display_name || user.username;
}

// The role the user acts with in a room: a server admin moderates any room
// as its owner would (API.md "Registration and server administration").
function actingRole(me, room) {
  return me.is_admin && room.kind !== 'dm' ? 'owner' : room.my_role;
}

// The server's rules (db.py `outranks`, `_may_give_role`), so that only
// buttons that can work are shown: managers remove and ban members, only
// the owner removes an admin; managers make members admins, only the owner
// makes an admin a member again (an admin may step down); nobody changes
// or removes the owner.
function mayRemove(myRole, role) {
  return MANAGERS.includes(myRole) && role !== 'owner' && (role !== 'admin' || myRole === 'owner');
}

function mayDemote(myRole, isMe) {
  return myRole === 'owner' || (myRole === 'admin' && isMe);
}

// Shows the open room's topic under its name in the room header.
export function showRoomTopic(room) {
  const topic = $('#room-topic');
  topic.textContent = room?.topic ?? '';
  topic.hidden = !topic.textContent;
}

export class RoomSettings {
  // button: the room header's "Room settings"; getContext() → the Session.
  constructor(button, getContext) {
    this.getContext = getContext;
    this.roomId = null;
    this.dialog = h('dialog', { class: 'wide room-settings', 'aria-labelledby': 'room-settings-title' });
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
    if (frame.type === 'room.removed') {
      this.dialog.close();
    } else if (frame.type === 'member.role' && frame.user.id === this.getContext().me.id) {
      // Our own controls change with our role; focus stays in the dialog.
      const hadFocus = this.dialog.contains(document.activeElement);
      this.#render();
      if (hadFocus) this.dialog.querySelector('input, button')?.focus();
    } else if (frame.type === 'room.updated') {
      this.#roomUpdated(frame.room);
    } else if (MEMBER_EVENTS.has(frame.type)) {
      this.#loadMembers();
    }
  }

  open() {
    const session = this.getContext();
    const roomId = session.view.roomId;
    if (!session.list.get(roomId)) return;
    this.roomId = roomId;
    this.#render();
    openDialog(this.dialog);
  }

  // (Re)builds the dialog for the room as the Session knows it now.
  #render() {
    const session = this.getContext();
    const room = session.list.get(this.roomId);
    if (!room) return;
    const isDm = room.kind === 'dm';
    this.myRole = actingRole(session.me, room);
    this.manager = !isDm && MANAGERS.includes(this.myRole);
    const owner = !isDm && this.myRole === 'owner';
    // Webhooks are the room's owner and admins' own, not server admins'.
    const webhooks = !isDm && MANAGERS.includes(room.my_role) ? new WebhookSection(room.id) : null;
    this.error = h('p', { class: 'error', role: 'alert' });
    this.note = h('p', { class: 'hint', 'aria-live': 'polite' });
    this.membersHeading = h('h3', {}, 'Members');
    this.members = h('ul', { class: 'admin-list member-list', 'aria-label': 'Members' });
    this.memberIds = new Set();
    this.bans = h('ul', { class: 'admin-list', 'aria-label': 'Banned' });
    const title = session.list.title(room);
    this.subtitle = h('p', { class: 'hint' }, isDm ? `Direct message with ${title}` : `#${title}`);
    this.detailsForm = this.manager ? this.#detailsForm(room) : null;
    this.dialog.replaceChildren(
      h('h2', { id: 'room-settings-title' }, 'Room settings'),
      this.subtitle,
      this.error,
      this.detailsForm,
      this.membersHeading,
      this.members,
      this.note,
      this.manager ? this.#inviteForm(room) : null,
      this.manager ? h('div', {}, h('h3', {}, 'Banned'), this.bans) : null,
      webhooks?.element,
      h('div', { class: 'buttons' },
        owner ? h('button', { type: 'button', class: 'danger', onclick: () => this.#deleteRoom(room, title) }, 'Delete room') : null,
        isDm ? null : h('button', { type: 'button', onclick: () => this.#leave(room, title) }, 'Leave'),
        h('button', { type: 'button', onclick: () => this.dialog.close() }, 'Close')));
    this.#loadMembers();
    webhooks?.reload();
  }

  // Another manager renamed the room: the subtitle and untouched fields follow.
  #roomUpdated(room) {
    if (room.kind !== 'dm') this.subtitle.textContent = `#${room.name}`;
    if (!this.detailsForm) return;
    for (const name of ['name', 'topic']) {
      const field = this.detailsForm.elements.namedItem(name);
      if (field !== document.activeElement) field.value = room[name] ?? '';
    }
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
      const sorted = members.items.sort((a, b) => ROLE_ORDER[a.role] - ROLE_ORDER[b.role]
        || userName(a.user).localeCompare(userName(b.user), undefined, { sensitivity: 'base' }));
      this.memberIds = new Set(sorted.map((member) => member.user.id));
      this.membersHeading.textContent = `Members (${sorted.length}${members.next_cursor ? '+' : ''})`;
      this.#replaceKeepingFocus(this.members, sorted.map((member) => this.#member(member, me)));
      if (bans) {
        this.#replaceKeepingFocus(this.bans, bans.items.map((ban) => this.#ban(ban)));
        if (!bans.items.length) this.bans.append(h('li', { class: 'hint' }, 'Nobody is banned.'));
      }
    });
  }

  // Repaints a list. A focused button in it gets focus back in its item's
  // new copy (the same button, or the item's first), else the list's first
  // button, so keyboard users keep their place when a live event redraws it.
  #replaceKeepingFocus(list, items) {
    const focused = list.contains(document.activeElement) ? document.activeElement : null;
    const key = focused?.closest('li')?.dataset.key;
    list.replaceChildren(...items);
    if (!focused) return;
    const item = key ? list.querySelector(`li[data-key="${key}"]`) : null;
    const buttons = item ? [...item.querySelectorAll('button')] : [];
    const again = buttons.find((button) => button.textContent === focused.textContent) ?? buttons[0];
    (again ?? list.querySelector('button'))?.focus();
  }

  #member({ user, role }, me) {
    rememberUser(user);
    const nameId = `room-member-${user.id}`;
    const isMe = user.id === me;
    const actions = [];
    const button = (label, onclick, danger = false) => h('button', {
      type: 'button', class: danger ? 'danger' : null, 'aria-describedby': nameId, onclick,
    }, label);
    if (this.manager && role === 'member') {
      actions.push(button('Make admin', () => this.#setRole(user, 'admin')));
    }
    if (this.manager && role === 'admin' && mayDemote(this.myRole, isMe)) {
      actions.push(button('Make member', async () => {
        if (isMe && !(await confirmAction('Give up your admin role? Only the owner can make you an admin again.'))) return;
        await this.#setRole(user, 'member');
      }));
    }
    if (!isMe && mayRemove(this.myRole, role)) {
      actions.push(button('Kick', async () => {
        if (!(await confirmAction(`Remove ${userName(user)} from the room?`))) return;
        await this.#act(async () => {
          await api.del(`/rooms/${this.roomId}/members/${user.id}`);
          this.note.textContent = `${userName(user)} was removed from the room.`;
        });
      }));
      actions.push(button('Ban', async () => {
        if (!(await confirmAction(`Ban ${userName(user)} from the room? They cannot come back until the ban is lifted.`))) return;
        await this.#act(async () => {
          await api.post(`/rooms/${this.roomId}/bans`, { user_id: user.id });
          await this.#loadMembers();
        });
      }, true));
    }
    return h('li', { class: 'admin-item member-item', 'data-key': user.id },
      presenceDot(user.id, { labelled: true }),
      h('div', { class: 'admin-item-text' },
        h('span', { id: nameId },
          h('strong', {}, userName(user)), ` @${user.username}`,
          isMe ? h('span', { class: 'tag' }, 'you') : null,
          role === 'member' ? null : h('span', { class: `tag role-${role}` }, role),
          user.is_bot ? h('span', { class: 'tag' }, 'bot') : null)),
      actions.length ? h('div', { class: 'admin-item-actions' }, actions) : null);
  }

  async #setRole(user, role) {
    await this.#act(async () => {
      await api.patch(`/rooms/${this.roomId}/members/${user.id}`, { role });
      this.note.textContent = role === 'admin'
        ? `${userName(user)} is now an admin.`
        : `${userName(user)} is now a member.`;
      // The member.role event repaints the list (and, for our own role, the dialog).
    });
  }

  #ban(ban) {
    const nameId = `room-ban-${ban.user.id}`;
    return h('li', { class: 'admin-item', 'data-key': ban.user.id },
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
    const saved = h('span', { class: 'hint', 'aria-live': 'polite' });
    const form = h('form', { class: 'settings-form' },
      h('label', { for: 'room-settings-name' }, 'Room name'),
      h('input', { id: 'room-settings-name', name: 'name', required: true, maxlength: 80, value: room.name }),
      h('label', { for: 'room-settings-topic' }, 'Topic'),
      h('input', { id: 'room-settings-topic', name: 'topic', maxlength: 1000, value: room.topic ?? '' }),
      h('div', { class: 'buttons' }, saved, h('button', { type: 'submit' }, 'Save')));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      saved.textContent = '';
      const data = new FormData(form);
      this.#act(async () => {
        const updated = await api.patch(`/rooms/${room.id}`, {
          name: data.get('name').trim(),
          topic: data.get('topic').trim(),
        });
        this.getContext().addRoom(updated);
        saved.textContent = 'Saved.';
      });
    });
    return form;
  }

  // Adds a member by username; suggestions come as the name is typed.
  #inviteForm(room) {
    const field = h('input', {
      id: 'room-invite-username', name: 'username', required: true, autocapitalize: 'none', spellcheck: 'false', maxlength: 32,
      'aria-describedby': 'room-invite-hint',
    });
    let picked = null; // the suggestion taken, if the field still holds its name
    const form = h('form', { class: 'settings-form invite-member' },
      h('h3', {}, 'Add a member'),
      h('label', { for: 'room-invite-username' }, 'Username'),
      h('div', { class: 'copy-row picker-row' }, h('div', { class: 'picker' }, field), h('button', { type: 'submit' }, 'Invite')),
      h('p', { id: 'room-invite-hint', class: 'hint' }, 'Type a name: matching people are suggested. They join at once and see the room in their list.'));
    new UserPicker(field, {
      exclude: (user) => this.memberIds.has(user.id),
      onPick: (user) => { picked = user; },
    });
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.note.textContent = '';
      const username = field.value.trim().replace(/^@/, '').toLowerCase();
      this.#act(async () => {
        let user = picked?.username === username ? picked : null;
        if (!user) {
          const { items } = await api.get('/users', { q: username, limit: 100 });
          user = items.find((candidate) => candidate.username === username);
        }
        if (!user) throw new Error(`There is no user named “${username}”.`);
        if (this.memberIds.has(user.id)) throw new Error(`${userName(user)} is a member already.`);
        await api.post(`/rooms/${room.id}/members`, { user_id: user.id });
        field.value = '';
        picked = null;
        this.note.textContent = `${userName(user)} was added to the room.`;
        await this.#loadMembers();
      });
    });
    return form;
  }

  async #leave(room, title) {
    const owned = room.my_role === 'owner' ? ' You own it: it stays for its other members, without an owner.' : '';
    if (!(await confirmAction(`Leave ${title}?${owned}`))) return;
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
