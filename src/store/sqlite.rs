//! The embedded store: one SQLite file in WAL mode, FTS5 for search.
//!
//! Reads and the occasional small write (read marks, retention, notifications) use sqlx's pool.
//! Messages are written by [`SqliteWriter`]: one connection of its own, driven synchronously by
//! the writer's thread, so a batch costs no hand-off between threads per statement.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row as _, Sqlite};

use super::query::Query;
use super::{MarkRead, Page, RawMessage, Row, StoreError, Written};
use crate::config::{DatabaseConfig, RetentionMode, SqliteSynchronous as Sync};

/// How long a statement waits for another connection's write lock (retention, read marks).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Pages of WAL before the writer folds it back into the database file. SQLite's default is
/// 1,000; a larger WAL means fewer checkpoints (each one syncs the database file) on the
/// writer's thread while messages wait.
const WAL_AUTOCHECKPOINT: u32 = 4_000;

pub(crate) struct SqliteStore {
    pool: SqlitePool,
    /// Where the writer opens its own connection.
    target: WriterTarget,
}

/// How the writer's connection reaches the same database as the pool.
#[derive(Debug, Clone)]
struct WriterTarget {
    /// A path, or sqlx's URI of a shared in-memory database.
    filename: PathBuf,
    in_memory: bool,
    synchronous: Sync,
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
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(false);
        // sqlx names a `sqlite::memory:` database `file:sqlx-in-memory-N` and opens it with a
        // shared cache, which is how a second connection can see it.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let target = WriterTarget {
            filename: options.get_filename().to_path_buf(),
            in_memory,
            synchronous: config.sqlite_synchronous,
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections.max(2))
            // An in-memory database lives as long as one connection to it does.
            .min_connections(u32::from(in_memory))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool, target })
    }

    /// Opens the writer's own connection (a blocking call: run it off the async threads, or
    /// at start-up).
    pub(crate) fn open_writer(&self) -> Result<SqliteWriter, StoreError> {
        SqliteWriter::open(&self.target)
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

/// The message writer's connection: prepared statements cached, one transaction per batch,
/// every statement a plain function call on the calling thread.
pub(crate) struct SqliteWriter {
    conn: rusqlite::Connection,
}

const INSERT_MESSAGE: &str = "INSERT INTO messages (room, user_id, user_name, message_type, content, encrypted, key_id, \
     metadata, created_at, idempotency_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
     ON CONFLICT (room, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id";
const SELECT_BY_KEY: &str =
    concat!("SELECT ", message_columns!(), " FROM messages WHERE room = ?1 AND idempotency_key = ?2");
const UPSERT_MEMBER: &str = "INSERT INTO room_members (room, user_id, joined_at, last_seen) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (room, user_id) DO UPDATE SET last_seen = MAX(last_seen, excluded.last_seen)";

impl SqliteWriter {
    fn open(target: &WriterTarget) -> Result<SqliteWriter, StoreError> {
        use rusqlite::OpenFlags;
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_URI;
        // One thread owns the connection: SQLite's own mutex would only add cost.
        flags |= OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if target.in_memory {
            flags |= OpenFlags::SQLITE_OPEN_MEMORY | OpenFlags::SQLITE_OPEN_SHARED_CACHE;
        }
        let conn = rusqlite::Connection::open_with_flags(&target.filename, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // `synchronous` is a setting of each connection, not of the file: this is the one that
        // decides what an acknowledgement promises.
        conn.pragma_update(
            None,
            "synchronous",
            match target.synchronous {
                Sync::Full => "FULL",
                Sync::Normal => "NORMAL",
            },
        )?;
        if !target.in_memory {
            conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT)?;
        }
        conn.set_prepared_statement_cache_capacity(16);
        Ok(SqliteWriter { conn })
    }

    /// Writes a batch in one transaction and commits it; answers each message row in order.
    /// On any error nothing of the batch is committed (the transaction rolls back).
    pub(crate) fn write(&mut self, rows: &[Row]) -> Result<Vec<Written>, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut written = Vec::with_capacity(rows.len());
        // Memberships: the senders of inserted messages and the recorded joins, one row per
        // (room, user) with its first and latest time.
        let mut members: indexmap::IndexMap<(&str, &str), (i64, i64)> = indexmap::IndexMap::new();
        let mut note = |room, user, at| {
            let entry = members.entry((room, user)).or_insert((at, at));
            entry.1 = entry.1.max(at);
        };
        {
            let mut insert = tx.prepare_cached(INSERT_MESSAGE)?;
            let mut by_key = tx.prepare_cached(SELECT_BY_KEY)?;
            for row in rows {
                let m = match row {
                    Row::Message(m) => m,
                    Row::Member { room, user_id, at } => {
                        note(room.as_str(), user_id.as_str(), *at);
                        continue;
                    }
                };
                // With a key, a conflict inserts nothing and returns no row: the earlier
                // message with that key is the answer.
                let id: Option<i64> = insert
                    .query_row(
                        params![
                            m.room,
                            m.user_id,
                            m.user_name,
                            m.message_type,
                            m.content,
                            m.encrypted,
                            m.key_id,
                            m.metadata,
                            m.created_at,
                            m.idempotency_key
                        ],
                        |r| r.get(0),
                    )
                    .optional()?;
                match id {
                    Some(id) => {
                        if let Some(user) = &m.user_id {
                            note(m.room.as_str(), user.as_str(), m.created_at);
                        }
                        written.push(Written::New(id));
                    }
                    None => {
                        let existing = by_key.query_row(params![m.room, m.idempotency_key], raw_message)?;
                        written.push(Written::Existing(existing));
                    }
                }
            }
            let mut upsert = tx.prepare_cached(UPSERT_MEMBER)?;
            for ((room, user), (first, last)) in members {
                upsert.execute(params![room, user, first, last])?;
            }
        }
        tx.commit()?;
        // Rows come back in the batch's order: messages as written, joins answer nothing.
        Ok(written)
    }
}

/// A message row read by the writer's connection.
fn raw_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawMessage> {
    Ok(RawMessage {
        id: r.get(0)?,
        room: r.get(1)?,
        user_id: r.get(2)?,
        user_name: r.get(3)?,
        message_type: r.get(4)?,
        content: r.get(5)?,
        encrypted: r.get(6)?,
        key_id: r.get(7)?,
        metadata: r.get(8)?,
        created_at: r.get(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::InsertRow;

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

    /// One batch answers each row in order: conflicts inside the batch and
    /// with earlier batches return the original, the rest get their new ids, search sees every
    /// stored row, and membership keeps the first and the latest time.
    #[tokio::test]
    async fn a_batch_is_answered_row_by_row() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::open(&url, &DatabaseConfig::default()).await.unwrap();
        let mut writer = store.open_writer().unwrap();
        let first = writer
            .write(&[
                row("r1", "ann", "apple one", None, 10),
                row("r1", "ann", "apple two", Some("k1"), 11),
                Row::Member { room: "r3".into(), user_id: "bob".into(), at: 5 },
                row("r1", "bob", "apple three", Some("k1"), 12),
                row("r2", "ann", "apple four", Some("k1"), 13),
                row("r1", "ann", "apple five", None, 14),
            ])
            .unwrap();
        let mut ids = Vec::new();
        assert_eq!(outcome(&first, &mut ids), ["new", "new", "existing 1", "new", "new"]);
        let second =
            writer.write(&[row("r1", "cat", "apple six", Some("k1"), 20), row("r1", "cat", "pear", None, 21)]).unwrap();
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
