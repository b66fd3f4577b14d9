//! Bad input, slow consumers, silence and shutdown: each gets a clear answer, and everyone else
//! carries on.

use herald::transport::frame::{self, Message};
use serde_json::json;

use crate::common::raw::RawClient;
use crate::common::{Herald, Options};

#[tokio::test]
async fn malformed_messages_get_errors_and_the_connection_stays_usable() {
    let herald = Herald::start("").await;
    let mut client = herald.connect("/ws").await;
    let cases = [
        ("not json", "INVALID_JSON"),
        ("{\"type\": \"subscribe\", ", "INVALID_JSON"),
        ("[1, 2, 3]", "INVALID_JSON"),
        ("\"just a string\"", "INVALID_JSON"),
        ("{}", "INVALID_MESSAGE"),
        ("{\"type\": 42}", "INVALID_MESSAGE"),
        ("{\"type\": \"\"}", "INVALID_MESSAGE"),
        ("{\"type\": \"frobnicate\"}", "UNKNOWN_MESSAGE_TYPE"),
        ("{\"type\": \"subscribe\"}", "INVALID_MESSAGE"),
        ("{\"type\": \"subscribe\", \"channels\": 7}", "INVALID_MESSAGE"),
        ("{\"type\": \"subscribe\", \"channels\": [1, 2]}", "INVALID_MESSAGE"),
        ("{\"type\": \"subscribe\", \"channels\": []}", "INVALID_MESSAGE"),
        ("{\"type\": \"subscribe\", \"channels\": [\"\"]}", "INVALID_NAME"),
        ("{\"type\": \"join_room\"}", "INVALID_MESSAGE"),
        ("{\"type\": \"join_room\", \"room\": 5}", "INVALID_MESSAGE"),
        ("{\"type\": \"join_room\", \"room\": \"a\\u0000b\"}", "INVALID_NAME"),
        ("{\"type\": \"leave_room\", \"room_id\": null}", "INVALID_MESSAGE"),
    ];
    for (text, code) in cases {
        client.send_text(text).await;
        let error = client.recv_event().await;
        assert_eq!(error["type"], "error", "for {text}: {error}");
        assert_eq!(error["code"], code, "for {text}: {error}");
        assert!(error["error"].as_str().is_some_and(|e| !e.is_empty()), "for {text}: {error}");
    }
    let long_room = "r".repeat(10_000);
    let error = client.request(json!({"type": "join_room", "room": long_room})).await;
    assert_eq!(error["code"], "INVALID_NAME");
    client.assert_alive().await;
}

#[tokio::test]
async fn a_binary_frame_is_refused_with_an_error_not_a_disconnect() {
    let herald = Herald::start("").await;
    let mut raw = RawClient::connect(herald.addr, "/ws").await;
    assert_eq!(raw.next_json().await["type"], "connection");
    raw.send_frame(frame::OP_BINARY, &[1, 2, 3]).await;
    let error = raw.next_json().await;
    assert_eq!(error["code"], "UNSUPPORTED_FRAME");
    raw.send_frame(frame::OP_TEXT, br#"{"type":"ping"}"#).await;
    assert_eq!(raw.next_json().await["type"], "pong");
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009_and_others_carry_on() {
    let herald = Herald::start("[websocket]\nmax_message_size = 1024").await;
    let mut bystander = herald.connect("/ws?channels=news").await;
    let mut raw = RawClient::connect(herald.addr, "/ws").await;
    assert_eq!(raw.next_json().await["type"], "connection");
    raw.send_frame(frame::OP_TEXT, &vec![b' '; 2048]).await;
    assert_eq!(raw.expect_close().await, 1009);
    herald.publish(json!({"channel": "news", "event": {"type": "still-here"}})).await;
    assert_eq!(bystander.recv_event().await["type"], "still-here");
}

#[tokio::test]
async fn protocol_violations_close_with_the_proper_code() {
    let herald = Herald::start("").await;
    // Unmasked client frame: 1002.
    let mut raw = RawClient::connect(herald.addr, "/ws").await;
    raw.send_raw(&frame::encode(frame::OP_TEXT, b"{}")).await;
    assert_eq!(raw.expect_close().await, 1002);
    // Control frame over 125 bytes: 1002.
    let mut raw = RawClient::connect(herald.addr, "/ws").await;
    raw.send_frame(frame::OP_PING, &[0u8; 126]).await;
    assert_eq!(raw.expect_close().await, 1002);
    // Invalid UTF-8 in a text frame: 1007.
    let mut raw = RawClient::connect(herald.addr, "/ws").await;
    raw.send_frame(frame::OP_TEXT, &[0xff, 0xfe, b'{']).await;
    assert_eq!(raw.expect_close().await, 1007);
    // Reserved opcode: 1002.
    let mut raw = RawClient::connect(herald.addr, "/ws").await;
    raw.send_frame_bits(0x80 | 0x3, b"").await;
    assert_eq!(raw.expect_close().await, 1002);
    // The node still serves.
    let mut client = herald.connect("/ws").await;
    client.assert_alive().await;
}

#[tokio::test]
async fn fragmented_messages_and_interleaved_pings_are_understood() {
    let herald = Herald::start("").await;
    let mut raw = RawClient::connect(herald.addr, "/ws").await;
    assert_eq!(raw.next_json().await["type"], "connection");
    raw.send_frame_bits(frame::OP_TEXT, br#"{"type":"#).await;
    raw.send_frame_bits(0x80 | frame::OP_PING, b"hi").await;
    raw.send_frame_bits(0x80 | frame::OP_CONTINUATION, br#""ping"}"#).await;
    assert_eq!(raw.next().await, Some(Message::Pong(bytes::Bytes::from_static(b"hi"))));
    assert_eq!(raw.next_json().await["type"], "pong");
}

#[tokio::test]
async fn a_client_close_is_answered_with_the_same_code() {
    let herald = Herald::start("").await;
    let mut raw = RawClient::connect(herald.addr, "/ws").await;
    raw.send_frame(frame::OP_CLOSE, &[0x0b, 0xb8]).await; // 3000
    assert_eq!(raw.expect_close().await, 3000);
    assert!(raw.next().await.is_none(), "server must close the TCP connection after the handshake");
}

#[tokio::test]
async fn thousands_of_subscriptions_are_served_and_bounded_by_the_limit() {
    let herald = Herald::start("[limits]\nmax_channels_per_connection = 1000").await;
    let mut client = herald.connect("/ws").await;
    for batch in 0..10 {
        let channels: Vec<String> = (0..100).map(|i| format!("ch-{batch}-{i}")).collect();
        let ack = client.request(json!({"type": "subscribe", "channels": channels})).await;
        assert_eq!(ack["type"], "subscribed", "{ack}");
    }
    let refused = client.request(json!({"type": "subscribe", "channels": ["one-too-many"]})).await;
    assert_eq!(refused["code"], "LIMIT_EXCEEDED");
    herald.publish(json!({"channel": "ch-9-99", "event": {"type": "last"}})).await;
    assert_eq!(client.recv_event().await["type"], "last");
}

#[tokio::test]
async fn a_slow_consumer_is_closed_with_4008_while_others_get_everything() {
    let herald = Herald::start("[websocket]\noutbound_queue = 8\noutbound_queue_bytes = 262144").await;
    let mut reader = herald.connect("/ws?channels=firehose").await;
    let mut stalled = RawClient::connect(herald.addr, "/ws?channels=firehose").await;
    let payload = "x".repeat(32 * 1024);
    let mut published = 0;
    // Publish until the stalled socket's kernel buffers and then its queue fill up; the fast
    // reader keeps reading as it goes.
    while herald.get("/api/stats").await.1["totals"]["slow_consumer_disconnects"].as_u64() == Some(0) {
        herald.publish(json!({"channel": "firehose", "event": {"type": "bulk", "n": published, "pad": payload}})).await;
        let got = reader.recv_event().await;
        assert_eq!(got["n"], published);
        published += 1;
        assert!(published < 10_000, "the stalled client was never cut off");
    }
    herald.wait_for_log("slow consumer").await;
    // The stalled client, reading at last, finds a close frame with the slow-consumer code.
    assert_eq!(stalled.expect_close().await, 4008);
    // The fast reader is unaffected.
    herald.publish(json!({"channel": "firehose", "event": {"type": "after"}})).await;
    assert_eq!(reader.recv_event().await["type"], "after");
    drop(stalled);
    herald.wait_for_total("connections", |n| n == 1).await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let herald = Herald::start("[websocket]\nheartbeat_interval = \"200ms\"\nidle_timeout = \"600ms\"").await;
    // The raw client never answers pings, so it is silent.
    let mut silent = RawClient::connect(herald.addr, "/ws").await;
    assert_eq!(silent.expect_close().await, 4000);
    // A normal client answers pings (tungstenite does) and stays.
    let mut live = herald.connect("/ws").await;
    herald.wait_for_total("idle_disconnects", |n| n >= 1).await;
    // After several idle periods it is still alive.
    for _ in 0..4 {
        live.recv_type("heartbeat").await;
    }
    live.assert_alive().await;
}

#[tokio::test]
async fn sigterm_closes_every_socket_with_1001_and_exits_cleanly() {
    let mut herald = Herald::start("").await;
    let mut one = herald.connect("/ws").await;
    let mut two = herald.connect("/ws?channels=a").await;
    herald.signal("TERM");
    for client in [&mut one, &mut two] {
        let (code, reason) = client.expect_close().await;
        assert_eq!(code, 1001);
        assert!(reason.contains("shutting down"), "{reason}");
    }
    assert_eq!(herald.wait_exit().await, Some(0));
    let log = herald.log.lock().clone();
    assert!(log.contains("all connections closed"), "shutdown should finish before its deadline:\n{log}");
}

#[tokio::test]
async fn the_connection_cap_refuses_with_503() {
    let herald = Herald::start_with(Options::toml("[limits]\nmax_connections = 2")).await;
    let _a = herald.connect("/ws").await;
    let _b = herald.connect("/ws").await;
    let refused =
        RawClient::connect_with_headers(herald.addr, "/ws", &[]).await.err().expect("third connection refused");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("Too many connections"), "{refused}");
}

/// File descriptors the process holds now.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn thousands_of_abrupt_drops_leave_no_trace_while_events_flow() {
    // 2,000 clients from one address: past the default per-address cap on purpose.
    let herald = Herald::start("[limits]\nmax_connections_per_ip = 0").await;
    let mut bystander = herald.connect("/ws?channels=flow").await;
    let baseline_fds = open_fds(herald.pid());
    let (_, health) = herald.get("/health").await;
    assert_eq!(health["health_status"], "healthy", "{health}");

    // 2,000 subscribers, then events keep flowing while they vanish without a close frame: half
    // reset (SO_LINGER 0), half a plain FIN.
    let mut doomed = Vec::new();
    for i in 0..2000 {
        let raw = RawClient::connect(herald.addr, &format!("/ws?channels=flow&client_id=doomed-{i}")).await;
        doomed.push(raw);
    }
    herald.wait_for_total("connections", |n| n >= 2001).await;
    let publisher = {
        let url = herald.url("/api/publish");
        let key = crate::common::API_KEY.to_string();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for n in 0..200u64 {
                let body = json!({"channel": "flow", "event": {"type": "flow", "n": n}});
                let response = http.post(&url).bearer_auth(&key).json(&body).send().await.unwrap();
                assert!(response.status().is_success());
                tokio::task::yield_now().await;
            }
        })
    };
    for (i, raw) in doomed.into_iter().enumerate() {
        if i % 2 == 0 {
            raw.reset();
        } else {
            drop(raw);
        }
    }
    publisher.await.unwrap();
    // The bystander got every event, in order.
    let mut expected = 0;
    while expected < 200 {
        let event = bystander.recv_event().await;
        assert_eq!(event["n"], expected, "{event}");
        expected += 1;
    }
    // Every dropped connection is gone: counted out and its descriptor closed.
    herald.wait_for_total("connections", |n| n == 1).await;
    let what = format!("back to the {baseline_fds} descriptors open before");
    crate::common::until(what, async || open_fds(herald.pid()) <= baseline_fds).await;
    let (_, health) = herald.get("/health").await;
    assert_eq!(health["health_status"], "healthy", "{health}");
    bystander.assert_alive().await;
}
