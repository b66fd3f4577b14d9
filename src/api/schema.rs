//! The shapes of the HTTP API's response bodies, for the OpenAPI document.
//!
//! Handlers build their bodies with `json!` (several shapes carry the same figure under the names
//! different compatibility profiles read), so these types describe them rather than produce them.
//! `tests/e2e/openapi.rs` keeps them honest: it validates real responses of a running node (some
//! thirty, successes and refusals, Herald's and the Pusher API's) against the schemas generated
//! from these types. Objects allow fields beyond those listed.

// The fields exist for the schemas derived from them; no code reads them.
#![allow(dead_code)]

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A refusal or failure: every 4xx and 5xx of Herald's own API.
#[derive(Serialize, ToSchema)]
pub struct ApiErrorBody {
    /// Always `false`.
    success: bool,
    /// What went wrong, for a person.
    error: String,
    /// Machine-readable code, e.g. `INVALID_JSON`, `AUTHENTICATION_FAILED`, `NOT_FOUND`.
    code: String,
}

/// `{"success":true}` and, when the broker was down, the warning that only this node's
/// connections were reached.
#[derive(Serialize, ToSchema)]
pub struct Published {
    /// Always `true`.
    success: bool,
    /// Present (true) when the broker was unavailable.
    local_only: Option<bool>,
    /// Present when `local_only` is.
    warning: Option<String>,
    /// `POST /api/broadcast`: the channels published to.
    channels: Option<Vec<String>>,
    /// `POST …/rooms/{room}/broadcast`: the room.
    room: Option<String>,
    /// `POST …/users/{user}/notify`: the user.
    user_id: Option<String>,
}

/// `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `success` (the compatibility profiles read it).
    status: String,
    /// `healthy`, `degraded` (a dependency is down, local traffic flows) or `unhealthy`.
    health_status: HealthStatus,
    /// This node's id.
    node: String,
    /// The figures.
    data: HealthData,
    /// RFC 3339.
    timestamp: String,
}

/// How well a node is.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Everything is up.
    Healthy,
    /// The broker or the database is down.
    Degraded,
    /// Shutting down (503).
    Unhealthy,
}

/// The body of `GET /health` under `data`.
#[derive(Serialize, ToSchema)]
pub struct HealthData {
    /// As `health_status` above.
    health_status: HealthStatus,
    /// 100, 50, 25 or 0.
    health_score: u32,
    /// Whether a Redis broker is configured and connected.
    redis_connected: bool,
    /// The broker.
    broker: Broker,
    /// The database.
    database: Database,
    /// Connection counts.
    connection_stats: ConnectionCounts,
    /// Seconds since start.
    uptime_seconds: u64,
}

/// The broker's state.
#[derive(Serialize, ToSchema)]
pub struct Broker {
    /// `local`, `redis` or `redis-cluster`.
    kind: String,
    /// Whether it moves events between nodes right now.
    connected: bool,
    /// Messages from Redis dropped because the node could not keep up.
    dropped: Option<u64>,
}

/// The database's state.
#[derive(Serialize, ToSchema)]
pub struct Database {
    /// `sqlite`, `postgres` or `none`.
    kind: String,
    /// Whether writes succeed.
    connected: bool,
    /// Messages waiting for the writer.
    queue_depth: u64,
}

/// Connection counts of `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct ConnectionCounts {
    /// Open connections.
    total_connections: u64,
    /// Distinct users with a connection.
    unique_users: u64,
    /// Rooms with a local member.
    total_rooms: u64,
}

/// `GET /livez`.
#[derive(Serialize, ToSchema)]
pub struct Live {
    /// `ok`.
    status: String,
}

/// `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    /// `ready` (200) or `not_ready` (503).
    status: String,
    /// Why not ready (503 only).
    reasons: Option<Vec<String>>,
}

/// The figures of `GET /api/stats` (also at the top level of the body).
#[derive(Serialize, ToSchema)]
pub struct Figures {
    /// Open connections.
    connected_clients: u64,
    /// Open connections.
    total_connections: u64,
    /// Distinct client ids.
    clients: u64,
    /// Connections with a user.
    authenticated_connections: u64,
    /// Distinct users.
    unique_users: u64,
    /// Channel subscriptions.
    total_channel_subscriptions: u64,
    /// Room memberships.
    total_room_subscriptions: u64,
    /// Channels with a local subscriber.
    channels_active: u64,
    /// Rooms with a local member.
    rooms_active: u64,
    /// Deliveries per second (last sample).
    messages_per_second: f64,
    /// Deliveries per second (last sample).
    deliveries_per_second: f64,
    /// Publishes per second.
    publishes_per_second: f64,
    /// Client messages per second.
    messages_in_per_second: f64,
    /// Seconds since start.
    uptime_seconds: u64,
    /// Whether a Redis broker is configured and connected.
    redis_connected: bool,
    /// The broker.
    broker: Broker,
    /// The database and its writer.
    database: Database,
    /// This node's id.
    node: String,
    /// Every counter of the node since start.
    #[schema(value_type = Object)]
    totals: Value,
}

/// `GET /api/stats`, `<mount>/stats` and `<mount>/connection-stats`.
#[derive(Serialize, ToSchema)]
pub struct Stats {
    /// Always `true`.
    success: bool,
    /// The figures (they are repeated at the top level).
    stats: Figures,
    /// RFC 3339.
    timestamp: String,
    /// Open connections.
    connected_clients: u64,
    /// Seconds since start.
    uptime_seconds: u64,
    /// With Redis: the connection's description.
    #[schema(value_type = Option<Object>)]
    redis: Option<Value>,
    /// With Redis: every live node's figures and their sums (null when the registry is unreadable).
    #[schema(value_type = Option<Object>, nullable)]
    cluster: Option<Value>,
}

/// `GET …/stats/detailed`.
#[derive(Serialize, ToSchema)]
pub struct DetailedStats {
    /// Always `true`.
    success: bool,
    /// The figures.
    stats: Figures,
    /// Per shard: `shard`, `connections`, `rooms`, `channels`.
    #[schema(value_type = Vec<Object>)]
    shards: Vec<Value>,
    /// The last minutes of one-second samples.
    #[schema(value_type = Vec<Object>)]
    history: Vec<Value>,
    /// RFC 3339.
    timestamp: String,
}

/// The fields of a paged listing.
#[derive(Serialize, ToSchema)]
pub struct Paging {
    /// Rows in this page.
    count: u64,
    /// Rows in all.
    total: u64,
    /// Rows skipped.
    offset: u64,
    /// Most rows in a page.
    limit: u64,
    /// The `offset` of the next page; null on the last.
    next_offset: Option<u64>,
}

/// One connection as operators see it.
#[derive(Serialize, ToSchema)]
pub struct Connection {
    /// Id for `DELETE …/connections/{id}`: `<node>-<number>`.
    connection_id: String,
    /// The client's own id.
    client_id: String,
    /// Authenticated user.
    user_id: Option<String>,
    /// Remote address.
    remote_addr: String,
    /// The endpoint path.
    path: String,
    /// RFC 3339 connect time.
    connected_at: String,
    /// Subscribed channels.
    channels: Vec<String>,
    /// Joined rooms.
    rooms: Vec<String>,
    /// The Pusher app's id, for a Pusher connection (whose channels and user are then the app's
    /// own names).
    #[serde(skip_serializing_if = "Option::is_none")]
    pusher_app: Option<String>,
    /// Frames waiting to be written.
    queued_frames: u64,
    /// Shard that owns it.
    shard: u64,
}

/// `GET …/connections`.
#[derive(Serialize, ToSchema)]
pub struct Connections {
    /// Always `true`.
    success: bool,
    /// Paging.
    #[serde(flatten)]
    paging: Paging,
    /// Oldest first.
    connections: Vec<Connection>,
}

/// One channel and its subscribers.
#[derive(Serialize, ToSchema)]
pub struct ChannelCount {
    /// Name (a Pusher app's channel by the name the app knows).
    channel: String,
    /// The Pusher app's id, for a channel of a Pusher app (absent for Herald's own channels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pusher_app: Option<String>,
    /// Subscribed connections.
    subscribers: u64,
}

/// `GET …/channels`.
#[derive(Serialize, ToSchema)]
pub struct Channels {
    /// Always `true`.
    success: bool,
    /// Paging.
    #[serde(flatten)]
    paging: Paging,
    /// Largest first.
    channels: Vec<ChannelCount>,
}

/// `GET …/rooms`: with a user's token, that user's rooms with unread counts and last message;
/// with the API key, the active rooms with member counts (or, with `api.bare_room_list`, a bare
/// array of rooms with activity figures).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Rooms {
    /// A page of rooms.
    Paged(RoomPage),
    /// `api.bare_room_list`.
    Bare(Vec<BareRoom>),
}

/// A page of rooms.
#[derive(Serialize, ToSchema)]
pub struct RoomPage {
    /// Always `true`.
    success: bool,
    /// Paging.
    #[serde(flatten)]
    paging: Paging,
    /// With a user token: the user.
    user_id: Option<String>,
    /// The rooms: `room`/`room_id` with `user_count` (API key) or `unread_count`, `last_read_id`
    /// and `last_message` (user token).
    #[schema(value_type = Vec<Object>)]
    rooms: Vec<Value>,
}

/// A room in the bare room list.
#[derive(Serialize, ToSchema)]
pub struct BareRoom {
    /// Name.
    room_id: String,
    /// Users present.
    user_count: u64,
    /// Sheets with someone on them.
    active_sheets_count: u64,
    /// RFC 3339, null when unknown.
    last_activity: Option<String>,
    /// Events sent in the room.
    messages_sent: u64,
    /// Average users per hour.
    avg_users_per_hour: f64,
}

/// A stored chat message.
#[derive(Serialize, ToSchema)]
pub struct StoredMessage {
    /// `chat_message`.
    #[serde(rename = "type")]
    kind: String,
    /// Id, increasing per database.
    id: i64,
    /// Same as `id`.
    message_id: i64,
    /// Room (or channel for ingested messages).
    room: String,
    /// Same as `room`.
    room_id: String,
    /// The text (null when encrypted and no key can open it).
    content: Option<String>,
    /// `text`, `system`, …
    message_type: String,
    /// Sender.
    user_id: Option<String>,
    /// Sender's display name.
    username: Option<String>,
    /// `{id, name}` of the sender.
    #[schema(value_type = Object)]
    sender: Value,
    /// Free-form object.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// Whether it is stored encrypted.
    encrypted: bool,
    /// RFC 3339.
    timestamp: String,
    /// Milliseconds since the epoch.
    created_at: i64,
}

/// `GET …/rooms/{room}/messages`.
#[derive(Serialize, ToSchema)]
pub struct RoomMessages {
    /// Always `true`.
    success: bool,
    /// The room.
    room: String,
    /// The room.
    room_name: String,
    /// Messages in this page.
    count: u64,
    /// More in the direction of travel.
    has_more: bool,
    /// `before` for the previous page.
    next_before: Option<i64>,
    /// `after` for the next page.
    next_after: Option<i64>,
    /// Oldest first.
    messages: Vec<StoredMessage>,
}

/// `POST /api/rooms/{room}/messages` (201).
#[derive(Serialize, ToSchema)]
pub struct PostedMessage {
    /// Always `true`.
    success: bool,
    /// The stored message.
    message: StoredMessage,
    /// True when an idempotency key matched an earlier message (nothing stored or delivered).
    duplicate: Option<bool>,
}

/// `POST …/rooms/{room}/mark-read`.
#[derive(Serialize, ToSchema)]
pub struct MarkedRead {
    /// Always `true`.
    success: bool,
    /// The room.
    room: String,
    /// Ids marked.
    #[schema(value_type = Vec<i64>)]
    marked: Value,
    /// The user's read position.
    last_read_id: Option<i64>,
}

/// `GET …/search`.
#[derive(Serialize, ToSchema)]
pub struct SearchResults {
    /// Always `true`.
    success: bool,
    /// The query.
    query: String,
    /// Results.
    count: u64,
    /// Messages with their `rank`, most relevant first.
    results: Vec<StoredMessage>,
}

/// `POST /api/retention/run`.
#[derive(Serialize, ToSchema)]
pub struct RetentionRun {
    /// Always `true`.
    success: bool,
    /// Rows removed (or blanked).
    removed: u64,
    /// `delete` or `redact`.
    mode: String,
}

/// `GET …/history/{kind}/{name}`: a stream's recent events with their positions.
#[derive(Serialize, ToSchema)]
pub struct StreamHistory {
    /// Always `true`.
    success: bool,
    /// The stream (`channel:<name>` or `room:<name>`).
    stream: String,
    /// The stream's epoch: positions are comparable only within one.
    epoch: String,
    /// The position of the newest event.
    seq: u64,
    /// With `since`: whether every event after it was still held.
    recovered: Option<bool>,
    /// The events, oldest first, each with its position.
    #[schema(value_type = Vec<Object>)]
    events: Vec<Value>,
}

/// `GET …/users/{user}/presence`.
#[derive(Serialize, ToSchema)]
pub struct UserPresence {
    /// Always `true`.
    success: bool,
    /// The user.
    user_id: String,
    /// `online`, `away`, `busy`, `offline`, …
    status: String,
    /// Whether the user has a connection.
    online: bool,
    /// The user's connections in the cluster.
    connections: u64,
    /// Rooms the user is in.
    #[schema(value_type = Vec<Object>)]
    rooms: Vec<Value>,
    /// RFC 3339, null when never seen.
    last_seen: Option<String>,
}

/// `GET …/rooms/{room}/presence`.
#[derive(Serialize, ToSchema)]
pub struct RoomPresence {
    /// Always `true`.
    success: bool,
    /// Paging of `users`.
    #[serde(flatten)]
    paging: Paging,
    /// The room.
    room: String,
    /// The room.
    room_id: String,
    /// Users present in all.
    total_users: u64,
    /// The page of users with status and cursor.
    #[schema(value_type = Vec<Object>)]
    users: Vec<Value>,
    /// Sheets someone is on.
    active_sheets: Vec<String>,
}

/// `GET …/users/{user}/notifications`.
#[derive(Serialize, ToSchema)]
pub struct Notifications {
    /// Always `true`.
    success: bool,
    /// The user.
    user_id: String,
    /// Notifications returned.
    count: u64,
    /// Newest first, each with `read` and `read_at`.
    #[schema(value_type = Vec<Object>)]
    notifications: Vec<Value>,
}

/// `POST …/broadcast/notification` (201, or 202 when only this node's connections were reached).
#[derive(Serialize, ToSchema)]
pub struct NotificationSent {
    /// Always `true`.
    success: bool,
    /// The notification's id.
    notification_id: String,
    /// Users it was stored for (empty: sent to every connection, not stored).
    user_ids: Vec<String>,
    /// Whether it was stored.
    stored: bool,
    /// Whether only this node's connections were reached.
    local_only: bool,
}

/// `POST …/shutdown`.
#[derive(Serialize, ToSchema)]
pub struct ShuttingDown {
    /// Always `true`.
    success: bool,
    /// `shutting down`.
    message: String,
}

/// `DELETE …/connections/{id}`.
#[derive(Serialize, ToSchema)]
pub struct Disconnected {
    /// Always `true`.
    success: bool,
    /// The connection.
    connection_id: String,
    /// The node that holds it, when it is another one.
    node: Option<String>,
}

/// `DELETE …/users/{user}/connections`.
#[derive(Serialize, ToSchema)]
pub struct UserDisconnected {
    /// Always `true`.
    success: bool,
    /// The user.
    user_id: String,
    /// Connections of the user closed on this node.
    disconnected: u64,
    /// The other live nodes asked to close theirs (through Redis).
    nodes_asked: Vec<String>,
}

/// `POST /messages` (201; 202 `queued` for a batch answered before it is durable).
#[derive(Serialize, ToSchema)]
pub struct Ingested {
    /// Always `true`.
    success: bool,
    /// One message: its id.
    id: Option<i64>,
    /// One message: the stored message.
    message: Option<StoredMessage>,
    /// A batch: how many.
    count: Option<u64>,
    /// A batch: their ids.
    ids: Option<Vec<i64>>,
    /// `queued` (202).
    status: Option<String>,
}

/// `GET /messages`.
#[derive(Serialize, ToSchema)]
pub struct RecentMessages {
    /// Always `true`.
    success: bool,
    /// Messages returned.
    count: u64,
    /// Newest last.
    messages: Vec<StoredMessage>,
}

/// An error of the Pusher HTTP API.
#[derive(Serialize, ToSchema)]
pub struct PusherError {
    /// What went wrong.
    error: String,
}

/// `GET /apps/{app_id}/channels`.
#[derive(Serialize, ToSchema)]
pub struct PusherChannels {
    /// Channel name → `{user_count?, subscription_count?}` as asked with `info`.
    #[schema(value_type = Object)]
    channels: Value,
}

/// `GET /apps/{app_id}/channels/{channel}`.
#[derive(Serialize, ToSchema)]
pub struct PusherChannel {
    /// Whether anyone is subscribed.
    occupied: bool,
    /// Presence channels, with `info=user_count`.
    user_count: Option<u64>,
    /// With `info=subscription_count`.
    subscription_count: Option<u64>,
}

/// A presence channel's member.
#[derive(Serialize, ToSchema)]
pub struct PusherUser {
    /// The user id.
    id: String,
}

/// `GET /apps/{app_id}/channels/{channel}/users`.
#[derive(Serialize, ToSchema)]
pub struct PusherUsers {
    /// One per user id.
    users: Vec<PusherUser>,
}

/// `POST /apps/{app_id}/events` and `batch_events`: `{}`, or with `info` the channels' figures.
#[derive(Serialize, ToSchema)]
pub struct PusherPublished {
    /// `events` with `info`: channel name → figures.
    #[schema(value_type = Option<Object>)]
    channels: Option<Value>,
    /// `batch_events` with `info`: one object per event.
    #[schema(value_type = Option<Vec<Object>>)]
    batch: Option<Vec<Value>>,
}
