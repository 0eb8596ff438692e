-- Conversation (API.md "Conversation: replies, threads, reactions, pins, mentions").

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
