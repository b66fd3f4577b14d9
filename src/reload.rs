//! Reloading the configuration on SIGHUP: what can change while the node runs is put in force,
//! everything else is named as needing a restart and left as it was.
//!
//! Live: `limits.*`, `access.*` and `[auth]` keys and rules (except `auth.mode`, which decided
//! each endpoint's plan at start-up), the admin and ingestion credentials (`api.key`,
//! `api.allowed_ips`, `api.local_admin_without_key`, `ingest.key`, `ingest.allowed_ips`,
//! `ingest.access`) and `log.level` (applied by the binary, which owns the log filter). Each is
//! swapped whole behind an `ArcSwap`, so the paths that read them take no lock.

use std::sync::Arc;

use crate::auth::AuthSetupError;
use crate::config::{Config, ConfigError};
use crate::node::Node;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The merged configuration is inconsistent.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// A key or rule could not be loaded (a missing key file, a bad pattern).
    #[error(transparent)]
    Keys(#[from] AuthSetupError),
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Keys now in force.
    pub applied: Vec<String>,
    /// Keys that changed in the file but keep their old value until a restart.
    pub needs_restart: Vec<String>,
}

/// Whether a changed dotted key (as `config::show::changed_keys` names it) can change live.
pub fn is_live(key: &str) -> bool {
    let section = |name: &str| key == name || key.starts_with(&format!("{name}."));
    key == "log.level"
        || section("limits")
        || section("access")
        || (section("auth") && key != "auth.mode")
        || matches!(
            key,
            "api.key"
                | "api.allowed_ips"
                | "api.local_admin_without_key"
                | "ingest.key"
                | "ingest.allowed_ips"
                | "ingest.access"
        )
}

/// `current` with the live parts of `next`.
fn merge(current: &Config, next: &Config) -> Config {
    let mut merged = current.clone();
    merged.limits = next.limits.clone();
    merged.access = next.access.clone();
    merged.auth = crate::config::AuthConfig { mode: current.auth.mode, ..next.auth.clone() };
    merged.api.key = next.api.key.clone();
    merged.api.allowed_ips = next.api.allowed_ips.clone();
    merged.api.local_admin_without_key = next.api.local_admin_without_key;
    merged.ingest.key = next.ingest.key.clone();
    merged.ingest.allowed_ips = next.ingest.allowed_ips.clone();
    merged.ingest.access = next.ingest.access;
    merged.log.level = next.log.level.clone();
    merged
}

/// Puts the live parts of `next` (a configuration that loaded and validated) in force. The
/// merge with what cannot change is validated again, and keys are loaded before anything is
/// swapped, so an error changes nothing. When the access rules changed, every connection's
/// rooms and channels are checked again and those no longer allowed are left, the client told
/// with `revoked: true` (as after a token refresh).
pub async fn apply(node: &Arc<Node>, next: &Config) -> Result<Reloaded, ReloadError> {
    let current = node.live();
    let changed = crate::config::show::changed_keys(&current, next);
    let (applied, needs_restart): (Vec<_>, Vec<_>) = changed.into_iter().partition(|key| is_live(key));
    if applied.is_empty() {
        return Ok(Reloaded { applied, needs_restart });
    }
    let merged = merge(&current, next);
    merged.validate()?;
    node.auth.reload(&merged)?;
    node.limits.reload(&merged.limits);
    let access_changed = applied.iter().any(|key| key == "access" || key.starts_with("access."));
    node.set_live(merged);
    if access_changed {
        crate::session::handlers::auth::recheck_everyone(node).await;
    }
    Ok(Reloaded { applied, needs_restart })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_can_change_live() {
        for key in ["log.level", "limits.max_connections", "access.rules", "auth.jwt_secret", "api.key"] {
            assert!(is_live(key), "{key}");
        }
        for key in ["server.listen", "redis.url", "server.shards", "database.url", "auth.mode", "limitsx.a"] {
            assert!(!is_live(key), "{key}");
        }
    }
}
