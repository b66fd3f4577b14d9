//! Store maintenance: retention (delete or archive old messages, periodically and on demand) and
//! the health probe that notices when a failing database answers again.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::writer::Health;
use super::{Store, StoreError, now_ms};

/// How often a failing database is probed.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Applies retention once with `max_age` (the configured one when `None`); returns how many
/// messages were removed (0 when retention is off).
pub async fn run_once(store: &Store, max_age: Option<Duration>) -> Result<u64, StoreError> {
    let config = &store.config;
    let max_age = match max_age {
        Some(age) => age,
        None if config.retention_max_age.is_zero() => return Ok(0),
        None => config.retention_max_age,
    };
    let now = now_ms();
    let cutoff = now - max_age.as_millis() as i64;
    let removed = store.retain(cutoff, config.retention_mode, now).await?;
    if removed > 0 {
        tracing::info!(removed, mode = ?config.retention_mode, max_age = %humantime::format_duration(max_age), "retention applied");
    }
    Ok(removed)
}

/// Runs retention every `database.retention_interval` and probes a failing database, until the
/// node shuts down (`shutdown`). `writer` is the batching writer's health flag, which the probe
/// sets again when the database answers.
pub async fn run(store: Arc<Store>, writer: Health, shutdown: CancellationToken) {
    let mut retention = tokio::time::interval(store.config.retention_interval);
    let mut probe = tokio::time::interval(PROBE_INTERVAL);
    loop {
        tokio::select! {
            _ = retention.tick() => {
                if let Err(e) = run_once(&store, None).await {
                    tracing::warn!(error = %e, "retention failed; will retry");
                }
            }
            _ = probe.tick() => {
                if !writer.is_healthy() && store.ping().await {
                    writer.set_healthy(true);
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
}
