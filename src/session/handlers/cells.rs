//! `cell_update`: collaborative edits applied only when newer than the cell's current version.

use std::rc::Rc;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::auth::Action;
use crate::cells::{Applied, Cell, CellLimits, MAX_AHEAD};
use crate::config::NameKind;
use crate::hub::Target;
use crate::protocol::{ErrorCode, Inbound, ProtocolError, outbound};
use crate::session::Session;
use crate::session::Shard;
use crate::session::handlers::presence::who;

fn invalid(message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::InvalidMessage, message)
}

/// `{"type":"cell_update","sheet_id":…,"cell_id":…,"value":…,"formula":…,"version":…}`.
///
/// The cell belongs to the edit's `room` (or the one room the connection is in) and the editor
/// must be allowed to publish there. Accepted: `cell_updated` to the other members of that room,
/// `cell_update_ack` to the sender, and the edit forwarded to the backend when `cell_update` is in
/// `upstream.types`. Refused: `VERSION_CONFLICT` carrying the cell's current value and version,
/// `LIMIT_EXCEEDED` when the room holds all the cells it may, `INVALID_MESSAGE` for a version
/// too far ahead.
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
    let presence = &node.config.presence;
    let size = serde_json::to_string(&value).map_or(usize::MAX, |v| v.len()) + formula.as_ref().map_or(0, String::len);
    if size > presence.max_cell_bytes {
        return Err(ProtocolError::new(
            ErrorCode::MessageTooLarge,
            format!("a cell holds at most {} bytes (presence.max_cell_bytes)", presence.max_cell_bytes),
        ));
    }
    // A cell belongs to one room: the one named, or the only one the connection is in. Every read
    // and write of it is for that room, under that room's rules.
    let room: Arc<str> = {
        let state = session.state.borrow();
        match message.opt_room()? {
            Some(room) => state.rooms.get(room).cloned().ok_or_else(|| {
                ProtocolError::new(ErrorCode::PermissionDenied, format!("join room {room:?} before editing in it"))
            })?,
            None => {
                let mut joined = state.rooms.iter();
                match (joined.next(), joined.next()) {
                    (Some(room), None) => room.clone(),
                    (None, _) => {
                        return Err(ProtocolError::new(
                            ErrorCode::PermissionDenied,
                            "join a room before editing cells",
                        ));
                    }
                    (Some(_), Some(_)) => {
                        return Err(invalid("this connection is in several rooms: name the cell's room in \"room\""));
                    }
                }
            }
        }
    };
    let user = session.user();
    node.auth
        .check(user.as_deref(), NameKind::Room, &room, Action::Publish)
        .await
        .map_err(|d| ProtocolError::new(ErrorCode::PermissionDenied, d.reason))?;
    let rooms = [room.clone()];
    let limits = CellLimits { cells: presence.max_cells_per_room, sheets: presence.max_sheets_per_room };
    let edit = Cell { value, formula, version, user_id: Some(who.user_id.to_string()), username: who.username.clone() };
    let applied = node
        .cells
        .apply(&room, &sheet, &cell_id, edit, limits)
        .await
        .map_err(|e| ProtocolError::new(ErrorCode::Unavailable, e.to_string()))?;
    let cell = match applied {
        Applied::Accepted(cell) => cell,
        Applied::RoomFull(what) => {
            return Err(ProtocolError::new(
                ErrorCode::LimitExceeded,
                format!("room {room:?} holds as many {what} as it may (presence.max_{what}_per_room)"),
            ));
        }
        Applied::TooFarAhead(limit) => {
            return Err(invalid(format!(
                "field \"version\" runs too far ahead: at most {limit} (the current version or the time in \
                 milliseconds, plus {MAX_AHEAD})"
            )));
        }
        Applied::Conflict(current) => {
            // Only a reader of the room sees the current content (the edit's room was joined, so
            // read was granted; the check runs again in case the rules changed since).
            node.auth
                .check(user.as_deref(), NameKind::Room, &room, Action::Read)
                .await
                .map_err(|d| ProtocolError::new(ErrorCode::PermissionDenied, d.reason))?;
            let mut extra = Map::new();
            extra.insert("sheet_id".into(), sheet.clone().into());
            extra.insert("cell_id".into(), cell_id.clone().into());
            extra.insert("room".into(), (*room).into());
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
        node.presence.note_sheet(room, &who.user_id, &sheet, presence.max_sheets_per_room);
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
        if let Err(e) = node.publisher().publish(target, payload, Some(session.id)).await {
            tracing::warn!(error = %e, "cell_updated not published");
        }
    }
    let forwarded = if node.config.upstream.types.iter().any(|t| t == "cell_update") {
        let request = super::upstream::request_for(shard, session, message);
        match node.upstream.forward(&request).await {
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
