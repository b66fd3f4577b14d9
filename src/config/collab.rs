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
