//! Sequence numbers, history and resume; permessage-deflate; MessagePack.

use std::process::Stdio;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::redis::RedisServer;
use crate::common::{Client, Herald, WAIT};

/// Streams with history for these tests (also the cluster suite's).
pub const HISTORY: &str = r#"
[[history]]
channels = "feed*"
size = 500
max_age = "10m"

[[history]]
channels = "small"
size = 10
max_age = "10m"

[[history]]
rooms = "order_*"
size = 100
max_age = "10m"
"#;

/// The next event (not a heartbeat or a reply), as JSON.
async fn next_event(client: &mut Client) -> Value {
    client.recv_event().await
}

/// Receives `n` events and returns them.
async fn events(client: &mut Client, n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.push(next_event(client).await);
    }
    out
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {e}"))).collect()
}

#[tokio::test]
async fn a_plain_client_sees_exactly_the_published_frames() {
    let herald = Herald::start(HISTORY).await;
    let mut plain = herald.connect("/ws?channels=feed,other").await;
    let mut with_seq = herald.connect("/ws?channels=feed&seq=1").await;
    herald.publish(json!({"channel": "feed", "event": {"type": "t", "n": 1, "s": "é"}})).await;
    herald.publish(json!({"channel": "other", "event": {"type": "u"}})).await;
    let raw = |m: Option<Result<Message, _>>| match m {
        Some(Ok(Message::Text(text))) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    };
    let first = raw(tokio::time::timeout(WAIT, plain.ws.next()).await.unwrap());
    assert_eq!(first, r#"{"type":"t","n":1,"s":"é"}"#, "history must not change a plain client's frames");
    let second = raw(tokio::time::timeout(WAIT, plain.ws.next()).await.unwrap());
    assert_eq!(second, r#"{"type":"u"}"#);
    let numbered = next_event(&mut with_seq).await;
    assert_eq!(
        (numbered["n"].clone(), numbered["seq"].clone(), numbered["stream"].clone()),
        (json!(1), json!(1), json!("c:feed"))
    );
    assert!(numbered["epoch"].as_str().is_some_and(|e| !e.is_empty()));
}

#[tokio::test]
async fn a_gap_beyond_history_or_another_epoch_is_not_recovered() {
    let herald = Herald::start(HISTORY).await;
    let mut client = herald.connect("/ws").await;
    let reply = client.request(json!({"type": "subscribe", "channels": ["small"], "seq": true})).await;
    assert_eq!(reply["type"], "subscribed");
    let epoch = reply["streams"]["small"]["epoch"].as_str().unwrap().to_string();
    herald.publish(json!({"channel": "small", "event": {"type": "e", "n": 0}})).await;
    let seen = next_event(&mut client).await;
    assert_eq!(seen["seq"], 1);
    drop(client);
    for n in 1..=20 {
        herald.publish(json!({"channel": "small", "event": {"type": "e", "n": n}})).await;
    }
    let mut back = herald.connect("/ws").await;
    let reply = back
        .request(json!({"type": "subscribe", "channels": ["small"], "recover": {"small": {"seq": 1, "epoch": epoch}}}))
        .await;
    assert_eq!(reply["streams"]["small"], json!({"seq": 21, "epoch": epoch, "recovered": false}));
    let reply = back
        .request(
            json!({"type": "subscribe", "channels": ["small"], "recover": {"small": {"seq": 21, "epoch": "stale"}}}),
        )
        .await;
    assert_eq!(reply["streams"]["small"]["recovered"], false);
    // Up to date: recovered, nothing replayed; the next live event follows.
    let reply = back
        .request(json!({"type": "subscribe", "channels": ["small"], "recover": {"small": {"seq": 21, "epoch": epoch}}}))
        .await;
    assert_eq!(reply["streams"]["small"]["recovered"], true);
    herald.publish(json!({"channel": "small", "event": {"type": "e", "n": 21}})).await;
    assert_eq!(next_event(&mut back).await["seq"], 22);

    // The history request and the REST API return the ten kept, oldest first.
    let history = back.request(json!({"type": "history", "channel": "small", "limit": 5})).await;
    assert_eq!(history["type"], "history");
    assert_eq!(seqs(history["events"].as_array().unwrap()), vec![18, 19, 20, 21, 22]);
    let (status, rest) = herald.get("/api/history/channel/small").await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(seqs(rest["events"].as_array().unwrap()), (13..=22).collect::<Vec<_>>());
    let (status, rest) = herald.get(&format!("/api/history/channel/small?since=20&epoch={epoch}")).await;
    assert_eq!(status, 200);
    assert_eq!((rest["recovered"].clone(), seqs(rest["events"].as_array().unwrap())), (json!(true), vec![21, 22]));
    let (status, _) = herald.get("/api/history/channel/no-history-here").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn rooms_resume_too_and_history_reads_are_guarded() {
    let herald = Herald::start(&format!(
        "{HISTORY}\n[access]\ndefault = \"allow\"\n[[access.rules]]\npattern = \"order_secret\"\ndeny = true\n"
    ))
    .await;
    let mut member = herald.connect("/ws").await;
    let joined = member.request(json!({"type": "join_room", "room": "order_7", "seq": true})).await;
    assert_eq!(joined["type"], "room_joined");
    let epoch = joined["stream"]["epoch"].as_str().unwrap().to_string();
    drop(member);
    for n in 0..5 {
        herald.publish(json!({"room": "order_7", "event": {"type": "r", "n": n}})).await;
    }
    let mut back = herald.connect("/ws").await;
    let joined =
        back.request(json!({"type": "join_room", "room": "order_7", "recover": {"seq": 0, "epoch": epoch}})).await;
    assert_eq!(joined["stream"]["recovered"], true, "{joined}");
    let got = events(&mut back, 5).await;
    assert_eq!(seqs(&got), vec![1, 2, 3, 4, 5]);
    assert_eq!(got.iter().map(|e| e["n"].as_u64().unwrap()).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);

    let refused = back.request(json!({"type": "history", "room": "order_secret"})).await;
    assert_eq!(refused["code"], "PERMISSION_DENIED");
}

#[tokio::test]
async fn concurrent_publishers_keep_one_order_per_stream() {
    let herald = std::sync::Arc::new(Herald::start(HISTORY).await);
    let mut client = herald.connect("/ws?channels=feed-order&seq=1").await;
    let mut tasks = Vec::new();
    for publisher in 0..4 {
        let herald = herald.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..50 {
                herald.publish(json!({"channel": "feed-order", "event": {"type": "c", "p": publisher, "n": n}})).await;
            }
        }));
    }
    let got = events(&mut client, 200).await;
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(seqs(&got), (1..=200).collect::<Vec<_>>(), "every event once, in seq order");
    for publisher in 0..4 {
        let ns: Vec<u64> = got.iter().filter(|e| e["p"] == publisher).map(|e| e["n"].as_u64().unwrap()).collect();
        assert_eq!(ns, (0..50).collect::<Vec<_>>(), "publisher {publisher}'s events in publish order");
    }
    // The stream's history holds the same order as the live deliveries.
    let (_, rest) = herald.get("/api/history/channel/feed-order").await;
    let stored: Vec<(Value, Value)> =
        rest["events"].as_array().unwrap().iter().map(|e| (e["p"].clone(), e["n"].clone())).collect();
    let live: Vec<(Value, Value)> = got.iter().map(|e| (e["p"].clone(), e["n"].clone())).collect();
    assert_eq!(stored, live);
}

fn cluster_config(redis: &str) -> String {
    format!("[redis]\nurl = \"{redis}\"\nprefixes = [\"app\"]\n{HISTORY}")
}

#[tokio::test]
async fn a_client_resumes_on_another_node_with_all_100_missed_events() {
    let redis = RedisServer::start().await;
    let a = Herald::start(&cluster_config(&redis.url())).await;
    let b = Herald::start(&cluster_config(&redis.url())).await;
    crate::redis::wait_live_nodes(&a, 2).await;
    crate::redis::wait_live_nodes(&b, 2).await;

    // A watcher on A stays connected throughout and sees the stream live.
    let mut watcher = a.connect("/ws?channels=feed&seq=1").await;
    let mut client = a.connect("/ws").await;
    let reply = client.request(json!({"type": "subscribe", "channels": ["feed"], "seq": true})).await;
    assert_eq!(reply["streams"]["feed"]["seq"], 0);
    b.publish(json!({"channel": "feed", "event": {"type": "f", "n": -1}})).await;
    let last = next_event(&mut client).await;
    let position = json!({"seq": last["seq"], "epoch": last["epoch"]});
    assert_eq!(last["seq"], 1);
    assert_eq!(next_event(&mut watcher).await["seq"], 1);
    drop(client);

    // 100 events while it is away: 50 raw PUBLISHes into Redis (as a backend does; the stream's
    // owner node sequences each once), then 50 through node B's API.
    for n in 0..50 {
        assert_eq!(redis.publish("app:feed", &json!({"type": "f", "n": n}).to_string()), 2);
    }
    let first_half = events(&mut watcher, 50).await;
    assert_eq!(seqs(&first_half), (2..=51).collect::<Vec<_>>());
    for n in 50..100 {
        b.publish(json!({"channel": "feed", "event": {"type": "f", "n": n}})).await;
    }
    let second_half = events(&mut watcher, 50).await;
    assert_eq!(seqs(&second_half), (52..=101).collect::<Vec<_>>());

    // It comes back on node B with its position: all 100, in order, none twice, then live.
    let mut back = b.connect("/ws").await;
    let reply = back.request(json!({"type": "subscribe", "channels": ["feed"], "recover": {"feed": position}})).await;
    assert_eq!(reply["streams"]["feed"]["recovered"], true, "{reply}");
    assert_eq!(reply["streams"]["feed"]["seq"], 101);
    let missed = events(&mut back, 100).await;
    assert_eq!(seqs(&missed), (2..=101).collect::<Vec<_>>());
    assert_eq!(missed.iter().map(|e| e["n"].as_i64().unwrap()).collect::<Vec<_>>(), (0..100).collect::<Vec<_>>());
    a.publish(json!({"channel": "feed", "event": {"type": "f", "n": 100}})).await;
    let live = next_event(&mut back).await;
    assert_eq!((live["seq"].clone(), live["n"].clone()), (json!(102), json!(100)));
    assert_eq!(next_event(&mut watcher).await["seq"], 102);

    // History lost (the keys vanished): a new epoch, and an old position is not recovered.
    redis.cli(&["FLUSHALL"]);
    b.publish(json!({"channel": "feed", "event": {"type": "f", "n": 101}})).await;
    let fresh = next_event(&mut back).await;
    assert_eq!(fresh["seq"], 1);
    assert_ne!(fresh["epoch"], live["epoch"]);
    let mut late = a.connect("/ws").await;
    let reply = late
        .request(json!({"type": "subscribe", "channels": ["feed"], "recover": {"feed": {"seq": 102, "epoch": live["epoch"]}}}))
        .await;
    assert_eq!(reply["streams"]["feed"]["recovered"], false);
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next MessagePack message that is not a heartbeat, as JSON.
async fn next_msgpack(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(data))) => {
                let value: Value = rmp_serde::from_slice(&data).expect("MessagePack");
                if value["type"] != "heartbeat" {
                    return value;
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a binary MessagePack message, got {other:?}"),
        }
    }
}

/// Reads every message a Python `websockets` client (which offers permessage-deflate) receives.
async fn python_deflate_client(
    herald: &Herald,
    query: &str,
    count: usize,
) -> (tokio::process::Child, tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) {
    let python = std::env::var("HERALD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import asyncio, sys, websockets
async def main():
    async with websockets.connect(sys.argv[1], compression="deflate", max_size=None) as ws:
        response = getattr(ws, "response", None)
        headers = response.headers if response is not None else ws.response_headers
        print("EXT", headers.get("Sec-WebSocket-Extensions"), flush=True)
        for _ in range(int(sys.argv[2]) + 1):
            print(await ws.recv(), flush=True)
asyncio.run(main())
"#;
    let mut child = tokio::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(herald.ws_url(&format!("/ws?{query}")))
        .arg(count.to_string())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 with websockets (scripts/test installs it)");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

#[tokio::test]
async fn compressed_and_msgpack_sessions_receive_what_a_json_session_does() {
    let herald = Herald::start(HISTORY).await;
    let mut json_client = herald.connect("/ws?channels=feed-enc").await;

    let mut request = herald.ws_url("/ws?channels=feed-enc&seq=1").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "herald.msgpack".parse().unwrap());
    let (mut msgpack, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "herald.msgpack");
    assert_eq!(next_msgpack(&mut msgpack).await["type"], "connection");

    let (_child, mut lines) = python_deflate_client(&herald, "channels=feed-enc", 20).await;
    let ext = tokio::time::timeout(WAIT, lines.next_line()).await.unwrap().unwrap().unwrap();
    assert!(ext.starts_with("EXT permessage-deflate"), "{ext}");
    let welcome: Value =
        serde_json::from_str(&tokio::time::timeout(WAIT, lines.next_line()).await.unwrap().unwrap().unwrap()).unwrap();
    assert_eq!(welcome["type"], "connection");

    let mut sent = Vec::new();
    for n in 0..20 {
        // Half above the compression threshold, half below.
        let event = json!({"type": "enc", "n": n, "pad": "x".repeat(if n % 2 == 0 { 10 } else { 2000 })});
        herald.publish(json!({"channel": "feed-enc", "event": event.clone()})).await;
        sent.push(event);
    }
    let from_json = events(&mut json_client, 20).await;
    assert_eq!(from_json, sent);
    let mut from_deflate = Vec::new();
    for _ in 0..20 {
        let line = tokio::time::timeout(WAIT, lines.next_line()).await.unwrap().unwrap().unwrap();
        from_deflate.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    assert_eq!(from_deflate, sent, "the compressed session got the same events");
    for (n, expected) in sent.iter().enumerate() {
        let mut got = next_msgpack(&mut msgpack).await;
        assert_eq!(got["seq"], n as u64 + 1);
        let object = got.as_object_mut().unwrap();
        for field in ["seq", "epoch", "stream"] {
            object.remove(field);
        }
        assert_eq!(&got, expected, "the MessagePack session got the same event");
    }

    // MessagePack goes both ways: a MessagePack request gets a MessagePack reply.
    let ping = rmp_serde::to_vec_named(&json!({"type": "ping", "id": 7})).unwrap();
    futures_util::SinkExt::send(&mut msgpack, Message::binary(ping)).await.unwrap();
    let pong = next_msgpack(&mut msgpack).await;
    assert_eq!((pong["type"].clone(), pong["id"].clone()), (json!("pong"), json!(7)));
}
