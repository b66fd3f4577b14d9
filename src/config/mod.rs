//! One typed configuration for the whole node.
//!
//! Sources, from lowest to highest precedence: built-in defaults, a TOML file (`--config`), the
//! variables of the systems the compatibility profiles replace (`REDIS_URL`, `WEBSOCKET_PING_INTERVAL`, …),
//! `HERALD_*` environment variables, and command-line flags. [`load()`] merges them and
//! [`Config::validate`] rejects anything inconsistent with a message naming the key.
//!
//! Every section has a `Default` that runs Herald embedded: no Redis, no database, loopback only.

mod collab;
pub mod data_dir;
pub mod duration;
mod level;
pub mod load;
pub mod pusher;
pub mod reference;
mod security;
pub mod show;
pub mod stream;
pub mod text;

pub use collab::{
    AliasAction, AliasConfig, LifecycleEvent, NotificationsConfig, PresenceConfig, TypingEvent, UpstreamConfig,
};
pub use security::{
    AccessConfig, AccessDefault, AccessRuleConfig, AuditConfig, AuthConfig, AuthMode, ClaimCondition, ExpiryPolicy,
    NameKind, NetList, RejectStyle, TlsConfig, parse_net,
};

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use stream::{CompressionConfig, HistoryConfig};

pub use load::{ConfigError, Overrides, Sources, from_toml_str, load, load_with_sources};

/// The whole configuration of a node.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listening socket, mounts, shards, shutdown.
    pub server: ServerConfig,
    /// WebSocket behaviour shared by all endpoints.
    pub websocket: WebSocketConfig,
    /// Dedicated WebSocket endpoints under every mount (e.g. `/ws/campaigns`).
    pub endpoints: Vec<EndpointConfig>,
    /// Per-channel behaviour: default event type, broadcast to everyone.
    pub channels: Vec<ChannelConfig>,
    /// The HTTP API for backends.
    pub api: ApiConfig,
    /// The message-ingestion route `POST /messages` (and `GET /messages`).
    pub ingest: IngestConfig,
    /// Connection and message limits.
    pub limits: LimitsConfig,
    /// Token verification.
    pub auth: AuthConfig,
    /// Who may do what to rooms and channels.
    pub access: AccessConfig,
    /// TLS.
    pub tls: TlsConfig,
    /// The audit log.
    pub audit: AuditConfig,
    /// Presence, typing, cursors.
    pub presence: PresenceConfig,
    /// Stored notifications.
    pub notifications: NotificationsConfig,
    /// Requests and lifecycle events for the application's backend.
    pub upstream: UpstreamConfig,
    /// Application messages mapped to built-in actions.
    pub aliases: Vec<AliasConfig>,
    /// Bounded recent history (and sequence numbers) per channel or room namespace.
    pub history: Vec<HistoryConfig>,
    /// permessage-deflate (RFC 7692).
    pub compression: CompressionConfig,
    /// Redis: the cross-node broker and the integration point for publishers.
    pub redis: RedisConfig,
    /// Persistence of history (SQLite by default, PostgreSQL by URL).
    pub database: DatabaseConfig,
    /// Logging.
    pub log: LogConfig,
    /// The Pusher Channels protocol face and its apps.
    pub pusher: pusher::PusherConfig,
}

/// Where and how the node listens.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on. Port 0 picks a free port (printed at start).
    #[serde(deserialize_with = "text::socket_addr")]
    pub listen: SocketAddr,
    /// Path prefixes under which the WebSocket endpoints and the mirrored REST API live.
    /// Several may be active at once, e.g. `["/ws", "/api/v1/ws"]`.
    pub mounts: Vec<String>,
    /// Number of shard threads that own connections; 0 means one per CPU.
    pub shards: usize,
    /// A stable name for this node in a cluster; random when absent.
    #[serde(deserialize_with = "text::opt_string")]
    pub node_id: Option<String>,
    /// How long a graceful shutdown may take before remaining sockets are dropped.
    #[schemars(with = "String")]
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// How long an HTTP request's body may take to arrive after its headers; a slower one gets
    /// 408 and its connection is closed.
    #[schemars(with = "String")]
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// HTTP requests handled at once by the node; more get 503 at once. 0: no cap.
    pub max_requests_in_flight: usize,
    /// Also speak HTTP/2: with prior knowledge (h2c) on a plaintext listener, on the same port as
    /// HTTP/1.1, and through ALPN (`h2` before `http/1.1`) on a TLS one. A backend can multiplex
    /// many API calls over one connection. WebSockets stay on HTTP/1.1.
    pub http2: bool,
    /// Browser origins allowed to open WebSockets and call the API (CORS). Empty: any origin.
    pub allowed_origins: Vec<String>,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` names the real client.
    #[schemars(with = "Vec<String>")]
    pub trusted_proxies: NetList,
    /// Serve the live dashboard and the test console (pages embedded in the binary).
    pub dashboard: bool,
    /// Where the dashboard lives; the console is at `<dashboard_path>console` (or `/console`).
    #[serde(deserialize_with = "text::string")]
    pub dashboard_path: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            mounts: vec!["/ws".into()],
            shards: 0,
            node_id: None,
            shutdown_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_requests_in_flight: 1024,
            http2: true,
            allowed_origins: Vec::new(),
            trusted_proxies: NetList::default(),
            dashboard: true,
            dashboard_path: "/".into(),
        }
    }
}

/// Behaviour common to every WebSocket connection.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Interval of server heartbeats (a `heartbeat` message and a WebSocket ping frame).
    #[schemars(with = "String")]
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// Send the JSON `{"type":"heartbeat"}` message at each interval.
    pub heartbeat_message: bool,
    /// Send a WebSocket ping frame at each interval.
    pub ping_frames: bool,
    /// A connection from which nothing (not even a pong) arrives for this long is closed.
    #[schemars(with = "String")]
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Largest message a client may send, in bytes. Larger ones close the connection (1009).
    pub max_message_size: usize,
    /// Frames a connection may have queued before it is treated as a slow consumer.
    pub outbound_queue: usize,
    /// Bytes a connection may have queued before it is treated as a slow consumer.
    pub outbound_queue_bytes: usize,
    /// Write pacing under fan-out load: after a shard's pass of writes to N connections for which
    /// events had queued up, each of them is written at most once per N × this (at most
    /// `max_write_delay`), so the events in between share one write per connection. The
    /// connections are written in slices spread across that time, so an event waits on average
    /// half of it. A lone event on a quiet shard is written at once, and a pass to a few
    /// connections holds for microseconds; 0 turns pacing off (every event written at once).
    #[schemars(with = "String")]
    #[serde(with = "duration")]
    pub write_pacing: Duration,
    /// The longest a connection's fan-out write is held back by `write_pacing`. Below about 90 ms
    /// a shard of 5,000 busy subscribers was measured to write more often than its readers could
    /// follow (BENCHMARKS.md, "The connect storm"), so the default leaves a margin above that.
    #[schemars(with = "String")]
    #[serde(with = "duration")]
    pub max_write_delay: Duration,
    /// The welcome message sent on connect, unless an endpoint says otherwise.
    pub welcome: WelcomeStyle,
    /// Serve the main endpoint at the bare mount path (`/ws`).
    pub main_endpoint: bool,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_message: true,
            ping_frames: true,
            idle_timeout: Duration::from_secs(120),
            max_message_size: 64 * 1024,
            outbound_queue: 256,
            outbound_queue_bytes: 8 * 1024 * 1024,
            write_pacing: Duration::from_micros(24),
            max_write_delay: Duration::from_millis(130),
            welcome: WelcomeStyle::Connection,
            main_endpoint: true,
        }
    }
}

/// Which welcome message a client gets right after the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WelcomeStyle {
    /// `{"type":"connection", …}` as the campaign-events profile's clients expect.
    Connection,
    /// `{"type":"connection_established", …}` as the manufacturing-chat profile's clients expect.
    ConnectionEstablished,
    /// No welcome message at all.
    None,
}

/// What an endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    /// The Herald protocol: events, subscriptions, rooms.
    #[default]
    Events,
    /// A live stream of node statistics (the message-dashboard profile's `/ws/stats`).
    Stats,
    /// Echoes every message back; for conformance testing only.
    Echo,
    /// The Pusher Channels protocol (`/app/{key}`); never configured as an endpoint.
    #[serde(skip)]
    Pusher,
}

/// A dedicated WebSocket endpoint, e.g. `/ws/campaigns?campaign_id=123`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointConfig {
    /// Path under each mount, starting with `/` (`"/campaigns"`), or `""` for the mount itself.
    pub path: String,
    /// What the endpoint serves.
    pub kind: EndpointKind,
    /// Channels every connection on this endpoint is subscribed to. `{param}` takes a query parameter.
    pub channels: Vec<String>,
    /// Rooms every connection joins. `{param}` takes a query parameter; a template whose parameter
    /// is absent is skipped (`campaign:{campaign_id}` without `campaign_id`).
    pub rooms: Vec<String>,
    /// Accept the `channels=a,b` query parameter (on by default).
    pub query_channels: Option<bool>,
    /// Welcome style for this endpoint; the `websocket.welcome` default when absent.
    pub welcome: Option<WelcomeStyle>,
    /// Largest client message on this endpoint; `websocket.max_message_size` when absent.
    pub max_message_size: Option<usize>,
    /// Authentication on this endpoint; `auth.mode` when absent.
    pub auth: Option<AuthMode>,
}

/// Behaviour of one channel, or of every channel matching a pattern ending in `*`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelConfig {
    /// Exact channel name (`jobs:updates`) or a prefix pattern (`campaign:*`).
    pub name: String,
    /// The `type` given to an event published here without one.
    pub default_type: Option<String>,
    /// Deliver every event of this channel to every connection of the node, subscribed or not.
    pub broadcast: bool,
    /// Reshape every event of this channel once, before it fans out (`[channels.shape]`).
    pub shape: Option<ShapeConfig>,
}

/// How a channel's events are reshaped before delivery, in this order: `rename`, `copy`, `lift`,
/// `drop`, then `type`. Paths are dot-separated object keys (`data.status`); a list of paths takes
/// the first one present, and a field whose paths are all absent is left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ShapeConfig {
    /// The `type` every event gets, replacing the publisher's (unlike `default_type`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Top-level fields renamed: `{ old = "new" }`.
    pub rename: std::collections::BTreeMap<String, String>,
    /// Top-level fields set to a copy of the value at a path: `{ status = ["status", "data.status"] }`.
    pub copy: std::collections::BTreeMap<String, ShapePaths>,
    /// The same as `copy`, but the value is removed from where it was found.
    pub lift: std::collections::BTreeMap<String, ShapePaths>,
    /// Top-level fields removed (routing fields such as `event`, `room`, `user_id`).
    pub drop: Vec<String>,
}

/// One path or a list of paths tried in order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ShapePaths {
    /// `"data.status"`.
    One(String),
    /// `["status", "data.status"]`: the first present.
    Any(Vec<String>),
}

impl ShapePaths {
    /// The paths, in the order they are tried.
    pub fn as_slice(&self) -> &[String] {
        match self {
            ShapePaths::One(path) => std::slice::from_ref(path),
            ShapePaths::Any(paths) => paths,
        }
    }
}

/// The HTTP API for backends and operators.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer key required by publish and admin routes. Without one those routes refuse every
    /// request, unless `local_admin_without_key` opens them to direct loopback callers.
    #[serde(deserialize_with = "text::opt_string")]
    pub key: Option<String>,
    /// Development only: with no `key`, let a caller on this machine use publish and admin routes
    /// without credentials. A request through a proxy (from `server.trusted_proxies`, or with a
    /// forwarding header) never counts as local. Start-up announces it.
    pub local_admin_without_key: bool,
    /// Largest request body accepted, in bytes.
    pub max_body_size: Option<usize>,
    /// Most events in one `POST /api/publish/batch` (default 1000); more is refused with 413.
    pub max_batch_items: Option<usize>,
    /// Largest body of one `POST /api/publish/batch`, in bytes (default 1 MiB); more is refused
    /// with 413.
    pub max_batch_bytes: Option<usize>,
    /// How long a batch item's idempotency key is remembered, so that a retried batch publishes
    /// it once (default 5 minutes).
    #[serde(default, with = "duration::option")]
    #[schemars(with = "Option<String>")]
    pub idempotency_window: Option<Duration>,
    /// Addresses or CIDR ranges allowed to call admin routes; empty: any (with the key).
    #[schemars(with = "Vec<String>")]
    pub allowed_ips: NetList,
    /// `GET <mount>/rooms` with the API key answers a bare JSON list of rooms (`room_id`,
    /// `user_count`, `active_sheets_count`, `last_activity`, `messages_sent`,
    /// `avg_users_per_hour`), as the spreadsheet profile's clients read it, instead of Herald's
    /// `{"success":…,"rooms":[…]}`. Turning it on also records per-room activity.
    pub bare_room_list: bool,
}

/// The message-ingestion route (`POST /messages`, `GET /messages`): when it answers, and who may
/// call it, independently of the admin API.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Answer `201` only once the messages are committed, instead of `202` as soon as they are
    /// queued for the batching writer. A full queue is refused with `503` either way.
    pub wait_for_commit: bool,
    /// Who may call the route.
    pub access: IngestAccess,
    /// The route's own bearer key, for `access = "key"`.
    #[serde(deserialize_with = "text::opt_string")]
    pub key: Option<String>,
    /// Addresses or CIDR ranges allowed to call the route (with `access` `open` or `key`);
    /// empty: any.
    #[schemars(with = "Vec<String>")]
    pub allowed_ips: NetList,
}

/// Who may call the ingestion route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IngestAccess {
    /// As the admin API: `api.key` (or loopback without one) and `api.allowed_ips`.
    #[default]
    Api,
    /// The route's own `ingest.key`.
    Key,
    /// No key; only `ingest.allowed_ips`, when set, restricts callers.
    Open,
}

/// Connection and message limits. 0 disables a cap.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Total WebSocket connections this node accepts; further upgrades get HTTP 503. 0: no cap.
    pub max_connections: usize,
    /// Connections from one client address (across nodes with Redis). 0: no cap. The default
    /// (256) protects a node nobody tuned; load tests from one address raise it deliberately.
    pub max_connections_per_ip: usize,
    /// Connections of one user (across nodes with Redis). 0: no cap.
    pub max_connections_per_user: usize,
    /// Client messages per minute, per connection and per user. 0: no limit.
    pub messages_per_minute: u32,
    /// Client messages per hour, per connection and per user. 0: no limit.
    pub messages_per_hour: u32,
    /// How long a connection (and its user) is refused after exceeding a rate.
    #[schemars(with = "String")]
    #[serde(with = "duration")]
    pub block_duration: Duration,
    /// Refusals while blocked after which the connection is closed (1008). 0: never.
    pub disconnect_after_refusals: u32,
    /// Message types not counted by the rate limits (high-frequency, coalesced elsewhere).
    pub rate_exempt_types: Vec<String>,
    /// Messages of the rate-exempt types one connection may send per second (a burst of as many);
    /// beyond it they are refused and the refusals count toward `disconnect_after_refusals`.
    /// 0: no bound.
    pub exempt_per_second: u32,
    /// Channels one connection may be subscribed to at once (default 1,000). 0: no cap.
    pub max_channels_per_connection: usize,
    /// Rooms one connection may be in at once (default 200). 0: no cap.
    pub max_rooms_per_connection: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 0,
            max_connections_per_ip: 256,
            max_connections_per_user: 0,
            messages_per_minute: 60,
            messages_per_hour: 1000,
            block_duration: Duration::from_secs(15 * 60),
            disconnect_after_refusals: 20,
            rate_exempt_types: ["ping", "pong", "cursor_move", "typing_start", "typing_stop", "refresh_token"]
                .map(String::from)
                .to_vec(),
            exempt_per_second: 50,
            max_channels_per_connection: 1000,
            max_rooms_per_connection: 200,
        }
    }
}

/// Redis settings.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`. Without it the node runs its in-process broker. In cluster mode,
    /// any one node of the cluster (more in `cluster_nodes`).
    #[serde(deserialize_with = "text::opt_string")]
    pub url: Option<String>,
    /// `standalone` (default) or `cluster` (Redis Cluster with sharded pub/sub; every feature
    /// works there, each command within one hash slot: the key layout is `docs/redis-keys.md`).
    pub mode: RedisMode,
    /// Further cluster nodes to discover the cluster from.
    pub cluster_nodes: Vec<String>,
    /// Publishers' prefixes: the node pattern-subscribes `<prefix>:*` and routes each message to
    /// the channel named by the rest (`acme:campaigns` → `campaigns`).
    pub prefixes: Vec<String>,
    /// Exact Redis channels to take events from (`acme:jobs:updates`). The Herald channel is
    /// the name without a matching prefix from `prefixes`, or the whole name.
    pub channels: Vec<String>,
    /// Field of a published message that also routes it to a room (empty: none).
    pub room_field: String,
    /// Field of a published message that also routes it to a user's connections (empty: none).
    pub user_field: String,
    /// Prefix of Herald's own keys and channels between nodes.
    pub key_prefix: String,
    /// How long to wait for Redis before a command counts as failed.
    #[schemars(with = "String")]
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// A node not heard from for this long is considered dead: its connections stop counting
    /// and its users' presence expires.
    #[schemars(with = "String")]
    #[serde(with = "duration")]
    pub node_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            mode: RedisMode::Standalone,
            cluster_nodes: Vec::new(),
            prefixes: Vec::new(),
            channels: Vec::new(),
            room_field: "room".into(),
            user_field: "user_id".into(),
            key_prefix: "herald".into(),
            timeout: Duration::from_secs(2),
            node_timeout: Duration::from_secs(10),
        }
    }
}

/// How Herald talks to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RedisMode {
    /// One Redis server: `PUBLISH`/`SUBSCRIBE`.
    Standalone,
    /// Redis Cluster: `SPUBLISH`/`SSUBSCRIBE` between nodes, so traffic spreads over shards.
    Cluster,
}

/// History storage settings.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` (embedded), `sqlite::memory:` (nothing on disk; history lost at exit) or
    /// `postgres://…` (clusters). Without one: `herald.db` in `data_dir`.
    #[serde(deserialize_with = "text::opt_string")]
    pub url: Option<String>,
    /// Where the embedded database lives when `url` is not set (`--data-dir`; created if
    /// missing). Default: `$STATE_DIRECTORY` under systemd, `/var/lib/herald` for root, else the
    /// user's data directory (`~/.local/share/herald`).
    pub data_dir: Option<std::path::PathBuf>,
    /// Connections in the pool.
    pub max_connections: u32,
    /// Most rows the writer commits in one transaction (the message-dashboard profile's 50).
    pub batch_size: usize,
    /// How long the writer waits for a batch to fill once it has a row. 0 (the default) commits
    /// at once and batches whatever arrived meanwhile ("group commit"); `2s` reproduces the
    /// message-dashboard profile's "50 rows or 2 seconds".
    #[schemars(with = "String")]
    #[serde(with = "duration")]
    pub batch_linger: Duration,
    /// Rows waiting for the writer before senders are held back.
    pub queue_capacity: usize,
    /// SQLite `synchronous`: `full` (every commit reaches the disk) or `normal` (safe against a
    /// process crash, not against power loss).
    pub sqlite_synchronous: SqliteSynchronous,
    /// A key or passphrase for sensitive content (key id `default`; the manufacturing-chat profile's
    /// `WEBSOCKET_ENCRYPTION_KEY`).
    #[serde(deserialize_with = "text::opt_string")]
    pub encryption_key: Option<String>,
    /// Keys by id (base64 of 32 bytes, or passphrases), for rotation.
    pub encryption_keys: std::collections::BTreeMap<String, String>,
    /// The key id new messages are encrypted with.
    pub encryption_key_id: Option<String>,
    /// Rooms whose messages are always encrypted (patterns with `*`).
    pub sensitive_rooms: Vec<String>,
    /// Regular expressions that make a message sensitive (card numbers, …).
    pub sensitive_patterns: Vec<String>,
    /// Largest chat message content, in bytes.
    pub max_content_size: usize,
    /// Messages older than this (`"30d"`, `"90days"`) are deleted or archived; 0 keeps
    /// everything.
    #[schemars(with = "String")]
    #[serde(with = "duration")]
    pub retention_max_age: Duration,
    /// `delete` or `archive` (moved to `messages_archive`).
    pub retention_mode: RetentionMode,
    /// How often retention runs.
    #[schemars(with = "String")]
    #[serde(with = "duration")]
    pub retention_interval: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            data_dir: None,
            max_connections: 8,
            batch_size: 50,
            batch_linger: Duration::ZERO,
            queue_capacity: 10_000,
            sqlite_synchronous: SqliteSynchronous::Full,
            encryption_key: None,
            encryption_keys: std::collections::BTreeMap::new(),
            encryption_key_id: None,
            sensitive_rooms: Vec::new(),
            sensitive_patterns: Vec::new(),
            max_content_size: 16 * 1024,
            retention_max_age: Duration::ZERO,
            retention_mode: RetentionMode::Delete,
            retention_interval: Duration::from_secs(3600),
        }
    }
}

impl DatabaseConfig {
    /// The URL in use: the configured one or the embedded SQLite file in [`Self::data_dir`].
    pub fn effective_url(&self) -> String {
        match (&self.url, self.data_dir()) {
            (Some(url), _) => url.clone(),
            (None, Some(dir)) => format!("sqlite://{}", dir.join(data_dir::DATABASE_FILE).display()),
            // No home directory and nothing configured: the working directory, as before.
            (None, None) => format!("sqlite://{}", data_dir::DATABASE_FILE),
        }
    }

    /// The directory the embedded database is written to; `None` when `url` names the database.
    pub fn data_dir(&self) -> Option<std::path::PathBuf> {
        if self.url.is_some() {
            return None;
        }
        self.data_dir.clone().or_else(data_dir::default_data_dir)
    }
}

/// SQLite durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SqliteSynchronous {
    /// Every commit is on disk before it is acknowledged.
    Full,
    /// Commits survive a crash of Herald, not necessarily of the machine.
    Normal,
}

/// What retention does with old messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetentionMode {
    /// Delete them.
    Delete,
    /// Move them to `messages_archive`.
    Archive,
}

/// Log output.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `human` (default) or `json`, one object per line.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `herald=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Human, level: "info".into() }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Checks what serde cannot: ranges, formats and consistency between keys.
    /// Every problem is reported, each naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut problem = |key: String, what: &str| problems.push(format!("{key}: {what}"));

        // Each section checks itself; what follows the section calls is what spans sections.
        self.server.validate(&mut problem);
        self.websocket.validate(&mut problem);
        let mut paths = std::collections::HashSet::new();
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            endpoint.validate(i, &mut problem);
            if !paths.insert(endpoint.path.as_str()) {
                problem(format!("endpoints[{i}].path"), "is declared twice");
            }
        }
        for (i, channel) in self.channels.iter().enumerate() {
            channel.validate(i, &mut problem);
        }
        self.validate_streams(&mut problem);
        if let Some(key) = &self.api.key
            && key.len() < 8
        {
            problem("api.key".into(), "must be at least 8 characters");
        }
        self.redis.validate(&mut problem);
        self.validate_security(&mut problem);
        self.database.validate(&mut problem);
        self.upstream.validate(&mut problem);
        if self.upstream.redis_stream.is_some() && self.redis.url.is_none() {
            problem("upstream.redis_stream".into(), "needs redis.url");
        }
        self.presence.validate(&mut problem);
        for (i, alias) in self.aliases.iter().enumerate() {
            alias.validate(i, &mut problem);
        }
        if let Err(e) = level::check(&self.log.level) {
            problem("log.level".into(), &e);
        }

        problems.extend(self.pusher.problems());
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(problems)) }
    }

    /// The listening address (parsed when the configuration was read; never fails now, kept
    /// for its callers).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        Ok(self.server.listen)
    }
}

impl ServerConfig {
    /// `[server]`'s own checks: mounts, dashboard path, node id, shutdown timeout.
    pub(crate) fn validate(&self, problem: &mut dyn FnMut(String, &str)) {
        if self.mounts.is_empty() {
            problem("server.mounts".into(), "must name at least one path prefix such as \"/ws\"");
        }
        for (i, mount) in self.mounts.iter().enumerate() {
            if !mount.starts_with('/') || (mount.len() > 1 && mount.ends_with('/')) {
                problem(format!("server.mounts[{i}]"), "must start with '/' and not end with '/'");
            }
            if mount == "/" || mount == "/api" || mount == "/metrics" || mount == "/health" {
                problem(format!("server.mounts[{i}]"), "collides with a built-in route; choose a prefix such as /ws");
            }
        }
        let dashboard = &self.dashboard_path;
        if !dashboard.starts_with('/') || !dashboard.ends_with('/') {
            problem("server.dashboard_path".into(), "must start and end with '/', such as \"/\" or \"/admin/\"");
        } else if dashboard.starts_with("/api/") || self.mounts.iter().any(|m| dashboard.starts_with(&format!("{m}/")))
        {
            problem("server.dashboard_path".into(), "collides with the API or a WebSocket mount");
        }
        if let Some(id) = &self.node_id
            && (id.is_empty()
                || id.len() > 64
                || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            problem("server.node_id".into(), "must be 1-64 characters of letters, digits, '-' or '_'");
        }
        if self.shutdown_timeout > MAX_DURATION {
            problem("server.shutdown_timeout".into(), "must be at most 365 days");
        }
    }
}

impl WebSocketConfig {
    /// `[websocket]`'s own checks: durations that fit the clock, heartbeat against idle
    /// timeout, message and queue sizes.
    pub(crate) fn validate(&self, problem: &mut dyn FnMut(String, &str)) {
        for (key, value) in
            [("websocket.heartbeat_interval", self.heartbeat_interval), ("websocket.idle_timeout", self.idle_timeout)]
        {
            if value > MAX_DURATION {
                problem(key.into(), "must be at most 365 days");
            }
        }
        if self.heartbeat_interval < Duration::from_millis(100) {
            problem("websocket.heartbeat_interval".into(), "must be at least 100ms");
        }
        if self.idle_timeout < self.heartbeat_interval {
            problem(
                "websocket.idle_timeout".into(),
                "must be at least websocket.heartbeat_interval, or live clients would be cut off between heartbeats",
            );
        }
        if self.max_message_size < 125 {
            problem("websocket.max_message_size".into(), "must be at least 125 bytes");
        }
        if self.outbound_queue == 0 {
            problem("websocket.outbound_queue".into(), "must be at least 1");
        }
        if self.outbound_queue_bytes < 1024 {
            problem("websocket.outbound_queue_bytes".into(), "must be at least 1024");
        }
        if self.write_pacing > Duration::from_millis(1) {
            problem("websocket.write_pacing".into(), "must be at most 1ms (per connection written)");
        }
        if self.max_write_delay > Duration::from_secs(1) {
            problem("websocket.max_write_delay".into(), "must be at most 1s");
        }
    }
}

impl EndpointConfig {
    /// One `[[endpoints]]` entry's own checks (`i` is its index, for the key names); that no two
    /// share a path is the list's check.
    pub(crate) fn validate(&self, i: usize, problem: &mut dyn FnMut(String, &str)) {
        let key = format!("endpoints[{i}].path");
        if !self.path.is_empty() && (!self.path.starts_with('/') || self.path.ends_with('/')) {
            problem(key.clone(), "must be \"\" (the mount itself) or start with '/' and not end with '/'");
        }
        for reserved in RESERVED_MOUNT_PATHS {
            if self.path == *reserved {
                problem(key.clone(), "collides with a built-in route under the mount");
            }
        }
        for (j, template) in self.channels.iter().chain(&self.rooms).enumerate() {
            if let Err(e) = crate::protocol::template::check(template) {
                problem(format!("endpoints[{i}] template {j} ({template:?})"), &e);
            }
        }
        if self.max_message_size.is_some_and(|m| m < 125) {
            problem(format!("endpoints[{i}].max_message_size"), "must be at least 125 bytes");
        }
    }
}

impl ChannelConfig {
    /// One `[[channels]]` entry's own checks (`i` is its index, for the key names).
    pub(crate) fn validate(&self, i: usize, problem: &mut dyn FnMut(String, &str)) {
        if !stream::is_name_or_prefix(&self.name) {
            problem(
                format!("channels[{i}].name"),
                "must be a channel name, or a prefix followed by a single trailing '*'",
            );
        }
        if self.default_type.as_deref() == Some("") {
            problem(format!("channels[{i}].default_type"), "must not be empty");
        }
        if let Some(shape) = &self.shape {
            let key = format!("channels[{i}].shape");
            if shape.kind.as_deref() == Some("") {
                problem(format!("{key}.type"), "must not be empty");
            }
            let bad_path = |p: &String| p.split('.').any(str::is_empty);
            for (what, fields) in [("copy", &shape.copy), ("lift", &shape.lift)] {
                for (field, paths) in fields {
                    if field.is_empty() || paths.as_slice().is_empty() || paths.as_slice().iter().any(bad_path) {
                        problem(
                            format!("{key}.{what}.{field}"),
                            "must name a field and one or more dot-separated paths such as \"data.status\"",
                        );
                    }
                }
            }
            if shape.rename.iter().any(|(from, to)| from.is_empty() || to.is_empty())
                || shape.drop.iter().any(String::is_empty)
            {
                problem(key, "rename and drop need non-empty field names");
            }
        }
    }
}

impl RedisConfig {
    /// `[redis]`'s own checks.
    pub(crate) fn validate(&self, problem: &mut dyn FnMut(String, &str)) {
        if let Some(url) = &self.url
            && !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://"))
        {
            problem("redis.url".into(), "must start with redis://, rediss:// or unix://");
        }
        if self.node_timeout < Duration::from_secs(3) {
            problem("redis.node_timeout".into(), "must be at least 3s (nodes record themselves every 2 s)");
        }
    }
}

impl DatabaseConfig {
    /// `[database]`'s own checks: URL, sizes, encryption keys and sensitivity rules.
    pub(crate) fn validate(&self, problem: &mut dyn FnMut(String, &str)) {
        let db = self;
        let url = db.effective_url();
        let url = url.as_str();
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            problem("database.url".into(), "must be sqlite://PATH or postgres://…");
        }
        if db.batch_size == 0 || db.batch_size > 10_000 {
            problem("database.batch_size".into(), "must be between 1 and 10000");
        }
        if db.queue_capacity == 0 {
            problem("database.queue_capacity".into(), "must be at least 1");
        }
        if db.max_connections == 0 {
            problem("database.max_connections".into(), "must be at least 1");
        }
        if db.max_content_size == 0 {
            problem("database.max_content_size".into(), "must be at least 1");
        }
        let has_key = db.encryption_key.is_some() || !db.encryption_keys.is_empty();
        if (!db.sensitive_rooms.is_empty() || !db.sensitive_patterns.is_empty()) && !has_key {
            problem(
                "database.encryption_key".into(),
                "sensitive rooms or patterns are configured, so an encryption key is required",
            );
        }
        for (i, pattern) in db.sensitive_patterns.iter().enumerate() {
            if let Err(e) = regex::Regex::new(pattern) {
                problem(format!("database.sensitive_patterns[{i}]"), &format!("is not a regular expression: {e}"));
            }
        }
        if let Some(id) = &db.encryption_key_id
            && !db.encryption_keys.contains_key(id)
            && !(id == "default" && db.encryption_key.is_some())
        {
            problem("database.encryption_key_id".into(), "names no configured key");
        }
    }
}

/// The longest interval or timeout a setting may take. Durations are added to the clock
/// (heartbeat and shutdown deadlines), which cannot hold an arbitrarily distant future; a year is
/// past any sensible value, and "never" is spelled with a long one.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Paths under a mount that Herald serves itself and endpoints may not take.
pub const RESERVED_MOUNT_PATHS: &[&str] =
    &["/stats", "/health", "/rooms", "/connections", "/users", "/broadcast", "/shutdown"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    /// An alias that takes a built-in type's name would validate and never fire (the built-in
    /// handler comes first): every name the dispatcher handles is refused, `history` included
    /// (it once was missing from a hand-kept list).
    #[test]
    fn an_alias_cannot_take_a_built_in_name() {
        let names = crate::protocol::kinds::BUILT_IN.iter().map(|(name, _)| *name);
        for name in names.chain(["history"]) {
            let mut config = Config::default();
            config.aliases.push(AliasConfig {
                kind: name.into(),
                action: AliasAction::JoinRoom,
                target: "order_{order_id}".into(),
            });
            let err = config.validate().map(|_| ()).unwrap_err().to_string();
            assert!(err.contains("aliases[0].type"), "{name}: {err}");
        }
    }

    #[test]
    fn every_problem_names_its_key() {
        let mut config = Config::default();
        config.server.mounts = vec!["ws/".into()];
        config.websocket.outbound_queue = 0;
        config.endpoints.push(EndpointConfig { path: "campaigns".into(), ..Default::default() });
        let ConfigError::Invalid(problems) = config.validate().unwrap_err() else { panic!("expected Invalid") };
        let joined = problems.join("\n");
        for key in ["server.mounts[0]", "websocket.outbound_queue", "endpoints[0].path"] {
            assert!(joined.contains(key), "{key} missing from:\n{joined}");
        }
    }

    // A duration past what `Instant` can hold validated, then panicked the shard threads
    // (`now + heartbeat_interval`) or the shutdown (`now + shutdown_timeout`).
    #[test]
    fn durations_must_fit_the_clock() {
        let mut config = Config::default();
        let far = Duration::from_secs(i64::MAX as u64);
        config.server.shutdown_timeout = far;
        config.websocket.heartbeat_interval = far;
        config.websocket.idle_timeout = far;
        let err = config.validate().unwrap_err().to_string();
        for key in ["server.shutdown_timeout", "websocket.heartbeat_interval", "websocket.idle_timeout"] {
            assert!(err.contains(key), "{key} missing from:\n{err}");
        }

        config.server.shutdown_timeout = MAX_DURATION;
        config.websocket.heartbeat_interval = MAX_DURATION;
        config.websocket.idle_timeout = MAX_DURATION;
        config.validate().unwrap();
        std::time::Instant::now().checked_add(MAX_DURATION).expect("the clock holds MAX_DURATION");
    }

    #[test]
    fn ingest_and_shape_problems_name_their_keys() {
        let mut config = Config::default();
        config.ingest.access = IngestAccess::Key;
        config.ingest.allowed_ips = vec!["not-an-address".to_string()].into();
        let shape = ShapeConfig {
            kind: Some(String::new()),
            copy: [("status".to_string(), ShapePaths::One("data..status".into()))].into(),
            ..Default::default()
        };
        config.channels.push(ChannelConfig { name: "jobs".into(), shape: Some(shape), ..Default::default() });
        let err = config.validate().unwrap_err().to_string();
        for key in ["ingest.key", "ingest.allowed_ips[0]", "channels[0].shape.type", "channels[0].shape.copy.status"] {
            assert!(err.contains(key), "{key} missing from:\n{err}");
        }
        // Every example configuration validates.
        for example in [
            include_str!("../../examples/job-updates.toml"),
            include_str!("../../examples/message-dashboard.toml"),
            include_str!("../../examples/spreadsheet.toml"),
        ] {
            let mut config: Config = toml::from_str(example).unwrap();
            // The secret comes from the environment in the spreadsheet profile.
            config.auth.jwt_secret.get_or_insert_with(|| "a-secret-from-the-environment".into());
            config.validate().unwrap();
        }
    }

    /// The problems one section's own `validate` reports.
    pub(super) fn problems_of(validate: impl FnOnce(&mut dyn FnMut(String, &str))) -> Vec<String> {
        let mut problems = Vec::new();
        validate(&mut |key, what| problems.push(format!("{key}: {what}")));
        problems
    }

    #[test]
    fn idle_timeout_must_cover_heartbeats() {
        let websocket = WebSocketConfig { idle_timeout: Duration::from_secs(5), ..Default::default() };
        let problems = problems_of(|p| websocket.validate(p));
        assert!(problems.iter().any(|p| p.starts_with("websocket.idle_timeout")), "{problems:?}");
        assert!(problems_of(|p| WebSocketConfig::default().validate(p)).is_empty());
    }

    #[test]
    fn sections_check_themselves() {
        let server = ServerConfig { dashboard_path: "/ws/x/".into(), mounts: vec!["/ws".into()], ..Default::default() };
        assert!(problems_of(|p| server.validate(p))[0].starts_with("server.dashboard_path"));
        let redis = RedisConfig { url: Some("http://x".into()), ..Default::default() };
        assert!(problems_of(|p| redis.validate(p))[0].starts_with("redis.url"));
        let database = DatabaseConfig { batch_size: 0, ..Default::default() };
        assert!(problems_of(|p| database.validate(p))[0].starts_with("database.batch_size"));
        let endpoint = EndpointConfig { path: "/stats".into(), ..Default::default() };
        assert!(problems_of(|p| endpoint.validate(3, p))[0].starts_with("endpoints[3].path"));
        let channel = ChannelConfig { name: "a*b".into(), ..Default::default() };
        assert!(problems_of(|p| channel.validate(2, p))[0].starts_with("channels[2].name"));
        for ok in [
            problems_of(|p| ServerConfig::default().validate(p)),
            problems_of(|p| RedisConfig::default().validate(p)),
            problems_of(|p| DatabaseConfig::default().validate(p)),
        ] {
            assert!(ok.is_empty(), "{ok:?}");
        }
    }

    /// What spans sections stays the whole configuration's: two endpoints on one path, an
    /// upstream stream without Redis.
    #[test]
    fn cross_section_checks_stay_in_config() {
        let mut config = Config::default();
        config.endpoints.push(EndpointConfig { path: "/a".into(), ..Default::default() });
        config.endpoints.push(EndpointConfig { path: "/a".into(), ..Default::default() });
        config.upstream.redis_stream = Some("requests".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("endpoints[1].path: is declared twice"), "{err}");
        assert!(err.contains("upstream.redis_stream: needs redis.url"), "{err}");
    }
}
