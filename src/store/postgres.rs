//! The cluster store: PostgreSQL, a generated `tsvector` column with a GIN index for search.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder, Row as _};

use super::query::Query;
use super::{MarkRead, Page, RawMessage, Row, StoreError, Written};
use crate::config::{DatabaseConfig, RetentionMode};

pub(crate) struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub(crate) async fn open(url: &str, config: &DatabaseConfig) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool })
    }

    pub(crate) async fn write(&self, rows: &[Row]) -> Result<Vec<Written>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let messages: Vec<&super::InsertRow> = rows
            .iter()
            .filter_map(|r| match r {
                Row::Message(m) => Some(m),
                Row::Member { .. } => None,
            })
            .collect();
        let mut ids = Vec::with_capacity(messages.len());
        if messages.iter().any(|m| m.idempotency_key.is_some()) {
            // Row by row, in order: a key that conflicts (in this batch, or with a row another
            // node committed, whose transaction this one waits for) inserts nothing, and the
            // earlier message is the answer.
            for m in &messages {
                let id: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO messages (room, user_id, user_name, message_type, content, encrypted, key_id, metadata, created_at, idempotency_key) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
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
                            " FROM messages WHERE room = $1 AND idempotency_key = $2"
                        ))
                        .bind(&m.room)
                        .bind(&m.idempotency_key)
                        .fetch_one(&mut *tx)
                        .await?;
                        ids.push(Written::Existing(existing));
                    }
                }
            }
        } else if !messages.is_empty() {
            // One statement for the whole batch; WITH ORDINALITY keeps the ids in input order.
            let room: Vec<&str> = messages.iter().map(|m| m.room.as_str()).collect();
            let user_id: Vec<Option<&str>> = messages.iter().map(|m| m.user_id.as_deref()).collect();
            let user_name: Vec<Option<&str>> = messages.iter().map(|m| m.user_name.as_deref()).collect();
            let kind: Vec<&str> = messages.iter().map(|m| m.message_type).collect();
            let content: Vec<Option<&str>> = messages.iter().map(|m| m.content.as_deref()).collect();
            let encrypted: Vec<Option<Vec<u8>>> = messages.iter().map(|m| m.encrypted.clone()).collect();
            let key_id: Vec<Option<&str>> = messages.iter().map(|m| m.key_id.as_deref()).collect();
            let metadata: Vec<Option<&str>> = messages.iter().map(|m| m.metadata.as_deref()).collect();
            let created: Vec<i64> = messages.iter().map(|m| m.created_at).collect();
            let rows = sqlx::query(
                "WITH input AS ( \
                   SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[], $8::text[], $9::bigint[]) \
                   WITH ORDINALITY AS t(room, user_id, user_name, message_type, content, encrypted, key_id, metadata, created_at, n)), \
                 inserted AS ( \
                   INSERT INTO messages (room, user_id, user_name, message_type, content, encrypted, key_id, metadata, created_at) \
                   SELECT room, user_id, user_name, message_type, content, encrypted, key_id, metadata, created_at FROM input ORDER BY n \
                   RETURNING id) \
                 SELECT id FROM inserted ORDER BY id",
            )
            .bind(&room)
            .bind(&user_id)
            .bind(&user_name)
            .bind(&kind)
            .bind(&content)
            .bind(&encrypted)
            .bind(&key_id)
            .bind(&metadata)
            .bind(&created)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                ids.push(Written::New(row.try_get::<i64, _>("id")?));
            }
        }
        for row in rows {
            let (room, user, at) = match row {
                Row::Message(m) => match &m.user_id {
                    Some(user) => (m.room.as_str(), user.as_str(), m.created_at),
                    None => continue,
                },
                Row::Member { room, user_id, at } => (room.as_str(), user_id.as_str(), *at),
            };
            sqlx::query(
                "INSERT INTO room_members (room, user_id, joined_at, last_seen) VALUES ($1, $2, $3, $3) \
                 ON CONFLICT (room, user_id) DO UPDATE SET last_seen = GREATEST(room_members.last_seen, EXCLUDED.last_seen)",
            )
            .bind(room)
            .bind(user)
            .bind(at)
            .execute(&mut *tx)
            .await?;
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
                    " FROM messages WHERE room = $1 ORDER BY id DESC LIMIT $2 OFFSET $3"
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
                    " FROM messages WHERE room = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
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
                    " FROM messages WHERE room = $1 AND id > $2 ORDER BY id ASC LIMIT $3"
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
                  AND (x.user_id IS NULL OR x.user_id <> $1) \
                  AND NOT EXISTS (SELECT 1 FROM message_reads r WHERE r.message_id = x.id AND r.user_id = $1)) AS unread, \
               (SELECT MAX(id) FROM messages x WHERE x.room = m.room) AS last_id \
             FROM room_members m LEFT JOIN read_state rs ON rs.room = m.room AND rs.user_id = m.user_id \
             WHERE m.user_id = $1 ORDER BY last_id DESC NULLS LAST, m.room",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rooms.len());
        for row in rooms {
            let last_id: Option<i64> = row.try_get("last_id")?;
            let last = match last_id {
                Some(id) => {
                    sqlx::query_as(concat!("SELECT ", message_columns!(), " FROM messages WHERE id = $1"))
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
                    "INSERT INTO read_state (room, user_id, last_read_id, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (room, user_id) DO UPDATE SET \
                     last_read_id = GREATEST(read_state.last_read_id, EXCLUDED.last_read_id), updated_at = EXCLUDED.updated_at",
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
                let present: Vec<i64> =
                    sqlx::query_scalar("SELECT id FROM messages WHERE room = $1 AND id = ANY($2) ORDER BY id")
                        .bind(room)
                        .bind(ids)
                        .fetch_all(&mut *tx)
                        .await?;
                sqlx::query(
                    "INSERT INTO message_reads (message_id, user_id, room, read_at) SELECT id, $2, $3, $4 FROM UNNEST($1::bigint[]) AS id \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&present)
                .bind(user)
                .bind(room)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                present
            }
        };
        let up_to: Option<i64> =
            sqlx::query_scalar("SELECT last_read_id FROM read_state WHERE room = $1 AND user_id = $2")
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
        let mut builder: QueryBuilder<Postgres> = QueryBuilder::new(concat!(
            "SELECT ",
            prefixed_message_columns!(),
            ", ts_rank(m.search, q)::float8 AS score FROM messages m, to_tsquery('simple', "
        ));
        builder.push_bind(query.to_tsquery()).push(") q WHERE m.search @@ q");
        if let Some(room) = room {
            builder.push(" AND m.room = ").push_bind(room);
        }
        builder.push(" ORDER BY score DESC, m.id DESC LIMIT ").push_bind(limit);
        let rows = builder.build().fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|row| {
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
                Ok((raw, row.try_get::<f64, _>("score")?))
            })
            .collect()
    }

    pub(crate) async fn retain(&self, cutoff_ms: i64, mode: RetentionMode, now_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        if mode == RetentionMode::Archive {
            sqlx::query(concat!(
                "INSERT INTO messages_archive (",
                message_columns!(),
                ", archived_at) SELECT ",
                message_columns!(),
                ", $1 FROM messages WHERE created_at < $2 \
                 ON CONFLICT (id) DO NOTHING"
            ))
            .bind(now_ms)
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM message_reads WHERE message_id IN (SELECT id FROM messages WHERE created_at < $1)")
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await?;
        let removed =
            sqlx::query("DELETE FROM messages WHERE created_at < $1").bind(cutoff_ms).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(removed.rows_affected())
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}
