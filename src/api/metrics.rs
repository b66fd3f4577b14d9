//! `GET /metrics` in the Prometheus text format.
//!
//! Herald's own counters live in [`crate::stats`] (cheap, per shard); at scrape time they are
//! copied into the `metrics` registry, whose exporter renders them together with histograms
//! recorded directly (fan-out latency).

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::node::Node;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder; later calls are no-ops.
pub fn install() {
    if HANDLE.get().is_some() {
        return;
    }
    let builder = PrometheusBuilder::new()
        .set_buckets(&[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0])
        .unwrap_or_else(|_| PrometheusBuilder::new());
    match builder.install_recorder() {
        Ok(handle) => {
            let _ = HANDLE.set(handle);
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty")
        }
    }
}

/// Renders the metrics.
pub async fn metrics(State(node): State<Arc<Node>>) -> Response {
    let Some(handle) = HANDLE.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "metrics recorder not installed\n").into_response();
    };
    let t = node.stats.totals();
    gauge!("herald_connections").set(t.connections as f64);
    gauge!("herald_authenticated_connections").set(t.authenticated as f64);
    gauge!("herald_channel_subscriptions").set(t.channel_subscriptions as f64);
    gauge!("herald_room_memberships").set(t.room_memberships as f64);
    gauge!("herald_outbound_queued_frames").set(t.queued_frames as f64);
    gauge!("herald_writer_queue_depth").set(t.writer_queue_depth as f64);
    gauge!("herald_broker_connected").set(if node.broker.status().connected { 1.0 } else { 0.0 });
    gauge!("herald_uptime_seconds").set(node.stats.uptime_seconds() as f64);
    counter!("herald_connections_total").absolute(t.connections_total);
    counter!("herald_messages_in_total").absolute(t.messages_in);
    counter!("herald_messages_out_total").absolute(t.deliveries + t.replies);
    counter!("herald_deliveries_total").absolute(t.deliveries);
    counter!("herald_replies_total").absolute(t.replies);
    counter!("herald_publishes_total").absolute(t.publishes);
    counter!("herald_publish_errors_total").absolute(t.publish_errors);
    counter!("herald_drops_total").absolute(t.slow_consumer_disconnects + t.broker_malformed);
    counter!("herald_slow_consumer_disconnects_total").absolute(t.slow_consumer_disconnects);
    counter!("herald_idle_disconnects_total").absolute(t.idle_disconnects);
    counter!("herald_protocol_errors_total").absolute(t.protocol_errors);
    counter!("herald_client_errors_total").absolute(t.client_errors);
    counter!("herald_rate_limited_total").absolute(t.rate_limited);
    counter!("herald_refused_connections_total").absolute(t.refused_connections);
    counter!("herald_broker_malformed_total").absolute(t.broker_malformed);
    counter!("herald_stored_messages_total").absolute(t.stored_messages);
    counter!("herald_stored_batches_total").absolute(t.stored_batches);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
}
