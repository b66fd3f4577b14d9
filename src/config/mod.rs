//! One typed configuration for the whole node.
//!
//! Sources, from lowest to highest precedence: built-in defaults, a TOML file (`--config`), the
//! seed documents' own environment variables (`REDIS_URL`, `WEBSOCKET_PING_INTERVAL`, …),
//! `HERALD_*` environment variables, and command-line flags. [`load`] merges them and
//! [`Config::validate`] rejects anything inconsistent with a message naming the key.
//!
//! Every section has a `Default` that runs Herald embedded: no Redis, no database, loopback only.

pub mod duration;
pub mod load;
pub mod text;

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use load::{ConfigError, Overrides, from_toml_str, load};

/// The whole configuration of a node.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
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
    /// Connection limits.
    pub limits: LimitsConfig,
    /// Redis: the cross-node broker and the integration point for publishers.
    pub redis: RedisConfig,
    /// Persistence of history (SQLite by default, PostgreSQL by URL).
    pub database: DatabaseConfig,
    /// Logging.
    pub log: LogConfig,
}

/// Where and how the node listens.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on. Port 0 picks a free port (printed at start).
    #[serde(deserialize_with = "text::string")]
    pub listen: String,
    /// Path prefixes under which the WebSocket endpoints and the mirrored REST API live.
    /// Several may be active at once, e.g. `["/ws", "/api/v1/ws"]`.
    pub mounts: Vec<String>,
    /// Number of shard threads that own connections; 0 means one per CPU.
    pub shards: usize,
    /// A stable name for this node in a cluster; random when absent.
    #[serde(deserialize_with = "text::opt_string")]
    pub node_id: Option<String>,
    /// How long a graceful shutdown may take before remaining sockets are dropped.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8000".into(),
            mounts: vec!["/ws".into()],
            shards: 0,
            node_id: None,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Behaviour common to every WebSocket connection.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Interval of server heartbeats (a `heartbeat` message and a WebSocket ping frame).
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// Send the JSON `{"type":"heartbeat"}` message at each interval.
    pub heartbeat_message: bool,
    /// Send a WebSocket ping frame at each interval.
    pub ping_frames: bool,
    /// A connection from which nothing (not even a pong) arrives for this long is closed.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Largest message a client may send, in bytes. Larger ones close the connection (1009).
    pub max_message_size: usize,
    /// Frames a connection may have queued before it is treated as a slow consumer.
    pub outbound_queue: usize,
    /// Bytes a connection may have queued before it is treated as a slow consumer.
    pub outbound_queue_bytes: usize,
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
            welcome: WelcomeStyle::Connection,
            main_endpoint: true,
        }
    }
}

/// Which welcome message a client gets right after the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WelcomeStyle {
    /// `{"type":"connection", …}` as the campaign-events document expects.
    Connection,
    /// `{"type":"connection_established", …}` as the chat document expects.
    ConnectionEstablished,
    /// No welcome message at all.
    None,
}

/// What an endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    /// The Herald protocol: events, subscriptions, rooms.
    #[default]
    Events,
    /// A live stream of node statistics (the dashboard document's `/ws/stats`).
    Stats,
    /// Echoes every message back; for conformance testing only.
    Echo,
}

/// A dedicated WebSocket endpoint, e.g. `/ws/campaigns?campaign_id=123`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
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
}

/// Behaviour of one channel, or of every channel matching a pattern ending in `*`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelConfig {
    /// Exact channel name (`jobs:updates`) or a prefix pattern (`campaign:*`).
    pub name: String,
    /// The `type` given to an event published here without one.
    pub default_type: Option<String>,
    /// Deliver every event of this channel to every connection of the node, subscribed or not.
    pub broadcast: bool,
}

/// The HTTP API for backends and operators.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer key required by publish and admin routes. Without one those routes accept
    /// requests from loopback addresses only.
    #[serde(deserialize_with = "text::opt_string")]
    pub key: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_size: Option<usize>,
}

/// Connection limits.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Total WebSocket connections this node accepts; further upgrades get HTTP 503. 0: no cap.
    pub max_connections: usize,
    /// Channels one connection may be subscribed to at once. 0: no cap.
    pub max_channels_per_connection: usize,
    /// Rooms one connection may be in at once. 0: no cap.
    pub max_rooms_per_connection: usize,
}

/// Redis settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`. Without it the node runs its in-process broker.
    #[serde(deserialize_with = "text::opt_string")]
    pub url: Option<String>,
}

/// History storage settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` or `postgres://…`. Embedded SQLite when absent.
    #[serde(deserialize_with = "text::opt_string")]
    pub url: Option<String>,
}

/// Log output.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `human` (default) or `json`, one object per line.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `herald=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
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

        if self.server.listen.parse::<SocketAddr>().is_err() {
            problem(
                "server.listen".into(),
                "must be an address and port such as 127.0.0.1:8000 or [::1]:8000",
            );
        }
        if self.server.mounts.is_empty() {
            problem(
                "server.mounts".into(),
                "must name at least one path prefix such as \"/ws\"",
            );
        }
        for (i, mount) in self.server.mounts.iter().enumerate() {
            if !mount.starts_with('/') || (mount.len() > 1 && mount.ends_with('/')) {
                problem(
                    format!("server.mounts[{i}]"),
                    "must start with '/' and not end with '/'",
                );
            }
            if mount == "/" || mount == "/api" || mount == "/metrics" || mount == "/health" {
                problem(
                    format!("server.mounts[{i}]"),
                    "collides with a built-in route; choose a prefix such as /ws",
                );
            }
        }
        if let Some(id) = &self.server.node_id
            && (id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            problem(
                "server.node_id".into(),
                "must be 1-64 characters of letters, digits, '-' or '_'",
            );
        }
        for (key, value) in [
            ("server.shutdown_timeout", self.server.shutdown_timeout),
            (
                "websocket.heartbeat_interval",
                self.websocket.heartbeat_interval,
            ),
            ("websocket.idle_timeout", self.websocket.idle_timeout),
        ] {
            if value > MAX_DURATION {
                problem(key.into(), "must be at most 365 days");
            }
        }
        if self.websocket.heartbeat_interval < Duration::from_millis(100) {
            problem(
                "websocket.heartbeat_interval".into(),
                "must be at least 100ms",
            );
        }
        if self.websocket.idle_timeout < self.websocket.heartbeat_interval {
            problem(
                "websocket.idle_timeout".into(),
                "must be at least websocket.heartbeat_interval, or live clients would be cut off between heartbeats",
            );
        }
        if self.websocket.max_message_size < 125 {
            problem(
                "websocket.max_message_size".into(),
                "must be at least 125 bytes",
            );
        }
        if self.websocket.outbound_queue == 0 {
            problem("websocket.outbound_queue".into(), "must be at least 1");
        }
        if self.websocket.outbound_queue_bytes < 1024 {
            problem(
                "websocket.outbound_queue_bytes".into(),
                "must be at least 1024",
            );
        }
        let mut paths = std::collections::HashSet::new();
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let key = format!("endpoints[{i}].path");
            if !endpoint.path.is_empty()
                && (!endpoint.path.starts_with('/') || endpoint.path.ends_with('/'))
            {
                problem(
                    key.clone(),
                    "must be \"\" (the mount itself) or start with '/' and not end with '/'",
                );
            }
            if !paths.insert(endpoint.path.as_str()) {
                problem(key.clone(), "is declared twice");
            }
            for reserved in RESERVED_MOUNT_PATHS {
                if endpoint.path == *reserved {
                    problem(
                        key.clone(),
                        "collides with a built-in route under the mount",
                    );
                }
            }
            for (j, template) in endpoint.channels.iter().chain(&endpoint.rooms).enumerate() {
                if let Err(e) = crate::protocol::template::check(template) {
                    problem(format!("endpoints[{i}] template {j} ({template:?})"), &e);
                }
            }
            if endpoint.max_message_size.is_some_and(|m| m < 125) {
                problem(
                    format!("endpoints[{i}].max_message_size"),
                    "must be at least 125 bytes",
                );
            }
        }
        for (i, channel) in self.channels.iter().enumerate() {
            let name = channel.name.strip_suffix('*').unwrap_or(&channel.name);
            if channel.name.is_empty() || name.contains('*') {
                problem(
                    format!("channels[{i}].name"),
                    "must be a channel name, or a prefix followed by a single trailing '*'",
                );
            }
            if channel.default_type.as_deref() == Some("") {
                problem(format!("channels[{i}].default_type"), "must not be empty");
            }
        }
        if let Some(key) = &self.api.key
            && key.len() < 8
        {
            problem("api.key".into(), "must be at least 8 characters");
        }
        if let Some(url) = &self.redis.url
            && !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("unix://"))
        {
            problem(
                "redis.url".into(),
                "must start with redis://, rediss:// or unix://",
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            problem("log.level".into(), &format!("is not a valid filter: {e}"));
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The listening address; valid after [`Config::validate`].
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|_| {
            ConfigError::Invalid(vec![format!(
                "server.listen: {:?} is not an address",
                self.server.listen
            )])
        })
    }
}

/// The longest interval or timeout a setting may take. Durations are added to the clock
/// (heartbeat and shutdown deadlines), which cannot hold an arbitrarily distant future; a year is
/// past any sensible value, and "never" is spelled with a long one.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Paths under a mount that Herald serves itself and endpoints may not take.
pub const RESERVED_MOUNT_PATHS: &[&str] = &[
    "/stats",
    "/health",
    "/rooms",
    "/connections",
    "/users",
    "/broadcast",
    "/shutdown",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn every_problem_names_its_key() {
        let mut config = Config::default();
        config.server.listen = "nowhere".into();
        config.server.mounts = vec!["ws/".into()];
        config.websocket.outbound_queue = 0;
        config.endpoints.push(EndpointConfig {
            path: "campaigns".into(),
            ..Default::default()
        });
        let ConfigError::Invalid(problems) = config.validate().unwrap_err() else {
            panic!("expected Invalid")
        };
        let joined = problems.join("\n");
        for key in [
            "server.listen",
            "server.mounts[0]",
            "websocket.outbound_queue",
            "endpoints[0].path",
        ] {
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
        for key in [
            "server.shutdown_timeout",
            "websocket.heartbeat_interval",
            "websocket.idle_timeout",
        ] {
            assert!(err.contains(key), "{key} missing from:\n{err}");
        }

        config.server.shutdown_timeout = MAX_DURATION;
        config.websocket.heartbeat_interval = MAX_DURATION;
        config.websocket.idle_timeout = MAX_DURATION;
        config.validate().unwrap();
        std::time::Instant::now()
            .checked_add(MAX_DURATION)
            .expect("the clock holds MAX_DURATION");
    }

    #[test]
    fn idle_timeout_must_cover_heartbeats() {
        let mut config = Config::default();
        config.websocket.idle_timeout = Duration::from_secs(5);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("websocket.idle_timeout"), "{err}");
    }
}
