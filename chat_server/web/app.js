// Entry point: the sign-in form, and the signed-in Session that ties the
// room list, the open room and the WebSocket together.
import { AdminArea } from './admin.js';
import * as api from './api.js';
import { $, backoff, showError } from './dom.js';
import { forgetDrafts } from './composer.js';
import { Conversation } from './conversation.js';
import { setupRoomDialogs } from './dialogs.js';
import { setupInvitePeople } from './invites.js';
import { revokeBlobs } from './media.js';
import { mentionsMe } from './mentions.js';
import { MessageView } from './messages.js';
import { Notifications, listenForRoomRequests, showUnreadCount } from './notifications.js';
import { NotifyControl } from './notifycontrol.js';
import { OutageBanner } from './outage.js';
import { setupProfile } from './profile.js';
import { setupReportDialog } from './report.js';
import { RoomList } from './rooms.js';
import { RoomSettings, showRoomTopic } from './roomsettings.js';
import {
  cameFromList, listenForAddressChanges, roomInAddress, saveAnchor, savedAnchor, showRoomInAddress,
} from './router.js';
import { setupSearch } from './search.js';
import { clearLink, hasLink, landingRoom, loadEntry, paintSignIn, signUpExtras, signUpOnly } from './signup.js';
import { CONNECTED, ChatSocket, RECONNECTING } from './socket.js';
import { setupQuickSwitcher } from './switcher.js';
import { forgetUsers, onUserChange, rememberUser, setPresence, setPresenceKnown } from './users.js';

const statusLine = $('#status');
let session = null;
let admin = null; // the AdminArea
let roomSettings = null;
let notifyControl = null;
const outage = new OutageBanner();
// Touch screens: opening a room does not pop the on-screen keyboard up.
const TOUCH = matchMedia('(pointer: coarse)').matches;

// Why a room left the list, for the user who was removed from it.
const REMOVAL_NOTICES = {
  kicked: (name) => `You were removed from ${name}.`,
  banned: (name) => `You were banned from ${name}.`,
  room_deleted: (name) => `${name} was deleted.`,
};

class Session {
  constructor(me, landing = null) {
    this.me = me;
    this.landing = landing; // a room to open once the rooms are listed
    // Per room, the highest room-event pos received over the WebSocket, whose
    // delivery has no holes: the resume point after a reconnect. REST replies
    // never advance it, as they can run ahead of events still to be replayed.
    this.seen = new Map();
    this.reloading = null;
    this.list = new RoomList({
      me,
      onSelect: (id) => this.openRoom(id),
      onChange: () => this.notifications.roomsChanged(),
    });
    this.notifications = new Notifications({
      me,
      rooms: this.list,
      openRoom: (id) => this.openRoom(id),
      onChange: () => notifyControl.refresh(),
    });
    this.conversation = new Conversation({
      me,
      rooms: this.list,
      getView: () => this.view,
      onSent: (message) => this.onMessage(message),
    });
    this.view = new MessageView({
      me,
      sendFrame: (frame) => this.socket.send(frame),
      onRead: (roomId, seq) => this.markRead(roomId, seq),
      onSent: (message) => this.onMessage(message),
      parts: this.conversation.parts,
    });
    this.down = false; // the WebSocket was up and is now reconnecting
    this.socket = new ChatSocket({
      getToken: (forceRefresh) => api.accessToken(forceRefresh),
      resumeMap: () => Object.fromEntries(this.seen),
      onEvent: (frame) => this.onEvent(frame),
      onStatus: (text) => {
        statusLine.textContent = text;
        this.down = text === RECONNECTING;
        if (this.down) outage.show(null);
        else outage.hide();
        // While down nobody's presence is known; once back, the server says
        // who is online. It tells others about us, never us about ourselves.
        setPresenceKnown(text === CONNECTED, me.id);
        setPresence(me.id, text === CONNECTED ? 'online' : 'offline');
      },
      onRetry: (retryAt) => {
        if (this.down) outage.show(retryAt);
      },
    });
    this.onLogScroll = () => {
      if (this.anchorFrame) return;
      this.anchorFrame = requestAnimationFrame(() => {
        this.anchorFrame = null;
        this.rememberAnchor();
      });
    };
    this.anchorFrame = null;
    $('#log').addEventListener('scroll', this.onLogScroll, { passive: true });
    rememberUser(me);
    onUserChange((user) => {
      if (user.id === this.me.id) {
        this.me = user;
        this.conversation.setMe(user);
        admin.userChanged(user);
      }
      this.list.userChanged(user);
      this.retitle();
    });
  }

  async start() {
    // Retry while the server is unreachable (it may be restarting).
    for (let attempt = 0; ; attempt++) {
      try {
        this.replaceRooms((await api.get('/rooms')).items);
        break;
      } catch (error) {
        if (session !== this) return; // signed out meanwhile
        if (!api.isTransient(error)) throw error;
        statusLine.textContent = RECONNECTING;
        await outage.wait(backoff(attempt));
        if (session !== this) return;
      }
    }
    outage.hide();
    if (session !== this) return;
    if (this.landing) this.openRoom(this.landing, { fromAddress: true, restore: true });
    outage.retryNow = () => this.socket.retryNow();
    this.socket.start();
    this.notifications.start();
  }

  stop() {
    this.socket.stop();
    outage.hide();
    outage.retryNow = () => {};
    $('#log').removeEventListener('scroll', this.onLogScroll);
    $('#chat').classList.remove('room-open');
    this.notifications.stop();
    this.conversation.stop();
    this.view.destroy();
    $('#room-list').replaceChildren();
    $('#dm-list').replaceChildren();
    forgetUsers();
    revokeBlobs();
  }

  // A room from REST or an event. New rooms start their resume point at
  // their current last_pos: earlier events are history, not missed events.
  addRoom(room) {
    if (!this.seen.has(room.id)) this.seen.set(room.id, room.last_pos);
    this.list.upsert(room);
    this.retitle();
  }

  removeRoom(id) {
    this.seen.delete(id);
    this.list.remove(id);
    this.conversation.roomClosed(id);
    if (this.view.roomId === id) this.closeRoom({ replace: true });
  }

  replaceRooms(rooms) {
    for (const id of this.list.ids()) {
      if (!rooms.some((room) => room.id === id)) this.removeRoom(id);
    }
    for (const room of rooms) this.addRoom(room);
  }

  reloadRooms() {
    this.reloading ??= api.get('/rooms')
      .then(({ items }) => this.replaceRooms(items), () => {})
      .finally(() => { this.reloading = null; });
  }

  // Opens a room and makes the address name it (a new history entry, unless
  // the address asked for it: Back/Forward, a reload, a link). at: open it at
  // a message (MessageView.open); restore: a reload, which goes back to where
  // the log was scrolled to.
  openRoom(id, { fromAddress = false, restore = false, at = null } = {}) {
    const room = this.list.get(id);
    if (!room) {
      // A link to a room we are not in (any more): show no room.
      if (fromAddress) this.closeRoom({ replace: true });
      return;
    }
    showRoomInAddress(id, { replace: fromAddress });
    $('#chat').classList.add('room-open');
    if (this.view.roomId === id) {
      if (at) this.view.open(room, this.list.title(room), at);
      return;
    }
    this.list.select(id);
    showError($('#app-error'), null); // a notice about an earlier room
    this.conversation.roomOpened(id);
    const seq = restore && !at ? savedAnchor(id) : null;
    this.view.open(room, this.list.title(room), seq ? { seq } : at);
    showRoomTopic(room);
    if (!TOUCH) $('#message-input').focus({ preventScroll: true });
  }

  // No room open: on a phone, the room list's own screen.
  closeRoom({ replace = false } = {}) {
    showRoomInAddress(null, { replace });
    $('#chat').classList.remove('room-open');
    if (this.view.roomId === null) return;
    const id = this.view.roomId;
    this.list.select(null);
    this.conversation.roomOpened(null);
    this.view.close();
    this.list.focus(id);
  }

  // `Back to rooms` (phones): back to the list's history entry when the room
  // was opened from it, else a new entry for the list.
  backToRooms() {
    if (cameFromList()) history.back();
    else this.closeRoom();
  }

  // The log's reading position, kept per room for a reload (null: at the newest).
  rememberAnchor() {
    if (this.view.roomId !== null) saveAnchor(this.view.roomId, this.view.currentAnchor()?.seq ?? null);
  }

  retitle() {
    const room = this.list.get(this.view.roomId);
    if (room) this.view.setTitle(this.list.title(room));
    showRoomTopic(room);
  }

  markRead(roomId, seq) {
    const room = this.list.get(roomId);
    if (!room || seq <= room.my_last_read_seq) return;
    this.list.update(roomId, { readSeq: seq });
    if (!this.socket.send({ type: 'read', room_id: roomId, seq })) {
      api.post(`/rooms/${roomId}/read`, { seq }).catch(() => {});
    }
  }

  onMessage(message) {
    const roomId = message.room_id;
    if (!this.list.get(roomId)) this.reloadRooms(); // its room.added was missed
    const mine = message.sender_id === this.me.id;
    const isNew = message.seq > (this.list.get(roomId)?.last_seq ?? Infinity);
    // The server moves the sender's read marker to their own message.
    this.list.update(roomId, { lastSeq: message.seq, readSeq: mine ? message.seq : 0 });
    if (isNew && mentionsMe(message, this.me.id)) this.list.mentioned(roomId, message.seq);
    this.notifications.onMessage(message, isNew);
    this.view.accept(message);
    this.conversation.onMessage(message);
  }

  onReady(frame) {
    rememberUser(frame.user);
    // Rooms joined or left while disconnected: their room.added/removed
    // events were missed.
    const known = new Set(this.list.ids());
    const current = frame.rooms.map((room) => room.room_id);
    if (current.length !== known.size || current.some((id) => !known.has(id))) this.reloadRooms();
    this.view.retryFailedLoad();
  }

  // The server replays at most 500 events per room; from_pos..to_pos were
  // skipped. Only the open room shows messages, so only it pages them in.
  async onGap({ room_id: roomId, from_pos: from, to_pos: to }) {
    this.seen.set(roomId, Math.max(this.seen.get(roomId) ?? 0, to));
    let after = from - 1;
    while (this.view.roomId === roomId) {
      const page = await api.get(
        `/rooms/${roomId}/events?after_pos=${after}&before_pos=${to + 1}&limit=100`,
      ).catch(() => null);
      if (!page) return;
      for (const event of page.items) this.onEvent(event);
      if (!page.has_more || !page.items.length) return;
      after = page.items.at(-1).pos;
    }
  }

  // We were removed from a room: say why (a deactivation closes our
  // sockets first, and the sign-in screen says the session ended).
  onRemoved({ room_id: roomId, reason }) {
    const room = this.list.get(roomId);
    const notice = REMOVAL_NOTICES[reason];
    if (room && notice) showError($('#app-error'), new Error(notice(this.list.title(room))));
  }

  onEvent(frame) {
    // Room events carry their place in the room's stream: resume from there.
    if (frame.pos !== undefined) {
      this.seen.set(frame.room_id, Math.max(this.seen.get(frame.room_id) ?? 0, frame.pos));
    }
    switch (frame.type) {
      case 'ready': return this.onReady(frame);
      case 'message.new': return this.onMessage(frame.message);
      case 'message.edited':
      case 'message.deleted':
        this.view.update(frame.message);
        return this.conversation.onUpdate(frame.message);
      case 'gap': return this.onGap(frame);
      case 'room.added': return this.addRoom(frame.room);
      case 'room.updated':
        this.addRoom(frame.room);
        return roomSettings.onEvent(frame);
      case 'room.removed':
        roomSettings.onEvent(frame);
        return this.removeRoom(frame.room.id);
      case 'member.joined':
      case 'member.role':
        rememberUser(frame.user);
        this.conversation.onEvent(frame);
        return roomSettings.onEvent(frame);
      case 'member.left':
        rememberUser(frame.user);
        if (frame.user.id === this.me.id) this.onRemoved(frame);
        this.conversation.onEvent(frame);
        return roomSettings.onEvent(frame);
      case 'report.new': return admin.onReport(frame.report);
      case 'typing':
        if (frame.room_id === this.view.roomId) this.view.typing(frame.user_id);
        return undefined;
      case 'read':
        if (frame.user_id === this.me.id) this.list.update(frame.room_id, { readSeq: frame.seq });
        return undefined;
      case 'presence': return setPresence(frame.user_id, frame.status);
      case 'notify': return this.notifications.onNotify(frame);
      case 'error':
        // Answers to our typing/read frames; nothing the user can act on.
        console.warn('WebSocket error:', frame.code, frame.message);
        return undefined;
      default: // reactions, pins; resumed, pong, ack and future event types
        this.conversation.onEvent(frame);
        return undefined;
    }
  }
}

function showSignIn(message) {
  session?.stop();
  session = null;
  admin.signedOut();
  paintSignIn(() => showSignIn());
  for (const dialog of document.querySelectorAll('dialog[open]')) dialog.close();
  statusLine.textContent = '';
  showError($('#app-error'), null);
  $('#chat').hidden = true;
  $('#account').hidden = true;
  $('#signin').hidden = false;
  showError($('#signin-error'), message ? new Error(message) : null);
  $('#signin-form [name=username]').focus();
}

async function enterChat(me, landing = null) {
  $('#signin').hidden = true;
  $('#chat').hidden = false;
  $('#account').hidden = false;
  const name = $('#me-name');
  name.dataset.userName = me.id; // kept current by rememberUser
  name.textContent = me.display_name || me.username;
  $('#invite-people-button').hidden = me.is_bot;
  admin.userChanged(me);
  session = new Session(me, landing);
  try {
    await session.start();
  } catch (error) {
    // A 401 has already sent us back to the sign-in form.
    if (error.status !== 401) showError($('#app-error'), error);
  }
}

function setupSignIn() {
  const form = $('#signin-form');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const kind = event.submitter?.value === 'signup' || signUpOnly() ? 'signup' : 'login';
    const data = new FormData(form);
    const fields = { username: data.get('username').trim(), password: data.get('password') };
    const displayName = data.get('display_name').trim();
    if (kind === 'signup' && displayName) fields.display_name = displayName;
    if (kind === 'signup') Object.assign(fields, signUpExtras());
    const buttons = form.querySelectorAll('button');
    buttons.forEach((button) => { button.disabled = true; });
    showError($('#signin-error'), null);
    try {
      const user = await api.authenticate(kind, fields);
      const landing = (kind === 'signup' ? landingRoom() : null) ?? roomInAddress();
      form.reset();
      clearLink();
      enterChat(user, landing);
    } catch (error) {
      showError($('#signin-error'), error);
    } finally {
      buttons.forEach((button) => { button.disabled = false; });
    }
  });
  $('#logout-button').addEventListener('click', async () => {
    await session?.notifications.signOut();
    if (session) forgetDrafts(session.me.id);
    await api.logout();
    showSignIn();
  });
}

// Keeps the page as tall as what is visible above an on-screen keyboard
// (style.css sizes the body by --app-height), so the composer stays in sight.
function followVisualViewport() {
  const viewport = window.visualViewport;
  if (!viewport) return; // 100dvh it is
  const fit = () => {
    if (viewport.scale > 1.01) return; // pinch-zoomed: the page keeps its size
    document.documentElement.style.setProperty('--app-height', `${viewport.height}px`);
  };
  viewport.addEventListener('resize', fit);
  fit();
}

// Touch screens cannot hover: a tap on a message (not on one of its
// controls) or a long press shows its buttons, and hides the others'.
function setupTouchActions() {
  const noHover = matchMedia('(hover: none)');
  const toggle = (event, show) => {
    const article = event.target.closest('article.message');
    if (!noHover.matches || !article || event.target.closest('button, a, input, textarea, select, form')) return;
    const open = show ?? !article.classList.contains('actions-open');
    for (const other of document.querySelectorAll('article.actions-open')) other.classList.remove('actions-open');
    article.classList.toggle('actions-open', open);
  };
  for (const log of [$('#message-list'), $('#thread-panel')]) {
    log.addEventListener('click', (event) => toggle(event));
    log.addEventListener('contextmenu', (event) => toggle(event, true));
  }
}

async function boot() {
  followVisualViewport();
  setupTouchActions();
  setupSignIn();
  setupRoomDialogs(() => session);
  setupReportDialog();
  setupProfile(() => session.me);
  api.setSignedOutHandler(() => {
    if (session) showSignIn('Your session has ended. Please log in again.');
  });
  admin = new AdminArea($('#admin-button'), () => session);
  roomSettings = new RoomSettings($('#room-settings-button'), () => session);
  notifyControl = new NotifyControl($('#notify-button'), () => session);
  listenForRoomRequests((id) => session?.openRoom(id));
  listenForAddressChanges((id) => {
    if (!session) return;
    if (id === null) session.closeRoom({ replace: true });
    else session.openRoom(id, { fromAddress: true });
  });
  $('#back-to-rooms').addEventListener('click', () => session?.backToRooms());
  setupQuickSwitcher(() => session);
  setupInvitePeople($('#invite-people-button'), () => session);
  setupSearch(() => session);
  await loadEntry();
  showUnreadCount(0);
  // A setup or invite link pasted into a tab on the sign-in screen.
  window.addEventListener('hashchange', async () => {
    if (session) return;
    await loadEntry();
    showSignIn();
  });
  // A setup or invite link is for signing up: it waits while a user is signed
  // in here (and shows once they log out).
  if (!api.hasSession()) {
    showSignIn();
    return;
  }
  const landing = roomInAddress();
  for (let attempt = 0; ; attempt++) {
    try {
      const me = await api.get('/users/me');
      outage.hide();
      await enterChat(me, landing);
      if (hasLink()) showError($('#app-error'), new Error('You are signed in already: log out to use the link you opened.'));
      return;
    } catch (error) {
      if (!api.isTransient(error)) {
        showSignIn();
        return;
      }
      statusLine.textContent = RECONNECTING;
      await outage.wait(backoff(attempt));
    }
  }
}

boot();
