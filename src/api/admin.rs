//! Operator routes: connections, rooms, channels, disconnecting, shutting down.

use crate::api::schema;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Admin, ApiError, ok};
use crate::audit;
use crate::node::Node;
use crate::session::Shard;
use crate::transport::frame::close_code;

/// One connection as operators see it.
#[derive(Debug, Serialize)]
pub struct ConnectionInfo {
    /// Id for disconnecting.
    pub connection_id: String,
    /// The client's own id.
    pub client_id: String,
    /// Authenticated user.
    pub user_id: Option<String>,
    /// Remote address.
    pub remote_addr: String,
    /// The endpoint path.
    pub path: String,
    /// `websocket`, `sse` or `stream`.
    pub transport: &'static str,
    /// RFC 3339 connect time.
    pub connected_at: String,
    /// The Pusher app of a Pusher connection (whose channels and user are then the app's own
    /// names).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pusher_app: Option<String>,
    /// Subscribed channels.
    pub channels: Vec<String>,
    /// Joined rooms.
    pub rooms: Vec<String>,
    /// Frames waiting to be written.
    pub queued_frames: usize,
    /// Shard that owns it.
    pub shard: usize,
}

/// `?limit=&offset=`: one page of an operator listing. Every listing is paged, so a node with
/// many rooms or connections never answers (or builds) one huge body.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Most rows returned (default [`DEFAULT_PAGE`], at most [`MAX_PAGE`]).
    pub limit: Option<usize>,
    /// Rows skipped (default 0).
    pub offset: Option<usize>,
}

/// Rows in a page when `limit` is not given.
pub const DEFAULT_PAGE: usize = 1000;

/// Most rows in one page.
pub const MAX_PAGE: usize = 10_000;

impl ListQuery {
    /// `(limit, offset)`, bounded.
    pub fn bounds(&self) -> (usize, usize) {
        (self.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE), self.offset.unwrap_or(0))
    }

    /// The page of `rows` and the fields that describe it: `count`, `total`, `offset`, `limit`
    /// and `next_offset` (null on the last page).
    pub fn page<T>(&self, rows: Vec<T>) -> (Vec<T>, serde_json::Map<String, serde_json::Value>) {
        let (limit, offset) = self.bounds();
        let total = rows.len();
        let page: Vec<T> = rows.into_iter().skip(offset).take(limit).collect();
        let next = (offset.saturating_add(page.len()) < total).then(|| offset + page.len());
        let mut fields = serde_json::Map::new();
        fields.insert("count".into(), page.len().into());
        fields.insert("total".into(), total.into());
        fields.insert("offset".into(), offset.into());
        fields.insert("limit".into(), limit.into());
        fields.insert("next_offset".into(), next.into());
        (page, fields)
    }
}

/// `GET …/connections?limit=&offset=`, oldest first.
#[utoipa::path(get, path = "/connections", tag = "admin", security(("api_key" = []), ("x_api_key" = [])), params(ListQuery),
    responses((status = 200, description = "a page of connections", body = schema::Connections)))]
pub async fn connections(State(node): State<Arc<Node>>, _admin: Admin, Query(query): Query<ListQuery>) -> Response {
    let (limit, offset) = query.bounds();
    // The oldest `offset + limit` of each shard hold the page; no shard describes more.
    let wanted = offset.saturating_add(limit);
    let per_shard = node
        .hub
        .ask(move |shard: &Rc<Shard>| {
            let mut sessions = shard.all_sessions();
            sessions.sort_by_key(|s| s.info.connected_at);
            sessions
                .iter()
                .take(wanted)
                .map(|s| {
                    let state = s.state.borrow();
                    // A Pusher connection's channels and user are listed by the names its app
                    // knows, not by their hub names.
                    let named = |hub: &str| s.client_name(hub);
                    ConnectionInfo {
                        connection_id: s.connection_id.to_string(),
                        client_id: s.info.client_id.clone(),
                        user_id: s.user_id().map(|u| named(&u)),
                        remote_addr: s.info.peer.to_string(),
                        path: s.info.path.clone(),
                        transport: s.info.wire.transport.as_str(),
                        connected_at: humantime::format_rfc3339_millis(s.info.connected_at).to_string(),
                        pusher_app: s.face_app(),
                        channels: state.channels.iter().map(|c| named(c)).collect(),
                        rooms: state.rooms.iter().map(|r| r.to_string()).collect(),
                        queued_frames: s.queued(),
                        shard: shard.number(),
                    }
                })
                .collect::<Vec<_>>()
        })
        .await;
    let mut all: Vec<ConnectionInfo> = per_shard.into_iter().flatten().collect();
    all.sort_by(|a, b| a.connected_at.cmp(&b.connected_at));
    let total = node.stats.totals().connections;
    let (page, mut fields) = query.page(all);
    // Each shard described at most `offset + limit`; the node's count is the real total.
    fields.insert("total".into(), total.into());
    let next = (((offset + page.len()) as u64) < total).then(|| offset + page.len());
    fields.insert("next_offset".into(), next.into());
    fields.insert("connections".into(), json!(page));
    ok(serde_json::Value::Object(fields))
}

/// Counts per key summed over shards, largest first.
fn merge(per_shard: Vec<Vec<(Arc<str>, usize)>>) -> Vec<(String, usize)> {
    let mut merged: HashMap<Arc<str>, usize> = HashMap::new();
    for (key, n) in per_shard.into_iter().flatten() {
        *merged.entry(key).or_default() += n;
    }
    let mut rows: Vec<(String, usize)> = merged.into_iter().map(|(k, n)| (k.to_string(), n)).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows
}

/// A page of active rooms with member counts, summed over shards, largest first
/// (`GET /api/rooms?limit=&offset=` with the API key).
pub async fn active_rooms(node: &Node, query: &ListQuery) -> Response {
    let (rows, mut fields) = query.page(merge(node.hub.ask(|shard: &Rc<Shard>| shard.room_counts()).await));
    let rooms: Vec<_> = rows
        .into_iter()
        .map(|(room, n)| json!({ "room_id": room, "room": room, "user_count": n, "connections": n }))
        .collect();
    fields.insert("rooms".into(), rooms.into());
    ok(serde_json::Value::Object(fields))
}

/// `GET …/channels?limit=&offset=`: a page of channels with subscriber counts, largest first. A
/// Pusher app's channel is listed by the name the app knows, with `pusher_app` (its id).
#[utoipa::path(get, path = "/channels", tag = "admin", security(("api_key" = []), ("x_api_key" = [])), params(ListQuery),
    responses((status = 200, description = "a page of channels", body = schema::Channels)))]
pub async fn channels(State(node): State<Arc<Node>>, _admin: Admin, Query(query): Query<ListQuery>) -> Response {
    let (rows, mut fields) = query.page(merge(node.hub.ask(|shard: &Rc<Shard>| shard.channel_counts()).await));
    let channels: Vec<_> = rows
        .into_iter()
        .map(|(channel, n)| match crate::hub::namespaced(&channel) {
            Some((app, name)) => json!({ "channel": name, "pusher_app": app, "subscribers": n }),
            None => json!({ "channel": channel, "subscribers": n }),
        })
        .collect();
    fields.insert("channels".into(), channels.into());
    ok(serde_json::Value::Object(fields))
}

/// `DELETE …/users/{user}/connections`: closes every connection of a user with 4001, on every
/// node. The other live nodes are asked on their control channels; each closes its own and
/// logs how many, so the answer counts this node's connections and names the nodes asked.
#[utoipa::path(delete, path = "/users/{user}/connections", tag = "admin", security(("api_key" = []), ("x_api_key" = [])),
    params(("user" = String, Path, description = "the user id")),
    responses((status = 200, description = "closed with 4001 here; every other live node asked to close its own",
               body = schema::UserDisconnected)))]
pub async fn disconnect_user(
    State(node): State<Arc<Node>>,
    admin: Admin,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    audit::admin_action(&admin.peer, "disconnect_user", &user);
    let here = node.hub.disconnect_user_local(&user).await;
    let mut asked = Vec::new();
    if let Some(redis) = node.broker.shared_state() {
        let nodes = redis.cluster_nodes().await.unwrap_or_default();
        for other in nodes.iter().filter_map(|n| n["node"].as_str()).filter(|id| *id != &*node.id) {
            if redis.send_control(other, &json!({ "disconnect_user": user })).await.unwrap_or(false) {
                asked.push(other.to_string());
            }
        }
    }
    if here > 0 {
        audit::forced_disconnect(
            "-",
            Some(&user),
            close_code::DISCONNECTED_BY_ADMIN,
            "disconnected by an administrator",
        );
    }
    Ok(ok(json!({ "user_id": user, "disconnected": here, "nodes_asked": asked })))
}

/// `DELETE …/connections/{id}`: closes one connection with 4001, on whichever node holds it.
#[utoipa::path(delete, path = "/connections/{id}", tag = "admin", security(("api_key" = []), ("x_api_key" = [])),
    params(("id" = String, Path, description = "`connection_id` from the listing")),
    responses((status = 200, description = "closed with 4001 (here or on its node)", body = schema::Disconnected),
              (status = 404, description = "no such connection", body = schema::ApiErrorBody)))]
pub async fn disconnect(
    State(node): State<Arc<Node>>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    audit::admin_action(&admin.peer, "disconnect", &id);
    if node.hub.disconnect_local(&id).await {
        audit::forced_disconnect(&id, None, close_code::DISCONNECTED_BY_ADMIN, "disconnected by an administrator");
        return Ok(ok(json!({ "connection_id": id })));
    }
    // Connection ids are `<node>-<number>`: ask the owning node through the broker.
    let owner = id.rsplit_once('-').map(|(owner, _)| owner).filter(|owner| *owner != &*node.id);
    if let (Some(owner), Some(redis)) = (owner, node.broker.redis())
        && redis.send_control(owner, &json!({ "disconnect": id })).await.unwrap_or(false)
    {
        tracing::info!(connection = %id, node = owner, "disconnect forwarded to the owning node");
        return Ok(ok(json!({ "connection_id": id, "node": owner })));
    }
    Err(ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no connection {id:?}")))
}

/// `POST …/shutdown`: begins a graceful shutdown.
#[utoipa::path(post, path = "/shutdown", tag = "admin", security(("api_key" = []), ("x_api_key" = [])),
    responses((status = 200, description = "graceful shutdown begun", body = schema::ShuttingDown)))]
pub async fn shutdown(State(node): State<Arc<Node>>, admin: Admin) -> Response {
    audit::admin_action(&admin.peer, "shutdown", "graceful shutdown requested through the API");
    node.shutdown.cancel();
    ok(json!({ "message": "shutting down" }))
}
