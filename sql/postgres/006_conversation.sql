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
