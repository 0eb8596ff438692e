// REST client for /api/v1: bearer tokens kept in localStorage, one refresh
// attempt on 401, errors thrown as ApiError with the API's error code and a
// message fit to show: the server's own (sizes in KB/MB), or a plain sentence
// when the server could not be reached or answered without one.
import { formatSize } from './dom.js';

const BASE = '/api/v1';
const STORAGE_KEY = 'chat.session';
// Refresh the access token this long before it expires, so a request or a
// WebSocket auth frame never goes out with a token about to lapse.
const EXPIRY_MARGIN_MS = 30_000;

export const UNREACHABLE = "Can't reach the server. Check your connection.";

// The server's messages give sizes in bytes ("upload over 26214400 bytes").
function friendlier(message) {
  return message.replace(/\b(\d+) bytes\b/g, (_, bytes) => formatSize(Number(bytes)));
}

function fallbackMessage(status) {
  if (status === 0) return UNREACHABLE;
  if (status >= 500) return `The server had a problem (${status}). Try again in a moment.`;
  return `The request failed (${status}).`;
}

// status 0: no answer at all (network down, server stopped).
class ApiError extends Error {
  constructor(status, error = {}) {
    super(error.message ? friendlier(error.message) : fallbackMessage(status));
    this.status = status;
    this.code = error.code || 'network';
    this.details = error.details;
  }
}

// fetch(), with "Failed to fetch" turned into an ApiError saying what happened.
async function request(url, init) {
  try {
    return await fetch(url, init);
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0);
  }
}

let onSignedOut = () => {};
let refreshing = null;

export function setSignedOutHandler(handler) {
  onSignedOut = handler;
}

// Read from storage every time: another tab may have refreshed the tokens.
function session() {
  try {
    return JSON.parse(localStorage.getItem(STORAGE_KEY));
  } catch {
    return null;
  }
}

export function hasSession() {
  return session() !== null;
}

function saveSession(auth) {
  localStorage.setItem(STORAGE_KEY, JSON.stringify({
    access_token: auth.access_token,
    refresh_token: auth.refresh_token,
    expires_at: Date.now() + auth.expires_in * 1000,
  }));
}

function clearSession() {
  localStorage.removeItem(STORAGE_KEY);
}

function signedOut() {
  clearSession();
  onSignedOut();
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy error page, say): keep the status only.
  }
  return new ApiError(response.status, body?.error);
}

// Sign up or log in; stores the tokens and returns the User.
export async function authenticate(kind, fields) {
  const response = await request(`${BASE}/auth/${kind}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(fields),
  });
  if (!response.ok) throw await errorFrom(response);
  const auth = await response.json();
  saveSession(auth);
  return auth.user;
}

async function doRefresh(staleAccessToken) {
  const current = session();
  if (!current) throw new ApiError(401, { code: 'unauthorized', message: 'Signed out' });
  // Another tab (or an earlier call) already rotated the tokens.
  if (current.access_token !== staleAccessToken) return;
  const response = await request(`${BASE}/auth/refresh`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ refresh_token: current.refresh_token }),
  });
  if (response.status === 401) {
    signedOut();
    throw await errorFrom(response);
  }
  if (!response.ok) throw await errorFrom(response);
  saveSession(await response.json());
}

// Only one refresh at a time, across tabs too where Web Locks exist: the
// server rotates refresh tokens and treats reuse of an old one as theft,
// revoking the whole session.
function refresh(staleAccessToken) {
  refreshing ??= (navigator.locks
    ? navigator.locks.request('chat-token-refresh', () => doRefresh(staleAccessToken))
    : doRefresh(staleAccessToken)
  ).finally(() => {
    refreshing = null;
  });
  return refreshing;
}

// A usable access token (for the WebSocket auth frame).
export async function accessToken(forceRefresh = false) {
  let current = session();
  if (!current) throw new ApiError(401, { code: 'unauthorized', message: 'Signed out' });
  if (forceRefresh || Date.now() > current.expires_at - EXPIRY_MARGIN_MS) {
    await refresh(current.access_token);
    current = session();
  }
  return current.access_token;
}

// answers401: a 401 is the server's answer about the request (a wrong old
// password), not about the session, which stays signed in.
async function send(method, path, { json, form, query, answers401 = false } = {}) {
  const url = new URL(BASE + path, location.origin);
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null) url.searchParams.set(key, value);
  }
  const attempt = () => {
    const token = session()?.access_token;
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    let body;
    if (json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(json);
    } else if (form) {
      body = form; // the browser sets the multipart boundary
    }
    return { token, pending: request(url, { method, headers, body }) };
  };
  let { token, pending } = attempt();
  let response = await pending;
  if (response.status === 401 && token && !answers401) {
    await refresh(token);
    response = await attempt().pending;
    if (response.status === 401) {
      signedOut();
    }
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

async function sendJson(method, path, options) {
  const response = await send(method, path, options);
  return response.status === 204 ? null : response.json();
}

export const get = (path, query) => sendJson('GET', path, { query });
export const post = (path, json = {}) => sendJson('POST', path, { json });
export const patch = (path, json) => sendJson('PATCH', path, { json });
export const put = (path, json) => sendJson('PUT', path, { json });
export const del = (path) => sendJson('DELETE', path);

// POST /auth/password. The server revokes every other session; this one
// stays signed in. A wrong old password is a 401 here, so the access token
// is made fresh first and that 401 does not sign the user out.
export async function changePassword(oldPassword, newPassword) {
  await accessToken();
  return sendJson('POST', '/auth/password', {
    json: { old_password: oldPassword, new_password: newPassword },
    answers401: true,
  });
}

export async function getBlob(path, query) {
  return (await send('GET', path, { query })).blob();
}

export function upload(file) {
  const form = new FormData();
  form.append('file', file, file.name);
  return sendJson('POST', '/media', { form });
}

// Best effort: the local session ends whatever the server says.
export async function logout() {
  try {
    await send('POST', '/auth/logout');
  } catch {
    // Already expired or the server is unreachable; nothing more to do.
  } finally {
    clearSession();
  }
}

// True for failures worth retrying with the same request (network down,
// server restarting or overloaded), false for a definite answer.
export function isTransient(error) {
  return !(error instanceof ApiError) || error.status === 0 || error.status === 429 || error.status >= 500;
}
