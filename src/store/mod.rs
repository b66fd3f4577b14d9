//! Persistence: chat history, read state, room membership and search, on SQLite (embedded) or
//! PostgreSQL (clusters), behind one interface. Sensitive content is encrypted here, before it
//! reaches either database, and decrypted here for readers entitled to it.
//!
//! Writes go through [`writer`]: one task, a bounded queue, batched transactions, and an
//! acknowledgement only once a row is committed.

/// The columns of a message row, as a literal (SQL text must be static for sqlx).
macro_rules! message_columns {
    () => {
        "id, room, user_id, user_name, message_type, content, encrypted, key_id, metadata, created_at"
    };
}

/// The same, qualified with the table alias `m`.
macro_rules! prefixed_message_columns {
    () => {
        "m.id, m.room, m.user_id, m.user_name, m.message_type, m.content, m.encrypted, m.key_id, m.metadata, m.created_at"
    };
}

pub mod crypto;
pub mod notifications;
mod postgres;
pub mod query;
pub mod retention;
mod sqlite;
pub mod writer;

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use crate::config::{DatabaseConfig, RetentionMode};
use crypto::{CryptoError, Keyring, Sensitivity};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or is unreachable.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The SQLite writer's connection refused a batch.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// Encryption or decryption failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A search query is malformed.
    #[error(transparent)]
    Query(#[from] query::QueryError),
    /// The writer is gone or its queue stayed full.
    #[error("the message store is unavailable: {0}")]
    Unavailable(String),
}

/// Kinds of chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    /// Plain text.
    Text,
    /// A file (its URL in metadata).
    File,
    /// An image (its URL in metadata).
    Image,
    /// A system notice, posted by a backend.
    System,
}

impl MessageType {
    /// Parses the wire spelling.
    pub fn parse(text: &str) -> Option<MessageType> {
        match text {
            "text" => Some(MessageType::Text),
            "file" => Some(MessageType::File),
            "image" => Some(MessageType::Image),
            "system" => Some(MessageType::System),
            _ => None,
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Text => "text",
            MessageType::File => "file",
            MessageType::Image => "image",
            MessageType::System => "system",
        }
    }
}

/// A message on its way into the store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Room.
    pub room: Arc<str>,
    /// Sender (none for system messages from backends).
    pub user_id: Option<String>,
    /// Sender's display name.
    pub user_name: Option<String>,
    /// Kind.
    pub message_type: MessageType,
    /// Text.
    pub content: String,
    /// Extra fields (a file URL, …).
    pub metadata: Option<Value>,
    /// The sender flagged it sensitive.
    pub sensitive: bool,
    /// Server time of receipt, Unix milliseconds.
    pub created_at: i64,
    /// Also deliver to this channel's subscribers (the ingestion API's `channel_id`).
    pub channel: Option<Arc<str>>,
    /// The sender's idempotency key: a second message of the same sender in the same room with
    /// the same key is not stored again; its acknowledgement is the original message.
    pub idempotency_key: Option<String>,
}

/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// Checks a client-chosen idempotency key: 1-200 characters without control characters.
pub fn check_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || key.chars().any(char::is_control) {
        return Err(format!("an idempotency key is 1-{MAX_IDEMPOTENCY_KEY} characters without control characters"));
    }
    Ok(())
}

/// The stored form of an idempotency key: scoped to its sender, length-prefixed so that no two
/// (sender, key) pairs share it.
fn idempotency_scope(user: Option<&str>, key: &str) -> String {
    let user = user.unwrap_or("");
    format!("{}:{user}:{key}", user.len())
}

/// A message as read back, decrypted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredMessage {
    /// Id, increasing within the store.
    pub id: i64,
    /// Room.
    pub room: String,
    /// Sender.
    pub user_id: Option<String>,
    /// Sender's display name.
    pub user_name: Option<String>,
    /// Kind.
    pub message_type: String,
    /// Text (decrypted).
    pub content: String,
    /// Extra fields.
    pub metadata: Option<Value>,
    /// Whether it is stored encrypted.
    pub encrypted: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    /// True when an idempotency key matched an earlier message: this is that message, and
    /// nothing was stored or delivered again.
    #[serde(skip)]
    pub duplicate: bool,
}

impl StoredMessage {
    /// The JSON clients receive, live and from history.
    pub fn to_json(&self) -> Value {
        let timestamp = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.created_at.max(0) as u64),
        )
        .to_string();
        json!({
            "type": "chat_message",
            "id": self.id,
            "message_id": self.id,
            "room": self.room,
            "room_id": self.room,
            "content": self.content,
            "message_type": self.message_type,
            "user_id": self.user_id,
            "username": self.user_name,
            "sender": { "id": self.user_id, "name": self.user_name },
            "metadata": self.metadata,
            "encrypted": self.encrypted,
            "timestamp": timestamp,
            "created_at": self.created_at,
        })
    }
}

/// A row as the database holds it: encrypted content stays opaque.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct RawMessage {
    pub(crate) id: i64,
    pub(crate) room: String,
    pub(crate) user_id: Option<String>,
    pub(crate) user_name: Option<String>,
    pub(crate) message_type: String,
    pub(crate) content: Option<String>,
    pub(crate) encrypted: Option<Vec<u8>>,
    pub(crate) key_id: Option<String>,
    pub(crate) metadata: Option<String>,
    pub(crate) created_at: i64,
}

/// A row ready to insert (already encrypted when sensitive).
#[derive(Debug, Clone)]
pub(crate) struct InsertRow {
    pub(crate) room: String,
    pub(crate) user_id: Option<String>,
    pub(crate) user_name: Option<String>,
    pub(crate) message_type: &'static str,
    pub(crate) content: Option<String>,
    pub(crate) encrypted: Option<Vec<u8>>,
    pub(crate) key_id: Option<String>,
    pub(crate) metadata: Option<String>,
    pub(crate) created_at: i64,
    /// Sender-scoped idempotency key.
    pub(crate) idempotency_key: Option<String>,
}

/// What became of one row of a batch.
#[derive(Debug)]
pub(crate) enum Written {
    /// Inserted with this id.
    New(i64),
    /// Its idempotency key matched this earlier message; nothing was inserted.
    Existing(RawMessage),
}

/// Which page of a room's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The `limit` newest after skipping `offset` newest.
    Offset {
        /// Rows.
        limit: i64,
        /// Skipped.
        offset: i64,
    },
    /// The `limit` messages just before an id (scrolling back).
    Before {
        /// Exclusive upper bound.
        id: i64,
        /// Rows.
        limit: i64,
    },
    /// The `limit` messages just after an id (catching up).
    After {
        /// Exclusive lower bound.
        id: i64,
        /// Rows.
        limit: i64,
    },
}

/// One of a user's rooms.
#[derive(Debug, Clone, Serialize)]
pub struct RoomSummary {
    /// Room.
    pub room: String,
    /// Messages from others not yet read.
    pub unread: i64,
    /// Everything up to this id is read.
    pub last_read_id: i64,
    /// The newest message.
    pub last_message: Option<StoredMessage>,
}

/// What to mark read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkRead {
    /// These messages.
    Ids(Vec<i64>),
    /// Everything up to and including this id.
    UpTo(i64),
}

/// A search result.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    /// The message.
    pub message: StoredMessage,
    /// Relevance, higher is better.
    pub rank: f64,
}

/// A row to write: a message, or a membership record.
#[derive(Debug, Clone)]
pub(crate) enum Row {
    Message(InsertRow),
    Member { room: String, user_id: String, at: i64 },
}

/// The writer's way to a database: SQLite's is a blocking connection of its own for a thread,
/// PostgreSQL's the async pool.
pub(crate) enum BatchWriter<'a> {
    /// Open [`sqlite::SqliteStore::open_writer`] on the writer's thread.
    Sqlite(&'a sqlite::SqliteStore),
    /// Write with [`postgres::PgStore::write`].
    Postgres(&'a postgres::PgStore),
}

enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// The store: a database plus the keys for sensitive content.
pub struct Store {
    backend: Backend,
    keyring: Keyring,
    sensitivity: Sensitivity,
    /// The configuration in use.
    pub config: DatabaseConfig,
}

impl Store {
    /// Opens the database named by `database.url` and runs its migrations.
    pub async fn open(config: &DatabaseConfig) -> Result<Store, StoreError> {
        let url = config.effective_url();
        let url = url.as_str();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(sqlite::SqliteStore::open(url, config).await?)
        } else {
            Backend::Postgres(postgres::PgStore::open(url, config).await?)
        };
        Ok(Store {
            backend,
            keyring: Keyring::new(config)?,
            sensitivity: Sensitivity::new(config)?,
            config: config.clone(),
        })
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Turns a new message into a row, encrypting it when sensitive. Refuses a sensitive
    /// message when no key is configured rather than storing it in the clear.
    pub(crate) fn prepare(&self, message: &NewMessage) -> Result<InsertRow, StoreError> {
        let sensitive = self.sensitivity.is_sensitive(message.sensitive, &message.room, &message.content);
        let (content, encrypted, key_id) = if sensitive {
            let (key_id, sealed) = self.keyring.encrypt(message.content.as_bytes())?;
            (None, Some(sealed), Some(key_id))
        } else {
            (Some(message.content.clone()), None, None)
        };
        // A sensitive message's metadata (a file's URL, say) is as sensitive as its content.
        let metadata = match &message.metadata {
            Some(m) if sensitive => Some(self.keyring.seal_text(m.to_string().as_bytes())?),
            Some(m) => Some(m.to_string()),
            None => None,
        };
        Ok(InsertRow {
            room: message.room.to_string(),
            user_id: message.user_id.clone(),
            user_name: message.user_name.clone(),
            message_type: message.message_type.as_str(),
            content,
            encrypted,
            key_id,
            metadata,
            created_at: message.created_at,
            idempotency_key: message
                .idempotency_key
                .as_deref()
                .map(|k| idempotency_scope(message.user_id.as_deref(), k)),
        })
    }

    /// The keys for sensitive content, for whatever else holds a sensitive message at rest
    /// (Redis stream history).
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    pub(crate) fn open_row(&self, raw: RawMessage) -> Result<StoredMessage, StoreError> {
        let (content, encrypted) = match (raw.content, raw.encrypted, raw.key_id) {
            (Some(content), _, _) => (content, false),
            (None, Some(sealed), Some(key_id)) => {
                let plain = self.keyring.decrypt(&key_id, &sealed)?;
                (String::from_utf8_lossy(&plain).into_owned(), true)
            }
            _ => (String::new(), false),
        };
        Ok(StoredMessage {
            id: raw.id,
            room: raw.room,
            user_id: raw.user_id,
            user_name: raw.user_name,
            message_type: raw.message_type,
            content,
            metadata: match raw.metadata {
                Some(m) if Keyring::is_sealed(m.as_bytes()) => {
                    serde_json::from_slice(&self.keyring.open_text(m.as_bytes())?).ok()
                }
                Some(m) => serde_json::from_str(&m).ok(),
                None => None,
            },
            encrypted,
            created_at: raw.created_at,
            duplicate: false,
        })
    }

    fn open_rows(&self, rows: Vec<RawMessage>) -> Result<Vec<StoredMessage>, StoreError> {
        rows.into_iter().map(|r| self.open_row(r)).collect()
    }

    /// How the writer reaches this database.
    pub(crate) fn batch_writer(&self) -> BatchWriter<'_> {
        match &self.backend {
            Backend::Sqlite(s) => BatchWriter::Sqlite(s),
            Backend::Postgres(s) => BatchWriter::Postgres(s),
        }
    }

    /// A page of a room's history, oldest first.
    pub async fn history(&self, room: &str, page: Page) -> Result<Vec<StoredMessage>, StoreError> {
        let rows = match &self.backend {
            Backend::Sqlite(s) => s.history(room, page).await?,
            Backend::Postgres(s) => s.history(room, page).await?,
        };
        self.open_rows(rows)
    }

    /// The rooms a user joined or wrote in, most recently active first.
    pub async fn rooms_of(&self, user: &str) -> Result<Vec<RoomSummary>, StoreError> {
        let rows = match &self.backend {
            Backend::Sqlite(s) => s.rooms_of(user).await?,
            Backend::Postgres(s) => s.rooms_of(user).await?,
        };
        rows.into_iter()
            .map(|(room, unread, last_read_id, last)| {
                Ok(RoomSummary {
                    room,
                    unread,
                    last_read_id,
                    last_message: last.map(|r| self.open_row(r)).transpose()?,
                })
            })
            .collect()
    }

    /// Marks messages read; returns the ids that were in the room (for `Ids`) and the new
    /// read-up-to mark.
    pub async fn mark_read(
        &self,
        room: &str,
        user: &str,
        what: &MarkRead,
        at: i64,
    ) -> Result<(Vec<i64>, i64), StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.mark_read(room, user, what, at).await,
            Backend::Postgres(s) => s.mark_read(room, user, what, at).await,
        }
    }

    /// Messages matching a query, best first, optionally in one room; encrypted messages are
    /// never found. The caller filters by access.
    pub async fn search(&self, text: &str, room: Option<&str>, limit: i64) -> Result<Vec<SearchHit>, StoreError> {
        let parsed = query::parse(text)?;
        let rows = match &self.backend {
            Backend::Sqlite(s) => s.search(&parsed, room, limit).await?,
            Backend::Postgres(s) => s.search(&parsed, room, limit).await?,
        };
        rows.into_iter().map(|(raw, rank)| Ok(SearchHit { message: self.open_row(raw)?, rank })).collect()
    }

    /// Deletes or archives messages older than `cutoff_ms`; returns how many.
    pub async fn retain(&self, cutoff_ms: i64, mode: RetentionMode, now_ms: i64) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.retain(cutoff_ms, mode, now_ms).await,
            Backend::Postgres(s) => s.retain(cutoff_ms, mode, now_ms).await,
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(s) => s.ping().await,
            Backend::Postgres(s) => s.ping().await,
        }
    }
}

/// Checks text bound for the store: PostgreSQL cannot hold U+0000 in text, so no backend takes
/// it (the same rule on SQLite keeps the two interchangeable). `what` names the field.
pub fn check_storable(what: &str, text: &str) -> Result<(), String> {
    if text.contains('\0') { Err(format!("{what} must not contain NUL (U+0000) characters")) } else { Ok(()) }
}

/// The same for a JSON value (metadata): no string in it may hold U+0000.
pub fn check_storable_json(what: &str, value: &serde_json::Value) -> Result<(), String> {
    match value {
        serde_json::Value::String(s) => check_storable(what, s),
        serde_json::Value::Array(items) => items.iter().try_for_each(|v| check_storable_json(what, v)),
        serde_json::Value::Object(map) => {
            map.iter().try_for_each(|(k, v)| check_storable(what, k).and_then(|()| check_storable_json(what, v)))
        }
        _ => Ok(()),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    crate::stats::unix_millis() as i64
}
