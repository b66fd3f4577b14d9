//! The envelope of an event between nodes: a small JSON object around the event's own JSON,
//! which travels as it is and is never parsed again.
//!
//! `{"v":1,"n":<origin node>,"c"|"r"|"u":<target names>,"x":<excluded connection>,
//! "g":<notification tags>,"h":<stream>,"f":"r","s":<seq>,"p":<epoch>,"k":<key kind>,"e":<event>}`.
//! One event is published once per key of its target (`k`: `c`, `r`, `u`, or `a` for a
//! broadcast); every copy shares the head, and the tail names the key and carries the event.
//! The append script writes `s` and `p` itself, between head and tail, once it has the seq.
//! `"f":"r"` marks the copies of a room stream's event that also names a channel: the room
//! comes first (see [`room_first`]). A node that does not know `f` delivers the copies in the
//! usual order, which still reaches each connection once.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::hub::event::{NotificationTags, StreamPos};
use crate::hub::{Event, Route, Target};

/// The kind letter of each key an event travels on, in delivery order, with the name under it;
/// a broadcast travels on one key, `a`, with no name. `room_first` puts the room before the
/// channel (see [`room_first`]).
pub(super) fn copies(target: &Target, room_first: bool) -> Vec<(&'static str, Option<&str>)> {
    if target.broadcast {
        return vec![("a", None)];
    }
    let (channel, room) = (("c", target.channel.as_deref()), ("r", target.room.as_deref()));
    let order = if room_first { [room, channel] } else { [channel, room] };
    order
        .into_iter()
        .chain([("u", target.user.as_deref())])
        .filter_map(|(kind, name)| name.map(|n| (kind, Some(n))))
        .collect()
}

/// Whether an event of `stream` travels room first: a room stream's event that also names a
/// channel. Its stream's own key then comes first, so that every follower of the stream (a
/// member of the room) gets the stream's events through that one key, in seq order, even on a
/// Redis Cluster where the other keys are other shards.
pub(super) fn room_first(target: &Target, stream: &str) -> bool {
    stream.starts_with("r:") && target.room.is_some() && target.channel.is_some()
}

/// The head every copy of the event shares: everything but the key kind and the event, without
/// the closing brace.
pub(super) fn head(node_id: &str, event: &Event) -> String {
    let t = &event.target;
    let mut head = format!("{{\"v\":1,\"n\":{}", json_string(node_id));
    for (field, value) in [("c", &t.channel), ("r", &t.room), ("u", &t.user)] {
        if let Some(value) = value {
            head.push_str(&format!(",\"{field}\":{}", json_string(value)));
        }
    }
    if let Some(x) = event.exclude {
        head.push_str(&format!(",\"x\":{x}"));
    }
    if let Some(tags) = &event.tags {
        head.push_str(",\"g\":");
        head.push_str(&serde_json::to_string(&**tags).unwrap_or_else(|_| "{}".into()));
    }
    head
}

/// The head of an event of a stream with history, up to where the append script writes the seq.
pub(super) fn stream_head(node_id: &str, event: &Event, stream: &str) -> String {
    let first = if room_first(&event.target, stream) { ",\"f\":\"r\"" } else { "" };
    format!("{},\"h\":{}{first},\"s\":", head(node_id, event), json_string(stream))
}

/// Ends an envelope: the key kind it travels on and the event itself, then the closing brace.
pub(super) fn push_tail(out: &mut Vec<u8>, kind: &str, payload: &[u8]) {
    out.extend_from_slice(format!(",\"k\":\"{kind}\",\"e\":").as_bytes());
    out.extend_from_slice(payload);
    out.push(b'}');
}

/// One whole envelope: head, then tail.
pub(super) fn encode(head: &str, kind: &str, payload: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(head.len() + payload.len() + 16);
    message.extend_from_slice(head.as_bytes());
    push_tail(&mut message, kind, payload);
    message
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[derive(Deserialize)]
struct Envelope<'a> {
    n: &'a str,
    k: &'a str,
    // Names are `Cow`: one that JSON escapes (`"`, `\`, control characters) cannot be borrowed.
    #[serde(default, borrow)]
    c: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    r: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    u: Option<Cow<'a, str>>,
    #[serde(default)]
    x: Option<u64>,
    #[serde(default)]
    g: Option<NotificationTags>,
    #[serde(default, borrow)]
    h: Option<Cow<'a, str>>,
    #[serde(default)]
    s: Option<u64>,
    #[serde(default)]
    p: Option<&'a str>,
    #[serde(default)]
    f: Option<&'a str>,
    #[serde(borrow)]
    e: &'a RawValue,
}

/// The event an envelope carries, as the copy for its key. The excluded connection counts only
/// on its own node (`own_node`): connection numbers are per node.
pub(super) fn decode(payload: &[u8], own_node: &str) -> Result<Arc<Event>, serde_json::Error> {
    let envelope: Envelope<'_> = serde_json::from_slice(payload)?;
    let room_first = envelope.f == Some("r");
    let route = match envelope.k {
        "c" if room_first => Route::ChannelNotInRoom,
        "r" if room_first => Route::WholeRoom,
        "c" => Route::Channel,
        "r" => Route::Room,
        "u" => Route::User,
        _ => Route::Broadcast,
    };
    let target = Target {
        channel: envelope.c.map(Arc::from),
        room: envelope.r.map(Arc::from),
        user: envelope.u.map(Arc::from),
        broadcast: route == Route::Broadcast,
    };
    let exclude = if envelope.n == own_node { envelope.x } else { None };
    let payload = Bytes::copy_from_slice(envelope.e.get().as_bytes());
    let event = Event::tagged(target, payload, exclude, route, envelope.g.map(Arc::new));
    if let (Some(stream), Some(seq), Some(epoch)) = (envelope.h, envelope.s, envelope.p) {
        let _ = event.stream.set(StreamPos { stream: Arc::from(stream), seq, epoch: Arc::from(epoch) });
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every copy of `event` as another node (`node-b`) and as the origin (`node-a`) decode it.
    fn round_trip(event: &Event) -> Vec<(Arc<Event>, Arc<Event>)> {
        let head = head("node-a", event);
        copies(&event.target, false)
            .into_iter()
            .map(|(kind, _)| {
                let message = encode(&head, kind, &event.payload);
                (decode(&message, "node-b").unwrap(), decode(&message, "node-a").unwrap())
            })
            .collect()
    }

    #[test]
    fn every_copy_carries_the_target_the_event_and_its_route() {
        let payload = Bytes::from_static(br#"{"type":"x","n":[1,2,{"a":"\u00e9\"q"}]}"#);
        let event = Event::excluding(Target::of(Some("c1"), Some("r1"), Some("u1")), payload.clone(), 42);
        let copies = round_trip(&event);
        let routes: Vec<Route> = copies.iter().map(|(remote, _)| remote.route).collect();
        assert_eq!(routes, [Route::Channel, Route::Room, Route::User]);
        for (remote, origin) in copies {
            assert_eq!(remote.target, event.target);
            assert_eq!(remote.payload, payload, "the event travels byte for byte");
            assert_eq!(remote.exclude, None, "a connection number means nothing on another node");
            assert_eq!(origin.exclude, Some(42));
            assert!(remote.tags.is_none() && remote.stream.get().is_none());
        }
    }

    #[test]
    fn names_that_json_escapes_survive() {
        let name = "a \"quoted\" \\ name\u{1f}p7\u{1f}presence-x ✓";
        let event = Event::new(Target::of(Some(name), None, Some("ü")), Bytes::from_static(b"{}"));
        for (remote, _) in round_trip(&event) {
            assert_eq!(remote.target, event.target);
        }
    }

    #[test]
    fn broadcasts_travel_on_one_key() {
        let mut t = Target::of(Some("c"), Some("r"), None);
        t.broadcast = true;
        let event = Event::new(t, Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(copies(&event.target, false), [("a", None)]);
        let (remote, _) = round_trip(&event).remove(0);
        assert_eq!(remote.route, Route::Broadcast);
        assert!(remote.target.broadcast);
    }

    #[test]
    fn tags_and_stream_positions_arrive() {
        let tags = NotificationTags { category: Some("system".into()), module: None, priority: Some("high".into()) };
        let event = Event::tagged(
            Target::of(None, None, Some("u")),
            Bytes::from_static(b"{}"),
            None,
            Route::Full,
            Some(Arc::new(tags.clone())),
        );
        // As the append script assembles it: the stream head, the seq and epoch, then the tail.
        let mut message = format!("{}7,\"p\":\"ab12\"", stream_head("node-a", &event, "r:room \"1\"")).into_bytes();
        push_tail(&mut message, "u", &event.payload);
        let remote = decode(&message, "node-b").unwrap();
        assert_eq!(remote.tags.as_deref(), Some(&tags));
        let pos = remote.stream.get().unwrap();
        assert_eq!((&*pos.stream, pos.seq, &*pos.epoch), ("r:room \"1\"", 7, "ab12"));
    }

    #[test]
    fn a_room_streams_copies_travel_room_first() {
        let event = Event::new(Target::of(Some("c"), Some("r"), Some("u")), Bytes::from_static(b"{}"));
        assert!(room_first(&event.target, "r:r") && !room_first(&event.target, "c:c"));
        assert!(!room_first(&Target::of(None, Some("r"), None), "r:r"), "no channel to come before");
        let order: Vec<&str> = copies(&event.target, true).into_iter().map(|(kind, _)| kind).collect();
        assert_eq!(order, ["r", "c", "u"]);
        let head = format!("{}3,\"p\":\"e\"", stream_head("node-a", &event, "r:r"));
        let routes: Vec<Route> = ["r", "c", "u"]
            .into_iter()
            .map(|kind| decode(&encode(&head, kind, &event.payload), "node-b").unwrap().route)
            .collect();
        assert_eq!(routes, [Route::WholeRoom, Route::ChannelNotInRoom, Route::User]);
    }

    #[test]
    fn malformed_envelopes_are_errors() {
        for bad in [
            &b""[..],
            b"not json",
            b"[1,2]",
            b"{\"n\":\"a\",\"k\":\"c\"}",
            b"{\"n\":\"a\",\"e\":{}}",
            b"{\"n\":1,\"k\":\"c\",\"e\":{}}",
            b"{\"n\":\"a\",\"k\":\"c\",\"x\":-1,\"e\":{}}",
            b"{\"n\":\"a\",\"k\":\"c\",\"e\":{}",
            b"\xff\xfe",
        ] {
            assert!(decode(bad, "a").is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // Unknown fields are a later version's: they are ignored.
        assert!(decode(b"{\"v\":2,\"n\":\"a\",\"k\":\"c\",\"c\":\"x\",\"z\":[],\"e\":{}}", "a").is_ok());
    }
}
