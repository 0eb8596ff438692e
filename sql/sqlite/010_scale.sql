-- Queries that do not grow with data they do not return (see sql/postgres/009_scale.sql).

ALTER TABLE rooms ADD COLUMN member_count INTEGER NOT NULL DEFAULT 0;
UPDATE rooms SET member_count = (SELECT count(*) FROM members WHERE members.room_id = rooms.id);
