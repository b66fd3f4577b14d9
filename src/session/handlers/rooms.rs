//! `join_room` / `leave_room` (`room` or `room_id`) with `room_joined` / `room_left`.

use std::rc::Rc;

use serde_json::json;

use crate::auth::Action;
use crate::config::NameKind;
use crate::hub::shard::Shard;
use crate::hub::{Hub, InterestReady};
use crate::protocol::{ErrorCode, Inbound, ProtocolError, outbound, validate_name};
use crate::session::Session;
use crate::session::handlers::{denied, streams};

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
    let limit = shard.node().config.limits.max_rooms_per_connection;
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
    let wanted = session.info.seq || message.body.get("seq").and_then(serde_json::Value::as_bool).unwrap_or(false);
    let since = match message.body.get("recover") {
        None | Some(serde_json::Value::Null) => None,
        Some(p) => Some(streams::parse_position(p, "recover")?),
    };
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
    session.reply(shard, &outbound::reply("room_joined", fields, message.id.as_ref()));
    if let (Some(p), Some(recovery)) = (pending, recovery) {
        streams::finish(shard, session, &p, recovery);
    }
    Ok(())
}

pub(crate) fn leave(shard: &Rc<Shard>, session: &Rc<Session>, message: &Inbound) -> Result<(), ProtocolError> {
    let room = message.room()?;
    shard.leave(session, room);
    streams::end(session, NameKind::Room, room);
    session.reply(shard, &outbound::reply("room_left", json!({ "room": room, "room_id": room }), message.id.as_ref()));
    Ok(())
}
