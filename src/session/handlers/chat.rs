//! `chat_message` and `mark_read`: persisted chat and read receipts.

use std::rc::Rc;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::auth::Action;
use crate::config::NameKind;
use crate::hub::Target;
use crate::protocol::{ErrorCode, Inbound, ProtocolError, outbound};
use crate::session::Session;
use crate::session::Shard;
use crate::session::handlers::denied;
use crate::store::{MarkRead, MessageType, NewMessage, StoreError, now_ms};

/// A store failure as a client error.
pub(crate) fn store_error(e: StoreError) -> ProtocolError {
    match e {
        StoreError::Crypto(e @ crate::store::crypto::CryptoError::NoKey) => {
            ProtocolError::new(ErrorCode::InvalidMessage, e.to_string())
        }
        StoreError::Crypto(e) => ProtocolError::new(ErrorCode::InternalError, e.to_string()),
        StoreError::Query(e) => ProtocolError::new(ErrorCode::InvalidMessage, e.to_string()),
        other => ProtocolError::new(ErrorCode::Unavailable, format!("message not stored: {other}")),
    }
}

/// `{"type":"chat_message","room":…,"content":…,"message_type":"text","idempotency_key"?:…}`:
/// checked, stored, then delivered to the room and acknowledged with `chat_message_ack` once
/// durable. A retry with the same `idempotency_key` (same sender and room) is not stored or
/// delivered again: its acknowledgement names the original message, with `"duplicate": true`. The reader does
/// not wait for the disk: the next message is read while this one commits.
pub(crate) async fn chat(shard: &Rc<Shard>, session: &Rc<Session>, message: &Inbound) -> Result<(), ProtocolError> {
    let node = shard.node();
    let room = message.room()?.to_string();
    let content = message.str("content")?.to_string();
    let limit = node.store.config.max_content_size;
    if content.len() > limit {
        return Err(ProtocolError::new(
            ErrorCode::MessageTooLarge,
            format!("content is {} bytes; the limit is {limit}", content.len()),
        ));
    }
    crate::store::check_storable("content", &content).map_err(|e| ProtocolError::new(ErrorCode::InvalidMessage, e))?;
    let kind_text = message.opt_str("message_type")?.unwrap_or("text");
    let kind = MessageType::parse(kind_text).ok_or_else(|| {
        ProtocolError::new(
            ErrorCode::InvalidMessage,
            format!("unknown message_type {kind_text:?}: use text, file or image"),
        )
    })?;
    if kind == MessageType::System {
        return Err(ProtocolError::new(
            ErrorCode::PermissionDenied,
            "system messages are posted by backends through the API",
        ));
    }
    let metadata = match message.body.get("metadata") {
        None | Some(Value::Null) => None,
        Some(value @ Value::Object(_)) => Some(value.clone()),
        Some(_) => return Err(ProtocolError::new(ErrorCode::InvalidMessage, "field \"metadata\" must be an object")),
    };
    if let Some(metadata) = &metadata {
        crate::store::check_storable_json("metadata", metadata)
            .map_err(|e| ProtocolError::new(ErrorCode::InvalidMessage, e))?;
    }
    let sensitive = match message.body.get("sensitive") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ProtocolError::new(ErrorCode::InvalidMessage, "field \"sensitive\" must be true or false"));
        }
    };
    let idempotency_key = message.opt_id("idempotency_key")?;
    if let Some(key) = &idempotency_key {
        crate::store::check_idempotency_key(key).map_err(|e| ProtocolError::new(ErrorCode::InvalidMessage, e))?;
    }
    let user = session.user();
    node.auth.check(user.as_deref(), NameKind::Room, &room, Action::Publish).await.map_err(denied)?;
    let new = NewMessage {
        room: Arc::from(room.as_str()),
        user_id: user.as_ref().map(|u| u.id.to_string()),
        user_name: user.as_ref().and_then(|u| u.name.clone()),
        message_type: kind,
        content,
        metadata,
        sensitive,
        created_at: now_ms(),
        channel: None,
        idempotency_key,
    };
    // Waiting for queue space holds back this client only (back-pressure), never the shard.
    let ack = node.writer.submit(new).await.map_err(store_error)?;
    let (shard, session, id) = (shard.clone(), session.clone(), message.id.clone());
    shard.clone().spawn_ack(async move {
        match ack.await {
            Ok(Ok(stored)) => {
                let mut ack = json!({ "message_id": stored.id, "room": stored.room, "created_at": stored.created_at });
                if stored.duplicate
                    && let Some(fields) = ack.as_object_mut()
                {
                    fields.insert("duplicate".into(), true.into());
                }
                session.reply(&shard, &outbound::reply("chat_message_ack", ack, id.as_ref()))
            }
            Ok(Err(e)) => session.send_error(&shard, &store_error(e), id.as_ref()),
            Err(_) => session.send_error(
                &shard,
                &ProtocolError::new(ErrorCode::Unavailable, "the message store stopped before storing the message"),
                id.as_ref(),
            ),
        }
    });
    Ok(())
}

/// Parses `message_ids` or `up_to` (also `last_read_id`) from a JSON object.
pub fn parse_mark(body: &serde_json::Map<String, Value>) -> Result<MarkRead, String> {
    if let Some(ids) = body.get("message_ids") {
        let Value::Array(items) = ids else { return Err("\"message_ids\" must be an array of ids".into()) };
        if items.len() > 1000 {
            return Err("at most 1000 message ids at once".into());
        }
        let ids = items.iter().map(|v| v.as_i64().filter(|id| *id > 0)).collect::<Option<Vec<_>>>();
        return ids.map(MarkRead::Ids).ok_or_else(|| "\"message_ids\" must hold positive integers".into());
    }
    match body.get("up_to").or_else(|| body.get("last_read_id")) {
        Some(v) => {
            v.as_i64().filter(|id| *id >= 0).map(MarkRead::UpTo).ok_or_else(|| "\"up_to\" must be a message id".into())
        }
        None => Err("give \"message_ids\" or \"up_to\"".into()),
    }
}

/// Marks messages read for the connection's user and tells the room (`read_receipt`).
pub(crate) async fn mark_read(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    message: &Inbound,
) -> Result<(), ProtocolError> {
    let node = shard.node();
    let room = message.room()?.to_string();
    let what = parse_mark(&message.body).map_err(|e| ProtocolError::new(ErrorCode::InvalidMessage, e))?;
    let Some(user) = session.user() else {
        return Err(ProtocolError::new(ErrorCode::AuthenticationFailed, "read receipts need a user"));
    };
    node.auth.check(Some(&user), NameKind::Room, &room, Action::Read).await.map_err(denied)?;
    let receipt = record_read(node, &room, &user.id, &what).await.map_err(store_error)?;
    session.reply(shard, &outbound::reply("marked_read", receipt, message.id.as_ref()));
    Ok(())
}

/// Stores a read mark and delivers the `read_receipt` to the room; returns the receipt.
pub async fn record_read(
    node: &crate::node::Node,
    room: &str,
    user: &str,
    what: &MarkRead,
) -> Result<Value, StoreError> {
    let (marked, up_to) = node.store.mark_read(room, user, what, now_ms()).await?;
    let receipt = json!({
        "type": "read_receipt",
        "room": room,
        "room_id": room,
        "user_id": user,
        "message_ids": marked,
        "last_read_id": up_to,
        "timestamp": outbound::now(),
    });
    let target = Target { room: Some(Arc::from(room)), ..Target::default() };
    // The receipt is live information; if the broker is down the room on this node still gets it.
    let _ = node.publisher().publish(target, receipt.clone(), None).await;
    Ok(receipt)
}
