-- The whole schema the v1 contract needs. Times are epoch milliseconds (BIGINT).

CREATE TABLE users (
    id              BIGSERIAL PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    display_name    TEXT NOT NULL,
    bio             TEXT NOT NULL DEFAULT '',
    avatar_media_id BIGINT,
    password_hash   TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX users_display_name ON users (lower(display_name) text_pattern_ops);

CREATE TABLE sessions (
    id            BIGSERIAL PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    refresh_jti   TEXT NOT NULL,          -- id of the one refresh token still valid
    user_agent    TEXT NOT NULL DEFAULT '',
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE media (
    id            BIGSERIAL PRIMARY KEY,
    uploader_id   BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    sha256        TEXT NOT NULL,
    filename      TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size          BIGINT NOT NULL,
    width         INTEGER,
    height        INTEGER,
    created_at    BIGINT NOT NULL
);
CREATE INDEX media_sha256 ON media (sha256);
CREATE INDEX media_uploader ON media (uploader_id);

ALTER TABLE users ADD CONSTRAINT users_avatar_fk
    FOREIGN KEY (avatar_media_id) REFERENCES media (id) ON DELETE SET NULL;

CREATE TABLE rooms (
    id          BIGSERIAL PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('public', 'private', 'dm')),
    name        TEXT NOT NULL,
    topic       TEXT NOT NULL DEFAULT '',
    created_by  BIGINT REFERENCES users (id) ON DELETE SET NULL,
    created_at  BIGINT NOT NULL,
    last_seq    BIGINT NOT NULL DEFAULT 0,   -- bumped under the row lock by every send
    dm_key      TEXT UNIQUE                  -- '<low user id>:<high user id>' for DMs
);
CREATE INDEX rooms_public_name ON rooms (lower(name) text_pattern_ops) WHERE kind = 'public';

CREATE TABLE members (
    room_id        BIGINT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id        BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role           TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at      BIGINT NOT NULL,
    last_read_seq  BIGINT NOT NULL DEFAULT 0,  -- the read marker; only moves forward
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX members_user ON members (user_id);

CREATE TABLE messages (
    id          BIGSERIAL PRIMARY KEY,
    room_id     BIGINT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq         BIGINT NOT NULL,
    sender_id   BIGINT NOT NULL REFERENCES users (id),
    body        TEXT NOT NULL,
    client_id   TEXT,
    reply_to    BIGINT REFERENCES messages (id) ON DELETE SET NULL,
    created_at  BIGINT NOT NULL,
    edited_at   BIGINT,
    deleted     BOOLEAN NOT NULL DEFAULT FALSE,
    search      TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', body)) STORED,
    UNIQUE (room_id, seq)
);
CREATE UNIQUE INDEX messages_idempotency ON messages (sender_id, client_id);
CREATE INDEX messages_search ON messages USING GIN (search);

CREATE TABLE message_attachments (
    message_id  BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    media_id    BIGINT NOT NULL REFERENCES media (id),
    position    INTEGER NOT NULL,
    PRIMARY KEY (message_id, media_id)
);
CREATE INDEX message_attachments_media ON message_attachments (media_id);
