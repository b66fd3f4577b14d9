//! The dashboard document's ingestion API: `POST /messages` with `user_id`, `channel_id`,
//! `content` (one object, an array, or `{"messages": […]}`), stored through the batching writer
//! and delivered to the channel's subscribers; `GET /messages` for the newest ones.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::history::{store_api_error, store_one};
use super::publish::IdValue;
use super::{Admin, ApiError, created, ok, parse_body};
use crate::node::Node;
use crate::store::{MessageType, NewMessage, Page, now_ms};

/// Most messages in one batch request.
const MAX_BATCH: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Incoming {
    user_id: Option<IdValue>,
    channel_id: IdValue,
    content: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Body {
    One(Incoming),
    Many(Vec<Incoming>),
    Wrapped { messages: Vec<Incoming> },
}

fn to_message(node: &Node, incoming: Incoming) -> Result<NewMessage, ApiError> {
    let channel = incoming.channel_id.into_string();
    super::valid_name("channel", &channel)?;
    if incoming.content.len() > node.store.config.max_content_size {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "MESSAGE_TOO_LARGE",
            "content exceeds database.max_content_size",
        ));
    }
    if incoming.metadata.as_ref().is_some_and(|m| !m.is_object()) {
        return Err(ApiError::bad_request("INVALID_MESSAGE", "\"metadata\" must be an object"));
    }
    crate::store::check_storable("content", &incoming.content)
        .and_then(|()| incoming.username.as_deref().map_or(Ok(()), |u| crate::store::check_storable("username", u)))
        .and_then(|()| incoming.metadata.as_ref().map_or(Ok(()), |m| crate::store::check_storable_json("metadata", m)))
        .map_err(|e| ApiError::bad_request("INVALID_MESSAGE", e))?;
    let name: Arc<str> = Arc::from(channel);
    Ok(NewMessage {
        room: name.clone(),
        user_id: incoming.user_id.map(IdValue::into_string),
        user_name: incoming.username,
        message_type: MessageType::Text,
        content: incoming.content,
        metadata: incoming.metadata,
        sensitive: false,
        created_at: now_ms(),
        channel: Some(name),
        idempotency_key: None,
    })
}

/// `POST /messages`: answered once every message is durable (201), or with the first error.
/// Either every message of a request is valid and queued, or none is.
pub async fn post(State(node): State<Arc<Node>>, _admin: Admin, body: Bytes) -> Result<Response, ApiError> {
    let body: Body = parse_body(&body)?;
    let batch = match body {
        Body::One(one) => {
            let stored = store_one(&node, to_message(&node, one)?).await?;
            return Ok(created(json!({ "id": stored.id, "message": stored.to_json() })));
        }
        Body::Many(many) | Body::Wrapped { messages: many } => many,
    };
    if batch.is_empty() || batch.len() > MAX_BATCH {
        return Err(ApiError::bad_request("INVALID_MESSAGE", format!("a batch holds 1 to {MAX_BATCH} messages")));
    }
    let messages = batch.into_iter().map(|m| to_message(&node, m)).collect::<Result<Vec<_>, _>>()?;
    let mut acks = Vec::with_capacity(messages.len());
    for message in messages {
        acks.push(node.writer.submit(message).await.map_err(store_api_error)?);
    }
    let mut ids = Vec::with_capacity(acks.len());
    for ack in acks {
        match ack.await {
            Ok(Ok(stored)) => ids.push(stored.id),
            Ok(Err(e)) => return Err(store_api_error(e)),
            Err(_) => return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "the writer stopped")),
        }
    }
    Ok(created(json!({ "count": ids.len(), "ids": ids })))
}

/// `?channel_id=&limit=`.
#[derive(Debug, Deserialize)]
pub struct RecentQuery {
    channel_id: Option<String>,
    limit: Option<i64>,
}

/// `GET /messages`: the newest messages of a channel (`channel_id`), newest last.
pub async fn recent(
    State(node): State<Arc<Node>>,
    _admin: Admin,
    Query(query): Query<RecentQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("INVALID_PAGINATION", "limit must be from 1 to 500"));
    }
    let Some(channel) = query.channel_id else {
        return Err(ApiError::bad_request("INVALID_MESSAGE", "give channel_id"));
    };
    super::valid_name("channel", &channel)?;
    let rows = node.store.history(&channel, Page::Offset { limit, offset: 0 }).await.map_err(store_api_error)?;
    let messages: Vec<Value> = rows.iter().map(|m| m.to_json()).collect();
    Ok(ok(json!({ "count": messages.len(), "messages": messages })))
}
