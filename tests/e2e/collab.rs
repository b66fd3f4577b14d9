//! Presence, typing, cursors, collaborative cells, notifications, backend requests and aliases
//! (documents 001 and 003), on one node and across nodes sharing Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::common::redis::RedisServer;
use crate::common::{Client, Herald, eventually, until};

/// Presence on, everything else at its default.
const PRESENCE: &str = "[presence]\nenabled = true";

/// Skips heartbeats and everything whose type is not in `kinds`.
async fn next_of(client: &mut Client, kinds: &[&str]) -> Value {
    loop {
        let message = client.recv().await;
        if kinds.iter().any(|k| message["type"] == *k) {
            return message;
        }
    }
}

/// Joins a room; returns the `room_state` that follows the acknowledgement.
async fn join(client: &mut Client, room: &str) -> Value {
    let ack = client.request(json!({"type": "join_room", "room_id": room})).await;
    assert_eq!(ack["type"], "room_joined", "{ack}");
    let state = client.recv_event().await;
    assert_eq!(state["type"], "room_state", "{state}");
    state
}

fn user_ids(state: &Value) -> Vec<String> {
    state["users"].as_array().unwrap().iter().map(|u| u["user_id"].as_str().unwrap().to_string()).collect()
}

/// Publishes a marker to a room through the API; a client's next event being the marker proves
/// nothing else was sent before it.
async fn marker(herald: &Herald, room: &str, n: u32) -> Value {
    let (status, body) = herald.post(&format!("/api/rooms/{room}/broadcast"), json!({"type": "marker", "n": n})).await;
    assert_eq!(status, 200, "{body}");
    json!({"type": "marker", "n": n})
}

async fn expect_marker(client: &mut Client, n: u32) {
    let next = client.recv_event().await;
    assert_eq!(next["type"], "marker", "expected marker {n}, got {next}");
    assert_eq!(next["n"], n);
}

#[tokio::test]
async fn presence_is_announced_once_per_user_not_once_per_tab() {
    let herald = Herald::start(PRESENCE).await;
    let mut alice1 = herald.connect("/ws?user_id=alice").await;
    let state = join(&mut alice1, "workspace_1").await;
    assert_eq!(user_ids(&state), ["alice"]);
    assert_eq!(state["total_users"], 1);
    assert_eq!(state["room_id"], "workspace_1");

    let mut bob = herald.connect("/ws?user_id=bob").await;
    let state = join(&mut bob, "workspace_1").await;
    assert_eq!(user_ids(&state), ["alice", "bob"]);
    assert_eq!(state["users"][0]["status"], "online");
    assert!(state["users"][0]["last_seen"].as_str().is_some_and(|s| s.ends_with('Z')), "{state}");
    let joined = next_of(&mut alice1, &["user_joined"]).await;
    assert_eq!(joined["user_id"], "bob");
    assert_eq!(joined["room_id"], "workspace_1");

    // A second tab of alice: bob hears nothing.
    let mut alice2 = herald.connect("/ws?user_id=alice").await;
    assert_eq!(user_ids(&join(&mut alice2, "workspace_1").await), ["alice", "bob"]);
    marker(&herald, "workspace_1", 1).await;
    expect_marker(&mut bob, 1).await;

    // One tab leaves, the other stays: still nothing.
    alice1.send_json(json!({"type": "leave_room", "room": "workspace_1"})).await;
    next_of(&mut alice1, &["room_left"]).await;
    drop(alice1);
    marker(&herald, "workspace_1", 2).await;
    expect_marker(&mut bob, 2).await;

    // The last tab closes: alice left, once, and is offline.
    alice2.ws.close(None).await.unwrap();
    drop(alice2);
    let left = bob.recv_event().await;
    assert_eq!(left["type"], "user_left", "{left}");
    assert_eq!(left["user_id"], "alice");
    let status = bob.recv_event().await;
    assert_eq!(status["type"], "user_status_changed", "{status}");
    assert_eq!(status["status"], "offline");
    assert_eq!(bob.recv_event().await["type"], "presence_update");
    marker(&herald, "workspace_1", 3).await;
    expect_marker(&mut bob, 3).await;

    let (code, presence) = herald.get("/api/users/alice/presence").await;
    assert_eq!(code, 200);
    assert_eq!(presence["status"], "offline");
    let (_, room) = herald.get("/api/rooms/workspace_1/presence").await;
    assert_eq!(user_ids(&room), ["bob"]);
}

#[tokio::test]
async fn status_typing_and_cursors_reach_the_others() {
    let herald =
        Herald::start("[presence]\nenabled = true\ntyping_timeout = \"300ms\"\ncursor_interval = \"1s\"").await;
    let mut alice = herald.connect("/ws?user_id=alice").await;
    let mut bob = herald.connect("/ws?user_id=bob").await;
    join(&mut alice, "sheet_room").await;
    join(&mut bob, "sheet_room").await;
    next_of(&mut alice, &["user_joined"]).await;

    // Status.
    let ack = alice.request(json!({"type": "status_update", "status": "busy", "id": 1})).await;
    assert_eq!(ack["type"], "status_updated", "{ack}");
    assert_eq!(ack["id"], 1);
    let changed = next_of(&mut bob, &["user_status_changed"]).await;
    assert_eq!((changed["user_id"].as_str(), changed["status"].as_str()), (Some("alice"), Some("busy")));
    assert_eq!(next_of(&mut bob, &["presence_update"]).await["status"], "busy");
    alice.send_json(json!({"type": "status_update", "status": "asleep"})).await;
    let bad = next_of(&mut alice, &["error"]).await;
    assert_eq!(bad["code"], "INVALID_MESSAGE", "{bad}");
    let (_, presence) = herald.get("/api/users/alice/presence").await;
    assert_eq!(presence["status"], "busy");

    // Typing: both shapes, and a start with no stop expires and says so.
    alice.send_json(json!({"type": "typing_start", "room": "sheet_room", "cell_id": "A1"})).await;
    let indicator = bob.recv_event().await;
    assert_eq!(indicator["type"], "typing_indicator", "{indicator}");
    assert_eq!(indicator["is_typing"], true);
    let start = bob.recv_event().await;
    assert_eq!((start["type"].as_str(), start["cell_id"].as_str()), (Some("user_typing_start"), Some("A1")));
    assert_eq!(start["user_id"], "alice");
    let expired = next_of(&mut bob, &["user_typing_stop"]).await;
    assert_eq!(expired["expired"], true, "{expired}");
    alice.send_json(json!({"type": "typing_start", "room": "sheet_room"})).await;
    alice.send_json(json!({"type": "typing_stop", "room": "sheet_room"})).await;
    let stop = next_of(&mut bob, &["user_typing_stop"]).await;
    assert!(stop.get("expired").is_none(), "{stop}");
    alice.send_json(json!({"type": "typing_start", "room": "elsewhere"})).await;
    let not_member = next_of(&mut alice, &["error"]).await;
    assert_eq!(not_member["code"], "PERMISSION_DENIED", "{not_member}");

    // Cursors: a burst is coalesced, and the newest position always arrives.
    for x in 0..50 {
        alice.send_json(json!({"type": "cursor_move", "room": "sheet_room", "x": x, "y": 7, "cell": "B2"})).await;
    }
    let mut seen = 0;
    loop {
        let moved = next_of(&mut bob, &["cursor_moved"]).await;
        seen += 1;
        assert_eq!(moved["user_id"], "alice");
        if moved["cursor"]["x"] == 49 {
            assert_eq!(moved["cursor"]["cell"], "B2");
            break;
        }
    }
    assert!(seen < 50, "50 moves in a burst were not coalesced ({seen} sent)");
    // The position is kept for room_state.
    let mut carol = herald.connect("/ws?user_id=carol").await;
    let state = join(&mut carol, "sheet_room").await;
    let alice_entry = state["users"].as_array().unwrap().iter().find(|u| u["user_id"] == "alice").unwrap().clone();
    assert_eq!(alice_entry["cursor"], json!({"x": 49, "y": 7, "cell": "B2"}));
    assert_eq!(alice_entry["status"], "busy");
}

#[tokio::test]
async fn cell_edits_apply_only_when_newer_and_conflicts_carry_the_current_cell() {
    let herald = Herald::start(PRESENCE).await;
    let mut alice = herald.connect("/ws?user_id=alice").await;
    let mut bob = herald.connect("/ws?user_id=bob").await;
    join(&mut alice, "workspace_9").await;
    join(&mut bob, "workspace_9").await;
    next_of(&mut alice, &["user_joined"]).await;
    let edit = json!({"type": "cell_update", "sheet_id": "sheet_1", "cell_id": "A1", "value": "Hello",
        "formula": "=CONCAT('He','llo')", "version": 1642161000001_i64, "id": "e1"});
    let ack = alice.request(edit).await;
    assert_eq!(ack["type"], "cell_update_ack", "{ack}");
    assert_eq!(ack["version"], 1642161000001_i64);
    let updated = next_of(&mut bob, &["cell_updated"]).await;
    assert_eq!(updated["value"], "Hello");
    assert_eq!(updated["user_id"], "alice");
    assert_eq!(updated["version"], 1642161000001_i64);
    assert_eq!(updated["formula"], "=CONCAT('He','llo')");

    // Bob edits from an older version: refused with the current content.
    let stale = json!({"type": "cell_update", "sheet_id": "sheet_1", "cell_id": "A1", "value": "Bye", "version": 1642161000000_i64});
    let conflict = bob.request(stale).await;
    assert_eq!(conflict["type"], "error");
    assert_eq!(conflict["code"], "VERSION_CONFLICT", "{conflict}");
    assert_eq!(conflict["current_value"], "Hello");
    assert_eq!(conflict["current_version"], 1642161000001_i64);
    // An equal version is not newer either.
    let same = json!({"type": "cell_update", "sheet_id": "sheet_1", "cell_id": "A1", "value": "x", "version": 1642161000001_i64});
    assert_eq!(bob.request(same).await["code"], "VERSION_CONFLICT");
    // Newer wins, and alice sees it; alice never saw the refused edits.
    let newer = json!({"type": "cell_update", "sheet_id": "sheet_1", "cell_id": "A1", "value": "Bye", "version": 1642161000002_i64});
    assert_eq!(bob.request(newer).await["type"], "cell_update_ack");
    let updated = next_of(&mut alice, &["cell_updated"]).await;
    assert_eq!((updated["value"].as_str(), updated["user_id"].as_str()), (Some("Bye"), Some("bob")));

    // Bad edits get clear errors.
    for (bad, code) in [
        (json!({"type": "cell_update", "sheet_id": "s", "cell_id": "A1", "value": 1}), "INVALID_MESSAGE"),
        (json!({"type": "cell_update", "sheet_id": "s", "cell_id": "A1", "version": 1.5}), "INVALID_MESSAGE"),
        (json!({"type": "cell_update", "cell_id": "A1", "version": 1}), "INVALID_MESSAGE"),
        (
            json!({"type": "cell_update", "sheet_id": "s", "cell_id": "A1", "version": 1, "room": "nope"}),
            "PERMISSION_DENIED",
        ),
    ] {
        let reply = alice.request(bad.clone()).await;
        assert_eq!(reply["code"], code, "{bad} → {reply}");
    }
    // The sheet is active in the room.
    let mut carol = herald.connect("/ws?user_id=carol").await;
    assert_eq!(join(&mut carol, "workspace_9").await["active_sheets"], json!(["sheet_1"]));
}

#[tokio::test]
async fn notifications_are_stored_filtered_replayed_and_read_everywhere() {
    let herald = Herald::start(PRESENCE).await;
    // Posted while alice is offline.
    let (status, posted) = herald
        .post(
            "/api/v1/ws/broadcast/notification?event_type=notification_created",
            json!({"user_id": "alice", "title": "New Comment", "message": "John commented", "category": "workspace",
                   "priority": "normal", "module_name": "tables"}),
        )
        .await;
    assert_eq!(status, 404, "no /api/v1/ws mount here: {posted}");
    let (status, posted) = herald
        .post(
            "/ws/broadcast/notification?event_type=notification_created",
            json!({"user_id": "alice", "title": "New Comment", "message": "John commented", "category": "workspace",
                   "priority": "normal", "module_name": "tables"}),
        )
        .await;
    assert_eq!(status, 201, "{posted}");
    let first_id = posted["notification_id"].as_str().unwrap().to_string();

    let mut filtered = herald.connect("/ws?user_id=alice").await;
    let ack = filtered
        .request(json!({"type": "subscribe_notifications", "categories": ["system", "workspace"],
                        "modules": ["tables", "ai"], "priorities": ["normal", "high", "critical"]}))
        .await;
    assert_eq!(ack["type"], "notifications_subscribed", "{ack}");
    assert_eq!(ack["unread_count"], 1);
    let replayed = filtered.recv_event().await;
    assert_eq!(replayed["type"], "notification_event");
    assert_eq!(replayed["event_type"], "notification_created");
    assert_eq!(replayed["replayed"], true);
    assert_eq!(replayed["notification"]["id"], first_id.as_str());
    assert_eq!(replayed["notification"]["title"], "New Comment");

    // A second device with no filter gets everything.
    let mut everything = herald.connect("/ws?user_id=alice").await;
    let (status, _) = herald
        .post(
            "/ws/broadcast/notification",
            json!({"user_id": "alice", "title": "Invoice", "category": "billing", "priority": "high"}),
        )
        .await;
    assert_eq!(status, 201);
    let billing = next_of(&mut everything, &["notification_event"]).await;
    assert_eq!(billing["notification"]["category"], "billing");
    let (status, _) = herald
        .post(
            "/ws/broadcast/notification?event_type=notification_created",
            json!({"user_id": "alice", "title": "AI done", "category": "system", "priority": "high", "module_name": "ai"}),
        )
        .await;
    assert_eq!(status, 201);
    // The filtered device skipped billing: the next thing it sees is the system notification.
    let system = next_of(&mut filtered, &["notification_event"]).await;
    assert_eq!(system["notification"]["title"], "AI done", "{system}");
    assert_eq!(next_of(&mut everything, &["notification_event"]).await["notification"]["title"], "AI done");

    // Read on one device: every device hears of it.
    filtered.send_json(json!({"type": "notification_read", "notification_id": first_id})).await;
    for device in [&mut filtered, &mut everything] {
        let read = next_of(device, &["notification_event"]).await;
        assert_eq!(read["event_type"], "notification_read", "{read}");
        assert_eq!(read["notification_id"], first_id.as_str());
    }
    let unknown = filtered.request(json!({"type": "notification_read", "notification_id": "notif_nope"})).await;
    assert_eq!(unknown["code"], "INVALID_MESSAGE", "{unknown}");
    let (_, unread) = herald.get("/api/users/alice/notifications?unread_only=true").await;
    assert_eq!(unread["count"], 2, "{unread}");
    let (_, all) = herald.get("/api/users/alice/notifications").await;
    assert_eq!(all["count"], 3);
    let read = all["notifications"].as_array().unwrap().iter().find(|n| n["id"] == first_id.as_str()).unwrap().clone();
    assert_eq!(read["read"], true);

    // Bad posts are refused clearly.
    for (body, code) in [
        (json!({"user_id": "alice", "category": 5}), 400),
        (json!({"user_ids": "alice"}), 400),
        (json!(["not", "an", "object"]), 400),
    ] {
        let (status, reply) = herald.post("/ws/broadcast/notification", body.clone()).await;
        assert_eq!(status, code, "{body} → {reply}");
    }
}

#[tokio::test]
async fn an_alias_joins_the_room_it_names() {
    let toml = "[[aliases]]\ntype = \"subscribe_order_updates\"\naction = \"join_room\"\ntarget = \"order_{order_id}\"\n\
                [[aliases]]\ntype = \"follow\"\naction = \"subscribe\"\ntarget = \"feed:{name}\"";
    let herald = Herald::start(toml).await;
    let mut client = herald.connect("/ws?user_id=7").await;
    let ack = client.request(json!({"type": "subscribe_order_updates", "order_id": 123, "id": "a"})).await;
    assert_eq!(ack["type"], "room_joined", "{ack}");
    assert_eq!(ack["room"], "order_123");
    assert_eq!(ack["id"], "a");
    herald.post("/api/rooms/order_123/broadcast", json!({"type": "order_update", "status": "shipped"})).await;
    assert_eq!(next_of(&mut client, &["order_update"]).await["status"], "shipped");
    let followed = client.request(json!({"type": "follow", "name": "news"})).await;
    assert_eq!(followed["type"], "subscribed");
    assert_eq!(followed["channels"], json!(["feed:news"]));
    let missing = client.request(json!({"type": "subscribe_order_updates"})).await;
    assert_eq!(missing["code"], "INVALID_MESSAGE", "{missing}");
}

/// A webhook call: its signature header and body.
type Hooked = (Option<String>, Value);

#[tokio::test]
async fn requests_go_to_a_signed_webhook_with_lifecycle_events() {
    let seen: Arc<parking_lot::Mutex<Vec<Hooked>>> = Arc::default();
    let refuse = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let (seen, refuse) = (seen.clone(), refuse.clone());
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (seen, refuse) = (seen.clone(), refuse.clone());
                async move {
                    let signature = headers.get("x-herald-signature").and_then(|v| v.to_str().ok()).map(String::from);
                    let value: Value = serde_json::from_slice(&body).unwrap();
                    // The signature covers the exact body.
                    assert_eq!(signature.as_deref(), Some(herald::upstream::sign("hook-secret", &body).as_str()));
                    seen.lock().push((signature, value));
                    if refuse.load(Ordering::SeqCst) > 0 {
                        axum::http::StatusCode::BAD_GATEWAY
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let toml = format!(
        "[presence]\nenabled = true\n[upstream]\ntypes = [\"file_upload_start\"]\nwebhook_url = \"http://{hook}/hook\"\nwebhook_secret = \"hook-secret\"\n\
         lifecycle = [\"connect\", \"join\", \"leave\", \"disconnect\"]"
    );
    let herald = Herald::start(&toml).await;
    let mut client = herald.connect("/ws?user_id=u1").await;
    let ack = client
        .request(
            json!({"type": "file_upload_start", "file_id": "file_123", "filename": "data.csv", "request_id": "r1"}),
        )
        .await;
    assert_eq!(ack["type"], "request_accepted", "{ack}");
    assert_eq!(ack["request_id"], "r1");
    join(&mut client, "room_a").await;
    assert_eq!(client.request(json!({"type": "leave_room", "room": "room_a"})).await["type"], "room_left");
    refuse.store(1, Ordering::SeqCst);
    let refused = client.request(json!({"type": "file_upload_start", "file_id": "f2"})).await;
    assert_eq!(refused["code"], "UNAVAILABLE", "{refused}");
    client.assert_alive().await;
    refuse.store(0, Ordering::SeqCst);
    client.ws.close(None).await.unwrap();
    drop(client);
    let events = eventually("the disconnect reached the webhook", async || {
        let kinds: Vec<String> =
            seen.lock().iter().map(|(_, v)| v["type"].as_str().unwrap_or_default().to_string()).collect();
        kinds.iter().any(|k| k == "herald.disconnect").then_some(kinds)
    })
    .await;
    for kind in ["herald.connect", "file_upload_start", "herald.join", "herald.leave", "herald.disconnect"] {
        assert!(events.iter().any(|k| k == kind), "{kind} missing from {events:?}");
    }
    let request = seen.lock().iter().find(|(_, v)| v["type"] == "file_upload_start").unwrap().1.clone();
    assert_eq!(request["user_id"], "u1");
    assert_eq!(request["message"]["filename"], "data.csv");
}

fn redis_toml(redis: &RedisServer, extra: &str) -> String {
    format!(
        "[presence]\nenabled = true\n[redis]\nurl = \"{}\"\nnode_timeout = \"3s\"\nprefixes = [\"app\"]\n{extra}",
        redis.url()
    )
}

#[tokio::test]
async fn an_ai_request_is_answered_by_a_worker_reading_the_stream() {
    let redis = RedisServer::start().await;
    let toml = redis_toml(&redis, "[upstream]\ntypes = [\"ai_request\"]\nredis_stream = \"herald:requests\"");
    let herald = Herald::start(&toml).await;
    // The worker's answers come through the node's pattern subscription: wait until it is live.
    crate::redis::wait_redis_connected(&herald, true).await;
    // The backend worker: a consumer group on the stream, answering through PUBLISH.
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = ::redis::cmd("XGROUP")
        .arg(&["CREATE", "herald:requests", "ai-workers", "$", "MKSTREAM"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let worker = tokio::spawn(async move {
        let reply: ::redis::Value = ::redis::cmd("XREADGROUP")
            .arg(&["GROUP", "ai-workers", "w1", "COUNT", "1", "BLOCK", "15000", "STREAMS", "herald:requests", ">"])
            .query_async(&mut conn)
            .await
            .unwrap();
        let text = format!("{reply:?}");
        // Pull the `data` field out of the entry.
        let ::redis::Value::Array(streams) = reply else { panic!("{text}") };
        let ::redis::Value::Array(stream) = &streams[0] else { panic!("{text}") };
        let ::redis::Value::Array(entries) = &stream[1] else { panic!("{text}") };
        let ::redis::Value::Array(entry) = &entries[0] else { panic!("{text}") };
        let ::redis::Value::BulkString(id) = &entry[0] else { panic!("{text}") };
        let ::redis::Value::Array(fields) = &entry[1] else { panic!("{text}") };
        let data = fields
            .chunks(2)
            .find_map(|kv| match (&kv[0], &kv[1]) {
                (::redis::Value::BulkString(k), ::redis::Value::BulkString(v)) if k == b"data" => Some(v.clone()),
                _ => None,
            })
            .unwrap();
        let request: Value = serde_json::from_slice(&data).unwrap();
        let user = request["user_id"].as_str().unwrap().to_string();
        let request_id = request["message"]["request_id"].as_str().unwrap().to_string();
        for (event_type, data) in [
            ("ai_start", json!({"query": request["message"]["query"]})),
            ("ai_progress", json!({"progress": 60, "status": "Processing step 3/5"})),
            ("ai_complete", json!({"result": "Found 3 trends", "processing_time": 4.5})),
        ] {
            let event = json!({"type": "ai_event", "event_type": event_type, "request_id": request_id, "user_id": user, "data": data});
            let _: i64 =
                ::redis::cmd("PUBLISH").arg("app:ai").arg(event.to_string()).query_async(&mut conn).await.unwrap();
        }
        let _: i64 = ::redis::cmd("XACK")
            .arg("herald:requests")
            .arg("ai-workers")
            .arg(id.as_slice())
            .query_async(&mut conn)
            .await
            .unwrap();
        request
    });
    let mut alice = herald.connect("/ws?user_id=user_1").await;
    alice
        .send_json(json!({"type": "ai_request", "request_id": "req_123", "query": "Analyze this data",
                          "sheet_id": "sheet_123", "context": {"table_range": "A1:Z100"}}))
        .await;
    // The worker may answer before the acknowledgement arrives; the events keep their order.
    let mut ack = None;
    let mut progress = Vec::new();
    while ack.is_none() || progress.len() < 3 {
        let message = next_of(&mut alice, &["request_accepted", "ai_event", "error"]).await;
        match message["type"].as_str() {
            Some("request_accepted") => ack = Some(message),
            Some("ai_event") => {
                assert_eq!(message["request_id"], "req_123");
                progress.push(message["event_type"].as_str().unwrap().to_string());
            }
            _ => panic!("{message}"),
        }
    }
    let ack = ack.unwrap();
    assert_eq!(ack["request_id"], "req_123");
    assert!(ack["stream_id"].as_str().is_some_and(|id| id.contains('-')), "{ack}");
    assert_eq!(progress, ["ai_start", "ai_progress", "ai_complete"]);
    let request = worker.await.unwrap();
    assert_eq!(request["message"]["context"]["table_range"], "A1:Z100");
    assert_eq!(request["connection_id"], alice.welcome["connection_id"]);
}

#[tokio::test]
async fn presence_spans_nodes_and_a_killed_node_goes_offline_after_the_timeout() {
    let redis = RedisServer::start().await;
    let toml = redis_toml(&redis, "");
    let mut node_a = Herald::start(&toml).await;
    let node_b = Herald::start(&toml).await;
    crate::redis::wait_redis_connected(&node_a, true).await;
    crate::redis::wait_redis_connected(&node_b, true).await;
    let mut alice = node_a.connect("/ws?user_id=alice").await;
    join(&mut alice, "shared").await;
    // Wait until node B sees alice (the mirror is asynchronous).
    until("node B sees alice", async || user_ids(&node_b.get("/api/rooms/shared/presence").await.1) == ["alice"]).await;
    let mut bob = node_b.connect("/ws?user_id=bob").await;
    let state = join(&mut bob, "shared").await;
    assert_eq!(user_ids(&state), ["alice", "bob"]);
    assert_eq!(next_of(&mut alice, &["user_joined"]).await["user_id"], "bob");

    // A status chosen on node A reaches node B.
    alice.request(json!({"type": "status_update", "status": "away"})).await;
    let changed = next_of(&mut bob, &["user_status_changed"]).await;
    assert_eq!((changed["user_id"].as_str(), changed["status"].as_str()), (Some("alice"), Some("away")));
    // Typing and cursors cross too.
    alice.send_json(json!({"type": "typing_start", "room": "shared"})).await;
    assert_eq!(next_of(&mut bob, &["typing_indicator"]).await["user_id"], "alice");
    bob.send_json(json!({"type": "cursor_move", "room": "shared", "x": 1, "y": 2})).await;
    assert_eq!(next_of(&mut alice, &["cursor_moved"]).await["cursor"], json!({"x": 1, "y": 2}));

    // Node A dies without a word; after the node timeout bob hears that alice is gone.
    node_a.signal("KILL");
    node_a.wait_exit().await;
    let left = next_of(&mut bob, &["user_left"]).await;
    assert_eq!(left["user_id"], "alice");
    assert_eq!(next_of(&mut bob, &["user_status_changed"]).await["status"], "offline");
    let (_, presence) = node_b.get("/api/users/alice/presence").await;
    assert_eq!(presence["status"], "offline");
    let (_, room) = node_b.get("/api/rooms/shared/presence").await;
    assert_eq!(user_ids(&room), ["bob"]);
}

/// A lifecycle event the webhook refuses is delivered again, the same body, signed with a
/// timestamp (`X-Herald-Timestamp-Signature` = HMAC of `<timestamp>.<body>`).
#[tokio::test]
async fn a_refused_lifecycle_event_is_retried_and_signed_with_a_timestamp() {
    type Delivery = (u16, Option<String>, Option<String>, String);
    let seen: Arc<parking_lot::Mutex<Vec<Delivery>>> = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let seen = seen.clone();
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(String::from);
                    let mut seen = seen.lock();
                    // The first delivery is refused.
                    let status = if seen.is_empty() { 503 } else { 200 };
                    let body = String::from_utf8_lossy(&body).to_string();
                    seen.push((status, header("x-herald-timestamp"), header("x-herald-timestamp-signature"), body));
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let toml = format!(
        "[upstream]\nwebhook_url = \"http://{hook}/hook\"\nwebhook_secret = \"hook-secret\"\nlifecycle = [\"connect\"]"
    );
    let herald = Herald::start(&toml).await;
    let _client = herald.connect("/ws?user_id=u9").await;
    let deliveries = eventually("the refused lifecycle event was delivered again", async || {
        let seen = seen.lock();
        (seen.len() >= 2).then(|| seen.clone())
    })
    .await;
    let (first, second) = (&deliveries[0], &deliveries[1]);
    assert_eq!((first.0, second.0), (503, 200));
    assert_eq!(first.3, second.3, "the retry carries the same event");
    for (_, timestamp, signature, body) in [first, second] {
        let timestamp = timestamp.as_deref().expect("X-Herald-Timestamp");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert!(now.abs_diff(timestamp.parse().unwrap()) < 600, "{timestamp}");
        let expected = herald::upstream::sign("hook-secret", format!("{timestamp}.{body}").as_bytes());
        assert_eq!(signature.as_deref(), Some(expected.as_str()));
    }
}
