//! A client's JSON text frame: `Inbound::parse`, then every accessor a handler may call.
//!
//! Input: the frame's payload as it arrives (any bytes; the decoder guarantees UTF-8 in
//! production, but `parse` takes bytes and must not rely on it).
//!
//! Checked: no panic; a parsed message has a 1-100 character string `type` equal to its body's
//! and an `id` that is a string or a number; names the accessors return pass `validate_name`;
//! `opt_room` agrees with `room`; an error reply echoing the id is valid JSON.

#![no_main]

use herald::protocol::outbound;
use herald::protocol::{ErrorCode, Inbound, validate_name};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Fields handlers read today, plus names that are easy to confuse with them.
const FIELDS: &[&str] = &[
    "type",
    "id",
    "request_id",
    "room",
    "room_id",
    "channel",
    "channels",
    "order_id",
    "user_id",
    "event",
    "data",
    "",
];

fn every_accessor(message: &Inbound, field: &str) {
    let _ = message.str(field);
    let _ = message.opt_str(field);
    let _ = message.opt_id(field);
}

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Inbound::parse(data) else {
        return;
    };
    assert!(!message.kind.is_empty() && message.kind.len() <= 100);
    assert_eq!(
        message.body.get("type").and_then(Value::as_str),
        Some(message.kind.as_str())
    );
    if let Some(id) = &message.id {
        assert!(id.is_string() || id.is_number());
    }

    for field in FIELDS {
        every_accessor(&message, field);
    }
    for key in message.body.keys() {
        every_accessor(&message, key);
    }

    let room = message.room();
    if let Ok(room) = &room {
        assert!(validate_name("room", room).is_ok());
    }
    match message.opt_room() {
        Ok(Some(opt)) => assert_eq!(room.as_ref().ok(), Some(&opt)),
        Ok(None) => {
            assert!(!message.body.contains_key("room") && !message.body.contains_key("room_id"))
        }
        Err(e) => assert_eq!(room.as_ref().err(), Some(&e)),
    }

    if let Ok(channels) = message.channels() {
        assert!(!channels.is_empty());
        for channel in channels {
            assert!(validate_name("channel", channel).is_ok());
        }
    }

    let reply = outbound::error(ErrorCode::InvalidMessage, "refused", message.id.as_ref());
    let reply: Value = serde_json::from_slice(&reply).expect("an error reply is JSON");
    assert_eq!(reply.get("id"), message.id.as_ref());
});
