//! permessage-deflate (RFC 7692): negotiation, and the compressor and inflater behind it.
//!
//! Herald never keeps a compression context between messages on the server side: every message
//! is deflated on its own, so the compressed frame of an event is the same for every connection
//! and is built once (`hub::event`). Clients are asked for `client_no_context_takeover` by
//! default, so a connection holds no inflate window (about 32 KiB) between messages either.
//! The flate2 crate (zlib-rs backend, which honours window sizes) does the compression.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::frame::{FrameError, Inflate};
use crate::config::CompressionConfig;

/// What a connection negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// Window Herald may compress with (8 to 15; 8 means stored blocks only, see [`compress`]).
    pub server_bits: u8,
    /// Whether the client resets its context after each message.
    pub client_no_context_takeover: bool,
}

/// Picks the first acceptable offer in `offers` (the `Sec-WebSocket-Extensions` entries) and
/// returns the response header value with the negotiated parameters.
pub fn negotiate(offers: &[String], config: &CompressionConfig) -> Option<(String, DeflateParams)> {
    if !config.enabled {
        return None;
    }
    offers.iter().find_map(|offer| accept(offer, config))
}

fn accept(offer: &str, config: &CompressionConfig) -> Option<(String, DeflateParams)> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let (mut server_nct, mut client_nct, mut server_bits, mut client_bits) = (false, false, None, None);
    let mut seen = Vec::new();
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None; // RFC 7692 7.1: a repeated parameter declines the offer.
        }
        seen.push(name.clone());
        let bits = |v: Option<&str>| v.and_then(|v| v.parse::<u8>().ok()).filter(|b| (8..=15).contains(b));
        match (name.as_str(), value) {
            ("server_no_context_takeover", None) => server_nct = true,
            ("client_no_context_takeover", None) => client_nct = true,
            ("server_max_window_bits", v) => server_bits = Some(bits(v)?),
            ("client_max_window_bits", None) => client_bits = Some(None),
            ("client_max_window_bits", v) => client_bits = Some(Some(bits(v)?)),
            _ => return None,
        }
    }
    let _ = server_nct; // Herald never uses a server context, so the request is always honoured.
    let server = server_bits.unwrap_or(15).min(config.server_max_window_bits);
    let client_nct = client_nct || config.client_no_context_takeover;
    let mut response = String::from("permessage-deflate");
    if config.server_no_context_takeover || server_nct {
        response.push_str("; server_no_context_takeover");
    }
    if client_nct {
        response.push_str("; client_no_context_takeover");
    }
    if server_bits.is_some() || server < 15 {
        response.push_str(&format!("; server_max_window_bits={server}"));
    }
    if let Some(offered) = client_bits {
        let client = offered.unwrap_or(15).min(config.client_max_window_bits);
        if client < 15 || offered.is_some() {
            response.push_str(&format!("; client_max_window_bits={client}"));
        }
    }
    Some((response, DeflateParams { server_bits: server, client_no_context_takeover: client_nct }))
}

/// Deflates one message on its own (no context kept), without the final `00 00 ff ff`.
///
/// zlib cannot compress raw deflate with a 256-byte window, so for `bits == 8` the message goes
/// out as stored blocks, which refer to no earlier bytes and so fit any window.
pub fn compress(payload: &[u8], bits: u8, level: u32) -> Vec<u8> {
    let (level, bits) = if bits < 9 { (0, 9) } else { (level.min(9), bits.min(15)) };
    let mut compressor = Compress::new_with_window_bits(Compression::new(level), false, bits);
    let mut out = Vec::with_capacity(payload.len() / 2 + 64);
    loop {
        let consumed = compressor.total_in() as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(256));
        }
        // Compressing into a Vec grows nothing by itself; the loop reserves room each round.
        if compressor.compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync).is_err() {
            break;
        }
        if compressor.total_in() as usize == payload.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&[0, 0, 0xff, 0xff]) {
        out.truncate(out.len() - 4);
    }
    out
}

/// The inflating side of a connection.
pub struct Inflater {
    /// Kept only when the client may use context takeover.
    context: Option<Box<Decompress>>,
}

impl Inflater {
    /// An inflater; `keep_context` when the client did not agree to `client_no_context_takeover`.
    pub fn new(keep_context: bool) -> Self {
        Inflater { context: keep_context.then(|| Box::new(Decompress::new(false))) }
    }
}

impl Inflate for Inflater {
    fn inflate(&mut self, compressed: &[u8], limit: usize) -> Result<Vec<u8>, FrameError> {
        let mut fresh;
        let decompress: &mut Decompress = match self.context.as_mut() {
            Some(context) => context,
            None => {
                fresh = Decompress::new(false);
                &mut fresh
            }
        };
        let mut data = Vec::with_capacity(compressed.len() + 4);
        data.extend_from_slice(compressed);
        data.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity((compressed.len() * 3).clamp(64, limit.max(64)));
        let start = decompress.total_in();
        let mut ended = false;
        loop {
            if out.len() == out.capacity() {
                if out.len() > limit {
                    return Err(FrameError::TooLarge(limit));
                }
                out.reserve(out.capacity().min(limit + 1 - out.len()).max(64));
            }
            let used = (decompress.total_in() - start) as usize;
            let before = (decompress.total_in(), decompress.total_out());
            match decompress.decompress_vec(&data[used..], &mut out, FlushDecompress::Sync) {
                Ok(Status::StreamEnd) => {
                    ended = true;
                    break;
                }
                Ok(_) => {}
                Err(e) => return Err(FrameError::BadCompression(e.to_string())),
            }
            let used = (decompress.total_in() - start) as usize;
            let stalled = (decompress.total_in(), decompress.total_out()) == before;
            if (used == data.len() || stalled) && out.len() < out.capacity() {
                break;
            }
        }
        if ended && let Some(context) = self.context.as_mut() {
            // A final block ends the zlib stream; the next message starts a new one.
            context.reset(false);
        }
        if out.len() > limit {
            return Err(FrameError::TooLarge(limit));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CompressionConfig {
        CompressionConfig::default()
    }

    #[test]
    fn negotiates_the_first_acceptable_offer() {
        let offers = vec![
            "permessage-deflate; foo=1".to_string(),
            "permessage-deflate; client_max_window_bits; server_max_window_bits=10".to_string(),
        ];
        let (response, params) = negotiate(&offers, &config()).unwrap();
        assert_eq!(
            response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"
        );
        assert_eq!(params, DeflateParams { server_bits: 10, client_no_context_takeover: true });
        assert!(negotiate(&["permessage-deflate; server_max_window_bits=7".into()], &config()).is_none());
        assert!(negotiate(&["x-webkit-deflate-frame".into()], &config()).is_none());
        let mut off = config();
        off.enabled = false;
        assert!(negotiate(&["permessage-deflate".into()], &off).is_none());
    }

    #[test]
    fn round_trips_through_both_sides() {
        let text = br#"{"type":"job_update","status":"completed","data":{"success":true}}"#.repeat(40);
        for bits in [8, 9, 12, 15] {
            let packed = compress(&text, bits, 6);
            assert!(bits == 8 || packed.len() < text.len() / 4, "bits {bits}: {}", packed.len());
            for keep in [false, true] {
                let mut inflater = Inflater::new(keep);
                assert_eq!(inflater.inflate(&packed, 1 << 20).unwrap(), text);
                assert_eq!(inflater.inflate(&packed, 1 << 20).unwrap(), text);
            }
        }
        let empty = compress(b"", 15, 6);
        assert_eq!(Inflater::new(false).inflate(&empty, 10).unwrap(), b"");
    }

    #[test]
    fn refuses_bombs_and_garbage() {
        let zeros = vec![0u8; 100_000];
        let packed = compress(&zeros, 15, 9);
        assert_eq!(Inflater::new(false).inflate(&packed, 1000).unwrap_err(), FrameError::TooLarge(1000));
        assert!(matches!(Inflater::new(false).inflate(&[0xff, 0xff, 0xff], 1000), Err(FrameError::BadCompression(_))));
    }
}
