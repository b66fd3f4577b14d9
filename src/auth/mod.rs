//! Authentication and authorization: who a connection is, and what it may do.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

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
