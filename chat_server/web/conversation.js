// Replies, threads, reactions, pins and mentions in the open room: owns the
// thread panel, the pinned list, the emoji picker and the `@` autocomplete,
// and applies the room events that change them. The Session (app.js) hands
// it the events; message rendering goes through `parts` (parts.js).
import * as api from './api.js';
import { $, showError } from './dom.js';
import { MentionAutocomplete, forgetMembers } from './mentions.js';
import { MessageParts } from './parts.js';
import { PinnedPanel } from './pins.js';
import { EmojiPicker, reactionOf, withReaction, withReactionEvent } from './reactions.js';
import { ThreadView } from './thread.js';

export class Conversation {
  // rooms: the RoomList (roles, for who may pin); getView() → the
  // MessageView of the open room; onSent(message) for our own replies.
  constructor({ me, rooms, getView, onSent }) {
    this.me = me;
    this.rooms = rooms;
    this.getView = getView;
    // Per message and emoji, how many reaction events have been applied: a
    // REST answer older than an event must not overwrite its count.
    this.reactionEvents = new Map();
    this.parts = new MessageParts({
      me,
      canPin: (message) => this.#canPin(message.room_id),
      handlers: {
        react: (message, button) => this.picker.open(button, (emoji) => this.#react(message, emoji, true)),
        toggleReaction: (message, emoji) => this.#react(message, emoji, !reactionOf(message, emoji).me),
        openThread: (message, opener) => this.openThread(message, opener),
        pin: (message, pinned) => this.#pin(message, pinned),
      },
    });
    this.picker = new EmojiPicker();
    this.thread = new ThreadView({ me, parts: this.parts, onSent });
    this.pins = new PinnedPanel({ onChoose: (message) => this.reveal(message) });
    const openRoom = () => this.getView()?.roomId ?? null;
    this.completers = [
      new MentionAutocomplete($('#message-input'), { me, getRoomId: openRoom }),
      new MentionAutocomplete($('#thread-input'), { me, getRoomId: () => this.thread.roomId }),
    ];
  }

  stop() {
    this.picker.close({ restoreFocus: false });
    this.picker.element.remove();
    this.thread.destroy();
    this.pins.destroy();
    for (const completer of this.completers) completer.close();
  }

  setMe(me) {
    this.me = me;
    this.parts.setMe(me);
  }

  roomOpened(roomId) {
    this.picker.close({ restoreFocus: false });
    this.pins.setRoom(roomId);
    if (this.thread.roomId !== roomId) this.thread.close({ restoreFocus: false });
  }

  roomClosed(roomId) {
    if (this.thread.roomId === roomId) this.thread.close({ restoreFocus: false });
    if (this.pins.roomId === roomId) this.pins.setRoom(null);
  }

  // A new message, from any source: the open thread may show it.
  onMessage(message) {
    this.thread.accept(message);
  }

  // An edited or deleted message.
  onUpdate(message) {
    this.thread.update(message);
  }

  // Room events of this module's concern; returns whether it took the frame.
  onEvent(frame) {
    switch (frame.type) {
      case 'reaction.added':
      case 'reaction.removed': {
        const key = `${frame.message_id} ${frame.emoji}`;
        this.reactionEvents.set(key, (this.reactionEvents.get(key) ?? 0) + 1);
        this.#patch(frame.room_id, frame.seq, (message) => withReactionEvent(message, frame, this.me.id));
        return true;
      }
      case 'message.pinned':
      case 'message.unpinned':
        this.getView()?.update(frame.message);
        this.thread.update(frame.message);
        this.pins.changed(frame.room_id);
        return true;
      case 'member.role': {
        // Our own new role decides whether Pin shows on messages rendered from now on.
        const room = this.rooms.get(frame.room_id);
        if (room && frame.user.id === this.me.id) this.rooms.upsert({ ...room, my_role: frame.role });
      }
      // falls through
      case 'member.joined':
      case 'member.left':
        forgetMembers(frame.room_id);
        return false; // the Session handles them too
      default:
        return false;
    }
  }

  openThread(message, opener) {
    const rootId = message.thread_id ?? message.id;
    const root = message.thread_id ? this.getView()?.findById(rootId) : message;
    this.picker.close({ restoreFocus: false });
    this.thread.open(message, root, opener);
  }

  // Shows a message chosen from the pinned list: in the log, or in its
  // thread when it is a reply.
  async reveal(message) {
    if (message.thread_id) {
      this.openThread(message, $('#pinned-button'));
      return;
    }
    const view = this.getView();
    if (!view || !(await view.reveal(message.seq))) $('#pinned-button').focus();
  }

  #canPin(roomId) {
    const room = this.rooms.get(roomId);
    return Boolean(room && (room.kind === 'dm' || room.my_role === 'owner' || room.my_role === 'admin'));
  }

  #patch(roomId, seq, change) {
    this.getView()?.patch(roomId, seq, change);
    this.thread.patch(roomId, seq, change);
  }

  #showError(error) {
    const view = this.getView();
    if (this.thread.isOpen) showError($('.error', this.thread.form), error);
    else view?.composer.showError(error);
  }

  // Adds (on) or removes our reaction. The chip changes at once; the room
  // event that follows sets the count the server has.
  async #react(message, emoji, on) {
    const key = `${message.id} ${emoji}`;
    const seen = this.reactionEvents.get(key) ?? 0;
    const before = reactionOf(message, emoji);
    if (before.me === on) return;
    const guess = { count: before.count + (on ? 1 : -1), me: on };
    const apply = (reaction) => {
      if ((this.reactionEvents.get(key) ?? 0) === seen) {
        this.#patch(message.room_id, message.seq, (current) => withReaction(current, emoji, reaction));
      }
    };
    apply(guess);
    const path = `/rooms/${message.room_id}/messages/${message.id}/reactions/${encodeURIComponent(emoji)}`;
    try {
      const result = on ? await api.put(path) : await api.del(path);
      apply(result);
    } catch (error) {
      apply(before);
      this.#showError(error);
    }
  }

  async #pin(message, pinned) {
    try {
      if (pinned) await api.post(`/rooms/${message.room_id}/pins`, { message_id: message.id });
      else await api.del(`/rooms/${message.room_id}/pins/${message.id}`);
      // Only the flag: the copy in hand may be older than its reactions.
      this.#patch(message.room_id, message.seq, (current) => ({ ...current, pinned }));
    } catch (error) {
      this.#showError(error);
    }
  }
}
