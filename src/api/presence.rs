//! Presence of rooms and users, and notifications for users: stored, filtered on delivery and
//! replayed to a user who was away.

use crate::api::schema;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::history::store_api_error;
use super::publish::{IdValue, publish_error};
use super::{Admin, ApiError, created, ok, parse_body};
use crate::hub::{Event, Route, Target};
use crate::node::Node;
use crate::session::handlers::notifications::{notification_event, tags_of};
use crate::store::now_ms;

/// `GET {prefix}/rooms/{room}/presence?limit=&offset=`: who is in the room across the cluster,
/// a page of users at a time (`total_users` counts them all).
#[utoipa::path(get, path = "/rooms/{room}/presence", tag = "presence", security(("api_key" = []), ("x_api_key" = [])),
    params(("room" = String, Path, description = "the room"), super::admin::ListQuery),
    responses((status = 200, description = "who is in the room", body = schema::RoomPresence)))]
pub async fn room(
    State(node): State<Arc<Node>>,
    _admin: Admin,
    Path(room): Path<String>,
    Query(page): Query<super::admin::ListQuery>,
) -> Result<Response, ApiError> {
    super::valid_name("room", &room)?;
    let (users, sheets) = crate::presence::members(&node.presence, &room).await;
    let total = users.len();
    let (users, mut fields) = page.page(users);
    fields.insert("room".into(), json!(room));
    fields.insert("room_id".into(), json!(room));
    fields.insert("total_users".into(), total.into());
    fields.insert("users".into(), json!(users));
    fields.insert("active_sheets".into(), json!(sheets));
    Ok(ok(Value::Object(fields)))
}

/// `GET {prefix}/users/{user}/presence`: a user's status, connections and rooms.
#[utoipa::path(get, path = "/users/{user}/presence", tag = "presence", security(("api_key" = []), ("x_api_key" = [])),
    params(("user" = String, Path, description = "the user")),
    responses((status = 200, description = "the user's status and rooms", body = schema::UserPresence)))]
pub async fn user(
    State(node): State<Arc<Node>>,
    _admin: Admin,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    super::valid_name("user", &user)?;
    Ok(ok(crate::presence::user_presence(&node.presence, &user).await))
}

/// Query of the notification list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only unread ones.
    #[serde(default)]
    pub unread_only: bool,
    /// At most this many (1-1000, default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// `GET {prefix}/users/{user}/notifications?unread_only=true&limit=50`, newest first.
#[utoipa::path(get, path = "/users/{user}/notifications", tag = "presence", security(("api_key" = []), ("x_api_key" = [])),
    params(("user" = String, Path, description = "the user"), ListQuery),
    responses((status = 200, description = "the user's notifications", body = schema::Notifications)))]
pub async fn list(
    State(node): State<Arc<Node>>,
    _admin: Admin,
    Path(user): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    super::valid_name("user", &user)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("INVALID_QUERY", "limit must be between 1 and 1000"));
    }
    let rows = node.store.notifications(&user, query.unread_only, limit).await.map_err(store_api_error)?;
    let notifications: Vec<Value> = rows
        .iter()
        .map(|row| {
            let mut n = row.json();
            if let Some(map) = n.as_object_mut() {
                map.insert("read".into(), row.read_at.is_some().into());
                map.insert("read_at".into(), row.read_at.map(crate::protocol::outbound::rfc3339_ms).into());
            }
            n
        })
        .collect();
    Ok(ok(json!({ "user_id": user, "count": notifications.len(), "notifications": notifications })))
}

/// Query of `broadcast/notification`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BroadcastQuery {
    /// `event_type` of the `notification_event` (default `notification_created`).
    pub event_type: Option<String>,
}

/// `POST {prefix}/broadcast/notification?event_type=notification_created` with
/// `{"user_id":…,"title":…,"message":…,"category":…,"priority":…,"module_name":…}`
/// (or `user_ids: […]`): stored for each user, then delivered as `notification_event` to their
/// connections whose `subscribe_notifications` filter lets it through. Without a user it goes,
/// unstored, to every connection.
#[utoipa::path(post, path = "/broadcast/notification", tag = "presence", security(("api_key" = []), ("x_api_key" = [])),
    operation_id = "broadcast_notification", params(BroadcastQuery),
    request_body(content = Object, description = "the notification; `user_id`/`user_ids` store it for those users, none sends it to everyone"),
    responses((status = 201, description = "sent (and stored for the users named)", body = schema::NotificationSent),
              (status = 202, description = "the broker was down: only this node's connections were reached", body = schema::NotificationSent)))]
pub async fn broadcast(
    State(node): State<Arc<Node>>,
    _admin: Admin,
    Query(query): Query<BroadcastQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Value::Object(mut body) = parse_body::<Value>(&body)? else {
        return Err(ApiError::bad_request("INVALID_EVENT", "the notification must be a JSON object"));
    };
    let event_type = query.event_type.unwrap_or_else(|| "notification_created".into());
    if event_type.is_empty() || event_type.len() > 100 {
        return Err(ApiError::bad_request("INVALID_QUERY", "event_type must be 1-100 characters"));
    }
    let users = users_of(&mut body)?;
    let id = match body.remove("id") {
        None | Some(Value::Null) => format!("notif_{:032x}", rand::random::<u128>()),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 200 => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(ApiError::bad_request("INVALID_EVENT", "id must be a string of 1-200 characters")),
    };
    for field in ["category", "priority", "module_name"] {
        if body.get(field).is_some_and(|v| !v.is_string() && !v.is_null()) {
            return Err(ApiError::bad_request("INVALID_EVENT", format!("{field} must be a string")));
        }
    }
    crate::store::check_storable_json("notification", &Value::Object(body.clone()))
        .map_err(|e| ApiError::bad_request("INVALID_EVENT", e))?;
    let at = now_ms();
    let mut notification = Map::new();
    notification.insert("id".into(), id.clone().into());
    notification.extend(body);
    notification.insert("created_at".into(), crate::protocol::outbound::rfc3339_ms(at).into());
    let notification = Value::Object(notification);
    let tags = Some(Arc::new(tags_of(&notification)));
    let mut local_only = false;
    if users.is_empty() {
        let payload = Bytes::from(notification_event(&event_type, "", &notification).to_string());
        let target = Target { broadcast: true, ..Target::default() };
        let published = node
            .publisher()
            .publish_event(Event::tagged(target, payload, None, Route::Full, tags.clone()))
            .await
            .map_err(publish_error)?;
        local_only |= published == crate::broker::Published::LocalOnly;
    }
    for user in &users {
        node.store.add_notification(user, &id, &notification, at).await.map_err(store_api_error)?;
        let payload = Bytes::from(notification_event(&event_type, user, &notification).to_string());
        let target = Target { user: Some(Arc::from(user.as_str())), ..Target::default() };
        let event = Event::tagged(target, payload, None, Route::Full, tags.clone());
        let published = node.publisher().publish_event(event).await.map_err(publish_error)?;
        local_only |= published == crate::broker::Published::LocalOnly;
    }
    let mut response = created(json!({
        "notification_id": id,
        "user_ids": users,
        "stored": !users.is_empty(),
        "local_only": local_only,
    }));
    if local_only {
        *response.status_mut() = StatusCode::ACCEPTED;
    }
    Ok(response)
}

/// Takes `user_id` / `user_ids` out of the body, validated.
fn users_of(body: &mut Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let mut users = Vec::new();
    let bad = |what: &str| ApiError::bad_request("INVALID_EVENT", format!("{what} must be a string or a number"));
    if let Some(one) = body.remove("user_id").filter(|v| !v.is_null()) {
        users.push(serde_json::from_value::<IdValue>(one).map_err(|_| bad("user_id"))?.into_string());
    }
    match body.remove("user_ids") {
        None | Some(Value::Null) => {}
        Some(Value::Array(many)) => {
            for one in many {
                users.push(serde_json::from_value::<IdValue>(one).map_err(|_| bad("user_ids[]"))?.into_string());
            }
        }
        Some(_) => return Err(ApiError::bad_request("INVALID_EVENT", "user_ids must be a list")),
    }
    for user in &users {
        super::valid_name("user", user)?;
    }
    users.sort();
    users.dedup();
    Ok(users)
}
