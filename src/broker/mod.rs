//! Moving events between nodes.
//!
//! The broker is a seam: the hub neither knows nor cares which one runs. [`Broker::Local`] is the
//! embedded default (one node, events go straight to the hub).

use std::sync::Arc;

use serde::Serialize;

use crate::hub::Event;
use crate::node::Node;

/// Why an event could not be handed to the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker's backend is unreachable.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// The broker this node runs.
pub enum Broker {
    /// In-process: this node is the whole system.
    Local,
}

/// What `stats` and `health` report about the broker.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerStatus {
    /// `local`, `redis` or `redis-cluster`.
    pub kind: &'static str,
    /// Whether it can move events right now.
    pub connected: bool,
}

impl Broker {
    /// Publishes an event to every node (this one included).
    pub async fn publish(&self, node: &Node, event: Arc<Event>) -> Result<(), BrokerError> {
        match self {
            Broker::Local => {
                node.hub.dispatch(event).await;
                Ok(())
            }
        }
    }

    /// Current state.
    pub fn status(&self) -> BrokerStatus {
        match self {
            Broker::Local => BrokerStatus {
                kind: "local",
                connected: true,
            },
        }
    }
}
