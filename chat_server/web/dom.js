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
