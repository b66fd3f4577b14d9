//! Pusher protocol 7 messages: `{"event", "channel"?, "data"}`, where the `data` of the server's
//! messages is a JSON-encoded string (except `pusher:error`, whose `data` is an object as the
//! protocol documents it).

use bytes::Bytes;
use serde_json::{Map, Value, json};

/// The protocol's close and error codes.
pub mod code {
    /// Unknown app key (do not reconnect).
    pub const APP_NOT_FOUND: u16 = 4001;
    /// Connection quota of the app reached (do not reconnect).
    pub const OVER_QUOTA: u16 = 4004;
    /// `protocol` is not a number.
    pub const INVALID_VERSION: u16 = 4006;
    /// Unsupported protocol version.
    pub const UNSUPPORTED_PROTOCOL: u16 = 4007;
    /// No `protocol` parameter.
    pub const NO_PROTOCOL: u16 = 4008;
    /// The connection is not allowed (terminated by the app, or unauthorized).
    pub const UNAUTHORIZED: u16 = 4009;
    /// Over capacity: reconnect after a back-off.
    pub const OVER_CAPACITY: u16 = 4100;
    /// Generic: reconnect now.
    pub const RECONNECT: u16 = 4200;
    /// A client event was refused by the rate limit.
    pub const CLIENT_EVENT_RATE: u16 = 4301;
    /// A malformed or refused message (the connection carries on).
    pub const INVALID_MESSAGE: u16 = 4300;
}

pub use crate::transport::frame::close_code::close_for;

/// A message with a string `data`, as the server sends it.
pub fn message(event: &str, channel: Option<&str>, data: &str) -> Bytes {
    let mut map = Map::with_capacity(3);
    map.insert("event".into(), Value::from(event));
    if let Some(channel) = channel {
        map.insert("channel".into(), Value::from(channel));
    }
    map.insert("data".into(), Value::from(data));
    to_bytes(&Value::Object(map))
}

/// A message whose `data` is `value` JSON-encoded into a string.
pub fn message_json(event: &str, channel: Option<&str>, value: &Value) -> Bytes {
    message(event, channel, &value.to_string())
}

/// `pusher_internal:subscription_succeeded` (`data` a JSON-encoded string, as always), with
/// Herald's stream position (`seq`, `epoch`, and `recovered` after a resume) beside it when the
/// client asked for positions on a channel with history. pusher-js ignores the extra fields.
pub fn subscription_succeeded(channel: &str, data: &str, position: Option<Value>) -> Bytes {
    let mut map = Map::with_capacity(6);
    map.insert("event".into(), Value::from("pusher_internal:subscription_succeeded"));
    map.insert("channel".into(), Value::from(channel));
    map.insert("data".into(), Value::from(data));
    if let Some(Value::Object(position)) = position {
        map.extend(position);
    }
    to_bytes(&Value::Object(map))
}

/// `pusher:error` with its code (`None` for errors that do not concern the connection).
pub fn error(code: Option<u16>, text: &str) -> Bytes {
    to_bytes(&json!({ "event": "pusher:error", "data": { "code": code, "message": text } }))
}

/// `pusher:subscription_error` for one channel, as pusher-js reports a refused authorization.
pub fn subscription_error(channel: &str, kind: &str, text: &str, status: u16) -> Bytes {
    to_bytes(&json!({
        "event": "pusher:subscription_error",
        "channel": channel,
        "data": { "type": kind, "error": text, "status": status },
    }))
}

/// An event as relayed to subscribers: `data` stays what the publisher sent (a string from the
/// HTTP API; whatever a client sent for client events, so end-to-end encrypted payloads pass
/// untouched).
pub fn event(name: &str, channel: &str, data: &Value, user_id: Option<&str>) -> Bytes {
    let mut map = Map::with_capacity(4);
    map.insert("event".into(), Value::from(name));
    map.insert("channel".into(), Value::from(channel));
    map.insert("data".into(), data.clone());
    if let Some(user) = user_id {
        map.insert("user_id".into(), Value::from(user));
    }
    to_bytes(&Value::Object(map))
}

fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// A client's message, parsed as far as the protocol needs.
#[derive(Debug)]
pub struct Inbound {
    /// `event`.
    pub event: String,
    /// `channel`, if any.
    pub channel: Option<String>,
    /// `data`, decoded when it is a JSON-encoded string of an object.
    pub data: Value,
}

impl Inbound {
    /// Parses a text frame; the error is the message for `pusher:error`.
    pub fn parse(text: &[u8]) -> Result<Inbound, String> {
        let value: Value = serde_json::from_slice(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let Value::Object(mut map) = value else {
            return Err("a message must be a JSON object with an \"event\"".into());
        };
        let event = match map.remove("event") {
            Some(Value::String(event)) if !event.is_empty() => event,
            _ => return Err("a message needs a non-empty string \"event\"".into()),
        };
        let channel = match map.remove("channel") {
            None | Some(Value::Null) => None,
            Some(Value::String(channel)) => Some(channel),
            Some(_) => return Err("\"channel\" must be a string".into()),
        };
        let data = map.remove("data").unwrap_or(Value::Null);
        Ok(Inbound { event, channel, data })
    }

    /// `data` as an object, also when it came JSON-encoded in a string.
    pub fn data_object(&self) -> Option<Map<String, Value>> {
        match &self.data {
            Value::Object(map) => Some(map.clone()),
            Value::String(text) => match serde_json::from_str(text) {
                Ok(Value::Object(map)) => Some(map),
                _ => None,
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn herald_close_codes_map_to_pushers() {
        use crate::config::EndpointKind;
        use crate::transport::frame::close_code;
        assert_eq!(close_for(EndpointKind::Pusher, close_code::SLOW_CONSUMER), code::OVER_CAPACITY);
        assert_eq!(close_for(EndpointKind::Pusher, close_code::DISCONNECTED_BY_ADMIN), code::UNAUTHORIZED);
        assert_eq!(close_for(EndpointKind::Pusher, close_code::IDLE_TIMEOUT), 4201);
        assert_eq!(close_for(EndpointKind::Events, close_code::SLOW_CONSUMER), close_code::SLOW_CONSUMER);
    }

    #[test]
    fn server_data_is_a_string() {
        let m: Value =
            serde_json::from_slice(&message_json("pusher:connection_established", None, &json!({"socket_id": "1.2"})))
                .unwrap();
        assert_eq!(m["data"], Value::from(r#"{"socket_id":"1.2"}"#));
        assert!(m.get("channel").is_none());
    }

    #[test]
    fn inbound_accepts_object_or_string_data() {
        let m = Inbound::parse(br#"{"event":"pusher:subscribe","data":{"channel":"a"}}"#).unwrap();
        assert_eq!(m.data_object().unwrap()["channel"], "a");
        let m = Inbound::parse(br#"{"event":"pusher:subscribe","data":"{\"channel\":\"b\"}"}"#).unwrap();
        assert_eq!(m.data_object().unwrap()["channel"], "b");
        assert!(Inbound::parse(b"[1]").is_err());
        assert!(Inbound::parse(b"{\"data\":1}").is_err());
        assert!(Inbound::parse(b"{\"event\":\"x\",\"channel\":3}").is_err());
        assert!(Inbound::parse(b"nope").is_err());
    }
}
