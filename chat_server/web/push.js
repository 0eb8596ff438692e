// Web Push for the signed-in user: the "Enable notifications" prompt shown
// after sign-in (never before: the browser's permission question should come
// from a click, with a reason), the service worker (/sw.js) and the push
// subscription registered with the server (POST /push/subscriptions), removed
// again on sign-out. The server's key is GET /server's `vapid_public_key`; a
// server without one gets no prompt.
import * as api from './api.js';
import { $, h, showError } from './dom.js';

const WORKER_URL = '/sw.js';
const DISMISSED_KEY = 'chat.notifications.dismissed';
// {id, endpoint} of the subscription this browser registered with the server.
const SUBSCRIPTION_KEY = 'chat.push.subscription';
// A browser whose push service cannot be reached may never answer subscribe().
const SUBSCRIBE_TIMEOUT_MS = 20_000;
// How long signing out waits for a subscription still being made.
const SIGN_OUT_WAIT_MS = 3_000;

function pushSupported() {
  return window.isSecureContext && 'Notification' in window && 'serviceWorker' in navigator && 'PushManager' in window;
}

// The service worker's registration, if the app has registered it.
export async function workerRegistration() {
  if (!('serviceWorker' in navigator)) return null;
  try {
    return (await navigator.serviceWorker.getRegistration('/')) ?? null;
  } catch {
    return null;
  }
}

function base64UrlBytes(text) {
  const base64 = text.replace(/-/g, '+').replace(/_/g, '/');
  return Uint8Array.from(atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4)), (c) => c.charCodeAt(0));
}

function sameBytes(buffer, bytes) {
  if (!buffer) return false;
  const given = new Uint8Array(buffer);
  return given.length === bytes.length && given.every((byte, i) => byte === bytes[i]);
}

// The promise's result, or a rejection once ms have passed.
function within(promise, ms, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

function savedSubscription() {
  try {
    return JSON.parse(localStorage.getItem(SUBSCRIPTION_KEY));
  } catch {
    return null;
  }
}

export class PushSetup {
  constructor() {
    this.serverKey = null; // the VAPID public key, as bytes
    this.stopped = false;
    this.prompt = null;
    this.subscribing = null; // the subscription being made, if any
  }

  async start() {
    if (!pushSupported()) return;
    try {
      const key = (await api.get('/server')).vapid_public_key;
      this.serverKey = key ? base64UrlBytes(key) : null;
    } catch {
      return; // no key, no push; the next sign-in asks again
    }
    if (this.stopped || !this.serverKey) return;
    if (Notification.permission === 'granted') {
      // Allowed before (this browser, an earlier session): renew quietly.
      this.#subscribe().catch((error) => console.warn('Push subscription failed:', error));
    } else if (Notification.permission === 'default' && !localStorage.getItem(DISMISSED_KEY)) {
      this.#showPrompt();
    }
  }

  stop() {
    this.stopped = true;
    this.prompt?.remove();
    this.prompt = null;
    // However the session ended, this browser stops receiving its pushes (the
    // server drops the subscription when its push service answers 410).
    this.#unsubscribe().catch(() => {});
  }

  // Signing out: the server forgets the subscription too (while the session
  // can still say so).
  async signOut() {
    this.stopped = true; // a subscription still being made is not registered
    // A subscription made meanwhile is to be unsubscribed too.
    if (this.subscribing) await within(this.subscribing, SIGN_OUT_WAIT_MS, 'subscribe').catch(() => {});
    const saved = savedSubscription();
    await this.#unsubscribe().catch(() => {});
    if (saved?.id) await api.del(`/push/subscriptions/${saved.id}`).catch(() => {});
  }

  #showPrompt() {
    const error = h('p', { class: 'error', role: 'alert' });
    const enable = h('button', { type: 'button', class: 'primary' }, 'Enable notifications');
    const text = h('p', { id: 'notify-prompt-text' },
      'Get a notification for direct messages and mentions, even when this tab is closed.');
    this.prompt = h('section', { class: 'notify-prompt', 'aria-labelledby': 'notify-prompt-text' },
      text,
      h('div', { class: 'notify-prompt-buttons' },
        enable,
        h('button', {
          type: 'button',
          onclick: () => {
            localStorage.setItem(DISMISSED_KEY, '1');
            this.#hidePrompt();
          },
        }, 'Not now')),
      error);
    enable.addEventListener('click', async () => {
      enable.disabled = true;
      showError(error, null);
      try {
        const permission = await Notification.requestPermission();
        if (permission !== 'granted') {
          this.#hidePrompt(); // asked and answered (or put off) in the browser
          return;
        }
        await this.#subscribe();
        this.#hidePrompt();
      } catch (failure) {
        showError(error, new Error(`This browser could not subscribe to notifications (${failure.message}). `
          + 'They still show while this page is open.'));
      } finally {
        enable.disabled = false;
      }
    });
    $('#app-error').after(this.prompt);
  }

  #hidePrompt() {
    this.prompt?.remove();
    this.prompt = null;
  }

  #subscribe() {
    this.subscribing ??= this.#register().finally(() => { this.subscribing = null; });
    return this.subscribing;
  }

  // Registers the worker, subscribes with the server's key (a subscription
  // made for another key is replaced) and tells the server.
  async #register() {
    await navigator.serviceWorker.register(WORKER_URL, { scope: '/' });
    const registration = await navigator.serviceWorker.ready; // subscribing needs it active
    let subscription = await registration.pushManager.getSubscription();
    if (subscription && !sameBytes(subscription.options?.applicationServerKey, this.serverKey)) {
      await subscription.unsubscribe();
      subscription = null;
    }
    subscription ??= await within(registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: this.serverKey,
    }), SUBSCRIBE_TIMEOUT_MS, 'the push service');
    if (this.stopped) return;
    const { endpoint, keys } = subscription.toJSON();
    const saved = await api.post('/push/subscriptions', { endpoint, keys: { p256dh: keys.p256dh, auth: keys.auth } });
    localStorage.setItem(SUBSCRIPTION_KEY, JSON.stringify({ id: saved.id, endpoint }));
  }

  async #unsubscribe() {
    localStorage.removeItem(SUBSCRIPTION_KEY);
    const registration = await workerRegistration();
    const subscription = await registration?.pushManager?.getSubscription();
    await subscription?.unsubscribe();
  }
}
