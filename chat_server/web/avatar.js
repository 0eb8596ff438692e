// A message's avatar: the user's picture when they have one (media.js),
// else their initials in a circle whose color follows from the user id.
// Decorative (the sender's name is beside it), so hidden from assistive
// technology.
import { h } from './dom.js';
import { avatarImage } from './media.js';

const COLORS = 8; // style.css: .avatar-color-0 … .avatar-color-7

// "Ada Lovelace" → "AL", "grace" → "G", "ada_l" → "AL".
export function initials(name) {
  const words = name.split(/[\s._-]+/u).filter(Boolean);
  const chosen = words.length > 1 ? [words[0], words.at(-1)] : words;
  return chosen.map((word) => [...word][0]).join('').toUpperCase() || '?';
}

export function avatarBadge(userId, user, name) {
  return h('span', { class: 'avatar-slot', 'aria-hidden': 'true' },
    avatarImage(userId, user),
    h('span', { class: `initials avatar-color-${userId % COLORS}`, 'data-user-initials': userId }, initials(name)));
}
