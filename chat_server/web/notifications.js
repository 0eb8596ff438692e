// Notifications in the open app (API.md "Notifications"): which messages
// notify the user, the unread count in the page title and favicon, and the
// page's own notification for a notifying message that arrives while the tab
// is hidden (the server pushes only to users with no open WebSocket, so a
// connected but hidden tab has to speak up itself). Web Push lives in push.js,
// the per-room control in notifycontrol.js.
import * as api from './api.js';
import { PushSetup, workerRegistration } from './push.js';
import { mentionsMe } from './mentions.js';
import { serverName } from './signup.js';
import { cachedUser, rememberUser } from './users.js';

// Messages older than this (replayed after a reconnect) are not announced.
const RECENT_MS = 2 * 60_000;
const PREVIEW_CHARS = 200;

// The user's settings for a room; a Room without them (an older server) gets
// the contract's defaults.
export function notifySettings(room) {
  return room.notify ?? { level: room.kind === 'dm' ? 'all' : 'mentions', muted_until: null };
}

export function isMuted(settings, now = Date.now()) {
  return settings.muted_until !== null && Date.parse(settings.muted_until) > now;
}

// Whether a message notifies the user: not their own, and the room's level
// is `all`, or `mentions` and it mentions them, and the room is not muted.
export function notifies(room, message, myId) {
  if (message.sender_id === myId || message.deleted) return false;
  const settings = notifySettings(room);
  if (isMuted(settings)) return false;
  return settings.level === 'all' || (settings.level === 'mentions' && mentionsMe(message, myId));
}

// Calls openRoom(id) when the service worker (a notification click) asks for
// a room (links to /#/rooms/<id> are router.js's). Set up once per page.
export function listenForRoomRequests(openRoom) {
  navigator.serviceWorker?.addEventListener('message', (event) => {
    if (event.data?.type === 'open-room' && Number.isInteger(event.data.room_id)) {
      window.focus();
      openRoom(event.data.room_id);
    }
  });
  navigator.serviceWorker?.startMessages();
}

// The favicon: a speech bubble, with a red badge counting what is unread.
function faviconUrl(count) {
  const label = count > 99 ? '99+' : String(count);
  const badge = count === 0 ? '' : '<circle cx="22" cy="10" r="10" fill="#d93025"/>'
    + `<text x="22" y="14.5" font-family="Arial,sans-serif" font-weight="700" font-size="${label.length > 1 ? 10 : 14}" `
    + `fill="#fff" text-anchor="middle">${label}</text>`;
  const svg = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    + '<path d="M4 5h20a3 3 0 0 1 3 3v11a3 3 0 0 1-3 3H13l-7 6v-6H4a3 3 0 0 1-3-3V8a3 3 0 0 1 3-3z" fill="#1f5fbf"/>'
    + `${badge}</svg>`;
  return `data:image/svg+xml,${encodeURIComponent(svg)}`;
}

// Puts the count in the page title ("(3) Chat") and the favicon.
export function showUnreadCount(count) {
  const name = serverName();
  const title = count > 0 ? `(${count > 99 ? '99+' : count}) ${name}` : name;
  if (document.title !== title) document.title = title;
  const icon = document.querySelector('link[rel=icon]'); // in index.html
  const href = faviconUrl(count);
  if (icon.getAttribute('href') !== href) icon.setAttribute('href', href);
}

// What of a room counts in the title: every unread message at level `all`,
// unread mentions at `mentions`, nothing at `none` or while muted.
function pendingIn(room) {
  const settings = notifySettings(room);
  if (isMuted(settings) || settings.level === 'none') return 0;
  if (settings.level === 'mentions') return room.unread_mentions ?? 0;
  return Math.max(0, room.last_seq - room.my_last_read_seq);
}

function truncate(text) {
  return text.length > PREVIEW_CHARS ? `${text.slice(0, PREVIEW_CHARS - 1)}…` : text;
}

async function senderName(id) {
  let user = cachedUser(id);
  if (!user) {
    try {
      user = await api.get(`/users/${id}`);
      rememberUser(user);
    } catch {
      return 'Someone';
    }
  }
  return user.display_name || user.username;
}

// One signed-in session's notifications. rooms: the RoomList; openRoom(id);
// onChange() after rooms changed (at most once per task).
export class Notifications {
  constructor({ me, rooms, openRoom, onChange }) {
    this.me = me;
    this.rooms = rooms;
    this.openRoom = openRoom;
    this.onChange = onChange;
    // Per room, the last of its settings requests: they run one after the
    // other, so that each answer is at least as new as the one before.
    this.settingsRequests = new Map();
    this.push = new PushSetup();
    this.counting = false;
    this.onVisibility = () => this.roomsChanged();
    document.addEventListener('visibilitychange', this.onVisibility);
  }

  // After sign-in: offer (or renew) Web Push.
  start() {
    this.push.start();
  }

  stop() {
    document.removeEventListener('visibilitychange', this.onVisibility);
    this.push.stop();
    showUnreadCount(0);
  }

  // Before the session ends on purpose: the subscription goes with it.
  signOut() {
    return this.push.signOut();
  }

  // The room list changed (a message, a read marker, a setting): recount,
  // once per task however many rooms were repainted.
  roomsChanged() {
    if (this.counting) return;
    this.counting = true;
    queueMicrotask(() => {
      this.counting = false;
      let count = 0;
      for (const id of this.rooms.ids()) {
        // The open room of a visible tab is being read as it arrives.
        if (id !== this.rooms.openId || document.hidden) count += pendingIn(this.rooms.get(id));
      }
      showUnreadCount(count);
      this.onChange();
    });
  }

  // Saves a room's settings ({level, muted_until}); the room list shows them.
  saveSettings(roomId, settings) {
    return this.#settingsFrom(roomId, () => api.put(`/rooms/${roomId}/notify`, settings));
  }

  // A `notify` frame: the settings changed, here or in another tab. A frame
  // can arrive after the answer to a later change made here, so the room's
  // current settings are read afresh (after any change in flight) rather than
  // taken from it.
  onNotify({ room_id: roomId }) {
    if (!this.rooms.get(roomId)) return;
    this.#settingsFrom(roomId, async () => (await api.get(`/rooms/${roomId}`)).notify)
      .catch(() => {}); // the next change or room listing brings them
  }

  #settingsFrom(roomId, request) {
    const previous = this.settingsRequests.get(roomId) ?? Promise.resolve();
    const answer = previous.catch(() => {}).then(request).then((settings) => {
      const room = this.rooms.get(roomId);
      if (room && settings) this.rooms.upsert({ ...room, notify: settings });
      return settings;
    });
    this.settingsRequests.set(roomId, answer);
    const forget = () => {
      if (this.settingsRequests.get(roomId) === answer) this.settingsRequests.delete(roomId);
    };
    answer.then(forget, forget);
    return answer;
  }

  // A message that just arrived (isNew: not seen before). Announced by the
  // page when the tab is hidden and notifications are allowed.
  onMessage(message, isNew) {
    const room = this.rooms.get(message.room_id);
    if (!isNew || !room || !document.hidden) return;
    if (!('Notification' in window) || Notification.permission !== 'granted') return;
    if (!notifies(room, message, this.me.id)) return;
    if (Date.now() - Date.parse(message.created_at) > RECENT_MS) return;
    this.#announce(room, message).catch((error) => console.warn('Notification failed:', error));
  }

  async #announce(room, message) {
    const sender = await senderName(message.sender_id);
    const text = truncate(message.body || (message.attachments?.length ? 'Sent a file' : 'New message'));
    const isDm = room.kind === 'dm';
    const title = isDm ? sender : this.rooms.title(room);
    // The same shape as the service worker's push notifications: one per room.
    const options = {
      body: isDm ? text : `${sender}: ${text}`,
      tag: `room-${room.id}`,
      renotify: true,
      data: { room_id: room.id, seq: message.seq },
    };
    // Through the service worker when there is one: its click handler brings
    // this tab forward, and tabs of the same user replace, not repeat, it.
    const registration = await workerRegistration();
    if (registration) {
      await registration.showNotification(title, options);
      return;
    }
    const notice = new Notification(title, options);
    notice.addEventListener('click', () => {
      window.focus();
      this.openRoom(room.id);
      notice.close();
    });
  }
}
