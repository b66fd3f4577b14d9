//! The RFC 6455 decoder on arbitrary client bytes, fed whole and split at fuzzer-chosen points.
//!
//! Input layout (see fuzz/README.md; the seeds follow it):
//!
//! | bytes | meaning |
//! | --- | --- |
//! | 0..2 | message limit, u16 LE: high bit clear: `125 + (v & 0x7fff)`; set: `usize::MAX >> (v & 63)` |
//! | 2 | bits 0-3: number of cut points `n`; bit 7: decode as a client (`Role::Client`) |
//! | 3..3+2n | cut points, u16 LE each, taken modulo the stream length |
//! | rest | the byte stream |
//!
//! Checked: no panic; the same messages and the same error whether the stream arrives in one
//! piece or in chunks; decoded messages respect the limits (valid UTF-8 text, data within the
//! message limit, control payloads of at most 125 bytes); and the decoder never holds more than
//! a bound set by the message limit and the largest chunk fed.

#![no_main]

use herald::transport::frame::{Decoder, FrameError, Message, Role};
use libfuzzer_sys::fuzz_target;

/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;
/// Largest control frame payload.
const MAX_CONTROL: usize = 125;

struct Case<'a> {
    limit: usize,
    role: Role,
    cuts: Vec<usize>,
    stream: &'a [u8],
}

fn case(data: &[u8]) -> Option<Case<'_>> {
    let (head, rest) = data.split_at_checked(3)?;
    let code = u16::from_le_bytes([head[0], head[1]]);
    let limit = if code & 0x8000 == 0 {
        125 + usize::from(code & 0x7fff)
    } else {
        usize::MAX >> (code & 63)
    };
    let role = if head[2] & 0x80 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let n = usize::from(head[2] & 0x0f);
    let (raw_cuts, stream) = rest.split_at_checked(2 * n)?;
    let mut cuts: Vec<usize> = raw_cuts
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    Some(Case {
        limit,
        role,
        cuts,
        stream,
    })
}

/// Feeds `chunks` in order until the first error, checking the buffer bound after each.
fn decode<'a>(
    case: &Case<'_>,
    chunks: impl Iterator<Item = &'a [u8]>,
) -> (Vec<Message>, Option<FrameError>) {
    let mut decoder = Decoder::new(case.role, case.limit);
    let mut out = Vec::new();
    let mut largest_chunk = 0;
    for chunk in chunks {
        largest_chunk = largest_chunk.max(chunk.len());
        if let Err(e) = decoder.feed(chunk, &mut out) {
            return (out, Some(e));
        }
        // The frame being received (header and payload) is at most `max_frame` bytes, and the
        // message being reassembled at most `limit`; growing vectors may double either, and a
        // chunk may sit next to an incomplete frame before it is decoded.
        let max_frame = case.limit.saturating_add(MAX_HEADER + MAX_CONTROL);
        let bound = max_frame
            .saturating_add(largest_chunk)
            .saturating_mul(2)
            .saturating_add(case.limit.saturating_mul(2));
        assert!(
            decoder.buffered() <= bound,
            "decoder holds {} bytes; bound {bound}",
            decoder.buffered()
        );
    }
    (out, None)
}

fn check_message(message: &Message, limit: usize) {
    match message {
        Message::Text(text) => {
            assert!(std::str::from_utf8(text).is_ok(), "text is not UTF-8");
            assert!(text.len() <= limit);
        }
        Message::Binary(data) => assert!(data.len() <= limit),
        Message::Ping(payload) | Message::Pong(payload) => assert!(payload.len() <= MAX_CONTROL),
        Message::Close(Some((code, reason))) => {
            assert!(matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999));
            assert!(2 + reason.len() <= MAX_CONTROL);
        }
        Message::Close(None) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(case) = case(data) else {
        return;
    };
    let whole = decode(&case, std::iter::once(case.stream));

    let mut bounds = vec![0];
    bounds.extend(&case.cuts);
    bounds.push(case.stream.len());
    let split = decode(&case, bounds.windows(2).map(|w| &case.stream[w[0]..w[1]]));

    assert_eq!(whole, split, "splitting the stream changed the result");
    for message in &whole.0 {
        check_message(message, case.limit);
    }
});
