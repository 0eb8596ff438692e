-- Conversation (API.md "Conversation: replies, threads, reactions, pins, mentions").

-- reactions and pins
-- A reaction is one row per (message, user, emoji); counts are read by
-- (message_id, emoji), which is also the order reactors are listed in.
CREATE TABLE reactions (
    message_id  BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    emoji       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (message_id, user_id, emoji)
);
CREATE INDEX reactions_by_emoji ON reactions (message_id, emoji, user_id);
-- A pinned message carries the pos of its `message.pinned`: pins list newest
-- first by it, and a room's pins are counted by it.
ALTER TABLE messages ADD COLUMN pinned_pos BIGINT;
CREATE INDEX messages_pins ON messages (room_id, pinned_pos) WHERE pinned_pos IS NOT NULL;
-- reaction.added/removed: the emoji's count after the change (the emoji is `detail`).
ALTER TABLE room_events ADD COLUMN reaction_count BIGINT;

-- threads and mentions

-- A reply's thread is its thread's first message (a reply to a reply joins the
-- same thread); the first message keeps the thread's counters, bumped in each
-- reply's transaction, so reading a summary costs nothing. Deleted replies stay
-- in the thread as tombstones, and in its count.
ALTER TABLE messages ADD COLUMN thread_id BIGINT REFERENCES messages (id) ON DELETE SET NULL;
ALTER TABLE messages ADD COLUMN reply_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN last_reply_at BIGINT;
CREATE INDEX messages_thread ON messages (thread_id, seq) WHERE thread_id IS NOT NULL;

-- Mentions: the members a message names (`mentions`, for "mentions of me" and
-- unread counts by index) and `@room` (a flag on the message: counted per room
-- through the partial index). `mentioned_ids` is the row's own copy of the
-- names' user ids ("1,5,9"; NULL for none), so that reading a message needs no
-- join. A deleted message has neither.
ALTER TABLE messages ADD COLUMN mentioned_ids TEXT;
ALTER TABLE messages ADD COLUMN mentions_room BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX messages_room_mentions ON messages (room_id, seq) WHERE mentions_room;

CREATE TABLE mentions (
    message_id  BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    room_id     BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    PRIMARY KEY (message_id, user_id)
);
CREATE INDEX mentions_unread ON mentions (user_id, room_id, seq);
CREATE INDEX mentions_newest ON mentions (user_id, message_id);
