// The sign-in screen's modes: the server's name and registration policy
// (GET /server), the first admin's setup link (#setup=<token>) and invite
// links (#invite=<code>, GET /invites/{code}). app.js owns the form's submit;
// this module says what a sign-up adds to it and where the user lands.
import * as api from './api.js';
import { $, h } from './dom.js';

// Before GET /server answers (or if it fails), behave as an open server.
let server = { name: 'Chat', registration: 'open', setup_required: false };
// The link the page was opened with: null, {setup: token} or
// {invite: code, info: {valid, server_name, rooms}}.
let link = null;

export function serverName() {
  return server.name;
}

// The setup token or invite code in the address, if any.
function linkInAddress() {
  const match = /^#(setup|invite)=([^&]+)$/.exec(location.hash);
  return match ? { [match[1]]: decodeURIComponent(match[2]) } : null;
}

export function clearLink() {
  link = null;
  if (linkInAddress()) history.replaceState(null, '', location.pathname + location.search);
}

// Reads the server's settings and the link in the address; call before the
// sign-in screen is shown (and again when the address's hash changes).
export async function loadEntry() {
  try {
    server = await api.get('/server');
  } catch {
    // An older server or a network failure: keep the defaults.
  }
  document.title = server.name;
  $('.topbar h1').textContent = server.name;
  link = linkInAddress();
  if (link?.invite) {
    try {
      link.info = await api.get(`/invites/${encodeURIComponent(link.invite)}`);
    } catch (error) {
      link.info = { valid: false, server_name: server.name, rooms: [], error };
    }
  }
}

// Whether the page was opened with a setup or invite link.
export function hasLink() {
  return link !== null;
}

// Whether the form only signs up (a setup or valid invite link): then Enter,
// which clicks the form's first (hidden) button, signs up too.
export function signUpOnly() {
  return Boolean((link?.setup && server.setup_required) || link?.info?.valid);
}

// Fields a sign-up sends besides username, password and display name.
export function signUpExtras() {
  if (link?.setup && server.setup_required) return { invite: link.setup };
  if (link?.invite && link.info?.valid) return { invite: link.invite };
  return {};
}

// The room to open after signing up through an invite, or null.
export function landingRoom() {
  return link?.invite && link.info?.valid ? link.info.rooms[0]?.id ?? null : null;
}

function roomList(rooms) {
  return h('ul', { class: 'invite-rooms', 'aria-label': 'Rooms you are invited to' },
    rooms.map((room) => h('li', {}, h('span', { 'aria-hidden': 'true', class: 'room-icon' }, '#'), room.name)));
}

function backToSignIn(onChange) {
  return h('button', {
    type: 'button',
    class: 'link-button',
    onclick: () => {
      clearLink();
      onChange();
    },
  }, 'I already have an account');
}

// Lays the sign-in form out for the current mode. onChange() re-renders it
// (after "Log in instead" drops the link).
export function paintSignIn(onChange) {
  const form = $('#signin-form');
  const title = $('#signin-title');
  const intro = $('#signin-intro');
  const footer = $('#signin-footer');
  const login = $('button[value=login]', form);
  const signup = $('button[value=signup]', form);
  const displayName = [$('label[for=signin-display-name]', form), $('#signin-display-name'), $('#signin-display-name-hint')];
  intro.replaceChildren();
  footer.replaceChildren();
  signup.textContent = 'Sign up';
  const setSignUp = (visible) => {
    signup.hidden = !visible;
    for (const element of displayName) element.hidden = !visible;
  };
  const setMode = (signUpOnly) => {
    login.hidden = signUpOnly;
    signup.classList.toggle('primary', signUpOnly);
    $('#signin-password').autocomplete = signUpOnly ? 'new-password' : 'current-password';
  };

  if (link?.setup && !server.setup_required) {
    title.textContent = `Welcome to ${server.name}`;
    intro.append(h('p', { class: 'error', role: 'alert' }, 'This setup link was used already: the server has an admin. Log in instead.'));
    setSignUp(server.registration === 'open');
    setMode(false);
    return;
  }
  if (link?.setup) {
    title.textContent = 'Create admin account';
    intro.append(h('p', {}, `This sets up ${server.name}. The account you create now is the server's first administrator.`));
    footer.append(backToSignIn(onChange));
    setSignUp(true);
    setMode(true);
    signup.textContent = 'Create admin account';
    return;
  }
  if (link?.invite) {
    const info = link.info;
    title.textContent = `Join ${info.server_name || server.name}`;
    if (info.valid) {
      intro.append(info.rooms.length
        ? h('div', {}, h('p', {}, 'You are invited to:'), roomList(info.rooms))
        : h('p', {}, 'You are invited to create an account.'));
      footer.append(backToSignIn(onChange));
      setSignUp(true);
      setMode(true);
      return;
    }
    intro.append(
      h('p', { class: 'error', role: 'alert' }, info.error && api.isTransient(info.error)
        ? 'This invite link could not be checked right now. Reload the page to try again.'
        : 'This invite link is not valid: it may have expired, been used up or been revoked. Ask for a new one.'));
    setSignUp(server.registration === 'open');
    setMode(false);
    return;
  }

  title.textContent = `Welcome to ${server.name}`;
  setMode(false);
  const registration = server.registration;
  setSignUp(registration === 'open');
  if (registration === 'invite') {
    intro.append(h('p', { class: 'hint' }, 'New accounts need an invite: open the invite link you were given to sign up.'));
  } else if (registration === 'closed') {
    intro.append(h('p', { class: 'hint' }, 'Sign-up is closed. Ask an administrator for an account.'));
  }
  if (server.setup_required) {
    intro.append(h('p', { class: 'hint' }, 'This server has no administrator yet: open the setup link printed in its start-up log.'));
  }
}
