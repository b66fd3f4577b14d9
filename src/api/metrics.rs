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
            describe();
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty")
        }
    }
}

/// The process collector (CPU seconds, resident memory, open and maximum descriptors, threads,
/// start time), read from `/proc` at each scrape.
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// `# HELP` text for every metric Herald exports, and the constant build information.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    for (name, help) in GAUGES {
        describe_gauge!(*name, *help);
    }
    for (name, help) in COUNTERS {
        describe_counter!(*name, *help);
    }
    describe_histogram!(
        "herald_publish_to_write_seconds",
        metrics::Unit::Seconds,
        "Time from an event's arrival at the hub to its write to a connection's socket."
    );
    describe_histogram!("herald_writer_batch_rows", "Rows the store writer committed per batch.");
    describe_gauge!(
        "herald_build_info",
        "Always 1; the labels name the version, git revision and build date of the running binary."
    );
    let info = crate::build_info::VERSION;
    gauge!(
        "herald_build_info",
        "version" => info,
        "revision" => crate::build_info::GIT_REVISION,
        "build_date" => crate::build_info::BUILD_DATE
    )
    .set(1.0);
    PROCESS.get_or_init(metrics_process::Collector::default).describe();
}

const GAUGES: &[(&str, &str)] = &[
    ("herald_connections", "Client connections open on this node, every transport (see herald_transport_connections)."),
    ("herald_authenticated_connections", "Open connections with a verified token."),
    ("herald_channel_subscriptions", "Channel subscriptions held by open connections."),
    ("herald_room_memberships", "Room memberships held by open connections."),
    ("herald_outbound_queued_frames", "Frames queued for connections and not yet written."),
    ("herald_writer_queue_depth", "Rows waiting for the store writer."),
    ("herald_broker_connected", "1 when the broker can move events between nodes, else 0."),
    ("herald_uptime_seconds", "Seconds since the node started."),
    ("herald_transport_connections", "Open client connections by transport (websocket, sse, stream)."),
];

const COUNTERS: &[(&str, &str)] = &[
    ("herald_connections_total", "Client connections accepted since start, every transport."),
    ("herald_messages_in_total", "Messages received from clients."),
    ("herald_messages_out_total", "Frames sent to clients (deliveries and replies)."),
    ("herald_deliveries_total", "Events delivered to connections."),
    ("herald_replies_total", "Replies sent to clients' requests."),
    ("herald_publishes_total", "Events published (HTTP, Redis or client messages)."),
    ("herald_publish_errors_total", "Publishes refused (bad input) or failed (broker down)."),
    ("herald_drops_total", "Events dropped: slow-consumer disconnects and malformed broker messages."),
    ("herald_slow_consumer_disconnects_total", "Connections closed because their outbound queue filled (4008)."),
    ("herald_idle_disconnects_total", "Connections closed for idleness (4000)."),
    (
        "herald_write_cycles_total",
        "Write cycles shards entered: fan-out under load, each connection written at most once per hold (websocket.write_pacing).",
    ),
    ("herald_protocol_errors_total", "Connections closed for breaking the WebSocket protocol."),
    ("herald_client_errors_total", "Client messages refused with an error reply, by error code."),
    (
        "herald_client_messages_total",
        "Client messages of the Herald protocol by type: the built-in types, alias, forwarded, unknown, invalid.",
    ),
    (
        "herald_client_messages_refused_total",
        "Client messages refused (an error reply or a rate limit), by type as in herald_client_messages_total.",
    ),
    (
        "herald_connections_opened_total",
        "WebSocket connections opened, by endpoint path (the configured ones, /app/{key} for Pusher, other) \
         and transport (websocket, sse, stream, pusher).",
    ),
    ("herald_rate_limited_total", "Client messages refused by a rate limit."),
    ("herald_refused_connections_total", "Upgrades refused (limits, authentication, origin)."),
    ("herald_broker_malformed_total", "Broker messages that could not be read."),
    ("herald_stored_messages_total", "Chat messages committed to the store."),
    ("herald_stored_batches_total", "Store writer transactions committed."),
    ("herald_transport_connections_total", "Client connections accepted, by transport (websocket, sse, stream)."),
    (
        "herald_transport_slow_consumer_disconnects_total",
        "Slow-consumer disconnects (queue full), by transport (websocket, sse, stream).",
    ),
    ("herald_server_closes_total", "Connections Herald closed, by reason (slow_consumer, idle, protocol_error)."),
];

/// Renders the metrics.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String),
              (status = 503, description = "the metrics recorder is not installed", content_type = "text/plain", body = String)))]
pub async fn metrics(State(node): State<Arc<Node>>) -> Response {
    let Some(handle) = HANDLE.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "metrics recorder not installed\n").into_response();
    };
    if let Some(process) = PROCESS.get() {
        process.collect();
    }
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
    counter!("herald_write_cycles_total").absolute(t.write_cycles);
    counter!("herald_protocol_errors_total").absolute(t.protocol_errors);
    for code in crate::protocol::ErrorCode::ALL {
        counter!("herald_client_errors_total", "code" => code.as_str())
            .absolute(t.client_errors_by_code.get(code.index()).copied().unwrap_or(0));
    }
    for (index, (received, refused)) in t.messages_by_type.iter().zip(&t.refused_by_type).enumerate() {
        let label = crate::protocol::kinds::label(index);
        counter!("herald_client_messages_total", "type" => label).absolute(*received);
        counter!("herald_client_messages_refused_total", "type" => label).absolute(*refused);
    }
    for (endpoint, transport, count) in node.stats.endpoints.snapshot() {
        counter!("herald_connections_opened_total", "endpoint" => endpoint.to_string(), "transport" => transport)
            .absolute(count);
    }
    counter!("herald_rate_limited_total").absolute(t.rate_limited);
    counter!("herald_refused_connections_total").absolute(t.refused_connections);
    counter!("herald_broker_malformed_total").absolute(t.broker_malformed);
    counter!("herald_stored_messages_total").absolute(t.stored_messages);
    counter!("herald_stored_batches_total").absolute(t.stored_batches);
    for transport in crate::hub::event::Transport::ALL {
        let [open, accepted, slow] = t.by_transport[transport.index()];
        let name = transport.as_str();
        gauge!("herald_transport_connections", "transport" => name).set(open as f64);
        counter!("herald_transport_connections_total", "transport" => name).absolute(accepted);
        counter!("herald_transport_slow_consumer_disconnects_total", "transport" => name).absolute(slow);
    }
    // The same closes by reason, for one query over all of them.
    for (reason, count) in [
        ("slow_consumer", t.slow_consumer_disconnects),
        ("idle", t.idle_disconnects),
        ("protocol_error", t.protocol_errors),
    ] {
        counter!("herald_server_closes_total", "reason" => reason).absolute(count);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], stable_order(&handle.render())).into_response()
}

/// The exporter renders families, and the label sets of a family, in hash order, so two scrapes
/// differ in order; sorted, the page diffs cleanly and reads the same every time. Families are
/// blocks separated by a blank line; a histogram's or summary's samples keep their own order
/// (buckets ascending, then sum and count).
fn stable_order(text: &str) -> String {
    let mut families: Vec<(String, Vec<&str>)> = text
        .split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut lines: Vec<&str> = block.lines().filter(|l| !l.is_empty()).collect();
            let type_line = lines.iter().find(|l| l.starts_with("# TYPE ")).copied().unwrap_or_default();
            let name = type_line.split_whitespace().nth(2).map_or_else(
                || lines.first().and_then(|l| l.split(['{', ' ']).next()).unwrap_or_default().to_string(),
                str::to_string,
            );
            let ordered = type_line.ends_with(" histogram") || type_line.ends_with(" summary");
            if !ordered {
                let split = lines.iter().position(|l| !l.starts_with('#')).unwrap_or(lines.len());
                lines[split..].sort_unstable();
            }
            (name, lines)
        })
        .collect();
    families.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::with_capacity(text.len());
    for (_, lines) in families {
        for line in lines {
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::stable_order;

    #[test]
    fn families_and_label_sets_come_out_sorted() {
        let scrape = "# HELP b_total B.\n# TYPE b_total counter\nb_total{code=\"Z\"} 1\nb_total{code=\"A\"} 2\n\n\
                      # TYPE a_seconds histogram\na_seconds_bucket{le=\"0.5\"} 1\na_seconds_bucket{le=\"+Inf\"} 1\n\
                      a_seconds_sum 0.1\na_seconds_count 1\n\n";
        let sorted = stable_order(scrape);
        assert_eq!(
            sorted,
            "# TYPE a_seconds histogram\na_seconds_bucket{le=\"0.5\"} 1\na_seconds_bucket{le=\"+Inf\"} 1\n\
             a_seconds_sum 0.1\na_seconds_count 1\n\n\
             # HELP b_total B.\n# TYPE b_total counter\nb_total{code=\"A\"} 2\nb_total{code=\"Z\"} 1\n\n"
        );
        assert_eq!(stable_order(&sorted), sorted);
    }
}
