-- Registration control, administration and moderation: see sql/postgres/005_administration.sql.

-- Server admins, bot accounts (their owners: the integrations migration), and
-- deactivation: a deactivated account keeps its row and messages, cannot log in,
-- and has no sessions or memberships.
ALTER TABLE users ADD COLUMN is_admin INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN is_bot INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN deactivated_at INTEGER;
CREATE INDEX users_admins ON users (id) WHERE is_admin AND deactivated_at IS NULL;

-- A deleted room keeps its rows (its stream still tells the removed members
-- `member.left` / `room_deleted`) but is invisible everywhere.
ALTER TABLE rooms ADD COLUMN deleted_at INTEGER;

-- The first admin's one-time setup token (its SHA-256; the token itself is in
-- <CHAT_DATA_DIR>/setup_token), while no admin exists.
ALTER TABLE installation ADD COLUMN setup_token_sha256 TEXT;

CREATE TABLE invites (
    id          INTEGER PRIMARY KEY,
    code        TEXT NOT NULL UNIQUE,      -- 128 random bits, url-safe
    created_by  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    max_uses    INTEGER NOT NULL,
    uses        INTEGER NOT NULL DEFAULT 0,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE INDEX invites_creator ON invites (created_by, id);

CREATE TABLE invite_rooms (
    invite_id  INTEGER NOT NULL REFERENCES invites (id) ON DELETE CASCADE,
    room_id    INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    PRIMARY KEY (invite_id, room_id)
);

CREATE TABLE bans (
    room_id     INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    reason      TEXT NOT NULL DEFAULT '',
    by_id       INTEGER REFERENCES users (id) ON DELETE SET NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

CREATE TABLE reports (
    id           INTEGER PRIMARY KEY,
    message_id   INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    room_id      INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    reporter_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    reason       TEXT NOT NULL CHECK (reason IN ('spam', 'abuse', 'illegal', 'other')),
    comment      TEXT NOT NULL DEFAULT '',
    state        TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'resolved', 'dismissed')),
    resolved_by  INTEGER REFERENCES users (id) ON DELETE SET NULL,
    resolved_at  INTEGER,
    created_at   INTEGER NOT NULL,
    UNIQUE (message_id, reporter_id)
);
CREATE INDEX reports_state ON reports (state, id);

-- One row per admin or moderation action, written in the action's transaction.
CREATE TABLE audit_log (
    id           INTEGER PRIMARY KEY,
    at           INTEGER NOT NULL,
    actor_id     INTEGER REFERENCES users (id) ON DELETE SET NULL,
    action       TEXT NOT NULL,
    target_type  TEXT NOT NULL,
    target_id    INTEGER,
    ip           TEXT NOT NULL DEFAULT '',
    details      TEXT NOT NULL DEFAULT '{}'   -- a JSON object
);

-- Background jobs that must survive a restart (an account's erasure): a row
-- first, then work in batches; a node claims a job by taking its lease.
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,
    target_id    INTEGER NOT NULL,
    actor_id     INTEGER REFERENCES users (id) ON DELETE SET NULL,
    state        TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
    done_count   INTEGER NOT NULL DEFAULT 0,
    lease_until  INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER
);
CREATE INDEX jobs_pending ON jobs (id) WHERE state = 'pending';
