//! Pusher webhooks: `channel_occupied`, `channel_vacated`, `member_added`, `member_removed`,
//! `client_event` and `cache_miss`, batched per app, signed (`X-Pusher-Key`,
//! `X-Pusher-Signature` = hex HMAC-SHA256 of the body with the app secret) and retried with
//! backoff.
//!
//! Events go into a bounded queue (a full queue drops and counts, it never blocks a shard); one
//! task gathers them into a batch per app for up to [`BATCH_WINDOW`] or [`BATCH_MAX`] events and
//! hands each batch to its own delivery task, so a slow or failing endpoint never holds back the
//! next batch or another app.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::App;
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

/// Gathers and delivers webhook batches until the node stops.
pub async fn run(node: Arc<Node>) {
    let Some(mut rx) = node.pusher.webhooks.rx.lock().take() else { return };
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
    loop {
        let first = tokio::select! {
            item = rx.recv() => match item { Some(item) => item, None => return },
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
                tokio::spawn(deliver(
                    node.clone(),
                    client.clone(),
                    hook.url.clone(),
                    app.config.key.clone(),
                    signature,
                    text,
                ));
            }
        }
    }
}

async fn deliver(node: Arc<Node>, client: reqwest::Client, url: String, key: String, signature: String, body: String) {
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        let result = client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-pusher-key", &key)
            .header("x-pusher-signature", &signature)
            .body(body.clone())
            .send()
            .await;
        match result {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => tracing::debug!(%url, status = %response.status(), attempt, "webhook refused"),
            Err(e) => tracing::debug!(%url, error = %e, attempt, "webhook failed"),
        }
        if attempt == ATTEMPTS {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = node.shutdown.cancelled() => break,
        }
        wait = (wait * 2).min(Duration::from_secs(30));
    }
    node.pusher.webhooks.failed.fetch_add(1, Ordering::Relaxed);
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
