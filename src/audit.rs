//! The audit log: authentication failures, refusals, admin actions and forced disconnects, one
//! structured record each under the `herald::audit` tracing target. `main.rs` routes that target
//! to `audit.file` as JSON lines when one is configured.

use crate::config::NameKind;

/// The tracing target of audit records.
pub const TARGET: &str = "herald::audit";

/// A connection was refused for its credentials.
pub fn authentication_failed(peer: &str, path: &str, reason: &str) {
    tracing::warn!(target: TARGET, audit = "authentication_failed", peer, path, reason);
}

/// An identity was refused access to a room or channel. `action` is the access verb's wire
/// spelling (`auth::Action::as_str`): the audit log sits below `auth`, which writes to it.
pub fn permission_denied(user: Option<&str>, kind: NameKind, name: &str, action: &str, reason: &str) {
    let kind = kind.as_str();
    tracing::warn!(target: TARGET, audit = "permission_denied", user = user.unwrap_or("-"), kind, name, action, reason);
}

/// A connection was refused or cut for a limit.
pub fn limit(peer: &str, user: Option<&str>, what: &str) {
    tracing::warn!(target: TARGET, audit = "limit", peer, user = user.unwrap_or("-"), what);
}

/// An operator did something through the admin API.
pub fn admin_action(peer: &str, action: &str, detail: &str) {
    tracing::info!(target: TARGET, audit = "admin_action", peer, action, detail);
}

/// Herald closed a connection on its own initiative.
pub fn forced_disconnect(connection: &str, user: Option<&str>, code: u16, reason: &str) {
    tracing::info!(target: TARGET, audit = "forced_disconnect", connection, user = user.unwrap_or("-"), code, reason);
}
