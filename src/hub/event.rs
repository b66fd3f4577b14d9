//! An event on its way to connections: where it goes, its JSON bytes, and its frames, each
//! encoded at most once however many connections receive it.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::CompressionConfig;
use crate::transport::deflate::{self, DeflateParams};
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

    /// A target of these keys, not a broadcast: for tests.
    #[cfg(test)]
    pub(crate) fn of(channel: Option<&str>, room: Option<&str>, user: Option<&str>) -> Target {
        Target {
            channel: channel.map(Arc::from),
            room: room.map(Arc::from),
            user: user.map(Arc::from),
            broadcast: false,
        }
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
    /// All the room's members: the copy on the key of a room stream whose events also name a
    /// channel. The room comes first so that every follower of the stream gets its events
    /// through the stream's own key, in seq order.
    WholeRoom,
    /// The channel's subscribers not in the room (the channel copy beside [`Route::WholeRoom`]).
    ChannelNotInRoom,
    /// Every connection.
    Broadcast,
}

/// An event's place in its stream's history: the stream (`c:<channel>` or `r:<room>`), its
/// sequence number there, and the stream's epoch (which changes when history is lost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPos {
    /// `c:<channel>` or `r:<room>`.
    pub stream: Arc<str>,
    /// Position in the stream, from 1.
    pub seq: u64,
    /// The stream's epoch.
    pub epoch: Arc<str>,
}

/// What carries a connection's messages: a WebSocket, or one of the HTTP fallbacks (see
/// `transport::fallback`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport {
    /// RFC 6455 frames.
    #[default]
    WebSocket,
    /// Server-Sent Events: each message one `data:` event.
    Sse,
    /// HTTP streaming: each message one line of NDJSON.
    Stream,
}

impl Transport {
    /// The name clients and metrics see (`websocket`, `sse`, `stream`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Sse => "sse",
            Transport::Stream => "stream",
        }
    }

    /// Every transport, in [`Transport::index`] order.
    pub const ALL: [Transport; 3] = [Transport::WebSocket, Transport::Sse, Transport::Stream];

    /// Its place in per-transport counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Wraps one JSON message for an HTTP fallback; `None` for WebSocket.
    pub fn encode(self, json: &[u8]) -> Option<Bytes> {
        match self {
            Transport::WebSocket => None,
            Transport::Sse => Some(sse_event(json)),
            Transport::Stream => {
                let mut out = Vec::with_capacity(json.len() + 1);
                // A line per message: a raw newline inside would split it (JSON Herald builds
                // has none, but a payload is whatever a publisher sent).
                out.extend(json.iter().map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }));
                out.push(b'\n');
                Some(Bytes::from(out))
            }
        }
    }
}

/// One Server-Sent Event carrying `json`: a `data:` line per line of it, then the blank line.
fn sse_event(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 8);
    for line in json.split(|&b| b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.push(b'\n');
    }
    out.push(b'\n');
    Bytes::from(out)
}

/// How a connection wants its frames: the variants of one event, each built at most once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wire {
    /// MessagePack in binary frames instead of JSON text.
    pub msgpack: bool,
    /// permessage-deflate, when negotiated.
    pub deflate: Option<DeflateParams>,
    /// WebSocket or an HTTP fallback (which never has MessagePack or deflate).
    pub transport: Transport,
}

impl Wire {
    /// JSON text, uncompressed, over WebSocket: what every client gets unless it asked for more.
    pub fn is_plain(&self) -> bool {
        !self.msgpack && self.deflate.is_none() && self.transport == Transport::WebSocket
    }

    /// Encodes a message Herald built for one connection (a reply) in this wire format.
    pub fn encode(&self, json: &[u8], compression: &CompressionConfig) -> Bytes {
        if let Some(bytes) = self.transport.encode(json) {
            return bytes;
        }
        self.encode_data(frame::OP_TEXT, json, compression)
    }

    /// Encodes a data frame (`opcode` text or binary), converting JSON text to MessagePack for a
    /// MessagePack connection and compressing when negotiated and worth it.
    pub fn encode_data(&self, opcode: u8, data: &[u8], compression: &CompressionConfig) -> Bytes {
        let packed;
        let (opcode, data) =
            match (self.msgpack && opcode == frame::OP_TEXT).then(|| crate::protocol::msgpack::from_json(data)) {
                Some(Some(bytes)) => {
                    packed = bytes;
                    (frame::OP_BINARY, &packed[..])
                }
                _ => (opcode, data),
            };
        match self.deflate {
            Some(params) if data.len() >= compression.threshold => {
                frame::encode_with(opcode, true, &deflate::compress(data, params.server_bits, compression.level))
            }
            _ => frame::encode(opcode, data),
        }
    }
}

/// The JSON payload with the stream position appended as `seq`, `epoch` and `stream`. A Pusher
/// channel's stream (a hub name, which holds control characters) is not named: the message's
/// own `channel` already says which it is.
pub fn with_position(payload: &[u8], pos: &StreamPos) -> Bytes {
    let Some(body) = payload.strip_suffix(b"}") else {
        return Bytes::copy_from_slice(payload);
    };
    let mut out = Vec::with_capacity(payload.len() + pos.stream.len() + pos.epoch.len() + 48);
    out.extend_from_slice(body);
    if !body.trim_ascii_end().ends_with(b"{") {
        out.push(b',');
    }
    let epoch = serde_json::to_string(&*pos.epoch).unwrap_or_default();
    out.extend_from_slice(format!("\"seq\":{},\"epoch\":{epoch}", pos.seq).as_bytes());
    if !pos.stream.contains('\u{1f}') {
        let stream = serde_json::to_string(&*pos.stream).unwrap_or_default();
        out.extend_from_slice(format!(",\"stream\":{stream}").as_bytes());
    }
    out.push(b'}');
    Bytes::from(out)
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
    /// Its position in its stream's history, for streams with history.
    pub stream: OnceLock<StreamPos>,
    /// A message stored encrypted: wherever else it rests (Redis stream history) it rests
    /// encrypted too.
    pub sensitive: bool,
    text_frame: OnceLock<Bytes>,
    /// Frames for connections that asked for positions, MessagePack or compression, or that use
    /// an HTTP fallback, indexed as in [`Event::frame`]; allocated only when such a connection
    /// receives the event.
    variants: OnceLock<Box<[OnceLock<Bytes>; 12]>>,
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

    /// A stored message that was encrypted at rest (see [`Event::sensitive`]).
    pub fn sensitive(target: Target, payload: Bytes) -> Arc<Event> {
        let mut event = Self::routed(target, payload, None, Route::Full);
        if let Some(event) = Arc::get_mut(&mut event) {
            event.sensitive = true;
        }
        event
    }

    /// The same payload for other recipients, sharing `other`'s text frame, so that one event
    /// sent to many targets (a batch item with `user_ids`) is framed once.
    pub fn sharing(target: Target, other: &Event) -> Arc<Event> {
        let mut event = Self::routed(target, other.payload.clone(), None, Route::Full);
        if let Some(event) = Arc::get_mut(&mut event) {
            let _ = event.text_frame.set(other.text_frame().clone());
        }
        event
    }

    /// The same, not delivered to `exclude`.
    pub fn excluding(target: Target, payload: Bytes, exclude: ConnId) -> Arc<Event> {
        Self::routed(target, payload, Some(exclude), Route::Full)
    }

    /// A copy of an event for one route.
    pub fn routed(target: Target, payload: Bytes, exclude: Option<ConnId>, route: Route) -> Arc<Event> {
        Self::tagged(target, payload, exclude, route, None)
    }

    /// A copy of a notification for one route, carrying its tags.
    pub fn tagged(
        target: Target,
        payload: Bytes,
        exclude: Option<ConnId>,
        route: Route,
        tags: Option<Arc<NotificationTags>>,
    ) -> Arc<Event> {
        Arc::new(Event {
            target,
            route,
            payload,
            exclude,
            received: Instant::now(),
            tags,
            stream: OnceLock::new(),
            sensitive: false,
            text_frame: OnceLock::new(),
            variants: OnceLock::new(),
        })
    }

    /// The WebSocket text frame carrying the payload, built by the first recipient's shard and
    /// shared by all.
    pub fn text_frame(&self) -> &Bytes {
        self.text_frame.get_or_init(|| frame::encode(frame::OP_TEXT, &self.payload))
    }

    /// The frame for a connection with `wire`, with the stream position when `seq`. Each
    /// variant is built once per event and shared; only a connection that negotiated a smaller
    /// compression window than the node's gets a frame of its own.
    pub fn frame(&self, seq: bool, wire: &Wire, compression: &CompressionConfig) -> Bytes {
        let pos = self.stream.get().filter(|_| seq);
        if pos.is_none() && wire.is_plain() {
            return self.text_frame().clone();
        }
        let payload = || match pos {
            Some(pos) => with_position(&self.payload, pos),
            None => self.payload.clone(),
        };
        let index = match wire.transport {
            // Fallbacks: one SSE and one NDJSON encoding per event, with and without position.
            Transport::Sse | Transport::Stream => {
                8 | usize::from(pos.is_some()) << 1 | usize::from(wire.transport == Transport::Stream)
            }
            Transport::WebSocket => {
                let shared = wire.deflate.is_none_or(|d| d.server_bits == compression.server_max_window_bits);
                if !shared {
                    return wire.encode(&payload(), compression);
                }
                usize::from(pos.is_some()) << 2 | usize::from(wire.msgpack) << 1 | usize::from(wire.deflate.is_some())
            }
        };
        let variants = self.variants.get_or_init(Default::default);
        variants[index].get_or_init(|| wire.encode(&payload(), compression)).clone()
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

/// A published event taken as the publisher wrote it: `raw` (valid JSON, as a
/// [`serde_json::value::RawValue`] guarantees) must be an object; the whitespace between its
/// tokens is dropped and nothing else changes. It parses to the same object as
/// [`prepare_payload`]'s output, without building a `Value` per event (most of a batch's parsing
/// cost); only spellings serde_json would normalize (`\u0041`, `1E2`) stay as written.
/// `None` when `raw` is not an object.
pub fn compact_object(raw: &str) -> Option<Bytes> {
    let bytes = raw.as_bytes();
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    if bytes[start] != b'{' {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() - start);
    let (mut in_string, mut escaped) = (false, false);
    let mut from = start;
    for (i, &b) in bytes.iter().enumerate().skip(start) {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            // Copy runs between whitespace rather than byte by byte.
            out.extend_from_slice(&bytes[from..i]);
            from = i + 1;
        }
    }
    out.extend_from_slice(&bytes[from..]);
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_raw_object_is_compacted_as_serializing_it_would() {
        for raw in [
            r#"{"type":"x","a":1}"#,
            " { \"type\" : \"x\" ,\n\t\"a\" : [ 1 , 2.5 , null , true ] , \"s\" : \"in a string: spaces , \\\" \\\\ {\" , \"o\" : { } }\r\n",
            r#"{"k":"\\","after":" two  spaces "}"#,
            "{}",
        ] {
            let compact = compact_object(raw).expect("an object");
            let reparsed: Value = serde_json::from_slice(&compact).unwrap();
            assert_eq!(reparsed, serde_json::from_str::<Value>(raw).unwrap(), "{raw}");
            let Value::Object(map) = reparsed else { unreachable!() };
            assert_eq!(compact, prepare_payload(map, None), "{raw}");
        }
        for raw in ["[1]", "\"s\"", " 1", "null"] {
            assert_eq!(compact_object(raw), None, "{raw}");
        }
    }

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
    fn positions_are_appended_and_every_variant_is_built_once() {
        let pos = StreamPos { stream: Arc::from("c:jobs"), seq: 7, epoch: Arc::from("ab") };
        assert_eq!(
            &with_position(br#"{"type":"t"}"#, &pos)[..],
            br#"{"type":"t","seq":7,"epoch":"ab","stream":"c:jobs"}"#
        );
        assert_eq!(&with_position(b"{}", &pos)[..], br#"{"seq":7,"epoch":"ab","stream":"c:jobs"}"#);
        let pusher = StreamPos { stream: Arc::from("c:\u{1f}p1\u{1f}jobs"), seq: 7, epoch: Arc::from("ab") };
        assert_eq!(
            &with_position(br#"{"event":"e","channel":"jobs","data":"{}"}"#, &pusher)[..],
            br#"{"event":"e","channel":"jobs","data":"{}","seq":7,"epoch":"ab"}"#
        );
        let compression = CompressionConfig { threshold: 0, ..Default::default() };
        let event = Event::new(Target::default(), Bytes::from(r#"{"type":"t","pad":"xxxxxxxxxxxxxxxx"}"#));
        event.stream.set(pos).unwrap();
        let deflate = DeflateParams { server_bits: 15, client_no_context_takeover: true };
        for wire in [
            Wire { msgpack: false, deflate: None, transport: Transport::WebSocket },
            Wire { msgpack: true, deflate: None, transport: Transport::WebSocket },
            Wire { msgpack: false, deflate: Some(deflate), transport: Transport::WebSocket },
            Wire { msgpack: true, deflate: Some(deflate), transport: Transport::WebSocket },
            Wire { transport: Transport::Sse, ..Default::default() },
            Wire { transport: Transport::Stream, ..Default::default() },
        ] {
            for seq in [false, true] {
                let a = event.frame(seq, &wire, &compression);
                let b = event.frame(seq, &wire, &compression);
                assert_eq!(a.as_ptr(), b.as_ptr(), "{wire:?} seq {seq}: one frame shared by all recipients");
            }
        }
        assert_eq!(event.frame(false, &Wire::default(), &compression).as_ptr(), event.text_frame().as_ptr());
    }

    #[test]
    fn fallback_encodings() {
        let event = Event::new(Target::default(), Bytes::from_static(br#"{"a":1}"#));
        let sse = Wire { transport: Transport::Sse, ..Default::default() };
        let ndjson = Wire { transport: Transport::Stream, ..Default::default() };
        let compression = CompressionConfig::default();
        assert_eq!(&event.frame(false, &sse, &compression)[..], b"data: {\"a\":1}\n\n");
        assert_eq!(&event.frame(false, &ndjson, &compression)[..], b"{\"a\":1}\n");
        assert_eq!(&sse_event(b"{\"a\":\r\n1}")[..], b"data: {\"a\":\ndata: 1}\n\n");
        assert_eq!(&Transport::Stream.encode(b"{\"a\":\n1}").unwrap()[..], b"{\"a\": 1}\n");
    }

    #[test]
    fn the_frame_is_built_once() {
        let event = Event::new(Target::default(), Bytes::from_static(b"{}"));
        let a = event.text_frame().as_ptr();
        let b = event.text_frame().as_ptr();
        assert_eq!(a, b);
    }
}
