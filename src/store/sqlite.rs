//! The embedded store: one SQLite file in WAL mode, FTS5 for search.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row as _, Sqlite};

use super::query::Query;
use super::{MarkRead, Page, RawMessage, Row, StoreError, Written};
use crate::config::{DatabaseConfig, RetentionMode, SqliteSynchronous as Sync};

pub(crate) struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub(crate) async fn open(url: &str, config: &DatabaseConfig) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match config.sqlite_synchronous {
                Sync::Full => SqliteSynchronous::Full,
                Sync::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(false);
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    pub(crate) async fn write(&self, rows: &[Row]) -> Result<Vec<Written>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut ids = Vec::with_capacity(rows.len());
        for row in rows {
            match row {
                Row::Message(m) => {
                    // With a key, a conflict inserts nothing and returns no id: the earlier
                    // message with that key is the answer.
                    let id: Option<i64> = sqlx::query_scalar(
                        "INSERT INTO messages (room, user_id, user_name, message_type, content, encrypted, key_id, metadata, created_at, idempotency_key) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                         ON CONFLICT (room, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id",
                    )
                    .bind(&m.room)
                    .bind(&m.user_id)
                    .bind(&m.user_name)
                    .bind(m.message_type)
                    .bind(&m.content)
                    .bind(&m.encrypted)
                    .bind(&m.key_id)
                    .bind(&m.metadata)
                    .bind(m.created_at)
                    .bind(&m.idempotency_key)
                    .fetch_optional(&mut *tx)
                    .await?;
                    match id {
                        Some(id) => ids.push(Written::New(id)),
                        None => {
                            let existing: RawMessage = sqlx::query_as(concat!(
                                "SELECT ",
                                message_columns!(),
                                " FROM messages WHERE room = ? AND idempotency_key = ?"
                            ))
                            .bind(&m.room)
                            .bind(&m.idempotency_key)
                            .fetch_one(&mut *tx)
                            .await?;
                            ids.push(Written::Existing(existing));
                            continue;
                        }
                    }
                    if let Some(user) = &m.user_id {
                        upsert_member(&mut tx, &m.room, user, m.created_at).await?;
                    }
                }
                Row::Member { room, user_id, at } => upsert_member(&mut tx, room, user_id, *at).await?,
            }
        }
        tx.commit().await?;
        Ok(ids)
    }

    pub(crate) async fn history(&self, room: &str, page: Page) -> Result<Vec<RawMessage>, StoreError> {
        let mut rows: Vec<RawMessage> = match page {
            Page::Offset { limit, offset } => {
                sqlx::query_as(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages WHERE room = ? ORDER BY id DESC LIMIT ? OFFSET ?"
                ))
                .bind(room)
                .bind(limit)
                .bind(offset)
                .fetch_all(&self.pool)
                .await?
            }
            Page::Before { id, limit } => {
                sqlx::query_as(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages WHERE room = ? AND id < ? ORDER BY id DESC LIMIT ?"
                ))
                .bind(room)
                .bind(id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            Page::After { id, limit } => {
                return Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages WHERE room = ? AND id > ? ORDER BY id ASC LIMIT ?"
                ))
                .bind(room)
                .bind(id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?);
            }
        };
        rows.reverse();
        Ok(rows)
    }

    pub(crate) async fn rooms_of(&self, user: &str) -> Result<Vec<(String, i64, i64, Option<RawMessage>)>, StoreError> {
        let rooms = sqlx::query(
            "SELECT m.room AS room, COALESCE(rs.last_read_id, 0) AS last_read_id, \
               (SELECT COUNT(*) FROM messages x WHERE x.room = m.room AND x.id > COALESCE(rs.last_read_id, 0) \
                  AND (x.user_id IS NULL OR x.user_id != ?1) \
                  AND NOT EXISTS (SELECT 1 FROM message_reads r WHERE r.message_id = x.id AND r.user_id = ?1)) AS unread, \
               (SELECT MAX(id) FROM messages x WHERE x.room = m.room) AS last_id \
             FROM room_members m LEFT JOIN read_state rs ON rs.room = m.room AND rs.user_id = m.user_id \
             WHERE m.user_id = ?1 ORDER BY last_id DESC, m.room",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rooms.len());
        for row in rooms {
            let last_id: Option<i64> = row.try_get("last_id")?;
            let last = match last_id {
                Some(id) => {
                    sqlx::query_as(concat!("SELECT ", message_columns!(), " FROM messages WHERE id = ?"))
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?
                }
                None => None,
            };
            out.push((row.try_get("room")?, row.try_get("unread")?, row.try_get("last_read_id")?, last));
        }
        Ok(out)
    }

    pub(crate) async fn mark_read(
        &self,
        room: &str,
        user: &str,
        what: &MarkRead,
        at: i64,
    ) -> Result<(Vec<i64>, i64), StoreError> {
        let mut tx = self.pool.begin().await?;
        let marked = match what {
            MarkRead::UpTo(id) => {
                sqlx::query(
                    "INSERT INTO read_state (room, user_id, last_read_id, updated_at) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (room, user_id) DO UPDATE SET last_read_id = MAX(last_read_id, excluded.last_read_id), \
                     updated_at = excluded.updated_at",
                )
                .bind(room)
                .bind(user)
                .bind(id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                Vec::new()
            }
            MarkRead::Ids(ids) if ids.is_empty() => Vec::new(),
            MarkRead::Ids(ids) => {
                let mut select: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT id FROM messages WHERE room = ");
                select.push_bind(room).push(" AND id IN (");
                let mut list = select.separated(", ");
                for id in ids {
                    list.push_bind(*id);
                }
                select.push(")");
                let present: Vec<i64> = select.build_query_scalar().fetch_all(&mut *tx).await?;
                for id in &present {
                    sqlx::query(
                        "INSERT OR IGNORE INTO message_reads (message_id, user_id, room, read_at) VALUES (?, ?, ?, ?)",
                    )
                    .bind(id)
                    .bind(user)
                    .bind(room)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                }
                present
            }
        };
        let up_to: Option<i64> =
            sqlx::query_scalar("SELECT last_read_id FROM read_state WHERE room = ? AND user_id = ?")
                .bind(room)
                .bind(user)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok((marked, up_to.unwrap_or(0)))
    }

    pub(crate) async fn search(
        &self,
        query: &Query,
        room: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(RawMessage, f64)>, StoreError> {
        let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(concat!(
            "SELECT ",
            prefixed_message_columns!(),
            ", bm25(messages_fts) AS score FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid \
             WHERE messages_fts MATCH "
        ));
        builder.push_bind(query.to_fts5());
        if let Some(room) = room {
            builder.push(" AND m.room = ").push_bind(room);
        }
        builder.push(" ORDER BY score LIMIT ").push_bind(limit);
        let rows = builder.build().fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|row| {
                let score: f64 = row.try_get("score")?;
                let raw = RawMessage {
                    id: row.try_get("id")?,
                    room: row.try_get("room")?,
                    user_id: row.try_get("user_id")?,
                    user_name: row.try_get("user_name")?,
                    message_type: row.try_get("message_type")?,
                    content: row.try_get("content")?,
                    encrypted: row.try_get("encrypted")?,
                    key_id: row.try_get("key_id")?,
                    metadata: row.try_get("metadata")?,
                    created_at: row.try_get("created_at")?,
                };
                // bm25 is smaller for better matches; report higher-is-better.
                Ok((raw, -score))
            })
            .collect()
    }

    pub(crate) async fn retain(&self, cutoff_ms: i64, mode: RetentionMode, now_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        if mode == RetentionMode::Archive {
            sqlx::query(concat!(
                "INSERT OR REPLACE INTO messages_archive (",
                message_columns!(),
                ", archived_at) SELECT ",
                message_columns!(),
                ", ? FROM messages WHERE created_at < ?"
            ))
            .bind(now_ms)
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM message_reads WHERE message_id IN (SELECT id FROM messages WHERE created_at < ?)")
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await?;
        let removed =
            sqlx::query("DELETE FROM messages WHERE created_at < ?").bind(cutoff_ms).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(removed.rows_affected())
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(crate) async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

async fn upsert_member(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    room: &str,
    user: &str,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO room_members (room, user_id, joined_at, last_seen) VALUES (?, ?, ?, ?) \
         ON CONFLICT (room, user_id) DO UPDATE SET last_seen = MAX(last_seen, excluded.last_seen)",
    )
    .bind(room)
    .bind(user)
    .bind(at)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
