-- Notifications: see sql/postgres/007_notifications.sql.

ALTER TABLE members ADD COLUMN notify_level TEXT
    CHECK (notify_level IN ('all', 'mentions', 'none'));
ALTER TABLE members ADD COLUMN muted_until INTEGER;

CREATE TABLE push_subscriptions (
    id               INTEGER PRIMARY KEY,
    user_id          INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    endpoint         TEXT NOT NULL UNIQUE,
    p256dh           TEXT NOT NULL,
    auth             TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    last_success_at  INTEGER
);
CREATE INDEX push_subscriptions_user ON push_subscriptions (user_id, id);
