//! Requests for the application's backend: client messages Herald does not handle itself,
//! handed over with the sender's identity, and lifecycle events (connect, disconnect, join,
//! leave).
//!
//! Two ways out, both configured under `[upstream]`: a Redis stream that backend workers read
//! with consumer groups (`XADD … MAXLEN ~ n`), or a webhook URL that receives a JSON POST signed
//! with HMAC-SHA256 in `X-Herald-Signature: sha256=<hex>`. A forwarded request is acknowledged
//! (`request_accepted`) only once the stream holds it or the webhook answered 2xx. Lifecycle
//! events are not acknowledged to anyone, so they go through a bounded queue and are dropped and
//! counted when the webhook cannot keep up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::mpsc;

use tokio_util::sync::CancellationToken;

use crate::broker::redis::RedisBroker;
use crate::config::{LifecycleEvent, UpstreamConfig};

/// Lifecycle events waiting for the webhook; beyond this they are dropped.
const LIFECYCLE_QUEUE: usize = 10_000;

/// The header carrying the body's HMAC-SHA256.
pub const SIGNATURE_HEADER: &str = "X-Herald-Signature";
/// The header carrying the Unix time (seconds) at which the request was signed.
pub const TIMESTAMP_HEADER: &str = "X-Herald-Timestamp";
/// The header carrying the HMAC-SHA256 of `<timestamp>.<body>`: a receiver that checks it and
/// refuses old timestamps cannot be fed a recorded request again.
pub const TIMESTAMP_SIGNATURE_HEADER: &str = "X-Herald-Timestamp-Signature";
/// Deliveries of a lifecycle event before it is given up (1, 2, 4, 8 s apart).
const LIFECYCLE_ATTEMPTS: u32 = 5;

/// Why a request could not be handed to the backend.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The Redis stream refused the request or Redis is down.
    #[error("the request stream is unavailable: {0}")]
    Stream(String),
    /// The webhook could not be reached or did not answer in time.
    #[error("the backend webhook is unavailable: {0}")]
    Webhook(String),
    /// The webhook answered with an error status.
    #[error("the backend webhook answered {0}")]
    Refused(u16),
}

/// Where a request went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handed {
    /// Added to the stream with this entry id.
    Stream(String),
    /// Accepted by the webhook.
    Webhook,
}

/// The upstream service of a node.
pub struct Upstream {
    config: UpstreamConfig,
    /// This node's name, in lifecycle events.
    node_id: Arc<str>,
    /// The Redis broker for `upstream.redis_stream`, chosen once at start-up.
    redis: Option<Arc<RedisBroker>>,
    client: reqwest::Client,
    lifecycle: mpsc::Sender<Value>,
    lifecycle_rx: Mutex<Option<mpsc::Receiver<Value>>>,
    /// Lifecycle events dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Requests handed to the backend.
    pub forwarded: AtomicU64,
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Upstream {
    /// The service for a configuration, on the node named `node_id`, with the Redis broker when
    /// one runs (for `upstream.redis_stream`).
    pub fn new(config: &UpstreamConfig, node_id: Arc<str>, redis: Option<Arc<RedisBroker>>) -> Upstream {
        let (tx, rx) = mpsc::channel(LIFECYCLE_QUEUE);
        let client = reqwest::Client::builder().timeout(config.webhook_timeout).build().unwrap_or_default();
        Upstream {
            config: config.clone(),
            node_id,
            redis,
            client,
            lifecycle: tx,
            lifecycle_rx: Mutex::new(Some(rx)),
            dropped: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
        }
    }

    /// Hands a request to the backend: the stream when one is configured, else the webhook.
    pub async fn forward(&self, request: &Value) -> Result<Handed, UpstreamError> {
        let config = &self.config;
        let body = request.to_string();
        let handed = if let Some(stream) = &config.redis_stream {
            let redis = self.redis.as_deref().ok_or_else(|| UpstreamError::Stream("Redis is not configured".into()))?;
            let kind = request.get("type").and_then(Value::as_str).unwrap_or_default();
            let id: String = redis
                .query_as(
                    redis::cmd("XADD")
                        .arg(stream)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(config.stream_max_len)
                        .arg("*")
                        .arg("type")
                        .arg(kind)
                        .arg("data")
                        .arg(&body),
                )
                .await
                .map_err(|e| UpstreamError::Stream(e.to_string()))?;
            Handed::Stream(id)
        } else {
            self.post(config, body).await?;
            Handed::Webhook
        };
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        Ok(handed)
    }

    async fn post(&self, config: &UpstreamConfig, body: String) -> Result<(), UpstreamError> {
        let Some(url) = &config.webhook_url else { return Err(UpstreamError::Webhook("no webhook_url".into())) };
        let mut request = self.client.post(url).header("content-type", "application/json");
        if let Some(secret) = &config.webhook_secret {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs());
            let timestamp = now.unwrap_or_default().to_string();
            request = request
                .header(SIGNATURE_HEADER, sign(secret, body.as_bytes()))
                .header(TIMESTAMP_HEADER, &timestamp)
                .header(TIMESTAMP_SIGNATURE_HEADER, sign(secret, format!("{timestamp}.{body}").as_bytes()));
        }
        let response = request.body(body).send().await.map_err(|e| UpstreamError::Webhook(e.to_string()))?;
        if response.status().is_success() { Ok(()) } else { Err(UpstreamError::Refused(response.status().as_u16())) }
    }

    /// Queues a lifecycle event (`connect`, `disconnect`, `join`, `leave`) if it is configured.
    pub fn lifecycle(&self, event: LifecycleEvent, mut fields: Value) {
        if !self.config.lifecycle.contains(&event) {
            return;
        }
        let event = event.as_str();
        if let Some(map) = fields.as_object_mut() {
            map.insert("type".into(), Value::from(format!("herald.{event}")));
            map.insert("event".into(), Value::from(event));
            map.insert("node".into(), Value::from(&*self.node_id));
            map.insert("timestamp".into(), Value::from(crate::protocol::outbound::now()));
        }
        if self.lifecycle.try_send(fields).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Posts lifecycle events to the webhook in order, until shutdown. A failed delivery is retried
/// with backoff (the events behind it wait, so the order holds) before it is given up.
pub async fn run(upstream: Arc<Upstream>, shutdown: CancellationToken) {
    let Some(mut queue) = upstream.lifecycle_rx.lock().take() else { return };
    loop {
        let event = tokio::select! {
            event = queue.recv() => match event { Some(event) => event, None => return },
            _ = shutdown.cancelled() => return,
        };
        let body = event.to_string();
        let mut wait = std::time::Duration::from_secs(1);
        for attempt in 1..=LIFECYCLE_ATTEMPTS {
            match upstream.post(&upstream.config, body.clone()).await {
                Ok(()) => break,
                Err(e) if attempt == LIFECYCLE_ATTEMPTS => {
                    tracing::warn!(error = %e, "a lifecycle event did not reach the webhook; given up");
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "a lifecycle event did not reach the webhook; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    wait *= 2;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
