//! The Pusher Channels protocol (protocol 7): a second face on the same node.
//!
//! pusher-js and every Pusher server SDK talk to Herald through this module: the WebSocket at
//! `/app/{key}` ([`socket`]), the signed HTTP API under `/apps/{id}` ([`api`]). A Pusher
//! connection is an ordinary session on a shard (kind [`EndpointKind::Pusher`]) and a Pusher
//! event is an ordinary hub [`Event`](crate::hub::Event) whose payload is already the Pusher
//! message, so its frame is built once and shared by every recipient, exactly as for Herald's
//! own protocol, and it crosses nodes through the same broker.
//!
//! **Apps are namespaces.** An app's channel `C` lives in the hub as `"\x1fp<app id>\x1f<C>"`
//! (and a signed-in user `U` as the hub user of the same form). Herald's own clients and API can
//! never name these: every Herald name is refused when it contains a control character. Two
//! apps differ in the id part, so they never share a channel, user or presence set.
//!
//! [`EndpointKind::Pusher`]: crate::config::EndpointKind::Pusher

pub mod api;
pub mod cache;
pub mod cluster;
pub mod presence;
pub mod protocol;
pub mod sign;
pub mod socket;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::pusher::{PusherAppConfig, PusherConfig};

/// One configured app.
#[derive(Debug)]
pub struct App {
    /// Its configuration.
    pub config: PusherAppConfig,
    /// The hub-name prefix of its channels and users: `"\x1fp<id>\x1f"`.
    prefix: String,
    /// Its connections on this node.
    pub connections: AtomicUsize,
}

impl App {
    fn new(config: PusherAppConfig) -> Self {
        let prefix = crate::hub::namespace_prefix(&config.id);
        App { config, prefix, connections: AtomicUsize::new(0) }
    }

    /// The hub name of the app's channel (or user) `name`.
    pub fn hub_name(&self, name: &str) -> String {
        let mut out = String::with_capacity(self.prefix.len() + name.len());
        out.push_str(&self.prefix);
        out.push_str(name);
        out
    }

    /// The app's own name for a hub name, or `None` when it belongs to someone else.
    pub fn own_name<'a>(&self, hub_name: &'a str) -> Option<&'a str> {
        hub_name.strip_prefix(&self.prefix)
    }

    /// Takes a connection slot under `max_connections`; `false` when the app is full.
    pub fn acquire(&self) -> bool {
        let cap = self.config.max_connections;
        let before = self.connections.fetch_add(1, Ordering::Relaxed);
        if cap > 0 && before >= cap {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Gives a connection slot back.
    pub fn release(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's place under its app's `max_connections`, given back when dropped, so that a
/// connection that never reaches its shard (the peer vanished during the upgrade) gives it back
/// too.
#[derive(Debug)]
pub struct AppSlot(Arc<App>);

impl AppSlot {
    /// Takes a slot of `app`; `None` when the app is full.
    pub fn take(app: &Arc<App>) -> Option<AppSlot> {
        app.acquire().then(|| AppSlot(app.clone()))
    }
}

impl std::ops::Deref for AppSlot {
    type Target = Arc<App>;

    fn deref(&self) -> &Arc<App> {
        &self.0
    }
}

impl Drop for AppSlot {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// The node's Pusher face: its apps and its presence sets.
#[derive(Default)]
pub struct Pusher {
    apps: Vec<Arc<App>>,
    by_key: HashMap<String, usize>,
    by_id: HashMap<String, usize>,
    /// Presence members of every app's presence channels on this node.
    pub presence: presence::Members,
    /// The last event of each `cache-` channel.
    pub cache: cache::Cache,
    /// The first half of this node's socket ids; lets a node recognize its own sockets.
    pub node_tag: u32,
    /// Largest allowed clock skew of signed API requests, in seconds.
    pub clock_skew: u64,
    /// The webhook queue.
    pub webhooks: webhooks::Webhooks,
    /// Pusher subscriptions per channel on this node, mirrored for the cluster.
    pub occupancy: cluster::Occupancy,
    /// The Redis broker, when the face's state is shared by a cluster (chosen once, at start-up).
    cluster: Option<Arc<crate::broker::redis::RedisBroker>>,
}

impl Pusher {
    /// The apps from `[pusher]`, for the node named `node_id`, with their presence members,
    /// channel counts, cached events and webhook batches shared through `cluster` when the node
    /// runs with Redis (chosen once, here).
    pub fn new(config: &PusherConfig, node_id: &str, cluster: Option<Arc<crate::broker::redis::RedisBroker>>) -> Self {
        let apps: Vec<Arc<App>> = config.apps.iter().cloned().map(|c| Arc::new(App::new(c))).collect();
        let by_key = apps.iter().enumerate().map(|(i, a)| (a.config.key.clone(), i)).collect();
        let by_id = apps.iter().enumerate().map(|(i, a)| (a.config.id.clone(), i)).collect();
        Pusher {
            apps,
            by_key,
            by_id,
            presence: Default::default(),
            cache: Default::default(),
            node_tag: node_tag(node_id),
            clock_skew: config.clock_skew(),
            webhooks: Default::default(),
            occupancy: Default::default(),
            cluster,
        }
    }

    /// Where the face's shared state lives right now: Redis while it is connected; `None` means
    /// this node alone (no Redis, or Redis down).
    pub fn shared(&self) -> Option<&crate::broker::redis::RedisBroker> {
        self.cluster.as_deref().filter(|r| r.is_connected())
    }

    /// The Redis broker when one is configured, connected or not (key names, control messages
    /// that report their own failure).
    pub fn redis(&self) -> Option<&crate::broker::redis::RedisBroker> {
        self.cluster.as_deref()
    }

    /// Whether any app is configured (the face is on).
    pub fn enabled(&self) -> bool {
        !self.apps.is_empty()
    }

    /// Every configured app.
    pub fn apps(&self) -> &[Arc<App>] {
        &self.apps
    }

    /// The app with this public key.
    pub fn by_key(&self, key: &str) -> Option<&Arc<App>> {
        self.by_key.get(key).map(|&i| &self.apps[i])
    }

    /// The app of a hub channel and the app's own name for it.
    pub fn app_of_hub<'a>(&self, hub: &'a str) -> Option<(&Arc<App>, &'a str)> {
        self.apps.iter().find_map(|app| app.own_name(hub).map(|name| (app, name)))
    }

    /// The app's own name of a hub channel of any app.
    pub fn by_hub<'a>(&self, hub: &'a str) -> Option<&'a str> {
        self.apps.iter().find_map(|app| app.own_name(hub))
    }

    /// The app with this id.
    pub fn by_id(&self, id: &str) -> Option<&Arc<App>> {
        self.by_id.get(id).map(|&i| &self.apps[i])
    }

    /// The socket id of this node's connection `conn`: `<node tag>.<connection number>`.
    pub fn socket_id(&self, conn: u64) -> String {
        format!("{}.{conn}", self.node_tag)
    }

    /// The connection number behind a socket id, when the socket lives on this node.
    pub fn local_conn(&self, socket_id: &str) -> Option<u64> {
        let (tag, conn) = socket_id.split_once('.')?;
        (tag.parse::<u32>().ok()? == self.node_tag).then_some(())?;
        conn.parse().ok()
    }
}

/// The Pusher face's state on a node: the one `server.rs` wired in ([`crate::node::Faces`]), or,
/// on a node built without it, one with no apps (every key and id is then unknown).
pub trait PusherOf {
    /// The Pusher face's state.
    fn pusher(&self) -> &Pusher;
}

impl PusherOf for crate::node::Node {
    fn pusher(&self) -> &Pusher {
        static NONE: std::sync::LazyLock<Pusher> =
            std::sync::LazyLock::new(|| Pusher::new(&PusherConfig::default(), "", None));
        self.faces.get::<Pusher>().unwrap_or(&NONE)
    }
}

/// Other nodes' commands for this node's Pusher connections: an app's `terminate_connections`
/// and events that exclude one of its sockets.
impl crate::node::FaceState for Pusher {
    fn control<'a>(
        &'a self,
        node: &'a crate::node::Node,
        command: &'a crate::broker::redis::Control,
    ) -> futures_util::future::BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some((app, user)) = &command.pusher_terminate {
                api::terminate_local(node, app, user).await;
            }
            if let Some(publish) = &command.pusher_publish {
                api::publish_forwarded(node, publish).await;
            }
        })
    }
}

/// The Pusher face's background tasks: webhook delivery and the cluster mirror of channel counts.
pub async fn run(node: Arc<crate::node::Node>) {
    tokio::spawn(webhooks::run(node.clone()));
    cluster::run(node).await;
}

/// Publishes a `pusher_internal:` event (`member_added`, `member_removed`) without giving it a
/// place in the channel's history: a resume replays only the channel's own events, since a
/// replayed member change would contradict the member list the subscription has just handed out.
pub async fn publish_internal(node: &crate::node::Node, event: Arc<crate::hub::Event>) {
    let _ = node.broker.publish(&node.hub, &node.id, event).await;
}

/// The first half of the socket ids of the node `node_id`: FNV-1a of the id, below 10^9 so
/// socket ids stay short.
pub fn node_tag(node_id: &str) -> u32 {
    node_id.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193)) % 1_000_000_000
}

/// What kind of channel a name is, by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// No prefix: anyone may subscribe.
    Public,
    /// `private-` (including `private-encrypted-`): a signature is required.
    Private,
    /// `presence-`: a signature over the member's `channel_data` is required.
    Presence,
    /// `#server-to-user-<id>`: only the signed-in user `<id>`.
    User,
}

impl ChannelKind {
    /// The kind of `channel`.
    pub fn of(channel: &str) -> Self {
        let bare = channel.strip_prefix("cache-").unwrap_or(channel);
        if channel.starts_with("#server-to-user-") {
            ChannelKind::User
        } else if bare.starts_with("presence-") || channel.starts_with("presence-cache-") {
            ChannelKind::Presence
        } else if bare.starts_with("private-") || channel.starts_with("private-cache-") {
            ChannelKind::Private
        } else {
            ChannelKind::Public
        }
    }
}

/// Whether the channel keeps its last event for new subscribers (`cache-`, `private-cache-`,
/// `private-encrypted-cache-`, `presence-cache-`).
pub fn is_cache(channel: &str) -> bool {
    channel.starts_with("cache-")
        || channel.starts_with("private-cache-")
        || channel.starts_with("private-encrypted-cache-")
        || channel.starts_with("presence-cache-")
}

/// Longest channel name the protocol allows.
pub const MAX_CHANNEL_LEN: usize = 164;

/// Checks a channel name: 1 to 164 of `A-Za-z0-9_-=@,.;` (and the `#` of user channels).
pub fn valid_channel(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_CHANNEL_LEN {
        return Err(format!("channel names are 1 to {MAX_CHANNEL_LEN} characters long"));
    }
    let body = name.strip_prefix("#server-to-user-").unwrap_or(name);
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-=@,.;".contains(&b)) {
        return Err(format!("invalid channel name {name:?}: only A-Z a-z 0-9 _ - = @ , . ; are allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_names() {
        assert_eq!(ChannelKind::of("news"), ChannelKind::Public);
        assert_eq!(ChannelKind::of("private-encrypted-x"), ChannelKind::Private);
        assert_eq!(ChannelKind::of("private-cache-x"), ChannelKind::Private);
        assert_eq!(ChannelKind::of("presence-room"), ChannelKind::Presence);
        assert_eq!(ChannelKind::of("presence-cache-room"), ChannelKind::Presence);
        assert_eq!(ChannelKind::of("cache-x"), ChannelKind::Public);
        assert_eq!(ChannelKind::of("#server-to-user-7"), ChannelKind::User);
        assert!(is_cache("cache-x") && is_cache("private-encrypted-cache-x") && !is_cache("private-x"));
        assert!(valid_channel("private-a_b=c@d,e.f;g").is_ok());
        assert!(valid_channel("a b").is_err() && valid_channel("").is_err() && valid_channel("#x").is_err());
        assert!(valid_channel(&"x".repeat(165)).is_err());
    }

    #[test]
    fn apps_are_namespaces_herald_cannot_name() {
        let app = |id: &str| App::new(PusherAppConfig { id: id.into(), ..Default::default() });
        let (a, b) = (app("1"), app("12"));
        let name = a.hub_name("news");
        assert!(crate::protocol::validate_name("channel", &name).is_err());
        assert_eq!(a.own_name(&name), Some("news"));
        assert_eq!(b.own_name(&name), None);
        assert_ne!(a.hub_name("2\u{1f}x"), b.hub_name("\u{1f}x"));
        assert_eq!(crate::protocol::bare_channel(&b.hub_name("private-x")), Some("private-x"));
        assert_eq!(crate::protocol::bare_channel("news"), None);
    }

    #[test]
    fn app_slots_are_given_back_when_dropped() {
        let app = Arc::new(App::new(PusherAppConfig { max_connections: 1, ..Default::default() }));
        let slot = AppSlot::take(&app).expect("a free slot");
        assert!(AppSlot::take(&app).is_none());
        drop(slot);
        assert!(AppSlot::take(&app).is_some());
        assert_eq!(app.connections.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn socket_ids_round_trip_on_their_node_only() {
        let one = Pusher::new(&PusherConfig::default(), "node-a", None);
        let two = Pusher::new(&PusherConfig::default(), "node-b", None);
        let id = one.socket_id(42);
        assert!(id.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())));
        assert_eq!(one.local_conn(&id), Some(42));
        assert_eq!(two.local_conn(&id), None);
        assert_eq!(one.local_conn("x.1"), None);
    }
}
