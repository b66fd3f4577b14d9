//! `POST /api/publish/batch`: many publishes with their own targets, each result reported.

use serde_json::{Value, json};

use crate::common::{Client, Herald};

const HISTORY: &str = r#"
[[history]]
channels = "feed*"
size = 100
max_age = "10m"
"#;

/// Publishes a marker to `channel` and returns the events `client` received before it, so a test
/// sees everything that arrived and nothing that did not (no waiting for an absence).
async fn drain_until_marker(herald: &Herald, client: &mut Client, target: Value) -> Vec<Value> {
    let mut body = target;
    body["event"] = json!({"type": "marker"});
    herald.publish(body).await;
    let mut seen = Vec::new();
    loop {
        let event = client.recv_event().await;
        if event["type"] == "marker" {
            return seen;
        }
        seen.push(event);
    }
}

fn statuses(reply: &Value) -> Vec<String> {
    reply["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {reply}"))
        .iter()
        .map(|r| match r["code"].as_str() {
            Some(code) => format!("{}:{code}", r["status"].as_str().unwrap_or_default()),
            None => r["status"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

#[tokio::test]
async fn valid_items_are_published_in_order_and_invalid_ones_reported() {
    let herald = Herald::start("").await;
    let mut alice = herald.connect("/ws?user_id=alice").await;
    let mut bob = herald.connect("/ws?user_id=bob").await;
    let mut news = herald.connect("/ws?channels=news").await;
    let long = "x".repeat(300);
    let (status, reply) = herald
        .post(
            "/api/publish/batch",
            json!({"items": [
                {"user_id": "alice", "event": {"type": "note", "n": 1}},
                {"channel": long, "event": {"type": "note", "n": 2}},
                {"user_id": "alice", "event": "not an object"},
                {"user_id": "alice", "event": {"type": "note"}, "colour": "red"},
                {"event": {"type": "note", "n": 3}},
                {"user_ids": ["alice", "bob", 42], "event": {"type": "note", "n": 4}},
                {"user_ids": ["alice"], "channel": "news", "event": {"type": "note", "n": 5}},
                {"channel": "news", "event": {"type": "note", "n": 6}},
                {"user_id": 7, "event": {"type": "note", "n": 7}, "idempotency_key": ""},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        statuses(&reply),
        [
            "queued",
            "error:INVALID_NAME",
            "error:INVALID_EVENT",
            "error:INVALID_JSON",
            "error:NO_TARGET",
            "queued",
            "error:INVALID_BATCH",
            "queued",
            "error:INVALID_MESSAGE",
        ]
    );
    assert_eq!(
        (reply["success"].clone(), reply["published"].clone(), reply["failed"].clone()),
        (json!(false), json!(3), json!(6))
    );
    assert_eq!(reply["results"][5]["events"], 3, "{reply}");
    assert_eq!(reply["results"][3]["index"], 3);

    let to_alice = drain_until_marker(&herald, &mut alice, json!({"user_id": "alice"})).await;
    assert_eq!(to_alice.iter().map(|e| e["n"].clone()).collect::<Vec<_>>(), [json!(1), json!(4)]);
    let to_bob = drain_until_marker(&herald, &mut bob, json!({"user_id": "bob"})).await;
    assert_eq!(to_bob.iter().map(|e| e["n"].clone()).collect::<Vec<_>>(), [json!(4)]);
    let to_news = drain_until_marker(&herald, &mut news, json!({"channel": "news"})).await;
    assert_eq!(to_news.iter().map(|e| e["n"].clone()).collect::<Vec<_>>(), [json!(6)]);
}

#[tokio::test]
async fn a_retried_batch_is_neither_delivered_nor_stored_twice() {
    let herald = Herald::start(HISTORY).await;
    let mut feed = herald.connect("/ws?channels=feed-a").await;
    let mut carol = herald.connect("/ws?user_id=carol").await;
    let batch = json!({"items": [
        {"channel": "feed-a", "event": {"type": "tick", "n": 1}, "idempotency_key": "tick-1"},
        {"user_id": "carol", "event": {"type": "tick", "n": 2}, "idempotency_key": "tick-2"},
        {"channel": "feed-a", "event": {"type": "tick", "n": 3}},
        {"channel": "feed-a", "event": {"type": "tick", "n": 4}, "idempotency_key": "tick-1"},
    ]});
    let (status, first) = herald.post("/api/publish/batch", batch.clone()).await;
    assert_eq!(status, 200, "{first}");
    // A key repeated inside one batch is a duplicate too.
    assert_eq!(statuses(&first), ["queued", "queued", "queued", "duplicate"]);
    let (status, retry) = herald.post("/api/publish/batch", batch).await;
    assert_eq!(status, 200, "{retry}");
    // The item without a key is published again: only keys make a publish idempotent.
    assert_eq!(statuses(&retry), ["duplicate", "duplicate", "queued", "duplicate"]);
    assert_eq!((retry["success"].clone(), retry["duplicates"].clone()), (json!(true), json!(3)));

    let got = drain_until_marker(&herald, &mut feed, json!({"channel": "feed-a"})).await;
    assert_eq!(got.iter().map(|e| e["n"].clone()).collect::<Vec<_>>(), [json!(1), json!(3), json!(3)]);
    let got = drain_until_marker(&herald, &mut carol, json!({"user_id": "carol"})).await;
    assert_eq!(got.iter().map(|e| e["n"].clone()).collect::<Vec<_>>(), [json!(2)]);
    let (status, history) = herald.get("/api/history/channel/feed-a").await;
    assert_eq!(status, 200, "{history}");
    let stored: Vec<Value> = history["events"].as_array().unwrap().iter().map(|e| e["n"].clone()).collect();
    assert_eq!(stored, [json!(1), json!(3), json!(3), Value::Null], "{history}");
}

#[tokio::test]
async fn batches_past_the_limits_are_refused_whole() {
    let herald = Herald::start("[api]\nmax_batch_items = 3\nmax_batch_bytes = 2000\n").await;
    let mut dave = herald.connect("/ws?user_id=dave").await;
    let item = json!({"user_id": "dave", "event": {"type": "x"}});
    let (status, reply) = herald.post("/api/publish/batch", json!({"items": [item, item, item, item]})).await;
    assert_eq!((status, reply["code"].as_str()), (413, Some("BATCH_TOO_LARGE")), "{reply}");
    let big = json!({"user_id": "dave", "event": {"type": "x", "pad": "p".repeat(2000)}});
    let (status, reply) = herald.post("/api/publish/batch", json!({"items": [big]})).await;
    assert_eq!((status, reply["code"].as_str()), (413, Some("BATCH_TOO_LARGE")), "{reply}");
    let (status, reply) = herald.post("/api/publish/batch", json!({"items": []})).await;
    assert_eq!((status, reply["code"].as_str()), (400, Some("INVALID_BATCH")), "{reply}");
    let (status, reply) = herald.post("/api/publish/batch", json!([item])).await;
    assert_eq!((status, reply["code"].as_str()), (400, Some("INVALID_JSON")), "{reply}");
    // user_ids count toward the limit: the item is refused, the rest of the batch goes out.
    let (status, reply) = herald
        .post(
            "/api/publish/batch",
            json!({"items": [
                {"user_id": "dave", "event": {"type": "x", "n": 1}},
                {"user_ids": ["dave", "erin", "frank"], "event": {"type": "x", "n": 2}},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(statuses(&reply), ["queued", "error:BATCH_TOO_LARGE"]);
    let got = drain_until_marker(&herald, &mut dave, json!({"user_id": "dave"})).await;
    assert_eq!(got.iter().map(|e| e["n"].clone()).collect::<Vec<_>>(), [json!(1)]);
}

#[tokio::test]
async fn a_batch_needs_the_api_key() {
    let herald = Herald::start("").await;
    let http = reqwest::Client::new();
    let body = json!({"items": [{"channel": "a", "event": {"type": "x"}}]});
    let response = http.post(herald.url("/api/publish/batch")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["code"], "AUTHENTICATION_FAILED");
    let response =
        http.post(herald.url("/api/publish/batch")).bearer_auth("wrong-key-123").json(&body).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let (status, reply) = herald.post("/api/publish/batch", body).await;
    assert_eq!((status, reply["published"].clone()), (200, json!(1)), "{reply}");
}

#[tokio::test]
async fn a_batch_retried_on_another_node_is_not_delivered_twice() {
    let redis = crate::common::redis::RedisServer::start().await;
    let config = format!("[redis]\nurl = \"{}\"\n", redis.url());
    let (a, b) = (Herald::start(&config).await, Herald::start(&config).await);
    crate::redis::wait_redis_connected(&a, true).await;
    crate::redis::wait_redis_connected(&b, true).await;
    let mut gil = b.connect("/ws?user_id=gil").await;
    let batch = json!({"items": [
        {"user_id": "gil", "event": {"type": "x", "n": 1}, "idempotency_key": "cross-1"},
        {"user_id": "gil", "event": {"type": "x", "n": 2}, "idempotency_key": "cross-2"},
    ]});
    let (status, first) = a.post("/api/publish/batch", batch.clone()).await;
    assert_eq!((status, statuses(&first)), (200, vec!["queued".to_string(), "queued".to_string()]), "{first}");
    let (status, retry) = b.post("/api/publish/batch", batch).await;
    assert_eq!((status, statuses(&retry)), (200, vec!["duplicate".to_string(), "duplicate".to_string()]), "{retry}");
    let got = drain_until_marker(&b, &mut gil, json!({"user_id": "gil"})).await;
    assert_eq!(got.iter().map(|e| e["n"].clone()).collect::<Vec<_>>(), [json!(1), json!(2)]);
}

/// Events are kept as the publisher wrote them (only the whitespace between tokens goes), and a
/// channel's default `type` still applies, through the batch route and the single publish alike.
#[tokio::test]
async fn events_arrive_as_written_and_channel_rules_still_apply() {
    let herald = Herald::start(
        r#"
[[channels]]
name = "jobs"
default_type = "job_update"
"#,
    )
    .await;
    let mut dana = herald.connect("/ws?user_id=dana").await;
    let mut jobs = herald.connect("/ws?channels=jobs").await;
    let key = herald.api_key.clone().expect("an API key");
    let http = reqwest::Client::new();
    let post = |path: &str, body: &'static str| {
        http.post(herald.url(path)).bearer_auth(&key).header("content-type", "application/json").body(body).send()
    };
    let batch = "{ \"items\" : [\n  { \"user_id\" : \"dana\" ,\n    \"event\" : { \"type\" : \"note\" , \
                 \"text\" : \" two  spaces, a \\\"quote\\\" \\\\ \" , \"list\" : [ 1 , 2.5 ] } } ,\n  \
                 { \"channel\" : \"jobs\", \"event\" : {\r\n\t\"status\" : \"done\" } }\n] }";
    let response = post("/api/publish/batch", batch).await.expect("POST");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let single = "{\"user_id\": \"dana\", \"event\": {\"type\": \"single\", \"n\": [ ]} }";
    let response = post("/api/publish", single).await.expect("POST");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);

    let note = dana.recv_event().await;
    assert_eq!(note.to_string(), r#"{"type":"note","text":" two  spaces, a \"quote\" \\ ","list":[1,2.5]}"#);
    assert_eq!(dana.recv_event().await.to_string(), r#"{"type":"single","n":[]}"#);
    assert_eq!(jobs.recv_event().await.to_string(), r#"{"type":"job_update","status":"done"}"#);
}
