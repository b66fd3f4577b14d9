-- Chat history, read state and room membership (PostgreSQL).
CREATE TABLE messages (
    id           BIGSERIAL PRIMARY KEY,
    room         TEXT   NOT NULL,
    user_id      TEXT,
    user_name    TEXT,
    message_type TEXT   NOT NULL,
    -- Plain text; NULL when the message is stored encrypted.
    content      TEXT,
    -- nonce || ciphertext || tag (AES-256-GCM) and the id of the key that made it.
    encrypted    BYTEA,
    key_id       TEXT,
    metadata     TEXT,
    created_at   BIGINT NOT NULL,
    -- Full-text vector over plain-text content only: encrypted messages never enter it.
    search       TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', coalesce(content, ''))) STORED
);
CREATE INDEX messages_room_id ON messages (room, id);
CREATE INDEX messages_created ON messages (created_at);
CREATE INDEX messages_search ON messages USING GIN (search);

CREATE TABLE messages_archive (
    id           BIGINT PRIMARY KEY,
    room         TEXT   NOT NULL,
    user_id      TEXT,
    user_name    TEXT,
    message_type TEXT   NOT NULL,
    content      TEXT,
    encrypted    BYTEA,
    key_id       TEXT,
    metadata     TEXT,
    created_at   BIGINT NOT NULL,
    archived_at  BIGINT NOT NULL
);

CREATE TABLE read_state (
    room         TEXT   NOT NULL,
    user_id      TEXT   NOT NULL,
    last_read_id BIGINT NOT NULL DEFAULT 0,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (room, user_id)
);
CREATE TABLE message_reads (
    message_id   BIGINT NOT NULL,
    user_id      TEXT   NOT NULL,
    room         TEXT   NOT NULL,
    read_at      BIGINT NOT NULL,
    PRIMARY KEY (message_id, user_id)
);

CREATE TABLE room_members (
    room         TEXT   NOT NULL,
    user_id      TEXT   NOT NULL,
    joined_at    BIGINT NOT NULL,
    last_seen    BIGINT NOT NULL,
    PRIMARY KEY (room, user_id)
);
CREATE INDEX room_members_user ON room_members (user_id);
