// The quick switcher: Ctrl+K (Cmd+K on a Mac) opens a dialog `Switch room`
// whose box filters the rooms and direct messages by name; the arrow keys
// choose, Enter opens, Escape closes (focus goes back where it was).
import { $, h, openDialog } from './dom.js';

const MAX_SHOWN = 50;

// How well `name` matches `query` (both lower case): 0 the name starts with
// it, 1 a word does, 2 it appears inside, 3 its letters appear in order;
// null for no match.
function matchRank(name, query) {
  if (!query) return 0;
  if (name.startsWith(query)) return 0;
  if (name.split(/[\s_\-.]+/).some((word) => word.startsWith(query))) return 1;
  if (name.includes(query)) return 2;
  let at = 0;
  for (const char of query) {
    at = name.indexOf(char, at) + 1;
    if (at === 0) return null;
  }
  return 3;
}

// getSession() → the signed-in Session (list: the RoomList, openRoom), or null.
export function setupQuickSwitcher(getSession) {
  if (/Mac|iPhone|iPad/.test(navigator.platform)) $('.keyboard-hint').textContent = ' Cmd+K switches rooms.';
  const dialog = $('#switcher-dialog');
  const input = $('#switcher-input');
  const list = $('#switcher-list');
  const empty = $('#switcher-empty');
  let choices = []; // room ids, in the order shown
  let active = 0;

  function paint() {
    const session = getSession();
    const query = input.value.trim().toLowerCase();
    const rooms = session.list;
    choices = rooms.ids()
      .map((id) => {
        const room = rooms.get(id);
        const title = rooms.title(room);
        return { id, room, title, rank: matchRank(title.toLowerCase(), query) };
      })
      .filter((entry) => entry.rank !== null)
      .sort((a, b) => a.rank - b.rank
        || (b.room.last_seq > b.room.my_last_read_seq) - (a.room.last_seq > a.room.my_last_read_seq)
        || a.title.localeCompare(b.title, undefined, { sensitivity: 'base' }))
      .slice(0, MAX_SHOWN);
    active = Math.min(active, Math.max(0, choices.length - 1));
    list.replaceChildren(...choices.map((entry, index) => h('li', {
      role: 'option',
      id: `switcher-option-${entry.id}`,
      class: 'switcher-option',
      'aria-selected': String(index === active),
      onclick: () => choose(index),
    },
    h('span', { class: 'room-icon', 'aria-hidden': 'true' }, entry.room.kind === 'dm' ? '@' : '#'),
    h('span', { class: 'room-name' }, entry.title),
    h('span', { class: 'hint' }, entry.room.kind === 'dm' ? 'Direct message' : entry.room.kind === 'private' ? 'Private room' : 'Room'))));
    empty.hidden = choices.length > 0;
    const current = choices[active];
    if (current) {
      input.setAttribute('aria-activedescendant', `switcher-option-${current.id}`);
      $(`#switcher-option-${current.id}`).scrollIntoView({ block: 'nearest' });
    } else {
      input.removeAttribute('aria-activedescendant');
    }
  }

  function choose(index) {
    const entry = choices[index];
    if (!entry) return;
    dialog.close();
    getSession()?.openRoom(entry.id);
  }

  input.addEventListener('input', () => {
    active = 0;
    paint();
  });
  input.addEventListener('keydown', (event) => {
    const moves = { ArrowDown: 1, ArrowUp: -1 };
    if (event.key in moves && choices.length) {
      event.preventDefault();
      active = (active + moves[event.key] + choices.length) % choices.length;
      paint();
    } else if (event.key === 'Enter' && !event.isComposing) {
      event.preventDefault();
      choose(active);
    }
  });

  document.addEventListener('keydown', (event) => {
    if (!(event.ctrlKey || event.metaKey) || event.altKey || event.key?.toLowerCase() !== 'k') return;
    if (!getSession()) return;
    event.preventDefault();
    if (dialog.open) {
      dialog.close();
      return;
    }
    // Not on top of another dialog: Escape closes that one first.
    if (document.querySelector('dialog[open]:modal')) return; // not the search results (non-modal)
    input.value = '';
    active = 0;
    paint();
    openDialog(dialog);
  });
}
