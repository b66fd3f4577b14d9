//! Channel occupancy across nodes: subscription counts for the HTTP API, and
//! `channel_occupied` / `channel_vacated` webhooks once for the cluster.
//!
//! Each node counts its own Pusher subscriptions per channel. A mirror task writes every change
//! to `<key_prefix>:pc:<app id>` (field `<channel> <incarnation>`, value the count; deleted at 0)
//! and rewrites all of them every half `redis.node_timeout`, which heals a Redis restart. Counts
//! are read as this node's own plus the fields of the other live incarnations (the node
//! registry), so a dead node's subscribers stop counting once the registry forgets it.
//!
//! The webhooks are decided in Redis, so that each is sent once for the cluster: next to the
//! count fields the hash holds one flag per occupied channel (field `<channel> ~`; `~` is never
//! an incarnation, so readers skip it). One Lua script writes a node's count and, atomically,
//! sets the flag when it was not set (that node sends `channel_occupied`) or, when the count
//! drops to 0 and no other live node has the channel, deletes it (that node sends
//! `channel_vacated`). Every node also sweeps the hashes for fields of dead incarnations: the
//! node whose `HDEL` of such a field wins runs the same check, so a channel whose subscribers
//! were all on a node that died is vacated once, after `redis.node_timeout`. Without Redis the
//! node's own counts decide.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::mpsc;

use super::App;
use super::PusherOf;
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
    let mut out = node.pusher().occupancy.local(app);
    let Some(redis) = node.pusher().shared() else { return out };
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

/// The flag field of an occupied channel in the counts hash.
fn flag(channel: &str) -> String {
    format!("{channel} ~")
}

/// Records this node's count of a channel and decides the cluster's webhook, atomically.
/// KEYS[1]: the app's counts hash; ARGV: the channel, this node's field, its count (0: gone),
/// then the other live incarnations. Answers 1 (send `channel_occupied`), -1 (send
/// `channel_vacated`) or 0.
const RECORD: &str = r"
local flag = ARGV[1] .. ' ~'
if tonumber(ARGV[3]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  return redis.call('HSETNX', KEYS[1], flag, '1')
end
redis.call('HDEL', KEYS[1], ARGV[2])
for i = 4, #ARGV do
  if (tonumber(redis.call('HGET', KEYS[1], ARGV[1] .. ' ' .. ARGV[i])) or 0) > 0 then return 0 end
end
return -redis.call('HDEL', KEYS[1], flag)
";

/// Removes a dead incarnation's count field; the one caller whose `HDEL` removed it learns
/// whether that emptied the channel (-1: send `channel_vacated`). KEYS[1]: the counts hash;
/// ARGV: the dead field, the channel, then the live incarnations.
const FORGET: &str = r"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
for i = 3, #ARGV do
  if (tonumber(redis.call('HGET', KEYS[1], ARGV[2] .. ' ' .. ARGV[i])) or 0) > 0 then return 0 end
end
return -redis.call('HDEL', KEYS[1], ARGV[2] .. ' ~')
";

/// Writes this node's count of `channel` and answers which webhook, if any, this node sends.
async fn record(redis: &RedisBroker, app: &App, channel: &str, now: usize) -> Result<i64, String> {
    let live = redis.live_incarnations().await.map_err(|e| e.to_string())?;
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(RECORD).arg(1).arg(key(redis, app)).arg(channel).arg(format!("{channel} {}", redis.incarnation())).arg(now);
    for incarnation in live.iter().filter(|i| i.as_str() != redis.incarnation()) {
        cmd.arg(incarnation);
    }
    redis.query_as(&cmd).await.map_err(|e| e.to_string())
}

/// Deletes the count fields of dead incarnations from every app's hash, and sends
/// `channel_vacated` for each channel that this leaves with no subscriber in the cluster.
async fn forget_dead(node: &Node) {
    let Some(redis) = node.pusher().shared() else { return };
    let Ok(live) = redis.live_incarnations().await else { return };
    for app in node.pusher().apps() {
        let fields: redis::RedisResult<Vec<String>> = redis.query_as(redis::cmd("HKEYS").arg(key(redis, app))).await;
        let Ok(fields) = fields else { continue };
        for field in fields {
            let Some((channel, incarnation)) = field.rsplit_once(' ') else { continue };
            if incarnation == "~" || live.contains(incarnation) {
                continue;
            }
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(FORGET).arg(1).arg(key(redis, app)).arg(&field).arg(channel);
            for incarnation in &live {
                cmd.arg(incarnation);
            }
            if let Ok(-1) = redis.query_as::<i64>(&cmd).await {
                node.pusher().webhooks.send(app, json!({ "name": "channel_vacated", "channel": channel }));
            }
        }
    }
}

/// Mirrors this node's counts to Redis and sends the occupancy webhooks, until the node stops.
pub async fn run(node: Arc<Node>) {
    let Some(mut rx) = node.pusher().occupancy.dirty_rx.lock().take() else { return };
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
                forget_dead(&node).await;
                super::presence::sweep(&node).await;
                continue;
            }
            _ = node.shutdown.cancelled() => return,
        }
        while let Ok(hub) = rx.try_recv() {
            dirty.insert(hub);
        }
        for hub in dirty {
            let now = node.pusher().occupancy.current(&hub);
            let app = match (written.get(&hub), node.pusher().occupancy.counts.lock().get(&hub)) {
                (Some((app, _)), _) | (None, Some((app, _))) => app.clone(),
                (None, None) => continue,
            };
            let before = written.get(&hub).map_or(0, |(_, n)| *n);
            if now == before {
                continue;
            }
            let channel = app.own_name(&hub).unwrap_or_default().to_string();
            let changed = (before == 0) != (now == 0);
            // Without Redis (or when it fails) this node's own view decides.
            let own_view = match (changed, now > 0) {
                (false, _) => 0,
                (true, true) => 1,
                (true, false) => -1,
            };
            let decision = match node.pusher().shared() {
                Some(redis) if changed => record(redis, &app, &channel, now).await.unwrap_or_else(|e| {
                    tracing::debug!(error = %e, "could not record Pusher channel counts in Redis");
                    own_view
                }),
                Some(redis) => {
                    let field = format!("{channel} {}", redis.incarnation());
                    let cmd = redis::cmd("HSET").arg(key(redis, &app)).arg(&field).arg(now).clone();
                    if let Err(e) = redis.query_as::<()>(&cmd).await {
                        tracing::debug!(error = %e, "could not record Pusher channel counts in Redis");
                    }
                    0
                }
                None => own_view,
            };
            if decision != 0 {
                let name = if decision > 0 { "channel_occupied" } else { "channel_vacated" };
                node.pusher().webhooks.send(&app, json!({ "name": name, "channel": channel }));
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
    let Some(redis) = node.pusher().shared() else { return };
    if written.is_empty() {
        return;
    }
    let mut pipe = redis::pipe();
    for (hub, (app, n)) in written {
        let channel = app.own_name(hub).unwrap_or_default();
        pipe.cmd("HSET").arg(key(redis, app)).arg(format!("{channel} {}", redis.incarnation())).arg(*n).ignore();
        // The cluster was told this channel is occupied; after a flush the flag comes back with
        // the count, so that its `channel_vacated` is still sent.
        pipe.cmd("HSETNX").arg(key(redis, app)).arg(flag(channel)).arg(1).ignore();
    }
    if let Err(e) = redis.pipeline_as::<()>(&pipe).await {
        tracing::debug!(error = %e, "could not refresh Pusher channel counts in Redis");
    }
}
