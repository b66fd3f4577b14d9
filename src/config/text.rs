//! Text fields that environment variables and `--set` may spell as numbers.
//!
//! Environment values are parsed like TOML, so `HERALD_API_KEY=12345678` arrives as a number;
//! fields that are text by nature accept any scalar and keep its textual form.

use serde::{Deserialize, Deserializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Scalar::Text(s) => s,
            Scalar::Unsigned(n) => n.to_string(),
            Scalar::Signed(n) => n.to_string(),
            Scalar::Float(n) => n.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

/// A required text field.
pub fn string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Scalar::deserialize(deserializer).map(Scalar::into_string)
}

/// An optional text field.
pub fn opt_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Option::<Scalar>::deserialize(deserializer).map(|s| s.map(Scalar::into_string))
}

/// A listening address (`server.listen`): text such as `127.0.0.1:8000` or `[::1]:8000`, parsed
/// when the configuration is read; an error says what is expected.
pub fn socket_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<std::net::SocketAddr, D::Error> {
    let text = string(deserializer)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not an address and port; must be one such as 127.0.0.1:8000 or [::1]:8000"
        ))
    })
}
