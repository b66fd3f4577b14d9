//! Configuration of stream history (sequence numbers, resume) and of permessage-deflate.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, MAX_DURATION};

/// History for every channel or every room whose name matches a pattern: a bounded recent log
/// that gives events a per-stream `seq` and lets clients resume after a reconnect.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Channels this applies to: an exact name or a prefix followed by `*` (`"jobs:*"`, `"*"`).
    pub channels: Option<String>,
    /// Rooms this applies to, the same way.
    pub rooms: Option<String>,
    /// Most events kept per stream.
    pub size: usize,
    /// Events older than this are dropped from history.
    #[schemars(with = "String")]
    #[serde(with = "super::duration")]
    pub max_age: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig { channels: None, rooms: None, size: 100, max_age: Duration::from_secs(300) }
    }
}

/// permessage-deflate (RFC 7692). The server never keeps a compression context between
/// messages, so one compressed frame per event is shared by every connection.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionConfig {
    /// Accept clients' permessage-deflate offers.
    pub enabled: bool,
    /// Messages shorter than this (bytes) are sent uncompressed.
    pub threshold: usize,
    /// zlib level, 0 (store) to 9.
    pub level: u32,
    /// Announce `server_no_context_takeover` (Herald never uses a server context either way).
    pub server_no_context_takeover: bool,
    /// Ask clients to reset their context after every message, so that no inflate window (32 KiB)
    /// is kept per connection between messages.
    pub client_no_context_takeover: bool,
    /// Largest LZ77 window Herald compresses with (9 to 15).
    pub server_max_window_bits: u8,
    /// Window Herald asks clients to compress with when they offer to limit it (9 to 15).
    pub client_max_window_bits: u8,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            enabled: true,
            threshold: 256,
            level: 6,
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }
}

/// Whether `pattern` is a name, or a prefix followed by one trailing `*` (the form of
/// `[[channels]]` names and `[[history]]` patterns).
pub fn is_name_or_prefix(pattern: &str) -> bool {
    !pattern.is_empty() && !pattern.strip_suffix('*').unwrap_or(pattern).contains('*')
}

/// Whether `name` matches `pattern` (exact, or a prefix followed by one trailing `*`).
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

impl Config {
    pub(super) fn validate_streams(&self, problem: &mut impl FnMut(String, &str)) {
        for (i, history) in self.history.iter().enumerate() {
            match (&history.channels, &history.rooms) {
                (None, None) | (Some(_), Some(_)) => {
                    problem(format!("history[{i}]"), "give exactly one of channels or rooms (a name or a prefix*)")
                }
                (Some(p), None) | (None, Some(p)) => {
                    let key = if history.channels.is_some() { "channels" } else { "rooms" };
                    if !is_name_or_prefix(p) {
                        problem(
                            format!("history[{i}].{key}"),
                            "must be a name, or a prefix followed by one trailing '*'",
                        );
                    }
                }
            }
            if history.size == 0 || history.size > 100_000 {
                problem(format!("history[{i}].size"), "must be between 1 and 100000");
            }
            if history.max_age < Duration::from_secs(1) || history.max_age > MAX_DURATION {
                problem(format!("history[{i}].max_age"), "must be between 1s and 365 days");
            }
        }
        let c = &self.compression;
        if c.level > 9 {
            problem("compression.level".into(), "must be between 0 and 9");
        }
        for (key, bits) in [
            ("compression.server_max_window_bits", c.server_max_window_bits),
            ("compression.client_max_window_bits", c.client_max_window_bits),
        ] {
            if !(9..=15).contains(&bits) {
                problem(key.into(), "must be between 9 and 15");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::from_toml_str;

    #[test]
    fn bad_history_and_compression_values_name_their_key() {
        let toml = r#"
            [[history]]
            channels = "jobs:*"
            size = 0
            max_age = "0s"
            [[history]]
            rooms = "a*b*"
            [compression]
            server_max_window_bits = 8
            level = 12
        "#;
        let e = from_toml_str(toml).unwrap_err().to_string();
        for key in [
            "history[0].size",
            "history[0].max_age",
            "history[1].rooms",
            "compression.server_max_window_bits",
            "compression.level",
        ] {
            assert!(e.contains(key), "{key} missing from {e}");
        }
    }

    #[test]
    fn a_valid_history_passes() {
        let c = from_toml_str("[[history]]\nchannels = \"*\"\nsize = 10\nmax_age = \"1m\"\n").unwrap();
        assert_eq!(c.history[0].size, 10);
    }
}
