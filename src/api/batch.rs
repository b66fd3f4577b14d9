//! `POST /api/publish/batch`: many publishes, each with its own target, in one request.
//!
//! Each item is checked and prepared exactly as a single `POST /api/publish` would be
//! ([`Publisher::prepare`](crate::publish::Publisher::prepare): names, channel rules, shape), serialized once, and every valid item is
//! handed to the broker in one call (one round trip to Redis). An invalid item is reported with
//! the API's error code and does not stop the others. An item may carry an idempotency key: a
//! key seen within `api.idempotency_window` is answered `duplicate` and publishes nothing, so a
//! backend can retry a whole batch after a timeout without delivering (or appending to a
//! stream's history) twice.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::publish::{IdValue, publish_error};
use super::{Admin, ApiError};
use crate::broker::Published;
use crate::hub::{Event, Target};
use crate::node::Node;

/// Default most events in one batch (`api.max_batch_items`).
pub const DEFAULT_MAX_ITEMS: usize = 1000;
/// Default largest batch body in bytes (`api.max_batch_bytes`).
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
/// Default time an idempotency key is remembered (`api.idempotency_window`).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// Most idempotency keys remembered at once; past it the oldest are forgotten early, so a flood
/// of keys costs bounded memory (the window shortens instead).
const MAX_KEYS: usize = 200_000;
/// Independent locks for the remembered keys, so concurrent batches rarely wait on each other.
const KEY_SHARDS: usize = 16;

/// The request body: `{"items":[…]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest<'a> {
    /// Each item is parsed on its own, so one malformed item is that item's error.
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
}

/// One item as the route reads it: names borrowed from the body where they hold no escapes, the
/// event left as text for [`Publisher::prepare_raw`](crate::publish::Publisher::prepare_raw). [`BatchItem`] describes the same shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem<'a> {
    #[serde(borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow)]
    room: Option<Cow<'a, str>>,
    user_id: Option<IdValue>,
    user_ids: Option<Vec<IdValue>>,
    #[serde(default)]
    broadcast: bool,
    #[serde(borrow)]
    event: &'a RawValue,
    idempotency_key: Option<String>,
}

/// The request body as the OpenAPI document describes it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// The publishes, in order.
    pub items: Vec<BatchItem>,
}

/// One publish of a batch.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    /// Channel whose subscribers receive the event.
    pub channel: Option<String>,
    /// Room whose members receive it.
    pub room: Option<String>,
    /// User whose connections receive it.
    pub user_id: Option<IdValue>,
    /// Several users at once: the same event (serialized once) to each of them. Goes alone,
    /// without channel, room, user_id or broadcast.
    pub user_ids: Option<Vec<IdValue>>,
    /// Every connection receives it.
    #[serde(default)]
    pub broadcast: bool,
    /// The event, a JSON object delivered as is (plus a default `type` if the channel has one).
    #[schema(value_type = Object)]
    pub event: Value,
    /// A key seen within `api.idempotency_window` makes the item a duplicate that publishes
    /// nothing (1-200 characters, no control characters).
    pub idempotency_key: Option<String>,
}

/// The reply: each item's outcome.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct BatchReply {
    /// False when any item was refused.
    pub success: bool,
    /// Items published.
    pub published: usize,
    /// Items whose idempotency key was seen before.
    pub duplicates: usize,
    /// Items refused.
    pub failed: usize,
    /// One per item, in order.
    pub results: Vec<ItemResult>,
    /// Present (true) when the broker was unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_only: Option<bool>,
    /// Present when `local_only` is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// One item's outcome.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ItemResult {
    /// Its position in `items`.
    pub index: usize,
    /// `queued` (handed to every node), `local_only` (the broker was down: this node's
    /// connections only), `duplicate` or `error`.
    pub status: &'static str,
    /// Events it became (more than one with `user_ids`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<usize>,
    /// The error code, for `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// What was wrong, for `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What became of one item.
enum Outcome {
    /// Its events, handed to the broker with the batch's other valid items.
    Valid { events: Vec<Arc<Event>>, key: Option<String> },
    /// Its idempotency key was seen within the window: nothing published.
    Duplicate,
    /// Refused: status, code, message.
    Failed(ApiError),
}

/// The idempotency keys of recent batch items, remembered for a window.
pub struct RecentKeys {
    shards: Box<[Mutex<KeyShard>]>,
    /// How long a key is remembered.
    pub window: Duration,
    hasher: std::collections::hash_map::RandomState,
}

#[derive(Default)]
struct KeyShard {
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl RecentKeys {
    /// Keys are remembered for `window`.
    pub fn new(window: Duration) -> RecentKeys {
        RecentKeys {
            shards: (0..KEY_SHARDS).map(|_| Mutex::new(KeyShard::default())).collect(),
            window,
            hasher: Default::default(),
        }
    }

    /// Records `key` and returns true when it was not seen within the window.
    pub fn claim(&self, key: &str, now: Instant) -> bool {
        let mut shard = self.shards[(self.hasher.hash_one(key) as usize) % KEY_SHARDS].lock();
        let shard = &mut *shard;
        while let Some((at, _)) = shard.order.front() {
            let expired = now.saturating_duration_since(*at) >= self.window;
            if !expired && shard.order.len() < MAX_KEYS / KEY_SHARDS {
                break;
            }
            if let Some((at, old)) = shard.order.pop_front() {
                // A key claimed again later has a newer entry; only its own entry removes it.
                if shard.seen.get(&old) == Some(&at) {
                    shard.seen.remove(&old);
                }
            }
        }
        if shard.seen.contains_key(key) {
            return false;
        }
        shard.seen.insert(key.to_string(), now);
        shard.order.push_back((now, key.to_string()));
        true
    }
}

/// The limits of the batch route.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most events in one batch.
    pub max_items: usize,
    /// Largest body.
    pub max_bytes: usize,
}

impl BatchLimits {
    /// From `api.max_batch_items` and `api.max_batch_bytes`.
    pub fn of(node: &Node) -> BatchLimits {
        BatchLimits {
            max_items: node.config.api.max_batch_items.unwrap_or(DEFAULT_MAX_ITEMS),
            max_bytes: node.config.api.max_batch_bytes.unwrap_or(DEFAULT_MAX_BYTES),
        }
    }
}

/// The state of the route: its limits and the remembered keys.
pub struct BatchState {
    limits: BatchLimits,
    keys: RecentKeys,
}

impl BatchState {
    /// For `node`'s configuration.
    pub fn new(node: &Node) -> Arc<BatchState> {
        let window = node.config.api.idempotency_window.unwrap_or(DEFAULT_WINDOW);
        Arc::new(BatchState { limits: BatchLimits::of(node), keys: RecentKeys::new(window) })
    }
}

fn too_large(message: String) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "BATCH_TOO_LARGE", message)
}

/// Publishes a batch and reports each item: `{"success", "published", "duplicates", "failed",
/// "results":[{"index", "status": "queued"|"local_only"|"duplicate"|"error", "code"?, "error"?}]}`.
#[utoipa::path(post, path = "/api/publish/batch", tag = "publish", security(("api_key" = []), ("x_api_key" = [])),
    request_body = BatchBody,
    responses((status = 200, description = "each item's outcome; success is false when any item was refused", body = BatchReply),
              (status = 400, description = "INVALID_JSON, INVALID_BATCH (no items)", body = crate::api::schema::ApiErrorBody),
              (status = 413, description = "BATCH_TOO_LARGE: more than api.max_batch_items events or api.max_batch_bytes bytes", body = crate::api::schema::ApiErrorBody)))]
pub async fn publish_batch(
    State(node): State<Arc<Node>>,
    Extension(state): Extension<Arc<BatchState>>,
    _admin: Admin,
    body: Bytes,
) -> Result<Response, ApiError> {
    let limits = state.limits;
    if body.len() > limits.max_bytes {
        return Err(too_large(format!(
            "the batch is {} bytes; api.max_batch_bytes allows {}",
            body.len(),
            limits.max_bytes
        )));
    }
    if body.is_empty() {
        return Err(ApiError::bad_request("INVALID_JSON", "the request body is empty; send {\"items\":[…]}"));
    }
    let request: BatchRequest<'_> = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("INVALID_JSON", format!("invalid request body: {e}")))?;
    if request.items.is_empty() {
        return Err(ApiError::bad_request("INVALID_BATCH", "\"items\" must hold at least one publish"));
    }
    if request.items.len() > limits.max_items {
        return Err(too_large(format!(
            "the batch holds {} items; api.max_batch_items allows {}",
            request.items.len(),
            limits.max_items
        )));
    }
    let mut outcomes = Vec::with_capacity(request.items.len());
    let mut prepared_events = 0;
    let now = Instant::now();
    for raw in &request.items {
        let outcome = match prepare_item(&node, raw.get(), limits.max_items.saturating_sub(prepared_events)) {
            Ok((key, prepared)) => match key {
                Some(key) if !state.keys.claim(&key, now) => Outcome::Duplicate,
                key => {
                    prepared_events += prepared.len();
                    Outcome::Valid { events: prepared, key }
                }
            },
            Err(e) => {
                node.stats.node.publish_errors.fetch_add(1, Ordering::Relaxed);
                Outcome::Failed(e)
            }
        };
        outcomes.push(outcome);
    }
    claim_in_redis(&node, state.keys.window, &mut outcomes).await;
    let mut events: Vec<Arc<Event>> = Vec::with_capacity(prepared_events);
    for outcome in &mut outcomes {
        if let Outcome::Valid { events: prepared, .. } = outcome {
            events.extend(prepared.iter().cloned());
        }
    }
    let published = node.publisher().publish_events(events).await;
    let status = match published {
        Published::Everywhere => "queued",
        Published::LocalOnly => "local_only",
    };
    let (mut ok, mut duplicates, mut failed) = (0usize, 0usize, 0usize);
    let results: Vec<ItemResult> = outcomes
        .into_iter()
        .enumerate()
        .map(|(index, outcome)| {
            let mut result = ItemResult { index, status, events: None, code: None, error: None };
            match outcome {
                Outcome::Valid { events, .. } => {
                    ok += 1;
                    result.events = Some(events.len());
                }
                Outcome::Duplicate => {
                    duplicates += 1;
                    result.status = "duplicate";
                }
                Outcome::Failed(e) => {
                    failed += 1;
                    (result.status, result.code, result.error) = ("error", Some(e.code), Some(e.message));
                }
            }
            result
        })
        .collect();
    let local = published == Published::LocalOnly;
    let reply = BatchReply {
        success: failed == 0,
        published: ok,
        duplicates,
        failed,
        results,
        local_only: local.then_some(true),
        warning: local.then(|| "broker unavailable: delivered to this node's connections only".to_string()),
    };
    Ok(axum::Json(reply).into_response())
}

/// With Redis, a key is also claimed cluster-wide (`SET <prefix>:idem:<key> NX PX window`, one
/// pipeline for the batch), so a retry sent to another node is a duplicate too. When Redis does
/// not answer, this node's memory of keys is all there is; the publish is not held back for it.
async fn claim_in_redis(node: &Node, window: Duration, outcomes: &mut [Outcome]) {
    let Some(redis) = node.broker.shared_state() else {
        return;
    };
    let keyed: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| matches!(o, Outcome::Valid { key: Some(_), .. }).then_some(i))
        .collect();
    if keyed.is_empty() {
        return;
    }
    let mut pipe = redis::pipe();
    let prefix = redis.key_prefix();
    let millis = window.as_millis().max(1) as u64;
    for &i in &keyed {
        if let Outcome::Valid { key: Some(key), .. } = &outcomes[i] {
            pipe.cmd("SET").arg(format!("{prefix}:idem:{key}")).arg(1).arg("NX").arg("PX").arg(millis);
        }
    }
    match redis.pipeline_as::<Vec<Option<String>>>(&pipe).await {
        Ok(replies) => {
            for (i, reply) in keyed.into_iter().zip(replies) {
                if reply.is_none() {
                    outcomes[i] = Outcome::Duplicate;
                }
            }
        }
        Err(e) => tracing::debug!("idempotency keys not claimed in Redis: {e}"),
    }
}

/// Parses and prepares one item: its idempotency key and its events (one, or one per user of
/// `user_ids`, all sharing one serialized payload and one frame). `room_left` bounds `user_ids`.
fn prepare_item(node: &Node, raw: &str, room_left: usize) -> Result<(Option<String>, Vec<Arc<Event>>), ApiError> {
    let item: RawItem<'_> = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad_request("INVALID_JSON", format!("invalid batch item: {e}")))?;
    if let Some(key) = &item.idempotency_key {
        crate::store::check_idempotency_key(key).map_err(|e| ApiError::bad_request("INVALID_MESSAGE", e))?;
    }
    let Some(users) = item.user_ids else {
        let target = Target {
            channel: item.channel.as_deref().map(Arc::from),
            room: item.room.as_deref().map(Arc::from),
            user: item.user_id.map(|u| Arc::from(u.into_string())),
            broadcast: item.broadcast,
        };
        let (target, payload) =
            node.publisher().prepare_raw(target, item.event).map_err(|e| publish_error(e.into()))?;
        return Ok((item.idempotency_key, vec![Event::new(target, payload)]));
    };
    if item.channel.is_some() || item.room.is_some() || item.user_id.is_some() || item.broadcast {
        return Err(ApiError::bad_request(
            "INVALID_BATCH",
            "\"user_ids\" goes alone: publish to channels, rooms or a user in items of their own",
        ));
    }
    if users.is_empty() {
        return Err(ApiError::bad_request("NO_TARGET", "\"user_ids\" must name at least one user"));
    }
    if users.len() > room_left {
        return Err(too_large("\"user_ids\" would take the batch past api.max_batch_items events".into()));
    }
    let mut users = users.into_iter().map(|u| Arc::<str>::from(u.into_string()));
    let first = users.next().map(|user| Target { user: Some(user), ..Target::default() }).unwrap_or_default();
    let (_, payload) = node.publisher().prepare_raw(first.clone(), item.event).map_err(|e| publish_error(e.into()))?;
    let mut events = vec![Event::new(first, payload.clone())];
    for user in users {
        crate::protocol::validate_name("user", &user).map_err(|e| ApiError::bad_request("INVALID_NAME", e.message))?;
        events.push(Event::sharing(Target { user: Some(user), ..Target::default() }, &events[0]));
    }
    Ok((item.idempotency_key, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_a_duplicate_within_the_window_only() {
        let keys = RecentKeys::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(keys.claim("a", t0));
        assert!(!keys.claim("a", t0 + Duration::from_secs(59)));
        assert!(keys.claim("b", t0));
        assert!(keys.claim("a", t0 + Duration::from_secs(61)));
    }

    #[test]
    fn memory_is_bounded_by_forgetting_the_oldest() {
        let keys = RecentKeys::new(Duration::from_secs(3600));
        let now = Instant::now();
        for i in 0..MAX_KEYS + 1000 {
            keys.claim(&format!("k{i}"), now);
        }
        let held: usize = keys.shards.iter().map(|s| s.lock().seen.len()).sum();
        assert!(held <= MAX_KEYS, "{held} keys held");
    }
}
