//! Presence: who is in which room, with what status and cursor, on every node.
//!
//! Each node keeps the presence of its own connections in memory (authoritative for this run of
//! the node) and, with Redis, mirrors it into two hashes whose fields belong to one node
//! incarnation each: `<prefix>:pr:room:<room>` (`<user> <incarnation>` → the user's presence in the
//! room as seen from that node) and `<prefix>:pr:user:<user>` (`<incarnation>` → connections,
//! status, rooms). Only the owning node writes a field, through one mirror task that always writes
//! the current value, so concurrent changes cannot land out of order. Readers merge the fields of
//! live incarnations (the node registry says which). A node that dies stops being live; every node
//! sweeps the rooms its own clients are in, removes the dead node's fields and announces the
//! departures to its own clients, so each client hears of it once.

pub mod activity;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::broker::keys;
use crate::broker::redis::RedisBroker;
use crate::config::PresenceConfig;
use crate::hub::{ConnId, Event, Target};
use crate::protocol::outbound;
use crate::store::now_ms;

/// How often a node sweeps for the presence of dead nodes.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A user's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Connected and active.
    Online,
    /// Connected, away.
    Away,
    /// Connected, busy.
    Busy,
    /// No connection anywhere.
    Offline,
}

impl Status {
    /// Parses a client's `status_update` (offline cannot be chosen while connected).
    pub fn parse_chosen(text: &str) -> Option<Status> {
        match text {
            "online" => Some(Status::Online),
            "away" => Some(Status::Away),
            "busy" => Some(Status::Busy),
            _ => None,
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::Busy => "busy",
            Status::Offline => "offline",
        }
    }
}

/// A user as `room_state` and the API show them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// User id.
    pub user_id: String,
    /// Display name.
    pub username: Option<String>,
    /// E-mail.
    pub email: Option<String>,
    /// The room.
    pub room: String,
    /// Status.
    pub status: Status,
    /// Last cursor position in the room.
    pub cursor: Option<Value>,
    /// RFC 3339 time the user was last active here.
    pub last_seen: String,
}

/// One node's record of a user in a room (mirrored to Redis as it is).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RoomRecord {
    connections: u32,
    username: Option<String>,
    email: Option<String>,
    cursor: Option<Value>,
    last_seen: i64,
}

/// One node's record of a user.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UserRecord {
    connections: u32,
    status: Option<Status>,
    status_at: i64,
    rooms: HashMap<String, u32>,
    last_seen: i64,
}

#[derive(Default)]
struct Local {
    /// room → user → record.
    rooms: HashMap<Arc<str>, HashMap<Arc<str>, RoomRecord>>,
    users: HashMap<Arc<str>, UserRecord>,
    /// room → sheets edited there.
    sheets: HashMap<Arc<str>, HashSet<String>>,
}

/// A field changed; the mirror task writes its current value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Dirty {
    Room(Arc<str>, Arc<str>),
    User(Arc<str>),
}

/// Who a connection is, for presence.
#[derive(Debug, Clone)]
pub struct Who {
    /// User id.
    pub user_id: Arc<str>,
    /// Display name.
    pub username: Option<String>,
    /// E-mail.
    pub email: Option<String>,
}

/// The presence service of a node.
pub struct Presence {
    /// Per-room activity for the bare rooms list.
    pub activity: activity::RoomActivity,
    local: Mutex<Local>,
    dirty: mpsc::UnboundedSender<Dirty>,
    dirty_rx: Mutex<Option<mpsc::UnboundedReceiver<Dirty>>>,
    /// The Redis broker, when presence is mirrored for a cluster.
    cluster: Option<Arc<RedisBroker>>,
    /// `[presence]`.
    config: PresenceConfig,
    /// `api.bare_room_list`: count joins for the bare rooms list.
    bare_room_list: bool,
    /// `redis.node_timeout`: how often the mirror rewrites every own field.
    resync: Duration,
}

/// How presence announces changes: cluster-wide publishes through the node's publish path. The
/// node implements it (`node.rs`); presence knows nothing else of the node.
pub trait Announce: Send + Sync {
    /// Publishes one event (prepared by the node's rules), leaving out `exclude`.
    fn announce(&self, target: Target, event: Value, exclude: Option<ConnId>) -> impl Future<Output = ()> + Send;
    /// Publishes prepared events in order.
    fn announce_events(&self, events: Vec<Arc<Event>>) -> impl Future<Output = ()> + Send;
}

fn ms_to_rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string()
}

fn field(user: &str, incarnation: &str) -> String {
    format!("{user} {incarnation}")
}

impl Default for Presence {
    fn default() -> Self {
        Self::new(&PresenceConfig::default(), false, Duration::from_secs(10), None)
    }
}

impl Presence {
    /// An empty presence service for `[presence]`, counting joins for the bare rooms list when
    /// `bare_room_list`, mirrored through `cluster` when the node runs with Redis (chosen once,
    /// here) and rewritten there every `resync` (`redis.node_timeout`).
    pub fn new(
        config: &PresenceConfig,
        bare_room_list: bool,
        resync: Duration,
        cluster: Option<Arc<RedisBroker>>,
    ) -> Presence {
        let (tx, rx) = mpsc::unbounded_channel();
        Presence {
            activity: activity::RoomActivity::default(),
            local: Mutex::new(Local::default()),
            dirty: tx,
            dirty_rx: Mutex::new(Some(rx)),
            cluster,
            config: config.clone(),
            bare_room_list,
            resync,
        }
    }

    /// Redis while it is connected; `None` means this node's own records are all there is.
    fn shared(&self) -> Option<&RedisBroker> {
        self.cluster.as_deref().filter(|r| r.is_connected())
    }

    fn mark(&self, dirty: Dirty) {
        let _ = self.dirty.send(dirty);
    }

    /// A connection of `who` opened. Returns true when it is the user's first on this node.
    pub fn connect(&self, who: &Who) -> bool {
        let mut local = self.local.lock();
        let record = local.users.entry(who.user_id.clone()).or_default();
        record.connections += 1;
        record.last_seen = now_ms();
        let first = record.connections == 1;
        if first {
            record.status = None;
        }
        drop(local);
        self.mark(Dirty::User(who.user_id.clone()));
        first
    }

    /// A connection of `who` closed. Returns true when it was the user's last on this node.
    pub fn disconnect(&self, who: &Who) -> bool {
        let mut local = self.local.lock();
        let last = match local.users.get_mut(&who.user_id) {
            Some(record) if record.connections > 1 => {
                record.connections -= 1;
                record.last_seen = now_ms();
                false
            }
            Some(_) => {
                local.users.remove(&who.user_id);
                true
            }
            None => false,
        };
        drop(local);
        self.mark(Dirty::User(who.user_id.clone()));
        last
    }

    /// A connection of `who` joined `room`. Returns true when it is the user's first connection
    /// in the room on this node.
    pub fn join(&self, room: &Arc<str>, who: &Who) -> bool {
        let mut local = self.local.lock();
        let members = local.rooms.entry(room.clone()).or_default();
        let record = members.entry(who.user_id.clone()).or_default();
        record.connections += 1;
        record.username.clone_from(&who.username);
        record.email.clone_from(&who.email);
        record.last_seen = now_ms();
        let first = record.connections == 1;
        if let Some(user) = local.users.get_mut(&who.user_id) {
            *user.rooms.entry(room.to_string()).or_default() += 1;
        }
        drop(local);
        self.mark(Dirty::Room(room.clone(), who.user_id.clone()));
        self.mark(Dirty::User(who.user_id.clone()));
        first
    }

    /// A connection of `who` left `room`. Returns true when it was the user's last connection
    /// in the room on this node.
    pub fn leave(&self, room: &Arc<str>, who: &Who) -> bool {
        let mut local = self.local.lock();
        let mut last = false;
        if let Some(members) = local.rooms.get_mut(room) {
            match members.get_mut(&who.user_id) {
                Some(record) if record.connections > 1 => record.connections -= 1,
                Some(_) => {
                    members.remove(&who.user_id);
                    last = true;
                }
                None => {}
            }
            if members.is_empty() {
                local.rooms.remove(room);
                local.sheets.remove(room);
            }
        }
        if let Some(user) = local.users.get_mut(&who.user_id)
            && let Some(count) = user.rooms.get_mut(&**room)
        {
            *count -= 1;
            if *count == 0 {
                user.rooms.remove(&**room);
            }
        }
        drop(local);
        self.mark(Dirty::Room(room.clone(), who.user_id.clone()));
        self.mark(Dirty::User(who.user_id.clone()));
        last
    }

    /// Records a chosen status; returns the rooms the user is in on this node.
    pub fn set_status(&self, user: &Arc<str>, status: Status) -> Vec<String> {
        let mut local = self.local.lock();
        let Some(record) = local.users.get_mut(user) else { return Vec::new() };
        record.status = Some(status);
        record.status_at = now_ms();
        record.last_seen = record.status_at;
        let rooms = record.rooms.keys().cloned().collect();
        drop(local);
        self.mark(Dirty::User(user.clone()));
        rooms
    }

    /// Records a cursor position.
    pub fn cursor(&self, room: &Arc<str>, user: &Arc<str>, cursor: Value) {
        let mut local = self.local.lock();
        if let Some(record) = local.rooms.get_mut(room).and_then(|m| m.get_mut(user)) {
            record.cursor = Some(cursor);
            record.last_seen = now_ms();
        } else {
            return;
        }
        drop(local);
        self.mark(Dirty::Room(room.clone(), user.clone()));
    }

    /// Records that a sheet is being edited in a room (for `room_state.active_sheets`).
    /// At most `max` sheets are listed per room, so `room_state` stays small whatever sheet ids
    /// clients choose.
    pub fn note_sheet(&self, room: &Arc<str>, user: &Arc<str>, sheet: &str, max: usize) {
        let mut local = self.local.lock();
        if !local.rooms.contains_key(room) {
            return;
        }
        let sheets = local.sheets.entry(room.clone()).or_default();
        let added = (sheets.len() < max || sheets.contains(sheet)) && sheets.insert(sheet.to_string());
        drop(local);
        if added {
            self.mark(Dirty::Room(room.clone(), user.clone()));
        }
    }

    fn local_room(&self, room: &str) -> (Vec<(String, RoomRecord)>, Vec<String>) {
        let local = self.local.lock();
        let members = local
            .rooms
            .get(room)
            .map(|m| m.iter().map(|(u, r)| (u.to_string(), r.clone())).collect())
            .unwrap_or_default();
        let sheets = local.sheets.get(room).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        (members, sheets)
    }

    fn local_user(&self, user: &str) -> Option<UserRecord> {
        self.local.lock().users.get(user).cloned()
    }

    fn local_rooms(&self) -> Vec<Arc<str>> {
        self.local.lock().rooms.keys().cloned().collect()
    }
}

async fn hgetall(redis: &RedisBroker, key: &str) -> redis::RedisResult<HashMap<String, String>> {
    redis.query_as(redis::cmd("HGETALL").arg(key)).await
}

async fn smembers(redis: &RedisBroker, key: &str) -> redis::RedisResult<Vec<String>> {
    redis.query_as(redis::cmd("SMEMBERS").arg(key)).await
}

/// Merged view of a user across live nodes.
#[derive(Debug, Clone, Default)]
struct UserView {
    connections: u32,
    status: Option<(Status, i64)>,
    rooms: HashSet<String>,
    last_seen: i64,
}

impl UserView {
    fn add(&mut self, record: &UserRecord) {
        self.connections += record.connections;
        if let Some(status) = record.status
            && self.status.is_none_or(|(_, at)| record.status_at > at)
        {
            self.status = Some((status, record.status_at));
        }
        self.rooms.extend(record.rooms.keys().cloned());
        self.last_seen = self.last_seen.max(record.last_seen);
    }

    /// Adds the records of other live incarnations (fields of a user hash), leaving out this
    /// node's own field (`own`) and those of dead incarnations.
    fn add_remote(&mut self, fields: HashMap<String, String>, own: &str, live: &HashSet<String>) {
        for (incarnation, json) in fields {
            if incarnation != own
                && live.contains(&incarnation)
                && let Ok(record) = serde_json::from_str::<UserRecord>(&json)
            {
                self.add(&record);
            }
        }
    }

    fn effective(&self) -> Status {
        if self.connections == 0 { Status::Offline } else { self.status.map_or(Status::Online, |(s, _)| s) }
    }
}

async fn user_view(presence: &Presence, user: &str) -> UserView {
    let mut view = UserView::default();
    if let Some(record) = presence.local_user(user) {
        view.add(&record);
    }
    if let Some(redis) = presence.shared() {
        let key = keys::key(redis.key_prefix(), "pr:user", &[user]);
        let (fields, live) = tokio::join!(hgetall(redis, &key), redis.live_incarnations());
        if let (Ok(fields), Ok(live)) = (fields, live) {
            view.add_remote(fields, redis.incarnation(), &live);
        }
    }
    view
}

/// Adds the records of other live incarnations (fields `<user> <incarnation>` of a room hash) to
/// `users`. This node's own fields are left out: its memory is newer than its mirror.
fn add_remote_room_fields(
    users: &mut HashMap<String, Vec<RoomRecord>>,
    fields: HashMap<String, String>,
    own: &str,
    live: &HashSet<String>,
) {
    for (field, json) in fields {
        // User ids may hold spaces; incarnations never do.
        let Some((user, incarnation)) = field.rsplit_once(' ') else { continue };
        if incarnation == own || !live.contains(incarnation) {
            continue;
        }
        if let Ok(record) = serde_json::from_str::<RoomRecord>(&json) {
            users.entry(user.to_string()).or_default().push(record);
        }
    }
}

/// One member of a room from every live node's record of them: name and e-mail from the newest
/// record, the newest cursor any node has, and `status` from the user's merged view.
fn merge_member(room: &str, user: String, records: &[RoomRecord], status: Status) -> Member {
    let newest = records.iter().max_by_key(|r| r.last_seen).cloned().unwrap_or_default();
    let cursor =
        records.iter().filter(|r| r.cursor.is_some()).max_by_key(|r| r.last_seen).and_then(|r| r.cursor.clone());
    Member {
        user_id: user,
        username: newest.username,
        email: newest.email,
        room: room.to_string(),
        // Present in the room means connected, even while the user's own record lags behind.
        status: if status == Status::Offline { Status::Online } else { status },
        cursor,
        last_seen: ms_to_rfc3339(newest.last_seen),
    }
}

/// Records of a room across live nodes, grouped by user, and its active sheets.
async fn room_view(presence: &Presence, room: &str) -> (HashMap<String, Vec<RoomRecord>>, Vec<String>) {
    let (local, mut sheets) = presence.local_room(room);
    let mut users: HashMap<String, Vec<RoomRecord>> = HashMap::new();
    for (user, record) in local {
        users.entry(user).or_default().push(record);
    }
    if let Some(redis) = presence.shared() {
        let key = keys::key(redis.key_prefix(), "pr:room", &[room]);
        let sheets_key = keys::key(redis.key_prefix(), "pr:sheets", &[room]);
        let (fields, remote_sheets, live) =
            tokio::join!(hgetall(redis, &key), smembers(redis, &sheets_key), redis.live_incarnations());
        if let (Ok(fields), Ok(live)) = (fields, live) {
            add_remote_room_fields(&mut users, fields, redis.incarnation(), &live);
        }
        for sheet in remote_sheets.unwrap_or_default() {
            if !sheets.contains(&sheet) {
                sheets.push(sheet);
            }
        }
    }
    sheets.sort();
    // Each node lists at most the cap; the union of several nodes' lists is cut to it as well.
    sheets.truncate(presence.config.max_sheets_per_room);
    (users, sheets)
}

/// The members of a room across the cluster, with their statuses.
pub async fn members(presence: &Presence, room: &str) -> (Vec<Member>, Vec<String>) {
    let (users, sheets) = room_view(presence, room).await;
    let mut members = Vec::with_capacity(users.len());
    for (user, records) in users {
        let status = user_view(presence, &user).await.effective();
        members.push(merge_member(room, user, &records, status));
    }
    members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    (members, sheets)
}

/// `room_state` as the spreadsheet profile shows it.
pub async fn room_state(presence: &Presence, room: &str) -> Value {
    let (members, sheets) = members(presence, room).await;
    json!({
        "type": "room_state",
        "room_id": room,
        "room": room,
        "users": members,
        "active_sheets": sheets,
        "total_users": members.len(),
        "timestamp": outbound::now(),
    })
}

/// A user's presence across the cluster.
pub async fn user_presence(presence: &Presence, user: &str) -> Value {
    let view = user_view(presence, user).await;
    let mut rooms: Vec<String> = view.rooms.into_iter().collect();
    rooms.sort();
    json!({
        "user_id": user,
        "status": if view.connections == 0 { Status::Offline } else { view.status.map_or(Status::Online, |(s, _)| s) },
        "online": view.connections > 0,
        "connections": view.connections,
        "rooms": rooms,
        "last_seen": (view.last_seen > 0).then(|| ms_to_rfc3339(view.last_seen)),
    })
}

/// Whether the user has a connection in the room on any other live node.
async fn present_elsewhere(presence: &Presence, room: &str, user: &str) -> bool {
    let Some(redis) = presence.shared() else { return false };
    let key = keys::key(redis.key_prefix(), "pr:room", &[room]);
    let (fields, live) = tokio::join!(hgetall(redis, &key), redis.live_incarnations());
    let (Ok(fields), Ok(live)) = (fields, live) else { return false };
    fields
        .keys()
        .filter_map(|f| f.rsplit_once(' '))
        .any(|(u, incarnation)| u == user && incarnation != redis.incarnation() && live.contains(incarnation))
}

fn joined_event(room: &str, who: &Who) -> Value {
    json!({
        "type": "user_joined",
        "room_id": room,
        "room": room,
        "user_id": &*who.user_id,
        "username": who.username,
        "user": { "user_id": &*who.user_id, "username": who.username, "email": who.email, "status": "online" },
        "timestamp": outbound::now(),
    })
}

fn left_event(room: &str, user: &str, username: Option<&str>) -> Value {
    json!({
        "type": "user_left",
        "room_id": room,
        "room": room,
        "user_id": user,
        "username": username,
        "timestamp": outbound::now(),
    })
}

fn room_target(room: &str) -> Target {
    Target { room: Some(Arc::from(room)), ..Target::default() }
}

/// After a connection joined `room`: announces the user if this is their first connection there
/// in the cluster (excluding the joining connection), and returns the `room_state` for it.
pub async fn joined(
    presence: &Presence,
    out: &impl Announce,
    room: &Arc<str>,
    who: &Who,
    connection: ConnId,
) -> Option<Value> {
    if !presence.config.enabled {
        return None;
    }
    let first_here = presence.join(room, who);
    if presence.bare_room_list {
        presence.activity.joined(room, &who.user_id, crate::store::now_ms());
    }
    if first_here && !present_elsewhere(presence, room, &who.user_id).await {
        out.announce(room_target(room), joined_event(room, who), Some(connection)).await;
    }
    if presence.config.room_state_to_room {
        // The others hear the new state through the room; the joiner gets it as a reply, as
        // below, so it never depends on when the room's subscription took effect.
        let state = room_state(presence, room).await;
        out.announce(room_target(room), state.clone(), Some(connection)).await;
        return Some(state);
    }
    if !presence.config.room_state_on_join {
        return None;
    }
    Some(room_state(presence, room).await)
}

/// After a connection left `room`: announces the user's departure if it was their last
/// connection there in the cluster.
pub async fn left(presence: &Presence, out: &impl Announce, room: &Arc<str>, who: &Who) {
    if !presence.config.enabled {
        return;
    }
    if presence.leave(room, who) && !present_elsewhere(presence, room, &who.user_id).await {
        out.announce(room_target(room), left_event(room, &who.user_id, who.username.as_deref()), None).await;
        if presence.config.room_state_to_room {
            out.announce(room_target(room), room_state(presence, room).await, None).await;
        }
    }
}

fn status_event(kind: &str, user: &str, status: Status, room: &str) -> Value {
    json!({
        "type": kind,
        "user_id": user,
        "status": status.as_str(),
        "online": status != Status::Offline,
        "room_id": room,
        "room": room,
        "timestamp": outbound::now(),
    })
}

/// Status events for a user, one per room it is in.
async fn announce_status(presence: &Presence, out: &impl Announce, user: &str, status: Status, rooms: HashSet<String>) {
    let mut events = Vec::new();
    for room in rooms {
        for kind in &presence.config.status_events {
            let payload = status_event(kind, user, status, &room);
            events.push(Event::new(room_target(&room), bytes::Bytes::from(payload.to_string())));
        }
    }
    if !events.is_empty() {
        out.announce_events(events).await;
    }
}

/// A client chose a status: delivered to the rooms the user is in, on every node.
pub async fn status_changed(presence: &Presence, out: &impl Announce, user: &Arc<str>, status: Status) {
    presence.set_status(user, status);
    let view = user_view(presence, user).await;
    announce_status(presence, out, user, view.effective(), view.rooms).await;
}

/// A connection closed: leaves its rooms, and if it was the user's last connection anywhere,
/// announces the user offline.
pub async fn disconnected(presence: &Presence, out: &impl Announce, who: &Who, rooms: Vec<Arc<str>>) {
    if !presence.config.enabled {
        return;
    }
    let mut user_rooms: HashSet<String> = rooms.iter().map(|r| r.to_string()).collect();
    for room in &rooms {
        left(presence, out, room, who).await;
    }
    if presence.disconnect(who) {
        let view = user_view(presence, &who.user_id).await;
        if view.connections == 0 {
            user_rooms.extend(view.rooms);
            announce_status(presence, out, &who.user_id, Status::Offline, user_rooms).await;
        }
    }
}

/// A connection opened.
pub fn connected(presence: &Presence, who: &Who) {
    if presence.config.enabled {
        presence.connect(who);
    }
}

/// Mirrors this node's presence to Redis and sweeps the presence of dead nodes, until shutdown.
pub async fn run(presence: &Presence, out: &impl Announce, shutdown: &CancellationToken) {
    let Some(mut dirty) = presence.dirty_rx.lock().take() else { return };
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    // Rewrites every field of this node now and then: Redis may have restarted empty, or another
    // node may have swept this one's fields during a moment it looked dead.
    let mut resync = tokio::time::interval(presence.resync);
    let mut pending: HashSet<Dirty> = HashSet::new();
    loop {
        tokio::select! {
            _ = resync.tick() => {
                {
                    let local = presence.local.lock();
                    for (room, members) in &local.rooms {
                        pending.extend(members.keys().map(|user| Dirty::Room(room.clone(), user.clone())));
                    }
                    pending.extend(local.users.keys().map(|user| Dirty::User(user.clone())));
                }
                mirror(presence, &mut pending).await;
            }
            change = dirty.recv() => {
                let Some(change) = change else { return };
                pending.insert(change);
                while let Ok(more) = dirty.try_recv() {
                    pending.insert(more);
                }
                mirror(presence, &mut pending).await;
            }
            _ = sweep.tick() => {
                if !pending.is_empty() {
                    mirror(presence, &mut pending).await;
                }
                sweep_dead(presence, out).await;
            }
            _ = shutdown.cancelled() => {
                remove_own(presence).await;
                return;
            }
        }
    }
}

/// Writes the current value of every changed field.
async fn mirror(presence: &Presence, pending: &mut HashSet<Dirty>) {
    let Some(redis) = presence.cluster.as_deref() else {
        pending.clear();
        return;
    };
    if !redis.is_connected() {
        // Kept; written once Redis is back (the sweep retries).
        return;
    }
    let me = redis.incarnation().to_string();
    let prefix = redis.key_prefix().to_string();
    let mut pipe = redis::pipe();
    {
        let local = presence.local.lock();
        for change in pending.iter() {
            match change {
                Dirty::Room(room, user) => {
                    let key = keys::key(&prefix, "pr:room", &[room]);
                    let field = field(user, &me);
                    match local.rooms.get(room).and_then(|m| m.get(user)) {
                        Some(record) => {
                            pipe.cmd("HSET")
                                .arg(&key)
                                .arg(field)
                                .arg(serde_json::to_string(record).unwrap_or_default())
                                .ignore();
                        }
                        None => {
                            pipe.cmd("HDEL").arg(&key).arg(field).ignore();
                        }
                    }
                    if let Some(sheets) = local.sheets.get(room).filter(|s| !s.is_empty()) {
                        let key = keys::key(&prefix, "pr:sheets", &[room]);
                        pipe.cmd("SADD").arg(&key).arg(sheets.iter().collect::<Vec<_>>()).ignore();
                        pipe.cmd("EXPIRE").arg(&key).arg(86_400).ignore();
                    }
                }
                Dirty::User(user) => {
                    let key = keys::key(&prefix, "pr:user", &[user]);
                    match local.users.get(user) {
                        Some(record) => {
                            pipe.cmd("HSET")
                                .arg(&key)
                                .arg(&me)
                                .arg(serde_json::to_string(record).unwrap_or_default())
                                .ignore();
                        }
                        None => {
                            pipe.cmd("HDEL").arg(&key).arg(&me).ignore();
                        }
                    }
                }
            }
        }
    }
    if redis.pipeline_as::<()>(&pipe).await.is_ok() {
        pending.clear();
    }
}

/// Removes the presence of dead nodes from the rooms this node's clients are in, and tells
/// those clients who went away.
async fn sweep_dead(presence: &Presence, out: &impl Announce) {
    let Some(redis) = presence.shared() else { return };
    let Ok(live) = redis.live_incarnations().await else { return };
    for room in presence.local_rooms() {
        let key = keys::key(redis.key_prefix(), "pr:room", &[&room]);
        let Ok(fields) = hgetall(redis, &key).await else { continue };
        let mut alive: HashSet<&str> = HashSet::new();
        let mut dead: Vec<(&str, &str, &String)> = Vec::new();
        for (field, json) in &fields {
            let Some((user, incarnation)) = field.rsplit_once(' ') else { continue };
            if incarnation == redis.incarnation() || live.contains(incarnation) {
                alive.insert(user);
            } else {
                dead.push((user, incarnation, json));
            }
        }
        for (user, incarnation, json) in dead {
            let removed: i64 =
                redis.query_as(redis::cmd("HDEL").arg(&key).arg(field(user, incarnation))).await.unwrap_or(0);
            let user_key = keys::key(redis.key_prefix(), "pr:user", &[user]);
            let _: Result<i64, _> = redis.query_as(redis::cmd("HDEL").arg(&user_key).arg(incarnation)).await;
            if removed == 0 || alive.contains(user) {
                continue;
            }
            // HDEL answers 1 to exactly one node, and that node tells the room on every node:
            // each client hears of the departure once.
            let username = serde_json::from_str::<RoomRecord>(json).ok().and_then(|r| r.username);
            tracing::info!(room = %room, user, node = incarnation, "presence of a dead node expired");
            let mut events = vec![Event::new(
                room_target(&room),
                bytes::Bytes::from(left_event(&room, user, username.as_deref()).to_string()),
            )];
            let gone_everywhere = user_view(presence, user).await.connections == 0;
            if gone_everywhere {
                for kind in &presence.config.status_events {
                    let payload = status_event(kind, user, Status::Offline, &room);
                    events.push(Event::new(room_target(&room), bytes::Bytes::from(payload.to_string())));
                }
            }
            out.announce_events(events).await;
        }
    }
}

/// On shutdown, this node's fields go away at once rather than after the node timeout.
async fn remove_own(presence: &Presence) {
    let Some(redis) = presence.shared() else { return };
    let me = redis.incarnation().to_string();
    let mut pipe = redis::pipe();
    {
        let local = presence.local.lock();
        for (room, members) in &local.rooms {
            for user in members.keys() {
                pipe.cmd("HDEL").arg(keys::key(redis.key_prefix(), "pr:room", &[room])).arg(field(user, &me)).ignore();
            }
        }
        for user in local.users.keys() {
            pipe.cmd("HDEL").arg(keys::key(redis.key_prefix(), "pr:user", &[user])).arg(&me).ignore();
        }
    }
    let _ = redis.pipeline_as::<()>(&pipe).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(incarnations: &[&str]) -> HashSet<String> {
        incarnations.iter().map(|s| s.to_string()).collect()
    }

    fn user_record(connections: u32, status: Option<Status>, status_at: i64, rooms: &[&str]) -> String {
        let record = UserRecord {
            connections,
            status,
            status_at,
            rooms: rooms.iter().map(|r| (r.to_string(), 1)).collect(),
            last_seen: status_at,
        };
        serde_json::to_string(&record).unwrap()
    }

    #[test]
    fn a_user_view_sums_live_nodes_and_takes_the_newest_status() {
        let mut view = UserView::default();
        view.add(&UserRecord { connections: 1, status: Some(Status::Busy), status_at: 10, ..Default::default() });
        let fields = HashMap::from([
            ("b@1".to_string(), user_record(2, Some(Status::Away), 20, &["r1"])),
            // Older than what is already known: counted, but its status loses.
            ("c@1".to_string(), user_record(1, Some(Status::Online), 5, &["r2"])),
            // A dead incarnation and this node's own mirror are left out.
            ("dead@1".to_string(), user_record(7, Some(Status::Online), 99, &["r3"])),
            ("me@1".to_string(), user_record(7, Some(Status::Online), 99, &["r4"])),
            ("d@1".to_string(), "not json".to_string()),
        ]);
        view.add_remote(fields, "me@1", &live(&["me@1", "b@1", "c@1", "d@1"]));
        assert_eq!(view.connections, 4);
        assert_eq!(view.effective(), Status::Away);
        assert_eq!(view.rooms, HashSet::from(["r1".to_string(), "r2".to_string()]));
        assert_eq!(view.last_seen, 20);
    }

    #[test]
    fn a_user_without_connections_is_offline_whatever_their_status() {
        let mut view = UserView::default();
        view.add(&UserRecord { connections: 0, status: Some(Status::Busy), status_at: 10, ..Default::default() });
        assert_eq!(view.effective(), Status::Offline);
        view.add(&UserRecord { connections: 1, ..Default::default() });
        assert_eq!(view.effective(), Status::Busy);
    }

    #[test]
    fn room_fields_of_own_and_dead_incarnations_are_left_out() {
        let record = |last_seen: i64| serde_json::to_string(&RoomRecord { last_seen, ..Default::default() }).unwrap();
        let fields = HashMap::from([
            ("alice b@1".to_string(), record(1)),
            ("alice c@1".to_string(), record(2)),
            // A user id with a space: the incarnation is what follows the last one.
            ("bob smith b@1".to_string(), record(3)),
            ("carol me@1".to_string(), record(4)),
            ("dave dead@1".to_string(), record(5)),
            ("no-incarnation".to_string(), record(6)),
        ]);
        let mut users = HashMap::new();
        add_remote_room_fields(&mut users, fields, "me@1", &live(&["me@1", "b@1", "c@1"]));
        let mut names: Vec<&str> = users.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["alice", "bob smith"]);
        assert_eq!(users["alice"].len(), 2);
    }

    #[test]
    fn a_member_takes_the_newest_name_and_the_newest_cursor() {
        let records = [
            RoomRecord {
                username: Some("old".into()),
                cursor: Some(json!({"x": 1})),
                last_seen: 10,
                ..Default::default()
            },
            RoomRecord { username: Some("new".into()), cursor: None, last_seen: 30, ..Default::default() },
            RoomRecord {
                username: Some("mid".into()),
                cursor: Some(json!({"x": 2})),
                last_seen: 20,
                ..Default::default()
            },
        ];
        let member = merge_member("r", "alice".into(), &records, Status::Away);
        assert_eq!(member.username.as_deref(), Some("new"));
        assert_eq!(member.cursor, Some(json!({"x": 2})));
        assert_eq!(member.status, Status::Away);
        assert_eq!(member.last_seen, ms_to_rfc3339(30));
        // In the room means connected, even when the user's own record says otherwise.
        assert_eq!(merge_member("r", "alice".into(), &records, Status::Offline).status, Status::Online);
    }
}
