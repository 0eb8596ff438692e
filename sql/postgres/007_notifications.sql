-- Notifications (API.md "Notifications"): per-room levels, mutes, Web Push subscriptions.

-- A member's level for the room (NULL: the default, `all` for a DM and
-- `mentions` elsewhere) and the time (epoch ms) the room is muted until.
ALTER TABLE members ADD COLUMN notify_level TEXT
    CHECK (notify_level IN ('all', 'mentions', 'none'));
ALTER TABLE members ADD COLUMN muted_until BIGINT;

-- A browser's Web Push subscription (RFC 8030 endpoint, RFC 8291 keys, base64url
-- as the browser gives them). One row per endpoint: registering an endpoint
-- someone else registered moves it to the new user. Pushes read a room's
-- members joined to their subscriptions by user.
CREATE TABLE push_subscriptions (
    id               BIGSERIAL PRIMARY KEY,
    user_id          BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    endpoint         TEXT NOT NULL UNIQUE,
    p256dh           TEXT NOT NULL,
    auth             TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    last_success_at  BIGINT
);
CREATE INDEX push_subscriptions_user ON push_subscriptions (user_id, id);
