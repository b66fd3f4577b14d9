//! Publishing for backends: to a channel (optionally with a room and a user), to a room, to a
//! user's connections, or to several channels at once.

use crate::api::schema;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{Admin, ApiError, ok, parse_body};
use crate::broker::Published;
use crate::hub::Target;
use crate::hub::event::EventError;
use crate::node::Node;
use crate::publish::PublishError;

/// A user id given as a string or a number (the dashboard document uses numbers).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum IdValue {
    /// `"user_123"`.
    Text(String),
    /// `123`.
    #[schema(value_type = i64)]
    Number(serde_json::Number),
}

impl IdValue {
    /// The id as text.
    pub fn into_string(self) -> String {
        match self {
            IdValue::Text(s) => s,
            IdValue::Number(n) => n.to_string(),
        }
    }
}

/// `POST /api/publish`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// Channel whose subscribers receive the event.
    pub channel: Option<String>,
    /// Room whose members receive it.
    pub room: Option<String>,
    /// User whose connections receive it.
    pub user_id: Option<IdValue>,
    /// Every connection receives it.
    #[serde(default)]
    pub broadcast: bool,
    /// The event, a JSON object delivered as is (plus a default `type` if the channel has one).
    #[schema(value_type = Object)]
    pub event: Value,
}

/// [`PublishRequest`] as the route reads it: the event left as text for [`Publisher::prepare_raw`](crate::publish::Publisher::prepare_raw).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublish<'a> {
    channel: Option<String>,
    room: Option<String>,
    user_id: Option<IdValue>,
    #[serde(default)]
    broadcast: bool,
    #[serde(borrow)]
    event: &'a RawValue,
}

/// `POST /api/broadcast`: one event to several channels.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BroadcastRequest {
    /// Channels whose subscribers receive it.
    pub channels: Vec<String>,
    /// The event.
    #[schema(value_type = Object)]
    pub event: Value,
}

pub(crate) fn publish_error(e: PublishError) -> ApiError {
    match e {
        PublishError::Invalid(EventError::NotAnObject) => ApiError::bad_request("INVALID_EVENT", e.to_string()),
        PublishError::Invalid(EventError::NoTarget) => ApiError::bad_request("NO_TARGET", e.to_string()),
        PublishError::Invalid(EventError::InvalidName(_)) => ApiError::bad_request("INVALID_NAME", e.to_string()),
        PublishError::Broker(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", e.to_string()),
    }
}

/// `{"success":true, …}`, plus `"local_only":true` when the broker was down and only this node's
/// connections could be reached.
fn outcome(published: Published, mut fields: Value) -> Response {
    if published == Published::LocalOnly
        && let Some(map) = fields.as_object_mut()
    {
        map.insert("local_only".into(), Value::Bool(true));
        map.insert("warning".into(), Value::from("broker unavailable: delivered to this node's connections only"));
    }
    ok(fields)
}

fn target(channel: Option<String>, room: Option<String>, user: Option<String>, broadcast: bool) -> Target {
    Target { channel: channel.map(Arc::from), room: room.map(Arc::from), user: user.map(Arc::from), broadcast }
}

/// Publishes one event.
#[utoipa::path(post, path = "/api/publish", tag = "publish", security(("api_key" = []), ("x_api_key" = [])),
    request_body = PublishRequest,
    responses((status = 200, description = "published", body = schema::Published),
              (status = 400, description = "INVALID_JSON, INVALID_EVENT, NO_TARGET, INVALID_NAME", body = schema::ApiErrorBody)))]
pub async fn publish(State(node): State<Arc<Node>>, _admin: Admin, body: Bytes) -> Result<Response, ApiError> {
    let request: RawPublish<'_> = parse_body(&body)?;
    let target = target(request.channel, request.room, request.user_id.map(IdValue::into_string), request.broadcast);
    let published = node.publisher().publish_raw(target, request.event).await.map_err(publish_error)?;
    Ok(outcome(published, json!({})))
}

/// Publishes one event to several channels; a connection subscribed to several gets it once
/// per channel, as it would from separate publishes.
#[utoipa::path(post, path = "/api/broadcast", tag = "publish", security(("api_key" = []), ("x_api_key" = [])),
    request_body = BroadcastRequest,
    responses((status = 200, description = "published to every channel", body = schema::Published),
              (status = 400, description = "INVALID_JSON, INVALID_EVENT, NO_TARGET, INVALID_NAME", body = schema::ApiErrorBody)))]
pub async fn broadcast(State(node): State<Arc<Node>>, _admin: Admin, body: Bytes) -> Result<Response, ApiError> {
    let request: BroadcastRequest = parse_body(&body)?;
    if request.channels.is_empty() {
        return Err(ApiError::bad_request("NO_TARGET", "\"channels\" must name at least one channel"));
    }
    // Validate everything before publishing anything, so a bad name publishes nothing.
    for channel in &request.channels {
        node.publisher()
            .prepare(target(Some(channel.clone()), None, None, false), request.event.clone())
            .map_err(|e| publish_error(e.into()))?;
    }
    let mut published = Published::Everywhere;
    for channel in &request.channels {
        let one = node
            .publisher()
            .publish(target(Some(channel.clone()), None, None, false), request.event.clone(), None)
            .await
            .map_err(publish_error)?;
        if one == Published::LocalOnly {
            published = one;
        }
    }
    Ok(outcome(published, json!({ "channels": request.channels })))
}

/// `POST …/rooms/{room}/broadcast`: the body is the event.
#[utoipa::path(post, path = "/rooms/{room}/broadcast", tag = "publish", security(("api_key" = []), ("x_api_key" = [])),
    params(("room" = String, Path, description = "the room")),
    request_body(content = Object, description = "the event, a JSON object delivered as is"),
    responses((status = 200, description = "published", body = schema::Published)))]
pub async fn room_broadcast(
    State(node): State<Arc<Node>>,
    _admin: Admin,
    Path(room): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let event: Value = parse_body(&body)?;
    let published = node
        .publisher()
        .publish(target(None, Some(room.clone()), None, false), event, None)
        .await
        .map_err(publish_error)?;
    Ok(outcome(published, json!({ "room": room })))
}

/// `POST …/users/{user}/notify`: the body is the event, delivered to all of the user's connections.
#[utoipa::path(post, path = "/users/{user}/notify", tag = "publish", security(("api_key" = []), ("x_api_key" = [])),
    params(("user" = String, Path, description = "the user")),
    request_body(content = Object, description = "the event, delivered to every connection of the user"),
    responses((status = 200, description = "published", body = schema::Published)))]
pub async fn notify_user(
    State(node): State<Arc<Node>>,
    _admin: Admin,
    Path(user): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let event: Value = parse_body(&body)?;
    let published = node
        .publisher()
        .publish(target(None, None, Some(user.clone()), false), event, None)
        .await
        .map_err(publish_error)?;
    Ok(outcome(published, json!({ "user_id": user })))
}
