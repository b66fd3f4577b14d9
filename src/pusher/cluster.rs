//! Channel occupancy across nodes: subscription counts for the HTTP API, and
//! `channel_occupied` / `channel_vacated` webhooks once for the cluster.
//!
//! Each node counts its own Pusher subscriptions per channel. A mirror task writes every change
//! to `<key_prefix>:pc:<app id>` (field `<channel> <incarnation>`, value the count; deleted at 0)
//! and rewrites all of them every half `redis.node_timeout`, which heals a Redis restart. Counts
//! are read as this node's own plus the fields of the other live incarnations (the node
//! registry), so a dead node's subscribers stop counting once the registry forgets it.
//!
//! The task also decides the webhooks: when this node's count of a channel goes from 0 it sends
//! `channel_occupied` unless another live node already has the channel, and when it drops to 0
//! `channel_vacated` unless another still has it. Two nodes gaining (or losing) the same
//! channel in the same instant may both report it; that window is a Redis round trip wide.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::mpsc;

use super::App;
use crate::broker::redis::RedisBroker;
use crate::node::Node;

/// A channel's app and a subscription count.
type Counted = (Arc<App>, usize);

/// This node's Pusher subscriptions per channel (hub name).
#[derive(Debug)]
pub struct Occupancy {
    counts: Mutex<HashMap<Arc<str>, Counted>>,
    dirty: mpsc::UnboundedSender<Arc<str>>,
    dirty_rx: Mutex<Option<mpsc::UnboundedReceiver<Arc<str>>>>,
}

impl Default for Occupancy {
    fn default() -> Self {
        let (dirty, rx) = mpsc::unbounded_channel();
        Occupancy { counts: Mutex::default(), dirty, dirty_rx: Mutex::new(Some(rx)) }
    }
}

impl Occupancy {
    /// Counts a subscription of `app`'s channel `hub`.
    pub fn add(&self, app: &Arc<App>, hub: &Arc<str>) {
        self.counts.lock().entry(hub.clone()).or_insert_with(|| (app.clone(), 0)).1 += 1;
        let _ = self.dirty.send(hub.clone());
    }

    /// Counts an unsubscription.
    pub fn remove(&self, hub: &Arc<str>) {
        let mut counts = self.counts.lock();
        if let Some(entry) = counts.get_mut(hub) {
            entry.1 -= 1;
            if entry.1 == 0 {
                counts.remove(hub);
            }
        }
        drop(counts);
        let _ = self.dirty.send(hub.clone());
    }

    /// This node's subscription counts of `app`'s channels, by the app's own names.
    pub fn local(&self, app: &App) -> BTreeMap<String, usize> {
        self.counts
            .lock()
            .iter()
            .filter_map(|(hub, (_, n))| app.own_name(hub).map(|name| (name.to_string(), *n)))
            .collect()
    }

    fn current(&self, hub: &str) -> usize {
        self.counts.lock().get(hub).map_or(0, |(_, n)| *n)
    }
}

fn key(redis: &RedisBroker, app: &App) -> String {
    crate::broker::keys::trailing(redis.key_prefix(), "pc", &app.config.id)
}

/// Subscription counts of `app`'s channels across the cluster, by the app's own names.
pub async fn counts(node: &Node, app: &App) -> BTreeMap<String, usize> {
    let mut out = node.pusher.occupancy.local(app);
    let Some(redis) = node.broker.shared_state() else { return out };
    let fields: redis::RedisResult<HashMap<String, String>> =
        redis.query_as(redis::cmd("HGETALL").arg(key(redis, app))).await;
    let (Ok(fields), Ok(live)) = (fields, redis.live_incarnations().await) else { return out };
    for (field, count) in fields {
        if let Some((channel, incarnation)) = field.rsplit_once(' ')
            && incarnation != redis.incarnation()
            && live.contains(incarnation)
        {
            *out.entry(channel.to_string()).or_insert(0) += count.parse::<usize>().unwrap_or(0);
        }
    }
    out.retain(|_, n| *n > 0);
    out
}

/// Whether another live node has subscribers of `channel`.
async fn elsewhere(redis: &RedisBroker, app: &App, channel: &str) -> bool {
    let Ok(live) = redis.live_incarnations().await else { return false };
    let others: Vec<String> =
        live.iter().filter(|i| i.as_str() != redis.incarnation()).map(|i| format!("{channel} {i}")).collect();
    if others.is_empty() {
        return false;
    }
    let counts: redis::RedisResult<Vec<Option<String>>> =
        redis.query_as(redis::cmd("HMGET").arg(key(redis, app)).arg(&others)).await;
    counts.is_ok_and(|c| c.iter().flatten().any(|n| n.parse::<usize>().unwrap_or(0) > 0))
}

/// Mirrors this node's counts to Redis and sends the occupancy webhooks, until the node stops.
pub async fn run(node: Arc<Node>) {
    let Some(mut rx) = node.pusher.occupancy.dirty_rx.lock().take() else { return };
    // What this node last reported per channel, with the channel's app.
    let mut written: HashMap<Arc<str>, Counted> = HashMap::new();
    let mut refresh = tokio::time::interval((node.config.redis.node_timeout / 2).max(Duration::from_secs(1)));
    loop {
        let mut dirty = HashSet::new();
        tokio::select! {
            item = rx.recv() => match item {
                Some(hub) => { dirty.insert(hub); }
                None => return,
            },
            _ = refresh.tick() => {
                rewrite(&node, &written).await;
                super::presence::sweep(&node).await;
                continue;
            }
            _ = node.shutdown.cancelled() => return,
        }
        while let Ok(hub) = rx.try_recv() {
            dirty.insert(hub);
        }
        for hub in dirty {
            let now = node.pusher.occupancy.current(&hub);
            let app = match (written.get(&hub), node.pusher.occupancy.counts.lock().get(&hub)) {
                (Some((app, _)), _) | (None, Some((app, _))) => app.clone(),
                (None, None) => continue,
            };
            let before = written.get(&hub).map_or(0, |(_, n)| *n);
            if now == before {
                continue;
            }
            let channel = app.own_name(&hub).unwrap_or_default().to_string();
            let redis = node.broker.shared_state();
            if let Some(redis) = redis {
                let field = format!("{channel} {}", redis.incarnation());
                let cmd = if now == 0 {
                    redis::cmd("HDEL").arg(key(redis, &app)).arg(&field).clone()
                } else {
                    redis::cmd("HSET").arg(key(redis, &app)).arg(&field).arg(now).clone()
                };
                if let Err(e) = redis.query_as::<()>(&cmd).await {
                    tracing::debug!(error = %e, "could not record Pusher channel counts in Redis");
                }
            }
            let changed = (before == 0) != (now == 0);
            let shared = match redis {
                Some(redis) if changed => elsewhere(redis, &app, &channel).await,
                _ => false,
            };
            if changed && !shared {
                let name = if now > 0 { "channel_occupied" } else { "channel_vacated" };
                node.pusher.webhooks.send(&app, json!({ "name": name, "channel": channel }));
            }
            if now == 0 {
                written.remove(&hub);
            } else {
                written.insert(hub, (app, now));
            }
        }
    }
}

/// Writes every count this node holds again (after a Redis restart or flush they would be gone).
async fn rewrite(node: &Node, written: &HashMap<Arc<str>, Counted>) {
    let Some(redis) = node.broker.shared_state() else { return };
    if written.is_empty() {
        return;
    }
    let mut pipe = redis::pipe();
    for (hub, (app, n)) in written {
        let channel = app.own_name(hub).unwrap_or_default();
        pipe.cmd("HSET").arg(key(redis, app)).arg(format!("{channel} {}", redis.incarnation())).arg(*n).ignore();
    }
    if let Err(e) = redis.pipeline_as::<()>(&pipe).await {
        tracing::debug!(error = %e, "could not refresh Pusher channel counts in Redis");
    }
}
