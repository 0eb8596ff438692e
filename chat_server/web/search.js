// The `Search` box in the top bar over GET /search: results in a panel under
// it, newest first and grouped by room, each a link that opens its room at
// the message (highlighted); `More results` pages on. Typing searches after
// a pause, Enter at once; Escape closes the results.
import * as api from './api.js';
import { $, h } from './dom.js';
import { dateAndClock } from './time.js';
import { displayName } from './users.js';

const TYPING_DELAY_MS = 350;
const PAGE_SIZE = 20;
const SNIPPET_LEAD = 60; // characters shown before the first match
const SNIPPET_CHARS = 220;
const WORD = /[\p{L}\p{N}_]+/gu;

// The words a query matches (as the server's full-text search does, whole
// words, any case), minus the ones it excludes (`-word`) and `or`.
function queryTerms(query) {
  const terms = new Set();
  for (const match of query.matchAll(/(-?)"?([^\s"]+)/g)) {
    if (match[1]) continue;
    for (const word of match[2].matchAll(WORD)) {
      if (word[0].toLowerCase() !== 'or') terms.add(word[0].toLowerCase());
    }
  }
  return [...terms];
}

function termPattern(terms) {
  if (!terms.length) return null;
  const escaped = terms.map((term) => term.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  return new RegExp(`(?<![\\p{L}\\p{N}_])(?:${escaped.join('|')})(?![\\p{L}\\p{N}_])`, 'giu');
}

// A part of the body around its first match, with every match in a <mark>.
function snippet(body, pattern) {
  const text = body.replace(/\s+/g, ' ').trim();
  const first = pattern ? text.search(pattern) : -1;
  let start = first > SNIPPET_LEAD ? first - SNIPPET_LEAD : 0;
  if (start > 0) start = text.indexOf(' ', start) + 1 || start; // at a word
  const end = Math.min(text.length, start + SNIPPET_CHARS);
  const part = text.slice(start, end);
  const nodes = [start > 0 ? '…' : null];
  let last = 0;
  for (const match of pattern ? part.matchAll(pattern) : []) {
    nodes.push(part.slice(last, match.index), h('mark', {}, match[0]));
    last = match.index + match[0].length;
  }
  nodes.push(part.slice(last), end < text.length ? '…' : null);
  return nodes;
}

class SearchPanel {
  // getSession() → the signed-in Session (app.js), or null.
  constructor(getSession) {
    this.getSession = getSession;
    this.form = $('#search-form');
    this.input = $('#search-input');
    this.timer = null;
    this.generation = 0;
    this.query = '';
    this.cursor = null;
    this.groups = new Map(); // room id → its result list
    this.status = h('p', { class: 'search-status', 'aria-live': 'polite' });
    this.results = h('div', { class: 'search-groups' });
    this.more = h('button', { type: 'button', class: 'search-more', hidden: true, onclick: () => this.#search(true) }, 'More results');
    this.panel = h('dialog', { id: 'search-panel', class: 'search-panel', 'aria-labelledby': 'search-panel-title' },
      h('div', { class: 'search-panel-header' },
        h('h2', { id: 'search-panel-title' }, 'Search results'),
        h('button', { type: 'button', class: 'search-close', 'aria-label': 'Close search results', onclick: () => this.close() },
          h('span', { 'aria-hidden': 'true' }, '×'))),
      this.status, this.results, this.more);
    document.body.append(this.panel);
    this.input.setAttribute('aria-controls', this.panel.id);

    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.#search();
    });
    this.input.addEventListener('input', () => {
      clearTimeout(this.timer);
      if (!this.input.value.trim()) this.close({ restoreFocus: false });
      else this.timer = setTimeout(() => this.#search(), TYPING_DELAY_MS);
    });
    this.input.addEventListener('keydown', (event) => {
      if (event.key === 'ArrowDown' && this.panel.open) {
        event.preventDefault();
        $('a', this.results)?.focus();
      }
    });
    // Escape closes the results, and keeps the query (the box's own Escape
    // would clear it).
    for (const element of [this.input, this.panel]) {
      element.addEventListener('keydown', (event) => {
        if (event.key !== 'Escape' || !this.panel.open) return;
        event.preventDefault();
        this.close();
      });
    }
    this.panel.addEventListener('keydown', (event) => this.#arrows(event));
    document.addEventListener('pointerdown', (event) => {
      if (this.panel.open && !this.panel.contains(event.target) && !this.form.contains(event.target)) {
        this.close({ restoreFocus: false });
      }
    }, { capture: true });
    // Closed on sign-out (with every dialog): the next user starts afresh.
    this.panel.addEventListener('close', () => {
      if (!this.getSession()) this.input.value = '';
    });
  }

  close({ restoreFocus = true } = {}) {
    clearTimeout(this.timer);
    this.generation++;
    if (!this.panel.open) return;
    const hadFocus = this.panel.contains(document.activeElement);
    this.panel.close();
    if (restoreFocus && hadFocus) this.input.focus();
  }

  // Up and down move between the results.
  #arrows(event) {
    if (event.key !== 'ArrowDown' && event.key !== 'ArrowUp') return;
    const links = [...this.results.querySelectorAll('a')];
    const index = links.indexOf(document.activeElement);
    if (index < 0) return;
    event.preventDefault();
    const next = index + (event.key === 'ArrowDown' ? 1 : -1);
    (next < 0 ? this.input : links[Math.min(next, links.length - 1)]).focus();
  }

  // A new search (more: the next page of the current one).
  async #search(more = false) {
    clearTimeout(this.timer);
    const session = this.getSession();
    const query = more ? this.query : this.input.value.trim();
    if (!session || !query) return;
    const generation = ++this.generation;
    if (!more) {
      this.query = query;
      this.cursor = null;
      this.groups.clear();
      this.results.replaceChildren();
      this.more.hidden = true;
    }
    this.status.textContent = 'Searching…';
    this.#open();
    try {
      const page = await api.get('/search', { q: query, limit: PAGE_SIZE, ...(more ? { cursor: this.cursor } : {}) });
      if (generation !== this.generation) return;
      const pattern = termPattern(queryTerms(query));
      const firstNew = page.items.length ? this.#render(page.items, session, pattern) : null;
      this.cursor = page.next_cursor;
      this.more.hidden = !this.cursor;
      const count = this.results.querySelectorAll('a').length;
      this.status.textContent = count === 0 ? 'No messages found'
        : `${count}${this.cursor ? '+' : ''} ${count === 1 ? 'message' : 'messages'} found`;
      if (more) (firstNew ?? this.input).focus();
    } catch (error) {
      if (generation !== this.generation) return;
      const reason = error.details?.fields?.q;
      this.status.textContent = reason ? `Could not search: the search must be ${reason}.`
        : error.code === 'rate_limited' ? 'Too many searches at once: wait a moment and try again.'
          : `Could not search: ${error.message}`;
    }
  }

  #open() {
    if (this.panel.open) return;
    // Under the search box, wherever the top bar wrapped it.
    this.panel.style.top = `${Math.round(this.form.getBoundingClientRect().bottom + 6)}px`;
    const typing = document.activeElement;
    this.panel.show();
    typing?.focus(); // show() moves focus into the panel; typing goes on
  }

  // Adds results to their rooms' groups; returns the first new link.
  #render(messages, session, pattern) {
    let first = null;
    for (const message of messages) {
      const link = this.#result(message, session, pattern);
      first ??= link;
      this.#group(message.room_id, session).append(h('li', {}, link));
    }
    return first;
  }

  #group(roomId, session) {
    let list = this.groups.get(roomId);
    if (list) return list;
    const room = session.list.get(roomId);
    const headingId = `search-room-${roomId}`;
    list = h('ul', { class: 'search-list' });
    this.results.append(h('section', { class: 'search-group', 'aria-labelledby': headingId },
      h('h3', { id: headingId }, room ? session.list.title(room) : 'Other room'), list));
    this.groups.set(roomId, list);
    return list;
  }

  #result(message, session, pattern) {
    const body = message.body || message.attachments.map((media) => media.filename).join(', ');
    return h('a', {
      class: 'search-result',
      href: `#/rooms/${message.room_id}`,
      onclick: (event) => {
        if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return; // a new tab
        event.preventDefault();
        this.#choose(message);
      },
    },
    h('span', { class: 'search-meta' },
      h('span', { class: 'sender', 'data-user-name': message.sender_id }, displayName(message.sender_id)),
      ' ',
      h('time', { datetime: message.created_at }, dateAndClock(message.created_at)),
      message.thread_id ? h('span', { class: 'hint' }, ' in a thread') : null),
    h('span', { class: 'search-snippet' }, snippet(body, pattern)));
  }

  // Opens the message's room at it (a reply: in its thread as well).
  #choose(message) {
    const session = this.getSession();
    if (!session) return;
    this.close({ restoreFocus: false });
    session.openRoom(message.room_id, { at: { seq: message.seq, highlight: true } });
    if (message.thread_id) session.conversation.openThread(message, this.input);
  }
}

// Sets up the search box once per page.
export function setupSearch(getSession) {
  return new SearchPanel(getSession);
}
