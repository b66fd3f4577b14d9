//! Messages for the application's backend (`upstream.types`) and application aliases
//! (`aliases`).

use std::collections::HashMap;
use std::rc::Rc;

use serde_json::{Map, Value, json};

use crate::config::{AliasAction, AliasConfig};
use crate::protocol::{ErrorCode, Inbound, ProtocolError, outbound, template};
use crate::session::Session;
use crate::session::Shard;
use crate::upstream::Handed;

/// What the backend receives: the client's message and who sent it.
pub(crate) fn request_for(shard: &Shard, session: &Session, message: &Inbound) -> Value {
    let user = session.user();
    json!({
        "type": message.kind,
        "request_id": message.id,
        "connection_id": &*session.connection_id,
        "client_id": session.info.client_id,
        "user_id": user.as_ref().map(|u| &*u.id),
        "username": user.as_ref().and_then(|u| u.name.clone()),
        "verified": user.as_ref().is_some_and(|u| u.verified),
        "node": &*shard.node().id,
        "received_at": outbound::now(),
        "message": Value::Object(message.body.clone()),
    })
}

/// Hands the message to the backend and acknowledges with `request_accepted` once it is there.
pub(crate) async fn forward(shard: &Rc<Shard>, session: &Rc<Session>, message: &Inbound) -> Result<(), ProtocolError> {
    let node = shard.node();
    let request = request_for(shard, session, message);
    let handed = node
        .upstream
        .forward(&request)
        .await
        .map_err(|e| ProtocolError::new(ErrorCode::Unavailable, format!("request not accepted: {e}")))?;
    let mut ack = Map::new();
    ack.insert("request_type".into(), message.kind.clone().into());
    if let Some(request_id) = message.body.get("request_id") {
        ack.insert("request_id".into(), request_id.clone());
    }
    if let Handed::Stream(id) = handed {
        ack.insert("stream_id".into(), id.into());
    }
    let ack = Value::Object(ack);
    session.reply(shard, &outbound::reply("request_accepted", ack, message.id.as_ref()));
    Ok(())
}

/// Runs an alias: fills its target from the message's fields, then does the built-in action
/// with the built-in acknowledgement.
pub(crate) async fn alias(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    message: &Inbound,
    alias: &AliasConfig,
) -> Result<(), ProtocolError> {
    let fields: HashMap<&str, String> = message
        .body
        .iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k.as_str(), s.clone())),
            Value::Number(n) => Some((k.as_str(), n.to_string())),
            _ => None,
        })
        .collect();
    let target = template::render(&alias.target, |name| fields.get(name).map(String::as_str)).ok_or_else(|| {
        ProtocolError::new(
            ErrorCode::InvalidMessage,
            format!("{} needs the fields of {:?} as strings or numbers", message.kind, alias.target),
        )
    })?;
    match alias.action {
        AliasAction::JoinRoom => {
            super::rooms::join_room(shard, session, &target, message.id.as_ref(), session.info.seq, None).await
        }
        AliasAction::LeaveRoom => super::rooms::leave_room(shard, session, &target, message.id.as_ref()),
        AliasAction::Subscribe => {
            let wanted = session.info.seq;
            let none = serde_json::Map::new();
            super::channels::subscribe_names(shard, session, &[target.as_str()], message.id.as_ref(), wanted, &none)
                .await
        }
        AliasAction::Unsubscribe => {
            super::channels::unsubscribe_names(shard, session, &[target.as_str()], message.id.as_ref())
        }
    }
}
