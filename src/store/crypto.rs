//! Encryption at rest: AES-256-GCM with key ids, so keys can be rotated without losing old
//! messages, and the rules that decide which messages are sensitive.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, OsRng, rand_core::RngCore};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use regex::Regex;
use sha2::{Digest, Sha256};

use crate::config::DatabaseConfig;

/// Why encryption could not be set up or a message could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// A configured key or pattern is unusable.
    #[error("{0}")]
    Config(String),
    /// A stored message names a key that is no longer configured.
    #[error("message encrypted with unknown key {0:?}")]
    UnknownKey(String),
    /// Authentication of the ciphertext failed.
    #[error("encrypted message failed authentication")]
    Corrupt,
    /// A message must be encrypted but no key is configured.
    #[error("this message is sensitive but no encryption key is configured")]
    NoKey,
}

/// Turns configured key text into 32 bytes: base64 of exactly 32 bytes is used as is; any other
/// text (the chat profile's `WEBSOCKET_ENCRYPTION_KEY=your-encryption-key-here`) is a
/// passphrase hashed with SHA-256.
fn key_bytes(text: &str) -> [u8; 32] {
    if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(text.trim())
        && let Ok(key) = <[u8; 32]>::try_from(raw.as_slice())
    {
        return key;
    }
    Sha256::digest(text.as_bytes()).into()
}

/// Every configured key, by id, and the one new messages use.
pub struct Keyring {
    keys: BTreeMap<String, Aes256Gcm>,
    active: Option<String>,
}

impl Keyring {
    /// From `database.encryption_key` (id `default`) and `database.encryption_keys`.
    pub fn new(config: &DatabaseConfig) -> Result<Keyring, CryptoError> {
        let mut keys = BTreeMap::new();
        if let Some(text) = &config.encryption_key {
            keys.insert("default".to_string(), Aes256Gcm::new(&key_bytes(text).into()));
        }
        for (id, text) in &config.encryption_keys {
            keys.insert(id.clone(), Aes256Gcm::new(&key_bytes(text).into()));
        }
        let active = match &config.encryption_key_id {
            Some(id) if keys.contains_key(id) => Some(id.clone()),
            Some(id) => return Err(CryptoError::Config(format!("database.encryption_key_id: no key named {id:?}"))),
            None if keys.len() == 1 => keys.keys().next().cloned(),
            None if keys.contains_key("default") => Some("default".to_string()),
            None if keys.is_empty() => None,
            None => {
                return Err(CryptoError::Config(
                    "database.encryption_key_id: several keys are configured; name the one new messages use".into(),
                ));
            }
        };
        Ok(Keyring { keys, active })
    }

    /// Encrypts with the active key: `(key id, nonce || ciphertext || tag)`.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<(String, Vec<u8>), CryptoError> {
        let id = self.active.as_ref().ok_or(CryptoError::NoKey)?;
        let cipher = &self.keys[id];
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let sealed = cipher.encrypt(Nonce::from_slice(&nonce), plaintext).map_err(|_| CryptoError::Corrupt)?;
        let mut out = Vec::with_capacity(12 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok((id.clone(), out))
    }

    /// Decrypts with the key the message names.
    pub fn decrypt(&self, key_id: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let cipher = self.keys.get(key_id).ok_or_else(|| CryptoError::UnknownKey(key_id.to_string()))?;
        if sealed.len() < 12 + 16 {
            return Err(CryptoError::Corrupt);
        }
        let (nonce, body) = sealed.split_at(12);
        cipher.decrypt(Nonce::from_slice(nonce), body).map_err(|_| CryptoError::Corrupt)
    }
}

/// How [`Keyring::seal_text`] marks its output: `sealed:<key id>:<base64>`. JSON objects, the
/// only other thing stored where sealed text goes, never start with it.
const SEALED: &[u8] = b"sealed:";

impl Keyring {
    /// Encrypts for places that hold text (a `TEXT` column, a Redis Stream field):
    /// `sealed:<key id>:<base64 of nonce || ciphertext || tag>`.
    pub fn seal_text(&self, plaintext: &[u8]) -> Result<String, CryptoError> {
        let (id, sealed) = self.encrypt(plaintext)?;
        Ok(format!("sealed:{id}:{}", base64::engine::general_purpose::STANDARD.encode(sealed)))
    }

    /// Whether `text` came from [`Keyring::seal_text`].
    pub fn is_sealed(text: &[u8]) -> bool {
        text.starts_with(SEALED)
    }

    /// Opens what [`Keyring::seal_text`] sealed.
    pub fn open_text(&self, text: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let rest = text.strip_prefix(SEALED).and_then(|r| std::str::from_utf8(r).ok()).ok_or(CryptoError::Corrupt)?;
        // base64 has no ':', so the last one ends the key id (which may contain one).
        let (id, body) = rest.rsplit_once(':').ok_or(CryptoError::Corrupt)?;
        let sealed = base64::engine::general_purpose::STANDARD.decode(body).map_err(|_| CryptoError::Corrupt)?;
        self.decrypt(id, &sealed)
    }
}

/// Which messages are sensitive: flagged by the sender, in a sensitive room, or matching a
/// configured pattern (card numbers, say).
pub struct Sensitivity {
    rooms: Vec<Regex>,
    patterns: Vec<Regex>,
}

impl Sensitivity {
    /// From `database.sensitive_rooms` (patterns with `*`) and `database.sensitive_patterns`.
    pub fn new(config: &DatabaseConfig) -> Result<Sensitivity, CryptoError> {
        let rooms = config
            .sensitive_rooms
            .iter()
            .map(|p| {
                let regex = format!("^{}$", p.split('*').map(regex::escape).collect::<Vec<_>>().join(".*"));
                Regex::new(&regex).map_err(|e| CryptoError::Config(format!("database.sensitive_rooms: {p:?}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let patterns = config
            .sensitive_patterns
            .iter()
            .map(|p| Regex::new(p).map_err(|e| CryptoError::Config(format!("database.sensitive_patterns: {p:?}: {e}"))))
            .collect::<Result<_, _>>()?;
        Ok(Sensitivity { rooms, patterns })
    }

    /// Whether a message must be stored encrypted.
    pub fn is_sensitive(&self, flagged: bool, room: &str, content: &str) -> bool {
        flagged || self.rooms.iter().any(|r| r.is_match(room)) || self.patterns.iter().any(|p| p.is_match(content))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(keys: &[(&str, &str)], active: Option<&str>) -> DatabaseConfig {
        DatabaseConfig {
            encryption_keys: keys.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            encryption_key_id: active.map(String::from),
            ..DatabaseConfig::default()
        }
    }

    #[test]
    fn round_trip_and_rotation() {
        let old = Keyring::new(&config(&[("k1", "first passphrase")], None)).unwrap();
        let (id, sealed) = old.encrypt(b"card 4111 1111 1111 1111").unwrap();
        assert_eq!(id, "k1");
        assert!(!sealed.windows(4).any(|w| w == b"4111"), "no plaintext in the stored bytes");
        let rotated =
            Keyring::new(&config(&[("k1", "first passphrase"), ("k2", "second passphrase")], Some("k2"))).unwrap();
        assert_eq!(rotated.decrypt(&id, &sealed).unwrap(), b"card 4111 1111 1111 1111");
        assert_eq!(rotated.encrypt(b"x").unwrap().0, "k2");
        let dropped = Keyring::new(&config(&[("k2", "second passphrase")], None)).unwrap();
        assert_eq!(dropped.decrypt(&id, &sealed).unwrap_err(), CryptoError::UnknownKey("k1".into()));
    }

    #[test]
    fn sealed_text_round_trips_and_hides_the_plaintext() {
        let ring = Keyring::new(&config(&[("k:1", "secret")], None)).unwrap();
        let sealed = ring.seal_text(br#"{"url":"https://files/payroll.pdf"}"#).unwrap();
        assert!(Keyring::is_sealed(sealed.as_bytes()) && !sealed.contains("payroll"));
        assert_eq!(ring.open_text(sealed.as_bytes()).unwrap(), br#"{"url":"https://files/payroll.pdf"}"#);
        assert!(!Keyring::is_sealed(br#"{"url":1}"#));
        assert_eq!(ring.open_text(b"sealed:k:1:!!").unwrap_err(), CryptoError::Corrupt);
    }

    #[test]
    fn tampering_is_detected() {
        let ring = Keyring::new(&config(&[("k", "secret")], None)).unwrap();
        let (id, mut sealed) = ring.encrypt(b"hello").unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(ring.decrypt(&id, &sealed).unwrap_err(), CryptoError::Corrupt);
    }

    #[test]
    fn sensitivity_rules() {
        let config = DatabaseConfig {
            sensitive_rooms: vec!["support_*".into()],
            sensitive_patterns: vec![r"\b(?:\d[ -]?){13,16}\b".into()],
            ..DatabaseConfig::default()
        };
        let rules = Sensitivity::new(&config).unwrap();
        assert!(rules.is_sensitive(false, "support_9", "hi"));
        assert!(rules.is_sensitive(false, "order_1", "my card is 4111 1111 1111 1111"));
        assert!(rules.is_sensitive(true, "order_1", "hi"));
        assert!(!rules.is_sensitive(false, "order_1", "order 12 ships today"));
    }
}
