// The address of the open room, /#/rooms/<id>: opening a room pushes it onto
// the browser's history, so Back and Forward switch rooms and a reload (or a
// notification's link) opens the same room. No hash means no room open (on a
// phone: the room list). The sign-up links #invite=… and #setup=… are
// signup.js's.
const ROOM_ADDRESS = /^#\/rooms\/(\d+)$/;
// signup.js's links: left in the address for the sign-in screen after a log out.
const SIGN_UP_LINK = /^#(setup|invite)=/;

// The room the address names, or null.
export function roomInAddress() {
  const match = ROOM_ADDRESS.exec(location.hash);
  return match ? Number(match[1]) : null;
}

// Makes the address name roomId (null: no room). A new history entry unless
// `replace`; nothing when the address says so already. The entry remembers
// the room it was opened from, so that "Back to rooms" can step back to the
// list instead of stacking another entry.
export function showRoomInAddress(roomId, { replace = false } = {}) {
  if (roomInAddress() === roomId && (roomId !== null || !location.hash)) return;
  if (roomId === null && SIGN_UP_LINK.test(location.hash)) return;
  const url = location.pathname + location.search + (roomId === null ? '' : `#/rooms/${roomId}`);
  const state = { room: roomId, from: replace ? history.state?.from ?? null : roomInAddress() };
  if (replace) history.replaceState(state, '', url);
  else history.pushState(state, '', url);
}

// Whether the entry before this one is the room list (no room open), as
// when a room was opened from the list.
export function cameFromList() {
  return history.state !== null && history.state.room !== null && history.state.from === null;
}

// Calls onRoom(id or null) when Back, Forward or an edited address changes the
// room the address names.
export function listenForAddressChanges(onRoom) {
  window.addEventListener('popstate', () => {
    if (!SIGN_UP_LINK.test(location.hash)) onRoom(roomInAddress());
  });
}

// --- the log's reading position per room, kept for a reload ---
// (the seq of the top message on screen: MessageView.currentAnchor(); null
// when the log is at the newest messages).
const ANCHOR_KEY = 'chat.anchor.';

export function saveAnchor(roomId, seq) {
  try {
    if (seq === null) sessionStorage.removeItem(ANCHOR_KEY + roomId);
    else sessionStorage.setItem(ANCHOR_KEY + roomId, String(seq));
  } catch {
    // Storage full or disabled: a reload opens at the newest messages.
  }
}

export function savedAnchor(roomId) {
  const seq = Number(sessionStorage.getItem(ANCHOR_KEY + roomId));
  return Number.isInteger(seq) && seq > 0 ? seq : null;
}
