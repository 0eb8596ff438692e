// The room list in the "Rooms" navigation: one button per room the user is
// in, named after the room (a DM after the other member), with its unread
// badge and, apart from it, an `@` badge counting unread mentions. Items are updated in place so keyboard focus survives live updates.
import * as api from './api.js';
import { $, h } from './dom.js';
import { cachedUser, paintPresence, rememberUser } from './users.js';

function unreadCount(room) {
  return Math.max(0, room.last_seq - room.my_last_read_seq);
}

export class RoomList {
  // onChange() after any room's state or the list changed.
  constructor({ me, onSelect, onChange = () => {} }) {
    this.me = me;
    this.onSelect = onSelect;
    this.onChange = onChange;
    this.rooms = new Map(); // id → Room, plus peerId for DMs
    this.items = new Map(); // id → <li>
    this.openId = null;
    this.roomList = $('#room-list');
    this.dmList = $('#dm-list');
  }

  get(id) {
    return this.rooms.get(id);
  }

  ids() {
    return [...this.rooms.keys()];
  }

  title(room) {
    if (room.kind !== 'dm') return room.name;
    const peer = room.peerId && cachedUser(room.peerId);
    return peer ? peer.display_name || peer.username : '…'; // until #findPeer answers
  }

  // Adds a room or merges a newer copy of it. last_seq and the read marker
  // only move forward: a Room fetched over REST can be older than the events
  // that already arrived.
  upsert(fresh) {
    const known = this.rooms.get(fresh.id);
    const room = { ...known, ...fresh };
    if (known) {
      room.last_seq = Math.max(known.last_seq, fresh.last_seq);
      room.my_last_read_seq = Math.max(known.my_last_read_seq, fresh.my_last_read_seq);
    }
    room.unread_mentions = room.my_last_read_seq >= room.last_seq ? 0 : room.unread_mentions ?? 0;
    this.rooms.set(room.id, room);
    if (room.kind === 'dm' && !room.peerId) this.#findPeer(room.id);
    this.#paint(room);
    this.#sort();
  }

  remove(id) {
    this.rooms.delete(id);
    this.items.get(id)?.remove();
    this.items.delete(id);
    this.onChange();
  }

  // Records activity in a room (a new message, a read marker) and repaints.
  update(id, { lastSeq = 0, readSeq = 0 }) {
    const room = this.rooms.get(id);
    if (!room) return;
    room.last_seq = Math.max(room.last_seq, lastSeq);
    room.my_last_read_seq = Math.max(room.my_last_read_seq, readSeq);
    // Only the server knows which mentions lie before a partial read marker.
    if (room.my_last_read_seq >= room.last_seq) room.unread_mentions = 0;
    this.#paint(room);
  }

  // A new message at seq mentions the user.
  mentioned(id, seq) {
    const room = this.rooms.get(id);
    if (!room || seq <= room.my_last_read_seq) return;
    room.unread_mentions = (room.unread_mentions ?? 0) + 1;
    this.#paint(room);
  }

  select(id) {
    this.openId = id;
    for (const room of this.rooms.values()) this.#paint(room);
  }

  // Puts keyboard focus on a room's entry (back from the room, on a phone).
  focus(id) {
    this.items.get(id)?.firstElementChild.focus();
  }

  // A user's name changed: DM titles may depend on it.
  userChanged(user) {
    for (const room of this.rooms.values()) {
      if (room.peerId === user.id) this.#paint(room);
    }
    this.#sort();
  }

  async #findPeer(roomId) {
    try {
      const { items } = await api.get(`/rooms/${roomId}/members`);
      const peer = items.find((member) => member.user.id !== this.me.id) ?? items[0];
      const room = this.rooms.get(roomId);
      if (!peer || !room) return;
      room.peerId = peer.user.id;
      rememberUser(peer.user); // repaints through userChanged
    } catch {
      // Shown as "…" until the next time the room is listed.
    }
  }

  #paint(room) {
    let item = this.items.get(room.id);
    if (!item) {
      const button = h('button', { type: 'button', class: 'room-button', onclick: () => this.onSelect(room.id) },
        h('span', { class: 'room-icon', 'aria-hidden': 'true' }),
        h('span', { class: 'room-name' }),
        h('span', { class: 'badge' }, h('span', { class: 'badge-count' }), h('span', { class: 'visually-hidden' }, ' unread')),
        h('span', { class: 'badge mention-badge' }, h('span', { 'aria-hidden': 'true' }, '@'),
          h('span', { class: 'mention-count' }), h('span', { class: 'visually-hidden mention-label' })));
      item = h('li', {}, button);
      this.items.set(room.id, item);
    }
    const icon = $('.room-icon', item);
    icon.textContent = room.kind === 'public' ? '#' : '';
    icon.classList.toggle('private', room.kind === 'private'); // a lock drawn in CSS
    icon.classList.toggle('presence', room.kind === 'dm');
    if (room.kind === 'dm' && room.peerId) {
      icon.dataset.presence = room.peerId;
      paintPresence(icon, room.peerId);
    }
    $('.room-name', item).textContent = this.title(room);
    const button = item.firstElementChild;
    if (room.id === this.openId) button.setAttribute('aria-current', 'page');
    else button.removeAttribute('aria-current');
    const unread = room.id === this.openId ? 0 : unreadCount(room);
    $('.badge', item).hidden = unread === 0;
    $('.badge-count', item).textContent = unread > 99 ? '99+' : String(unread);
    const mentions = room.id === this.openId ? 0 : room.unread_mentions ?? 0;
    $('.mention-badge', item).hidden = mentions === 0;
    $('.mention-count', item).textContent = mentions > 99 ? '99+' : String(mentions);
    $('.mention-label', item).textContent = mentions === 1 ? ' mention' : ' mentions';
    this.onChange();
  }

  // Keeps each list alphabetical, moving only the items that are out of place
  // (moving the focused element would drop keyboard focus).
  #sort() {
    for (const [list, isDm] of [[this.roomList, false], [this.dmList, true]]) {
      const wanted = [...this.rooms.values()]
        .filter((room) => (room.kind === 'dm') === isDm)
        .sort((a, b) => this.title(a).localeCompare(this.title(b), undefined, { sensitivity: 'base' }) || a.id - b.id)
        .map((room) => this.items.get(room.id));
      wanted.forEach((item, index) => {
        if (list.children[index] !== item) list.insertBefore(item, list.children[index] ?? null);
      });
    }
  }
}
