-- The room stream (API.md "Room stream"): every change to a room is an event
-- numbered by the room's `pos`, committed with the change under the room's row
-- lock. A message's own row carries the pos of its `message.new` (the hot path
-- writes one row, not two); every other event is a row of room_events. Events
-- are rebuilt from the current rows when read, so a deleted body is never sent
-- again.
ALTER TABLE rooms ADD COLUMN last_pos BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN pos BIGINT;
UPDATE messages SET pos = seq;
UPDATE rooms SET last_pos = last_seq;
ALTER TABLE messages ALTER COLUMN pos SET NOT NULL;
CREATE UNIQUE INDEX messages_room_pos ON messages (room_id, pos);

-- The pos of the member's own `member.joined`: where a connection that is
-- delivering the member's earlier removal goes on if they came back (members
-- from before the stream count from its present end).
ALTER TABLE members ADD COLUMN joined_pos BIGINT NOT NULL DEFAULT 0;
UPDATE members SET joined_pos = rooms.last_pos FROM rooms WHERE rooms.id = members.room_id;

CREATE TABLE room_events (
    room_id     BIGINT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    pos         BIGINT NOT NULL,
    type        TEXT NOT NULL,
    message_id  BIGINT REFERENCES messages (id),
    user_id     BIGINT REFERENCES users (id),
    actor_id    BIGINT REFERENCES users (id) ON DELETE SET NULL,
    detail      TEXT,           -- the role (member.joined, member.role) or reason (member.left)
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (room_id, pos)
);
-- Joins by user since a time: what a process polling while Redis is away
-- looks for, so that even a membership begun and ended between two polls
-- reaches the user's connections.
CREATE INDEX room_events_joins ON room_events (user_id, created_at) WHERE type = 'member.joined';
