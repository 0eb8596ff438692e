// The "New room", "Browse rooms" and "Direct message" dialogs.
import * as api from './api.js';
import { $, h, openDialog, showError, submitDialogForm } from './dom.js';

// getContext() → the signed-in Session (addRoom, openRoom).
export function setupRoomDialogs(getContext) {
  setupNewRoom(getContext);
  setupBrowse(getContext);
  setupDirectMessage(getContext);
  for (const button of document.querySelectorAll('dialog [data-close]')) {
    button.addEventListener('click', () => button.closest('dialog').close());
  }
}

// Adds the room to the list and opens it (which focuses the message box).
function enter(context, room) {
  context.addRoom(room);
  context.openRoom(room.id);
}

function setupNewRoom(getContext) {
  const dialog = $('#new-room-dialog');
  $('#new-room-button').addEventListener('click', () => openDialog(dialog));
  submitDialogForm($('form', dialog), async (data) => {
    const room = await api.post('/rooms', {
      name: data.get('name').trim(),
      kind: data.get('private') ? 'private' : 'public',
    });
    return () => enter(getContext(), room);
  });
}

function setupBrowse(getContext) {
  const dialog = $('#browse-dialog');
  const list = $('#public-rooms', dialog);
  const more = $('#more-rooms', dialog);
  const error = $('.error', dialog);
  let cursor = null;

  async function loadPage() {
    showError(error, null);
    try {
      const page = await api.get('/rooms/public', { limit: 100, cursor });
      cursor = page.next_cursor;
      more.hidden = !cursor;
      list.append(...page.items.map(renderPublicRoom));
      if (!list.children.length) list.append(h('li', {}, 'There are no public rooms yet.'));
    } catch (failure) {
      showError(error, failure);
    }
  }

  function renderPublicRoom(room) {
    const nameId = `public-room-${room.id}`;
    const members = `${room.member_count} member${room.member_count === 1 ? '' : 's'}`;
    const joined = room.my_role !== null;
    const button = h('button', { type: 'button', 'aria-describedby': nameId }, joined ? 'Open' : 'Join');
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        const context = getContext();
        const joinedRoom = joined ? room : await api.post(`/rooms/${room.id}/join`);
        dialog.close();
        enter(context, joinedRoom);
      } catch (failure) {
        showError(error, failure);
        button.disabled = false;
      }
    });
    return h('li', {},
      h('span', { class: 'public-room-text' },
        h('span', { id: nameId, class: 'room-name' }, room.name),
        h('span', { class: 'hint' }, room.topic ? `${members} · ${room.topic}` : members)),
      button);
  }

  $('#browse-button').addEventListener('click', () => {
    list.replaceChildren();
    cursor = null;
    more.hidden = true;
    openDialog(dialog);
    loadPage();
  });
  more.addEventListener('click', loadPage);
}

function setupDirectMessage(getContext) {
  const dialog = $('#dm-dialog');
  $('#dm-button').addEventListener('click', () => openDialog(dialog));
  submitDialogForm($('form', dialog), async (data) => {
    const username = data.get('username').trim().toLowerCase();
    // The search matches prefixes of usernames and display names; take the
    // exact username only.
    const { items } = await api.get('/users', { q: username, limit: 100 });
    const user = items.find((candidate) => candidate.username === username);
    if (!user) throw new Error(`There is no user named “${username}”.`);
    const room = await api.post('/dm', { user_id: user.id });
    return () => enter(getContext(), room);
  });
}
