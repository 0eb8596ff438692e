// Reporting someone's message to the server's admins
// (POST /rooms/{id}/messages/{message_id}/report; admins see it under Admin → Reports).
import * as api from './api.js';
import { $, openDialog, submitDialogForm } from './dom.js';

let reported = null; // the message the open dialog reports

export function setupReportDialog() {
  const dialog = $('#report-dialog');
  submitDialogForm($('form', dialog), async (data) => {
    const message = reported;
    await api.post(`/rooms/${message.room_id}/messages/${message.id}/report`, {
      reason: data.get('reason'),
      comment: data.get('comment').trim(),
    });
    return () => { $('#report-note').textContent = 'Thank you: the admins will look at it.'; };
  });
}

// Opens the dialog for `message` (its body quoted, so the reporter sees what they report).
export function reportMessage(message) {
  reported = message;
  $('#report-quote').textContent = message.body || '(an attachment)';
  $('#report-note').textContent = '';
  openDialog($('#report-dialog'));
}
