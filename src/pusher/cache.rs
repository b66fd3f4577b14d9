//! The last event of each `cache-` channel, replayed to a new subscriber (or `pusher:cache_miss`).
//!
//! Kept for [`TTL`] (the protocol's 30 minutes). With Redis the event is stored under
//! `<key_prefix>:pk:<hub channel>` with that expiry, so a subscriber on any node gets the
//! cluster's last event; without Redis, in a map on the node, pruned of expired entries when it
//! grows past [`PRUNE_AT`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use super::PusherOf;
use crate::node::Node;

/// How long a cached event is replayed.
pub const TTL: Duration = Duration::from_secs(30 * 60);
/// Entries in the node's own map above which expired ones are dropped.
pub const PRUNE_AT: usize = 10_000;

/// The node's own last events, for nodes without Redis (or while it is down).
#[derive(Debug, Default)]
pub struct Cache {
    last: Mutex<HashMap<Arc<str>, (Instant, Bytes)>>,
}

fn key(node: &Node, hub: &str) -> Option<String> {
    node.pusher().redis().map(|r| crate::broker::keys::trailing(r.key_prefix(), "pk", hub))
}

/// Records `payload` as the last event of the cache channel `hub`.
pub async fn remember(node: &Node, hub: &Arc<str>, payload: &Bytes) {
    {
        let mut last = node.pusher().cache.last.lock();
        if last.len() >= PRUNE_AT {
            last.retain(|_, (at, _)| at.elapsed() < TTL);
        }
        last.insert(hub.clone(), (Instant::now(), payload.clone()));
    }
    if let (Some(redis), Some(key)) = (node.pusher().shared(), key(node, hub)) {
        let cmd = redis::cmd("SET").arg(key).arg(payload.as_ref()).arg("EX").arg(TTL.as_secs()).clone();
        if let Err(e) = redis.query_as::<()>(&cmd).await {
            tracing::debug!(error = %e, "could not store a cache channel's last event in Redis");
        }
    }
}

/// The last event of the cache channel `hub`, if one is fresh.
pub async fn recall(node: &Node, hub: &str) -> Option<Bytes> {
    if let (Some(redis), Some(key)) = (node.pusher().shared(), key(node, hub)) {
        let stored: redis::RedisResult<Option<Vec<u8>>> = redis.query_as(redis::cmd("GET").arg(key)).await;
        if let Ok(stored) = stored {
            return stored.map(Bytes::from);
        }
    }
    let last = node.pusher().cache.last.lock();
    last.get(hub).filter(|(at, _)| at.elapsed() < TTL).map(|(_, payload)| payload.clone())
}
