-- Queries that do not grow with data they do not return (see sql/postgres/009_scale.sql).

ALTER TABLE rooms ADD COLUMN member_count INTEGER NOT NULL DEFAULT 0;
UPDATE rooms SET member_count = (SELECT count(*) FROM members WHERE members.room_id = rooms.id);

-- Search: the FTS index holds each message's room id as a second column, so a
-- search of one room is one FTS query that intersects the words' matches with
-- the room's messages, newest first (db.py `_search_sqlite`). The user's words
-- are matched in `body` only.
DROP TRIGGER messages_fts_insert;
DROP TRIGGER messages_fts_delete;
DROP TRIGGER messages_fts_update;
DROP TABLE messages_fts;
CREATE VIRTUAL TABLE messages_fts USING fts5 (
    body, room_id, content = 'messages', content_rowid = 'id', tokenize = 'unicode61'
);
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, body, room_id) VALUES (new.id, new.body, new.room_id);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body, room_id)
        VALUES ('delete', old.id, old.body, old.room_id);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF body ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body, room_id)
        VALUES ('delete', old.id, old.body, old.room_id);
    INSERT INTO messages_fts (rowid, body, room_id) VALUES (new.id, new.body, new.room_id);
END;
