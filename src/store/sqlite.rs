//! The embedded store: one SQLite file in WAL mode, FTS5 for search.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row as _, Sqlite};

use super::query::Query;
use super::{InsertRow, MarkRead, Page, RawMessage, Row, StoreError, Written};

/// Rows per multi-row statement: 10 parameters each stays far below SQLite's limit of 32,766.
const INSERT_CHUNK: usize = 500;
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

    /// Writes a batch in one transaction with a few statements: the messages as multi-row
    /// inserts and the memberships as one upsert. Each statement is a round trip to sqlx's
    /// connection thread, which on a busy machine costs more than the insert itself, so the
    /// statement count must not grow with the batch.
    pub(crate) async fn write(&self, rows: &[Row]) -> Result<Vec<Written>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let messages: Vec<&InsertRow> = rows
            .iter()
            .filter_map(|r| match r {
                Row::Message(m) => Some(m),
                Row::Member { .. } => None,
            })
            .collect();
        let mut written = Vec::with_capacity(messages.len());
        for chunk in messages.chunks(INSERT_CHUNK) {
            let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO messages (room, user_id, user_name, message_type, content, encrypted, key_id, metadata, created_at, idempotency_key) ",
            );
            insert.push_values(chunk, |mut row, m| {
                row.push_bind(&m.room)
                    .push_bind(&m.user_id)
                    .push_bind(&m.user_name)
                    .push_bind(m.message_type)
                    .push_bind(&m.content)
                    .push_bind(&m.encrypted)
                    .push_bind(&m.key_id)
                    .push_bind(&m.metadata)
                    .push_bind(m.created_at)
                    .push_bind(&m.idempotency_key);
            });
            // With a key, a conflict inserts nothing and returns no row: the earlier message
            // with that key is the answer.
            insert.push(
                " ON CONFLICT (room, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
                 RETURNING id, room, idempotency_key",
            );
            let mut inserted: Vec<(i64, String, Option<String>)> = insert.build_query_as().fetch_all(&mut *tx).await?;
            // Ids grow in insertion order, whatever order RETURNING lists them in.
            inserted.sort_unstable_by_key(|(id, _, _)| *id);
            let mut inserted = inserted.into_iter().peekable();
            for m in chunk {
                // Inserted rows are the batch's rows in order, minus the conflicts; a row
                // without a key never conflicts, and a keyed row that conflicted cannot share
                // its (room, key) with a later inserted row, so matching in order is exact.
                let mine = inserted.next_if(|(_, room, key)| *room == m.room && *key == m.idempotency_key);
                match mine {
                    Some((id, _, _)) => written.push(Written::New(id)),
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
                        written.push(Written::Existing(existing));
                    }
                }
            }
        }
        // Memberships: the senders of inserted messages and the recorded joins, one row per
        // (room, user) with its first and latest time.
        let mut members: indexmap::IndexMap<(&str, &str), (i64, i64)> = indexmap::IndexMap::new();
        let senders = messages.iter().zip(&written).filter_map(|(m, w)| match (w, &m.user_id) {
            (Written::New(_), Some(user)) => Some((m.room.as_str(), user.as_str(), m.created_at)),
            _ => None,
        });
        let joins = rows.iter().filter_map(|r| match r {
            Row::Member { room, user_id, at } => Some((room.as_str(), user_id.as_str(), *at)),
            Row::Message(_) => None,
        });
        for (room, user, at) in senders.chain(joins) {
            let entry = members.entry((room, user)).or_insert((at, at));
            entry.1 = entry.1.max(at);
        }
        let members: Vec<_> = members.into_iter().collect();
        for chunk in members.chunks(INSERT_CHUNK) {
            let mut upsert: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO room_members (room, user_id, joined_at, last_seen) ");
            upsert.push_values(chunk, |mut row, ((room, user), (first, last))| {
                row.push_bind(*room).push_bind(*user).push_bind(*first).push_bind(*last);
            });
            upsert.push(" ON CONFLICT (room, user_id) DO UPDATE SET last_seen = MAX(last_seen, excluded.last_seen)");
            upsert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        // Rows come back in the batch's order: messages as written, joins answer nothing.
        Ok(written)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(room: &str, user: &str, content: &str, key: Option<&str>, at: i64) -> Row {
        Row::Message(InsertRow {
            room: room.into(),
            user_id: Some(user.into()),
            user_name: None,
            message_type: "text",
            content: Some(content.into()),
            encrypted: None,
            key_id: None,
            metadata: None,
            created_at: at,
            idempotency_key: key.map(String::from),
        })
    }

    /// "new" or "existing N" (N: the position in `ids` of the original), checking that new
    /// ids grow; `ids` collects the new ids across batches.
    fn outcome(written: &[Written], ids: &mut Vec<i64>) -> Vec<String> {
        written
            .iter()
            .map(|w| match w {
                Written::New(id) => {
                    assert!(ids.last().is_none_or(|last| last < id), "{id} after {ids:?}");
                    ids.push(*id);
                    "new".to_string()
                }
                Written::Existing(m) => {
                    format!("existing {}", ids.iter().position(|id| *id == m.id).map_or(-1, |p| p as i64))
                }
            })
            .collect()
    }

    /// One batch's multi-row insert answers each row in order: conflicts inside the batch and
    /// with earlier batches return the original, the rest get their new ids, search sees every
    /// stored row, and membership keeps the first and the latest time.
    #[tokio::test]
    async fn a_batch_is_written_in_few_statements_and_answered_row_by_row() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::open(&url, &DatabaseConfig::default()).await.unwrap();
        let first = store
            .write(&[
                row("r1", "ann", "apple one", None, 10),
                row("r1", "ann", "apple two", Some("k1"), 11),
                Row::Member { room: "r3".into(), user_id: "bob".into(), at: 5 },
                row("r1", "bob", "apple three", Some("k1"), 12),
                row("r2", "ann", "apple four", Some("k1"), 13),
                row("r1", "ann", "apple five", None, 14),
            ])
            .await
            .unwrap();
        let mut ids = Vec::new();
        assert_eq!(outcome(&first, &mut ids), ["new", "new", "existing 1", "new", "new"]);
        let second = store
            .write(&[row("r1", "cat", "apple six", Some("k1"), 20), row("r1", "cat", "pear", None, 21)])
            .await
            .unwrap();
        assert_eq!(outcome(&second, &mut ids), ["existing 1", "new"]);

        let query = super::super::query::parse("apple").unwrap();
        let hits = store.search(&query, None, 100).await.unwrap();
        let mut found: Vec<i64> = hits.iter().map(|(m, _)| m.id).collect();
        found.sort_unstable();
        assert_eq!(found, ids[..4]);

        let members: Vec<(String, String, i64, i64)> =
            sqlx::query_as("SELECT room, user_id, joined_at, last_seen FROM room_members ORDER BY room, user_id")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        let expected = [("r1", "ann", 10, 14), ("r1", "cat", 21, 21), ("r2", "ann", 13, 13), ("r3", "bob", 5, 5)];
        let expected: Vec<(String, String, i64, i64)> =
            expected.iter().map(|(r, u, a, b)| (r.to_string(), u.to_string(), *a, *b)).collect();
        assert_eq!(members, expected);
    }
}
