//! The seed documents' own client code, run as written against Herald.

use std::process::Stdio;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::common::redis::RedisServer;
use crate::common::{Herald, Options, WAIT};

/// Runs a seed script with its hard-coded `localhost:PORT` pointed at the test server: Python
/// (`HERALD_TEST_PYTHON`), or bash for `.sh`.
async fn run_seed_script(
    herald: &Herald,
    script: &str,
    original_host: &str,
) -> (tokio::process::Child, tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) {
    run_seed_script_with(herald, script, &[(original_host, &herald.addr.to_string())]).await
}

/// The same, with other replacements too (a token the document leaves as a placeholder).
async fn run_seed_script_with(
    herald: &Herald,
    script: &str,
    replacements: &[(&str, &str)],
) -> (tokio::process::Child, tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) {
    let source =
        std::fs::read_to_string(format!("{}/tests/seeds/{script}", env!("CARGO_MANIFEST_DIR"))).expect("seed script");
    let pointed = replacements.iter().fold(source, |text, (from, to)| text.replace(from, to));
    let path = herald.dir().join(script);
    std::fs::write(&path, pointed).expect("write script");
    let python = std::env::var("HERALD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut command = match script.ends_with(".sh") {
        true => Command::new("bash"),
        false => {
            let mut python = Command::new(python);
            python.arg("-u");
            python
        }
    };
    let mut child = command
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 must be installed (the test command installs it)");
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    (child, lines)
}

async fn expect_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    wanted: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            let hit = line.contains(wanted);
            seen.push(line);
            if hit {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "the script never printed {wanted:?} (is the `websockets` Python package installed?); it printed:\n{}",
        seen.join("\n")
    );
    seen
}

#[tokio::test]
async fn campaign_document_python_client_works_unchanged() {
    let herald = Herald::start(include_str!("../../examples/campaign-events.toml")).await;
    let (_child, mut lines) = run_seed_script(&herald, "doc000_python_client.py", "localhost:8000").await;
    expect_line(&mut lines, "Connected to WebSocket").await;
    // The welcome and the subscription acknowledgement take the script's `else` branch.
    expect_line(&mut lines, "'type': 'subscribed'").await;
    herald
        .publish(json!({"channel": "campaigns", "event": {
            "type": "campaign:launched", "campaign_id": 123, "campaign_name": "Q1 Outreach",
            "total_recipients": 500, "room": "campaign:123", "timestamp": "2024-01-15T10:30:00Z"}}))
        .await;
    expect_line(&mut lines, "Campaign launched: Q1 Outreach").await;
    herald
        .publish(json!({"channel": "scrapers", "event": {
            "type": "scraper:progress", "scraper_id": "scrape_abc123", "percent": 50.0, "room": "scraper:scrape_abc123"}}))
        .await;
    expect_line(&mut lines, "Scraper progress: 50.0%").await;
}

#[tokio::test]
async fn job_updates_document_python_client_works_unchanged() {
    let herald = Herald::start(include_str!("../../examples/job-updates.toml")).await;
    let (_child, mut lines) = run_seed_script(&herald, "doc002_python_client.py", "localhost:8080").await;
    expect_line(&mut lines, "Connected to WebSocket server").await;
    herald.wait_for_total("connections", |n| n == 1).await;
    // The worker's bare payload, as the document's redis-cli line publishes it.
    herald
        .publish(json!({"channel": "jobs:updates", "event": {"job_id": "test-123", "status": "completed", "data": {"success": true}}}))
        .await;
    expect_line(&mut lines, "Job test-123: completed").await;
    expect_line(&mut lines, "\"success\": true").await;
}

/// Waits until a node has made its pattern subscription for publishers.
async fn wait_pattern_subscribed(redis: &RedisServer) {
    crate::common::until("herald subscribes to its publisher pattern", async || {
        redis.cli(&["PUBSUB", "NUMPAT"]).is_some_and(|n| n.trim().parse::<u64>().is_ok_and(|n| n >= 1))
    })
    .await;
}

#[tokio::test]
async fn job_updates_document_worker_message_reaches_its_clients_in_the_documents_shape() {
    let redis = RedisServer::start().await;
    let herald = Herald::start_with(
        Options::toml(include_str!("../../examples/job-updates.toml")).env("HERALD_REDIS_URL", &redis.url()),
    )
    .await;
    let (_child, mut lines) = run_seed_script(&herald, "doc002_python_client.py", "localhost:8080").await;
    expect_line(&mut lines, "Connected to WebSocket server").await;
    // A plain client too: nothing arrives on connect, and the first frame is the job update.
    let mut plain = herald.connect_raw("/ws").await;
    herald.wait_for_total("connections", |n| n == 2).await;
    wait_pattern_subscribed(&redis).await;
    // The worker's message, as the document's "Redis Message Format" gives it.
    let worker = json!({
        "event": "job_update",
        "job_id": "550e8400-e29b-41d4-a716-446655440000",
        "timestamp": 1699369800,
        "data": {"job_id": "550e8400-e29b-41d4-a716-446655440000", "status": "completed",
                 "result": {"accounts_created": 5, "success": true}}
    });
    redis.publish("botrix:jobs:updates", &worker.to_string());
    expect_line(&mut lines, "Job 550e8400-e29b-41d4-a716-446655440000: completed").await;
    expect_line(&mut lines, "\"accounts_created\": 5").await;
    let first = plain.recv().await;
    assert_eq!(first["type"], "job_update", "the first frame is the update itself: {first}");
    assert_eq!(first["status"], "completed");
    assert_eq!(first["job_id"], "550e8400-e29b-41d4-a716-446655440000");
    assert_eq!(first["data"]["status"], "completed", "data is passed on whole");
    assert!(first.get("event").is_none(), "the worker's routing field is dropped: {first}");
    // The document's redis-cli line, with status at the top.
    redis.publish("botrix:jobs:updates", r#"{"job_id":"test-123","status":"completed","data":{"success":true}}"#);
    expect_line(&mut lines, "Job test-123: completed").await;
    let second = plain.recv().await;
    assert_eq!((second["type"].as_str(), second["status"].as_str()), (Some("job_update"), Some("completed")));
}

/// The dashboard's stats stream, read until `pred` holds for a frame.
async fn stats_frame_where(
    stream: &mut crate::common::Client,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    tokio::time::timeout(WAIT, async {
        loop {
            let frame = stream.recv().await;
            if pred(&frame) {
                return frame;
            }
        }
    })
    .await
    .expect("the stats stream never showed the expected figures")
}

#[tokio::test]
async fn dashboard_document_curl_loop_is_queued_without_a_key_and_counted_over_ten_seconds() {
    // The harness gives the node an api.key; the example's ingestion route does not need it.
    let herald = Herald::start(include_str!("../../examples/message-dashboard.toml")).await;
    let mut stream = herald.connect_raw("/ws/stats").await;
    let first = stream.recv().await;
    for field in
        ["total_messages", "current_rps", "messages_per_second", "queue_depth", "total_batches", "avg_batch_size"]
    {
        assert!(first[field].is_number(), "{field} in the first frame: {first}");
    }
    let (mut child, mut lines) = run_seed_script(&herald, "doc004_send_test_messages.sh", "localhost:8000").await;
    let mut replies = Vec::new();
    while let Ok(Some(line)) = tokio::time::timeout(WAIT, lines.next_line()).await.expect("curl output") {
        replies.push(line);
    }
    assert!(child.wait().await.expect("bash").success());
    let queued = replies.concat().matches(r#""status":"queued""#).count();
    assert_eq!(queued, 100, "every curl call is answered as queued: {replies:?}");
    // Committed in batches of 50, then still visible in the 10-second rate.
    let frame = stats_frame_where(&mut stream, |f| f["total_messages"] == 100).await;
    assert!(frame["total_batches"].as_u64().is_some_and(|b| b >= 2), "{frame}");
    // The rate follows with the next per-second sample.
    let frame = stats_frame_where(&mut stream, |f| f["current_rps"].as_f64().is_some_and(|r| r > 0.0)).await;
    assert_eq!(frame["messages_per_second"], frame["current_rps"]);
    // Seconds later the one-second rate is back to 0; the document's 10-second window is not.
    let committed_at = frame["uptime_seconds"].as_u64().expect("uptime_seconds");
    let later = stats_frame_where(&mut stream, |f| f["uptime_seconds"].as_u64() >= Some(committed_at + 3)).await;
    assert!(later["current_rps"].as_f64().is_some_and(|r| r > 0.0), "{later}");
}

#[tokio::test]
async fn dashboard_ingestion_answers_on_enqueue_refuses_a_full_queue_and_can_wait_for_the_commit() {
    // An hour's linger: an answer that waited for the commit would never come in time.
    let herald = Herald::start_with(
        Options::toml(include_str!("../../examples/message-dashboard.toml"))
            .env("HERALD_DATABASE__BATCH_LINGER", "1h")
            .env("HERALD_DATABASE__QUEUE_CAPACITY", "60"),
    )
    .await;
    let http = reqwest::Client::new();
    let one = json!({"user_id": 1, "channel_id": 1, "content": "Test 1"});
    let response = http.post(herald.url("/messages")).json(&one).send().await.expect("post");
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!((body["status"].as_str(), body["count"].as_u64()), (Some("queued"), Some(1)));
    // More than the queue holds at once: refused at once, all or nothing.
    let many: Vec<serde_json::Value> =
        (0..61).map(|i| json!({"user_id": i, "channel_id": 1, "content": format!("m{i}")})).collect();
    let response = http.post(herald.url("/messages")).json(&many).send().await.expect("post");
    assert_eq!(response.status(), 503);
    // Bad input is still refused before anything is queued.
    let response = http.post(herald.url("/messages")).json(&json!({"channel_id": 1})).send().await.expect("post");
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn dashboard_ingestion_has_its_own_key_independent_of_the_api_key() {
    let herald = Herald::start_with(
        Options::toml(include_str!("../../examples/message-dashboard.toml"))
            .env("HERALD_INGEST__ACCESS", "key")
            .env("HERALD_INGEST__KEY", "ingest-secret-1")
            .env("HERALD_INGEST__WAIT_FOR_COMMIT", "true")
            .env("HERALD_DATABASE__BATCH_LINGER", "10ms"),
    )
    .await;
    let http = reqwest::Client::new();
    let one = json!({"user_id": 1, "channel_id": 1, "content": "Test 1"});
    let post = |key: Option<&str>| {
        let request = http.post(herald.url("/messages")).json(&one);
        match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
        .send()
    };
    assert_eq!(post(None).await.expect("post").status(), 401);
    assert_eq!(
        post(Some(crate::common::API_KEY)).await.expect("post").status(),
        401,
        "the API key is not the ingestion key"
    );
    let committed = post(Some("ingest-secret-1")).await.expect("post");
    assert_eq!(committed.status(), 201, "wait_for_commit answers once committed");
    let body: serde_json::Value = committed.json().await.expect("json");
    assert!(body["id"].is_number(), "{body}");
}

#[tokio::test]
async fn chat_document_troubleshooting_calls_answer() {
    let herald = Herald::start_with(
        Options::toml(include_str!("../../examples/manufacturing-chat.toml"))
            .env("JWT_SECRET_KEY", "chat-secret-0123456789"),
    )
    .await;
    // `curl http://localhost:8000/ws/connection-stats` and `curl http://localhost:8000/ws/health`,
    // as the document's troubleshooting section runs them: no key.
    let http = reqwest::Client::new();
    for path in ["/ws/connection-stats", "/ws/health"] {
        let response = http.get(herald.url(path)).send().await.expect("get");
        assert_eq!(response.status(), 200, "{path}");
        let body: serde_json::Value = response.json().await.expect("json");
        if path == "/ws/connection-stats" {
            assert_eq!(body["total_connections"], 0, "{body}");
        }
    }
}

const SPREADSHEET_SECRET: &str = "spreadsheet-secret-0123456789";

fn spreadsheet_token(user: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 3600;
    let claims = json!({"sub": user, "exp": exp, "username": user, "workspace_ids": ["123"]});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SPREADSHEET_SECRET.as_bytes()),
    )
    .expect("token")
}

async fn spreadsheet(redis: &RedisServer) -> Herald {
    Herald::start_with(
        Options::toml(include_str!("../../examples/spreadsheet.toml"))
            .env("HERALD_REDIS_URL", &redis.url())
            .env("HERALD_JWT_SECRET", SPREADSHEET_SECRET),
    )
    .await
}

#[tokio::test]
async fn spreadsheet_document_integration_test_gets_pong_as_the_first_frame() {
    let redis = RedisServer::start().await;
    let herald = spreadsheet(&redis).await;
    let token = spreadsheet_token("user_1");
    let addr = herald.addr.to_string();
    let (mut child, mut lines) = run_seed_script_with(
        &herald,
        "doc003_integration_test.py",
        &[("localhost:8000", &addr), ("test_token", &token)],
    )
    .await;
    expect_line(&mut lines, "test_websocket_endpoint passed").await;
    assert!(child.wait().await.expect("python").success());
}

#[tokio::test]
async fn spreadsheet_document_room_state_leave_notifications_and_rooms_list() {
    let redis = RedisServer::start().await;
    let herald = spreadsheet(&redis).await;
    let mut alice = herald.connect_raw(&format!("/api/v1/ws?token={}", spreadsheet_token("user_1"))).await;
    let mut bob = herald.connect_raw(&format!("/api/v1/ws?token={}", spreadsheet_token("user_2"))).await;
    // Leaving a room the connection is not in.
    let refused = alice.request(json!({"type": "leave_room", "room_id": "workspace_123"})).await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("ROOM_NOT_FOUND")),
        "{refused}"
    );
    // Joining: the joiner gets the room's state.
    assert_eq!(alice.request(json!({"type": "join_room", "room_id": "workspace_123"})).await["type"], "room_joined");
    let state = alice.recv_type("room_state").await;
    assert_eq!(state["total_users"], 1, "{state}");
    // Another user joins: everyone in the room gets the new state.
    assert_eq!(bob.request(json!({"type": "join_room", "room_id": "workspace_123"})).await["type"], "room_joined");
    assert_eq!(bob.recv_type("room_state").await["total_users"], 2);
    assert_eq!(alice.recv_type("room_state").await["total_users"], 2);
    // The rooms list, bare, as the document's REST API gives it.
    let (status, rooms) = herald.get("/api/v1/ws/rooms").await;
    assert_eq!(status, 200);
    let room = rooms.as_array().and_then(|a| a.first()).cloned().unwrap_or_else(|| panic!("a bare list: {rooms}"));
    assert_eq!((room["room_id"].as_str(), room["user_count"].as_u64()), (Some("workspace_123"), Some(2)), "{rooms}");
    assert!(room["active_sheets_count"].is_number() && room["last_activity"].is_string(), "{room}");
    // Two room_state and one user_joined went to the room; two users joined within the hour.
    assert!(room["messages_sent"].as_u64().is_some_and(|n| n >= 3), "{room}");
    assert_eq!(room["avg_users_per_hour"], 2.0, "{room}");
    // A user leaves: the others get the new state.
    assert_eq!(bob.request(json!({"type": "leave_room", "room_id": "workspace_123"})).await["type"], "room_left");
    assert_eq!(alice.recv_type("room_state").await["total_users"], 1);
    // A notification the application created itself: the read goes to the backend, and the
    // user's connections hear of it.
    alice.send_json(json!({"type": "notification_read", "notification_id": "notif_123"})).await;
    let read = loop {
        let next = alice.recv().await;
        assert_ne!(next["type"], "error", "{next}");
        if next["type"] == "notification_event" {
            break next;
        }
    };
    assert_eq!(
        (read["event_type"].as_str(), read["notification_id"].as_str()),
        (Some("notification_read"), Some("notif_123"))
    );
    let stream = redis.cli(&["XRANGE", "spreadsheet:requests", "-", "+"]).unwrap_or_default();
    assert!(stream.contains("notif_123"), "the backend's stream holds the read: {stream}");
}

#[tokio::test]
async fn dashboard_ingestion_refuses_addresses_outside_its_allowed_list() {
    let herald = Herald::start_with(
        Options::toml(include_str!("../../examples/message-dashboard.toml"))
            .env("HERALD_INGEST__ALLOWED_IPS", "[\"10.0.0.0/8\"]"),
    )
    .await;
    let http = reqwest::Client::new();
    let one = json!({"user_id": 1, "channel_id": 1, "content": "Test 1"});
    let response = http.post(herald.url("/messages")).json(&one).send().await.expect("post");
    assert_eq!(response.status(), 403, "loopback is not in 10.0.0.0/8");
    // The API key does not open it either: the route has its own protection.
    let response =
        http.post(herald.url("/messages")).bearer_auth(crate::common::API_KEY).json(&one).send().await.expect("post");
    assert_eq!(response.status(), 403);
}
