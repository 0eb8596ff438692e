// The Profile dialog's "Access tokens" (personal access tokens: create with
// a name and a lifetime, shown once with "Copy"; list; "Revoke") and "Bots"
// (bot accounts the user owns: create, shown with their token once; list;
// "Delete"), and the pieces the room's "Webhooks" share with them.
import * as api from './api.js';
import { confirmAction, copyField, fieldId, h, showError, showFormError } from './dom.js';
import { formatDate } from './invites.js';

const DAY_S = 86_400;
const TOKEN_LIFETIMES = [
  ['Never', ''],
  ['30 days', 30 * DAY_S],
  ['90 days', 90 * DAY_S],
  ['1 year', 365 * DAY_S],
];
const DEFAULT_TOKEN_LIFETIME = 90 * DAY_S;
const SHOWN_ONCE = 'Copy it now: it will not be shown again.';

// A secret to hand over (a token, a hook URL): a read-only field named
// `label` with "Copy" and an aria-live "Copied.", hidden until show().
// warning: a line the Copy button is described by (or null); extra: more
// content under it.
export function secretBox(label, { warning = null, extra = null } = {}) {
  const id = fieldId('secret');
  const warningId = fieldId('secret-warning');
  const field = h('input', { id, readonly: true, class: 'secret-value', spellcheck: 'false', autocomplete: 'off' });
  const note = h('span', { class: 'hint', 'aria-live': 'polite' });
  const copy = h('button', {
    type: 'button',
    'aria-describedby': warning ? warningId : null,
    onclick: () => copyField(field, note),
  }, 'Copy');
  const element = h('div', { class: 'secret-box', hidden: true },
    h('label', { for: id }, label),
    h('div', { class: 'copy-row' }, field, copy),
    warning ? h('p', { id: warningId, class: 'warning' }, warning) : null,
    note,
    extra);
  return {
    element,
    // Shows value and moves focus to Copy, the next thing to do.
    show(value) {
      field.value = value;
      note.textContent = '';
      element.hidden = false;
      copy.focus();
    },
  };
}

// Takes a removed item out of its list, keeping keyboard focus near where it
// was: the next item's (else the previous one's) first button, else fallback.
export function removeItem(item, fallback) {
  const neighbour = item.nextElementSibling ?? item.previousElementSibling;
  item.remove();
  (neighbour?.querySelector('button') ?? fallback).focus();
}

// Says `text` (e.g. "No bots yet.") in a list left without items.
export function noteIfEmpty(list, text) {
  if (!list.children.length) list.append(h('li', { class: 'hint' }, text));
}

// A create form: a group named `legend` (with an optional hint) holding its
// fields in a row that ends with the submit button, and an alert for
// failures that names the field; submit(data) sends it.
export function createForm({ legend, hint = null, fields, submitLabel, submit }) {
  const error = h('p', { class: 'error', role: 'alert', id: fieldId('form-error') });
  const button = h('button', { type: 'submit' }, submitLabel);
  const hintId = hint ? fieldId('form-hint') : null;
  const form = h('form', { class: 'create-form' },
    h('fieldset', { 'aria-describedby': hintId },
      h('legend', {}, legend),
      hint ? h('p', { id: hintId, class: 'hint' }, hint) : null,
      h('div', { class: 'field-row' }, fields, button),
      error));
  for (const field of form.querySelectorAll('input, select, textarea')) {
    field.setAttribute('aria-errormessage', error.id);
  }
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    showFormError(form, error, null);
    button.disabled = true;
    try {
      await submit(new FormData(form));
    } catch (failure) {
      showFormError(form, error, failure);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

// A labelled control of a create form's row; `grow` lets it take the
// row's spare width.
export function labelled(label, control, { grow = false } = {}) {
  control.id ||= fieldId(control.name);
  return h('span', { class: grow ? 'grow' : null }, h('label', { for: control.id }, label), control);
}

function section(title, ...children) {
  const headingId = fieldId('section');
  return h('section', { class: 'integration-section', 'aria-labelledby': headingId },
    h('h3', { id: headingId }, title), ...children);
}

class TokenSection {
  constructor() {
    this.list = h('ul', { class: 'admin-list', 'aria-label': 'Your tokens' });
    this.error = h('p', { class: 'error', role: 'alert' });
    this.result = secretBox('Your new token', { warning: SHOWN_ONCE });
    this.form = createForm({
      legend: 'New token',
      fields: [
        labelled('Token name', h('input', { name: 'name', required: true, maxlength: 64, autocomplete: 'off', placeholder: 'e.g. deploy script' }), { grow: true }),
        labelled('Expires', h('select', { name: 'expires_in' },
          TOKEN_LIFETIMES.map(([label, seconds]) => h('option', { value: seconds, selected: seconds === DEFAULT_TOKEN_LIFETIME }, label)))),
      ],
      submitLabel: 'Create token',
      submit: (data) => this.#create(data),
    });
    this.element = section('Access tokens',
      h('p', { class: 'hint' }, 'Scripts and apps use a token to act as you: send it as “Authorization: Bearer <token>”.'),
      this.error, this.list, this.form, this.result.element);
  }

  async reload() {
    showError(this.error, null);
    try {
      const { items } = await api.get('/auth/tokens');
      this.list.replaceChildren(...items.map((token) => this.#render(token)));
      noteIfEmpty(this.list, 'No tokens yet.');
    } catch (failure) {
      showError(this.error, failure);
    }
  }

  async #create(data) {
    const lifetime = data.get('expires_in');
    const token = await api.post('/auth/tokens', {
      name: data.get('name').trim(),
      expires_in: lifetime ? Number(lifetime) : null,
    });
    this.form.reset();
    this.result.show(token.token);
    await this.reload();
  }

  #render(token) {
    const nameId = fieldId('token-name');
    const expired = token.expires_at && new Date(token.expires_at) <= new Date();
    const facts = [
      `created ${formatDate(token.created_at)}`,
      expired ? `expired ${formatDate(token.expires_at)}`
        : token.expires_at ? `expires ${formatDate(token.expires_at)}` : 'never expires',
      token.last_used_at ? `last used ${formatDate(token.last_used_at)}` : 'never used',
    ];
    const item = h('li', { class: 'admin-item' },
      h('div', { class: 'admin-item-text' },
        h('strong', { id: nameId }, token.name),
        h('span', { class: 'hint' }, facts.join(' · '))),
      h('div', { class: 'admin-item-actions' },
        h('button', {
          type: 'button',
          class: 'danger',
          'aria-describedby': nameId,
          onclick: () => this.#revoke(token, item),
        }, 'Revoke')));
    return item;
  }

  async #revoke(token, item) {
    if (!(await confirmAction(`Revoke the token “${token.name}”? Whatever uses it stops working at once.`))) return;
    showError(this.error, null);
    try {
      await api.del(`/auth/tokens/${token.id}`);
      removeItem(item, this.form.elements.namedItem('name'));
      noteIfEmpty(this.list, 'No tokens yet.');
    } catch (failure) {
      showError(this.error, failure);
    }
  }
}

class BotSection {
  constructor() {
    this.list = h('ul', { class: 'admin-list', 'aria-label': 'Your bots' });
    this.error = h('p', { class: 'error', role: 'alert' });
    this.more = h('button', { type: 'button', hidden: true, onclick: () => this.#loadPage() }, 'More bots');
    this.result = secretBox('Bot token', { warning: SHOWN_ONCE });
    this.form = createForm({
      legend: 'New bot',
      hint: 'Its name is shown beside its messages (its username if left empty).',
      fields: [
        labelled('Bot username', h('input', {
          name: 'username', required: true, maxlength: 32, autocapitalize: 'none', spellcheck: 'false', autocomplete: 'off',
        }), { grow: true }),
        labelled('Bot name', h('input', { name: 'display_name', maxlength: 64, autocomplete: 'off' }), { grow: true }),
      ],
      submitLabel: 'Create bot',
      submit: (data) => this.#create(data),
    });
    this.cursor = null;
    this.element = section('Bots',
      h('p', { class: 'hint' }, 'A bot is an account of its own that posts through the API with its token. Add it to a room like a person.'),
      this.error, this.list, this.more, this.form, this.result.element);
  }

  async reload() {
    this.cursor = null;
    this.list.replaceChildren();
    await this.#loadPage();
  }

  async #loadPage() {
    showError(this.error, null);
    try {
      const page = await api.get('/bots', { limit: 100, cursor: this.cursor });
      this.cursor = page.next_cursor;
      this.more.hidden = !this.cursor;
      this.list.append(...page.items.map((bot) => this.#render(bot)));
      noteIfEmpty(this.list, 'No bots yet.');
    } catch (failure) {
      showError(this.error, failure);
    }
  }

  async #create(data) {
    const fields = { username: data.get('username').trim().toLowerCase() };
    const displayName = data.get('display_name').trim();
    if (displayName) fields.display_name = displayName;
    const { token } = await api.post('/bots', fields);
    this.form.reset();
    this.result.show(token);
    await this.reload();
  }

  #render(bot) {
    const nameId = fieldId('bot-name');
    const item = h('li', { class: 'admin-item' },
      h('div', { class: 'admin-item-text' },
        h('span', { id: nameId }, h('strong', {}, bot.display_name || bot.username), ` @${bot.username}`)),
      h('div', { class: 'admin-item-actions' },
        h('button', {
          type: 'button',
          class: 'danger',
          'aria-describedby': nameId,
          onclick: () => this.#delete(bot, item),
        }, 'Delete')));
    return item;
  }

  async #delete(bot, item) {
    const name = bot.display_name || bot.username;
    if (!(await confirmAction(`Delete the bot ${name}? Its token stops working and it leaves its rooms.`))) return;
    showError(this.error, null);
    try {
      await api.del(`/bots/${bot.id}`);
      removeItem(item, this.form.elements.namedItem('username'));
      noteIfEmpty(this.list, 'No bots yet.');
    } catch (failure) {
      showError(this.error, failure);
    }
  }
}

// Fills container with the signed-in user's tokens and bots (nothing for a
// bot account, which has neither).
export function showIntegrations(container, me) {
  container.replaceChildren();
  container.hidden = me.is_bot;
  if (me.is_bot) return;
  const tokens = new TokenSection();
  const bots = new BotSection();
  container.append(tokens.element, bots.element);
  tokens.reload();
  bots.reload();
}
