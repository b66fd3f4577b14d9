//! Server-to-client messages Herald writes itself (replies, errors, heartbeats).
//!
//! Events published by backends are not built here: they are forwarded as published (see
//! `hub::event`). These builders run once per reply, never per recipient of a fan-out.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::ErrorCode;

/// The current time as RFC 3339 with milliseconds, e.g. `2024-01-15T10:30:00.123Z`.
pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// RFC 3339 text of a Unix time in milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

/// A reply of `kind` with the given fields, a `timestamp`, and the request `id` when there was one.
pub fn reply(kind: &str, fields: Value, id: Option<&Value>) -> Bytes {
    let mut object = Map::new();
    object.insert("type".into(), Value::from(kind));
    if let Value::Object(fields) = fields {
        // The reply's own type wins over any `type` among the fields.
        object.extend(fields.into_iter().filter(|(k, _)| k != "type"));
    }
    object.entry("timestamp").or_insert_with(|| Value::from(now()));
    if let Some(id) = id {
        object.insert("id".into(), id.clone());
    }
    to_bytes(&Value::Object(object))
}

/// `{"type":"error","error":…,"message":…,"code":…,"timestamp":…}`; `message` repeats `error`
/// because the campaign profile's clients read that spelling.
pub fn error(code: ErrorCode, message: &str, id: Option<&Value>) -> Bytes {
    error_with(code, message, id, Map::new())
}

/// An error with extra fields (a retry hint, the current version of a cell, …).
pub fn error_with(code: ErrorCode, message: &str, id: Option<&Value>, extra: Map<String, Value>) -> Bytes {
    let mut fields = extra;
    fields.insert("error".into(), Value::from(message));
    fields.insert("message".into(), Value::from(message));
    fields.insert("code".into(), Value::from(code.as_str()));
    reply("error", Value::Object(fields), id)
}

/// `{"type":"heartbeat","timestamp":…}`.
pub fn heartbeat() -> Bytes {
    reply("heartbeat", json!({}), None)
}

/// Serializes a value; serde_json cannot fail on a `Value`.
pub fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_the_documented_shape() {
        let bytes = error(ErrorCode::PermissionDenied, "Permission denied", Some(&Value::from("r1")));
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "PERMISSION_DENIED");
        assert_eq!(v["error"], "Permission denied");
        assert_eq!(v["id"], "r1");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn the_reply_type_wins_over_a_type_field() {
        let bytes = reply("marked_read", json!({"type": "read_receipt", "room": "r"}), None);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["type"], "marked_read");
        assert_eq!(v["room"], "r");
    }
}
