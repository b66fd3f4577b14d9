//! Merging the configuration sources: defaults < TOML file < seed aliases < `HERALD_*` < flags.

use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Value};

use super::{Config, LogFormat};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or a value has the wrong type; figment names the key and source.
    #[error("configuration error: {0}")]
    Source(Box<figment::Error>),
    /// Values that parse but make no sense, each naming its key.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
    /// The configuration file named on the command line does not exist.
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        ConfigError::Source(Box::new(e))
    }
}

/// What the command line says; every field overrides files and environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// `--listen ADDR`.
    pub listen: Option<String>,
    /// `--api-key KEY`.
    pub api_key: Option<String>,
    /// `--redis-url URL`.
    pub redis_url: Option<String>,
    /// `--database-url URL`.
    pub database_url: Option<String>,
    /// `--shards N`.
    pub shards: Option<usize>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--set key=value`, any key in dotted form; values are parsed like environment values.
    pub sets: Vec<(String, String)>,
}

/// `HERALD_<NAME>` shortcuts for the keys operators set most often.
const SHORTCUTS: &[(&str, &str)] = &[
    ("listen", "server.listen"),
    ("api_key", "api.key"),
    ("redis_url", "redis.url"),
    ("database_url", "database.url"),
    ("shards", "server.shards"),
    ("jwt_secret", "auth.jwt_secret"),
    ("node_id", "server.node_id"),
    ("log_format", "log.format"),
    ("log_level", "log.level"),
];

/// Environment variable names used by the seed documents' own systems, and the keys they mean.
const SEED_ALIASES: &[(&str, &str)] = &[
    ("redis_url", "redis.url"),
    ("database_url", "database.url"),
    ("websocket_ping_interval", "websocket.heartbeat_interval"),
    ("websocket_ping_timeout", "websocket.idle_timeout"),
    ("websocket_connection_timeout", "websocket.idle_timeout"),
    ("jwt_secret_key", "auth.jwt_secret"),
    ("websocket_encryption_key", "database.encryption_key"),
    ("websocket_max_connections_per_ip", "limits.max_connections_per_ip"),
    ("websocket_message_rate_limit", "limits.messages_per_minute"),
    ("websocket_requests_per_minute", "limits.messages_per_minute"),
    ("websocket_requests_per_hour", "limits.messages_per_hour"),
];

/// Maps `HERALD_SERVER__LISTEN` to `server.listen` and `HERALD_LISTEN` to its shortcut.
/// Returns `None` for variables that are not Herald's.
pub(crate) fn herald_env_key(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    let rest = lower.strip_prefix("herald_")?;
    if rest.is_empty() {
        return None;
    }
    if let Some((_, path)) = SHORTCUTS.iter().find(|(short, _)| *short == rest) {
        return Some((*path).to_string());
    }
    // Only nested keys (with `__`) are taken: a stray `HERALD_FOO` is most likely not ours.
    rest.contains("__").then(|| rest.replace("__", "."))
}

/// Maps a seed document's variable (`REDIS_URL`, `WEBSOCKET_PING_INTERVAL`, …) to its key.
pub(crate) fn seed_alias_key(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    SEED_ALIASES.iter().find(|(alias, _)| *alias == lower).map(|(_, path)| (*path).to_string())
}

/// The lowest layer of every configuration: the built-in defaults.
fn defaults() -> Figment {
    Figment::from(Serialized::defaults(Config::default()))
}

/// Turns merged sources into a configuration that is known to make sense.
fn extract_valid(figment: &Figment) -> Result<Config, ConfigError> {
    let config: Config = figment.extract()?;
    config.validate()?;
    Ok(config)
}

/// Loads a configuration from TOML text alone: the defaults, then `text`, then validation,
/// exactly as a `--config` file is read but without environment variables or flags. For tools
/// and tests that hold a configuration in memory.
pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
    extract_valid(&defaults().merge(Toml::string(text)))
}

/// Loads, merges and validates the configuration from all sources.
pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
    let mut figment = defaults();
    if let Some(path) = &overrides.config_file {
        if !path.exists() {
            return Err(ConfigError::MissingFile(path.clone()));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(redis_host_port_alias());
    figment = figment.merge(Env::raw().filter_map(|k| seed_alias_key(k.as_str()).map(Into::into)).lowercase(false));
    figment = figment.merge(Env::raw().filter_map(|k| herald_env_key(k.as_str()).map(Into::into)).lowercase(false));
    figment = figment.merge(flags_provider(overrides));
    extract_valid(&figment)
}

/// The seed documents' variables that need more than a rename: `REDIS_HOST` / `REDIS_PORT` (when
/// `REDIS_URL` is not given) and `WEBSOCKET_BLOCK_DURATION_MINUTES` (minutes, not seconds).
fn redis_host_port_alias() -> Serialized<Dict> {
    let mut dict = Dict::new();
    if let Ok(minutes) = std::env::var("WEBSOCKET_BLOCK_DURATION_MINUTES") {
        let mut limits = Dict::new();
        limits.insert("block_duration".into(), Value::from(format!("{}m", minutes.trim())));
        dict.insert("limits".into(), Value::from(limits));
    }
    if std::env::var_os("REDIS_URL").is_none()
        && let Ok(host) = std::env::var("REDIS_HOST")
    {
        let port = std::env::var("REDIS_PORT").unwrap_or_else(|_| "6379".into());
        let mut redis = Dict::new();
        redis.insert("url".into(), Value::from(format!("redis://{host}:{port}")));
        dict.insert("redis".into(), Value::from(redis));
    }
    Serialized::defaults(dict)
}

fn flags_provider(o: &Overrides) -> Figment {
    let mut figment = Figment::new();
    let mut set = |key: &str, value: Value| {
        figment = std::mem::take(&mut figment).merge(Serialized::default(key, value));
    };
    if let Some(v) = &o.listen {
        set("server.listen", v.clone().into());
    }
    if let Some(v) = &o.api_key {
        set("api.key", v.clone().into());
    }
    if let Some(v) = &o.redis_url {
        set("redis.url", v.clone().into());
    }
    if let Some(v) = &o.database_url {
        set("database.url", v.clone().into());
    }
    if let Some(v) = o.shards {
        set("server.shards", Value::from(v as u64));
    }
    if let Some(v) = o.log_format {
        set("log.format", (if v == LogFormat::Json { "json" } else { "human" }).into());
    }
    if let Some(v) = &o.log_level {
        set("log.level", v.clone().into());
    }
    for (key, raw) in &o.sets {
        let value = raw.parse::<Value>().unwrap_or_else(|_| Value::from(raw.clone()));
        set(key, value);
    }
    figment
}

/// Parses `key=value` for `--set`.
pub fn parse_set(arg: &str) -> Result<(String, String), String> {
    let (key, value) = arg.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got {arg:?}"))?;
    let key = key.trim();
    if key.is_empty() || !key.split('.').all(|part| !part.is_empty()) {
        return Err(format!("{key:?} is not a dotted configuration key such as websocket.idle_timeout"));
    }
    Ok((key.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn env_names_map_to_keys() {
        assert_eq!(herald_env_key("HERALD_LISTEN").as_deref(), Some("server.listen"));
        assert_eq!(herald_env_key("HERALD_API_KEY").as_deref(), Some("api.key"));
        assert_eq!(herald_env_key("HERALD_WEBSOCKET__IDLE_TIMEOUT").as_deref(), Some("websocket.idle_timeout"));
        assert_eq!(herald_env_key("HERALD_STRAY"), None);
        assert_eq!(herald_env_key("PATH"), None);
        assert_eq!(seed_alias_key("WEBSOCKET_PING_INTERVAL").as_deref(), Some("websocket.heartbeat_interval"));
        assert_eq!(seed_alias_key("HOME"), None);
    }

    #[test]
    fn flags_override_the_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[server]\nlisten = \"127.0.0.1:9000\"\n[websocket]\nidle_timeout = \"3m\"").unwrap();
        let overrides = Overrides {
            config_file: Some(file.path().into()),
            listen: Some("127.0.0.1:9001".into()),
            sets: vec![("websocket.outbound_queue".into(), "512".into())],
            ..Default::default()
        };
        let config = load(&overrides).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:9001");
        assert_eq!(config.websocket.idle_timeout, std::time::Duration::from_secs(180));
        assert_eq!(config.websocket.outbound_queue, 512);
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let err = from_toml_str("[websocket]\nmax_message_size = \"big\"").unwrap_err().to_string();
        assert!(err.contains("websocket.max_message_size"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = from_toml_str("[websocket]\nheartbeat = 5").unwrap_err().to_string();
        assert!(err.contains("heartbeat"), "{err}");
    }

    #[test]
    fn toml_text_merges_over_the_defaults_and_is_validated() {
        let config =
            from_toml_str("[websocket]\nidle_timeout = \"3m\"\n[[endpoints]]\npath = \"/echo\"\nkind = \"echo\"")
                .unwrap();
        assert_eq!(config.websocket.idle_timeout, std::time::Duration::from_secs(180));
        assert_eq!(config.endpoints.len(), 1);
        assert_eq!(config.server.listen, Config::default().server.listen);

        assert!(from_toml_str("").is_ok());
        assert!(matches!(
            from_toml_str("[server]\nlisten = \"nowhere\""),
            Err(ConfigError::Invalid(problems)) if problems[0].starts_with("server.listen")
        ));
        assert!(matches!(from_toml_str("[server"), Err(ConfigError::Source(_))));
    }

    #[test]
    fn the_shipped_examples_are_valid() {
        for text in [
            include_str!("../../examples/campaign-events.toml"),
            include_str!("../../examples/job-updates.toml"),
            include_str!("../../examples/manufacturing-chat.toml"),
            include_str!("../../examples/message-dashboard.toml"),
            include_str!("../../examples/spreadsheet.toml"),
        ] {
            match from_toml_str(text) {
                Ok(_) => {}
                // Examples that need a secret leave it to HERALD_AUTH__JWT_SECRET, as they say.
                Err(ConfigError::Invalid(problems)) => {
                    assert!(problems.iter().all(|p| p.starts_with("auth:") && p.contains("jwt_secret")), "{problems:?}")
                }
                Err(other) => panic!("{other}"),
            }
        }
    }

    #[test]
    fn numeric_looking_strings_stay_strings() {
        let overrides = Overrides { sets: vec![("api.key".into(), "1234567890".into())], ..Default::default() };
        let config = load(&overrides).unwrap();
        assert_eq!(config.api.key.as_deref(), Some("1234567890"));
    }

    #[test]
    fn set_needs_a_key() {
        assert!(parse_set("=3").is_err());
        assert!(parse_set("a..b=3").is_err());
        assert_eq!(parse_set("a.b= x").unwrap(), ("a.b".into(), " x".into()));
    }
}
