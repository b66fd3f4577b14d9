//! The seed documents' own client code, run as written against Herald.

use std::process::Stdio;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::common::redis::RedisServer;
use crate::common::{Herald, Options, WAIT};

/// Runs a seed script with its hard-coded `localhost:PORT` pointed at the test server.
async fn run_seed_script(
    herald: &Herald,
    script: &str,
    original_host: &str,
) -> (tokio::process::Child, tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) {
    let source =
        std::fs::read_to_string(format!("{}/tests/seeds/{script}", env!("CARGO_MANIFEST_DIR"))).expect("seed script");
    let pointed = source.replace(original_host, &herald.addr.to_string());
    let path = herald.dir().join(script);
    std::fs::write(&path, pointed).expect("write script");
    let python = std::env::var("HERALD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(python)
        .arg("-u")
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
    let ready = tokio::time::timeout(WAIT, async {
        while !redis.cli(&["PUBSUB", "NUMPAT"]).is_some_and(|n| n.trim().parse::<u64>().is_ok_and(|n| n >= 1)) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ready.is_ok(), "herald never subscribed to its publisher pattern");
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
