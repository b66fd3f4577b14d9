//! Durations in configuration: `"30s"`, `"2m"`, `"1h 30m"`, or a bare number of seconds.
//!
//! The compatibility profiles' systems configure intervals as plain seconds (`WEBSOCKET_PING_INTERVAL=25`), while a
//! TOML file reads better with units. Both spellings deserialize to the same [`Duration`].

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer, de};

/// Deserializes a duration from seconds (integer or float) or a humantime string.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

/// Serializes a duration as a humantime string (`"30s"`).
pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&humantime::format_duration(*value).to_string())
}

struct DurationVisitor;

impl de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a duration such as \"30s\", \"500ms\", \"2m\", or a number of seconds")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v).map(Duration::from_secs).map_err(|_| E::custom("a duration cannot be negative"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Duration::try_from_secs_f64(v)
            .map_err(|_| E::custom("a duration must be a finite, non-negative number of seconds"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        let trimmed = v.trim();
        if let Ok(secs) = trimmed.parse::<u64>() {
            return Ok(Duration::from_secs(secs));
        }
        humantime::parse_duration(trimmed).map_err(|e| E::custom(format!("invalid duration {v:?}: {e}")))
    }
}

/// The same, for `Option<Duration>` fields.
pub mod option {
    use super::*;

    /// Deserializes an optional duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapper(#[serde(deserialize_with = "super::deserialize")] Duration);
        Option::<Wrapper>::deserialize(deserializer).map(|w| w.map(|Wrapper(d)| d))
    }

    /// Serializes an optional duration.
    pub fn serialize<S: Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => super::serialize(d, serializer),
            None => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        #[serde(with = "super")]
        d: Duration,
    }

    fn parse(toml_text: &str) -> Result<Duration, toml::de::Error> {
        toml::from_str::<Holder>(toml_text).map(|h| h.d)
    }

    #[test]
    fn accepts_seconds_and_units() {
        assert_eq!(parse("d = 25").unwrap(), Duration::from_secs(25));
        assert_eq!(parse("d = 0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("d = \"2m\"").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("d = \"1500ms\"").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("d = \"45\"").unwrap(), Duration::from_secs(45));
    }

    #[test]
    fn rejects_nonsense() {
        assert!(parse("d = -3").is_err());
        assert!(parse("d = \"soon\"").is_err());
    }
}
