// The WebSocket to /api/v1/ws: authenticates with a first frame (browsers
// cannot set headers on the upgrade), reconnects by itself with back-off and
// asks the server to replay what it missed via the auth frame's `rooms` map.
import { backoff } from './dom.js';

// App-level ping: a half-open TCP connection (laptop asleep, NAT dropped)
// otherwise looks alive forever. Two silent intervals mean the link is dead.
const PING_INTERVAL_MS = 25_000;

// The close code of a revoked session (and of other policy violations).
const POLICY_CLOSE = 1008;

export const CONNECTED = 'Connected';
export const RECONNECTING = 'Reconnecting…';

export class ChatSocket {
  // getToken(forceRefresh) → access token; resumeMap() → {room_id: last seen
  // seq}; onEvent(frame) for every server frame; onStatus(text);
  // onRetry(retryAt) while down: the Date.now() time of the next attempt, or
  // null while an attempt is under way.
  constructor({ getToken, resumeMap, onEvent, onStatus, onRetry = () => {} }) {
    Object.assign(this, { getToken, resumeMap, onEvent, onStatus, onRetry });
    this.ws = null;
    this.ready = false;
    this.stopped = true;
    this.attempt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastHeard = 0;
    this.authRejected = false;
    this.reconnectNow = () => this.#retry(0);
  }

  // `Retry now`: the next attempt starts at once, and the back-off restarts.
  retryNow() {
    this.attempt = 0;
    this.#retry(0);
  }

  start() {
    this.stopped = false;
    window.addEventListener('online', this.reconnectNow);
    this.#connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.reconnectNow);
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    const ws = this.ws;
    this.ws = null;
    this.ready = false;
    ws?.close(1000);
    this.onStatus('');
  }

  // Sends a frame if the connection is up; returns whether it was sent.
  send(frame) {
    if (!this.ready) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  async #connect() {
    this.onRetry(null);
    let token;
    try {
      token = await this.getToken(this.authRejected);
    } catch {
      // Refresh failed: either signed out (stop() was called) or the server
      // is unreachable, in which case we try again later.
      if (!this.stopped) this.#down();
      return;
    }
    // stop() was called meanwhile, or another attempt (an 'online' event)
    // already connected.
    if (this.stopped || this.ws) return;
    this.authRejected = false;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/api/v1/ws`);
    this.ws = ws;
    let opened = false;
    let refusal = null; // code of an `error` frame received before `ready`
    ws.addEventListener('open', () => {
      opened = true;
      // The rooms map is read now, not earlier, so it includes everything
      // delivered up to the moment this connection starts.
      ws.send(JSON.stringify({ type: 'auth', token, rooms: this.resumeMap() }));
    });
    ws.addEventListener('message', (event) => {
      if (this.ws !== ws) return;
      this.lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === 'ready') this.#up();
      else if (frame.type === 'error' && !this.ready) refusal = frame.code;
      this.onEvent(frame);
    });
    ws.addEventListener('close', (event) => {
      if (this.ws !== ws) return;
      // Opened but closed before `ready`, without saying why or saying
      // `unauthorized`: the token was refused, so the next attempt gets a
      // fresh one. Closed with 1008 (policy) later: the session may have
      // been revoked (from another device, by a password change), and a
      // refresh tells at once, signing out if so (docs/protocol.md).
      if (opened && !this.ready) this.authRejected = (refusal ?? 'unauthorized') === 'unauthorized';
      else if (event.code === POLICY_CLOSE) this.authRejected = true;
      this.#down();
    });
  }

  #up() {
    this.ready = true;
    this.attempt = 0;
    this.onStatus(CONNECTED);
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastHeard < 2 * PING_INTERVAL_MS) {
        this.send({ type: 'ping' });
        return;
      }
      // Closing a dead link can take minutes to report; give up on it now.
      const dead = this.ws;
      this.#down();
      dead.close();
    }, PING_INTERVAL_MS);
  }

  #down() {
    this.ws = null;
    this.ready = false;
    clearInterval(this.pingTimer);
    this.onStatus(RECONNECTING);
    this.#retry(backoff(this.attempt++));
  }

  #retry(delay) {
    if (this.stopped || this.ws) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.#connect(), delay);
    if (delay > 0) this.onRetry(Date.now() + delay);
  }
}
