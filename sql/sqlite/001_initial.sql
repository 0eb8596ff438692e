-- The whole schema the v1 contract needs. Times are epoch milliseconds (INTEGER).

CREATE TABLE users (
    id              INTEGER PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    display_name    TEXT NOT NULL,
    bio             TEXT NOT NULL DEFAULT '',
    avatar_media_id INTEGER REFERENCES media (id) ON DELETE SET NULL,
    password_hash   TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX users_display_name ON users (display_name COLLATE NOCASE);

CREATE TABLE sessions (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    refresh_jti   TEXT NOT NULL,          -- id of the one refresh token still valid
    user_agent    TEXT NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER NOT NULL,
    revoked_at    INTEGER
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE media (
    id            INTEGER PRIMARY KEY,
    uploader_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    sha256        TEXT NOT NULL,
    filename      TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size          INTEGER NOT NULL,
    width         INTEGER,
    height        INTEGER,
    created_at    INTEGER NOT NULL
);
CREATE INDEX media_sha256 ON media (sha256);
CREATE INDEX media_uploader ON media (uploader_id);

CREATE TABLE rooms (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('public', 'private', 'dm')),
    name        TEXT NOT NULL,
    topic       TEXT NOT NULL DEFAULT '',
    created_by  INTEGER REFERENCES users (id) ON DELETE SET NULL,
    created_at  INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL DEFAULT 0,  -- bumped inside the writing transaction by every send
    dm_key      TEXT UNIQUE                  -- '<low user id>:<high user id>' for DMs
);
CREATE INDEX rooms_public_name ON rooms (name COLLATE NOCASE) WHERE kind = 'public';

CREATE TABLE members (
    room_id        INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id        INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role           TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at      INTEGER NOT NULL,
    last_read_seq  INTEGER NOT NULL DEFAULT 0,  -- the read marker; only moves forward
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_user ON members (user_id);

CREATE TABLE messages (
    id          INTEGER PRIMARY KEY,
    room_id     INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    sender_id   INTEGER NOT NULL REFERENCES users (id),
    body        TEXT NOT NULL,
    client_id   TEXT,
    reply_to    INTEGER REFERENCES messages (id) ON DELETE SET NULL,
    created_at  INTEGER NOT NULL,
    edited_at   INTEGER,
    deleted     INTEGER NOT NULL DEFAULT 0,
    UNIQUE (room_id, seq)
);
CREATE UNIQUE INDEX messages_idempotency ON messages (sender_id, client_id);

CREATE TABLE message_attachments (
    message_id  INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    media_id    INTEGER NOT NULL REFERENCES media (id),
    position    INTEGER NOT NULL,
    PRIMARY KEY (message_id, media_id)
) WITHOUT ROWID;
CREATE INDEX message_attachments_media ON message_attachments (media_id);

-- Full-text search: an external-content FTS5 index kept in step by triggers.
CREATE VIRTUAL TABLE messages_fts USING fts5 (
    body, content = 'messages', content_rowid = 'id', tokenize = 'unicode61'
);
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, body) VALUES (new.id, new.body);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF body ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
    INSERT INTO messages_fts (rowid, body) VALUES (new.id, new.body);
END;
