//! `join_room` / `leave_room` (`room` or `room_id`) with `room_joined` / `room_left`.

use std::rc::Rc;

use serde_json::json;

use crate::auth::Action;
use crate::config::NameKind;
use crate::hub::shard::Shard;
use crate::hub::{Hub, InterestReady};
use crate::protocol::{ErrorCode, Inbound, ProtocolError, outbound, validate_name};
use crate::session::Session;
use crate::session::handlers::denied;

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
    let ready = join_one(shard, session, room).await?;
    if let Some(user) = session.user_id() {
        shard.node().writer.record_member(room, &user, crate::store::now_ms());
    }
    Hub::ready(ready.into_iter().collect(), shard.node().config.redis.timeout).await;
    session
        .reply(shard, &outbound::reply("room_joined", json!({ "room": room, "room_id": room }), message.id.as_ref()));
    Ok(())
}

pub(crate) fn leave(shard: &Rc<Shard>, session: &Rc<Session>, message: &Inbound) -> Result<(), ProtocolError> {
    let room = message.room()?;
    shard.leave(session, room);
    session.reply(shard, &outbound::reply("room_left", json!({ "room": room, "room_id": room }), message.id.as_ref()));
    Ok(())
}
