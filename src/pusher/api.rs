//! The Pusher HTTP API under `/apps/{id}`, every request signed with the app's secret.
//!
//! A refused request is a 4xx with `{"error": …}`: 401 for a wrong key, signature, body digest
//! or a stale timestamp, never a 200 with an error inside.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::{Method, StatusCode, Uri};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::PusherOf;
use super::protocol;
use super::{App, ChannelKind};
use crate::api::openapi::Routes;
use crate::hub::{Event, Target};
use crate::node::Node;

/// The Pusher routes: the WebSocket at `/app/{key}` and the HTTP API. Empty when no app is
/// configured.
pub fn routes(routes: Routes, node: &Node) -> Routes {
    if !node.pusher().enabled() {
        return routes;
    }
    let socket = get(|State(node): State<Arc<Node>>, Path(key): Path<String>, request: Request| {
        super::socket::upgrade(node, key, request)
    });
    routes
        .serve(crate::api::openapi::websocket("/app/{key}", "Pusher Channels protocol 7 (`?protocol=7`)", socket))
        .serve(utoipa_axum::routes!(events))
        .serve(utoipa_axum::routes!(batch_events))
        .serve(utoipa_axum::routes!(channels))
        .serve(utoipa_axum::routes!(channel))
        .serve(utoipa_axum::routes!(users))
        .serve(utoipa_axum::routes!(terminate))
}

/// A refused API request.
#[derive(Debug)]
pub struct PusherApiError {
    status: StatusCode,
    message: String,
}

impl PusherApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PusherApiError { status, message: message.into() }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for PusherApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "error": self.message }))).into_response()
    }
}

type ApiResult = Result<Response, PusherApiError>;

/// The app of a request whose signature, key, timestamp and body digest check out.
fn authorized(node: &Node, app_id: &str, method: &Method, uri: &Uri, body: &[u8]) -> Result<Arc<App>, PusherApiError> {
    let Some(app) = node.pusher().by_id(app_id) else {
        return Err(PusherApiError::new(StatusCode::NOT_FOUND, format!("unknown app {app_id:?}")));
    };
    let query: Vec<(String, String)> =
        uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    super::sign::verify_request(
        &app.config.key,
        &app.config.secret,
        method.as_str(),
        uri.path(),
        &query,
        body,
        now,
        node.pusher().clock_skew,
    )
    .map_err(|e| {
        crate::audit::authentication_failed("pusher-api", uri.path(), &e.to_string());
        PusherApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
    })?;
    Ok(app.clone())
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query().and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned()))
}

/// One event as the API receives it.
#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[schema(as = PusherEvent)]
pub struct EventBody {
    /// The event's name.
    name: String,
    /// The event's data: a string (clients receive it as is) or JSON (encoded to a string).
    #[schema(value_type = Object)]
    data: Value,
    /// One channel…
    #[serde(default)]
    channel: Option<String>,
    /// …or up to 100.
    #[serde(default)]
    channels: Option<Vec<String>>,
    /// A socket that must not receive it (the sender's own).
    #[serde(default)]
    socket_id: Option<String>,
    /// `user_count` and/or `subscription_count`: answer with the channels' figures.
    #[serde(default)]
    info: Option<String>,
}

/// `POST /apps/{app_id}/batch_events`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = PusherBatch)]
struct BatchBody {
    /// Up to 10 events.
    batch: Vec<EventBody>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, PusherApiError> {
    serde_json::from_slice(body).map_err(|e| PusherApiError::bad(format!("invalid request body: {e}")))
}

/// Checks one event and turns it into hub events (one per channel), recording `cache-` channels'
/// last event.
fn prepare(node: &Node, app: &App, event: &EventBody) -> Result<Vec<Arc<Event>>, PusherApiError> {
    let limits = &app.config;
    if event.name.is_empty() || event.name.len() > 200 {
        return Err(PusherApiError::bad("name must be 1 to 200 characters"));
    }
    // `data` is a string in the protocol; other JSON is sent as its text, which is what
    // pusher-js would decode from a string anyway.
    let data = match &event.data {
        Value::String(s) => Value::String(s.clone()),
        other => Value::String(other.to_string()),
    };
    if data.as_str().map_or(0, str::len) > limits.max_event_payload_bytes {
        return Err(PusherApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("data is larger than {} bytes", limits.max_event_payload_bytes),
        ));
    }
    let channels: Vec<&str> = match (&event.channel, &event.channels) {
        (Some(one), None) => vec![one.as_str()],
        (None, Some(many)) => many.iter().map(String::as_str).collect(),
        (Some(one), Some(many)) => std::iter::once(one.as_str()).chain(many.iter().map(String::as_str)).collect(),
        (None, None) => return Err(PusherApiError::bad("give channel or channels")),
    };
    if channels.is_empty() || channels.len() > limits.max_event_channels {
        return Err(PusherApiError::bad(format!("give 1 to {} channels", limits.max_event_channels)));
    }
    let exclude = match &event.socket_id {
        None => None,
        Some(id) if valid_socket_id(id) => node.pusher().local_conn(id),
        Some(id) => return Err(PusherApiError::bad(format!("invalid socket_id {id:?}"))),
    };
    let mut out = Vec::with_capacity(channels.len());
    for channel in channels {
        super::valid_channel(channel).map_err(PusherApiError::bad)?;
        let payload = protocol::event(&event.name, channel, &data, None);
        let hub: Arc<str> = Arc::from(app.hub_name(channel));
        let target = Target { channel: Some(hub), ..Default::default() };
        out.push(match exclude {
            Some(conn) => Event::excluding(target, payload, conn),
            None => Event::new(target, payload),
        });
    }
    Ok(out)
}

/// The id of the live node whose socket `socket_id` is, when it is another node's.
async fn owner_of(node: &Node, socket_id: &str) -> Option<String> {
    let redis = node.pusher().shared()?;
    let tag: u32 = socket_id.split_once('.')?.0.parse().ok()?;
    if tag == node.pusher().node_tag {
        return None;
    }
    let nodes = redis.cluster_nodes().await.ok()?;
    nodes.iter().filter_map(|n| n["node"].as_str()).find(|id| super::node_tag(id) == tag).map(String::from)
}

/// Hands an event whose excluded socket lives on another node to that node, which publishes it
/// with the exclusion it alone can apply. `false` (publish here, without the exclusion) when
/// there is no such node listening.
async fn forwarded(node: &Node, app: &App, event: &EventBody) -> bool {
    let Some(socket_id) = &event.socket_id else { return false };
    let Some(owner) = owner_of(node, socket_id).await else { return false };
    let Some(redis) = node.pusher().redis() else { return false };
    let command = json!({ "pusher_publish": { "app": app.config.id, "event": event } });
    redis.send_control(&owner, &command).await.unwrap_or(false)
}

/// Publishes an event another node forwarded because its excluded socket lives here.
pub async fn publish_forwarded(node: &Node, command: &Value) {
    let Some(app) = command["app"].as_str().and_then(|id| node.pusher().by_id(id)).cloned() else { return };
    let Ok(event) = serde_json::from_value::<EventBody>(command["event"].clone()) else { return };
    match prepare(node, &app, &event) {
        Ok(events) => {
            remember_cached(node, &events).await;
            node.publisher().publish_events(events).await;
        }
        Err(e) => tracing::debug!(error = %e.message, "a forwarded Pusher event was refused"),
    }
}

/// Records the events of `cache-` channels as their channels' last.
async fn remember_cached(node: &Node, events: &[Arc<Event>]) {
    for event in events {
        if let Some(hub) = &event.target.channel
            && node.pusher().by_hub(hub).is_some_and(super::is_cache)
        {
            super::cache::remember(node, hub, &event.payload).await;
        }
    }
}

fn valid_socket_id(id: &str) -> bool {
    id.split_once('.').is_some_and(|(a, b)| {
        [a, b].iter().all(|p| !p.is_empty() && p.len() <= 20 && p.bytes().all(|c| c.is_ascii_digit()))
    })
}

#[utoipa::path(post, path = "/apps/{app_id}/events", tag = "pusher", operation_id = "pusher_events", security(("pusher_signature" = [])),
    params(("app_id" = String, Path, description = "the app's id")), request_body = EventBody,
    responses((status = 200, description = "published", body = crate::api::schema::PusherPublished), (status = 400, description = "invalid request", body = crate::api::schema::PusherError),
              (status = 401, description = "missing or wrong signature, stale timestamp, unknown key", body = crate::api::schema::PusherError),
              (status = 404, description = "no such app", body = crate::api::schema::PusherError),
              (status = 413, description = "too large", body = crate::api::schema::PusherError)))]
async fn events(
    State(node): State<Arc<Node>>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> ApiResult {
    let app = authorized(&node, &app_id, &method, &uri, &body)?;
    let event: EventBody = parse(&body)?;
    let events = prepare(&node, &app, &event)?;
    let channels: Vec<String> = events.iter().filter_map(|e| e.target.channel.as_deref()).map(String::from).collect();
    if !forwarded(&node, &app, &event).await {
        remember_cached(&node, &events).await;
        node.publisher().publish_events(events).await;
    }
    let mut reply = Map::new();
    if let Some(info) = &event.info {
        reply.insert("channels".into(), channel_infos(&node, &app, &channels, info).await?);
    }
    Ok(axum::Json(Value::Object(reply)).into_response())
}

#[utoipa::path(post, path = "/apps/{app_id}/batch_events", tag = "pusher", operation_id = "pusher_batch_events", security(("pusher_signature" = [])),
    params(("app_id" = String, Path, description = "the app's id")), request_body = BatchBody,
    responses((status = 200, description = "published", body = crate::api::schema::PusherPublished), (status = 400, description = "invalid request", body = crate::api::schema::PusherError),
              (status = 401, description = "missing or wrong signature, stale timestamp, unknown key", body = crate::api::schema::PusherError),
              (status = 404, description = "no such app", body = crate::api::schema::PusherError),
              (status = 413, description = "too large", body = crate::api::schema::PusherError)))]
async fn batch_events(
    State(node): State<Arc<Node>>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> ApiResult {
    let app = authorized(&node, &app_id, &method, &uri, &body)?;
    let batch: BatchBody = parse(&body)?;
    if batch.batch.len() > app.config.max_batch_events {
        return Err(PusherApiError::bad(format!("a batch holds at most {} events", app.config.max_batch_events)));
    }
    let mut all = Vec::new();
    for event in &batch.batch {
        all.push(prepare(&node, &app, event)?);
    }
    let mut local = Vec::new();
    for (event, prepared) in batch.batch.iter().zip(all) {
        if !forwarded(&node, &app, event).await {
            local.extend(prepared);
        }
    }
    remember_cached(&node, &local).await;
    node.publisher().publish_events(local).await;
    let mut infos = Vec::new();
    let any_info = batch.batch.iter().any(|e| e.info.is_some());
    for event in &batch.batch {
        match (&event.info, &event.channel) {
            (Some(info), Some(channel)) => {
                let hub = app.hub_name(channel);
                let map = channel_infos(&node, &app, &[hub], info).await?;
                infos.push(map.get(channel.as_str()).cloned().unwrap_or_else(|| json!({})));
            }
            _ => infos.push(json!({})),
        }
    }
    let reply = if any_info { json!({ "batch": infos }) } else { json!({}) };
    Ok(axum::Json(reply).into_response())
}

/// Subscriber counts of the app's channels across the cluster, by the app's own names.
async fn counts(node: &Node, app: &Arc<App>) -> BTreeMap<String, usize> {
    super::cluster::counts(node, app).await
}

fn wanted_info(info: &str) -> Result<(bool, bool), PusherApiError> {
    let mut users = false;
    let mut subscriptions = false;
    for attribute in info.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match attribute {
            "user_count" => users = true,
            "subscription_count" => subscriptions = true,
            "cache" => {}
            other => return Err(PusherApiError::bad(format!("unknown info attribute {other:?}"))),
        }
    }
    Ok((users, subscriptions))
}

/// The `info` of the named channels (hub names), by the app's own names.
async fn channel_infos(node: &Node, app: &Arc<App>, hub_names: &[String], info: &str) -> Result<Value, PusherApiError> {
    let (users, subscriptions) = wanted_info(info)?;
    let counts = counts(node, app).await;
    let mut out = Map::new();
    for hub in hub_names {
        let Some(name) = app.own_name(hub) else { continue };
        let mut fields = Map::new();
        if subscriptions {
            fields.insert("subscription_count".into(), counts.get(name).copied().unwrap_or(0).into());
        }
        if users && ChannelKind::of(name) == ChannelKind::Presence {
            fields.insert("user_count".into(), super::presence::members(node, hub).await.len().into());
        }
        out.insert(name.to_string(), Value::Object(fields));
    }
    Ok(Value::Object(out))
}

#[utoipa::path(get, path = "/apps/{app_id}/channels", tag = "pusher", operation_id = "pusher_channels", security(("pusher_signature" = [])),
    params(("app_id" = String, Path, description = "the app's id"), ("filter_by_prefix" = Option<String>, Query, description = "only channels starting with it"),
           ("info" = Option<String>, Query, description = "`user_count` (presence channels) and/or `subscription_count`")),
    responses((status = 200, description = "occupied channels", body = crate::api::schema::PusherChannels), (status = 400, description = "invalid request", body = crate::api::schema::PusherError),
              (status = 401, description = "missing or wrong signature, stale timestamp, unknown key", body = crate::api::schema::PusherError),
              (status = 404, description = "no such app", body = crate::api::schema::PusherError),
              (status = 413, description = "too large", body = crate::api::schema::PusherError)))]
async fn channels(State(node): State<Arc<Node>>, Path(app_id): Path<String>, method: Method, uri: Uri) -> ApiResult {
    let app = authorized(&node, &app_id, &method, &uri, b"")?;
    let prefix = query_param(&uri, "filter_by_prefix").unwrap_or_default();
    let (users, subscriptions) = wanted_info(&query_param(&uri, "info").unwrap_or_default())?;
    if users && !prefix.starts_with("presence-") {
        return Err(PusherApiError::bad("info=user_count needs filter_by_prefix=presence-"));
    }
    let mut out = Map::new();
    for (name, n) in counts(&node, &app).await.into_iter().filter(|(name, _)| name.starts_with(&prefix)) {
        let mut fields = Map::new();
        if subscriptions {
            fields.insert("subscription_count".into(), n.into());
        }
        if users {
            fields
                .insert("user_count".into(), super::presence::members(&node, &app.hub_name(&name)).await.len().into());
        }
        out.insert(name, Value::Object(fields));
    }
    Ok(axum::Json(json!({ "channels": out })).into_response())
}

#[utoipa::path(get, path = "/apps/{app_id}/channels/{channel}", tag = "pusher", operation_id = "pusher_channel", security(("pusher_signature" = [])),
    params(("app_id" = String, Path, description = "the app's id"), ("channel" = String, Path, description = "the channel"),
           ("info" = Option<String>, Query, description = "`user_count` (presence channels) and/or `subscription_count`")),
    responses((status = 200, description = "the channel's state", body = crate::api::schema::PusherChannel), (status = 400, description = "invalid request", body = crate::api::schema::PusherError),
              (status = 401, description = "missing or wrong signature, stale timestamp, unknown key", body = crate::api::schema::PusherError),
              (status = 404, description = "no such app", body = crate::api::schema::PusherError),
              (status = 413, description = "too large", body = crate::api::schema::PusherError)))]
async fn channel(
    State(node): State<Arc<Node>>,
    Path((app_id, channel)): Path<(String, String)>,
    method: Method,
    uri: Uri,
) -> ApiResult {
    let app = authorized(&node, &app_id, &method, &uri, b"")?;
    super::valid_channel(&channel).map_err(PusherApiError::bad)?;
    let (users, subscriptions) = wanted_info(&query_param(&uri, "info").unwrap_or_default())?;
    let is_presence = ChannelKind::of(&channel) == ChannelKind::Presence;
    if users && !is_presence {
        return Err(PusherApiError::bad("user_count is available for presence channels only"));
    }
    let count = counts(&node, &app).await.get(&channel).copied().unwrap_or(0);
    let mut out = json!({ "occupied": count > 0 });
    if subscriptions {
        out["subscription_count"] = count.into();
    }
    if users {
        out["user_count"] = super::presence::members(&node, &app.hub_name(&channel)).await.len().into();
    }
    Ok(axum::Json(out).into_response())
}

#[utoipa::path(get, path = "/apps/{app_id}/channels/{channel}/users", tag = "pusher", operation_id = "pusher_users", security(("pusher_signature" = [])),
    params(("app_id" = String, Path, description = "the app's id"), ("channel" = String, Path, description = "a presence channel")),
    responses((status = 200, description = "the channel's members", body = crate::api::schema::PusherUsers), (status = 400, description = "invalid request", body = crate::api::schema::PusherError),
              (status = 401, description = "missing or wrong signature, stale timestamp, unknown key", body = crate::api::schema::PusherError),
              (status = 404, description = "no such app", body = crate::api::schema::PusherError),
              (status = 413, description = "too large", body = crate::api::schema::PusherError)))]
async fn users(
    State(node): State<Arc<Node>>,
    Path((app_id, channel)): Path<(String, String)>,
    method: Method,
    uri: Uri,
) -> ApiResult {
    let app = authorized(&node, &app_id, &method, &uri, b"")?;
    super::valid_channel(&channel).map_err(PusherApiError::bad)?;
    if ChannelKind::of(&channel) != ChannelKind::Presence {
        return Err(PusherApiError::bad("users are listed for presence channels only"));
    }
    let members = super::presence::members(&node, &app.hub_name(&channel)).await;
    let users: Vec<Value> = members.into_keys().map(|id| json!({ "id": id })).collect();
    Ok(axum::Json(json!({ "users": users })).into_response())
}

#[utoipa::path(post, path = "/apps/{app_id}/users/{user}/terminate_connections", tag = "pusher", operation_id = "pusher_terminate", security(("pusher_signature" = [])),
    params(("app_id" = String, Path, description = "the app's id"), ("user" = String, Path, description = "the signed-in user")),
    request_body(content = Object, description = "empty, or any JSON (covered by `body_md5`)"),
    responses((status = 200, description = "the user's connections are closed, on every node", body = Object), (status = 400, description = "invalid request", body = crate::api::schema::PusherError),
              (status = 401, description = "missing or wrong signature, stale timestamp, unknown key", body = crate::api::schema::PusherError),
              (status = 404, description = "no such app", body = crate::api::schema::PusherError),
              (status = 413, description = "too large", body = crate::api::schema::PusherError)))]
async fn terminate(
    State(node): State<Arc<Node>>,
    Path((app_id, user)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> ApiResult {
    authorized(&node, &app_id, &method, &uri, &body)?;
    terminate_local(&node, &app_id, &user).await;
    // Every other live node closes its own connections of the user.
    if let Some(redis) = node.pusher().redis()
        && let Ok(nodes) = redis.cluster_nodes().await
    {
        let command = json!({ "pusher_terminate": [app_id, user] });
        for other in nodes.iter().filter_map(|n| n["node"].as_str()).filter(|n| *n != &*node.id) {
            if let Err(e) = redis.send_control(other, &command).await {
                tracing::warn!(node = other, error = %e, "could not forward terminate_connections");
            }
        }
    }
    Ok(axum::Json(json!({})).into_response())
}

/// Closes the Pusher connections of `user` in app `app_id` on this node; returns how many.
pub async fn terminate_local(node: &Node, app_id: &str, user: &str) -> usize {
    let Some(app) = node.pusher().by_id(app_id).cloned() else { return 0 };
    let user = user.to_string();
    node.hub
        .ask(move |shard: &std::rc::Rc<crate::session::Shard>| super::socket::terminate_user(shard, &app, &user))
        .await
        .into_iter()
        .sum()
}
