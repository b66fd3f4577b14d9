//! What an operator runs Herald by: liveness and readiness probes, Prometheus conventions.

use crate::common::redis::RedisServer;
use crate::common::{Herald, Options, eventually};

/// Polls `/readyz` until it answers `want` (the broker connects in the background).
async fn readyz_becomes(herald: &Herald, want: u16) -> serde_json::Value {
    eventually(format_args!("/readyz answers {want}"), async || {
        let (status, body) = herald.get("/readyz").await;
        (status == want).then_some(body)
    })
    .await
}

#[tokio::test]
async fn embedded_node_is_live_and_ready() {
    let herald = Herald::start("").await;
    let (status, body) = herald.get("/livez").await;
    assert_eq!((status, &body["status"]), (200, &serde_json::json!("ok")), "{body}");
    let (status, body) = herald.get("/readyz").await;
    assert_eq!((status, &body["status"]), (200, &serde_json::json!("ready")), "{body}");
}

#[tokio::test]
async fn readiness_follows_redis() {
    let mut redis = RedisServer::start().await;
    let herald = Herald::start_with(Options::default().env("HERALD_REDIS_URL", &redis.url())).await;
    readyz_becomes(&herald, 200).await;

    redis.kill();
    let body = readyz_becomes(&herald, 503).await;
    assert!(body["reasons"].to_string().contains("broker"), "{body}");
    // Not ready is not dead: the node still serves and must not be restarted for it.
    assert_eq!(herald.get("/livez").await.0, 200);

    redis.restart().await;
    readyz_becomes(&herald, 200).await;
}

#[tokio::test]
async fn metrics_carry_help_build_info_and_process_figures() {
    let herald = Herald::start("").await;
    // Two refusals with different codes, each counted under its own.
    let mut client = herald.connect("/ws").await;
    client.send_text("not json").await;
    assert_eq!(client.recv().await["code"], "INVALID_JSON");
    client.send_json(serde_json::json!({"type": "no_such_type"})).await;
    assert_eq!(client.recv().await["code"], "UNKNOWN_MESSAGE_TYPE");
    let (status, text) = herald.get_text("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "herald_client_errors_total{code=\"INVALID_JSON\"} 1",
        "herald_client_errors_total{code=\"UNKNOWN_MESSAGE_TYPE\"} 1",
        "herald_client_errors_total{code=\"PERMISSION_DENIED\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
    }
    for line in [
        "# HELP herald_connections ",
        "# HELP herald_deliveries_total ",
        "# TYPE herald_deliveries_total counter",
        "# HELP herald_build_info ",
        "# HELP process_resident_memory_bytes ",
        "# HELP process_open_fds ",
        "# HELP process_cpu_seconds_total ",
        "herald_server_closes_total{reason=\"slow_consumer\"} ",
        "herald_server_closes_total{reason=\"idle\"} ",
    ] {
        assert!(text.lines().any(|l| l.starts_with(line)), "no line starting {line:?} in:\n{text}");
    }
    let build = text.lines().find(|l| l.starts_with("herald_build_info{")).unwrap_or_else(|| panic!("{text}"));
    assert!(build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))), "{build}");
    assert!(build.contains("revision=\"") && build.contains("build_date=\"") && build.ends_with(" 1"), "{build}");
    let rss = text
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no resident memory figure in:\n{text}"));
    assert!(rss > 1_000_000.0, "resident memory {rss}");
    let fds = text.lines().find_map(|l| l.strip_prefix("process_open_fds ")).unwrap_or_else(|| panic!("{text}"));
    assert!(fds.trim().parse::<f64>().is_ok_and(|n| n > 0.0), "{fds}");
    // Stable order: the same series in the same order at every scrape (values aside).
    let series = |text: &str| -> Vec<String> {
        text.lines().map(|l| l.rsplit_once(' ').map_or(l, |(series, _)| series).to_string()).collect()
    };
    for _ in 0..3 {
        let (_, again) = herald.get_text("/metrics").await;
        assert_eq!(series(&again), series(&text), "the order changed between scrapes");
    }
}

/// Client messages are counted by type (received and refused), from a closed set of labels:
/// a client's own type names never become a label. Connections are counted by endpoint and
/// transport.
#[tokio::test]
async fn metrics_count_messages_by_type_and_connections_by_endpoint() {
    let herald = Herald::start("[[endpoints]]\npath = \"/campaigns\"\nchannels = [\"campaigns\"]\n").await;
    let mut client = herald.connect("/ws").await;
    client.request(serde_json::json!({"type": "ping"})).await;
    client.request(serde_json::json!({"type": "ping"})).await;
    client.request(serde_json::json!({"type": "subscribe", "channels": ["a"]})).await;
    // Refused: a bad subscribe, a type nobody handles, a frame that is no message.
    client.send_json(serde_json::json!({"type": "subscribe"})).await;
    assert_eq!(client.recv().await["type"], "error");
    client.send_json(serde_json::json!({"type": "made_up_by_the_client"})).await;
    assert_eq!(client.recv().await["code"], "UNKNOWN_MESSAGE_TYPE");
    client.send_text("not json").await;
    assert_eq!(client.recv().await["code"], "INVALID_JSON");
    let _campaigns = herald.connect("/ws/campaigns").await;

    let (_, text) = herald.get_text("/metrics").await;
    for line in [
        "herald_client_messages_total{type=\"ping\"} 2",
        "herald_client_messages_refused_total{type=\"ping\"} 0",
        "herald_client_messages_total{type=\"subscribe\"} 2",
        "herald_client_messages_refused_total{type=\"subscribe\"} 1",
        "herald_client_messages_total{type=\"unknown\"} 1",
        "herald_client_messages_refused_total{type=\"unknown\"} 1",
        "herald_client_messages_total{type=\"invalid\"} 1",
        "herald_client_messages_total{type=\"history\"} 0",
        "herald_connections_opened_total{endpoint=\"/ws\",transport=\"websocket\"} 1",
        "herald_connections_opened_total{endpoint=\"/ws/campaigns\",transport=\"websocket\"} 1",
        "herald_connections_opened_total{endpoint=\"/ws\",transport=\"sse\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
    }
    assert!(!text.contains("made_up_by_the_client"), "a client's type became a label:\n{text}");
    for family in
        ["herald_client_messages_total", "herald_client_messages_refused_total", "herald_connections_opened_total"]
    {
        assert!(text.contains(&format!("# HELP {family} ")), "no HELP for {family}");
    }
}

/// The Grafana dashboard in the repository asks only for metrics Herald exports.
#[tokio::test]
async fn the_grafana_dashboard_uses_exported_metrics() {
    let herald = Herald::start("").await;
    // One delivery, so that the latency histogram has a sample and is rendered.
    let mut client = herald.connect("/ws?channels=grafana").await;
    herald.publish(serde_json::json!({"channel": "grafana", "event": {"type": "tick"}})).await;
    assert_eq!(client.recv().await["type"], "tick");
    let (_, text) = herald.get_text("/metrics").await;
    let exported: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../deploy/grafana-dashboard.json")).expect("dashboard JSON");
    let mut asked = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let names = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("herald_") || w.starts_with("process_"));
            for name in names {
                assert!(exported.contains(name), "{name} (panel {}) is not exported", panel["title"]);
                asked += 1;
            }
        }
    }
    assert!(asked >= 12, "only {asked} metrics found in the dashboard");
}

/// `herald probe`, the image's health check: 0 for a 2xx answer, 1 for anything else.
#[tokio::test]
async fn probe_reports_by_exit_status() {
    let herald = Herald::start("").await;
    let probe = |url: String| async move {
        tokio::process::Command::new(crate::common::herald_bin())
            .args(["probe", &url])
            .output()
            .await
            .expect("run herald probe")
            .status
            .code()
    };
    assert_eq!(probe(herald.url("/livez")).await, Some(0));
    assert_eq!(probe(herald.url("/no-such-route")).await, Some(1));
    let closed = crate::common::redis::free_port();
    assert_eq!(probe(format!("http://127.0.0.1:{closed}/livez")).await, Some(1));
}

/// The dashboard's own statistics stream is not a client: not in `total_connections` (it showed
/// the dashboard counting itself), but still held to `limits.max_connections`.
#[tokio::test]
async fn a_stats_stream_is_not_counted_as_a_client() {
    let herald = Herald::start("[limits]\nmax_connections = 2").await;
    let mut stream = herald.connect_raw("/ws/stats").await;
    let frame = stream.recv().await;
    assert_eq!(frame["total_connections"], 0, "{frame}");
    let (_, stats) = herald.get("/api/stats").await;
    assert_eq!(stats["total_connections"], 0, "{stats}");

    let _client = herald.connect("/ws").await;
    let (_, stats) = herald.get("/api/stats").await;
    assert_eq!(stats["total_connections"], 1, "{stats}");

    // One client and one stream reach the cap of two: the next upgrade is refused.
    let refused = tokio_tungstenite::connect_async(herald.ws_url("/ws")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected 503, got {:?}", other.map(|(_, r)| r.status())),
    }
}
