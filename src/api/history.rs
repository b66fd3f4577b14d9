//! Chat history over REST (the chat document's paths, under every mount): a room's messages,
//! the caller's rooms with unread counts, mark-read, and search. Every read asks the access
//! policy; a user sees only rooms it may read.

use crate::api::schema;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use http::request::Parts;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::{Admin, ApiError, ok, parse_body};
use crate::auth::{Action, Identity};
use crate::config::{AuthMode, NameKind};
use crate::node::Node;
use crate::session::handlers::streams::ReadError;
use crate::session::{Shard, parse_mark, record_read};
use crate::store::{MessageType, NewMessage, Page, StoreError, now_ms};

/// Who is calling: a backend holding the API key, a user holding a token, or nobody.
pub struct Caller {
    /// The user, when a token (or, with authentication off, a `user_id`) names one.
    pub identity: Option<Arc<Identity>>,
    /// Whether the caller holds the API key (backends read everything).
    pub admin: bool,
}

impl FromRequestParts<Arc<Node>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Self, ApiError> {
        let params: HashMap<String, String> =
            parts.uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
        let bearer = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(|s| s.trim().to_string())
            .or_else(|| params.get("token").cloned());
        if let Some(token) = bearer {
            if node.live().api.key.as_ref().is_some_and(|k| bool::from(k.as_bytes().ct_eq(token.as_bytes()))) {
                let _admin = Admin::from_request_parts(parts, node).await?;
                return Ok(Caller { identity: None, admin: true });
            }
            let verified = node
                .auth
                .verify(&token)
                .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "AUTHENTICATION_FAILED", e.to_string()))?;
            return Ok(Caller { identity: Some(verified.identity), admin: false });
        }
        // No credentials: where the operator opened keyless local admin, a direct local caller is
        // the backend; with authentication off on a node that proves no identities, a `user_id`
        // names the (unverified) user. A caller that claims a user is never taken for the backend,
        // even where the claim is not believed.
        let claimed = params.get("user_id").filter(|u| !u.is_empty());
        let user = claimed.filter(|_| node.auth.believes_claimed_ids(node.config.auth.mode));
        let admin = claimed.is_none() && super::keyless_local(node, parts);
        if !admin && node.config.auth.mode == AuthMode::Required {
            // As on the WebSocket endpoints: without a token, nothing.
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "AUTHENTICATION_FAILED",
                "send a user token (Authorization: Bearer <jwt>) or the API key",
            ));
        }
        Ok(Caller { identity: user.map(|u| Arc::new(Identity::unverified(u))), admin })
    }
}

impl Caller {
    async fn may_read(&self, node: &Node, room: &str) -> Result<(), ApiError> {
        if self.admin {
            return Ok(());
        }
        node.auth
            .check(self.identity.as_deref(), NameKind::Room, room, Action::Read)
            .await
            .map_err(|d| ApiError::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", d.reason))
    }
}

pub(crate) fn store_api_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Query(q) => ApiError::bad_request("INVALID_QUERY", q.to_string()),
        // Asking for encryption a node is not configured for is the request's problem: retrying
        // will not help, so not a 5xx.
        StoreError::Crypto(e @ crate::store::crypto::CryptoError::NoKey) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "ENCRYPTION_NOT_CONFIGURED", e.to_string())
        }
        other => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", other.to_string()),
    }
}

/// `?limit=&offset=` or `?before=`/`?after=` (cursor pagination).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Messages in a page, 1-500 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// Messages skipped from the newest.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 1000000)]
    offset: Option<String>,
    /// Only messages older than this id.
    #[param(value_type = Option<i64>, minimum = 1)]
    before: Option<String>,
    /// Only messages newer than this id.
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
}

fn number(name: &str, value: &Option<String>, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
    let Some(text) = value else { return Ok(None) };
    match text.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(ApiError::bad_request("INVALID_PAGINATION", format!("{name} must be an integer from {min} to {max}"))),
    }
}

/// `GET …/rooms/{room}/messages`.
#[utoipa::path(get, path = "/api/rooms/{room}/messages", tag = "history", security(("api_key" = []), ("x_api_key" = []), ("user_token" = [])),
    params(("room" = String, Path, description = "the room"), PageQuery),
    responses((status = 200, description = "a page of the room's messages", body = schema::RoomMessages)))]
pub async fn messages(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(room): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Response, ApiError> {
    super::valid_name("room", &room)?;
    caller.may_read(&node, &room).await?;
    let limit = number("limit", &query.limit, 1, 500)?.unwrap_or(50);
    let offset = number("offset", &query.offset, 0, 1_000_000)?;
    let before = number("before", &query.before, 1, i64::MAX)?;
    let after = number("after", &query.after, 0, i64::MAX)?;
    let page = match (offset, before, after) {
        (None, None, None) => Page::Offset { limit: limit + 1, offset: 0 },
        (Some(offset), None, None) => Page::Offset { limit: limit + 1, offset },
        (None, Some(id), None) => Page::Before { id, limit: limit + 1 },
        (None, None, Some(id)) => Page::After { id, limit: limit + 1 },
        _ => return Err(ApiError::bad_request("INVALID_PAGINATION", "use one of offset, before or after")),
    };
    let mut rows = node.store.history(&room, page).await.map_err(store_api_error)?;
    // One row more than asked tells whether there is more in the direction of travel.
    let has_more = rows.len() as i64 > limit;
    if has_more {
        match page {
            Page::After { .. } => {
                rows.pop();
            }
            _ => {
                rows.remove(0);
            }
        }
    }
    let messages: Vec<Value> = rows.iter().map(|m| m.to_json()).collect();
    Ok(ok(json!({
        "room": room,
        "room_name": room,
        "count": messages.len(),
        "has_more": has_more,
        "next_before": rows.first().map(|m| m.id),
        "next_after": rows.last().map(|m| m.id),
        "messages": messages,
    })))
}

/// `GET <mount>/rooms`: a user's rooms with unread counts and last message (the chat
/// document); with the API key instead, the active rooms with member counts.
#[utoipa::path(get, path = "/rooms", tag = "history", security(("api_key" = []), ("x_api_key" = []), ("user_token" = [])), params(super::admin::ListQuery),
    responses((status = 200, description = "the user's rooms (user token) or the active rooms (API key)", body = schema::Rooms)))]
pub async fn rooms(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Query(page): Query<super::admin::ListQuery>,
) -> Result<Response, ApiError> {
    match (&caller.identity, caller.admin) {
        (Some(user), _) => {
            let mut rooms = Vec::new();
            for summary in node.store.rooms_of(&user.id).await.map_err(store_api_error)? {
                if caller.may_read(&node, &summary.room).await.is_err() {
                    continue;
                }
                rooms.push(json!({
                    "room": summary.room,
                    "room_name": summary.room,
                    "room_id": summary.room,
                    "unread_count": summary.unread,
                    "last_read_id": summary.last_read_id,
                    "last_message": summary.last_message.map(|m| m.to_json()),
                }));
            }
            let (rooms, mut fields) = page.page(rooms);
            fields.insert("user_id".into(), json!(&*user.id));
            fields.insert("rooms".into(), rooms.into());
            Ok(ok(Value::Object(fields)))
        }
        (None, true) if node.config.api.bare_room_list => Ok(bare_room_list(&node, &page).await),
        (None, true) => Ok(super::admin::active_rooms(&node, &page).await),
        (None, false) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "AUTHENTICATION_FAILED",
            "send a user token (Authorization: Bearer <jwt>) or the API key",
        )),
    }
}

/// The active rooms as a bare list: users and sheets from presence (connections when presence is
/// off); events sent, last activity and users per hour as this node saw them.
async fn bare_room_list(node: &Node, page: &super::admin::ListQuery) -> Response {
    let mut counts: std::collections::BTreeMap<Arc<str>, usize> = std::collections::BTreeMap::new();
    for shard in node.hub.ask(|shard: &Rc<Shard>| shard.room_counts()).await {
        for (room, n) in shard {
            *counts.entry(room).or_default() += n;
        }
    }
    // The profile's shape is a bare array, so paging shows only in which rows it holds; the
    // per-room presence look-ups below run for that page alone.
    let (limit, offset) = page.bounds();
    let mut rooms = Vec::with_capacity(counts.len().min(limit));
    for (room, connections) in counts.into_iter().skip(offset).take(limit) {
        let (users, sheets) = if node.config.presence.enabled {
            let (members, sheets) = crate::presence::members(&node.presence, &room).await;
            (members.len(), sheets.len())
        } else {
            (connections, 0)
        };
        let activity = node.presence.activity.summary(&room, now_ms());
        rooms.push(json!({
            "room_id": &*room,
            "user_count": users,
            "active_sheets_count": sheets,
            "last_activity": activity.as_ref().map(|a| crate::protocol::outbound::rfc3339_ms(a.last_activity)),
            "messages_sent": activity.as_ref().map_or(0, |a| a.messages_sent),
            "avg_users_per_hour": activity.as_ref().map_or(0.0, |a| a.avg_users_per_hour),
        }));
    }
    axum::response::IntoResponse::into_response(axum::Json(Value::Array(rooms)))
}

/// `POST …/rooms/{room}/mark-read` with `{"message_ids":[…]}` or `{"up_to": id}`.
#[utoipa::path(post, path = "/rooms/{room}/mark-read", tag = "history", security(("user_token" = [])),
    params(("room" = String, Path, description = "the room")),
    request_body(content = Object, description = "`{\"message_ids\": [...]}` or `{\"up_to\": id}`"),
    responses((status = 200, description = "marked", body = schema::MarkedRead)))]
pub async fn mark_read(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(room): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(user) = caller.identity.clone() else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "AUTHENTICATION_FAILED",
            "marking read needs a user token",
        ));
    };
    let Value::Object(body) = parse_body::<Value>(&body)? else {
        return Err(ApiError::bad_request("INVALID_JSON", "the body must be a JSON object"));
    };
    let what = parse_mark(&body).map_err(|e| ApiError::bad_request("INVALID_MESSAGE", e))?;
    super::valid_name("room", &room)?;
    caller.may_read(&node, &room).await?;
    let receipt = record_read(&node, &room, &user.id, &what).await.map_err(store_api_error)?;
    Ok(ok(json!({ "room": room, "marked": receipt["message_ids"], "last_read_id": receipt["last_read_id"] })))
}

/// `?query=&room_name=&limit=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// The words to find.
    query: Option<String>,
    /// Same as `query`.
    q: Option<String>,
    /// Only in this room.
    room_name: Option<String>,
    /// Results, 1-100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
}

/// `GET …/search`: ranked by relevance, only from rooms the caller may read; encrypted messages
/// are never found.
#[utoipa::path(get, path = "/api/search", tag = "history", security(("api_key" = []), ("x_api_key" = []), ("user_token" = [])), params(SearchQuery),
    responses((status = 200, description = "messages from rooms the caller may read, most relevant first", body = schema::SearchResults)))]
pub async fn search(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Query(query): Query<SearchQuery>,
) -> Result<Response, ApiError> {
    let text = query.query.or(query.q).unwrap_or_default();
    let limit = number("limit", &query.limit, 1, 100)?.unwrap_or(20);
    if let Some(room) = &query.room_name {
        super::valid_name("room", room)?;
        caller.may_read(&node, room).await?;
    }
    // Over-fetch so that filtering out unreadable rooms still fills the page.
    let hits =
        node.store.search(&text, query.room_name.as_deref(), (limit * 4).min(400)).await.map_err(store_api_error)?;
    let mut decisions: HashMap<String, bool> = HashMap::new();
    let mut results = Vec::new();
    for hit in hits {
        let allowed = match decisions.get(&hit.message.room) {
            Some(allowed) => *allowed,
            None => {
                let allowed = caller.may_read(&node, &hit.message.room).await.is_ok();
                decisions.insert(hit.message.room.clone(), allowed);
                allowed
            }
        };
        if allowed {
            let mut item = hit.message.to_json();
            item["rank"] = json!(hit.rank);
            results.push(item);
            if results.len() as i64 == limit {
                break;
            }
        }
    }
    Ok(ok(json!({ "query": text, "count": results.len(), "results": results })))
}

/// `POST /api/rooms/{room}/messages`: a backend posts a message (a system notice by default)
/// through the same writer; answered once durable.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// The text.
    content: String,
    /// `system` (default), `text`, …
    #[serde(default)]
    message_type: Option<String>,
    /// The sender, if any.
    #[serde(default)]
    user_id: Option<super::publish::IdValue>,
    /// The sender's display name.
    #[serde(default)]
    username: Option<String>,
    /// A JSON object stored with the message.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// Store the content encrypted (`database.encryption_keys`).
    #[serde(default)]
    sensitive: bool,
    /// Also accepted as the `Idempotency-Key` header.
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// Handler for [`PostMessage`]. A retry with the same idempotency key (body field or
/// `Idempotency-Key` header; same sender and room) answers with the original message and
/// `"duplicate": true`, storing and delivering nothing.
#[utoipa::path(post, path = "/api/rooms/{room}/messages", tag = "history", security(("api_key" = []), ("x_api_key" = [])),
    params(("room" = String, Path, description = "the room"),
           ("Idempotency-Key" = Option<String>, Header, description = "as the body's `idempotency_key`")),
    request_body = PostMessage,
    responses((status = 201, description = "stored and delivered (or a duplicate of an earlier one)", body = schema::PostedMessage),
              (status = 413, description = "content exceeds database.max_content_size", body = schema::ApiErrorBody)))]
pub async fn post_message(
    State(node): State<Arc<Node>>,
    _admin: Admin,
    Path(room): Path<String>,
    headers: http::HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: PostMessage = parse_body(&body)?;
    let header_key = match headers.get("idempotency-key") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::bad_request("INVALID_MESSAGE", "the Idempotency-Key header must be text"))?
                .to_string(),
        ),
        None => None,
    };
    let idempotency_key = request.idempotency_key.clone().or(header_key);
    if let Some(key) = &idempotency_key {
        crate::store::check_idempotency_key(key).map_err(|e| ApiError::bad_request("INVALID_MESSAGE", e))?;
    }
    super::valid_name("room", &room)?;
    let kind_text = request.message_type.as_deref().unwrap_or("system");
    let kind = MessageType::parse(kind_text)
        .ok_or_else(|| ApiError::bad_request("INVALID_MESSAGE", format!("unknown message_type {kind_text:?}")))?;
    if request.content.len() > node.store.config.max_content_size {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "MESSAGE_TOO_LARGE",
            "content exceeds database.max_content_size",
        ));
    }
    if request.metadata.as_ref().is_some_and(|m| !m.is_object()) {
        return Err(ApiError::bad_request("INVALID_MESSAGE", "\"metadata\" must be an object"));
    }
    crate::store::check_storable("content", &request.content)
        .and_then(|()| request.username.as_deref().map_or(Ok(()), |u| crate::store::check_storable("username", u)))
        .and_then(|()| request.metadata.as_ref().map_or(Ok(()), |m| crate::store::check_storable_json("metadata", m)))
        .map_err(|e| ApiError::bad_request("INVALID_MESSAGE", e))?;
    let message = NewMessage {
        room: Arc::from(room.as_str()),
        user_id: request.user_id.map(super::publish::IdValue::into_string),
        user_name: request.username,
        message_type: kind,
        content: request.content,
        metadata: request.metadata,
        sensitive: request.sensitive,
        created_at: now_ms(),
        channel: None,
        idempotency_key,
    };
    let stored = store_one(&node, message).await?;
    if stored.duplicate {
        return Ok(super::created(json!({ "message": stored.to_json(), "duplicate": true })));
    }
    Ok(super::created(json!({ "message": stored.to_json() })))
}

/// Submits one message and waits until it is durable.
pub(crate) async fn store_one(node: &Node, message: NewMessage) -> Result<crate::store::StoredMessage, ApiError> {
    let ack = node.writer.submit(message).await.map_err(store_api_error)?;
    match ack.await {
        Ok(Ok(stored)) => Ok(stored),
        Ok(Err(e)) => Err(store_api_error(e)),
        Err(_) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "the writer stopped")),
    }
}

/// `?older_than=30d`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RetentionQuery {
    /// A duration (`30d`, `12h`) instead of the configured age.
    older_than: Option<String>,
}

/// `POST /api/retention/run[?older_than=…]`: applies retention now, with the configured age or
/// the one given.
#[utoipa::path(post, path = "/api/retention/run", tag = "history", security(("api_key" = []), ("x_api_key" = [])), params(RetentionQuery),
    responses((status = 200, description = "retention applied", body = schema::RetentionRun)))]
pub async fn run_retention(
    State(node): State<Arc<Node>>,
    admin: Admin,
    Query(query): Query<RetentionQuery>,
) -> Result<Response, ApiError> {
    let max_age = match &query.older_than {
        Some(text) => Some(
            humantime::parse_duration(text)
                .map_err(|e| ApiError::bad_request("INVALID_MESSAGE", format!("older_than: {e}")))?,
        ),
        None => None,
    };
    crate::audit::admin_action(&admin.peer, "retention", query.older_than.as_deref().unwrap_or("configured age"));
    let removed = crate::store::retention::run_once(&node.store, max_age).await.map_err(store_api_error)?;
    Ok(ok(json!({ "removed": removed, "mode": node.store.config.retention_mode })))
}

/// `?since=&epoch=&limit=` of a stream history read.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Only events after this position.
    #[param(value_type = Option<i64>, minimum = 0)]
    since: Option<String>,
    /// The epoch `since` belongs to.
    epoch: Option<String>,
    /// Most events returned.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100000)]
    limit: Option<String>,
}

/// `GET …/history/{channel|room}/{name}`: the recent events of a stream with their positions
/// (`since` + `epoch`: only those after a position, with `recovered`). Guarded like every read:
/// a channel needs the right to subscribe to it, a room the right to read it.
#[utoipa::path(get, path = "/api/history/{kind}/{name}", tag = "history", security(("api_key" = []), ("x_api_key" = []), ("user_token" = [])),
    params(("kind" = String, Path, description = "`channel` or `room`"), ("name" = String, Path, description = "the stream's name"), StreamQuery),
    responses((status = 200, description = "the stream's recent events", body = schema::StreamHistory),
              (status = 404, description = "unknown kind, or no `[[history]]` for the stream (NO_HISTORY)", body = schema::ApiErrorBody)))]
pub async fn stream_history(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path((kind, name)): Path<(String, String)>,
    Query(query): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let (kind, action) = match kind.as_str() {
        "channel" | "channels" => (NameKind::Channel, Action::Subscribe),
        "room" | "rooms" => (NameKind::Room, Action::Read),
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "use /history/channel/{name} or /history/room/{name}",
            ));
        }
    };
    super::valid_name(kind.as_str(), &name)?;
    if !caller.admin {
        node.auth
            .check(caller.identity.as_deref(), kind, &name, action)
            .await
            .map_err(|d| ApiError::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", d.reason))?;
    }
    let since =
        number("since", &query.since, 0, i64::MAX)?.map(|s| (s as u64, query.epoch.clone().unwrap_or_default()));
    let limit = number("limit", &query.limit, 1, 100_000)?.map(|l| l as usize);
    let body =
        crate::session::handlers::streams::read(&node, kind, &name, since, limit).await.map_err(|e| match e {
            ReadError::NoHistory(m) => ApiError::new(StatusCode::NOT_FOUND, "NO_HISTORY", m),
            ReadError::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", m),
        })?;
    Ok(ok(body))
}
