// Cache of User objects and presence. Elements that show a user's name,
// initials, avatar or presence carry data-user-name / data-user-initials /
// data-avatar / data-presence with the user id and are updated in place when
// the user or their status changes.
import * as api from './api.js';
import { initials } from './avatar.js';
import { h } from './dom.js';
import { paintAvatar } from './media.js';

const users = new Map();
const loading = new Map();
const online = new Set();
const listeners = new Set();
// Whether the online set is current: not while our WebSocket is down, when
// others' presence shows as unknown. Our own id counts as known always.
let presenceKnown = true;
let myId = null;

export function onUserChange(listener) {
  listeners.add(listener);
}

export function rememberUser(user) {
  users.set(user.id, user);
  for (const element of document.querySelectorAll(`[data-user-name="${user.id}"]`)) {
    element.textContent = user.display_name || user.username;
  }
  for (const element of document.querySelectorAll(`[data-user-initials="${user.id}"]`)) {
    element.textContent = initials(user.display_name || user.username);
  }
  for (const img of document.querySelectorAll(`img[data-avatar="${user.id}"]`)) paintAvatar(img, user);
  for (const listener of listeners) listener(user);
}

export function cachedUser(id) {
  return users.get(id);
}

function loadUser(id) {
  if (users.has(id)) return Promise.resolve(users.get(id));
  if (!loading.has(id)) {
    loading.set(id, api.get(`/users/${id}`)
      .then((user) => {
        rememberUser(user);
        return user;
      })
      .finally(() => loading.delete(id)));
  }
  return loading.get(id);
}

// The user's display name if known; otherwise a placeholder, and the user is
// fetched so that data-user-name elements fill in.
export function displayName(id) {
  const user = users.get(id);
  if (user) return user.display_name || user.username;
  loadUser(id).catch(() => {});
  return '…';
}

export function setPresence(id, status) {
  if (status === 'online') online.add(id);
  else online.delete(id);
  for (const element of document.querySelectorAll(`[data-presence="${id}"]`)) paintPresence(element, id);
}

// The WebSocket went down (known = false: everyone else's presence becomes
// unknown) or came back (the server then says who is online).
export function setPresenceKnown(known, me) {
  myId = me;
  presenceKnown = known;
  if (!known) {
    for (const id of online) if (id !== me) online.delete(id);
  }
  for (const element of document.querySelectorAll('[data-presence]')) {
    paintPresence(element, Number(element.dataset.presence));
  }
}

export function paintPresence(element, id) {
  const unknown = !presenceKnown && id !== myId;
  const isOnline = !unknown && online.has(id);
  const label = unknown ? 'Presence unknown' : isOnline ? 'Online' : 'Offline';
  element.classList.toggle('online', isOnline);
  element.classList.toggle('unknown', unknown);
  element.title = label;
  if (element.getAttribute('role') === 'img') element.setAttribute('aria-label', label);
}

// A dot showing whether the user is online: decorative (aria-hidden) beside
// a name that says enough, or, `labelled`, an image named "Online",
// "Offline" or "Presence unknown".
export function presenceDot(id, { labelled = false } = {}) {
  const dot = h('span', labelled
    ? { class: 'presence', role: 'img', 'data-presence': id }
    : { class: 'presence', 'aria-hidden': 'true', 'data-presence': id });
  paintPresence(dot, id);
  return dot;
}

export function forgetUsers() {
  users.clear();
  online.clear();
  listeners.clear();
  presenceKnown = true;
  myId = null;
}
