//! The non-JSON wire encodings a client can negotiate: permessage-deflate and MessagePack.
//!
//! Input: the first byte picks a window size, a level and the inflater's context mode; the rest
//! is a compressed message as a client might send it, and also a MessagePack message, and also a
//! payload Herald compresses.
//!
//! Checked: no panic; inflating never returns more than the limit (a decompression bomb is
//! refused, not allocated); whatever Herald compresses inflates back to the same bytes at every
//! window size; MessagePack that converts to JSON converts back and forth to the same JSON.

#![no_main]

use herald::protocol::msgpack;
use herald::transport::deflate::{Inflater, compress};
use herald::transport::frame::Inflate;
use libfuzzer_sys::fuzz_target;

/// The inbound message limit the fuzzer holds the inflater to (small, so bombs are cheap to find).
const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else { return };
    let keep_context = control & 1 == 1;
    let bits = 8 + (control >> 1) % 8; // 8..=15
    let level = u32::from(control >> 4) % 10;

    let mut inflater = Inflater::new(keep_context);
    if let Ok(inflated) = inflater.inflate(rest, LIMIT) {
        assert!(inflated.len() <= LIMIT, "inflated {} bytes past the {LIMIT}-byte limit", inflated.len());
    }

    let compressed = compress(rest, bits, level);
    let mut fresh = Inflater::new(false);
    match fresh.inflate(&compressed, rest.len().max(1)) {
        Ok(round_trip) => assert_eq!(round_trip, rest, "compress then inflate changed the message (bits {bits})"),
        Err(e) => panic!("Herald's own compressed frame did not inflate (bits {bits}, level {level}): {e}"),
    }

    if let Ok(json) = msgpack::to_json(rest) {
        let value: serde_json::Value = serde_json::from_slice(&json).expect("to_json produced invalid JSON");
        let packed = msgpack::from_json(&json).expect("JSON from MessagePack converts back");
        let again = msgpack::to_json(&packed).expect("Herald's MessagePack reads back");
        let value_again: serde_json::Value = serde_json::from_slice(&again).expect("valid JSON");
        assert_eq!(value, value_again, "MessagePack round trip changed the message");
    }
});
