-- Conversation (API.md "Conversation: replies, threads, reactions, pins, mentions").

-- reactions and pins
-- A reaction is one row per (message, user, emoji); counts are read by
-- (message_id, emoji), which is also the order reactors are listed in.
CREATE TABLE reactions (
    message_id  INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    emoji       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (message_id, user_id, emoji)
);
CREATE INDEX reactions_by_emoji ON reactions (message_id, emoji, user_id);
-- A pinned message carries the pos of its `message.pinned`: pins list newest
-- first by it, and a room's pins are counted by it.
ALTER TABLE messages ADD COLUMN pinned_pos INTEGER;
CREATE INDEX messages_pins ON messages (room_id, pinned_pos) WHERE pinned_pos IS NOT NULL;
-- reaction.added/removed: the emoji's count after the change (the emoji is `detail`).
ALTER TABLE room_events ADD COLUMN reaction_count INTEGER;

-- threads and mentions

-- See sql/postgres/006_conversation.sql.
ALTER TABLE messages ADD COLUMN thread_id INTEGER REFERENCES messages (id) ON DELETE SET NULL;
ALTER TABLE messages ADD COLUMN reply_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN last_reply_at INTEGER;
CREATE INDEX messages_thread ON messages (thread_id, seq) WHERE thread_id IS NOT NULL;

ALTER TABLE messages ADD COLUMN mentioned_ids TEXT;
ALTER TABLE messages ADD COLUMN mentions_room INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_room_mentions ON messages (room_id, seq) WHERE mentions_room;

CREATE TABLE mentions (
    message_id  INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    room_id     INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (message_id, user_id)
) WITHOUT ROWID;
CREATE INDEX mentions_unread ON mentions (user_id, room_id, seq);
CREATE INDEX mentions_newest ON mentions (user_id, message_id);
