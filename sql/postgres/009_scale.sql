-- Queries that do not grow with data they do not return.

-- A room's member count, kept by the statement that numbers each membership
-- change (db.py `_append_event`: `member.joined` +1, `member.left` -1), so
-- reading a room costs no count of its members.
ALTER TABLE rooms ADD COLUMN member_count INTEGER NOT NULL DEFAULT 0;
UPDATE rooms SET member_count = counted.n
    FROM (SELECT room_id, count(*) AS n FROM members GROUP BY room_id) AS counted
    WHERE counted.room_id = rooms.id;

-- Search: the planner walks messages newest first for a word common in the
-- searcher's rooms and takes the GIN index's matches for a rare one; which is
-- which it reads from the search column's statistics. The default target keeps
-- too few words to tell a rare word from a middling one (a rare word was then
-- searched by walking the whole table): keep ten times as many.
ALTER TABLE messages ALTER COLUMN search SET STATISTICS 1000;
ANALYZE messages;
