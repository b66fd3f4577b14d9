//! Pusher webhooks: `channel_occupied`, `channel_vacated`, `member_added`, `member_removed`,
//! `client_event` and `cache_miss`, batched per app, signed (`X-Pusher-Key`,
//! `X-Pusher-Signature` = hex HMAC-SHA256 of the body with the app secret) and retried with
//! backoff.
//!
//! Events go into a bounded queue (a full queue drops and counts, it never blocks a shard); one
//! task gathers them into a batch per app for up to [`BATCH_WINDOW`] or [`BATCH_MAX`] events and
//! hands each batch to its own delivery task, so a slow or failing endpoint never holds back the
//! next batch or another app.
//!
//! **With Redis a batch outlives its node.** Before its first attempt a batch (URL, key,
//! signature, body) is recorded in the node's hash `{<key_prefix>:pw}:<incarnation>` (the node
//! listed in the set `{<key_prefix>:pw}:owners`) and deleted once delivered or given up. A node
//! that stops (shutdown, crash, kill) leaves its pending batches there; every node looks for
//! owners that are no longer live incarnations, and one Lua script moves a dead owner's batches
//! into the caller's own hash atomically, so exactly one survivor (or the node itself, restarted)
//! delivers them, with the same signed body. Delivery is at least once: a batch whose answer was
//! lost is sent again. What is lost with a node is only what it had not recorded yet: events
//! still inside their [`BATCH_WINDOW`] (and everything, without Redis or while Redis is down).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::App;
use super::PusherOf;
use crate::node::Node;

/// How long events wait to share a batch.
pub const BATCH_WINDOW: Duration = Duration::from_millis(250);
/// Most events in one batch.
pub const BATCH_MAX: usize = 100;
/// Deliveries of one batch before it is given up (with 1, 2, 4, … s between them).
pub const ATTEMPTS: u32 = 6;
const QUEUE: usize = 10_000;

/// One queued webhook event and its app.
type Queued = (Arc<App>, Value);

/// The node's webhook queue.
#[derive(Debug)]
pub struct Webhooks {
    tx: mpsc::Sender<Queued>,
    rx: Mutex<Option<mpsc::Receiver<Queued>>>,
    /// Events dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Batches given up after every attempt failed.
    pub failed: AtomicU64,
}

impl Default for Webhooks {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Webhooks { tx, rx: Mutex::new(Some(rx)), dropped: AtomicU64::new(0), failed: AtomicU64::new(0) }
    }
}

impl Webhooks {
    /// Queues `event` (`{"name": …, "channel": …, …}`) for the app's webhooks that want it.
    pub fn send(&self, app: &Arc<App>, event: Value) {
        let name = event["name"].as_str().unwrap_or_default();
        let wanted =
            app.config.webhooks.iter().any(|h| h.event_types.is_empty() || h.event_types.iter().any(|t| t == name));
        if wanted && self.tx.try_send((app.clone(), event)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The body of a batch: `{"time_ms": …, "events": […]}`.
pub fn body(time_ms: u64, events: &[Value]) -> String {
    json!({ "time_ms": time_ms, "events": events }).to_string()
}

/// One signed batch for one URL: what is delivered, and what Redis keeps until it is.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Batch {
    url: String,
    key: String,
    signature: String,
    body: String,
}

/// The hash of an incarnation's pending batches, and the set of incarnations that have one (one
/// hash tag, so that the claim script also runs on Redis Cluster).
fn pending_key(prefix: &str, incarnation: &str) -> String {
    format!("{{{prefix}:pw}}:{incarnation}")
}

fn owners_key(prefix: &str) -> String {
    format!("{{{prefix}:pw}}:owners")
}

/// Moves a dead owner's pending batches into the caller's hash and answers them (field, value,
/// field, value, …). KEYS: the dead owner's hash, the caller's, the owners set; ARGV: the dead
/// incarnation, the caller's.
const CLAIM: &str = r"
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do redis.call('HSET', KEYS[2], all[i], all[i + 1]) end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], ARGV[1])
if #all > 0 then redis.call('SADD', KEYS[3], ARGV[2]) end
return all
";

/// Records a batch in Redis before its first attempt; its field, or `None` without Redis.
async fn record(node: &Node, batch: &Batch) -> Option<String> {
    let redis = node.pusher().shared()?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let since_epoch = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let id = format!("{}-{}", since_epoch.as_millis(), NEXT.fetch_add(1, Ordering::Relaxed));
    let value = serde_json::to_string(batch).ok()?;
    let prefix = redis.key_prefix();
    let mut pipe = redis::pipe();
    pipe.cmd("SADD").arg(owners_key(prefix)).arg(redis.incarnation()).ignore();
    pipe.cmd("HSET").arg(pending_key(prefix, redis.incarnation())).arg(&id).arg(value).ignore();
    match redis.pipeline_as::<()>(&pipe).await {
        Ok(()) => Some(id),
        Err(e) => {
            tracing::debug!(error = %e, "could not record a Pusher webhook batch in Redis");
            None
        }
    }
}

/// Forgets a recorded batch (delivered or given up).
async fn forget(node: &Node, id: &str) {
    let Some(redis) = node.pusher().redis() else { return };
    let cmd = redis::cmd("HDEL").arg(pending_key(redis.key_prefix(), redis.incarnation())).arg(id).clone();
    if let Err(e) = redis.query_as::<()>(&cmd).await {
        tracing::debug!(error = %e, "could not forget a delivered Pusher webhook batch");
    }
}

/// Takes over the pending batches of owners that are no longer live and delivers them.
async fn claim_orphans(node: &Arc<Node>, client: &reqwest::Client) {
    let Some(redis) = node.pusher().shared() else { return };
    let prefix = redis.key_prefix();
    let owners: redis::RedisResult<Vec<String>> = redis.query_as(redis::cmd("SMEMBERS").arg(owners_key(prefix))).await;
    let (Ok(owners), Ok(live)) = (owners, redis.live_incarnations().await) else { return };
    for owner in owners.iter().filter(|o| o.as_str() != redis.incarnation() && !live.contains(*o)) {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CLAIM)
            .arg(3)
            .arg(pending_key(prefix, owner))
            .arg(pending_key(prefix, redis.incarnation()))
            .arg(owners_key(prefix))
            .arg(owner)
            .arg(redis.incarnation());
        let Ok(claimed) = redis.query_as::<Vec<String>>(&cmd).await else { continue };
        for pair in claimed.chunks(2) {
            let [id, value] = pair else { continue };
            match serde_json::from_str::<Batch>(value) {
                Ok(batch) => {
                    tracing::info!(url = %batch.url, from = %owner, "delivering a Pusher webhook batch a stopped node left");
                    tokio::spawn(deliver(node.clone(), client.clone(), batch, Some(id.clone())));
                }
                Err(_) => forget(node, id).await,
            }
        }
    }
}

/// Gathers and delivers webhook batches until the node stops.
pub async fn run(node: Arc<Node>) {
    let Some(mut rx) = node.pusher().webhooks.rx.lock().take() else { return };
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
    let mut orphans = tokio::time::interval((node.config.redis.node_timeout / 2).max(Duration::from_secs(1)));
    loop {
        let first = tokio::select! {
            item = rx.recv() => match item { Some(item) => item, None => return },
            _ = orphans.tick() => {
                claim_orphans(&node, &client).await;
                continue;
            }
            _ = node.shutdown.cancelled() => return,
        };
        let mut batches: HashMap<String, (Arc<App>, Vec<Value>)> = HashMap::new();
        let mut count = 1;
        batches.entry(first.0.config.id.clone()).or_insert_with(|| (first.0.clone(), Vec::new())).1.push(first.1);
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while count < BATCH_MAX {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((app, event))) => {
                    batches.entry(app.config.id.clone()).or_insert_with(|| (app.clone(), Vec::new())).1.push(event);
                    count += 1;
                }
                Ok(None) | Err(_) => break,
            }
        }
        for (_, (app, events)) in batches {
            for hook in &app.config.webhooks {
                let events: Vec<Value> = events
                    .iter()
                    .filter(|e| {
                        hook.event_types.is_empty()
                            || hook.event_types.iter().any(|t| Some(t.as_str()) == e["name"].as_str())
                    })
                    .cloned()
                    .collect();
                if events.is_empty() {
                    continue;
                }
                let text = body(crate::stats::unix_millis(), &events);
                let signature = super::sign::hmac_hex(&app.config.secret, text.as_bytes());
                let batch = Batch { url: hook.url.clone(), key: app.config.key.clone(), signature, body: text };
                let node = node.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    let id = record(&node, &batch).await;
                    deliver(node, client, batch, id).await;
                });
            }
        }
    }
}

/// Delivers a batch with retries; `id` is its record in Redis, forgotten once it is delivered or
/// given up, and kept when the node stops first (a survivor delivers it).
async fn deliver(node: Arc<Node>, client: reqwest::Client, batch: Batch, id: Option<String>) {
    let url = &batch.url;
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        let result = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-pusher-key", &batch.key)
            .header("x-pusher-signature", &batch.signature)
            .body(batch.body.clone())
            .send()
            .await;
        match result {
            Ok(response) if response.status().is_success() => {
                if let Some(id) = &id {
                    forget(&node, id).await;
                }
                return;
            }
            Ok(response) => tracing::debug!(%url, status = %response.status(), attempt, "webhook refused"),
            Err(e) => tracing::debug!(%url, error = %e, attempt, "webhook failed"),
        }
        if attempt == ATTEMPTS {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = node.shutdown.cancelled() => {
                if id.is_some() {
                    tracing::info!(%url, "a pending Pusher webhook batch is left in Redis for another node");
                    return;
                }
                break;
            }
        }
        wait = (wait * 2).min(Duration::from_secs(30));
    }
    if let Some(id) = &id {
        forget(&node, id).await;
    }
    node.pusher().webhooks.failed.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(%url, "a Pusher webhook batch was given up after {ATTEMPTS} attempts");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::pusher::{PusherAppConfig, PusherWebhookConfig};

    #[test]
    fn only_wanted_events_are_queued() {
        let hooks = Webhooks::default();
        let hook = PusherWebhookConfig { url: "http://x".into(), event_types: vec!["member_added".into()] };
        let app = Arc::new(App::new(PusherAppConfig { webhooks: vec![hook], ..Default::default() }));
        hooks.send(&app, json!({"name": "channel_occupied", "channel": "a"}));
        hooks.send(&app, json!({"name": "member_added", "channel": "presence-a", "user_id": "u"}));
        let mut rx = hooks.rx.lock().take().unwrap();
        assert_eq!(rx.try_recv().unwrap().1["name"], "member_added");
        assert!(rx.try_recv().is_err());
    }
}
