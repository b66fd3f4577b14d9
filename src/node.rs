//! A node: the parts assembled, shared by every shard, handler and background task.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::broker::redis::Control;
use crate::broker::{Broker, BrokerError, BrokerHandler, Published};
use crate::config::Config;
use crate::hub::event::{EventError, compact_object, prepare_payload};
use crate::hub::rules::ChannelRules;
use crate::hub::{ConnId, Event, Hub, Target};
use crate::limits::Limits;
use crate::protocol::validate_name;
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

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The event or its target is invalid.
    #[error(transparent)]
    Invalid(#[from] EventError),
    /// The broker could not take it.
    #[error(transparent)]
    Broker(#[from] BrokerError),
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

    /// Checks a target's names and applies its channel's `broadcast` rule.
    fn check_target(&self, mut target: Target) -> Result<Target, EventError> {
        for (what, name) in [("channel", &target.channel), ("room", &target.room), ("user", &target.user)] {
            if let Some(name) = name {
                validate_name(what, name).map_err(|e| EventError::InvalidName(e.message))?;
            }
        }
        if target.is_empty() {
            return Err(EventError::NoTarget);
        }
        if target.channel.as_deref().and_then(|c| self.rules.get(c)).is_some_and(|r| r.broadcast) {
            target.broadcast = true;
        }
        Ok(target)
    }

    /// Resolves where an event goes and serializes it, applying the channel's rules (default
    /// `type`, broadcast to everyone, shape). This runs once per event, before the fan-out.
    pub fn prepare(&self, target: Target, event: Value) -> Result<(Target, Bytes), EventError> {
        let Value::Object(event) = event else {
            return Err(EventError::NotAnObject);
        };
        let target = self.check_target(target)?;
        let rule = target.channel.as_deref().and_then(|c| self.rules.get(c));
        let (event, kind) = match rule.and_then(|r| r.shape.as_deref()) {
            Some(shape) => (shape.apply(event), shape.kind().or(rule.and_then(|r| r.default_type.as_deref()))),
            None => (event, rule.and_then(|r| r.default_type.as_deref())),
        };
        Ok((target, prepare_payload(event, kind)))
    }

    /// [`Node::prepare`] for an event still in its request's text: when the channel has no
    /// default `type` and no shape, the object's text is kept (compacted) instead of being
    /// parsed into a `Value` and serialized again; otherwise it is parsed and prepared as usual.
    pub fn prepare_raw(&self, target: Target, event: &RawValue) -> Result<(Target, Bytes), EventError> {
        let rule = target.channel.as_deref().and_then(|c| self.rules.get(c));
        if rule.is_some_and(|r| r.default_type.is_some() || r.shape.is_some()) {
            let value: Value = serde_json::from_str(event.get()).map_err(|_| EventError::NotAnObject)?;
            return self.prepare(target, value);
        }
        let payload = compact_object(event.get()).ok_or(EventError::NotAnObject)?;
        let target = self.check_target(target)?;
        Ok((target, payload))
    }

    /// Validates and publishes an event to every node.
    pub async fn publish(
        &self,
        target: Target,
        event: Value,
        exclude: Option<ConnId>,
    ) -> Result<Published, PublishError> {
        self.publish_prepared(self.prepare(target, event), exclude).await
    }

    /// [`Node::publish`] for an event still in its request's text (see [`Node::prepare_raw`]).
    pub async fn publish_raw(&self, target: Target, event: &RawValue) -> Result<Published, PublishError> {
        self.publish_prepared(self.prepare_raw(target, event), None).await
    }

    /// Publishes what [`Node::prepare`] or [`Node::prepare_raw`] made of an event, counting a
    /// refused one as a publish error.
    async fn publish_prepared(
        &self,
        prepared: Result<(Target, Bytes), EventError>,
        exclude: Option<ConnId>,
    ) -> Result<Published, PublishError> {
        let (target, payload) = prepared.inspect_err(|_| {
            self.stats.node.publish_errors.fetch_add(1, Ordering::Relaxed);
        })?;
        let event = match exclude {
            Some(conn) => Event::excluding(target, payload, conn),
            None => Event::new(target, payload),
        };
        self.publish_event(event).await
    }

    /// Publishes prepared events in order (one broker round trip).
    pub async fn publish_events(&self, events: Vec<Arc<Event>>) -> Published {
        if events.is_empty() {
            // An empty pipeline is an error to Redis, which would read as an outage.
            return Published::Everywhere;
        }
        let count = events.len() as u64;
        if events.iter().any(|e| self.history.stream_for(&e.target).is_some()) {
            // Events of streams with history are sequenced one by one, in order.
            let mut published = Published::Everywhere;
            for event in events {
                if let Ok(Published::LocalOnly) = self.publish_event(event).await {
                    published = Published::LocalOnly;
                }
            }
            return published;
        }
        for event in &events {
            self.note_room_event(&event.target);
        }
        let published = self.broker.publish_batch(&self.hub, &self.id, events).await;
        self.stats.node.publishes.fetch_add(count, Ordering::Relaxed);
        published
    }

    /// Counts an event sent to a room for the bare rooms list, when one is configured.
    pub fn note_room_event(&self, target: &Target) {
        if let (true, Some(room)) = (self.config.api.bare_room_list, &target.room) {
            self.presence.activity.message(room, crate::store::now_ms());
        }
    }

    /// Publishes a prepared event.
    pub async fn publish_event(&self, event: Arc<Event>) -> Result<Published, PublishError> {
        self.note_room_event(&event.target);
        let result = match self.history.stream_for(&event.target) {
            Some((stream, settings)) => crate::streams::publish(self, event, stream, settings).await,
            None => self.broker.publish(&self.hub, &self.id, event).await,
        };
        match result {
            Ok(published) => {
                self.stats.node.publishes.fetch_add(1, Ordering::Relaxed);
                Ok(published)
            }
            Err(e) => {
                self.stats.node.publish_errors.fetch_add(1, Ordering::Relaxed);
                Err(e.into())
            }
        }
    }
}

/// The node is what its broker delivers to: events of other nodes go to the hub, publishers'
/// messages through [`Node::prepare`] and history, other nodes' commands to the hub and the
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
        let (target, payload) = self.prepare(target, message)?;
        self.note_room_event(&target);
        if let Some((stream, settings)) = self.history.stream_for(&target) {
            // Every node receives the publisher's message; only the stream's owner gives it a
            // seq and republishes it to the nodes, so each event is sequenced once.
            if owns(&stream) {
                self.stats.node.publishes.fetch_add(1, Ordering::Relaxed);
                let _ = crate::streams::publish(self, Event::new(target, payload), stream, settings).await;
            }
            return Ok(());
        }
        self.stats.node.publishes.fetch_add(1, Ordering::Relaxed);
        self.hub.dispatch(Event::new(target, payload)).await;
        Ok(())
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

/// Publishing into a stream with history needs the broker, the hub, the node's id and keyring.
impl crate::streams::Sequencer for Node {
    fn broker(&self) -> &Broker {
        &self.broker
    }

    fn hub(&self) -> &Hub {
        &self.hub
    }

    fn node_id(&self) -> &Arc<str> {
        &self.id
    }

    fn keyring(&self) -> &crate::store::crypto::Keyring {
        self.store.keyring()
    }
}

/// Presence announces through the node's publish path.
impl crate::presence::Announce for Node {
    async fn announce(&self, target: Target, event: Value, exclude: Option<ConnId>) {
        let _ = self.publish(target, event, exclude).await;
    }

    async fn announce_events(&self, events: Vec<Arc<Event>>) {
        self.publish_events(events).await;
    }
}

/// The store's writer hands committed messages to the node's publish path.
impl crate::store::writer::Deliver for Node {
    async fn deliver_committed(&self, events: Vec<Arc<Event>>) {
        self.publish_events(events).await;
    }

    fn counters(&self) -> &NodeCounters {
        &self.stats.node
    }
}
