// Small DOM helpers. Text children become text nodes, so user content is
// never parsed as HTML.

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? '' : value);
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

// Puts an error's text (with the fields the server rejected) into element;
// a null error clears it.
export function showError(element, error) {
  if (!error) {
    element.textContent = '';
    return;
  }
  const fields = Object.entries(error.details?.fields ?? {}).map(([name, reason]) => `${name}: ${reason}`);
  element.textContent = [error.message || String(error), ...fields].join('\n');
}

// Runs a dialog form's async action, showing failures inside the dialog.
// The action may return a function to run once the dialog has closed (and
// handed focus back to its opener), e.g. to move focus somewhere else.
export function submitDialogForm(form, action) {
  const error = $('.error', form);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const submit = $('[type=submit]', form);
    submit.disabled = true;
    showError(error, null);
    try {
      const then = await action(new FormData(form));
      form.reset();
      form.closest('dialog').close();
      then?.();
    } catch (failure) {
      showError(error, failure);
    } finally {
      submit.disabled = false;
    }
  });
}

// Opens a modal <dialog>; resolves with the returnValue when it closes.
export function openDialog(dialog) {
  dialog.returnValue = '';
  for (const error of dialog.querySelectorAll('.error')) error.textContent = '';
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue), { once: true });
  });
}

// Asks a yes/no question in the shared confirmation dialog.
export async function confirmAction(question) {
  const dialog = $('#confirm-dialog');
  $('#confirm-text', dialog).textContent = question;
  return (await openDialog(dialog)) === 'confirm';
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// 0.5 s doubling to 10 s, each delay randomised to 50–100 % so that many
// clients cut off together do not all come back at the same instant.
export function backoff(attempt) {
  const delay = Math.min(10_000, 500 * 2 ** attempt);
  return delay * (0.5 + Math.random() / 2);
}

// Random id for idempotent sends. crypto.randomUUID exists only in secure
// contexts; getRandomValues works over plain http on a LAN as well.
export function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
}

// A size for people: 512 B, 40 KB, 25.0 MB.
export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

let fieldCount = 0;
// A fresh element id starting with `name`, for labels and descriptions.
export function fieldId(name) {
  fieldCount += 1;
  return `${name}-${fieldCount}`;
}

// Puts a field's value on the clipboard and says "Copied." in note (an
// aria-live element); falls back to selecting the field and the old copy
// command where the Clipboard API is missing or refused (plain http).
export async function copyField(input, note) {
  try {
    await navigator.clipboard.writeText(input.value);
    note.textContent = 'Copied.';
  } catch {
    input.focus();
    input.select();
    note.textContent = document.execCommand('copy') ? 'Copied.' : 'Select the text and copy it.';
  }
}

// Shows a form's failure in element (a role=alert): each field the server
// named (details.fields) as "<its label>: <reason>", else the message. The
// named fields are marked aria-invalid and the first one takes focus; a null
// failure clears it all.
export function showFormError(form, element, failure) {
  for (const field of form.querySelectorAll('[aria-invalid]')) field.removeAttribute('aria-invalid');
  if (!failure) {
    element.textContent = '';
    return;
  }
  const lines = [];
  let first = null;
  for (const [name, reason] of Object.entries(failure.details?.fields ?? {})) {
    const field = form.elements.namedItem(name);
    lines.push(`${field?.labels?.[0]?.textContent ?? name}: ${reason}`);
    if (field) {
      field.setAttribute('aria-invalid', 'true');
      first ??= field;
    }
  }
  element.textContent = lines.length ? lines.join('\n') : failure.message || String(failure);
  first?.focus();
}
