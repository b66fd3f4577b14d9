-- A client-chosen idempotency key (scoped to its sender) makes a retried message return the
-- original instead of storing it twice, on any node sharing the database.
ALTER TABLE messages ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX messages_idempotency ON messages (room, idempotency_key) WHERE idempotency_key IS NOT NULL;
