// The web client's service worker, served at /sw.js so that its scope is the
// whole app. It shows Web Push notifications (pushed by the server only while
// the user has no open WebSocket) and, on a click, brings the app forward with
// the room open. The page's own notifications (tab hidden but connected) are
// shown through this registration too, so a click on them lands here as well.
// A classic script with no imports: it must run without the page.

const APP_URL = '/';

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

// The notification for a push payload (API.md "Notifications"): titled with
// the room's name, or the sender's for a DM (room_name ""); the body names the
// sender unless the title already does.
function describe(payload) {
  const sender = payload.sender?.display_name || 'Someone';
  const isDm = !payload.room_name;
  const text = payload.body || 'New message';
  return {
    title: isDm ? sender : payload.room_name,
    options: {
      body: isDm ? text : `${sender}: ${text}`,
      // One notification per room: a newer message replaces the older one.
      tag: `room-${payload.room_id}`,
      renotify: true,
      data: { room_id: payload.room_id, seq: payload.seq },
    },
  };
}

self.addEventListener('push', (event) => {
  let payload = null;
  try {
    payload = event.data?.json() ?? null;
  } catch {
    // Not JSON: nothing we can describe.
  }
  if (payload?.type !== 'message' || !Number.isInteger(payload.room_id)) return;
  const { title, options } = describe(payload);
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const roomId = event.notification.data?.room_id;
  event.waitUntil(openRoom(Number.isInteger(roomId) ? roomId : null));
});

// Tells an open tab of the app to show the room and focuses it; opens the app
// on the room when no tab is open.
async function openRoom(roomId) {
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const origin = self.location.origin;
  const tab = windows.find((client) => client.focused && new URL(client.url).origin === origin)
    ?? windows.find((client) => new URL(client.url).origin === origin);
  if (tab) {
    if (roomId !== null) tab.postMessage({ type: 'open-room', room_id: roomId });
    try {
      await tab.focus();
    } catch {
      // Focusing needs the click's user activation; the room is open anyway.
    }
    return;
  }
  await self.clients.openWindow(roomId === null ? APP_URL : `${APP_URL}#/rooms/${roomId}`);
}
