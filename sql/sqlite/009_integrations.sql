-- Bots and integrations: see sql/postgres/008_integrations.sql.

-- A bot account's owner (NULL for people). A bot's password_hash is '!', which
-- no password verifies against (and login refuses bots before trying).
ALTER TABLE users ADD COLUMN bot_owner_id INTEGER REFERENCES users (id) ON DELETE SET NULL;
CREATE INDEX users_bots ON users (bot_owner_id, id) WHERE is_bot;

-- Personal access tokens (a bot's token too): only the SHA-256 of the token is
-- kept; a request's token is looked up by it. Revoked on request and with the
-- owner's deactivation.
CREATE TABLE access_tokens (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    token_sha256  TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);
CREATE INDEX access_tokens_user ON access_tokens (user_id, id) WHERE revoked_at IS NULL;

-- A room's webhooks, each with its own bot. `secret` signs outgoing deliveries
-- and is shown to the room's managers; incoming posts find their hook by
-- `secret_sha256`. An outgoing hook's `scanned_pos` is how far its room's
-- stream has been turned into deliveries (webhooks.py).
CREATE TABLE webhooks (
    id                INTEGER PRIMARY KEY,
    room_id           INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    bot_id            INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_by        INTEGER REFERENCES users (id) ON DELETE SET NULL,
    name              TEXT NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('incoming', 'outgoing')),
    url               TEXT,
    trigger_on        TEXT CHECK (trigger_on IN ('all', 'mention')),
    secret            TEXT NOT NULL,
    secret_sha256     TEXT NOT NULL UNIQUE,
    scanned_pos       INTEGER NOT NULL DEFAULT 0,
    failures          INTEGER NOT NULL DEFAULT 0,
    last_delivery_at  INTEGER,
    created_at        INTEGER NOT NULL,
    deleted_at        INTEGER
);
CREATE INDEX webhooks_room ON webhooks (room_id, id) WHERE deleted_at IS NULL;
CREATE INDEX webhooks_outgoing ON webhooks (id) WHERE kind = 'outgoing' AND deleted_at IS NULL;

-- One row per delivery of a message to an outgoing hook, written before it is
-- tried; a worker claims a due one by taking its lease. The body is built at
-- each attempt from the message as it is then (an edit shows in a retry); a
-- message deleted before an attempt is not sent: its delivery is 'skipped'.
CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,          -- a UUID, sent as X-Chat-Delivery
    webhook_id       INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    message_id       INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    state            TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed', 'skipped')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_until      INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    UNIQUE (webhook_id, message_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
