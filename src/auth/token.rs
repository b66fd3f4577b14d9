//! JWT verification: HS256/384/512 with a shared secret, RS/PS/ES with a PEM public key or a JWKS
//! file. `exp` is required, `nbf` is checked, `iss` and `aud` are required (and checked) when
//! configured, and a key only verifies the algorithm family it belongs to, so a public key can
//! never be used as an HMAC secret and `alg: none` is never accepted.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation, decode, decode_header};
use serde_json::{Map, Value};

use super::Identity;
use crate::config::AuthConfig;

/// Why the verifier could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read.
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        /// Configuration key.
        key: &'static str,
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A key file does not hold a usable key.
    #[error("{key}: {reason}")]
    Invalid {
        /// Configuration key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Why a token was refused. The message is safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token was presented where one is required.
    #[error("authentication required: send a token")]
    Missing,
    /// Not a JWT, or an unsupported algorithm (`none` included).
    #[error("malformed token or unsupported algorithm")]
    Malformed,
    /// No configured key verifies tokens of this algorithm or `kid`.
    #[error("no key for this token's algorithm or key id")]
    UnknownKey,
    /// The signature does not verify.
    #[error("invalid token signature")]
    BadSignature,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` or `aud` is not accepted, or a required claim is missing.
    #[error("token claims rejected: {0}")]
    Claims(String),
    /// A fallback transport's one-time ticket is unknown, already used or expired.
    #[error("unknown, used or expired ticket: ask for a new one")]
    Ticket,
}

/// The latest expiry a token can carry (9999-12-31T23:59:59Z); later ones are clamped to it.
pub const MAX_EXPIRY: u64 = 253_402_300_799;

struct Key {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// A verified token.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Who it names.
    pub identity: Arc<Identity>,
    /// When it expires.
    pub expires_at: SystemTime,
}

/// Verifies tokens against the configured keys.
pub struct Verifier {
    keys: Vec<Key>,
    base: Validation,
    config: AuthConfig,
}

impl Verifier {
    /// Builds the verifier; `None` when no key is configured.
    pub fn new(config: &AuthConfig) -> Result<Option<Verifier>, KeyError> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.jwt_secret {
            keys.push(Key {
                kid: None,
                key: DecodingKey::from_secret(secret.as_bytes()),
                algorithms: AlgorithmFamily::Hmac.algorithms().to_vec(),
            });
        }
        if let Some(path) = &config.public_key_file {
            let pem = read(path, "auth.public_key_file")?;
            let key = if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                Key { kid: None, key, algorithms: AlgorithmFamily::Rsa.algorithms().to_vec() }
            } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                Key { kid: None, key, algorithms: AlgorithmFamily::Ec.algorithms().to_vec() }
            } else if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
                Key { kid: None, key, algorithms: AlgorithmFamily::Ed.algorithms().to_vec() }
            } else {
                return Err(KeyError::Invalid {
                    key: "auth.public_key_file",
                    reason: format!("{} holds no RSA, EC or Ed25519 public key in PEM form", path.display()),
                });
            };
            keys.push(key);
        }
        if let Some(path) = &config.jwks_file {
            let text = read(path, "auth.jwks_file")?;
            let set: JwkSet = serde_json::from_slice(&text).map_err(|e| KeyError::Invalid {
                key: "auth.jwks_file",
                reason: format!("{} is not a JWKS document: {e}", path.display()),
            })?;
            for jwk in &set.keys {
                let key = DecodingKey::from_jwk(jwk).map_err(|e| KeyError::Invalid {
                    key: "auth.jwks_file",
                    reason: format!("key {:?}: {e}", jwk.common.key_id),
                })?;
                let algorithms = match jwk.common.key_algorithm.and_then(|a| a.to_string().parse::<Algorithm>().ok()) {
                    Some(alg) => vec![alg],
                    None => match &jwk.algorithm {
                        jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa.algorithms().to_vec(),
                        jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => {
                            AlgorithmFamily::Ec.algorithms().to_vec()
                        }
                        jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => {
                            AlgorithmFamily::Ed.algorithms().to_vec()
                        }
                        jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_) => {
                            AlgorithmFamily::Hmac.algorithms().to_vec()
                        }
                        _ => {
                            return Err(KeyError::Invalid {
                                key: "auth.jwks_file",
                                reason: format!("key {:?} has an unsupported key type", jwk.common.key_id),
                            });
                        }
                    },
                };
                keys.push(Key { kid: jwk.common.key_id.clone(), key, algorithms });
            }
        }
        if keys.is_empty() {
            return Ok(None);
        }
        let mut base = Validation::new(Algorithm::HS256);
        base.leeway = config.leeway.as_secs();
        base.validate_nbf = true;
        base.validate_aud = !config.audiences.is_empty();
        // A configured set is a requirement: a token that leaves the claim out would otherwise
        // pass, since jsonwebtoken only compares the claims a token carries.
        if !config.audiences.is_empty() {
            base.set_audience(&config.audiences);
            base.required_spec_claims.insert("aud".into());
        }
        if !config.issuers.is_empty() {
            base.set_issuer(&config.issuers);
            base.required_spec_claims.insert("iss".into());
        }
        Ok(Some(Verifier { keys, base, config: config.clone() }))
    }

    /// Verifies a token and builds the identity it names.
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        let key = self
            .keys
            .iter()
            .filter(|k| k.algorithms.contains(&header.alg))
            .find(|k| match (&header.kid, &k.kid) {
                (Some(wanted), Some(have)) => wanted == have,
                (Some(_), None) | (None, _) => true,
            })
            .ok_or(TokenError::UnknownKey)?;
        let mut validation = self.base.clone();
        validation.algorithms = vec![header.alg];
        let data = decode::<Map<String, Value>>(token, &key.key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidIssuer => TokenError::Claims("issuer not accepted".into()),
                ErrorKind::InvalidAudience => TokenError::Claims("audience not accepted".into()),
                ErrorKind::MissingRequiredClaim(claim) => TokenError::Claims(format!("missing claim {claim}")),
                ErrorKind::InvalidAlgorithm => TokenError::UnknownKey,
                _ => TokenError::Malformed,
            }
        })?;
        let claims = data.claims;
        let text = |name: &str| match claims.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let id = text(&self.config.user_claim)
            .ok_or_else(|| TokenError::Claims(format!("missing claim {}", self.config.user_claim)))?;
        if crate::protocol::validate_name("user", &id).is_err() {
            return Err(TokenError::Claims(format!("claim {} is not a usable user id", self.config.user_claim)));
        }
        let roles = match claims.get(&self.config.roles_claim) {
            Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            Some(Value::String(one)) => one.split([' ', ',']).filter(|r| !r.is_empty()).map(String::from).collect(),
            _ => Vec::new(),
        };
        // A far-future `exp` (u64::MAX passes jsonwebtoken's checks) would overflow `SystemTime`
        // here or when the session adds its leeway: such a token never expires, which a clamp to
        // the last second of year 9999 keeps true without the arithmetic panicking.
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0).min(MAX_EXPIRY);
        let identity = Identity {
            id: Arc::from(id),
            name: text(&self.config.name_claim),
            email: text(&self.config.email_claim),
            roles,
            verified: true,
            claims,
        };
        Ok(Verified { identity: Arc::new(identity), expires_at: UNIX_EPOCH + Duration::from_secs(exp) })
    }
}

fn read(path: &std::path::Path, key: &'static str) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read { key, path: path.display().to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn hs_config() -> AuthConfig {
        AuthConfig { jwt_secret: Some("a-test-secret-of-some-length".into()), ..AuthConfig::default() }
    }

    fn sign(claims: Value, secret: &str) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    #[test]
    fn a_far_future_expiry_is_clamped_instead_of_overflowing_the_clock() {
        let verifier = Verifier::new(&hs_config()).unwrap().unwrap();
        let token = sign(json!({"sub": "u1", "exp": u64::MAX}), "a-test-secret-of-some-length");
        let verified = verifier.verify(&token).unwrap();
        assert_eq!(verified.expires_at, UNIX_EPOCH + Duration::from_secs(MAX_EXPIRY));
        // The session adds leeway to the expiry; that must not overflow either.
        assert!(verified.expires_at.checked_add(Duration::from_secs(3600)).is_some());
    }

    #[test]
    fn a_good_token_gives_an_identity() {
        let verifier = Verifier::new(&hs_config()).unwrap().unwrap();
        let token = sign(
            json!({"sub": "u1", "name": "Ana", "email": "a@x.io", "roles": ["support"], "order_ids": [1, 2], "exp": now() + 60}),
            "a-test-secret-of-some-length",
        );
        let verified = verifier.verify(&token).unwrap();
        assert_eq!(&*verified.identity.id, "u1");
        assert_eq!(verified.identity.roles, vec!["support"]);
        assert_eq!(verified.identity.claims["order_ids"], json!([1, 2]));
        assert!(verified.identity.verified);
    }

    #[test]
    fn refusals() {
        let verifier = Verifier::new(&hs_config()).unwrap().unwrap();
        let expired = sign(json!({"sub": "u1", "exp": now() - 3600}), "a-test-secret-of-some-length");
        assert_eq!(verifier.verify(&expired).unwrap_err(), TokenError::Expired);
        let wrong = sign(json!({"sub": "u1", "exp": now() + 60}), "another-secret-entirely");
        assert_eq!(verifier.verify(&wrong).unwrap_err(), TokenError::BadSignature);
        assert_eq!(verifier.verify("not.a.jwt").unwrap_err(), TokenError::Malformed);
        assert_eq!(verifier.verify("").unwrap_err(), TokenError::Malformed);
        // alg: none, with an empty signature.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert_eq!(verifier.verify(none).unwrap_err(), TokenError::Malformed);
        let no_exp = sign(json!({"sub": "u1"}), "a-test-secret-of-some-length");
        assert!(matches!(verifier.verify(&no_exp).unwrap_err(), TokenError::Claims(_)));
        let no_sub = sign(json!({"exp": now() + 60}), "a-test-secret-of-some-length");
        assert!(matches!(verifier.verify(&no_sub).unwrap_err(), TokenError::Claims(_)));
        let future =
            sign(json!({"sub": "u1", "exp": now() + 7200, "nbf": now() + 3600}), "a-test-secret-of-some-length");
        assert_eq!(verifier.verify(&future).unwrap_err(), TokenError::NotYetValid);
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let config =
            AuthConfig { issuers: vec!["https://idp".into()], audiences: vec!["herald".into()], ..hs_config() };
        let verifier = Verifier::new(&config).unwrap().unwrap();
        let secret = "a-test-secret-of-some-length";
        let good = sign(json!({"sub": "u", "exp": now() + 60, "iss": "https://idp", "aud": "herald"}), secret);
        assert!(verifier.verify(&good).is_ok());
        let bad_iss = sign(json!({"sub": "u", "exp": now() + 60, "iss": "https://evil", "aud": "herald"}), secret);
        assert!(matches!(verifier.verify(&bad_iss).unwrap_err(), TokenError::Claims(_)));
        let bad_aud = sign(json!({"sub": "u", "exp": now() + 60, "iss": "https://idp", "aud": "other"}), secret);
        assert!(matches!(verifier.verify(&bad_aud).unwrap_err(), TokenError::Claims(_)));
        let no_iss = sign(json!({"sub": "u", "exp": now() + 60, "aud": "herald"}), secret);
        assert_eq!(verifier.verify(&no_iss).unwrap_err(), TokenError::Claims("missing claim iss".into()));
        let no_aud = sign(json!({"sub": "u", "exp": now() + 60, "iss": "https://idp"}), secret);
        assert_eq!(verifier.verify(&no_aud).unwrap_err(), TokenError::Claims("missing claim aud".into()));
    }

    #[test]
    fn an_rsa_key_never_verifies_hmac_tokens() {
        let dir = env!("CARGO_MANIFEST_DIR");
        let config = AuthConfig {
            public_key_file: Some(format!("{dir}/tests/fixtures/rs256-public.pem").into()),
            ..AuthConfig::default()
        };
        let verifier = Verifier::new(&config).unwrap().unwrap();
        // The classic confusion attack: sign HS256 with the public key's bytes as the secret.
        let public = std::fs::read_to_string(format!("{dir}/tests/fixtures/rs256-public.pem")).unwrap();
        let forged = sign(json!({"sub": "u", "exp": now() + 60}), &public);
        assert_eq!(verifier.verify(&forged).unwrap_err(), TokenError::UnknownKey);
        let private = std::fs::read(format!("{dir}/tests/fixtures/rs256-private.pem")).unwrap();
        let good = encode(
            &Header::new(Algorithm::RS256),
            &json!({"sub": "u", "exp": now() + 60}),
            &EncodingKey::from_rsa_pem(&private).unwrap(),
        )
        .unwrap();
        assert!(verifier.verify(&good).is_ok());
    }
}
