// Room settings' "Webhooks", for the room's owner and admins: the room's
// webhooks (each with its bot; an incoming one's URL, an outgoing one's
// target, trigger, signing secret, failures and last delivery) with
// "Delete", and forms creating an incoming one (its URL shown with "Copy"
// and a curl example) and an outgoing one.
import * as api from './api.js';
import { confirmAction, copyField, fieldId, h, showError } from './dom.js';
import { createForm, labelled, noteIfEmpty, removeItem, secretBox } from './integrations.js';
import { formatDate } from './invites.js';

const TRIGGERS = { all: 'All messages', mention: 'When mentioned' };

// The shell command that posts "hello" through an incoming webhook.
function curlExample(hookUrl) {
  return `curl -X POST -H 'Content-Type: application/json' -d '{"text":"hello"}' ${hookUrl}`;
}

// A read-only copy of a webhook's secret value (its URL or signing secret)
// with "Copy", named `label`.
function copyRow(label, value) {
  const field = h('input', { readonly: true, value, 'aria-label': label, class: 'secret-value', spellcheck: 'false' });
  const note = h('span', { class: 'hint', 'aria-live': 'polite' });
  return h('div', { class: 'copy-row' },
    field,
    h('button', { type: 'button', 'aria-label': `Copy ${label}`, onclick: () => copyField(field, note) }, 'Copy'),
    note);
}

function pluralFailures(count) {
  return `${count} failed ${count === 1 ? 'delivery' : 'deliveries'}`;
}

export class WebhookSection {
  // A webhook's bot joins the room when it is made and leaves when it is
  // deleted: the member list follows by the room's events.
  constructor(roomId) {
    this.roomId = roomId;
    this.list = h('ul', { class: 'admin-list', 'aria-label': 'Webhooks' });
    this.error = h('p', { class: 'error', role: 'alert' });
    const curl = h('pre', { class: 'curl' }, h('code', {}));
    this.incomingResult = secretBox('Hook URL', {
      warning: 'Anyone with this URL can post into the room: keep it secret.',
      extra: h('div', {}, h('p', { class: 'hint' }, 'Post a message with:'), curl),
    });
    this.curl = curl.firstChild;
    this.outgoingResult = secretBox('Signing secret', {
      warning: 'Each delivery is signed with it: X-Chat-Signature is sha256= and the HMAC-SHA256 of the body.',
    });
    this.incomingForm = createForm({
      legend: 'New incoming webhook',
      hint: 'A URL that scripts and services post messages to; they show under its name.',
      fields: [labelled('Webhook name', h('input', { name: 'name', required: true, maxlength: 64, autocomplete: 'off' }), { grow: true })],
      submitLabel: 'Create incoming webhook',
      submit: (data) => this.#create(data, 'incoming'),
    });
    this.outgoingForm = createForm({
      legend: 'New outgoing webhook',
      hint: 'The room’s new messages (all, or those that mention it) are POSTed to your URL; a JSON reply with “text” is posted back.',
      fields: [
        labelled('Webhook name', h('input', { name: 'name', required: true, maxlength: 64, autocomplete: 'off' })),
        labelled('URL', h('input', {
          name: 'url', type: 'url', required: true, maxlength: 2048, autocomplete: 'off', spellcheck: 'false', placeholder: 'https://',
        }), { grow: true }),
        labelled('Trigger', h('select', { name: 'trigger' },
          Object.entries(TRIGGERS).map(([value, label]) => h('option', { value }, label)))),
      ],
      submitLabel: 'Create outgoing webhook',
      submit: (data) => this.#create(data, 'outgoing'),
    });
    const headingId = fieldId('webhooks-heading');
    this.element = h('section', { class: 'integration-section', 'aria-labelledby': headingId },
      h('h3', { id: headingId }, 'Webhooks'),
      this.error, this.list,
      this.incomingForm, this.incomingResult.element,
      this.outgoingForm, this.outgoingResult.element);
  }

  async reload() {
    showError(this.error, null);
    try {
      const { items } = await api.get(`/rooms/${this.roomId}/webhooks`);
      this.list.replaceChildren(...items.map((hook) => this.#render(hook)));
      noteIfEmpty(this.list, 'No webhooks yet.');
    } catch (failure) {
      showError(this.error, failure);
    }
  }

  async #create(data, kind) {
    const fields = { name: data.get('name').trim(), kind };
    if (kind === 'outgoing') {
      fields.url = data.get('url').trim();
      fields.trigger = data.get('trigger');
    }
    const hook = await api.post(`/rooms/${this.roomId}/webhooks`, fields);
    if (kind === 'incoming') {
      this.incomingForm.reset();
      this.curl.textContent = curlExample(hook.hook_url);
      this.incomingResult.show(hook.hook_url);
    } else {
      this.outgoingForm.reset();
      this.outgoingResult.show(hook.secret);
    }
    await this.reload();
  }

  #render(hook) {
    const nameId = fieldId('webhook-name');
    const facts = hook.kind === 'incoming'
      ? [`created ${formatDate(hook.created_at)}`]
      : [
        TRIGGERS[hook.trigger] ?? hook.trigger,
        hook.last_delivery_at ? `last delivery ${formatDate(hook.last_delivery_at)}` : 'no deliveries yet',
        pluralFailures(hook.failures),
      ];
    const item = h('li', { class: 'admin-item webhook-item' },
      h('div', { class: 'admin-item-text' },
        h('span', { id: nameId }, h('strong', {}, hook.name), h('span', { class: 'tag' }, hook.kind)),
        hook.kind === 'outgoing' ? h('span', {}, 'To ', h('code', { class: 'webhook-url' }, hook.url)) : null,
        h('span', { class: 'hint' }, facts.join(' · '))),
      h('div', { class: 'admin-item-actions' },
        h('button', {
          type: 'button',
          class: 'danger',
          'aria-describedby': nameId,
          onclick: () => this.#delete(hook, item),
        }, 'Delete')),
      // Only the room's managers are sent the secrets.
      hook.hook_url ? copyRow(`Hook URL of ${hook.name}`, hook.hook_url) : null,
      hook.kind === 'outgoing' && hook.secret ? copyRow(`Signing secret of ${hook.name}`, hook.secret) : null);
    return item;
  }

  async #delete(hook, item) {
    if (!(await confirmAction(`Delete the webhook “${hook.name}”? Its bot leaves the room${hook.kind === 'incoming' ? ' and its URL stops working' : ''}.`))) return;
    showError(this.error, null);
    try {
      await api.del(`/rooms/${this.roomId}/webhooks/${hook.id}`);
      removeItem(item, this.incomingForm.elements.namedItem('name'));
      noteIfEmpty(this.list, 'No webhooks yet.');
    } catch (failure) {
      showError(this.error, failure);
    }
  }
}
