//! The bad-input suite: wrong types for every field of every client message, hostile names, and
//! floods of requests, over real sockets. Every case gets a clear error; the connection that sent
//! it, the node and a bystander client carry on.

use serde_json::{Value, json};

use herald::transport::deflate::compress;

use crate::common::raw::RawClient;
use crate::common::{Client, Herald};

/// A node with every client feature on (presence, notifications, a forwarded type, an alias).
const CONFIG: &str = r#"
[limits]
messages_per_minute = 0
messages_per_hour = 0

[presence]
enabled = true

[[history]]
channels = "feed"

[[aliases]]
type = "subscribe_order_updates"
action = "join_room"
target = "order_{order_id}"
"#;

/// Sends `message` and returns the first error it draws (other traffic is skipped).
async fn error_for(client: &mut Client, message: &Value) -> Value {
    client.send_json(message.clone()).await;
    loop {
        let reply = client.recv().await;
        match reply["type"].as_str() {
            Some("error") => return reply,
            Some(
                "heartbeat" | "room_state" | "user_joined" | "user_left" | "user_status_changed" | "presence_update",
            ) => {}
            _ => panic!("{message} drew {reply} instead of an error"),
        }
    }
}

/// The bystander still receives what is published to its channel.
async fn bystander_alive(herald: &Herald, bystander: &mut Client, n: usize) {
    herald.publish(json!({"channel": "bystander", "event": {"type": "tick", "n": n}})).await;
    let tick = bystander.recv_event().await;
    assert_eq!((tick["type"].as_str(), tick["n"].as_u64()), (Some("tick"), Some(n as u64)), "{tick}");
}

/// (message, expected code) for every client message type and field.
fn wrong_field_cases() -> Vec<(Value, &'static str)> {
    let long = "x".repeat(300);
    let mut cases = vec![
        // subscribe / unsubscribe
        (json!({"type": "subscribe"}), "INVALID_MESSAGE"),
        (json!({"type": "subscribe", "channels": 7}), "INVALID_MESSAGE"),
        (json!({"type": "subscribe", "channels": {"a": 1}}), "INVALID_MESSAGE"),
        (json!({"type": "subscribe", "channels": [1, 2]}), "INVALID_MESSAGE"),
        (json!({"type": "subscribe", "channels": [null]}), "INVALID_MESSAGE"),
        (json!({"type": "subscribe", "channels": []}), "INVALID_MESSAGE"),
        (json!({"type": "subscribe", "channels": [""]}), "INVALID_NAME"),
        (json!({"type": "subscribe", "channels": [long.clone()]}), "INVALID_NAME"),
        (json!({"type": "subscribe", "channel": true}), "INVALID_MESSAGE"),
        (json!({"type": "unsubscribe"}), "INVALID_MESSAGE"),
        (json!({"type": "unsubscribe", "channels": 3.5}), "INVALID_MESSAGE"),
        (json!({"type": "unsubscribe", "channels": ["a\u{1}b"]}), "INVALID_NAME"),
        // join_room / leave_room
        (json!({"type": "join_room"}), "INVALID_MESSAGE"),
        (json!({"type": "join_room", "room": 5}), "INVALID_MESSAGE"),
        (json!({"type": "join_room", "room": ["r"]}), "INVALID_MESSAGE"),
        (json!({"type": "join_room", "room_id": {"r": 1}}), "INVALID_MESSAGE"),
        (json!({"type": "join_room", "room": ""}), "INVALID_NAME"),
        (json!({"type": "join_room", "room": long.clone()}), "INVALID_NAME"),
        (json!({"type": "join_room", "room": "tab\there"}), "INVALID_NAME"),
        (json!({"type": "leave_room"}), "INVALID_MESSAGE"),
        (json!({"type": "leave_room", "room_id": false}), "INVALID_MESSAGE"),
        // chat_message / mark_read / read_receipt
        (json!({"type": "chat_message", "content": "hi"}), "INVALID_MESSAGE"),
        (json!({"type": "chat_message", "room": "r"}), "INVALID_MESSAGE"),
        (json!({"type": "chat_message", "room": "r", "content": 5}), "INVALID_MESSAGE"),
        (json!({"type": "chat_message", "room": "r", "content": "hi", "message_type": 1}), "INVALID_MESSAGE"),
        (json!({"type": "chat_message", "room": "r", "content": "hi", "message_type": "video"}), "INVALID_MESSAGE"),
        (json!({"type": "chat_message", "room": "r", "content": "hi", "message_type": "system"}), "PERMISSION_DENIED"),
        (json!({"type": "chat_message", "room": "r", "content": "hi", "metadata": "x"}), "INVALID_MESSAGE"),
        (json!({"type": "chat_message", "room": "r", "content": "hi", "sensitive": "yes"}), "INVALID_MESSAGE"),
        (json!({"type": "chat_message", "room": "r", "content": "nul\u{0}"}), "INVALID_MESSAGE"),
        (json!({"type": "mark_read", "room": "r"}), "INVALID_MESSAGE"),
        (json!({"type": "mark_read", "room": "r", "message_ids": "1"}), "INVALID_MESSAGE"),
        (json!({"type": "mark_read", "room": "r", "message_ids": [-1]}), "INVALID_MESSAGE"),
        (json!({"type": "mark_read", "room": "r", "up_to": "last"}), "INVALID_MESSAGE"),
        (json!({"type": "read_receipt", "up_to": 3}), "INVALID_MESSAGE"),
        // refresh_token
        (json!({"type": "refresh_token"}), "INVALID_MESSAGE"),
        (json!({"type": "refresh_token", "token": 42}), "INVALID_MESSAGE"),
        // presence
        (json!({"type": "status_update"}), "INVALID_MESSAGE"),
        (json!({"type": "status_update", "status": 1}), "INVALID_MESSAGE"),
        (json!({"type": "status_update", "status": "offline"}), "INVALID_MESSAGE"),
        (json!({"type": "typing_start"}), "INVALID_MESSAGE"),
        (json!({"type": "typing_start", "room": 9}), "INVALID_MESSAGE"),
        (json!({"type": "typing_start", "room": "not-joined"}), "PERMISSION_DENIED"),
        (json!({"type": "typing_start", "room": "joined", "cell_id": {"a": 1}}), "INVALID_MESSAGE"),
        (json!({"type": "typing_stop", "room": []}), "INVALID_MESSAGE"),
        (json!({"type": "cursor_move"}), "INVALID_MESSAGE"),
        (json!({"type": "cursor_move", "room": "not-joined", "x": 1}), "PERMISSION_DENIED"),
        // cells
        (json!({"type": "cell_update"}), "INVALID_MESSAGE"),
        (json!({"type": "cell_update", "sheet_id": [], "cell_id": "A1", "version": 1}), "INVALID_MESSAGE"),
        (json!({"type": "cell_update", "sheet_id": "s", "cell_id": null, "version": 1}), "INVALID_MESSAGE"),
        (json!({"type": "cell_update", "sheet_id": "s", "cell_id": "A1"}), "INVALID_MESSAGE"),
        (json!({"type": "cell_update", "sheet_id": "s", "cell_id": "A1", "version": "1"}), "INVALID_MESSAGE"),
        (json!({"type": "cell_update", "sheet_id": "s", "cell_id": "A1", "version": 1.5}), "INVALID_MESSAGE"),
        (
            json!({"type": "cell_update", "sheet_id": "s", "cell_id": "A1", "version": 1, "formula": 3}),
            "INVALID_MESSAGE",
        ),
        (json!({"type": "cell_update", "sheet_id": "s", "cell_id": "A\u{1}", "version": 1}), "INVALID_MESSAGE"),
        (
            json!({"type": "cell_update", "sheet_id": "s", "cell_id": "A1", "version": 1, "room": "not-joined"}),
            "PERMISSION_DENIED",
        ),
        // notifications
        (json!({"type": "subscribe_notifications", "categories": "system"}), "INVALID_MESSAGE"),
        (json!({"type": "subscribe_notifications", "modules": [1]}), "INVALID_MESSAGE"),
        (json!({"type": "subscribe_notifications", "priorities": {"high": true}}), "INVALID_MESSAGE"),
        (json!({"type": "subscribe_notifications", "categories": [long.clone()]}), "INVALID_MESSAGE"),
        (json!({"type": "notification_read"}), "INVALID_MESSAGE"),
        (json!({"type": "notification_read", "notification_id": {"id": 1}}), "INVALID_MESSAGE"),
        (json!({"type": "notification_read", "notification_id": "notif_unknown"}), "INVALID_MESSAGE"),
        // positions, resume and history (issue 7)
        (json!({"type": "subscribe", "channels": ["a"], "recover": 5}), "INVALID_MESSAGE"),
        (json!({"type": "subscribe", "channels": ["a"], "recover": ["a"]}), "INVALID_MESSAGE"),
        (json!({"type": "subscribe", "channels": ["a"], "recover": {"a": 41}}), "INVALID_MESSAGE"),
        (json!({"type": "subscribe", "channels": ["a"], "recover": {"a": {"seq": "41"}}}), "INVALID_MESSAGE"),
        (json!({"type": "subscribe", "channels": ["a"], "recover": {"a": {"seq": -1}}}), "INVALID_MESSAGE"),
        (json!({"type": "subscribe", "channels": ["a"], "recover": {"a": {"seq": 1.5}}}), "INVALID_MESSAGE"),
        (json!({"type": "subscribe", "channels": ["a"], "recover": {"a": {"seq": 1, "epoch": 7}}}), "INVALID_MESSAGE"),
        (
            json!({"type": "subscribe", "channels": ["a"], "recover": {"a": {"seq": 1, "epoch": "e".repeat(65)}}}),
            "INVALID_MESSAGE",
        ),
        (json!({"type": "join_room", "room": "r", "recover": "41"}), "INVALID_MESSAGE"),
        (json!({"type": "join_room", "room": "r", "recover": {"epoch": "e"}}), "INVALID_MESSAGE"),
        (json!({"type": "history"}), "INVALID_MESSAGE"),
        (json!({"type": "history", "channel": 5}), "INVALID_MESSAGE"),
        (json!({"type": "history", "channel": ""}), "INVALID_NAME"),
        (json!({"type": "history", "room": "no-history-here"}), "INVALID_MESSAGE"),
        (json!({"type": "history", "channel": "no-history-here"}), "INVALID_MESSAGE"),
        (json!({"type": "history", "channel": "feed", "limit": 0}), "INVALID_MESSAGE"),
        (json!({"type": "history", "channel": "feed", "limit": "5"}), "INVALID_MESSAGE"),
        (json!({"type": "history", "channel": "feed", "limit": 100_001}), "INVALID_MESSAGE"),
        (json!({"type": "history", "channel": "feed", "since": 3}), "INVALID_MESSAGE"),
        (json!({"type": "history", "channel": "feed", "since": {"seq": true}}), "INVALID_MESSAGE"),
        // aliases and unknown types
        (json!({"type": "subscribe_order_updates"}), "INVALID_MESSAGE"),
        (json!({"type": "subscribe_order_updates", "order_id": [1]}), "INVALID_MESSAGE"),
        (json!({"type": "subscribe_order_updates", "order_id": "a\u{0}b"}), "INVALID_NAME"),
        (json!({"type": "ai_request", "query": "not forwarded here"}), "UNKNOWN_MESSAGE_TYPE"),
        (json!({"type": "x".repeat(101)}), "INVALID_MESSAGE"),
        (json!({"type": ["ping"]}), "INVALID_MESSAGE"),
        (json!({"type": null}), "INVALID_MESSAGE"),
    ];
    // Every type with a body that is not even an object where one is needed.
    for kind in ["subscribe", "join_room", "chat_message", "cell_update", "typing_start", "status_update"] {
        cases.push((json!({"type": kind, "room": null, "channels": null, "status": null}), "INVALID_MESSAGE"));
    }
    cases
}

#[tokio::test]
async fn every_field_of_every_message_with_a_wrong_value_gets_a_clear_error() {
    let herald = Herald::start(CONFIG).await;
    let mut bystander = herald.connect("/ws?channels=bystander").await;
    let mut client = herald.connect("/ws?user_id=alice").await;
    assert_eq!(client.request(json!({"type": "join_room", "room": "joined"})).await["type"], "room_joined");
    let cases = wrong_field_cases();
    for (i, (message, code)) in cases.iter().enumerate() {
        let error = error_for(&mut client, message).await;
        assert_eq!(error["code"], *code, "{message} → {error}");
        assert!(error["error"].as_str().is_some_and(|e| !e.is_empty()), "{message} → {error}");
        if i % 10 == 0 {
            bystander_alive(&herald, &mut bystander, i).await;
        }
    }
    client.assert_alive().await;
    bystander_alive(&herald, &mut bystander, cases.len()).await;
    println!("bad-input cases: {} wrong-field messages", cases.len());
}

#[tokio::test]
async fn malformed_text_frames_get_errors() {
    let herald = Herald::start(CONFIG).await;
    let mut bystander = herald.connect("/ws?channels=bystander").await;
    let mut client = herald.connect("/ws").await;
    let frames = [
        ("", "INVALID_JSON"),
        ("{", "INVALID_JSON"),
        ("{\"type\":\"ping\"", "INVALID_JSON"),
        ("{\"type\":\"ping\"}}", "INVALID_JSON"),
        ("{\"type\":\"ping\",}", "INVALID_JSON"),
        ("{'type':'ping'}", "INVALID_JSON"),
        ("null", "INVALID_JSON"),
        ("true", "INVALID_JSON"),
        ("12345", "INVALID_JSON"),
        ("[{\"type\":\"ping\"}]", "INVALID_JSON"),
        ("{\"type\":\"ping\",\"type\":\"subscribe\"}", "INVALID_MESSAGE"),
        ("{\"type\":\"\\ud800\"}", "INVALID_JSON"),
        (
            "{\"type\":\"subscribe\",\"channels\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"a\"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
            "INVALID_MESSAGE",
        ),
    ];
    for (i, (text, code)) in frames.iter().enumerate() {
        client.send_text(text).await;
        let error = client.recv_event().await;
        // A duplicate key keeps the last value (serde_json); that is a subscribe without channels.
        assert_eq!(error["code"], *code, "{text:?} → {error}");
        bystander_alive(&herald, &mut bystander, i).await;
    }
    // Deep nesting beyond the JSON parser's limit is an error too, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    client.send_text(&deep).await;
    assert_eq!(client.recv_event().await["code"], "INVALID_JSON");
    client.assert_alive().await;
    println!("bad-input cases: {} malformed frames", frames.len() + 1);
}

#[tokio::test]
async fn hostile_room_names_are_opaque_keys() {
    let herald = Herald::start(CONFIG).await;
    let mut client = herald.connect("/ws?user_id=u").await;
    let names = [
        "../../etc/passwd",
        "/ws/rooms/../admin",
        "комната-🚀-房间",
        "'; DROP TABLE rooms; --",
        "<script>alert(1)</script>",
        "%2e%2e%2f",
        "room with spaces",
        "a:b:c*?[]{}",
        &"long-".repeat(40),
    ];
    for name in names {
        let joined = client.request(json!({"type": "join_room", "room": name})).await;
        assert_eq!(joined["type"], "room_joined", "{name:?}: {joined}");
        assert_eq!(joined["room"], name);
        assert_eq!(client.recv_event().await["type"], "room_state");
        let encoded: String = name
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let (status, reply) =
            herald.post(&format!("/api/rooms/{encoded}/broadcast"), json!({"type": "hello", "name": name})).await;
        assert_eq!(status, 200, "{name:?}: {reply}");
        let hello = client.recv_event().await;
        assert_eq!((hello["type"].as_str(), hello["name"].as_str()), (Some("hello"), Some(name)));
    }
    let (_, rooms) = herald.get("/api/rooms").await;
    let listed = rooms.to_string();
    assert!(listed.contains("<script>alert(1)</script>"), "names are listed verbatim (JSON-escaped): {listed}");
    println!("bad-input cases: {} hostile room names", names.len());
}

#[tokio::test]
async fn thousands_of_requests_in_a_burst_are_all_answered_in_order() {
    let herald =
        Herald::start("[limits]\nmessages_per_minute = 0\nmessages_per_hour = 0\nmax_channels_per_connection = 100")
            .await;
    let mut bystander = herald.connect("/ws?channels=bystander").await;
    let mut client = herald.connect("/ws").await;
    for i in 0..5000 {
        client.send_json(json!({"type": "subscribe", "channels": [format!("c{}", i % 150)], "id": i})).await;
    }
    let mut refused = 0;
    for i in 0..5000 {
        let reply = client.recv_event().await;
        assert_eq!(reply["id"], i, "{reply}");
        if reply["code"] == "LIMIT_EXCEEDED" {
            refused += 1;
        } else {
            assert_eq!(reply["type"], "subscribed", "{reply}");
        }
    }
    let expected = (0..5000).filter(|i| i % 150 >= 100).count();
    assert_eq!(refused, expected, "channels past the 100th are refused, the others acknowledged");
    bystander_alive(&herald, &mut bystander, 1).await;
    client.assert_alive().await;
}

/// A handshake that negotiates permessage-deflate, for hand-made compressed frames.
async fn deflate_client(herald: &Herald) -> RawClient {
    let extension = ("Sec-WebSocket-Extensions", "permessage-deflate; client_no_context_takeover");
    RawClient::connect_with_headers(herald.addr, "/ws", &[extension]).await.expect("handshake")
}

/// FIN + RSV1 (compressed) + text.
const COMPRESSED_TEXT: u8 = 0x80 | 0x40 | 0x01;

#[tokio::test]
async fn hostile_compressed_and_messagepack_frames_get_clear_errors() {
    let herald = Herald::start(CONFIG).await;
    let mut bystander = herald.connect("/ws?channels=bystander").await;

    // A compressed request is understood.
    let mut raw = deflate_client(&herald).await;
    assert_eq!(raw.next_json().await["type"], "connection");
    raw.send_frame_bits(COMPRESSED_TEXT, &compress(br#"{"type":"ping","id":1}"#, 15, 6)).await;
    let pong = raw.next_json().await;
    assert_eq!((pong["type"].as_str(), pong["id"].as_u64()), (Some("pong"), Some(1)), "{pong}");

    // A decompression bomb: 64 KiB is the message limit; 16 MiB of zeros deflate to ~16 KiB.
    let bomb = compress(&vec![0u8; 16 << 20], 15, 9);
    assert!(bomb.len() < 64 * 1024);
    raw.send_frame_bits(COMPRESSED_TEXT, &bomb).await;
    assert_eq!(raw.expect_close().await, 1009, "a message that inflates past the limit is too big");
    bystander_alive(&herald, &mut bystander, 1).await;

    // Bytes that are not deflate data.
    let mut raw = deflate_client(&herald).await;
    assert_eq!(raw.next_json().await["type"], "connection");
    raw.send_frame_bits(COMPRESSED_TEXT, &[0xff, 0xfe, 0xfd, 0xfc, 0x00, 0x13]).await;
    assert_eq!(raw.expect_close().await, 1007, "a compressed frame that does not inflate is an invalid payload");
    bystander_alive(&herald, &mut bystander, 2).await;

    // A compressed frame on a connection that did not negotiate compression.
    let mut raw = RawClient::connect(herald.addr, "/ws").await;
    assert_eq!(raw.next_json().await["type"], "connection");
    raw.send_frame_bits(COMPRESSED_TEXT, &compress(br#"{"type":"ping"}"#, 15, 6)).await;
    assert_eq!(raw.expect_close().await, 1002, "RSV1 without the extension is a protocol error");
    bystander_alive(&herald, &mut bystander, 3).await;

    // MessagePack sessions: garbage and non-maps get an error; the session carries on.
    let mut raw = RawClient::connect_with_headers(herald.addr, "/ws", &[("Sec-WebSocket-Protocol", "herald.msgpack")])
        .await
        .expect("handshake");
    let welcome = raw.next_msgpack().await;
    assert_eq!(welcome["type"], "connection", "{welcome}");
    let bad: [(&[u8], &str); 5] = [
        (&[0xc1], "INVALID_JSON"),                                        // never used in MessagePack
        (&[0x2a], "INVALID_JSON"),                                        // the integer 42, not a map
        (&[0x92, 0x01, 0x02], "INVALID_JSON"),                            // an array
        (&[0x81, 0xa4, b't', b'y'], "INVALID_JSON"),                      // a map cut short
        (&[0x81, 0xa4, b't', b'y', b'p', b'e', 0x07], "INVALID_MESSAGE"), // type is a number
    ];
    for (i, (frame, code)) in bad.iter().enumerate() {
        raw.send_frame(0x02, frame).await;
        let error = raw.next_msgpack().await;
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str()),
            (Some("error"), Some(*code)),
            "{frame:?} → {error}"
        );
        bystander_alive(&herald, &mut bystander, 10 + i).await;
    }
    let ping = rmp_serde::to_vec_named(&json!({"type": "ping", "id": 9})).unwrap();
    raw.send_frame(0x02, &ping).await;
    let pong = raw.next_msgpack().await;
    assert_eq!((pong["type"].as_str(), pong["id"].as_u64()), (Some("pong"), Some(9)), "{pong}");
    println!("bad-input cases: 4 compressed frames, {} MessagePack frames", bad.len());
}
