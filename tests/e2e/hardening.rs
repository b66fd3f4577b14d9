//! The outside attack's findings (hardening issue 14, and the bounds on collaborative state):
//! each test replays one attack over real sockets and checks Herald's answer.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::common::redis::RedisServer;
use crate::common::{Client, Herald, Options};

/// A keyless node behind a same-host proxy: forwarding headers must not make anyone an admin,
/// and keyless admin is something an operator turns on, never the default.
#[tokio::test]
async fn proxy_headers_never_make_a_remote_client_an_admin() {
    let toml = "[server]\ntrusted_proxies = [\"127.0.0.0/8\", \"::1\"]\n[api]\nlocal_admin_without_key = true\n\
                [auth]\nmode = \"required\"\njwt_secret = \"hardening-test-secret-0123456789\"";
    let herald = Herald::start_with(Options { no_api_key: true, ..Options::toml(toml) }).await;
    herald.wait_for_log("DEVELOPMENT SETTING").await;
    let http = reqwest::Client::new();
    let forwarded = |method: reqwest::Method, path: &str| {
        http.request(method, herald.url(path)).header("X-Forwarded-For", "203.0.113.9")
    };
    for (method, path) in [
        (reqwest::Method::GET, "/api/connections"),
        (reqwest::Method::GET, "/api/rooms"),
        (reqwest::Method::GET, "/api/rooms/secret/messages"),
        (reqwest::Method::DELETE, "/api/connections/1"),
    ] {
        let status = forwarded(method.clone(), path).send().await.unwrap().status().as_u16();
        assert!(status == 403 || status == 401, "{method} {path} through the proxy answered {status}");
    }
    for path in ["/api/publish", "/api/shutdown"] {
        let response =
            forwarded(reqwest::Method::POST, path).json(&json!({"channel": "a", "event": {}})).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 403, "POST {path} through the proxy");
    }
    // Even a proxied request from the proxy's own (loopback) address, with no header at all, is
    // not local: the proxy speaks for someone else.
    let (status, _) = herald.post("/api/publish", json!({"channel": "a", "event": {}})).await;
    assert_eq!(status, 403, "a request from a trusted proxy is never keyless-local");

    // Without a proxy configured, the development setting lets a direct local caller in…
    let dev =
        Herald::start_with(Options { no_api_key: true, ..Options::toml("[api]\nlocal_admin_without_key = true") })
            .await;
    let (status, body) = dev.post("/api/publish", json!({"channel": "a", "event": {}})).await;
    assert_eq!(status, 200, "{body}");
    // …but not one that says it forwards for someone else.
    let status = reqwest::Client::new()
        .get(dev.url("/api/connections"))
        .header("X-Forwarded-For", "127.0.0.1")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 403);

    // And with neither a key nor the setting, admin is closed, even to loopback.
    let closed = Herald::start_with(Options { no_api_key: true, ..Default::default() }).await;
    let (status, body) = closed.post("/api/publish", json!({"channel": "a", "event": {}})).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("api.key"), "{body}");
    let (status, _) = closed.get("/api/connections").await;
    assert_eq!(status, 403);
}

const SECRET: &str = "hardening-test-secret-0123456789";

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// An HS256 token for `sub` with extra claims, valid for an hour.
fn token(sub: &str, extra: Value) -> String {
    let mut claims = json!({"sub": sub, "exp": now_ms() / 1000 + 3600, "name": format!("User {sub}")});
    if let (Some(map), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        map.extend(extra);
    }
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

/// The spreadsheet profile (`examples/spreadsheet.toml`) as shipped, on a test Redis.
async fn spreadsheet(redis: &RedisServer, env: &[(&str, &str)]) -> Herald {
    let example = std::fs::read_to_string(format!("{}/examples/spreadsheet.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut options = Options::toml(&example)
        .env("HERALD_JWT_SECRET", SECRET)
        .env("HERALD_REDIS__URL", &redis.url())
        .env("HERALD_LIMITS__MAX_CONNECTIONS_PER_IP", "0");
    for (k, v) in env {
        options = options.env(k, v);
    }
    Herald::start_with(options).await
}

/// Skips heartbeats and presence chatter until one of `kinds` arrives.
async fn next_of(client: &mut Client, kinds: &[&str]) -> Value {
    loop {
        let message = client.recv().await;
        if kinds.iter().any(|k| message["type"] == *k) {
            return message;
        }
    }
}

/// The spreadsheet profile sends nothing on connect, so these clients expect no welcome.
async fn member_of(herald: &Herald, user: &str, workspaces: &[&str], room: &str) -> Client {
    let mut client =
        herald.connect_raw(&format!("/api/v1/ws?token={}", token(user, json!({"workspace_ids": workspaces})))).await;
    client.send_json(json!({"type": "join_room", "room_id": room})).await;
    next_of(&mut client, &["room_state"]).await;
    client
}

async fn edit(client: &mut Client, body: Value) -> Value {
    let mut body = body;
    body["type"] = "cell_update".into();
    client.send_json(body).await;
    next_of(client, &["cell_update_ack", "error"]).await
}

/// Cells belong to rooms: an outsider can neither read nor lock a workspace's cells, versions
/// cannot run arbitrarily far ahead, and cell keys with `:` in their names do not collide.
#[tokio::test]
async fn cells_belong_to_their_room_and_cannot_be_read_or_locked_from_outside() {
    let redis = RedisServer::start().await;
    let herald = spreadsheet(&redis, &[]).await;
    let mut victim = member_of(&herald, "victim", &["1"], "workspace_1").await;
    let mut colleague = member_of(&herald, "colleague", &["1"], "workspace_1").await;
    let mut attacker = member_of(&herald, "attacker", &["2"], "workspace_2").await;
    let v = now_ms();
    let ack = edit(&mut victim, json!({"sheet_id": "sheet_1", "cell_id": "A1", "value": "secret", "version": v})).await;
    assert_eq!(ack["type"], "cell_update_ack", "{ack}");
    next_of(&mut colleague, &["cell_updated"]).await;

    // The outsider edits "the same" cell from its own workspace with a stale version: it is a
    // different cell (its room's), so nothing of the victim's leaks.
    let reply = edit(&mut attacker, json!({"sheet_id": "sheet_1", "cell_id": "A1", "value": "x", "version": 1})).await;
    assert!(!reply.to_string().contains("secret"), "an outsider read a workspace's cell: {reply}");
    assert_eq!(reply["type"], "cell_update_ack", "{reply}");
    // Naming the victim's room does not help.
    let reply =
        edit(&mut attacker, json!({"sheet_id": "sheet_1", "cell_id": "A1", "version": 1, "room": "workspace_1"})).await;
    assert_eq!(reply["code"], "PERMISSION_DENIED", "{reply}");
    assert!(!reply.to_string().contains("secret"), "{reply}");

    // Nobody can lock a cell with a huge version…
    let huge = 1_i64 << 53;
    let reply =
        edit(&mut victim, json!({"sheet_id": "sheet_1", "cell_id": "A1", "value": "lock", "version": huge})).await;
    assert_eq!(reply["code"], "INVALID_MESSAGE", "{reply}");
    // …so the next honest edit goes through and the room sees it.
    let ack =
        edit(&mut colleague, json!({"sheet_id": "sheet_1", "cell_id": "A1", "value": "ok", "version": v + 1})).await;
    assert_eq!(ack["type"], "cell_update_ack", "{ack}");
    let seen = next_of(&mut victim, &["cell_updated"]).await;
    assert_eq!(seen["value"], "ok");
    // A stale edit by a member still conflicts, with the current content.
    let conflict =
        edit(&mut victim, json!({"sheet_id": "sheet_1", "cell_id": "A1", "value": "old", "version": v})).await;
    assert_eq!(conflict["code"], "VERSION_CONFLICT", "{conflict}");
    assert_eq!(conflict["current_value"], "ok");

    // (`a:b`, `c`) and (`a`, `b:c`) are two cells.
    let first = edit(&mut victim, json!({"sheet_id": "a:b", "cell_id": "c", "value": 1, "version": 5})).await;
    assert_eq!(first["type"], "cell_update_ack", "{first}");
    let second = edit(&mut victim, json!({"sheet_id": "a", "cell_id": "b:c", "value": 2, "version": 5})).await;
    assert_eq!(second["type"], "cell_update_ack", "the two cells collided: {second}");
}

/// Collaborative state is bounded: cell size, sheets (and cells) per room, so `room_state` stays
/// small whatever sheet ids a member invents.
#[tokio::test]
async fn collaborative_state_is_bounded() {
    let redis = RedisServer::start().await;
    let env = [
        ("HERALD_PRESENCE__MAX_CELL_BYTES", "1024"),
        ("HERALD_PRESENCE__MAX_SHEETS_PER_ROOM", "3"),
        ("HERALD_PRESENCE__MAX_CELLS_PER_ROOM", "5"),
    ];
    let herald = spreadsheet(&redis, &env).await;
    let mut editor = member_of(&herald, "editor", &["1"], "workspace_1").await;
    let big = "x".repeat(2000);
    let reply = edit(&mut editor, json!({"sheet_id": "s", "cell_id": "A1", "value": big, "version": 1})).await;
    assert_eq!(reply["code"], "MESSAGE_TOO_LARGE", "{reply}");
    for sheet in 0..3 {
        let ack = edit(&mut editor, json!({"sheet_id": format!("s{sheet}"), "cell_id": "A1", "version": 1})).await;
        assert_eq!(ack["type"], "cell_update_ack", "{ack}");
    }
    let reply = edit(&mut editor, json!({"sheet_id": "s3", "cell_id": "A1", "version": 1})).await;
    assert_eq!(reply["code"], "LIMIT_EXCEEDED", "a fourth sheet: {reply}");
    for cell in ["B1", "C1"] {
        let ack = edit(&mut editor, json!({"sheet_id": "s0", "cell_id": cell, "version": 1})).await;
        assert_eq!(ack["type"], "cell_update_ack", "{ack}");
    }
    let reply = edit(&mut editor, json!({"sheet_id": "s0", "cell_id": "D1", "version": 1})).await;
    assert_eq!(reply["code"], "LIMIT_EXCEEDED", "a sixth cell: {reply}");
    // Existing cells stay editable.
    let ack = edit(&mut editor, json!({"sheet_id": "s0", "cell_id": "A1", "version": 2})).await;
    assert_eq!(ack["type"], "cell_update_ack", "{ack}");
    let joiner =
        herald.connect_raw(&format!("/api/v1/ws?token={}", token("joiner", json!({"workspace_ids": ["1"]})))).await;
    let mut joiner = joiner;
    joiner.send_json(json!({"type": "join_room", "room_id": "workspace_1"})).await;
    let state = next_of(&mut joiner, &["room_state"]).await;
    assert!(state["active_sheets"].as_array().unwrap().len() <= 3, "{state}");
}

/// Without Redis, a room's cells are forgotten once nobody on the node is in it.
#[tokio::test]
async fn cells_of_a_room_nobody_uses_are_evicted() {
    let herald = Herald::start("[presence]\nenabled = true").await;
    let mut alice = herald.connect("/ws?user_id=alice").await;
    alice.send_json(json!({"type": "join_room", "room_id": "w"})).await;
    next_of(&mut alice, &["room_state"]).await;
    let ack = edit(&mut alice, json!({"sheet_id": "s", "cell_id": "A1", "value": "v", "version": 10})).await;
    assert_eq!(ack["type"], "cell_update_ack", "{ack}");
    drop(alice);
    herald.wait_for_total("connections", |n| n == 0).await;
    herald.wait_for_log("forgot the cells of rooms nobody is in").await;
    let mut bob = herald.connect("/ws?user_id=bob").await;
    bob.send_json(json!({"type": "join_room", "room_id": "w"})).await;
    next_of(&mut bob, &["room_state"]).await;
    let reply = edit(&mut bob, json!({"sheet_id": "s", "cell_id": "A1", "value": "new", "version": 1})).await;
    assert_eq!(reply["type"], "cell_update_ack", "the empty room's cells were kept: {reply}");
}

/// Reads from a raw socket until the server closes it; returns what it sent.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(crate::common::WAIT, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&seen).to_string();
    assert!(closed.is_ok(), "the server kept a stalled request open; it sent {text:?}");
    text
}

/// Complete headers followed by a body that never comes: the whole request read is bounded
/// (`server.request_timeout`), whether or not the route reads the body.
#[tokio::test]
async fn a_stalled_request_body_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let herald = Herald::start("[server]\nrequest_timeout = \"1s\"").await;
    let key = crate::common::API_KEY;
    let publish = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"chan"
    );
    let mut stream = tokio::net::TcpStream::connect(herald.addr).await.unwrap();
    stream.write_all(publish.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "a stalled publish got {answer:?}");
    // A route that never reads its body is bounded the same way.
    let mut stream = tokio::net::TcpStream::connect(herald.addr).await.unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n").await.unwrap();
    read_until_closed(&mut stream).await;
    // The node carries on.
    let (status, _) = herald.get_text("/health").await;
    assert_eq!(status, 200);
}

/// More requests in flight than `server.max_requests_in_flight` are answered 503 at once
/// instead of piling up.
#[tokio::test]
async fn requests_in_flight_are_bounded() {
    use tokio::io::AsyncWriteExt;
    let herald = Herald::start("[server]\nmax_requests_in_flight = 4\nrequest_timeout = \"30s\"").await;
    let stall = || async {
        let mut stream = tokio::net::TcpStream::connect(herald.addr).await.unwrap();
        stream
            .write_all(
                format!(
                    "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
                     Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
                    crate::common::API_KEY
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        stream
    };
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(stall().await);
    }
    // Each stalled request holds its place once the server has read its headers; until then a
    // probe may still get through, and a stalled request whose headers arrive while a probe holds
    // the last place is itself refused (503) and holds none. So probe until the node is full,
    // adding a stalled request after each probe that got through (a bounded number).
    let full = tokio::time::timeout(crate::common::WAIT, async {
        loop {
            let (status, body) = herald.get_text("/health").await;
            if status == 503 {
                return body;
            }
            if stalled.len() < 64 {
                stalled.push(stall().await);
            }
        }
    })
    .await
    .expect("stalled requests never filled the node");
    assert!(full.contains("max_requests_in_flight"), "{full}");
    drop(stalled);
    let outcome = tokio::time::timeout(crate::common::WAIT, async {
        loop {
            if herald.get_text("/health").await.0 == 200 {
                return;
            }
        }
    })
    .await;
    assert!(outcome.is_ok(), "the places of closed requests were never given back");
}

/// A node nobody tuned protects itself: one connection cannot hold more than 1,000 channels or
/// 200 rooms, and one address cannot open more than 256 connections.
#[tokio::test]
async fn untuned_defaults_bound_channels_rooms_and_connections_per_address() {
    let herald = Herald::start("[limits]\nmessages_per_minute = 0\nmessages_per_hour = 0").await;
    let mut client = herald.connect("/ws").await;
    let channels: Vec<String> = (0..1500).map(|i| format!("c{i}")).collect();
    for chunk in channels.chunks(500) {
        client.send_json(json!({"type": "subscribe", "channels": chunk})).await;
    }
    let mut refused = false;
    let mut subscribed = 0;
    while !refused || subscribed < 1000 {
        let reply = client.recv_event().await;
        match reply["type"].as_str() {
            Some("subscribed") => subscribed += reply["channels"].as_array().map_or(1, Vec::len),
            Some("error") => {
                assert_eq!(reply["code"], "LIMIT_EXCEEDED", "{reply}");
                refused = true;
            }
            _ => {}
        }
        assert!(subscribed <= 1000, "subscribed to {subscribed} channels");
    }
    for i in 0..200 {
        client.send_json(json!({"type": "join_room", "room_id": format!("r{i}")})).await;
        assert_eq!(client.recv_event().await["type"], "room_joined");
    }
    client.send_json(json!({"type": "join_room", "room_id": "one-too-many"})).await;
    assert_eq!(client.recv_event().await["code"], "LIMIT_EXCEEDED");

    let mut held = Vec::new();
    for _ in 0..255 {
        held.push(crate::common::raw::RawClient::connect(herald.addr, "/ws").await);
    }
    let refused = crate::common::raw::RawClient::connect_with_headers(herald.addr, "/ws", &[]).await;
    match refused {
        Ok(_) => panic!("a 257th connection from one address was accepted"),
        Err(answer) => assert!(answer.contains("429"), "{answer}"),
    }
}

/// Rate-exempt types are not a free channel: distinct typing states are bounded per room and
/// second, a flood of them ends in the abuse disconnection, and cursors relay only a small flat
/// position.
#[tokio::test]
async fn rate_exempt_types_have_their_own_bounds() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let herald = Herald::start("[presence]\nenabled = true").await;
    let mut observer = herald.connect("/ws?user_id=observer").await;
    observer.send_json(json!({"type": "join_room", "room_id": "w"})).await;
    next_of(&mut observer, &["room_state"]).await;
    let mut attacker = herald.connect("/ws?user_id=attacker").await;
    attacker.send_json(json!({"type": "join_room", "room_id": "w"})).await;
    next_of(&mut attacker, &["room_state"]).await;

    // Cursors: nested or oversized data is refused, a position goes through.
    for bad in [
        json!({"type": "cursor_move", "room": "w", "x": 1, "payload": {"any": ["thing"]}}),
        json!({"type": "cursor_move", "room": "w", "cursor": {"x": 1, "note": "y".repeat(500)}}),
    ] {
        attacker.send_json(bad.clone()).await;
        let reply = next_of(&mut attacker, &["error"]).await;
        assert_eq!(reply["code"], "INVALID_MESSAGE", "{bad} → {reply}");
    }
    attacker.send_json(json!({"type": "cursor_move", "room": "w", "x": 3, "y": 4, "cell": "B2"})).await;
    let moved = next_of(&mut observer, &["cursor_moved"]).await;
    assert_eq!(moved["cursor"], json!({"x": 3, "y": 4, "cell": "B2"}));

    // 3,000 typing starts with distinct cells, as fast as the socket takes them.
    for i in 0..3000 {
        let frame = json!({"type": "typing_start", "room": "w", "cell_id": format!("cell-{i}")}).to_string();
        if attacker.ws.send(Message::text(frame)).await.is_err() {
            break;
        }
    }
    let (code, _) = attacker.expect_close().await;
    assert_eq!(code, 1008, "a typing flood must end in the abuse disconnection");
    // The observer saw a handful of typing frames, then the attacker leave.
    let mut typing = 0;
    loop {
        let event = observer.recv_event().await;
        match event["type"].as_str() {
            Some("typing_indicator" | "user_typing_start" | "user_typing_stop") => typing += 1,
            Some("user_left") => break,
            _ => {}
        }
    }
    assert!(typing <= 40, "{typing} typing frames reached another member");
}

/// Frames that are not valid messages count toward the rate limit like any other.
#[tokio::test]
async fn invalid_json_counts_toward_the_rate_limit() {
    let herald = Herald::start("[limits]\nmessages_per_minute = 5\ndisconnect_after_refusals = 0").await;
    let mut client = herald.connect("/ws").await;
    let mut codes = Vec::new();
    for _ in 0..8 {
        client.send_text("{not json").await;
        codes.push(client.recv_event().await["code"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(codes.iter().filter(|c| *c == "INVALID_JSON").count(), 5, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| *c == "RATE_LIMIT_EXCEEDED").count(), 3, "{codes:?}");
}

/// The manufacturing chat profile's direct-message rule `user_{a}_{b}` with ids that contain
/// the separator: both parties get in, a third user does not.
#[tokio::test]
async fn direct_message_rooms_work_for_ids_containing_the_separator() {
    let example =
        std::fs::read_to_string(format!("{}/examples/manufacturing-chat.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let options =
        Options::toml(&example).env("JWT_SECRET_KEY", SECRET).env("HERALD_LIMITS__MAX_CONNECTIONS_PER_IP", "0");
    let herald = Herald::start_with(options).await;
    let room = "user_user_1_user_2";
    for (sub, admitted) in [("user_1", true), ("user_2", true), ("user_3", false)] {
        let mut client = herald.connect(&format!("/ws/connect?token={}", token(sub, json!({})))).await;
        let reply = client.request(json!({"type": "join_room", "room_id": room})).await;
        if admitted {
            assert_eq!(reply["type"], "room_joined", "{sub}: {reply}");
        } else {
            assert_eq!(reply["code"], "PERMISSION_DENIED", "{sub}: {reply}");
        }
    }
}

/// A refreshed token that no longer grants a room takes the connection out of it, says why, and
/// no more of the room's events arrive.
#[tokio::test]
async fn a_token_refresh_leaves_what_the_new_claims_no_longer_allow() {
    let example =
        std::fs::read_to_string(format!("{}/examples/manufacturing-chat.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let options =
        Options::toml(&example).env("JWT_SECRET_KEY", SECRET).env("HERALD_LIMITS__MAX_CONNECTIONS_PER_IP", "0");
    let herald = Herald::start_with(options).await;
    let mut client = herald.connect(&format!("/ws/connect?token={}", token("7", json!({"order_ids": [123]})))).await;
    for room in ["order_123", "user_7_8"] {
        client.send_json(json!({"type": "join_room", "room_id": room})).await;
        let reply = next_of(&mut client, &["room_joined", "error"]).await;
        assert_eq!(reply["type"], "room_joined", "{reply}");
    }
    client.send_json(json!({"type": "refresh_token", "token": token("7", json!({"order_ids": []}))})).await;
    let refreshed = next_of(&mut client, &["token_refreshed", "error"]).await;
    assert_eq!(refreshed["type"], "token_refreshed", "{refreshed}");
    let left = next_of(&mut client, &["room_left"]).await;
    assert_eq!(left["room"], "order_123", "{left}");
    assert_eq!(left["revoked"], true);
    assert!(left["reason"].as_str().is_some_and(|r| !r.is_empty()), "{left}");
    let (status, body) = herald.post("/api/rooms/order_123/broadcast", json!({"type": "order_update"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = herald.post("/api/rooms/user_7_8/broadcast", json!({"type": "marker"})).await;
    assert_eq!(status, 200, "{body}");
    let next = next_of(&mut client, &["order_update", "marker"]).await;
    assert_eq!(next["type"], "marker", "an event of the revoked room arrived: {next}");
}

/// A chat node on `url` with authentication and no message rates.
fn chat_config(url: &str) -> String {
    format!(
        "[auth]\nmode = \"required\"\njwt_secret = \"{SECRET}\"\n[limits]\nmessages_per_minute = 0\n\
         messages_per_hour = 0\n[database]\nurl = \"{url}\"\n"
    )
}

async fn chat_ack(client: &mut Client, body: Value) -> Value {
    let mut body = body;
    body["type"] = "chat_message".into();
    client.send_json(body).await;
    next_of(client, &["chat_message_ack", "error"]).await
}

/// A retried `chat_message` or REST post with the same idempotency key returns the original
/// message, on another node sharing the database, and is stored and delivered once.
async fn idempotent_retries(url: &str) {
    let (a, b) = (Herald::start(&chat_config(url)).await, Herald::start(&chat_config(url)).await);
    let mut alice_a = a.connect(&format!("/ws?token={}", token("alice", json!({})))).await;
    let mut alice_b = b.connect(&format!("/ws?token={}", token("alice", json!({})))).await;
    let mut bob = a.connect(&format!("/ws?token={}", token("bob", json!({})))).await;
    let mut carol = a.connect(&format!("/ws?token={}", token("carol", json!({})))).await;
    for client in [&mut alice_a, &mut alice_b, &mut bob, &mut carol] {
        client.send_json(json!({"type": "join_room", "room_id": "deals"})).await;
        next_of(client, &["room_joined"]).await;
    }
    let first = chat_ack(&mut alice_a, json!({"room": "deals", "content": "offer 1", "idempotency_key": "k1"})).await;
    assert_eq!(first["type"], "chat_message_ack", "{first}");
    let retry = chat_ack(&mut alice_b, json!({"room": "deals", "content": "offer 1", "idempotency_key": "k1"})).await;
    assert_eq!(retry["type"], "chat_message_ack", "{retry}");
    assert_eq!(retry["message_id"], first["message_id"], "a retry on another node stored a second copy");
    assert_eq!(retry["duplicate"], true);
    // Another user's key of the same text is their own.
    let carols = chat_ack(&mut carol, json!({"room": "deals", "content": "offer 1", "idempotency_key": "k1"})).await;
    assert_ne!(carols["message_id"], first["message_id"]);
    // Bob saw alice's message once: the next chat after it is carol's.
    let seen = next_of(&mut bob, &["chat_message"]).await;
    assert_eq!(seen["message_id"], first["message_id"]);
    let next = next_of(&mut bob, &["chat_message"]).await;
    assert_eq!(next["message_id"], carols["message_id"], "the retry was delivered again: {next}");

    // The REST posting route, with the standard header, on either node.
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for node in [&a, &b] {
        let response = http
            .post(node.url("/api/rooms/deals/messages"))
            .bearer_auth(crate::common::API_KEY)
            .header("Idempotency-Key", "rest-1")
            .json(&json!({"content": "from the backend"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let body: Value = response.json().await.unwrap();
        ids.push(body["message"]["message_id"].clone());
    }
    assert_eq!(ids[0], ids[1], "a retried REST post stored a second copy");
    let (_, history) = a.get("/api/rooms/deals/messages?limit=50").await;
    assert_eq!(history["count"], 3, "{history}");
}

#[tokio::test]
async fn idempotency_keys_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    idempotent_retries(&format!("sqlite://{}/herald.db", dir.path().display())).await;
}

#[tokio::test]
async fn idempotency_keys_on_postgres() {
    let pg = crate::common::postgres::Postgres::start().await;
    idempotent_retries(&pg.url()).await;
}

/// SIGTERM during a burst of chat: every message that is stored was acknowledged to its sender
/// before the connection closed.
#[tokio::test]
async fn shutdown_acknowledges_what_it_stored() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/herald.db", dir.path().display());
    let toml = format!("{}batch_linger = \"200ms\"\n", chat_config(&url));
    let mut herald = Herald::start(&toml).await;
    let mut alice = herald.connect(&format!("/ws?token={}", token("alice", json!({})))).await;
    alice.send_json(json!({"type": "join_room", "room_id": "burst"})).await;
    next_of(&mut alice, &["room_joined"]).await;
    for i in 0..300 {
        let frame = json!({"type": "chat_message", "room": "burst", "content": format!("m{i}")}).to_string();
        alice.ws.send(Message::text(frame)).await.unwrap();
    }
    herald.signal("TERM");
    let mut acked = 0;
    loop {
        match tokio::time::timeout(crate::common::WAIT, futures_util::StreamExt::next(&mut alice.ws)).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                if serde_json::from_str::<Value>(&text).unwrap()["type"] == "chat_message_ack" {
                    acked += 1;
                }
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(_))) => {}
            Err(_) => panic!("the connection was never closed"),
        }
    }
    assert_eq!(herald.wait_exit().await, Some(0));
    let restarted = Herald::start(&toml).await;
    let (_, history) = restarted.get("/api/rooms/burst/messages?limit=500").await;
    assert_eq!(history["count"], acked, "stored messages that were never acknowledged");
    eprintln!("acknowledged and stored during shutdown: {acked}");
}
