//! The HTTP API: publishing, admin, stats, health and metrics.

use serde_json::json;

use crate::common::{Herald, Options};

#[tokio::test]
async fn publish_requires_the_api_key() {
    let herald = Herald::start("").await;
    let http = reqwest::Client::new();
    let body = json!({"channel": "a", "event": {"type": "x"}});
    let response = http.post(herald.url("/api/publish")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["code"], "AUTHENTICATION_FAILED");
    let response = http.post(herald.url("/api/publish")).bearer_auth("wrong-key-123").json(&body).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = http
        .post(herald.url("/api/publish"))
        .header("x-api-key", crate::common::API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn without_a_key_admin_routes_answer_loopback_only_when_asked() {
    let herald =
        Herald::start_with(Options { no_api_key: true, ..Options::toml("[api]\nlocal_admin_without_key = true") })
            .await;
    let (status, _) = herald.post("/api/publish", json!({"channel": "a", "event": {}})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_publish_requests_get_clear_400s() {
    let herald = Herald::start("").await;
    let cases = [
        (json!({"channel": "a"}), "INVALID_JSON"),
        (json!({"channel": "a", "event": [1]}), "INVALID_EVENT"),
        (json!({"channel": "a", "event": "text"}), "INVALID_EVENT"),
        (json!({"event": {"type": "x"}}), "NO_TARGET"),
        (json!({"channel": "", "event": {}}), "INVALID_NAME"),
        (json!({"channel": "a", "event": {}, "surprise": 1}), "INVALID_JSON"),
        (json!({"channel": 5, "event": {}}), "INVALID_JSON"),
    ];
    for (body, code) in cases {
        let (status, reply) = herald.post("/api/publish", body.clone()).await;
        assert_eq!(status, 400, "{body} -> {reply}");
        assert_eq!(reply["code"], code, "{body} -> {reply}");
        assert_eq!(reply["success"], false);
    }
    let response = reqwest::Client::new()
        .post(herald.url("/api/publish"))
        .bearer_auth(crate::common::API_KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let (status, reply) = herald.get("/api/nowhere").await;
    assert_eq!(status, 404);
    assert_eq!(reply["code"], "NOT_FOUND");
}

/// Room and channel names in REST paths and queries are checked like the protocol's: a name no
/// client could join gets `400 INVALID_NAME`, not an answer about a room that cannot exist.
#[tokio::test]
async fn rest_reads_refuse_names_no_client_could_use() {
    let herald = Herald::start("").await;
    let long = "r".repeat(300);
    for path in [
        format!("/api/rooms/{long}/messages"),
        "/api/rooms/tab%09here/messages".to_string(),
        "/api/rooms/nul%00/messages".to_string(),
        format!("/api/search?q=hi&room_name={long}"),
        "/api/search?q=hi&room_name=a%01b".to_string(),
        format!("/messages?channel_id={long}"),
        "/messages?channel_id=".to_string(),
        format!("/api/history/channel/{long}"),
    ] {
        let (status, body) = herald.get(&path).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("INVALID_NAME")), "{path} → {body}");
    }
    let (status, _) = herald.get("/api/rooms/fine/messages").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn broadcast_to_several_channels_and_to_a_room() {
    let herald = Herald::start("").await;
    let mut a = herald.connect("/ws?channels=a").await;
    let mut b = herald.connect("/ws?channels=b").await;
    let mut room = herald.connect("/ws").await;
    room.request(json!({"type": "join_room", "room_id": "workspace_123"})).await;
    let (status, _) = herald.post("/api/broadcast", json!({"channels": ["a", "b"], "event": {"type": "both"}})).await;
    assert_eq!(status, 200);
    assert_eq!(a.recv_event().await["type"], "both");
    assert_eq!(b.recv_event().await["type"], "both");
    let (status, _) = herald
        .post(
            "/api/rooms/workspace_123/broadcast",
            json!({"type": "system_announcement", "title": "Maintenance Notice"}),
        )
        .await;
    assert_eq!(status, 200);
    let event = room.recv_event().await;
    assert_eq!(event["type"], "system_announcement");
    assert_eq!(event["title"], "Maintenance Notice");
}

#[tokio::test]
async fn connections_rooms_and_disconnect() {
    let herald = Herald::start("").await;
    let mut one = herald.connect("/ws?client_id=first&channels=x").await;
    one.request(json!({"type": "join_room", "room": "order_1"})).await;
    let mut two = herald.connect("/ws?client_id=second").await;
    two.request(json!({"type": "join_room", "room": "order_1"})).await;
    two.request(json!({"type": "join_room", "room": "order_2"})).await;

    let (status, list) = herald.get("/api/connections").await;
    assert_eq!(status, 200);
    assert_eq!(list["count"], 2);
    let first = list["connections"].as_array().unwrap().iter().find(|c| c["client_id"] == "first").unwrap().clone();
    assert_eq!(first["channels"], json!(["x"]));

    let (_, rooms) = herald.get("/api/rooms").await;
    assert_eq!(rooms["rooms"][0]["room_id"], "order_1");
    assert_eq!(rooms["rooms"][0]["user_count"], 2);
    assert_eq!(rooms["rooms"][1]["user_count"], 1);

    let id = first["connection_id"].as_str().unwrap();
    let (status, _) = herald.delete(&format!("/api/connections/{id}")).await;
    assert_eq!(status, 200);
    let (code, reason) = one.expect_close().await;
    assert_eq!(code, 4001);
    assert!(reason.contains("administrator"));
    let (status, _) = herald.delete("/api/connections/nobody-1").await;
    assert_eq!(status, 404);
    two.assert_alive().await;
}

#[tokio::test]
async fn stats_carry_both_documents_fields() {
    let herald = Herald::start("[server]\nmounts = [\"/ws\", \"/api/v1/ws\"]").await;
    let mut c = herald.connect("/ws?client_id=dash&channels=a,b").await;
    c.request(json!({"type": "join_room", "room": "r"})).await;
    for path in ["/ws/stats", "/api/v1/ws/stats", "/api/stats"] {
        let (status, stats) = herald.get(path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(stats["success"], true);
        assert_eq!(stats["connected_clients"], 1, "{path}: {stats}");
        assert_eq!(stats["stats"]["total_connections"], 1);
        assert_eq!(stats["stats"]["clients"], 1);
        assert_eq!(stats["stats"]["total_channel_subscriptions"], 2);
        assert_eq!(stats["stats"]["total_room_subscriptions"], 1);
        assert_eq!(stats["rooms_active"], 1);
        assert!(stats["messages_per_second"].is_number());
        assert!(stats["uptime_seconds"].is_number());
        assert_eq!(stats["stats"]["redis_connected"], false);
        assert!(stats["timestamp"].is_string());
    }
}

#[tokio::test]
async fn health_and_metrics() {
    let herald = Herald::start("").await;
    let _c = herald.connect("/ws").await;
    for path in ["/health", "/ws/health"] {
        let (status, health) = herald.get(path).await;
        assert_eq!(status, 200);
        assert_eq!(health["data"]["health_status"], "healthy");
        assert_eq!(health["data"]["connection_stats"]["total_connections"], 1);
    }
    let (status, text) = herald.get_text("/metrics").await;
    assert_eq!(status, 200);
    for metric in [
        "herald_connections 1",
        "herald_messages_out_total",
        "herald_slow_consumer_disconnects_total",
        "herald_publishes_total",
    ] {
        assert!(text.contains(metric), "{metric} missing from:\n{text}");
    }
}

#[tokio::test]
async fn the_stats_stream_pushes_the_dashboard_fields() {
    let herald = Herald::start("").await;
    let mut stream = herald.connect_raw("/ws/stats").await;
    for _ in 0..2 {
        let frame = stream.recv().await;
        for field in [
            "total_messages",
            "current_rps",
            "messages_per_second",
            "queue_depth",
            "queue_length",
            "total_batches",
            "avg_batch_size",
            "timestamp",
        ] {
            assert!(!frame[field].is_null(), "{field} missing from {frame}");
        }
    }
}

#[tokio::test]
async fn a_plain_get_on_a_websocket_endpoint_is_told_to_upgrade() {
    let herald = Herald::start("").await;
    let (status, body) = herald.get("/ws").await;
    assert_eq!(status, 426);
    assert_eq!(body["code"], "UPGRADE_REQUIRED");
}

#[tokio::test]
async fn shutdown_through_the_api() {
    let mut herald = Herald::start("").await;
    let mut client = herald.connect("/ws").await;
    let (status, _) = herald.post("/api/shutdown", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(client.expect_close().await.0, 1001);
    assert_eq!(herald.wait_exit().await, Some(0));
}

/// Schemathesis (property-based API testing from the OpenAPI document): no request it generates,
/// valid or not, gets a 5xx, and every status Herald answers is one the document lists.
#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_undocumented_status() {
    let herald = Herald::start("").await;
    let (status, doc) = herald.get("/api/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let python = std::env::var("HERALD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let beside_python = std::path::Path::new(&python).with_file_name("schemathesis");
    let schemathesis = if beside_python.exists() { beside_python } else { "schemathesis".into() };
    let output = tokio::process::Command::new(&schemathesis)
        .arg("run")
        .arg(herald.url("/api/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {}", crate::common::API_KEY)])
        .args(["--checks", "not_a_server_error,status_code_conformance"])
        // Shutting the node down would end the run (and is tested on its own above).
        .args(["--exclude-path-regex", "/shutdown$"])
        .args(["--max-examples", "40", "--seed", "20261123", "--request-timeout", "10"])
        .env("NO_COLOR", "1")
        // Its cache goes in the working directory: the node's temporary one, not the repository.
        .current_dir(herald.dir())
        .output()
        .await
        .unwrap_or_else(|e| panic!("{} must be installed (scripts/test installs it): {e}", schemathesis.display()));
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let operations: usize =
        doc["paths"].as_object().map_or(0, |paths| paths.values().filter_map(|p| p.as_object()).map(methods).sum());
    assert!(operations >= 24, "the document lists {operations} operations");
    let shutdown = doc["paths"].as_object().map_or(0, |paths| {
        paths
            .iter()
            .filter(|(path, _)| path.ends_with("/shutdown"))
            .filter_map(|(_, p)| p.as_object())
            .map(methods)
            .sum()
    });
    // With operations excluded, schemathesis also leaves out one more of its own accord (whichever
    // filter is used, 47 of 50 here): every operation but those few must have been tested.
    let figure = |label: &str| {
        report.lines().find_map(|l| l.trim().strip_prefix(label)).and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit()).find(|n| !n.is_empty()).and_then(|n| n.parse::<usize>().ok())
        })
    };
    let (selected, tested) = (figure("Selected: "), figure("Tested: "));
    assert_eq!(tested, selected, "schemathesis tested fewer operations than it selected:\n{report}");
    assert!(
        tested.is_some_and(|t| t + shutdown + 1 >= operations),
        "{tested:?} of {operations} documented operations ({shutdown} shutdown) were exercised:\n{report}"
    );
}

/// The operations of an OpenAPI path item (its other keys are parameters, summaries, …).
fn methods(item: &serde_json::Map<String, serde_json::Value>) -> usize {
    ["get", "put", "post", "delete", "patch", "head", "options"].iter().filter(|m| item.contains_key(**m)).count()
}
