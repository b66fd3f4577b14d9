//! The node registry: every node records its figures in one hash, from which the cluster-wide
//! statistics and the list of live nodes (who owns which stream) are read.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::RedisBroker;
use crate::broker::{BrokerError, BrokerHandler};

/// How often this node records its figures for cluster-wide statistics, and when a record is stale.
pub(super) const REGISTRY_INTERVAL: Duration = Duration::from_secs(2);

/// Rendezvous weight of a node for a stream (stable across processes and versions).
fn owner_weight(incarnation: &str, stream: &str) -> u64 {
    use sha1::{Digest, Sha1};
    let mut sha = Sha1::new();
    sha.update(incarnation.as_bytes());
    sha.update(b"\n");
    sha.update(stream.as_bytes());
    let digest = sha.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

impl RedisBroker {
    /// Whether this node owns a stream: of all live nodes it has the highest rendezvous weight.
    /// The owner alone sequences publishers' raw messages for the stream.
    pub fn owns(&self, stream: &str) -> bool {
        let live = self.live.lock();
        let mine = owner_weight(&self.incarnation, stream);
        !live.iter().any(|other| other != &self.incarnation && owner_weight(other, stream) > mine)
    }

    pub(super) async fn refresh_live(&self) {
        if let Ok(live) = self.live_incarnations().await {
            let mut live: Vec<String> = live.into_iter().collect();
            live.sort();
            *self.live.lock() = live;
        }
    }

    /// This run of this node.
    pub fn incarnation(&self) -> &str {
        &self.incarnation
    }

    fn stale_ms(&self) -> u64 {
        self.config.node_timeout.as_millis() as u64
    }

    /// Incarnations whose registry record is fresh.
    pub fn live_from_registry<'a>(&self, records: impl Iterator<Item = &'a String>) -> HashSet<String> {
        let now = crate::stats::unix_millis();
        records
            .filter_map(|json| serde_json::from_str::<serde_json::Value>(json).ok())
            .filter(|r| r["updated_ms"].as_u64().is_some_and(|t| now.saturating_sub(t) < self.stale_ms()))
            .filter_map(|r| r["incarnation"].as_str().map(String::from))
            .collect()
    }

    /// Incarnations of live nodes, read from the registry now.
    pub async fn live_incarnations(&self) -> Result<HashSet<String>, BrokerError> {
        let records: HashMap<String, String> = self
            .query_as(redis::cmd("HGETALL").arg(self.registry_key()))
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        Ok(self.live_from_registry(records.values()))
    }

    /// The hash in which every node records its figures.
    pub fn registry_key(&self) -> String {
        crate::broker::keys::fixed(&self.config.key_prefix, "nodes")
    }

    /// Figures of every live node, as recorded in the registry.
    pub async fn cluster_nodes(&self) -> Result<Vec<serde_json::Value>, BrokerError> {
        let key = crate::broker::keys::fixed(&self.config.key_prefix, "nodes");
        let cmd = redis::cmd("HGETALL").arg(&key).to_owned();
        let value = self.commands.query(&cmd).await.map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let now = crate::stats::unix_millis();
        let mut nodes = Vec::new();
        let mut stale = Vec::new();
        let pairs: Vec<(String, String)> = redis::from_redis_value(value).unwrap_or_default();
        for (id, json) in pairs {
            match serde_json::from_str::<serde_json::Value>(&json) {
                Ok(record)
                    if record["updated_ms"].as_u64().is_some_and(|t| now.saturating_sub(t) < self.stale_ms()) =>
                {
                    nodes.push(record)
                }
                _ => stale.push(id),
            }
        }
        if !stale.is_empty() {
            let cmd = redis::cmd("HDEL").arg(&key).arg(stale).to_owned();
            let _ = self.commands.query(&cmd).await;
        }
        nodes.sort_by(|a, b| a["node"].as_str().cmp(&b["node"].as_str()));
        Ok(nodes)
    }

    pub(super) async fn record_node(&self, handler: &impl BrokerHandler) {
        let mut record = handler.figures();
        if let Some(fields) = record.as_object_mut() {
            fields.insert("node".into(), (*self.node_id).into());
            fields.insert("incarnation".into(), self.incarnation.clone().into());
            fields.insert("updated_ms".into(), crate::stats::unix_millis().into());
        }
        let cmd = redis::cmd("HSET").arg(self.registry_key()).arg(&*self.node_id).arg(record.to_string()).to_owned();
        let _ = self.commands.query(&cmd).await;
    }
}
