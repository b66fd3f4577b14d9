//! An event on its way to connections: where it goes, its JSON bytes, and its frames, each
//! encoded at most once however many connections receive it.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::transport::frame;

/// A connection's number, unique within a node.
pub type ConnId = u64;

/// Who receives an event: the union of a channel's subscribers, a room's members and a user's
/// connections, or every connection when `broadcast` is set. Each connection receives it once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Subscribers of this channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Arc<str>>,
    /// Members of this room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<Arc<str>>,
    /// Every connection of this user, on every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Arc<str>>,
    /// Every connection, subscribed or not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub broadcast: bool,
}

impl Target {
    /// Whether the target names nobody.
    pub fn is_empty(&self) -> bool {
        self.channel.is_none() && self.room.is_none() && self.user.is_none() && !self.broadcast
    }
}

/// Which of the target's recipients a copy of an event is for.
///
/// Between nodes an event travels once per key of its target; each copy goes to the recipients
/// reachable through its key and not through an earlier one (channel, room, user), so that every
/// connection still receives the event exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// All recipients of the target (an event that did not come through per-key copies).
    Full,
    /// The channel's subscribers.
    Channel,
    /// The room's members not subscribed to the event's channel.
    Room,
    /// The user's connections neither subscribed to the channel nor in the room.
    User,
    /// Every connection.
    Broadcast,
}

/// An event ready for fan-out.
#[derive(Debug)]
pub struct Event {
    /// Recipients.
    pub target: Target,
    /// Which of them this copy is for.
    pub route: Route,
    /// The JSON object delivered to clients, as text.
    pub payload: Bytes,
    /// A connection that must not receive it (a sender that should not hear its own message).
    pub exclude: Option<ConnId>,
    /// When the event entered this node, for publish-to-write latency.
    pub received: Instant,
    /// Set on notifications: connections whose notification filter refuses them skip the event.
    pub tags: Option<Arc<NotificationTags>>,
    text_frame: OnceLock<Bytes>,
}

/// What a notification is about, matched against each connection's `subscribe_notifications`
/// filter at delivery. Only notifications carry tags, so other events pay one branch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationTags {
    /// `category`, e.g. `system`, `workspace`.
    #[serde(default, rename = "c", skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// `module_name`, e.g. `tables`, `ai`.
    #[serde(default, rename = "m", skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// `priority`, e.g. `normal`, `high`.
    #[serde(default, rename = "p", skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

impl Event {
    /// An event with its payload already serialized.
    pub fn new(target: Target, payload: Bytes) -> Arc<Event> {
        Self::routed(target, payload, None, Route::Full)
    }

    /// The same, not delivered to `exclude`.
    pub fn excluding(target: Target, payload: Bytes, exclude: ConnId) -> Arc<Event> {
        Self::routed(target, payload, Some(exclude), Route::Full)
    }

    /// A copy of an event for one route.
    pub fn routed(target: Target, payload: Bytes, exclude: Option<ConnId>, route: Route) -> Arc<Event> {
        Arc::new(Event {
            target,
            route,
            payload,
            exclude,
            received: Instant::now(),
            tags: None,
            text_frame: OnceLock::new(),
        })
    }

    /// A copy of a notification for one route, carrying its tags.
    pub fn tagged(
        target: Target,
        payload: Bytes,
        exclude: Option<ConnId>,
        route: Route,
        tags: Option<Arc<NotificationTags>>,
    ) -> Arc<Event> {
        Arc::new(Event { target, route, payload, exclude, received: Instant::now(), tags, text_frame: OnceLock::new() })
    }

    /// The WebSocket text frame carrying the payload, built by the first recipient's shard and
    /// shared by all.
    pub fn text_frame(&self) -> &Bytes {
        self.text_frame.get_or_init(|| frame::encode(frame::OP_TEXT, &self.payload))
    }
}

/// Why a published event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The event is not a JSON object.
    #[error("the event must be a JSON object")]
    NotAnObject,
    /// No channel, room, user or broadcast flag.
    #[error("the event names no target: give at least one of channel, room or user_id")]
    NoTarget,
    /// A name is invalid.
    #[error("{0}")]
    InvalidName(String),
}

/// Serializes a published event, giving it `default_type` when it has no `type`. The `type` goes
/// first so that clients and people reading logs see it at once.
pub fn prepare_payload(event: Map<String, Value>, default_type: Option<&str>) -> Bytes {
    let object = match (event.contains_key("type"), default_type) {
        (false, Some(kind)) => {
            let mut with_type = Map::with_capacity(event.len() + 1);
            with_type.insert("type".into(), Value::from(kind));
            with_type.extend(event);
            with_type
        }
        _ => event,
    };
    Bytes::from(serde_json::to_vec(&Value::Object(object)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_type_gets_the_default_first() {
        let Value::Object(event) = json!({"job_id": "j1", "status": "completed"}) else { unreachable!() };
        let bytes = prepare_payload(event, Some("job_update"));
        assert!(bytes.starts_with(br#"{"type":"job_update""#), "{}", String::from_utf8_lossy(&bytes));
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["status"], "completed");
    }

    #[test]
    fn an_existing_type_is_kept() {
        let Value::Object(event) = json!({"type": "campaign:launched"}) else { unreachable!() };
        let v: Value = serde_json::from_slice(&prepare_payload(event, Some("job_update"))).unwrap();
        assert_eq!(v["type"], "campaign:launched");
    }

    #[test]
    fn the_frame_is_built_once() {
        let event = Event::new(Target::default(), Bytes::from_static(b"{}"));
        let a = event.text_frame().as_ptr();
        let b = event.text_frame().as_ptr();
        assert_eq!(a, b);
    }
}
