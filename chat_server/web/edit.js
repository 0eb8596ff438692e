// Editing a message in place, in the room log and in the thread panel: the
// body becomes a text box `Edit message`, saved with Enter or `Save`,
// abandoned with Escape or `Cancel`.
import * as api from './api.js';
import { $, h, showError } from './dom.js';

// Swaps the body of a rendered message for the edit form. onSaved(message)
// gets the server's copy; onCancel() should re-render the message as it was.
export function startEdit(article, message, { onSaved, onCancel }) {
  const field = h('textarea', { class: 'edit-field', 'aria-label': 'Edit message', rows: 3 });
  field.value = message.body;
  const error = h('p', { class: 'error', role: 'alert' });
  const form = h('form', { class: 'edit-form' }, field, error,
    h('div', { class: 'buttons' },
      h('button', { type: 'button', onclick: onCancel }, 'Cancel'),
      h('button', { type: 'submit' }, 'Save')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = field.value.trim();
    if (body === message.body) {
      onCancel();
      return;
    }
    if (!body && !message.attachments.length) {
      showError(error, new Error('A message cannot be empty; use Delete to remove it.'));
      return;
    }
    try {
      onSaved(await api.patch(`/rooms/${message.room_id}/messages/${message.id}`, { body }));
    } catch (failure) {
      showError(error, failure);
    }
  });
  field.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    } else if (event.key === 'Escape') {
      event.preventDefault(); // the thread panel closes on an Escape nobody took
      onCancel();
    }
  });
  $('.actions', article).hidden = true;
  const body = $('.body', article);
  if (body) body.replaceWith(form);
  else $('.message-header', article).after(form);
  field.focus();
}
