//! Moving events between nodes.
//!
//! The broker is a seam: the hub neither knows nor cares which one runs. [`Broker::Local`] is the
//! embedded default (one node, events go straight to the hub); [`Broker::Redis`] carries events
//! between nodes through Redis or a Redis Cluster and takes publishers' `PUBLISH` messages in.

pub mod keys;
pub mod redis;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::hub::Event;
use crate::node::Node;

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
    Local,
    /// Redis (standalone or cluster).
    Redis(Box<redis::RedisBroker>),
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
    pub async fn publish(&self, node: &Node, event: Arc<Event>) -> Result<Published, BrokerError> {
        match self {
            Broker::Local => {
                node.hub.dispatch(event).await;
                Ok(Published::Everywhere)
            }
            Broker::Redis(redis) => match redis.publish(&node.id, &event).await {
                Ok(()) => Ok(Published::Everywhere),
                Err(_) => {
                    node.hub.dispatch(event).await;
                    Ok(Published::LocalOnly)
                }
            },
        }
    }

    /// Publishes several events in order, in one round trip when the broker is Redis.
    pub async fn publish_batch(&self, node: &Node, events: Vec<Arc<Event>>) -> Published {
        match self {
            Broker::Local => {
                for event in events {
                    node.hub.dispatch(event).await;
                }
                Published::Everywhere
            }
            Broker::Redis(redis) => match redis.publish_batch(&node.id, &events).await {
                Ok(()) => Published::Everywhere,
                Err(_) => {
                    for event in events {
                        node.hub.dispatch(event).await;
                    }
                    Published::LocalOnly
                }
            },
        }
    }

    /// The Redis broker, if that is what runs.
    pub fn redis(&self) -> Option<&redis::RedisBroker> {
        match self {
            Broker::Redis(redis) => Some(redis),
            Broker::Local => None,
        }
    }

    /// Current state.
    pub fn status(&self) -> BrokerStatus {
        match self {
            Broker::Local => BrokerStatus { kind: "local", connected: true, dropped: None },
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
