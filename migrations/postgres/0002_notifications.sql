-- Stored notifications, so that a user who was offline gets the unread ones later.
CREATE TABLE notifications (
    id           TEXT   PRIMARY KEY,
    user_id      TEXT   NOT NULL,
    category     TEXT,
    priority     TEXT,
    module_name  TEXT,
    body         TEXT   NOT NULL,
    read_at      BIGINT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX notifications_user ON notifications (user_id, read_at, created_at);
