//! Moving events between nodes.
//!
//! The broker is a seam: the hub neither knows nor cares which one runs. [`Broker::Local`] is the
//! embedded default (one node, events go straight to the hub, streams with history are logs in
//! memory); [`Broker::Redis`] carries events between nodes through Redis or a Redis Cluster, keeps
//! streams as Redis Streams, and takes publishers' `PUBLISH` messages in. What arrives from
//! outside goes to a [`BrokerHandler`], which is all the broker knows of the node.

pub mod keys;
pub mod redis;
pub mod stream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::hub::event::EventError;
use crate::hub::{Event, Hub, Target};
use crate::store::crypto::Keyring;
use stream::{Settings, Snapshot};

/// Why an event could not be handed to the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker's backend is unreachable.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker's configuration is unusable.
    #[error("broker configuration: {0}")]
    Config(String),
}

/// The broker this node runs.
pub enum Broker {
    /// In-process: this node is the whole system.
    Local(stream::MemoryStreams),
    /// Redis (standalone or cluster).
    Redis(Arc<redis::RedisBroker>),
}

/// What a broker hands to the node it serves, knowing nothing else about it (the broker
/// delivers, the node decides). Events are delivered through the [`Hub`] the publish methods
/// take; this is for what arrives from outside: publishers' messages and other nodes' commands.
pub trait BrokerHandler: Send + Sync + 'static {
    /// An event from another node (or from this one, back through the broker), for this node's
    /// connections.
    fn deliver(&self, event: Arc<Event>) -> impl Future<Output = ()> + Send;
    /// A publisher's message for `target`: prepared and published as the node's rules say.
    /// `owns(stream)` tells whether this node gives the stream's events their seq (each message
    /// reaches every node; only one sequences it).
    fn ingest(
        &self,
        target: Target,
        message: serde_json::Value,
        owns: &(dyn Fn(&str) -> bool + Sync),
    ) -> impl Future<Output = Result<(), EventError>> + Send;
    /// A command another node sent to this one.
    fn control(&self, command: redis::Control) -> impl Future<Output = ()> + Send;
    /// A message from the broker that could not be read was dropped.
    fn malformed(&self);
    /// This node's figures for the cluster's registry (a JSON object).
    fn figures(&self) -> serde_json::Value;
}

/// What `stats` and `health` report about the broker.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerStatus {
    /// `local`, `redis` or `redis-cluster`.
    pub kind: &'static str,
    /// Whether it can move events between nodes right now.
    pub connected: bool,
    /// Messages from Redis dropped because the node could not keep up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
}

/// How a publish went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Handed to every node.
    Everywhere,
    /// The broker was down: delivered to this node's connections only.
    LocalOnly,
}

impl Broker {
    /// Publishes an event to every node (this one included). When Redis is down the event still
    /// reaches this node's own connections.
    pub async fn publish(&self, hub: &Hub, node_id: &str, event: Arc<Event>) -> Result<Published, BrokerError> {
        match self {
            Broker::Local(_) => {
                hub.dispatch(event).await;
                Ok(Published::Everywhere)
            }
            Broker::Redis(redis) => match redis.publish(node_id, &event).await {
                Ok(()) => Ok(Published::Everywhere),
                Err(_) => {
                    hub.dispatch(event).await;
                    Ok(Published::LocalOnly)
                }
            },
        }
    }

    /// Publishes several events in order, in one round trip when the broker is Redis.
    pub async fn publish_batch(&self, hub: &Hub, node_id: &str, events: Vec<Arc<Event>>) -> Published {
        match self {
            Broker::Local(_) => {
                hub.dispatch_many(events).await;
                Published::Everywhere
            }
            Broker::Redis(redis) => match redis.publish_batch(node_id, &events).await {
                Ok(()) => Published::Everywhere,
                Err(_) => {
                    hub.dispatch_many(events).await;
                    Published::LocalOnly
                }
            },
        }
    }

    /// Publishes an event of a stream with history: gives it the stream's next seq, records it
    /// and hands it to every node, in one step per stream so that every node sees the stream in
    /// seq order. Redis keeps the stream on disk (RDB/AOF), so a sensitive event is recorded
    /// there only sealed with `keyring`; live delivery carries the plaintext, as it always has.
    /// When Redis is down there is no cluster-wide seq to give: local clients get the event
    /// without a position, as they would any event during an outage.
    pub async fn publish_in_stream(
        &self,
        hub: &Hub,
        node_id: &str,
        event: Arc<Event>,
        stream: Arc<str>,
        settings: Settings,
        keyring: &Keyring,
    ) -> Published {
        match self {
            Broker::Local(streams) => {
                let mut log = streams.lock(&stream).await;
                let pos = log.append(&stream, event.payload.clone(), settings);
                let _ = event.stream.set(pos);
                hub.dispatch(event).await;
                drop(log);
                Published::Everywhere
            }
            Broker::Redis(redis) => {
                let sealed = match event.sensitive.then(|| keyring.seal_text(&event.payload)) {
                    None => None,
                    Some(Ok(sealed)) => Some(sealed),
                    Some(Err(e)) => {
                        // Never recorded in the clear: delivered here, unrecorded.
                        tracing::warn!(stream = %stream, error = %e, "cannot seal a sensitive event; not recorded");
                        hub.dispatch(event).await;
                        return Published::LocalOnly;
                    }
                };
                let record = sealed.as_deref().map_or(&event.payload[..], str::as_bytes);
                match redis.append_and_publish(node_id, &event, record, &stream, settings).await {
                    Ok(()) => Published::Everywhere,
                    Err(_) => {
                        hub.dispatch(event).await;
                        Published::LocalOnly
                    }
                }
            }
        }
    }

    /// A stream's history now. Sealed entries are opened with `keyring`; one that no configured
    /// key opens is left out, so the gap makes a recovery incomplete rather than silently short.
    pub async fn stream_snapshot(
        &self,
        stream: &Arc<str>,
        settings: Settings,
        keyring: &Keyring,
    ) -> Result<Snapshot, BrokerError> {
        match self {
            Broker::Local(streams) => Ok(streams.lock(stream).await.snapshot(settings)),
            Broker::Redis(redis) => {
                let mut snapshot = redis.read_history(stream, settings).await?;
                snapshot.events.retain_mut(|(_, payload)| {
                    if !Keyring::is_sealed(payload) {
                        return true;
                    }
                    match keyring.open_text(payload) {
                        Ok(plain) => {
                            *payload = bytes::Bytes::from(plain);
                            true
                        }
                        Err(e) => {
                            tracing::warn!(stream = %stream, error = %e, "cannot open a sealed history entry");
                            false
                        }
                    }
                });
                Ok(snapshot)
            }
        }
    }

    /// Bounds the streams held in memory (see [`stream::MemoryStreams::sweep`]); Redis trims and
    /// expires its own keys, so there is nothing to do there. Returns how many were forgotten.
    pub fn sweep_streams(&self, now: Instant, settings_of: impl Fn(&str) -> Option<Settings>) -> usize {
        match self {
            Broker::Local(streams) => streams.sweep(now, settings_of),
            Broker::Redis(_) => 0,
        }
    }

    /// A handle on the Redis broker, for a part that chooses its shared state once, at start-up.
    pub fn redis_handle(&self) -> Option<Arc<redis::RedisBroker>> {
        match self {
            Broker::Redis(redis) => Some(redis.clone()),
            Broker::Local(_) => None,
        }
    }

    /// The Redis broker, if that is what runs.
    pub fn redis(&self) -> Option<&redis::RedisBroker> {
        match self {
            Broker::Redis(redis) => Some(redis.as_ref()),
            Broker::Local(_) => None,
        }
    }

    /// Where state shared by the cluster (presence, limits, cells, caches) lives right now: the
    /// Redis broker while it is connected. `None` means "this node alone": with the local broker,
    /// and during a Redis outage, when every feature falls back to its node-local state.
    pub fn shared_state(&self) -> Option<&redis::RedisBroker> {
        self.redis().filter(|r| r.is_connected())
    }

    /// Current state.
    pub fn status(&self) -> BrokerStatus {
        match self {
            Broker::Local(_) => BrokerStatus { kind: "local", connected: true, dropped: None },
            Broker::Redis(redis) => BrokerStatus {
                kind: match redis.mode() {
                    crate::config::RedisMode::Standalone => "redis",
                    crate::config::RedisMode::Cluster => "redis-cluster",
                },
                connected: redis.is_connected(),
                dropped: Some(redis.dropped()),
            },
        }
    }
}

/// Logs the first occurrence of a recurring problem and then at most one summary per interval,
/// so a burst of bad input produces a handful of lines, not one per message.
#[derive(Debug, Default)]
pub struct BurstLog {
    window_start: Option<Instant>,
    suppressed: u64,
}

impl BurstLog {
    const WINDOW: Duration = Duration::from_secs(10);

    /// Logs `what` (with `detail`) unless a line was written in the current window.
    pub fn warn(&mut self, what: &str, detail: &str) {
        match self.window_start {
            Some(start) if start.elapsed() < Self::WINDOW => self.suppressed += 1,
            _ => {
                if self.suppressed > 0 {
                    tracing::warn!(suppressed = self.suppressed, "{what} (and more like it): {detail}");
                } else {
                    tracing::warn!("{what}: {detail}");
                }
                self.window_start = Some(Instant::now());
                self.suppressed = 0;
            }
        }
    }
}
