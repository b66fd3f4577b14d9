//! `join_room` / `leave_room` (`room` or `room_id`) with `room_joined` / `room_left`.

use std::rc::Rc;

use serde_json::{Value, json};

use crate::auth::Action;
use crate::config::NameKind;
use crate::hub::{Hub, InterestReady};
use crate::protocol::{ErrorCode, Inbound, ProtocolError, outbound, validate_name};
use crate::session::Session;
use crate::session::Shard;
use crate::session::handlers::{denied, presence, streams};

/// Joins one room, within the per-connection limit. The future, if any, resolves once the
/// broker listens for the room.
pub(crate) async fn join_one(
    shard: &Shard,
    session: &Session,
    room: &str,
) -> Result<Option<InterestReady>, ProtocolError> {
    validate_name("room", room)?;
    let user = session.user();
    shard.node().auth.check(user.as_deref(), NameKind::Room, room, Action::Join).await.map_err(denied)?;
    let limit = shard.node().limits.config().max_rooms_per_connection;
    if limit > 0 && session.state.borrow().rooms.len() >= limit && !session.state.borrow().rooms.contains(room) {
        return Err(ProtocolError::new(
            ErrorCode::LimitExceeded,
            format!("a connection may be in at most {limit} rooms"),
        ));
    }
    Ok(shard.join(session, room))
}

pub(crate) async fn join(shard: &Rc<Shard>, session: &Rc<Session>, message: &Inbound) -> Result<(), ProtocolError> {
    let room = message.room()?;
    // `seq: true` follows the room with positions; `recover: {seq, epoch}` also replays.
    let wanted = session.info.seq || message.body.get("seq").and_then(Value::as_bool).unwrap_or(false);
    let since = match message.body.get("recover") {
        None | Some(Value::Null) => None,
        Some(p) => Some(streams::parse_position(p, "recover")?),
    };
    join_room(shard, session, room, message.id.as_ref(), wanted, since).await
}

/// Joins a room, acknowledges with `room_joined` once the room is live across the cluster
/// (replaying from `since` first for a room with history), then does the presence side
/// (`room_state` to the joiner, `user_joined` to the others).
pub(crate) async fn join_room(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    room: &str,
    id: Option<&Value>,
    wanted: bool,
    since: Option<(u64, String)>,
) -> Result<(), ProtocolError> {
    let already_member = session.state.borrow().rooms.contains(room);
    let asked = since.is_some();
    let ready = join_one(shard, session, room).await?;
    let pending = streams::begin(shard, session, NameKind::Room, room, wanted, since);
    if let Some(user) = session.user_id() {
        shard.node().writer.record_member(room, &user, crate::store::now_ms());
    }
    Hub::ready(ready.into_iter().collect(), shard.node().config.redis.timeout).await;
    let mut fields = json!({ "room": room, "room_id": room });
    let recovery = match &pending {
        Some(p) => {
            let recovery = streams::fetch(shard, p).await;
            fields["stream"] = streams::report(&recovery, asked);
            Some(recovery)
        }
        None => None,
    };
    session.reply(shard, &outbound::reply("room_joined", fields, id));
    if let (Some(p), Some(recovery)) = (pending, recovery) {
        streams::finish(shard, session, &p, recovery);
    }
    if !already_member {
        presence::after_join(shard, session, room).await;
    }
    Ok(())
}

pub(crate) fn leave(shard: &Rc<Shard>, session: &Rc<Session>, message: &Inbound) -> Result<(), ProtocolError> {
    leave_room(shard, session, message.room()?, message.id.as_ref())
}

/// Leaves a room, acknowledges with `room_left`, and tells the others if it was the user's last
/// connection there. A room the connection is not in is `ROOM_NOT_FOUND`.
pub(crate) fn leave_room(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    room: &str,
    id: Option<&Value>,
) -> Result<(), ProtocolError> {
    validate_name("room", room)?;
    let was_member = shard.leave(session, room);
    streams::end(session, NameKind::Room, room);
    if !was_member {
        return Err(ProtocolError::new(ErrorCode::RoomNotFound, format!("this connection is not in room {room:?}")));
    }
    session.reply(shard, &outbound::reply("room_left", json!({ "room": room, "room_id": room }), id));
    if was_member {
        let (task_shard, task_session, room) = (shard.clone(), session.clone(), room.to_string());
        shard.spawn(async move { presence::after_leave(&task_shard, &task_session, &room).await });
    }
    Ok(())
}
