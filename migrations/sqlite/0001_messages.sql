-- Chat history, read state and room membership (SQLite).
CREATE TABLE messages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    room         TEXT    NOT NULL,
    user_id      TEXT,
    user_name    TEXT,
    message_type TEXT    NOT NULL,
    -- Plain text; NULL when the message is stored encrypted.
    content      TEXT,
    -- nonce || ciphertext || tag (AES-256-GCM) and the id of the key that made it.
    encrypted    BLOB,
    key_id       TEXT,
    metadata     TEXT,
    created_at   INTEGER NOT NULL
);
CREATE INDEX messages_room_id ON messages (room, id);
CREATE INDEX messages_created ON messages (created_at);

-- Full-text index over plain-text content only: encrypted messages never enter it.
CREATE VIRTUAL TABLE messages_fts USING fts5 (content, content = 'messages', content_rowid = 'id');
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.content IS NOT NULL BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN old.content IS NOT NULL BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;

-- Messages moved out by retention in archive mode.
CREATE TABLE messages_archive (
    id           INTEGER PRIMARY KEY,
    room         TEXT    NOT NULL,
    user_id      TEXT,
    user_name    TEXT,
    message_type TEXT    NOT NULL,
    content      TEXT,
    encrypted    BLOB,
    key_id       TEXT,
    metadata     TEXT,
    created_at   INTEGER NOT NULL,
    archived_at  INTEGER NOT NULL
);

-- Everything up to last_read_id is read; message_reads holds reads marked one by one.
CREATE TABLE read_state (
    room         TEXT    NOT NULL,
    user_id      TEXT    NOT NULL,
    last_read_id INTEGER NOT NULL DEFAULT 0,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (room, user_id)
);
CREATE TABLE message_reads (
    message_id   INTEGER NOT NULL,
    user_id      TEXT    NOT NULL,
    room         TEXT    NOT NULL,
    read_at      INTEGER NOT NULL,
    PRIMARY KEY (message_id, user_id)
);

-- Rooms a user joined or wrote in, for "my rooms".
CREATE TABLE room_members (
    room         TEXT    NOT NULL,
    user_id      TEXT    NOT NULL,
    joined_at    INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    PRIMARY KEY (room, user_id)
);
CREATE INDEX room_members_user ON room_members (user_id);
