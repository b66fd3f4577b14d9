//! Stream positions for a connection: following a channel or room with `seq`, resuming from a
//! position (`recover`), and the `history` request.
//!
//! Resume without loss, duplicates or reordering: the connection starts following the stream
//! with live frames *held* before the subscription goes live; once it is live, history is read,
//! the missed events are replayed, and then the held frames with a higher seq are released.
//! Anything at or below the last position delivered is never delivered again.

use std::rc::Rc;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::auth::Action;
use crate::config::NameKind;
use crate::hub::event::{StreamPos, with_position};
use crate::hub::{Event, Target};
use crate::protocol::{ErrorCode, Inbound, ProtocolError, outbound, validate_name};
use crate::session::Shard;
use crate::session::handlers::denied;
use crate::session::{Follow, Session};
use crate::streams::{Recovery, Settings, stream_name};

/// A stream a request asked to follow with positions.
pub(crate) struct Pending {
    /// `c:<name>` / `r:<name>`.
    pub stream: Arc<str>,
    settings: Settings,
    since: Option<(u64, String)>,
}

/// Parses a position `{"seq": N, "epoch": "E"}`.
pub(crate) fn parse_position(value: &Value, field: &str) -> Result<(u64, String), ProtocolError> {
    let bad =
        || ProtocolError::new(ErrorCode::InvalidMessage, format!("{field} must be {{\"seq\": n, \"epoch\": \"…\"}}"));
    let seq = value.get("seq").and_then(Value::as_u64).ok_or_else(bad)?;
    let epoch = match value.get("epoch") {
        Some(Value::String(e)) if e.len() <= 64 => e.clone(),
        None | Some(Value::Null) => String::new(),
        _ => return Err(bad()),
    };
    Ok((seq, epoch))
}

/// Starts following `name` if the request (or the connection) asked for positions and the
/// stream has history. Call right after the index subscription, before any await.
pub(crate) fn begin(
    shard: &Shard,
    session: &Session,
    kind: NameKind,
    name: &str,
    wanted: bool,
    since: Option<(u64, String)>,
) -> Option<Pending> {
    if !(wanted || since.is_some()) {
        return None;
    }
    let settings = shard.node().history.settings(kind, name)?;
    let stream: Arc<str> = Arc::from(stream_name(kind, name));
    let follow = Follow { last: 0, epoch: None, held: Some(Vec::new()) };
    session.follows.borrow_mut().insert(stream.clone(), follow);
    Some(Pending { stream, settings, since })
}

/// Reads history for a pending follow (after the subscription is live).
pub(crate) async fn fetch(shard: &Shard, pending: &Pending) -> Recovery {
    let node = shard.node();
    let since = pending.since.as_ref().map(|(s, e)| (*s, e.as_str()));
    match node.history.snapshot(&node.broker, node.store.keyring(), &pending.stream, pending.settings).await {
        Ok(snapshot) => snapshot.recover(since),
        // History unreachable (Redis down): say so; live events still flow.
        Err(_) => Recovery { recovered: since.is_none(), epoch: Arc::from(""), top: 0, events: Vec::new() },
    }
}

/// The position report for a reply: `{"seq", "epoch", "recovered"}`.
pub(crate) fn report(recovery: &Recovery, asked_to_recover: bool) -> Value {
    let mut fields = json!({ "seq": recovery.top, "epoch": &*recovery.epoch });
    if asked_to_recover {
        fields["recovered"] = Value::from(recovery.recovered);
    }
    fields
}

/// Replays the missed events, then releases the held live frames above them.
pub(crate) fn finish(shard: &Shard, session: &Rc<Session>, pending: &Pending, recovery: Recovery) {
    let compression = &shard.node().config.compression;
    let resumed = pending.since.is_some() && recovery.recovered;
    let mut last = 0;
    if resumed {
        last = pending.since.as_ref().map_or(0, |s| s.0);
        for (seq, payload) in recovery.events {
            let event = Event::new(Target::default(), payload);
            let _ = event.stream.set(StreamPos { stream: pending.stream.clone(), seq, epoch: recovery.epoch.clone() });
            // The position moves with each frame sent: an SSE session's `id:` line says so.
            advance(session, pending, seq, &recovery.epoch);
            session.send(shard, event.frame(true, &session.info.wire, compression));
            last = seq;
        }
    }
    let held = {
        let mut follows = session.follows.borrow_mut();
        let Some(follow) = follows.get_mut(&pending.stream) else { return };
        follow.last = last;
        follow.epoch = Some(recovery.epoch.clone());
        follow.held.take().unwrap_or_default()
    };
    // After a resume, held frames the replay covered are dropped; otherwise (a fresh follow, or
    // a gap history no longer holds) every held frame is live news and goes out in order.
    for (seq, frame) in held {
        if !resumed || seq > last {
            advance(session, pending, seq, &recovery.epoch);
            session.send(shard, frame);
            last = seq;
        }
    }
    if let Some(follow) = session.follows.borrow_mut().get_mut(&pending.stream) {
        follow.last = follow.last.max(last);
    }
}

fn advance(session: &Session, pending: &Pending, seq: u64, epoch: &Arc<str>) {
    if let Some(follow) = session.follows.borrow_mut().get_mut(&pending.stream) {
        follow.last = seq;
        follow.epoch = Some(epoch.clone());
    }
}

/// Stops following a stream (unsubscribe, leave).
pub(crate) fn end(session: &Session, kind: NameKind, name: &str) {
    if !session.follows.borrow().is_empty() {
        session.follows.borrow_mut().remove(stream_name(kind, name).as_str());
    }
}

/// `{"type":"history","channel":…}` or `"room"`, with optional `limit` and `since`: the
/// recent events of a stream, each with its position.
pub(crate) async fn history(shard: &Rc<Shard>, session: &Rc<Session>, message: &Inbound) -> Result<(), ProtocolError> {
    let node = shard.node();
    let (kind, name, action) = match (message.opt_str("channel")?, message.opt_room()?) {
        (Some(channel), _) => (NameKind::Channel, channel, Action::Subscribe),
        (None, Some(room)) => (NameKind::Room, room, Action::Read),
        (None, None) => {
            return Err(ProtocolError::new(ErrorCode::InvalidMessage, "history needs a channel or a room"));
        }
    };
    validate_name(kind.as_str(), name)?;
    let user = session.user();
    node.auth.check(user.as_deref(), kind, name, action).await.map_err(denied)?;
    let since = message.body.get("since").map(|v| parse_position(v, "since")).transpose()?;
    let limit =
        match message.body.get("limit") {
            None => None,
            Some(v) => Some(v.as_u64().filter(|n| (1..=100_000).contains(n)).ok_or_else(|| {
                ProtocolError::new(ErrorCode::InvalidMessage, "limit must be an integer from 1 to 100000")
            })? as usize),
        };
    let reply = read(node, kind, name, since, limit).await.map_err(|e| match e {
        ReadError::NoHistory(m) => ProtocolError::new(ErrorCode::InvalidMessage, m),
        ReadError::Unavailable(m) => ProtocolError::new(ErrorCode::InternalError, m),
    })?;
    session.reply(shard, &outbound::reply("history", reply, message.id.as_ref()));
    Ok(())
}

/// Why a history read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream has no history configured.
    #[error("{0}")]
    NoHistory(String),
    /// The history store (Redis) did not answer.
    #[error("{0}")]
    Unavailable(String),
}

/// The body of a history answer (WebSocket and REST): the stream, its epoch and last seq, and
/// its recent events (after `since`, when given), oldest first, each with its position.
pub async fn read(
    node: &crate::node::Node,
    kind: NameKind,
    name: &str,
    since: Option<(u64, String)>,
    limit: Option<usize>,
) -> Result<Value, ReadError> {
    let Some(settings) = node.history.settings(kind, name) else {
        return Err(ReadError::NoHistory(format!("{name:?} has no history (see [[history]] in the configuration)")));
    };
    let stream: Arc<str> = Arc::from(stream_name(kind, name));
    let snapshot = node
        .history
        .snapshot(&node.broker, node.store.keyring(), &stream, settings)
        .await
        .map_err(|e| ReadError::Unavailable(format!("history is unavailable: {e}")))?;
    let (recovered, epoch, top, mut events) = match since {
        Some((seq, epoch)) => {
            let r = snapshot.recover(Some((seq, &epoch)));
            (Some(r.recovered), r.epoch, r.top, r.events)
        }
        None => (None, snapshot.epoch, snapshot.top, snapshot.events),
    };
    if let Some(limit) = limit
        && events.len() > limit
    {
        events.drain(..events.len() - limit);
    }
    let events: Vec<Value> = events
        .into_iter()
        .filter_map(|(seq, payload)| {
            let pos = StreamPos { stream: stream.clone(), seq, epoch: epoch.clone() };
            serde_json::from_slice(&with_position(&payload, &pos)).ok()
        })
        .collect();
    let mut fields = Map::new();
    fields.insert(kind.as_str().into(), Value::from(name));
    fields.insert("stream".into(), Value::from(&*stream));
    fields.insert("epoch".into(), Value::from(&*epoch));
    fields.insert("seq".into(), Value::from(top));
    if let Some(recovered) = recovered {
        fields.insert("recovered".into(), Value::from(recovered));
    }
    fields.insert("events".into(), Value::Array(events));
    Ok(Value::Object(fields))
}
