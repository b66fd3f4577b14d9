//! Client-to-server messages: one JSON object per text frame, dispatched on its `type`.
//!
//! Parsing is deliberately two-step: [`Inbound::parse`] checks only that the frame is a JSON object
//! with a string `type`, and each handler pulls its own fields with the typed accessors here, which
//! produce errors that name the field. New message types therefore need no change to this file.

use serde_json::{Map, Value};

use super::ErrorCode;

/// Longest channel or room name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// A refused client message: the code and a human-readable reason, plus the request id if any.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtocolError {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// What was wrong, for people.
    pub message: String,
}

impl ProtocolError {
    /// Builds an error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ProtocolError {}

/// A parsed client message: its `type`, optional request id, and the whole object.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The `type` field.
    pub kind: String,
    /// `id` or `request_id`, echoed in the reply so clients can match acknowledgements.
    pub id: Option<Value>,
    /// The full object, including `type`.
    pub body: Map<String, Value>,
}

impl Inbound {
    /// Parses a text frame. Fails with `INVALID_JSON` for anything but an object, and with
    /// `INVALID_MESSAGE` when `type` is missing or not a string.
    pub fn parse(text: &[u8]) -> Result<Inbound, ProtocolError> {
        let value: Value = serde_json::from_slice(text)
            .map_err(|e| ProtocolError::new(ErrorCode::InvalidJson, format!("message is not valid JSON: {e}")))?;
        let Value::Object(body) = value else {
            return Err(ProtocolError::new(ErrorCode::InvalidJson, "message must be a JSON object"));
        };
        let kind = match body.get("type") {
            Some(Value::String(kind)) if !kind.is_empty() && kind.len() <= 100 => kind.clone(),
            Some(Value::String(_)) => {
                return Err(ProtocolError::new(ErrorCode::InvalidMessage, "field \"type\" must be 1-100 characters"));
            }
            Some(_) => {
                return Err(ProtocolError::new(ErrorCode::InvalidMessage, "field \"type\" must be a string"));
            }
            None => {
                return Err(ProtocolError::new(ErrorCode::InvalidMessage, "missing field \"type\""));
            }
        };
        let id = body.get("id").or_else(|| body.get("request_id")).filter(|v| v.is_string() || v.is_number()).cloned();
        Ok(Inbound { kind, id, body })
    }

    /// A required string field.
    pub fn str(&self, field: &str) -> Result<&str, ProtocolError> {
        match self.body.get(field) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(invalid(format!("field {field:?} must be a string"))),
            None => Err(invalid(format!("missing field {field:?}"))),
        }
    }

    /// An optional string field; a present non-string is an error.
    pub fn opt_str(&self, field: &str) -> Result<Option<&str>, ProtocolError> {
        match self.body.get(field) {
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Null) | None => Ok(None),
            Some(_) => Err(invalid(format!("field {field:?} must be a string"))),
        }
    }

    /// An optional field that may be a string or a number, returned as text (ids such as `order_id`).
    pub fn opt_id(&self, field: &str) -> Result<Option<String>, ProtocolError> {
        match self.body.get(field) {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Null) | None => Ok(None),
            Some(_) => Err(invalid(format!("field {field:?} must be a string or a number"))),
        }
    }

    /// The room of a room message: `room` or, as the spreadsheet profile spells it, `room_id`.
    pub fn room(&self) -> Result<&str, ProtocolError> {
        let room = match (self.opt_str("room")?, self.opt_str("room_id")?) {
            (Some(room), _) | (None, Some(room)) => room,
            (None, None) => return Err(invalid("missing field \"room\" (or \"room_id\")")),
        };
        validate_name("room", room)?;
        Ok(room)
    }

    /// The room if one is given (`room` or `room_id`).
    pub fn opt_room(&self) -> Result<Option<&str>, ProtocolError> {
        if self.body.contains_key("room") || self.body.contains_key("room_id") {
            self.room().map(Some)
        } else {
            Ok(None)
        }
    }

    /// The channels of a subscription message: `channels` as an array or comma-separated string,
    /// or a single `channel`.
    pub fn channels(&self) -> Result<Vec<&str>, ProtocolError> {
        let names: Vec<&str> = match (self.body.get("channels"), self.body.get("channel")) {
            (Some(Value::Array(items)), _) => items
                .iter()
                .map(|item| item.as_str().ok_or_else(|| invalid("field \"channels\" must contain only strings")))
                .collect::<Result<_, _>>()?,
            (Some(Value::String(list)), _) => list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect(),
            (Some(_), _) => return Err(invalid("field \"channels\" must be an array of strings")),
            (None, Some(Value::String(one))) => vec![one.as_str()],
            (None, Some(_)) => return Err(invalid("field \"channel\" must be a string")),
            (None, None) => return Err(invalid("missing field \"channels\"")),
        };
        if names.is_empty() {
            return Err(invalid("field \"channels\" must name at least one channel"));
        }
        for name in &names {
            validate_name("channel", name)?;
        }
        Ok(names)
    }
}

fn invalid(message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::InvalidMessage, message)
}

/// Checks a channel or room name: 1 to [`MAX_NAME_LEN`] bytes, no control characters.
/// Any other Unicode is allowed; names are opaque keys, never paths.
pub fn validate_name(what: &str, name: &str) -> Result<(), ProtocolError> {
    if name.is_empty() {
        return Err(ProtocolError::new(ErrorCode::InvalidName, format!("{what} name must not be empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ProtocolError::new(
            ErrorCode::InvalidName,
            format!("{what} name is {} bytes; the limit is {MAX_NAME_LEN}", name.len()),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ProtocolError::new(
            ErrorCode::InvalidName,
            format!("{what} name must not contain control characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_profiles_messages() {
        let m = Inbound::parse(br#"{"type":"subscribe","channels":["campaigns","emails"]}"#).unwrap();
        assert_eq!(m.kind, "subscribe");
        assert_eq!(m.channels().unwrap(), vec!["campaigns", "emails"]);
        let m = Inbound::parse(br#"{"type":"join_room","room_id":"workspace_123"}"#).unwrap();
        assert_eq!(m.room().unwrap(), "workspace_123");
        let m = Inbound::parse(br#"{"type":"join_room","room":"campaign:456","id":7}"#).unwrap();
        assert_eq!(m.room().unwrap(), "campaign:456");
        assert_eq!(m.id, Some(Value::from(7)));
    }

    #[test]
    fn refusals_carry_codes() {
        assert_eq!(Inbound::parse(b"not json").unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(Inbound::parse(b"[1,2]").unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(Inbound::parse(br#"{"channels":[]}"#).unwrap_err().code, ErrorCode::InvalidMessage);
        assert_eq!(Inbound::parse(br#"{"type":5}"#).unwrap_err().code, ErrorCode::InvalidMessage);
        let m = Inbound::parse(br#"{"type":"subscribe","channels":[1]}"#).unwrap();
        assert_eq!(m.channels().unwrap_err().code, ErrorCode::InvalidMessage);
        let m = Inbound::parse(br#"{"type":"join_room"}"#).unwrap();
        assert!(m.room().unwrap_err().message.contains("room"));
        let long = format!(r#"{{"type":"join_room","room":"{}"}}"#, "x".repeat(MAX_NAME_LEN + 1));
        assert_eq!(Inbound::parse(long.as_bytes()).unwrap().room().unwrap_err().code, ErrorCode::InvalidName);
        let ctl = Inbound::parse(br#"{"type":"join_room","room":"a\u0000b"}"#).unwrap();
        assert_eq!(ctl.room().unwrap_err().code, ErrorCode::InvalidName);
    }

    #[test]
    fn channels_accept_a_comma_list_or_one_channel() {
        let m = Inbound::parse(br#"{"type":"subscribe","channels":"a, b,,c"}"#).unwrap();
        assert_eq!(m.channels().unwrap(), vec!["a", "b", "c"]);
        let m = Inbound::parse(br#"{"type":"subscribe","channel":"jobs"}"#).unwrap();
        assert_eq!(m.channels().unwrap(), vec!["jobs"]);
    }

    // Found by the client_message fuzz target: without serde_json's `float_roundtrip`, a number
    // id was parsed one unit in the last place off the nearest double, so the id echoed in the
    // reply was not the number a correct parser (a browser's, Python's) reads from the request.
    #[test]
    fn a_number_id_is_echoed_as_the_same_number() {
        let m = Inbound::parse(br#"{"type":"ping","id":2112345678901234787890}"#).unwrap();
        assert_eq!(m.id, Some(Value::from(2.112345678901235e21)));
        let reply = super::super::outbound::error(ErrorCode::InvalidMessage, "x", m.id.as_ref());
        let reply: Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(reply["id"], Value::from(2.112345678901235e21));
    }

    #[test]
    fn unicode_and_path_like_names_are_plain_keys() {
        validate_name("room", "комната/../../etc/passwd").unwrap();
        validate_name("room", "🎉").unwrap();
    }
}
