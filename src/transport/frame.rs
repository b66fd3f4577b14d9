//! RFC 6455 framing: an incremental decoder for client frames and an encoder for server frames.
//!
//! Written here rather than taken from tungstenite because Herald's I/O model needs three things
//! no WebSocket crate offers together: frames encoded once and written as shared `Bytes` to many
//! sockets from one fan-out pass, a reader that holds no buffer while a connection is idle (the
//! decoder's buffer is released whenever it empties), and permessage-deflate with a shared,
//! context-free compressed form of each event. The decoder is checked by the Autobahn suite.

use bytes::{BufMut, Bytes, BytesMut};

/// Continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// Close codes Herald sends (RFC 6455 section 7.4 plus Herald's own 4xxx range).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Text that is not UTF-8, or a message that cannot be inflated.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy violation: refused authentication or origin, persistent abuse.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A message larger than allowed.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Something failed inside the server.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// Try again later (node at capacity).
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Herald: the connection did not read its events fast enough; its queue filled.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// Herald: nothing was received for longer than the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4000;
    /// Herald: an operator disconnected this connection.
    pub const DISCONNECTED_BY_ADMIN: u16 = 4001;
    /// Herald: the credentials expired and were not refreshed.
    pub const TOKEN_EXPIRED: u16 = 4003;

    /// The close code a connection of `kind` gets for one of Herald's own. To pusher-js,
    /// 4000–4099 mean "never reconnect", so a Pusher client closed for idleness is told to
    /// reconnect at once (4201, pong not received), a slow consumer to back off (4100, over
    /// capacity) and one an operator cut that it is unauthorized (4009). It lives with the codes
    /// so that the shard and the session, below the Pusher face, can close its connections.
    pub fn close_for(kind: crate::config::EndpointKind, herald: u16) -> u16 {
        match (kind, herald) {
            (crate::config::EndpointKind::Pusher, IDLE_TIMEOUT) => 4201,
            (crate::config::EndpointKind::Pusher, SLOW_CONSUMER) => 4100,
            (crate::config::EndpointKind::Pusher, DISCONNECTED_BY_ADMIN) => 4009,
            _ => herald,
        }
    }
}

/// A complete message or control frame received from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message, validated as UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping with its payload.
    Ping(Bytes),
    /// A pong with its payload.
    Pong(Bytes),
    /// A close frame, with code and reason when present.
    Close(Option<(u16, String)>),
}

/// A violation that ends the connection with the given close code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Malformed framing.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A message over the size limit.
    #[error("message exceeds the limit of {0} bytes")]
    TooLarge(usize),
    /// A text message or close reason that is not UTF-8.
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    /// A compressed message that does not inflate.
    #[error("compressed message is corrupt: {0}")]
    BadCompression(String),
}

impl FrameError {
    /// The close code to send for this error.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::Protocol(_) => close_code::PROTOCOL_ERROR,
            FrameError::TooLarge(_) => close_code::MESSAGE_TOO_BIG,
            FrameError::InvalidUtf8 | FrameError::BadCompression(_) => close_code::INVALID_PAYLOAD,
        }
    }
}

/// Which side of the connection the decoder is on; servers require masked frames, clients refuse them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Decoding frames sent by a client.
    Server,
    /// Decoding frames sent by a server (the load tool).
    Client,
}

/// Inflates compressed messages; implemented by the permessage-deflate extension.
pub trait Inflate {
    /// Inflates one complete message, refusing output over `limit` bytes.
    fn inflate(&mut self, compressed: &[u8], limit: usize) -> Result<Vec<u8>, FrameError>;
}

struct Fragment {
    opcode: u8,
    compressed: bool,
    data: Vec<u8>,
    utf8_checked: usize,
}

/// Turns a byte stream into [`Message`]s. Holds no allocation between messages: an idle
/// connection's decoder costs its struct size only.
pub struct Decoder {
    role: Role,
    max_message: usize,
    pending: Vec<u8>,
    fragment: Option<Box<Fragment>>,
    inflate: Option<Box<dyn Inflate + Send>>,
}

impl Decoder {
    /// A decoder for `role` refusing messages over `max_message` bytes.
    pub fn new(role: Role, max_message: usize) -> Self {
        Self { role, max_message, pending: Vec::new(), fragment: None, inflate: None }
    }

    /// Enables RSV1 (permessage-deflate) with the given inflater.
    pub fn set_inflate(&mut self, inflate: Box<dyn Inflate + Send>) {
        self.inflate = Some(inflate);
    }

    /// Bytes held for an incomplete frame or message.
    pub fn buffered(&self) -> usize {
        self.pending.capacity() + self.fragment.as_ref().map_or(0, |f| f.data.capacity())
    }

    /// Decodes everything complete in `input` (plus earlier leftovers) into `out`.
    /// After an error the connection must be closed with [`FrameError::close_code`]; the
    /// messages pushed to `out` before it came first on the wire and are valid.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<Message>) -> Result<(), FrameError> {
        if self.pending.is_empty() {
            let used = self.decode_frames(input, out)?;
            let rest = &input[used..];
            if !rest.is_empty() {
                self.pending.reserve(reserve_for(rest));
                self.pending.extend_from_slice(rest);
            }
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(input);
            let used = self.decode_frames(&pending, out)?;
            if used < pending.len() {
                pending.drain(..used);
                pending.reserve(reserve_for(&pending).saturating_sub(pending.len()));
                self.pending = pending;
            }
        }
        Ok(())
    }

    fn decode_frames(&mut self, data: &[u8], out: &mut Vec<Message>) -> Result<usize, FrameError> {
        let mut pos = 0;
        while let Some(used) = self.decode_one(&data[pos..], out)? {
            pos += used;
        }
        Ok(pos)
    }

    /// Decodes one frame; `None` when more bytes are needed.
    fn decode_one(&mut self, data: &[u8], out: &mut Vec<Message>) -> Result<Option<usize>, FrameError> {
        if data.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (data[0], data[1]);
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & 0x40 != 0;
        let opcode = b0 & 0x0F;
        let masked = b1 & 0x80 != 0;
        let len7 = (b1 & 0x7F) as usize;

        if b0 & 0x30 != 0 {
            return Err(FrameError::Protocol("reserved bits RSV2/RSV3 set"));
        }
        let is_control = opcode & 0x08 != 0;
        match opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
            _ => return Err(FrameError::Protocol("reserved opcode")),
        }
        if is_control {
            if !fin {
                return Err(FrameError::Protocol("fragmented control frame"));
            }
            if len7 > 125 {
                return Err(FrameError::Protocol("control frame payload over 125 bytes"));
            }
            if rsv1 {
                return Err(FrameError::Protocol("RSV1 set on a control frame"));
            }
        } else if opcode == OP_CONTINUATION {
            if self.fragment.is_none() {
                return Err(FrameError::Protocol("continuation frame without a message to continue"));
            }
            if rsv1 {
                return Err(FrameError::Protocol("RSV1 set on a continuation frame"));
            }
        } else {
            if self.fragment.is_some() {
                return Err(FrameError::Protocol("new message started before the previous one finished"));
            }
            if rsv1 && self.inflate.is_none() {
                return Err(FrameError::Protocol("RSV1 set without a negotiated extension"));
            }
        }
        match (self.role, masked) {
            (Role::Server, false) => {
                return Err(FrameError::Protocol("client frames must be masked"));
            }
            (Role::Client, true) => {
                return Err(FrameError::Protocol("server frames must not be masked"));
            }
            _ => {}
        }

        let Some((len, mut header_len)) = payload_len(data) else {
            return Ok(None);
        };
        if len >> 63 != 0 {
            return Err(FrameError::Protocol("payload length has its most significant bit set"));
        }
        if !is_control {
            let so_far = self.fragment.as_ref().map_or(0, |f| f.data.len()) as u64;
            if so_far + len > self.max_message as u64 {
                return Err(FrameError::TooLarge(self.max_message));
            }
        }
        let len = len as usize;
        let mask = if masked {
            if data.len() < header_len + 4 {
                return Ok(None);
            }
            let mut key = [0u8; 4];
            key.copy_from_slice(&data[header_len..header_len + 4]);
            header_len += 4;
            Some(key)
        } else {
            None
        };
        let total = header_len + len;
        if data.len() < total {
            return Ok(None);
        }
        let raw = &data[header_len..total];

        if is_control {
            let mut payload = raw.to_vec();
            if let Some(key) = mask {
                apply_mask(&mut payload, key);
            }
            out.push(match opcode {
                OP_PING => Message::Ping(Bytes::from(payload)),
                OP_PONG => Message::Pong(Bytes::from(payload)),
                _ => Message::Close(parse_close(&payload)?),
            });
            return Ok(Some(total));
        }

        if opcode != OP_CONTINUATION && fin {
            let mut payload = raw.to_vec();
            if let Some(key) = mask {
                apply_mask(&mut payload, key);
            }
            out.push(self.finish(opcode, rsv1, payload)?);
            return Ok(Some(total));
        }

        let fragment = self
            .fragment
            .get_or_insert_with(|| Box::new(Fragment { opcode, compressed: rsv1, data: Vec::new(), utf8_checked: 0 }));
        let start = fragment.data.len();
        fragment.data.extend_from_slice(raw);
        if let Some(key) = mask {
            apply_mask(&mut fragment.data[start..], key);
        }
        if fragment.opcode == OP_TEXT && !fragment.compressed {
            // Fail fast on invalid UTF-8 instead of waiting for the final fragment; an incomplete
            // sequence at the end is fine until more arrives.
            match std::str::from_utf8(&fragment.data[fragment.utf8_checked..]) {
                Ok(_) => fragment.utf8_checked = fragment.data.len(),
                Err(e) if e.error_len().is_some() => return Err(FrameError::InvalidUtf8),
                Err(e) => fragment.utf8_checked += e.valid_up_to(),
            }
        }
        if fin {
            let Some(done) = self.fragment.take() else {
                return Err(FrameError::Protocol("lost fragment state"));
            };
            let Fragment { opcode, compressed, data, .. } = *done;
            out.push(self.finish(opcode, compressed, data)?);
        }
        Ok(Some(total))
    }

    fn finish(&mut self, opcode: u8, compressed: bool, payload: Vec<u8>) -> Result<Message, FrameError> {
        let payload = if compressed {
            let Some(inflate) = self.inflate.as_mut() else {
                return Err(FrameError::Protocol("compressed message without an extension"));
            };
            inflate.inflate(&payload, self.max_message)?
        } else {
            payload
        };
        if opcode == OP_TEXT {
            if std::str::from_utf8(&payload).is_err() {
                return Err(FrameError::InvalidUtf8);
            }
            Ok(Message::Text(Bytes::from(payload)))
        } else {
            Ok(Message::Binary(Bytes::from(payload)))
        }
    }
}

/// Most bytes reserved for a frame beyond those already received.
const MAX_RESERVE_AHEAD: usize = 64 * 1024;

/// The payload length and the header length without the mask key, once the header has that far.
fn payload_len(data: &[u8]) -> Option<(u64, usize)> {
    match *data.get(1)? & 0x7F {
        126 => {
            let raw = data.get(2..4)?;
            Some((u64::from(u16::from_be_bytes([raw[0], raw[1]])), 4))
        }
        127 => {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(data.get(2..10)?);
            Some((u64::from_be_bytes(raw), 10))
        }
        n => Some((u64::from(n), 2)),
    }
}

/// The capacity worth holding for `partial`, an incomplete frame: the whole frame once its
/// header says how long it is, so that it is not regrown read by read, but never more than
/// [`MAX_RESERVE_AHEAD`] beyond what has arrived. The length is only the peer's claim; memory
/// for the rest is committed as its bytes come in.
fn reserve_for(partial: &[u8]) -> usize {
    let Some((len, header_len)) = payload_len(partial) else {
        return partial.len();
    };
    let mask_len = if partial[1] & 0x80 != 0 { 4 } else { 0 };
    let total = usize::try_from(len).unwrap_or(usize::MAX).saturating_add(header_len + mask_len);
    total.min(partial.len().saturating_add(MAX_RESERVE_AHEAD))
}

fn parse_close(payload: &[u8]) -> Result<Option<(u16, String)>, FrameError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(FrameError::Protocol("close payload of one byte")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid {
                return Err(FrameError::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| FrameError::InvalidUtf8)?;
            Ok(Some((code, reason.to_string())))
        }
    }
}

/// XORs `buf` with the 4-byte mask, eight bytes at a time.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
}

/// Writes a frame header for a payload of `len` bytes.
pub fn put_header(out: &mut BytesMut, opcode: u8, rsv1: bool, len: usize, mask: Option<[u8; 4]>) {
    out.put_u8(0x80 | if rsv1 { 0x40 } else { 0 } | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.put_u8(mask_bit | len as u8);
    } else if len <= u16::MAX as usize {
        out.put_u8(mask_bit | 126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(mask_bit | 127);
        out.put_u64(len as u64);
    }
    if let Some(key) = mask {
        out.put_slice(&key);
    }
}

/// Encodes one unmasked (server) frame carrying `payload`, header and payload in one buffer so
/// it can be shared by every recipient.
pub fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    encode_with(opcode, false, payload)
}

/// Encodes one unmasked frame, with RSV1 set for a compressed payload.
pub fn encode_with(opcode: u8, rsv1: bool, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    put_header(&mut out, opcode, rsv1, payload.len(), None);
    out.put_slice(payload);
    out.freeze()
}

/// Encodes one masked (client) frame; used by the load tool and tests.
pub fn encode_masked(opcode: u8, payload: &[u8], key: [u8; 4]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 14);
    put_header(&mut out, opcode, false, payload.len(), Some(key));
    let start = out.len();
    out.put_slice(payload);
    apply_mask(&mut out[start..], key);
    out.freeze()
}

/// A close frame with `code` and `reason`, the reason cut to fit the 125-byte control limit.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    encode(OP_CLOSE, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn decode_all(bytes: &[u8]) -> Result<Vec<Message>, FrameError> {
        let mut decoder = Decoder::new(Role::Server, 1 << 20);
        let mut out = Vec::new();
        decoder.feed(bytes, &mut out)?;
        Ok(out)
    }

    fn raw_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_header(&mut out, b0 & 0x0F, b0 & 0x40 != 0, payload.len(), Some(KEY));
        out[0] = b0;
        let start = out.len();
        out.put_slice(payload);
        apply_mask(&mut out[start..], KEY);
        out.to_vec()
    }

    #[test]
    fn decodes_a_masked_text_frame_byte_by_byte() {
        let frame = encode_masked(OP_TEXT, b"Hello", KEY);
        let mut decoder = Decoder::new(Role::Server, 1024);
        let mut out = Vec::new();
        for byte in frame.iter() {
            decoder.feed(std::slice::from_ref(byte), &mut out).unwrap();
        }
        assert_eq!(out, vec![Message::Text(Bytes::from_static(b"Hello"))]);
        assert_eq!(decoder.pending.len(), 0);
    }

    #[test]
    fn decodes_lengths_of_every_width() {
        for len in [0usize, 125, 126, 65535, 65536, 200_000] {
            let payload = vec![b'a'; len];
            let frame = encode_masked(OP_BINARY, &payload, KEY);
            let out = decode_all(&frame).unwrap();
            assert_eq!(out, vec![Message::Binary(Bytes::from(payload))], "len {len}");
        }
    }

    #[test]
    fn reassembles_fragments_with_interleaved_ping() {
        let mut bytes = raw_frame(OP_TEXT, b"Hel");
        bytes.extend(raw_frame(0x80 | OP_PING, b"p"));
        bytes.extend(raw_frame(0x80 | OP_CONTINUATION, b"lo"));
        let out = decode_all(&bytes).unwrap();
        assert_eq!(out, vec![Message::Ping(Bytes::from_static(b"p")), Message::Text(Bytes::from_static(b"Hello"))]);
    }

    #[test]
    fn refuses_protocol_violations() {
        let unmasked = encode(OP_TEXT, b"x");
        assert_eq!(decode_all(&unmasked).unwrap_err().close_code(), close_code::PROTOCOL_ERROR);
        let reserved_opcode = raw_frame(0x80 | 0x3, b"");
        assert!(matches!(decode_all(&reserved_opcode), Err(FrameError::Protocol(_))));
        let rsv2 = raw_frame(0x80 | 0x20 | OP_TEXT, b"x");
        assert!(matches!(decode_all(&rsv2), Err(FrameError::Protocol(_))));
        let rsv1_without_extension = raw_frame(0x80 | 0x40 | OP_TEXT, b"x");
        assert!(matches!(decode_all(&rsv1_without_extension), Err(FrameError::Protocol(_))));
        let big_ping = raw_frame(0x80 | OP_PING, &[0u8; 126]);
        assert!(matches!(decode_all(&big_ping), Err(FrameError::Protocol(_))));
        let fragmented_ping = raw_frame(OP_PING, b"");
        assert!(matches!(decode_all(&fragmented_ping), Err(FrameError::Protocol(_))));
        let lone_continuation = raw_frame(0x80 | OP_CONTINUATION, b"x");
        assert!(matches!(decode_all(&lone_continuation), Err(FrameError::Protocol(_))));
        let mut interrupted = raw_frame(OP_TEXT, b"a");
        interrupted.extend(raw_frame(0x80 | OP_TEXT, b"b"));
        assert!(matches!(decode_all(&interrupted), Err(FrameError::Protocol(_))));
    }

    #[test]
    fn messages_before_a_violation_are_still_returned() {
        let mut bytes = raw_frame(0x80 | OP_TEXT, b"first");
        bytes.extend(raw_frame(0x80 | 0x20 | OP_TEXT, b"bad"));
        let mut decoder = Decoder::new(Role::Server, 1024);
        let mut out = Vec::new();
        let err = decoder.feed(&bytes, &mut out).unwrap_err();
        assert!(matches!(err, FrameError::Protocol(_)));
        assert_eq!(out, vec![Message::Text(Bytes::from_static(b"first"))]);
    }

    #[test]
    fn refuses_bad_utf8_and_bad_close_frames() {
        let bad = encode_masked(
            OP_TEXT,
            &[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80],
            KEY,
        );
        assert_eq!(decode_all(&bad).unwrap_err(), FrameError::InvalidUtf8);
        // Invalid UTF-8 in the first fragment fails before the message is complete.
        let first = raw_frame(OP_TEXT, &[0xff, b'a']);
        assert_eq!(decode_all(&first).unwrap_err(), FrameError::InvalidUtf8);
        let one_byte_close = encode_masked(OP_CLOSE, &[3], KEY);
        assert!(matches!(decode_all(&one_byte_close), Err(FrameError::Protocol(_))));
        let reserved_code = encode_masked(OP_CLOSE, &1005u16.to_be_bytes(), KEY);
        assert!(matches!(decode_all(&reserved_code), Err(FrameError::Protocol(_))));
        let good = encode_masked(OP_CLOSE, &[0x03, 0xe8, b'o', b'k'], KEY);
        assert_eq!(decode_all(&good).unwrap(), vec![Message::Close(Some((1000, "ok".into())))]);
    }

    #[test]
    fn refuses_oversized_messages_from_the_header_alone() {
        let mut decoder = Decoder::new(Role::Server, 100);
        let frame = encode_masked(OP_TEXT, &[b'a'; 101], KEY);
        let mut out = Vec::new();
        let err = decoder.feed(&frame[..8], &mut out).unwrap_err();
        assert_eq!(err.close_code(), close_code::MESSAGE_TOO_BIG);
    }

    #[test]
    fn an_idle_decoder_holds_no_buffer() {
        let mut decoder = Decoder::new(Role::Server, 1 << 20);
        let frame = encode_masked(OP_TEXT, &[b'a'; 5000], KEY);
        let mut out = Vec::new();
        decoder.feed(&frame[..100], &mut out).unwrap();
        assert!(decoder.buffered() > 0);
        decoder.feed(&frame[100..], &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(decoder.buffered(), 0);
    }

    // Found by the frame_decoder fuzz target: with a large message limit, a header claiming a
    // huge payload made the decoder reserve the whole claimed frame up front (an allocation
    // failure, aborting the process, for a claim near 2^63).
    #[test]
    fn a_claimed_length_reserves_only_a_bounded_amount_ahead() {
        for limit in [1 << 30, usize::MAX] {
            let mut decoder = Decoder::new(Role::Server, limit);
            let mut header = BytesMut::new();
            put_header(&mut header, OP_BINARY, false, 1 << 29, Some(KEY));
            let mut out = Vec::new();
            decoder.feed(&header, &mut out).unwrap();
            decoder.feed(b"abc", &mut out).unwrap();
            assert!(out.is_empty());
            // Growth may double what is held, never more.
            assert!(
                decoder.buffered() <= 2 * (header.len() + 3 + MAX_RESERVE_AHEAD),
                "holds {} bytes",
                decoder.buffered()
            );
        }
        let mut decoder = Decoder::new(Role::Server, usize::MAX);
        let mut claim = vec![0x82, 0xFF];
        claim.extend_from_slice(&((1u64 << 62) + 7).to_be_bytes());
        claim.extend_from_slice(&KEY);
        claim.push(b'x');
        decoder.feed(&claim, &mut Vec::new()).unwrap();
        assert!(decoder.buffered() <= claim.len() + MAX_RESERVE_AHEAD);
    }

    #[test]
    fn a_frame_arriving_in_pieces_is_reserved_once_it_is_known() {
        let frame = encode_masked(OP_BINARY, &[7u8; 5000], KEY);
        let mut decoder = Decoder::new(Role::Server, 1 << 20);
        let mut out = Vec::new();
        decoder.feed(&frame[..1], &mut out).unwrap();
        decoder.feed(&frame[1..10], &mut out).unwrap();
        assert!(decoder.buffered() >= frame.len(), "the whole frame is reserved");
        decoder.feed(&frame[10..], &mut out).unwrap();
        assert_eq!(out, vec![Message::Binary(Bytes::from(vec![7u8; 5000]))]);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn close_reasons_are_cut_at_a_char_boundary() {
        let frame = close_frame(1001, &"é".repeat(100));
        assert!(frame.len() <= 2 + 125);
        let mut decoder = Decoder::new(Role::Client, 1024);
        let mut out = Vec::new();
        decoder.feed(&frame, &mut out).unwrap();
        assert!(matches!(&out[0], Message::Close(Some((1001, reason))) if reason.len() <= 123));
    }

    #[test]
    fn mask_is_an_involution_at_every_length() {
        for len in 0..40 {
            let original: Vec<u8> = (0..len as u8).collect();
            let mut buf = original.clone();
            apply_mask(&mut buf, KEY);
            for (i, (a, b)) in buf.iter().zip(&original).enumerate() {
                assert_eq!(*a, b ^ KEY[i % 4]);
            }
            apply_mask(&mut buf, KEY);
            assert_eq!(buf, original);
        }
    }
}
