//! Authentication and authorization: who a connection is (JWT, see [`token`]), and what it may
//! do to rooms and channels (see [`access`]). Every path that touches a room or channel asks
//! [`Auth::check`]; refusals are audited.

pub mod access;
pub mod token;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderMap;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::audit;
use crate::config::{AuthConfig, Config, NameKind};
pub use access::{Action, Denied, Policy};
pub use token::{KeyError, TokenError, Verified, Verifier};

/// An authenticated identity attached to a connection and to everything it sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identity {
    /// The user id (`sub`).
    pub id: Arc<str>,
    /// Display name, when the token carries one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// E-mail, when the token carries one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Roles.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Every claim of the token, for access rules.
    #[serde(skip)]
    pub claims: Map<String, Value>,
    /// Whether a token proved this identity (false for a self-asserted `user_id`).
    pub verified: bool,
}

impl Identity {
    /// An identity the client asserted without proof (authentication off).
    pub fn unverified(id: &str) -> Self {
        Identity { id: Arc::from(id), name: None, email: None, roles: Vec::new(), claims: Map::new(), verified: false }
    }
}

/// Why authentication could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// A key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// An access rule could not be compiled.
    #[error("{0}")]
    Rule(String),
}

/// A token presented with an upgrade request, and the subprotocol to answer with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presented {
    /// The token, if any.
    pub token: Option<String>,
    /// The subprotocol Herald must echo when the token came in `Sec-WebSocket-Protocol`.
    pub protocol: Option<String>,
}

/// Markers that precede or prefix a token in `Sec-WebSocket-Protocol`.
const PROTOCOL_MARKERS: &[&str] = &["bearer", "access_token", "token", "herald.token"];

fn looks_like_jwt(s: &str) -> bool {
    s.split('.').count() == 3 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Finds a token in the `token` (or `access_token`) query parameter, an `Authorization: Bearer`
/// header, or `Sec-WebSocket-Protocol` (browsers cannot set headers): either the pair
/// `bearer, <jwt>` (Herald answers `bearer`) or one entry `bearer.<jwt>`.
pub fn presented(headers: &HeaderMap, params: &HashMap<String, String>, protocols: &[String]) -> Presented {
    if let Some(token) = params.get("token").or_else(|| params.get("access_token")).filter(|t| !t.is_empty()) {
        return Presented { token: Some(token.clone()), protocol: None };
    }
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if let Some(token) = bearer {
        return Presented { token: Some(token.to_string()), protocol: None };
    }
    for (i, offered) in protocols.iter().enumerate() {
        let lower = offered.to_ascii_lowercase();
        if PROTOCOL_MARKERS.contains(&lower.as_str())
            && let Some(next) = protocols.get(i + 1).filter(|t| looks_like_jwt(t))
        {
            return Presented { token: Some(next.clone()), protocol: Some(offered.clone()) };
        }
        for marker in PROTOCOL_MARKERS {
            if let Some(token) = lower.strip_prefix(&format!("{marker}.")).map(|_| &offered[marker.len() + 1..])
                && looks_like_jwt(token)
            {
                return Presented { token: Some(token.to_string()), protocol: None };
            }
        }
    }
    Presented::default()
}

/// Verification and access, as configured; a reload swaps the keys and rules whole, so that a
/// check takes no lock.
pub struct Auth {
    live: ArcSwap<Keys>,
}

/// The keys, rules and `[auth]` section in force.
struct Keys {
    verifier: Option<Verifier>,
    policy: Policy,
    config: Arc<AuthConfig>,
}

impl Keys {
    fn new(config: &Config) -> Result<Keys, AuthSetupError> {
        Ok(Keys {
            verifier: Verifier::new(&config.auth)?,
            policy: Policy::new(&config.access).map_err(AuthSetupError::Rule)?,
            config: Arc::new(config.auth.clone()),
        })
    }
}

impl Auth {
    /// Loads keys and compiles rules.
    pub fn new(config: &Config) -> Result<Auth, AuthSetupError> {
        let auth = Auth { live: ArcSwap::from_pointee(Keys::new(config)?) };
        let open =
            |mode: Option<crate::config::AuthMode>| mode.unwrap_or(config.auth.mode) == crate::config::AuthMode::Off;
        if auth.proves_identities() && (open(None) || config.endpoints.iter().any(|e| open(e.auth))) {
            // Said once, so that an operator of an anonymous profile who adds a key learns why
            // `user_id` stopped naming users.
            tracing::info!(
                "a token key is configured: a user_id parameter names nobody, on endpoints with auth = \"off\" too \
                 (those connections are anonymous)"
            );
        }
        Ok(auth)
    }

    /// Loads the keys and rules of a reloaded configuration and puts them in force: tokens
    /// signed with a removed key are refused from the next verification on. On an error
    /// nothing changes.
    pub fn reload(&self, config: &Config) -> Result<(), AuthSetupError> {
        self.live.store(Arc::new(Keys::new(config)?));
        Ok(())
    }

    /// The `[auth]` section in force.
    pub fn config(&self) -> Arc<AuthConfig> {
        self.live.load().config.clone()
    }

    /// Whether this node can prove identities (a key is configured). On such a node a
    /// self-asserted `user_id` is never believed, on any endpoint or route, whatever its
    /// authentication mode: a claimed `alice` and a token's `alice` would otherwise share
    /// user-targeted delivery, notifications, presence, chat authorship and per-user limits.
    pub fn proves_identities(&self) -> bool {
        self.live.load().verifier.is_some()
    }

    /// Whether a self-asserted `user_id` may name a connection or a REST caller on an endpoint
    /// with authentication `mode`: only where tokens are not asked for and nothing on the node
    /// could prove an identity that the claim might collide with.
    pub fn believes_claimed_ids(&self, mode: crate::config::AuthMode) -> bool {
        mode == crate::config::AuthMode::Off && !self.proves_identities()
    }

    /// Verifies a token.
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        match &self.live.load().verifier {
            Some(verifier) => verifier.verify(token),
            None => Err(TokenError::UnknownKey),
        }
    }

    /// Whether `identity` may do `action` to `name`; refusals are audited.
    pub async fn check(
        &self,
        identity: Option<&Identity>,
        kind: NameKind,
        name: &str,
        action: Action,
    ) -> Result<(), Denied> {
        // The rules in force when the check began, even if a reload lands while the backend
        // is asked.
        let keys = self.live.load_full();
        let decision = keys.policy.check(identity, kind, name, action).await;
        if let Err(denied) = &decision {
            audit::permission_denied(identity.map(|i| &*i.id), kind, name, action.as_str(), &denied.reason);
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln";

    #[test]
    fn finds_the_token_wherever_browsers_and_servers_put_it() {
        let empty = HeaderMap::new();
        let params = HashMap::from([("token".to_string(), JWT.to_string())]);
        assert_eq!(presented(&empty, &params, &[]).token.as_deref(), Some(JWT));

        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, format!("Bearer {JWT}").parse().unwrap());
        assert_eq!(presented(&headers, &HashMap::new(), &[]).token.as_deref(), Some(JWT));

        let pair = vec!["bearer".to_string(), JWT.to_string()];
        let found = presented(&empty, &HashMap::new(), &pair);
        assert_eq!(found.token.as_deref(), Some(JWT));
        assert_eq!(found.protocol.as_deref(), Some("bearer"));

        let prefixed = vec!["herald.json".to_string(), format!("bearer.{JWT}")];
        let found = presented(&empty, &HashMap::new(), &prefixed);
        assert_eq!(found.token.as_deref(), Some(JWT));
        assert_eq!(found.protocol, None);

        assert_eq!(presented(&empty, &HashMap::new(), &["chat".into()]), Presented::default());
    }
}
