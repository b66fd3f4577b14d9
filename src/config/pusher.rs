//! `[pusher]`: the Pusher Channels protocol face and its apps (`[[pusher.apps]]`).

use serde::{Deserialize, Serialize};

/// The Pusher Channels face: WebSocket at `/app/{key}`, the signed HTTP API under `/apps/{id}`.
/// With no apps configured the face is off and those paths answer 404.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PusherConfig {
    /// The apps; each one is its own namespace of channels, users and presence.
    pub apps: Vec<PusherAppConfig>,
    /// How far a signed API request's `auth_timestamp` may be from this node's clock, in seconds.
    pub max_clock_skew: u64,
}

/// One Pusher app.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PusherAppConfig {
    /// The app id, as in `/apps/{id}/events`. Some server SDKs (the Python one) accept only digits.
    pub id: String,
    /// The public key clients connect with (`/app/{key}`).
    pub key: String,
    /// The secret that signs channel authorizations and API requests.
    pub secret: String,
    /// Whether clients may send `client-*` events on private and presence channels.
    pub enable_client_messages: bool,
    /// Client events one connection may send per second (the protocol's default is 10).
    pub max_client_events_per_second: u32,
    /// Most connections of this app on this node; 0 means no app cap (the node's caps still apply).
    pub max_connections: usize,
    /// Most members of one presence channel (the protocol's default is 100).
    pub max_presence_members: usize,
    /// Largest `user_info` of a presence member, in bytes.
    pub max_presence_user_info_bytes: usize,
    /// Largest `data` of one event, in bytes (the protocol's default is 10 KiB).
    pub max_event_payload_bytes: usize,
    /// Most events in one `batch_events` request.
    pub max_batch_events: usize,
    /// Most channels one `POST /events` may name.
    pub max_event_channels: usize,
    /// Where the app's webhooks go.
    pub webhooks: Vec<PusherWebhookConfig>,
}

impl Default for PusherAppConfig {
    fn default() -> Self {
        PusherAppConfig {
            id: String::new(),
            key: String::new(),
            secret: String::new(),
            enable_client_messages: false,
            max_client_events_per_second: 10,
            max_connections: 0,
            max_presence_members: 100,
            max_presence_user_info_bytes: 1024,
            max_event_payload_bytes: 10 * 1024,
            max_batch_events: 10,
            max_event_channels: 100,
            webhooks: Vec::new(),
        }
    }
}

/// A webhook target of a Pusher app.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PusherWebhookConfig {
    /// The URL Herald POSTs signed batches to.
    pub url: String,
    /// Which events go there (`channel_occupied`, `channel_vacated`, `member_added`,
    /// `member_removed`, `client_event`, `cache_miss`); empty means all.
    pub event_types: Vec<String>,
}

/// Webhook event names Herald knows.
pub const WEBHOOK_EVENTS: &[&str] =
    &["channel_occupied", "channel_vacated", "member_added", "member_removed", "client_event", "cache_miss"];

impl PusherConfig {
    /// Every inconsistency, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, app) in self.apps.iter().enumerate() {
            let key = |field: &str| format!("pusher.apps[{i}].{field}");
            let token =
                |s: &str| !s.is_empty() && s.len() <= 200 && s.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
            if !token(&app.id) {
                out.push(format!("{}: must be 1 to 200 printable characters without '/'", key("id")));
            }
            if !token(&app.key) {
                out.push(format!("{}: must be 1 to 200 printable characters without '/'", key("key")));
            }
            if app.secret.len() < 8 {
                out.push(format!("{}: must be at least 8 characters", key("secret")));
            }
            if self.apps[..i].iter().any(|a| a.id == app.id) {
                out.push(format!("{}: {:?} is used by another app", key("id"), app.id));
            }
            if self.apps[..i].iter().any(|a| a.key == app.key) {
                out.push(format!("{}: {:?} is used by another app", key("key"), app.key));
            }
            if app.max_client_events_per_second == 0 && app.enable_client_messages {
                out.push(format!(
                    "{}: must be at least 1 when client messages are enabled",
                    key("max_client_events_per_second")
                ));
            }
            for (field, value) in [
                ("max_presence_members", app.max_presence_members),
                ("max_event_payload_bytes", app.max_event_payload_bytes),
                ("max_batch_events", app.max_batch_events),
                ("max_event_channels", app.max_event_channels),
                ("max_presence_user_info_bytes", app.max_presence_user_info_bytes),
            ] {
                if value == 0 {
                    out.push(format!("{}: must be at least 1", key(field)));
                }
            }
            for (j, hook) in app.webhooks.iter().enumerate() {
                if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                    out.push(format!("{}: must be an http:// or https:// URL", key(&format!("webhooks[{j}].url"))));
                }
                for kind in &hook.event_types {
                    if !WEBHOOK_EVENTS.contains(&kind.as_str()) {
                        out.push(format!(
                            "{}: unknown event {kind:?}; known: {}",
                            key(&format!("webhooks[{j}].event_types")),
                            WEBHOOK_EVENTS.join(", ")
                        ));
                    }
                }
            }
        }
        out
    }

    /// The largest allowed clock skew, with the protocol's 600 s when unset.
    pub fn clock_skew(&self) -> u64 {
        if self.max_clock_skew == 0 { 600 } else { self.max_clock_skew }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_are_checked_and_named() {
        let app = PusherAppConfig { id: "1".into(), key: "k".into(), secret: "s".into(), ..Default::default() };
        let config = PusherConfig { apps: vec![app.clone(), app], max_clock_skew: 0 };
        let problems = config.problems();
        assert!(problems.iter().any(|p| p.starts_with("pusher.apps[0].secret")), "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("pusher.apps[1].id")), "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("pusher.apps[1].key")), "{problems:?}");
    }
}
