// The Profile dialog's account sections: "Sessions" (where the user is
// signed in, "This device" marked, "Revoke" signing another one out at once)
// and "Password" (the current and a new one; the server then signs out every
// other session, and this one stays).
import * as api from './api.js';
import { confirmAction, fieldId, h, showError, showFormError } from './dom.js';
import { noteIfEmpty, removeItem } from './integrations.js';
import { formatDate } from './invites.js';

const PASSWORD_RULE = '8 to 1024 characters.';

// A short, readable name for a User-Agent: "Firefox on Windows".
export function describeAgent(userAgent) {
  if (!userAgent) return 'Unknown device';
  const browsers = [
    [/Edg\//, 'Edge'], [/OPR\/|Opera/, 'Opera'], [/Firefox\//, 'Firefox'],
    [/Chrom(e|ium)\//, 'Chrome'], [/Safari\//, 'Safari'],
    [/^curl\//, 'curl'], [/^python|aiohttp/i, 'Python'],
  ];
  const systems = [
    [/Android/, 'Android'], [/iPhone|iPad|iOS/, 'iOS'], [/Windows/, 'Windows'],
    [/Mac OS X|Macintosh/, 'macOS'], [/CrOS/, 'ChromeOS'], [/Linux/, 'Linux'],
  ];
  const browser = browsers.find(([pattern]) => pattern.test(userAgent))?.[1];
  const system = systems.find(([pattern]) => pattern.test(userAgent))?.[1];
  if (browser && system) return `${browser} on ${system}`;
  return browser ?? system ?? userAgent.split(/[\s/]/)[0];
}

function section(title, ...children) {
  const headingId = fieldId('section');
  return h('section', { class: 'account-section', 'aria-labelledby': headingId },
    h('h3', { id: headingId }, title), ...children);
}

class SessionSection {
  constructor() {
    // Focusable: it takes focus when the revoked item had no neighbour to take it.
    this.list = h('ul', { class: 'admin-list', 'aria-label': 'Your sessions', tabindex: -1 });
    this.error = h('p', { class: 'error', role: 'alert' });
    this.note = h('p', { class: 'hint', 'aria-live': 'polite' });
    this.element = section('Sessions',
      h('p', { class: 'hint' }, 'Where you are signed in. Revoking a session signs that browser or app out at once.'),
      this.error, this.list, this.note);
  }

  async reload() {
    showError(this.error, null);
    try {
      const { items } = await api.get('/auth/sessions');
      // This device first, then the most recently used.
      items.sort((a, b) => Number(b.current) - Number(a.current) || b.last_used_at.localeCompare(a.last_used_at));
      this.list.replaceChildren(...items.map((session) => this.#render(session)));
      noteIfEmpty(this.list, 'No other sessions.');
    } catch (failure) {
      showError(this.error, failure);
    }
  }

  #render(session) {
    const nameId = fieldId('session-name');
    const device = describeAgent(session.user_agent);
    const item = h('li', { class: `admin-item session-item${session.current ? ' current' : ''}` },
      h('div', { class: 'admin-item-text' },
        h('span', { id: nameId },
          h('strong', { title: session.user_agent || null }, device),
          session.current ? h('span', { class: 'tag this-device' }, 'This device') : null),
        h('span', { class: 'hint' },
          `signed in ${formatDate(session.created_at)} · last used ${formatDate(session.last_used_at)}`)),
      // This device signs out with "Log out" in the top bar.
      session.current ? null : h('div', { class: 'admin-item-actions' },
        h('button', {
          type: 'button',
          class: 'danger',
          'aria-describedby': nameId,
          onclick: () => this.#revoke(session, device, item),
        }, 'Revoke')));
    return item;
  }

  async #revoke(session, device, item) {
    if (!(await confirmAction(`Sign out ${device} (last used ${formatDate(session.last_used_at)})?`))) return;
    showError(this.error, null);
    try {
      await api.del(`/auth/sessions/${session.id}`);
      removeItem(item, this.list);
      this.note.textContent = `${device} was signed out.`;
    } catch (failure) {
      showError(this.error, failure);
    }
  }
}

// A 401 from POST /auth/password is a wrong current password, unless this
// session itself has ended meanwhile: an ordinary request tells (and, if it
// has, signs out as any other 401 does).
async function explainPasswordFailure(failure) {
  if (failure.status !== 401) return failure;
  try {
    await api.get('/users/me');
  } catch (sessionFailure) {
    return sessionFailure;
  }
  return { details: { fields: { old_password: 'wrong password' } } };
}

class PasswordSection {
  // onChanged() after a change (the other sessions are gone).
  constructor(onChanged) {
    const field = (label, name, autocomplete) => {
      const id = fieldId(name);
      return [
        h('label', { for: id }, label),
        h('input', { id, name, type: 'password', autocomplete, required: true, maxlength: 1024 }),
      ];
    };
    const ruleId = fieldId('password-rule');
    this.error = h('p', { class: 'error', role: 'alert', id: fieldId('password-error') });
    this.note = h('p', { class: 'hint', 'aria-live': 'polite' });
    const submit = h('button', { type: 'submit' }, 'Change password');
    this.form = h('form', { class: 'password-form' },
      field('Current password', 'old_password', 'current-password'),
      field('New password', 'new_password', 'new-password'),
      h('p', { id: ruleId, class: 'hint' }, `${PASSWORD_RULE} Your other sessions are signed out; this one stays.`),
      field('Repeat new password', 'repeat_password', 'new-password'),
      this.error,
      h('div', { class: 'buttons' }, submit),
      this.note);
    const elements = this.form.elements;
    elements.new_password.setAttribute('aria-describedby', ruleId);
    elements.new_password.minLength = 8;
    for (const input of this.form.querySelectorAll('input')) input.setAttribute('aria-errormessage', this.error.id);
    this.form.addEventListener('submit', async (event) => {
      event.preventDefault();
      this.note.textContent = '';
      showFormError(this.form, this.error, null);
      if (elements.new_password.value !== elements.repeat_password.value) {
        showFormError(this.form, this.error, { details: { fields: { repeat_password: 'not the same as the new password' } } });
        return;
      }
      submit.disabled = true;
      try {
        await api.changePassword(elements.old_password.value, elements.new_password.value);
        this.form.reset();
        this.note.textContent = 'Password changed. Your other sessions were signed out.';
        onChanged();
      } catch (failure) {
        showFormError(this.form, this.error, await explainPasswordFailure(failure));
      } finally {
        submit.disabled = false;
      }
    });
    this.element = section('Password', this.form);
  }
}

// Fills container with the Sessions and Password sections (nothing for a
// bot account, which has neither).
export function showAccount(container, me) {
  container.replaceChildren();
  container.hidden = me.is_bot;
  if (me.is_bot) return;
  const sessions = new SessionSection();
  const password = new PasswordSection(() => sessions.reload());
  container.append(sessions.element, password.element);
  sessions.reload();
}
