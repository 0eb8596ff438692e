-- Full-text indexing behind the send (chat_server/search_index.py): a send's
-- transaction no longer indexes its message (FTS5 flushed a segment per
-- commit: about five more pages written and synced per send). Messages with
-- ids up to `fts_indexed.upto` are in `messages_fts`; the rest are indexed in
-- batches, and before any search. The triggers keep indexed messages in step
-- and leave the others to the indexer, which reads their body as it is then.
CREATE TABLE fts_indexed (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    upto INTEGER NOT NULL
);
INSERT INTO fts_indexed (id, upto) VALUES (1, coalesce((SELECT max(id) FROM messages), 0));

DROP TRIGGER messages_fts_insert;
DROP TRIGGER messages_fts_delete;
DROP TRIGGER messages_fts_update;
-- An id at or below the mark is one reused after the newest message was erased.
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
WHEN new.id <= (SELECT upto FROM fts_indexed) BEGIN
    INSERT INTO messages_fts (rowid, body, room_id) VALUES (new.id, new.body, new.room_id);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.id <= (SELECT upto FROM fts_indexed) BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body, room_id)
        VALUES ('delete', old.id, old.body, old.room_id);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF body ON messages
WHEN old.id <= (SELECT upto FROM fts_indexed) BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body, room_id)
        VALUES ('delete', old.id, old.body, old.room_id);
    INSERT INTO messages_fts (rowid, body, room_id) VALUES (new.id, new.body, new.room_id);
END;
