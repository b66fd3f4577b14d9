//! Merging the configuration sources: defaults < TOML file < compatibility aliases < `HERALD_*` < flags.

use std::path::PathBuf;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::{Config, LogFormat};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read, a key is unknown or a value has the wrong type; the message
    /// names each key and the source (file, variable or flag) that set it.
    #[error("invalid configuration:\n  - {}", describe(.0).join("\n  - "))]
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

/// One line per problem in `error`, in the user's terms: the dotted key, what is wrong, and the
/// source that set it; for an unknown key, the nearest key Herald knows.
fn describe(error: &figment::Error) -> Vec<String> {
    error
        .clone()
        .into_iter()
        .map(|e| {
            let mut path = dotted(&e.path);
            let what = match &e.kind {
                figment::error::Kind::UnknownVariant(found, expected) => {
                    format!("{found:?} is not allowed; must be {}", one_of(expected))
                }
                figment::error::Kind::UnknownField(field, expected) => {
                    // figment's path already ends with the unknown key.
                    let mut parent_path = e.path.clone();
                    if parent_path.last() == Some(field) {
                        parent_path.pop();
                    }
                    let parent = parent_path.join(".");
                    path = if parent.is_empty() { field.clone() } else { format!("{parent}.{field}") };
                    let nearest = expected
                        .iter()
                        .map(|candidate| (strsim::jaro_winkler(field, candidate), *candidate))
                        .filter(|(score, _)| *score >= 0.7)
                        .max_by(|a, b| a.0.total_cmp(&b.0));
                    match nearest {
                        Some((_, candidate)) if parent.is_empty() => {
                            format!("is not a configuration key; did you mean {candidate}?")
                        }
                        Some((_, candidate)) => {
                            format!("is not a configuration key; did you mean {parent}.{candidate}?")
                        }
                        None if expected.is_empty() => "is not a configuration key".to_string(),
                        None => format!("is not a configuration key; this section has {}", expected.join(", ")),
                    }
                }
                kind => kind.to_string(),
            };
            let source = e.metadata.as_ref().map(|m| match &m.source {
                Some(source) => format!(" (in {source})"),
                None => format!(" (from {})", m.name),
            });
            let source = source.unwrap_or_default();
            if path.is_empty() { format!("{what}{source}") } else { format!("{path}: {what}{source}") }
        })
        .collect()
}

/// A key path as a user writes it: `presence.typing_events[0]`, not `presence.typing_events.0`.
fn dotted(path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// `a`, `a or b`, `a, b or c`.
fn one_of(names: &[&str]) -> String {
    match names {
        [] => "nothing".into(),
        [one] => (*one).into(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
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
    /// `--data-dir DIR`.
    pub data_dir: Option<PathBuf>,
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
    ("data_dir", "database.data_dir"),
];

/// Environment variable names used by the systems the compatibility profiles replace, and the
/// keys they mean.
const COMPAT_ALIASES: &[(&str, &str)] = &[
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

/// Maps a compatibility profile's variable (`REDIS_URL`, `WEBSOCKET_PING_INTERVAL`, …) to its key.
pub(crate) fn compat_alias_key(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    COMPAT_ALIASES.iter().find(|(alias, _)| *alias == lower).map(|(_, path)| (*path).to_string())
}

/// One source of configuration values, named the way a user knows it (`default`,
/// `environment variable HERALD_API_KEY`, `--set websocket.idle_timeout`), so that errors and
/// `--print-config` say where a value came from and never where in Herald's code it was merged.
struct Layer {
    label: String,
    dict: Dict,
}

impl Layer {
    /// A layer setting one dotted `key` to `value`.
    fn key(label: String, key: &str, value: Value) -> Self {
        let dict = figment::util::nest(key, value).into_dict().unwrap_or_default();
        Self { label, dict }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.label.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// Values from the environment and flags are read like TOML values (numbers, booleans,
/// `[arrays]`), and as text when they are not one.
fn parse_value(raw: &str) -> Value {
    raw.parse::<Value>().unwrap_or_else(|_| Value::from(raw.to_string()))
}

/// The lowest layer of every configuration: the built-in defaults.
fn defaults() -> Figment {
    let dict = Serialized::defaults(Config::default())
        .data()
        .ok()
        .and_then(|mut map| map.remove(&Profile::Default))
        .unwrap_or_default();
    Figment::from(Layer { label: DEFAULT_SOURCE.into(), dict })
}

/// How `--print-config` and errors name the built-in defaults.
pub(crate) const DEFAULT_SOURCE: &str = "default";

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
    load_with_sources(overrides).map(|(config, _)| config)
}

/// Where each value of a loaded configuration came from.
#[derive(Debug)]
pub struct Sources(Figment);

impl Sources {
    /// The source of the value at dotted `key` (`websocket.idle_timeout`): `default`, the file's
    /// path, an environment variable or a flag. `None` for a key no source set.
    pub fn of(&self, key: &str) -> Option<String> {
        let metadata = self.0.find_metadata(key)?;
        Some(match &metadata.source {
            Some(source) => format!("{source}"),
            None => metadata.name.to_string(),
        })
    }
}

/// [`load`], keeping track of which source set each value (for `--print-config`).
pub fn load_with_sources(overrides: &Overrides) -> Result<(Config, Sources), ConfigError> {
    let mut figment = defaults();
    if let Some(path) = &overrides.config_file {
        if !path.exists() {
            return Err(ConfigError::MissingFile(path.clone()));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    for layer in redis_host_port_alias() {
        figment = figment.merge(layer);
    }
    // Sorted, so that two variables meaning the same key resolve the same way on every start.
    let mut vars: Vec<(String, String)> =
        std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect();
    vars.sort();
    for (name, raw) in &vars {
        if let Some(key) = compat_alias_key(name) {
            figment = figment.merge(Layer::key(format!("environment variable {name}"), &key, parse_value(raw)));
        }
    }
    for (name, raw) in &vars {
        if let Some(key) = herald_env_key(name) {
            figment = figment.merge(Layer::key(format!("environment variable {name}"), &key, parse_value(raw)));
        }
    }
    for layer in flag_layers(overrides) {
        figment = figment.merge(layer);
    }
    let config = extract_valid(&figment)?;
    Ok((config, Sources(figment)))
}

/// The variables of other systems that need more than a rename: `REDIS_HOST` / `REDIS_PORT` (when
/// `REDIS_URL` is not given) and `WEBSOCKET_BLOCK_DURATION_MINUTES` (minutes, not seconds).
fn redis_host_port_alias() -> Vec<Layer> {
    let mut layers = Vec::new();
    if let Ok(minutes) = std::env::var("WEBSOCKET_BLOCK_DURATION_MINUTES") {
        layers.push(Layer::key(
            "environment variable WEBSOCKET_BLOCK_DURATION_MINUTES".into(),
            "limits.block_duration",
            Value::from(format!("{}m", minutes.trim())),
        ));
    }
    if std::env::var_os("REDIS_URL").is_none()
        && let Ok(host) = std::env::var("REDIS_HOST")
    {
        let port = std::env::var("REDIS_PORT").unwrap_or_else(|_| "6379".into());
        layers.push(Layer::key(
            "environment variables REDIS_HOST and REDIS_PORT".into(),
            "redis.url",
            Value::from(format!("redis://{host}:{port}")),
        ));
    }
    layers
}

/// One layer per flag, named after the flag.
fn flag_layers(o: &Overrides) -> Vec<Layer> {
    let mut layers = Vec::new();
    let mut set = |flag: &str, key: &str, value: Value| layers.push(Layer::key(flag.to_string(), key, value));
    if let Some(v) = &o.listen {
        set("--listen", "server.listen", v.clone().into());
    }
    if let Some(v) = &o.api_key {
        set("--api-key", "api.key", v.clone().into());
    }
    if let Some(v) = &o.redis_url {
        set("--redis-url", "redis.url", v.clone().into());
    }
    if let Some(v) = &o.database_url {
        set("--database-url", "database.url", v.clone().into());
    }
    if let Some(v) = &o.data_dir {
        set("--data-dir", "database.data_dir", v.display().to_string().into());
    }
    if let Some(v) = o.shards {
        set("--shards", "server.shards", Value::from(v as u64));
    }
    if let Some(v) = o.log_format {
        set("--log-format", "log.format", (if v == LogFormat::Json { "json" } else { "human" }).into());
    }
    if let Some(v) = &o.log_level {
        set("--log-level", "log.level", v.clone().into());
    }
    for (key, raw) in &o.sets {
        set(&format!("--set {key}"), key, parse_value(raw));
    }
    layers
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

    /// The enumerated keys (typing shapes, lifecycle events, modes) are typed: a value outside
    /// them is refused naming the key as written and the values it may take.
    #[test]
    fn an_enumerated_value_names_its_key_and_choices() {
        let err = from_toml_str("[presence]\ntyping_events = [\"user_typing\", \"typing\"]\n").unwrap_err().to_string();
        assert!(
            err.contains(
                "presence.typing_events[1]: \"typing\" is not allowed; must be typing_indicator or user_typing"
            ),
            "{err}"
        );
        let err = from_toml_str("[upstream]\nlifecycle = [\"boot\"]\n").unwrap_err().to_string();
        assert!(
            err.contains("upstream.lifecycle[0]: \"boot\" is not allowed; must be connect, disconnect, join or leave"),
            "{err}"
        );
        let err = from_toml_str("[server]\nlisten = \"nowhere\"\n").unwrap_err().to_string();
        assert!(err.contains("server.listen: \"nowhere\" is not an address and port"), "{err}");
        let config = from_toml_str("[presence]\ntyping_events = [\"user_typing\"]\n").unwrap();
        assert_eq!(config.presence.typing_events, vec![super::super::TypingEvent::UserTyping]);
    }
    use std::io::Write;

    #[test]
    fn env_names_map_to_keys() {
        assert_eq!(herald_env_key("HERALD_LISTEN").as_deref(), Some("server.listen"));
        assert_eq!(herald_env_key("HERALD_API_KEY").as_deref(), Some("api.key"));
        assert_eq!(herald_env_key("HERALD_WEBSOCKET__IDLE_TIMEOUT").as_deref(), Some("websocket.idle_timeout"));
        assert_eq!(herald_env_key("HERALD_STRAY"), None);
        assert_eq!(herald_env_key("PATH"), None);
        assert_eq!(compat_alias_key("WEBSOCKET_PING_INTERVAL").as_deref(), Some("websocket.heartbeat_interval"));
        assert_eq!(compat_alias_key("HOME"), None);
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
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:9001");
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
        // An address is parsed as it is read: the error names the key all the same.
        let err = from_toml_str("[server]\nlisten = \"nowhere\"").unwrap_err().to_string();
        assert!(err.contains("\n  - server.listen: "), "{err}");
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
