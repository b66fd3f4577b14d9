//! `status_update`, `typing_start` / `typing_stop` and `cursor_move`, plus the presence side of
//! joining, leaving and disconnecting.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::config::{LifecycleEvent, TypingEvent};
use crate::hub::Target;
use crate::presence::{self, Status, Who};
use crate::protocol::{ErrorCode, Inbound, ProtocolError, outbound};
use crate::session::Session;
use crate::session::Shard;
use crate::session::live::CursorState;

/// The presence identity of a connection, if it has a user.
pub(crate) fn who(session: &Session) -> Option<Who> {
    session.user().map(|user| Who { user_id: user.id.clone(), username: user.name.clone(), email: user.email.clone() })
}

fn require_user(session: &Session, what: &str) -> Result<Who, ProtocolError> {
    who(session).ok_or_else(|| {
        ProtocolError::new(
            ErrorCode::AuthenticationFailed,
            format!("{what} needs a user: connect with a token (or a user_id when authentication is off)"),
        )
    })
}

/// The room of a message, which the connection must have joined.
fn joined_room(session: &Session, message: &Inbound) -> Result<Arc<str>, ProtocolError> {
    let room = message.room()?;
    session.state.borrow().rooms.get(room).cloned().ok_or_else(|| {
        ProtocolError::new(ErrorCode::PermissionDenied, format!("join room {room:?} before sending {}", message.kind))
    })
}

fn room_target(room: &str) -> Target {
    Target { room: Some(Arc::from(room)), ..Target::default() }
}

/// Publishes to a room's other members, on every node.
async fn to_others(shard: &Shard, session: &Session, room: &str, payload: Value) {
    if let Err(e) = shard.node().publisher().publish(room_target(room), payload, Some(session.id)).await {
        tracing::debug!(error = %e, room, "presence event not published");
    }
}

/// `{"type":"status_update","status":"busy"}`.
pub(crate) async fn status_update(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    message: &Inbound,
) -> Result<(), ProtocolError> {
    let who = require_user(session, "status_update")?;
    if !shard.node().config.presence.enabled {
        return Err(ProtocolError::new(
            ErrorCode::Unavailable,
            "presence is not enabled on this server (configuration: [presence] enabled = true)",
        ));
    }
    let text = message.str("status")?;
    let status = Status::parse_chosen(text).ok_or_else(|| {
        ProtocolError::new(ErrorCode::InvalidMessage, format!("unknown status {text:?}: use online, away or busy"))
    })?;
    presence::status_changed(&shard.node().presence, &**shard.node(), &who.user_id, status).await;
    session.reply(
        shard,
        &outbound::reply("status_updated", json!({ "user_id": &*who.user_id, "status": text }), message.id.as_ref()),
    );
    Ok(())
}

fn typing_payloads(
    shard: &Shard,
    who: &Who,
    room: &str,
    cell: Option<&str>,
    typing: bool,
    expired: bool,
) -> Vec<Value> {
    let mut payloads = Vec::new();
    for kind in &shard.node().config.presence.typing_events {
        let mut fields = Map::new();
        match kind {
            TypingEvent::TypingIndicator => {
                fields.insert("type".into(), "typing_indicator".into());
                fields.insert("is_typing".into(), typing.into());
            }
            TypingEvent::UserTyping => {
                let kind = if typing { "user_typing_start" } else { "user_typing_stop" };
                fields.insert("type".into(), kind.into());
            }
        }
        fields.insert("room".into(), room.into());
        fields.insert("room_id".into(), room.into());
        fields.insert("user_id".into(), Value::from(&*who.user_id));
        fields.insert("username".into(), who.username.clone().into());
        if let Some(cell) = cell {
            fields.insert("cell_id".into(), cell.into());
        }
        if expired {
            fields.insert("expired".into(), true.into());
        }
        fields.insert("timestamp".into(), outbound::now().into());
        payloads.push(Value::Object(fields));
    }
    payloads
}

async fn announce_typing(shard: &Shard, session: &Session, who: &Who, room: &str, cell: Option<&str>, typing: bool) {
    for payload in typing_payloads(shard, who, room, cell, typing, false) {
        to_others(shard, session, room, payload).await;
    }
}

/// `{"type":"typing_start","room":…,"cell_id":…}`: announced once, then kept alive by repeats
/// until `typing_stop` or the typing timeout, whose expiry is announced as a stop.
pub(crate) async fn typing_start(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    message: &Inbound,
) -> Result<(), ProtocolError> {
    let who = require_user(session, "typing_start")?;
    let room = joined_room(session, message)?;
    let cell = typing_cell(message)?;
    let timeout = shard.node().config.presence.typing_timeout;
    let key = (room.clone(), cell.clone());
    let now = Instant::now();
    enum Typing {
        Refreshed,
        Started { replaced: Option<Option<String>> },
        TooFast,
    }
    // One typing state per connection and room (a new cell replaces the old one), and at most
    // TYPING_STARTS_PER_SECOND announced starts per room and second: the per-connection state
    // and what others receive stay bounded whatever cell ids a client invents.
    let outcome = session.with_live(|live| {
        if let Some(deadline) = live.typing.get_mut(&key) {
            *deadline = now + timeout;
            return Typing::Refreshed;
        }
        let window = live.typing_starts.entry(room.clone()).or_insert((now, 0));
        if now.duration_since(window.0) >= std::time::Duration::from_secs(1) {
            *window = (now, 0);
        }
        if window.1 >= TYPING_STARTS_PER_SECOND {
            return Typing::TooFast;
        }
        window.1 += 1;
        let replaced = live.typing.keys().find(|(r, _)| *r == room).cloned();
        if let Some(old) = &replaced {
            live.typing.remove(old);
        }
        live.typing.insert(key.clone(), now + timeout);
        Typing::Started { replaced: replaced.map(|(_, cell)| cell) }
    });
    match outcome {
        Typing::Refreshed => return Ok(()),
        Typing::TooFast => {
            return Err(ProtocolError::new(
                ErrorCode::RateLimitExceeded,
                format!("at most {TYPING_STARTS_PER_SECOND} typing starts per room per second"),
            ));
        }
        Typing::Started { replaced: Some(old) } => {
            announce_typing(shard, session, &who, &room, old.as_deref(), false).await;
        }
        Typing::Started { replaced: None } => {}
    }
    announce_typing(shard, session, &who, &room, cell.as_deref(), true).await;
    let (shard_for_task, session_for_task) = (shard.clone(), session.clone());
    shard.spawn(async move {
        let (shard, session) = (shard_for_task, session_for_task);
        loop {
            let deadline = session.with_live(|live| live.typing.get(&key).copied());
            let Some(deadline) = deadline else { return };
            if deadline > Instant::now() {
                tokio::time::sleep_until(deadline.into()).await;
                continue;
            }
            session.with_live(|live| live.typing.remove(&key));
            for payload in typing_payloads(&shard, &who, &key.0, key.1.as_deref(), false, true) {
                to_others(&shard, &session, &key.0, payload).await;
            }
            return;
        }
    });
    Ok(())
}

/// `{"type":"typing_stop","room":…,"cell_id":…}`.
pub(crate) async fn typing_stop(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    message: &Inbound,
) -> Result<(), ProtocolError> {
    let who = require_user(session, "typing_stop")?;
    let room = joined_room(session, message)?;
    let cell = typing_cell(message)?;
    let was_typing = session.with_live(|live| live.typing.remove(&(room.clone(), cell.clone())).is_some());
    if was_typing {
        announce_typing(shard, session, &who, &room, cell.as_deref(), false).await;
    }
    Ok(())
}

/// Typing starts announced per connection, room and second; more are refused.
const TYPING_STARTS_PER_SECOND: u32 = 5;

/// What a relayed cursor may hold: a flat object of at most this many fields…
const CURSOR_FIELDS: usize = 16;
/// …whose names and string values are at most this long…
const CURSOR_TEXT: usize = 200;
/// …and which is at most this large as JSON.
const CURSOR_BYTES: usize = 1024;

/// The optional `cell_id` of a typing message, which others receive: a short name.
fn typing_cell(message: &Inbound) -> Result<Option<String>, ProtocolError> {
    let cell = message.opt_id("cell_id")?;
    if let Some(cell) = &cell
        && (cell.is_empty() || cell.len() > CURSOR_TEXT || cell.chars().any(char::is_control))
    {
        return Err(ProtocolError::new(
            ErrorCode::InvalidMessage,
            format!("field \"cell_id\" must be 1-{CURSOR_TEXT} characters without control characters"),
        ));
    }
    Ok(cell)
}

/// The cursor of a `cursor_move`: its `cursor` object, or every field but the routing ones.
/// Only a small flat object of numbers, booleans and short strings is relayed: a cursor is a
/// position, not a channel for arbitrary data.
fn cursor_of(message: &Inbound) -> Result<Value, ProtocolError> {
    let cursor = match message.body.get("cursor") {
        Some(Value::Object(cursor)) => cursor.clone(),
        _ => {
            let mut cursor = message.body.clone();
            for field in ["type", "room", "room_id", "id", "request_id"] {
                cursor.remove(field);
            }
            cursor
        }
    };
    let bad = |why: &str| {
        Err(ProtocolError::new(
            ErrorCode::InvalidMessage,
            format!("a cursor is a flat object of at most {CURSOR_FIELDS} numbers, booleans or short strings: {why}"),
        ))
    };
    if cursor.len() > CURSOR_FIELDS {
        return bad("too many fields");
    }
    for (name, value) in &cursor {
        let fits = match value {
            Value::Null | Value::Bool(_) | Value::Number(_) => true,
            Value::String(text) => text.len() <= CURSOR_TEXT,
            Value::Array(_) | Value::Object(_) => false,
        };
        if name.len() > CURSOR_TEXT || !fits {
            return bad(&format!("field {:?}", name.chars().take(40).collect::<String>()));
        }
    }
    let cursor = Value::Object(cursor);
    if cursor.to_string().len() > CURSOR_BYTES {
        return bad("too large");
    }
    Ok(cursor)
}

fn cursor_payload(who: &Who, room: &str, cursor: Value) -> Value {
    json!({
        "type": "cursor_moved",
        "room": room,
        "room_id": room,
        "user_id": &*who.user_id,
        "username": who.username,
        "cursor": cursor,
        "timestamp": outbound::now(),
    })
}

/// `{"type":"cursor_move","room":…,"x":…,"y":…,"cell":…}`: at most one `cursor_moved` per
/// connection and room per `presence.cursor_interval`; moves in between are coalesced into the
/// newest, sent when the interval ends.
pub(crate) async fn cursor_move(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    message: &Inbound,
) -> Result<(), ProtocolError> {
    let who = require_user(session, "cursor_move")?;
    let room = joined_room(session, message)?;
    let cursor = cursor_of(message)?;
    let interval = shard.node().config.presence.cursor_interval;
    let now = Instant::now();
    enum Next {
        SendNow,
        Schedule(Instant),
        Coalesced,
    }
    let next = session.with_live(|live| match live.cursors.get_mut(&room) {
        Some(state) if now < state.last_sent + interval => {
            state.pending = Some(cursor.clone());
            if state.flush_scheduled {
                Next::Coalesced
            } else {
                state.flush_scheduled = true;
                Next::Schedule(state.last_sent + interval)
            }
        }
        Some(state) => {
            state.last_sent = now;
            Next::SendNow
        }
        None => {
            live.cursors.insert(room.clone(), CursorState { last_sent: now, pending: None, flush_scheduled: false });
            Next::SendNow
        }
    });
    match next {
        Next::SendNow => send_cursor(shard, session, &who, &room, cursor).await,
        Next::Coalesced => {}
        Next::Schedule(at) => {
            let (shard, session) = (shard.clone(), session.clone());
            shard.clone().spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                let pending = session.with_live(|live| {
                    let state = live.cursors.get_mut(&room)?;
                    state.flush_scheduled = false;
                    state.last_sent = Instant::now();
                    state.pending.take()
                });
                if let Some(cursor) = pending
                    && session.state.borrow().rooms.contains(&room)
                {
                    send_cursor(&shard, &session, &who, &room, cursor).await;
                }
            });
        }
    }
    Ok(())
}

async fn send_cursor(shard: &Shard, session: &Session, who: &Who, room: &Arc<str>, cursor: Value) {
    shard.node().presence.cursor(room, &who.user_id, cursor.clone());
    to_others(shard, session, room, cursor_payload(who, room, cursor)).await;
}

/// After a connection joined a room: tells the others, sends the joiner the `room_state`.
pub(crate) async fn after_join(shard: &Rc<Shard>, session: &Rc<Session>, room: &str) {
    let node = shard.node();
    let Some(who) = who(session) else { return };
    node.upstream.lifecycle(
        LifecycleEvent::Join,
        json!({ "connection_id": &*session.connection_id, "user_id": &*who.user_id, "room": room }),
    );
    let room: Arc<str> = Arc::from(room);
    if let Some(state) = presence::joined(&node.presence, &**node, &room, &who, session.id).await {
        session.reply(shard, &outbound::to_bytes(&state));
    }
}

/// After a connection left a room: stops its typing there and tells the others if it was the
/// user's last connection in the room.
pub(crate) async fn after_leave(shard: &Rc<Shard>, session: &Rc<Session>, room: &str) {
    let node = shard.node();
    let Some(who) = who(session) else { return };
    node.upstream.lifecycle(
        LifecycleEvent::Leave,
        json!({ "connection_id": &*session.connection_id, "user_id": &*who.user_id, "room": room }),
    );
    stop_typing(shard, session, &who, |r| &**r == room).await;
    session.with_live(|live| {
        live.cursors.remove(room);
        live.typing_starts.remove(room);
    });
    presence::left(&node.presence, &**node, &Arc::from(room), &who).await;
}

async fn stop_typing(shard: &Shard, session: &Session, who: &Who, in_room: impl Fn(&Arc<str>) -> bool) {
    let stopped: Vec<(Arc<str>, Option<String>)> = match session.live.borrow_mut().as_mut() {
        Some(live) => {
            let keys: Vec<_> = live.typing.keys().filter(|(room, _)| in_room(room)).cloned().collect();
            keys.into_iter().filter(|k| live.typing.remove(k).is_some()).collect()
        }
        None => Vec::new(),
    };
    for (room, cell) in stopped {
        announce_typing(shard, session, who, &room, cell.as_deref(), false).await;
    }
}

/// After a connection closed: its typing stops, it leaves its rooms, and the user goes offline
/// if it was their last connection anywhere.
pub(crate) async fn after_disconnect(shard: &Rc<Shard>, session: &Rc<Session>, rooms: Vec<Arc<str>>) {
    let node = shard.node();
    let Some(who) = who(session) else { return };
    node.upstream.lifecycle(
        LifecycleEvent::Disconnect,
        json!({ "connection_id": &*session.connection_id, "user_id": &*who.user_id, "rooms": rooms }),
    );
    stop_typing(shard, session, &who, |_| true).await;
    presence::disconnected(&node.presence, &**node, &who, rooms).await;
}

/// After a connection opened (with a user).
pub(crate) fn after_connect(shard: &Shard, session: &Session) {
    let node = shard.node();
    let Some(who) = who(session) else { return };
    presence::connected(&node.presence, &who);
    node.upstream.lifecycle(
        LifecycleEvent::Connect,
        json!({
            "connection_id": &*session.connection_id,
            "user_id": &*who.user_id,
            "client_id": session.info.client_id,
            "path": session.info.path,
        }),
    );
}
