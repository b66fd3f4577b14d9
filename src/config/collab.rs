//! Configuration of presence, notifications, requests for the backend and application aliases.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, text};

/// Presence, typing and cursors.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// Track who is where and announce it: `room_state` on join, `user_joined` / `user_left`,
    /// status changes. Off by default, so that a client that never asked for presence sees the
    /// same frames as before (as Centrifugo's `presence` / `join_leave` options).
    pub enabled: bool,
    /// Send `room_state` to a connection that joins a room.
    pub room_state_on_join: bool,
    /// Send `room_state` to the whole room whenever a connection joins it and whenever a user
    /// leaves it (the spreadsheet profile), instead of to the joining connection only.
    pub room_state_to_room: bool,
    /// A typing state with no stop is announced as stopped after this long.
    #[schemars(with = "String")]
    #[serde(with = "duration")]
    pub typing_timeout: Duration,
    /// At most one `cursor_moved` per user and room in this interval; faster moves are coalesced.
    #[schemars(with = "String")]
    #[serde(with = "duration")]
    pub cursor_interval: Duration,
    /// Event types sent for a status change: the spreadsheet profile's `user_status_changed`, the
    /// manufacturing-chat profile's `presence_update`, or both.
    pub status_events: Vec<String>,
    /// Typing event shapes: the manufacturing-chat profile's `typing_indicator` (`is_typing`),
    /// the spreadsheet profile's `user_typing` (`user_typing_start` / `user_typing_stop`), or both.
    pub typing_events: Vec<TypingEvent>,
    /// Largest cell (`value` and `formula` as JSON) a `cell_update` may write, in bytes.
    pub max_cell_bytes: usize,
    /// Most cells a room holds; edits of new cells beyond it get `LIMIT_EXCEEDED`.
    pub max_cells_per_room: usize,
    /// Most distinct sheets a room's cells (and its `room_state.active_sheets`) span.
    pub max_sheets_per_room: usize,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            room_state_on_join: true,
            room_state_to_room: false,
            typing_timeout: Duration::from_secs(5),
            cursor_interval: Duration::from_millis(50),
            status_events: vec!["user_status_changed".into(), "presence_update".into()],
            typing_events: vec![TypingEvent::TypingIndicator, TypingEvent::UserTyping],
            max_cell_bytes: 32 * 1024,
            max_cells_per_room: 10_000,
            max_sheets_per_room: 100,
        }
    }
}

/// Stored notifications.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Most unread notifications sent to a connection when it subscribes.
    pub max_unread_on_subscribe: u32,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self { max_unread_on_subscribe: 100 }
    }
}

/// Client messages Herald hands to the application's backend, and lifecycle webhooks.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Message types forwarded (`ai_request`, `file_upload_start`, …; `cell_update` forwards
    /// accepted edits for persistence).
    pub types: Vec<String>,
    /// Redis stream requests are added to (`XADD`), read by workers with consumer groups.
    pub redis_stream: Option<String>,
    /// Approximate length the stream is trimmed to.
    pub stream_max_len: u64,
    /// URL requests (and lifecycle events) are POSTed to, signed with `webhook_secret`.
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key for the `X-Herald-Signature` header.
    #[serde(deserialize_with = "text::opt_string")]
    pub webhook_secret: Option<String>,
    /// How long a webhook call may take.
    #[schemars(with = "String")]
    #[serde(with = "duration")]
    pub webhook_timeout: Duration,
    /// Lifecycle events sent to the webhook: `connect`, `disconnect`, `join`, `leave`.
    pub lifecycle: Vec<LifecycleEvent>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            types: Vec::new(),
            redis_stream: None,
            stream_max_len: 100_000,
            webhook_url: None,
            webhook_secret: None,
            webhook_timeout: Duration::from_secs(5),
            lifecycle: Vec::new(),
        }
    }
}

/// What an application alias does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AliasAction {
    /// Join the room named by `target`.
    JoinRoom,
    /// Leave it.
    LeaveRoom,
    /// Subscribe to the channel named by `target`.
    Subscribe,
    /// Unsubscribe from it.
    Unsubscribe,
}

/// An application's message mapped to a built-in action, e.g. the manufacturing-chat profile's
/// `{"type":"subscribe_order_updates","order_id":123}` → join `order_123`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasConfig {
    /// The application's message type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The built-in action.
    pub action: AliasAction,
    /// Room or channel name template, filled from the message's fields.
    pub target: String,
}

/// A typing event shape (`presence.typing_events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TypingEvent {
    /// `typing_indicator` with `is_typing`.
    TypingIndicator,
    /// `user_typing_start` / `user_typing_stop`.
    UserTyping,
}

/// A lifecycle event for the webhook (`upstream.lifecycle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleEvent {
    /// A connection opened.
    Connect,
    /// A connection closed.
    Disconnect,
    /// A user joined a room.
    Join,
    /// A user left a room.
    Leave,
}

impl LifecycleEvent {
    /// The name, as configured and as sent (`event`, and `herald.<name>` as `type`).
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleEvent::Connect => "connect",
            LifecycleEvent::Disconnect => "disconnect",
            LifecycleEvent::Join => "join",
            LifecycleEvent::Leave => "leave",
        }
    }
}

impl UpstreamConfig {
    /// `[upstream]`'s own checks (that `redis_stream` needs `redis.url` is the whole
    /// configuration's).
    pub(crate) fn validate(&self, problem: &mut dyn FnMut(String, &str)) {
        if let Some(url) = &self.webhook_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problem("upstream.webhook_url".into(), "must be an http:// or https:// URL");
        }
        if !self.types.is_empty() && self.webhook_url.is_none() && self.redis_stream.is_none() {
            problem("upstream.types".into(), "forwarded types need upstream.redis_stream or upstream.webhook_url");
        }
        if !self.lifecycle.is_empty() && self.webhook_url.is_none() {
            problem("upstream.lifecycle".into(), "lifecycle events need upstream.webhook_url");
        }
    }
}

impl PresenceConfig {
    /// `[presence]`'s own checks.
    pub(crate) fn validate(&self, problem: &mut dyn FnMut(String, &str)) {
        for (i, event) in self.status_events.iter().enumerate() {
            if !["user_status_changed", "presence_update"].contains(&event.as_str()) {
                problem(format!("presence.status_events[{i}]"), "must be user_status_changed or presence_update");
            }
        }
    }
}

impl AliasConfig {
    /// One `[[aliases]]` entry's own checks (`i` is its index, for the key names).
    pub(crate) fn validate(&self, i: usize, problem: &mut dyn FnMut(String, &str)) {
        if self.kind.is_empty() || crate::protocol::kinds::is_built_in(&self.kind) {
            problem(format!("aliases[{i}].type"), "must be a message type that Herald does not handle itself");
        }
        if let Err(e) = crate::protocol::template::check(&self.target) {
            problem(format!("aliases[{i}].target"), &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::problems_of;

    #[test]
    fn upstream_checks_itself() {
        let upstream = UpstreamConfig { types: vec!["ai_request".into()], ..Default::default() };
        assert!(problems_of(|p| upstream.validate(p))[0].starts_with("upstream.types"));
        let upstream = UpstreamConfig { webhook_url: Some("ftp://x".into()), ..Default::default() };
        assert!(problems_of(|p| upstream.validate(p))[0].starts_with("upstream.webhook_url"));
        assert!(problems_of(|p| UpstreamConfig::default().validate(p)).is_empty());
    }

    #[test]
    fn presence_checks_itself() {
        let presence = PresenceConfig { status_events: vec!["status".into()], ..Default::default() };
        assert!(problems_of(|p| presence.validate(p))[0].starts_with("presence.status_events[0]"));
        assert!(problems_of(|p| PresenceConfig::default().validate(p)).is_empty());
    }

    #[test]
    fn an_alias_checks_its_type_and_target() {
        let alias = AliasConfig { kind: "ping".into(), action: AliasAction::JoinRoom, target: "order_{".into() };
        let problems = problems_of(|p| alias.validate(4, p));
        assert!(problems[0].starts_with("aliases[4].type"), "{problems:?}");
        assert!(problems[1].starts_with("aliases[4].target"), "{problems:?}");
    }
}
