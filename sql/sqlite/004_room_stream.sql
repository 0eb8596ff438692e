-- The room stream (API.md "Room stream"): see sql/postgres/003_room_stream.sql.
-- SQLite's single writer numbers events: the send statement reads last_pos + 1
-- and this trigger bumps it with last_seq.
ALTER TABLE rooms ADD COLUMN last_pos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN pos INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET pos = seq;
UPDATE rooms SET last_pos = last_seq;
CREATE UNIQUE INDEX messages_room_pos ON messages (room_id, pos);

-- The pos of the member's own `member.joined` (see sql/postgres/003_room_stream.sql).
ALTER TABLE members ADD COLUMN joined_pos INTEGER NOT NULL DEFAULT 0;
UPDATE members SET joined_pos = (SELECT last_pos FROM rooms WHERE rooms.id = members.room_id);

CREATE TABLE room_events (
    room_id     INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    pos         INTEGER NOT NULL,
    type        TEXT NOT NULL,
    message_id  INTEGER REFERENCES messages (id),
    user_id     INTEGER REFERENCES users (id),
    actor_id    INTEGER REFERENCES users (id) ON DELETE SET NULL,
    detail      TEXT,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (room_id, pos)
) WITHOUT ROWID;
-- Joins by user since a time: what a process polling while Redis is away
-- looks for, so that even a membership begun and ended between two polls
-- reaches the user's connections.
CREATE INDEX room_events_joins ON room_events (user_id, created_at) WHERE type = 'member.joined';

DROP TRIGGER messages_take_seq;
CREATE TRIGGER messages_take_seq AFTER INSERT ON messages BEGIN
    UPDATE rooms SET last_seq = new.seq, last_pos = new.pos WHERE id = new.room_id;
    UPDATE members SET last_read_seq = new.seq
        WHERE room_id = new.room_id AND user_id = new.sender_id;
END;
