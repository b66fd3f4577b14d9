//! Stored notifications: one row per user and notification, read or not.

use serde_json::Value;

use super::{Backend, Store, StoreError};

/// A notification row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredNotification {
    /// Id (`notif_…`).
    pub id: String,
    /// Recipient.
    pub user_id: String,
    /// The notification object as delivered.
    pub body: String,
    /// Unix milliseconds when read, if read.
    pub read_at: Option<i64>,
    /// Unix milliseconds.
    pub created_at: i64,
}

impl StoredNotification {
    /// The notification object.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

impl Store {
    /// Stores a notification for a user (an existing id is left as it is).
    pub async fn add_notification(
        &self,
        user: &str,
        id: &str,
        notification: &Value,
        at: i64,
    ) -> Result<(), StoreError> {
        let text = |field: &str| notification.get(field).and_then(Value::as_str).map(String::from);
        let body = notification.to_string();
        match &self.backend {
            Backend::Sqlite(s) => {
                sqlx::query(
                    "INSERT OR IGNORE INTO notifications (id, user_id, category, priority, module_name, body, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(id)
                .bind(user)
                .bind(text("category"))
                .bind(text("priority"))
                .bind(text("module_name"))
                .bind(body)
                .bind(at)
                .execute(s.pool())
                .await?;
            }
            Backend::Postgres(s) => {
                sqlx::query(
                    "INSERT INTO notifications (id, user_id, category, priority, module_name, body, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(user)
                .bind(text("category"))
                .bind(text("priority"))
                .bind(text("module_name"))
                .bind(body)
                .bind(at)
                .execute(s.pool())
                .await?;
            }
        }
        Ok(())
    }

    /// A user's notifications, newest first; only unread ones when `unread_only`.
    pub async fn notifications(
        &self,
        user: &str,
        unread_only: bool,
        limit: i64,
    ) -> Result<Vec<StoredNotification>, StoreError> {
        Ok(match &self.backend {
            Backend::Sqlite(s) => {
                sqlx::query_as(
                    "SELECT id, user_id, body, read_at, created_at FROM notifications \
                     WHERE user_id = ? AND (? = 0 OR read_at IS NULL) ORDER BY created_at DESC, id DESC LIMIT ?",
                )
                .bind(user)
                .bind(i64::from(unread_only))
                .bind(limit)
                .fetch_all(s.pool())
                .await?
            }
            Backend::Postgres(s) => {
                sqlx::query_as(
                    "SELECT id, user_id, body, read_at, created_at FROM notifications \
                     WHERE user_id = $1 AND (NOT $2 OR read_at IS NULL) ORDER BY created_at DESC, id DESC LIMIT $3",
                )
                .bind(user)
                .bind(unread_only)
                .bind(limit)
                .fetch_all(s.pool())
                .await?
            }
        })
    }

    /// Marks a user's notification read; false when the user has no such notification.
    pub async fn read_notification(&self, user: &str, id: &str, at: i64) -> Result<bool, StoreError> {
        let done = match &self.backend {
            Backend::Sqlite(s) => {
                sqlx::query("UPDATE notifications SET read_at = COALESCE(read_at, ?) WHERE id = ? AND user_id = ?")
                    .bind(at)
                    .bind(id)
                    .bind(user)
                    .execute(s.pool())
                    .await?
                    .rows_affected()
            }
            Backend::Postgres(s) => {
                sqlx::query("UPDATE notifications SET read_at = COALESCE(read_at, $1) WHERE id = $2 AND user_id = $3")
                    .bind(at)
                    .bind(id)
                    .bind(user)
                    .execute(s.pool())
                    .await?
                    .rows_affected()
            }
        };
        Ok(done > 0)
    }
}
