// A username field that suggests users as one types (GET /users?q=, a
// prefix of the username or display name): a listbox hangs under the field,
// as the message box's `@` suggestions do (mentions.js): the field stays a
// text box with aria-autocomplete and aria-activedescendant naming the
// active option. ArrowDown/ArrowUp move, Enter or a click takes the
// suggestion, Escape closes; the field keeps focus throughout.
import * as api from './api.js';
import { fieldId, h } from './dom.js';
import { rememberUser } from './users.js';

const MAX_SUGGESTIONS = 8;
const TYPING_PAUSE_MS = 150; // one request per pause in typing, not per key

export class UserPicker {
  // input: the text field; exclude(user) → true for users not to offer
  // (e.g. members already); onPick(user) after a suggestion is taken.
  constructor(input, { exclude = () => false, onPick = () => {} } = {}) {
    this.input = input;
    this.exclude = exclude;
    this.onPick = onPick;
    this.id = fieldId('user-suggestions');
    this.listbox = h('ul', { id: this.id, class: 'user-suggestions', role: 'listbox', 'aria-label': 'Suggested users', hidden: true });
    this.listbox.addEventListener('pointerdown', (event) => event.preventDefault()); // keep focus in the field
    this.listbox.addEventListener('click', (event) => {
      const option = event.target.closest('[role=option]');
      if (option) this.#choose(Number(option.dataset.index));
    });
    input.setAttribute('aria-autocomplete', 'list');
    input.setAttribute('aria-controls', this.id);
    input.autocomplete = 'off';
    input.after(this.listbox);
    this.users = [];
    this.active = -1;
    this.generation = 0;
    this.timer = null;
    input.addEventListener('input', () => {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.#suggest(), TYPING_PAUSE_MS);
    });
    input.addEventListener('blur', () => this.close());
    input.addEventListener('keydown', (event) => this.#onKey(event));
  }

  close() {
    this.generation++;
    clearTimeout(this.timer);
    this.users = [];
    this.active = -1;
    this.listbox.hidden = true;
    this.listbox.replaceChildren();
    this.input.removeAttribute('aria-activedescendant');
  }

  async #suggest() {
    const query = this.input.value.trim().replace(/^@/, '');
    if (!query) {
      this.close();
      return;
    }
    const generation = ++this.generation;
    let items;
    try {
      ({ items } = await api.get('/users', { q: query, limit: 20 }));
    } catch {
      return; // no suggestions; the field still takes a typed username
    }
    if (generation !== this.generation) return; // typed on meanwhile
    this.#show(items.filter((user) => !user.deactivated && !this.exclude(user)).slice(0, MAX_SUGGESTIONS));
  }

  #show(users) {
    if (!users.length) {
      this.close();
      return;
    }
    this.users = users;
    this.listbox.replaceChildren(...users.map((user, index) => {
      rememberUser(user);
      return h('li', { id: `${this.id}-${index}`, role: 'option', class: 'user-option', 'data-index': index },
        h('span', { class: 'user-option-name' }, user.display_name || user.username),
        h('span', { class: 'hint' }, ` @${user.username}`),
        user.is_bot ? h('span', { class: 'tag' }, 'bot') : null);
    }));
    this.listbox.hidden = false;
    this.#activate(0);
  }

  #activate(index) {
    const count = this.users.length;
    this.active = (index + count) % count;
    [...this.listbox.children].forEach((option, i) => option.setAttribute('aria-selected', String(i === this.active)));
    const option = this.listbox.children[this.active];
    this.input.setAttribute('aria-activedescendant', option.id);
    option.scrollIntoView({ block: 'nearest' });
  }

  #choose(index) {
    const user = this.users[index];
    this.input.value = user.username;
    this.close();
    this.input.focus();
    this.onPick(user);
  }

  #onKey(event) {
    if (this.listbox.hidden || event.isComposing) return;
    if (event.key === 'ArrowDown') this.#activate(this.active + 1);
    else if (event.key === 'ArrowUp') this.#activate(this.active - 1);
    else if (event.key === 'Enter') this.#choose(this.active);
    else if (event.key === 'Escape') this.close();
    else return;
    event.preventDefault();
    event.stopPropagation(); // Escape closes the list, not the dialog
  }
}
