//! The dashboard document's ingestion API: `POST /messages` with `user_id`, `channel_id`,
//! `content` (one object, an array, or `{"messages": […]}`), stored through the batching writer
//! and delivered to the channel's subscribers; `GET /messages` for the newest ones.
//!
//! The route answers `202` once the messages are queued (`ingest.wait_for_commit` makes it wait
//! for the commit and answer `201` with the ids), and is protected by `[ingest]`, not `api.key`.

use crate::api::schema;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use http::request::Parts;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::history::{store_api_error, store_one};
use super::publish::IdValue;
use super::{Admin, ApiError, created, ok, parse_body};
use crate::config::IngestAccess;
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

/// A caller `[ingest]` lets use the ingestion route.
pub struct Ingestor;

impl FromRequestParts<Arc<Node>> for Ingestor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Self, ApiError> {
        let live = node.live();
        let config = &live.ingest;
        if config.access == IngestAccess::Api {
            Admin::from_request_parts(parts, node).await?;
            return Ok(Ingestor);
        }
        if !config.allowed_ips.is_empty() {
            let peer = parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
            let client = peer.map(|ip| crate::gateway::upgrade::client_ip(&node.config, ip, &parts.headers));
            if !client.is_some_and(|ip| config.allowed_ips.contains(&ip)) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "PERMISSION_DENIED",
                    "this address may not use the ingestion API (ingest.allowed_ips)",
                ));
            }
        }
        if config.access == IngestAccess::Key {
            // Validation requires the key with this mode; without one nothing matches.
            let key = config.key.as_deref().unwrap_or_default();
            let given = super::presented_key(&parts.headers);
            if key.is_empty() || !given.is_some_and(|given| bool::from(key.as_bytes().ct_eq(given.as_bytes()))) {
                let who = parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip().to_string());
                crate::audit::authentication_failed(&who.unwrap_or_default(), parts.uri.path(), "invalid ingest key");
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "AUTHENTICATION_FAILED",
                    "this route needs the ingestion key: Authorization: Bearer <key>",
                ));
            }
        }
        Ok(Ingestor)
    }
}

/// `POST /messages`: answered `202` once every message is queued, or (with
/// `ingest.wait_for_commit`) `201` once every message is durable; otherwise the first error.
/// Either every message of a request is valid and queued, or none is; a full queue is refused
/// with `503` at once.
#[utoipa::path(post, path = "/messages", tag = "history", operation_id = "ingest",
    security((), ("api_key" = []), ("x_api_key" = [])),
    request_body(content = Object, description = "`{channel_id, content, user_id?, username?, metadata?}`, a list of them, or `{messages: [...]}`"),
    responses((status = 201, description = "stored", body = schema::Ingested),
              (status = 202, description = "a batch queued before it is durable (`ingest.ack`)", body = schema::Ingested),
              (status = 400, description = "invalid body", body = schema::ApiErrorBody),
              (status = 401, description = "`ingest.access` needs a key", body = schema::ApiErrorBody),
              (status = 403, description = "address not in `ingest.allowed_ips`", body = schema::ApiErrorBody)))]
pub async fn post(State(node): State<Arc<Node>>, _caller: Ingestor, body: Bytes) -> Result<Response, ApiError> {
    let body: Body = parse_body(&body)?;
    if !node.config.ingest.wait_for_commit {
        let batch = match body {
            Body::One(one) => vec![one],
            Body::Many(many) | Body::Wrapped { messages: many } => many,
        };
        if batch.is_empty() || batch.len() > MAX_BATCH {
            return Err(ApiError::bad_request("INVALID_MESSAGE", format!("a batch holds 1 to {MAX_BATCH} messages")));
        }
        let messages = batch.into_iter().map(|m| to_message(&node, m)).collect::<Result<Vec<_>, _>>()?;
        let count = messages.len();
        node.writer.enqueue(messages).map_err(store_api_error)?;
        let body = json!({ "success": true, "status": "queued", "count": count });
        return Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response());
    }
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
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecentQuery {
    /// The channel.
    channel_id: Option<String>,
    /// Most messages returned.
    limit: Option<i64>,
}

/// `GET /messages`: the newest messages of a channel (`channel_id`), newest last.
#[utoipa::path(get, path = "/messages", tag = "history", operation_id = "ingested_recent",
    security((), ("api_key" = []), ("x_api_key" = [])), params(RecentQuery),
    responses((status = 200, description = "recent messages", body = schema::RecentMessages),
              (status = 400, description = "invalid query", body = schema::ApiErrorBody),
              (status = 401, description = "`ingest.access` needs a key", body = schema::ApiErrorBody),
              (status = 403, description = "address not in `ingest.allowed_ips`", body = schema::ApiErrorBody)))]
pub async fn recent(
    State(node): State<Arc<Node>>,
    _caller: Ingestor,
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
