//! `cell_update`: collaborative edits applied only when newer than the cell's current version.

use std::rc::Rc;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::hub::Target;
use crate::hub::shard::Shard;
use crate::presence::cells::{Applied, Cell};
use crate::protocol::{ErrorCode, Inbound, ProtocolError, outbound};
use crate::session::Session;
use crate::session::handlers::presence::who;

fn invalid(message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::InvalidMessage, message)
}

/// `{"type":"cell_update","sheet_id":…,"cell_id":…,"value":…,"formula":…,"version":…}`.
///
/// Accepted: `cell_updated` to the other members of the rooms the edit is for (its `room`, or
/// every room the connection is in), `cell_update_ack` to the sender, and the edit forwarded to
/// the backend when `cell_update` is in `upstream.types`. Refused: `VERSION_CONFLICT` carrying
/// the cell's current value and version.
pub(crate) async fn update(shard: &Rc<Shard>, session: &Rc<Session>, message: &Inbound) -> Result<(), ProtocolError> {
    let node = shard.node();
    let who = who(session).ok_or_else(|| {
        ProtocolError::new(ErrorCode::AuthenticationFailed, "cell_update needs a user: connect with a token")
    })?;
    let sheet = message.opt_id("sheet_id")?.ok_or_else(|| invalid("missing field \"sheet_id\""))?;
    let cell_id = message.opt_id("cell_id")?.ok_or_else(|| invalid("missing field \"cell_id\""))?;
    for (what, name) in [("sheet_id", &sheet), ("cell_id", &cell_id)] {
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err(invalid(format!("field {what:?} must be 1-200 characters without control characters")));
        }
    }
    let version = match message.body.get("version") {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| invalid("field \"version\" must be an integer"))?,
        Some(_) => return Err(invalid("field \"version\" must be an integer")),
        None => return Err(invalid("missing field \"version\"")),
    };
    let formula = message.opt_str("formula")?.map(String::from);
    let value = message.body.get("value").cloned().unwrap_or(Value::Null);
    let rooms: Vec<Arc<str>> = match message.opt_room()? {
        Some(room) => {
            let joined = session.state.borrow().rooms.get(room).cloned();
            vec![joined.ok_or_else(|| {
                ProtocolError::new(ErrorCode::PermissionDenied, format!("join room {room:?} before editing in it"))
            })?]
        }
        None => {
            let mut rooms: Vec<Arc<str>> = session.state.borrow().rooms.iter().cloned().collect();
            rooms.sort();
            rooms
        }
    };
    if rooms.is_empty() {
        return Err(ProtocolError::new(ErrorCode::PermissionDenied, "join a room before editing cells"));
    }
    let edit = Cell { value, formula, version, user_id: Some(who.user_id.to_string()), username: who.username.clone() };
    let applied = node
        .cells
        .apply(node, &sheet, &cell_id, edit)
        .await
        .map_err(|e| ProtocolError::new(ErrorCode::Unavailable, e.to_string()))?;
    let cell = match applied {
        Applied::Accepted(cell) => cell,
        Applied::Conflict(current) => {
            let mut extra = Map::new();
            extra.insert("sheet_id".into(), sheet.clone().into());
            extra.insert("cell_id".into(), cell_id.clone().into());
            extra.insert("current_value".into(), current.value.clone());
            extra.insert("current_version".into(), current.version.into());
            extra.insert("current".into(), serde_json::to_value(&current).unwrap_or(Value::Null));
            extra.insert("your_version".into(), version.into());
            stats_error(shard);
            session.reply(
                shard,
                &outbound::error_with(
                    ErrorCode::VersionConflict,
                    &format!("cell {cell_id} of {sheet} is at version {}; yours is {version}", current.version),
                    message.id.as_ref(),
                    extra,
                ),
            );
            return Ok(());
        }
    };
    for room in &rooms {
        node.presence.note_sheet(room, &who.user_id, &sheet);
        let payload = json!({
            "type": "cell_updated",
            "sheet_id": &sheet,
            "cell_id": &cell_id,
            "value": &cell.value,
            "formula": &cell.formula,
            "user_id": &*who.user_id,
            "username": &who.username,
            "version": cell.version,
            "room": &**room,
            "room_id": &**room,
            "timestamp": outbound::now(),
        });
        let target = Target { room: Some(room.clone()), ..Target::default() };
        if let Err(e) = node.publish(target, payload, Some(session.id)).await {
            tracing::warn!(error = %e, "cell_updated not published");
        }
    }
    let forwarded = if node.config.upstream.types.iter().any(|t| t == "cell_update") {
        let request = super::upstream::request_for(shard, session, message);
        match node.upstream.forward(node, &request).await {
            Ok(_) => Some(true),
            Err(e) => {
                tracing::warn!(error = %e, "an accepted cell_update did not reach the backend");
                Some(false)
            }
        }
    } else {
        None
    };
    let mut ack = json!({ "sheet_id": sheet, "cell_id": cell_id, "version": cell.version });
    if let (Some(forwarded), Some(map)) = (forwarded, ack.as_object_mut()) {
        map.insert("forwarded".into(), forwarded.into());
    }
    session.reply(shard, &outbound::reply("cell_update_ack", ack, message.id.as_ref()));
    Ok(())
}

fn stats_error(shard: &Shard) {
    crate::stats::count_client_error(shard.counters(), ErrorCode::VersionConflict);
}
