//! A node: the parts assembled, shared by every shard, handler and background task.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::broker::redis::Control;
use crate::broker::{Broker, BrokerHandler};
use crate::config::Config;
use crate::hub::event::EventError;
use crate::hub::rules::ChannelRules;
use crate::hub::{ConnId, Event, Hub, Target};
use crate::limits::Limits;
use crate::publish::Publisher;
use crate::stats::{NodeCounters, Stats};
use crate::store::Store;
use crate::store::writer::Writer;

/// Everything one node is made of.
pub struct Node {
    /// This node's name in a cluster.
    pub id: Arc<str>,
    /// The validated configuration the node started with. Keys that a SIGHUP reload may change
    /// (see `reload.rs`) are read from [`Node::live`] or from the part that owns them
    /// (`auth`, `limits`).
    pub config: Arc<Config>,
    /// The configuration in force: `config` with the live keys of the last reload.
    pub(crate) live: arc_swap::ArcSwap<Config>,
    /// Shards and interest.
    pub hub: Hub,
    /// Cross-node transport.
    pub broker: Broker,
    /// Counters.
    pub stats: Stats,
    /// Per-channel behaviour.
    pub rules: ChannelRules,
    /// Tokens and access rules.
    pub auth: Auth,
    /// Rate and connection limits.
    pub limits: Arc<Limits>,
    /// History storage.
    pub store: Arc<Store>,
    /// The batching writer in front of the store.
    pub writer: Writer,
    /// Cancelled when the node begins shutting down.
    pub shutdown: CancellationToken,
    /// Source of connection numbers.
    pub next_connection: AtomicU64,
    /// Who is where, with what status and cursor.
    pub presence: crate::presence::Presence,
    /// Versions of collaborative cells.
    pub cells: crate::cells::Cells,
    /// Requests and lifecycle events for the application's backend.
    pub upstream: Arc<crate::upstream::Upstream>,
    /// Which streams keep history, and (embedded) their logs.
    pub history: crate::streams::History,
    /// The state of the protocol faces wired above the node (the Pusher face's apps, presence
    /// members, cached events), held without knowing them.
    pub faces: Faces,
    /// Fallback (SSE, NDJSON) sessions by id, and one-time tickets.
    pub fallback: Arc<crate::transport::fallback::Fallback>,
}

/// What a protocol face wired above the node keeps on it: its state, which the face finds by
/// type ([`Faces::get`]), and its part of other nodes' control commands.
pub trait FaceState: Any + Send + Sync {
    /// Acts on what concerns this face in another node's control command.
    fn control<'a>(&'a self, node: &'a Node, command: &'a Control) -> BoxFuture<'a, ()>;
}

/// The faces' states, chosen by `server.rs` (the wiring); the node only hands commands on.
#[derive(Default)]
pub struct Faces(Vec<Box<dyn FaceState>>);

impl Faces {
    /// The faces' states.
    pub fn new(faces: Vec<Box<dyn FaceState>>) -> Self {
        Faces(faces)
    }

    /// The state of the face whose state is a `T`, if it is wired.
    pub fn get<T: FaceState>(&self) -> Option<&T> {
        self.0.iter().find_map(|face| (&**face as &dyn Any).downcast_ref::<T>())
    }
}

impl Node {
    /// The configuration in force, for the keys a reload may change (`api.key`, `api.allowed_ips`,
    /// `ingest.*` credentials). One atomic load; no lock.
    pub fn live(&self) -> Arc<Config> {
        self.live.load_full()
    }

    /// Puts a reloaded configuration in force (see `reload::apply`, which runs above the node).
    pub(crate) fn set_live(&self, config: Config) {
        self.live.store(Arc::new(config));
    }

    /// The publish path's handles (a few pointers, made per call): the one way to publish.
    pub fn publisher(&self) -> Publisher<'_> {
        Publisher {
            id: &self.id,
            rules: &self.rules,
            broker: &self.broker,
            hub: &self.hub,
            counters: &self.stats.node,
            history: &self.history,
            keyring: self.store.keyring(),
            activity: self.config.api.bare_room_list.then_some(&self.presence.activity),
        }
    }
}

/// The node is what its broker delivers to: events of other nodes go to the hub, publishers'
/// messages through the publish path ([`Publisher::ingest`]), other nodes' commands to the hub and the
/// protocol faces.
impl BrokerHandler for Node {
    async fn deliver(&self, event: Arc<Event>) {
        self.hub.dispatch(event).await;
    }

    async fn ingest(
        &self,
        target: Target,
        message: Value,
        owns: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<(), EventError> {
        self.publisher().ingest(target, message, owns).await
    }

    async fn control(&self, command: Control) {
        if let Some(id) = &command.disconnect {
            let found = self.hub.disconnect_local(id).await;
            tracing::info!(connection = %id, found, "disconnect requested by another node");
        }
        if let Some(user) = &command.disconnect_user {
            let closed = self.hub.disconnect_user_local(user).await;
            tracing::info!(user = %user, closed, "user disconnect requested by another node");
        }
        for face in &self.faces.0 {
            face.control(self, &command).await;
        }
        if let Some(forwarded) = command.fallback_command {
            self.fallback.deliver_forwarded(forwarded);
        }
    }

    fn malformed(&self) {
        self.stats.node.broker_malformed.fetch_add(1, Ordering::Relaxed);
    }

    fn figures(&self) -> Value {
        let totals = self.stats.totals();
        serde_json::json!({
            "uptime_seconds": self.stats.uptime_seconds(),
            "connections": totals.connections,
            "authenticated_connections": totals.authenticated,
            "channel_subscriptions": totals.channel_subscriptions,
            "room_memberships": totals.room_memberships,
            "deliveries": totals.deliveries,
            "publishes": totals.publishes,
            "messages_in": totals.messages_in,
            "deliveries_per_second": self.stats.latest().deliveries_per_second,
            "slow_consumer_disconnects": totals.slow_consumer_disconnects,
        })
    }
}

/// A shard reaches the node through its hub, counters and configuration.
impl crate::hub::shard::Host for Node {
    fn hub(&self) -> &Hub {
        &self.hub
    }

    fn stats(&self) -> &Stats {
        &self.stats
    }

    fn config(&self) -> &Config {
        &self.config
    }
}

/// Presence announces through the node's publish path.
impl crate::presence::Announce for Node {
    async fn announce(&self, target: Target, event: Value, exclude: Option<ConnId>) {
        let _ = self.publisher().publish(target, event, exclude).await;
    }

    async fn announce_events(&self, events: Vec<Arc<Event>>) {
        self.publisher().publish_events(events).await;
    }
}

/// The store's writer hands committed messages to the node's publish path.
impl crate::store::writer::Deliver for Node {
    async fn deliver_committed(&self, events: Vec<Arc<Event>>) {
        self.publisher().publish_events(events).await;
    }

    fn counters(&self) -> &NodeCounters {
        &self.stats.node
    }
}
