// The message box under the log: Enter sends (Shift+Enter adds a line), Up
// in an empty box edits the last own message, a draft kept per room (and per
// user, in localStorage, so it survives a reload), typing notices,
// attachments, and delivery that survives a restarting server.
import * as api from './api.js';
import { $, backoff, h, randomId, showError, sleep } from './dom.js';
import { displayName } from './users.js';

const MAX_BODY = 4000;
const TYPING_SEND_INTERVAL_MS = 3000;
const DRAFT_KEY = 'chat.draft.';
// Touch screens have no Shift key at hand: the hint leaves it out.
const PLACEHOLDER = matchMedia('(pointer: coarse)').matches
  ? 'Write a message'
  : 'Write a message (Enter sends, Shift+Enter adds a line)';

// Drafts are stored per user and room: another account signed in on the same
// browser never sees them.
function draftKey(userId, roomId) {
  return `${DRAFT_KEY}${userId}.${roomId}`;
}

function loadDraft(userId, roomId) {
  try {
    return localStorage.getItem(draftKey(userId, roomId)) ?? '';
  } catch {
    return '';
  }
}

// Log out: the account's unsent drafts leave the browser with it.
export function forgetDrafts(userId) {
  const prefix = `${DRAFT_KEY}${userId}.`;
  try {
    const keys = Object.keys(localStorage).filter((key) => key.startsWith(prefix));
    for (const key of keys) localStorage.removeItem(key);
  } catch {
    // Storage disabled: there are none.
  }
}

function saveDraft(userId, roomId, text) {
  if (roomId === null) return;
  try {
    if (text) localStorage.setItem(draftKey(userId, roomId), text);
    else localStorage.removeItem(draftKey(userId, roomId));
  } catch {
    // Storage full or disabled: the draft lives as long as the page.
  }
}

// Posts over REST, retrying transient failures with the same client_id, so a
// send that reached the server before the connection broke is not doubled.
export async function deliver(roomId, payload, onRetry) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await api.post(`/rooms/${roomId}/messages`, payload);
    } catch (error) {
      if (!api.isTransient(error)) throw error;
      onRetry();
      await sleep(backoff(attempt));
    }
  }
}

export class Composer {
  // sendFrame(frame) → whether the WebSocket took it; onSent(message) with the
  // server's copy of a message we posted; showPending(element) puts the
  // "Sending…" copy at the end of the log until the real one arrives.
  constructor({ me, sendFrame, onSent, showPending, signal }) {
    Object.assign(this, { me, sendFrame, onSent, showPending });
    this.form = $('#composer');
    this.input = $('#message-input');
    this.attach = $('#attach-input');
    this.stagedList = $('#staged');
    this.error = $('#composer-error');
    this.roomId = null;
    this.staged = []; // { file, upload: Promise<Media> }
    this.lastTypingSent = 0;
    this.input.placeholder = PLACEHOLDER;

    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.#send();
    }, { signal });
    this.input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.#send();
      } else if (event.key === 'ArrowUp' && !this.input.value && !event.shiftKey && !event.altKey
        && !event.ctrlKey && !event.metaKey && this.#editLastOwn()) {
        event.preventDefault();
      }
    }, { signal });
    this.input.addEventListener('input', () => {
      this.#saveDraft();
      this.#typed();
    }, { signal });
    this.attach.addEventListener('change', () => this.#stageFiles(), { signal });
  }

  // A room switch brings back that room's draft.
  setRoom(roomId) {
    if (roomId === this.roomId) return;
    this.roomId = roomId;
    this.input.value = roomId === null ? '' : loadDraft(this.me.id, roomId);
    this.staged = [];
    this.stagedList.replaceChildren();
    this.lastTypingSent = 0;
    this.showError(null);
  }

  showError(error) {
    showError(this.error, error);
  }

  #saveDraft() {
    saveDraft(this.me.id, this.roomId, this.input.value);
  }

  // Up in an empty box: the newest own message in the log opens for editing
  // (its `Edit` button, the same flow as a click). Returns whether one did.
  #editLastOwn() {
    const buttons = document.querySelectorAll('#message-list article.mine .edit-button');
    const last = buttons[buttons.length - 1];
    if (!last) return false;
    last.click();
    return true;
  }

  #typed() {
    const now = Date.now();
    if (this.input.value.trim() && now - this.lastTypingSent > TYPING_SEND_INTERVAL_MS
      && this.sendFrame({ type: 'typing', room_id: this.roomId })) {
      this.lastTypingSent = now;
    }
  }

  // Files upload as soon as they are chosen; sending waits for them.
  #stageFiles() {
    for (const file of this.attach.files) {
      const item = { file, upload: api.upload(file) };
      const state = h('span', { class: 'hint' }, ' uploading…');
      const remove = h('button', { type: 'button', 'aria-label': `Remove ${file.name}` }, '×');
      const chip = h('li', { class: 'chip' }, h('span', {}, file.name), state, remove);
      item.upload.then(() => { state.textContent = ''; }, (error) => { state.textContent = ` failed: ${error.message}`; });
      remove.addEventListener('click', () => {
        this.staged = this.staged.filter((staged) => staged !== item);
        chip.remove();
        this.input.focus();
      });
      this.staged.push(item);
      this.stagedList.append(chip);
    }
    this.attach.value = ''; // so choosing the same file again fires `change`
  }

  #renderPending(body, files, clientId) {
    const state = h('span', { class: 'hint' }, 'Sending…');
    const element = h('article', { class: 'message mine pending', 'data-client-id': clientId },
      h('header', { class: 'message-header' },
        h('span', { class: 'sender', 'data-user-name': this.me.id }, displayName(this.me.id)), state),
      body ? h('p', { class: 'body' }, body) : null,
      files.length ? h('p', { class: 'hint' }, files.map((item) => item.file.name).join(', ')) : null);
    return { element, state };
  }

  async #send() {
    const body = this.input.value.trim();
    const staged = this.staged;
    if (!body && !staged.length) return;
    if (body.length > MAX_BODY) {
      this.showError(new Error(`A message can be at most ${MAX_BODY} characters.`));
      return;
    }
    const roomId = this.roomId;
    this.input.value = '';
    this.#saveDraft();
    this.staged = [];
    this.stagedList.replaceChildren();
    this.showError(null);
    const clientId = randomId();
    const pending = this.#renderPending(body, staged, clientId);
    this.showPending(pending.element);
    try {
      const media = await Promise.all(staged.map((item) => item.upload));
      const message = await deliver(
        roomId,
        { body, client_id: clientId, attachments: media.map((item) => item.id) },
        () => { pending.state.textContent = 'Waiting for the server…'; },
      );
      this.onSent(message);
    } catch (error) {
      // Refused for good (too long, no longer a member…): give the text back.
      pending.element.remove();
      if (roomId !== this.roomId) {
        if (!loadDraft(this.me.id, roomId)) saveDraft(this.me.id, roomId, body);
        return;
      }
      this.showError(error);
      if (!this.input.value) {
        this.input.value = body;
        this.#saveDraft();
      }
    }
  }
}
