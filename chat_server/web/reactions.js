// Reactions: the chips under a message (one toggle button per emoji, named
// "<emoji> <count>", pressed when the reaction is mine), the emoji picker the
// React button opens, and the arithmetic that keeps counts current from
// reaction.added/removed events (which carry the emoji's count after the
// change, so applying one twice, or after a REST copy, is harmless).
import { h } from './dom.js';

export const PICKER_EMOJI = [
  '👍', '👎', '😄', '🎉', '😕', '❤️', '🚀', '👀',
  '🙏', '😂', '😮', '😢', '🔥', '👏', '💯', '✅',
];
const PICKER_COLUMNS = 8;

// The message with one emoji's entry replaced (count 0 drops it).
export function withReaction(message, emoji, { count, me }) {
  const reactions = (message.reactions ?? []).map((reaction) => ({ ...reaction }));
  const index = reactions.findIndex((reaction) => reaction.emoji === emoji);
  if (count <= 0) {
    if (index >= 0) reactions.splice(index, 1);
  } else if (index >= 0) {
    reactions[index] = { emoji, count, me };
  } else {
    reactions.push({ emoji, count, me });
  }
  return { ...message, reactions };
}

// A reaction.added/removed event applied to a message: the count is the
// server's, `me` changes only when the event is the caller's own.
export function withReactionEvent(message, event, myId) {
  const known = (message.reactions ?? []).find((reaction) => reaction.emoji === event.emoji);
  let me = known?.me ?? false;
  if (event.user_id === myId) me = event.type === 'reaction.added';
  return withReaction(message, event.emoji, { count: event.count, me });
}

export function reactionOf(message, emoji) {
  return (message.reactions ?? []).find((reaction) => reaction.emoji === emoji) ?? { emoji, count: 0, me: false };
}

function chipLabel({ emoji, count }) {
  return `${emoji} ${count}`;
}

function paintChip(chip, reaction) {
  chip.setAttribute('aria-label', chipLabel(reaction));
  chip.setAttribute('aria-pressed', String(reaction.me));
  chip.title = reaction.me ? 'Remove your reaction' : `React with ${reaction.emoji}`;
  chip.lastElementChild.textContent = String(reaction.count);
}

// The row of chips; onToggle(emoji, chip) when one is pressed.
export function reactionRow(onToggle) {
  const row = h('div', { class: 'reactions', role: 'group', 'aria-label': 'Reactions', hidden: true });
  row.addEventListener('click', (event) => {
    const chip = event.target.closest('button[data-emoji]');
    if (chip) onToggle(chip.dataset.emoji, chip);
  });
  return row;
}

// Brings the row in line with message.reactions, updating chips in place so
// that a focused chip keeps focus while its count changes.
export function paintReactions(row, message) {
  const reactions = message.deleted ? [] : message.reactions ?? [];
  const chips = new Map([...row.children].map((chip) => [chip.dataset.emoji, chip]));
  let previous = null;
  for (const reaction of reactions) {
    let chip = chips.get(reaction.emoji);
    chips.delete(reaction.emoji);
    if (!chip) {
      chip = h('button', { type: 'button', class: 'reaction-chip', 'data-emoji': reaction.emoji },
        h('span', { class: 'emoji', 'aria-hidden': 'true' }, reaction.emoji),
        h('span', { class: 'count', 'aria-hidden': 'true' }));
    }
    paintChip(chip, reaction);
    const wanted = previous ? previous.nextElementSibling : row.firstElementChild;
    if (chip !== wanted) row.insertBefore(chip, wanted);
    previous = chip;
  }
  for (const chip of chips.values()) {
    // A removed chip that had focus hands it to its neighbour, not to <body>.
    if (chip === document.activeElement) {
      (chip.nextElementSibling ?? chip.previousElementSibling ?? row.closest('article')?.querySelector('.react-button'))?.focus();
    }
    chip.remove();
  }
  row.hidden = reactions.length === 0;
}

// One picker for the page: a grid of emoji buttons. Arrow keys, Home and End
// move (one button is in the tab order at a time), Enter or a click picks,
// Escape closes; focus goes back to the button that opened it.
export class EmojiPicker {
  constructor() {
    this.element = h('div', { class: 'emoji-picker', role: 'dialog', 'aria-label': 'Pick a reaction', hidden: true });
    this.buttons = PICKER_EMOJI.map((emoji) => h('button', {
      type: 'button', class: 'emoji-choice', tabindex: '-1', 'data-emoji': emoji,
    }, emoji));
    this.element.append(...this.buttons);
    document.body.append(this.element);
    this.anchor = null;
    this.onPick = null;
    this.element.addEventListener('click', (event) => {
      const choice = event.target.closest('button[data-emoji]');
      if (choice) this.#pick(choice.dataset.emoji);
    });
    this.element.addEventListener('keydown', (event) => this.#onKey(event));
    this.element.addEventListener('focusout', (event) => {
      if (!this.element.contains(event.relatedTarget)) this.close({ restoreFocus: false });
    });
    this.outside = (event) => {
      if (!this.element.contains(event.target) && event.target !== this.anchor) this.close({ restoreFocus: false });
    };
  }

  get isOpen() {
    return !this.element.hidden;
  }

  // Opens under (or above) anchor; onPick(emoji) when one is chosen.
  open(anchor, onPick) {
    if (this.isOpen) this.close({ restoreFocus: false });
    this.anchor = anchor;
    this.onPick = onPick;
    anchor.setAttribute('aria-expanded', 'true');
    this.element.hidden = false;
    this.#place();
    document.addEventListener('pointerdown', this.outside, true);
    this.#focus(0);
  }

  close({ restoreFocus = true } = {}) {
    if (!this.isOpen) return;
    this.element.hidden = true;
    document.removeEventListener('pointerdown', this.outside, true);
    const anchor = this.anchor;
    this.anchor = null;
    this.onPick = null;
    anchor?.setAttribute('aria-expanded', 'false');
    if (restoreFocus && anchor?.isConnected) anchor.focus();
  }

  #pick(emoji) {
    const onPick = this.onPick;
    this.close();
    onPick?.(emoji);
  }

  #focus(index) {
    const count = this.buttons.length;
    const target = this.buttons[(index + count) % count];
    for (const button of this.buttons) button.tabIndex = button === target ? 0 : -1;
    target.focus();
  }

  #onKey(event) {
    const index = this.buttons.indexOf(document.activeElement);
    const moves = {
      ArrowRight: 1, ArrowLeft: -1, ArrowDown: PICKER_COLUMNS, ArrowUp: -PICKER_COLUMNS,
    };
    if (event.key in moves) {
      this.#focus(index + moves[event.key]);
    } else if (event.key === 'Home') {
      this.#focus(0);
    } else if (event.key === 'End') {
      this.#focus(this.buttons.length - 1);
    } else if (event.key === 'Escape') {
      this.close();
    } else if (event.key === 'Tab') {
      this.close(); // focus returns to the React button; Tab goes on from there
    } else {
      return;
    }
    event.preventDefault();
    event.stopPropagation();
  }

  // Fixed position next to the anchor, kept inside the viewport.
  #place() {
    const box = this.anchor.getBoundingClientRect();
    const { offsetWidth: width, offsetHeight: height } = this.element;
    const margin = 8;
    const left = Math.min(Math.max(margin, box.right - width), window.innerWidth - width - margin);
    const below = box.bottom + 4;
    const top = below + height + margin <= window.innerHeight ? below : Math.max(margin, box.top - height - 4);
    this.element.style.left = `${left}px`;
    this.element.style.top = `${top}px`;
  }
}
