-- Sends are one statement: INSERT ... SELECT last_seq + 1 FROM rooms (db.py).
-- SQLite holds its write lock for the whole statement, so this trigger bumps the
-- room's last_seq and the sender's read marker atomically with the insert.
CREATE TRIGGER messages_take_seq AFTER INSERT ON messages BEGIN
    UPDATE rooms SET last_seq = new.seq WHERE id = new.room_id;
    UPDATE members SET last_read_seq = new.seq
        WHERE room_id = new.room_id AND user_id = new.sender_id;
END;
