//! The HTTP fallbacks (docs/fallback-transports.md): Server-Sent Events and NDJSON streaming on
//! the WebSocket endpoints' URLs, commands by POST, tickets, resume from `Last-Event-ID`, limits,
//! slow consumers, and a proxy that refuses WebSocket.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::common::nginx::{self, Nginx};
use crate::common::redis::free_port;
use crate::common::{Herald, Options, WAIT};

const SECRET: &str = "fallback-test-secret-0123456789";

/// A node with history on `news*` and a room with history, auth off.
const OPEN: &str = "[[history]]\nchannels = \"news*\"\n[[history]]\nrooms = \"hist_*\"\n";

fn hs256(sub: &str, extra: Value) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    let mut claims = json!({"sub": sub, "exp": exp});
    if let (Some(map), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        map.extend(extra);
    }
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

/// One message of a fallback stream: its SSE `id:` (if any) and its JSON.
#[derive(Debug)]
struct Received {
    id: Option<String>,
    data: Value,
}

/// A fallback client over reqwest: SSE or NDJSON, parsed as it arrives.
struct Stream {
    response: reqwest::Response,
    sse: bool,
    buf: Vec<u8>,
    /// The `id:` seen in the event being read.
    id: Option<String>,
    /// The last `id:` seen, as `EventSource` keeps it.
    last_id: Option<String>,
    /// Heartbeats seen (SSE comment lines, empty NDJSON lines).
    keepalives: usize,
    session: Value,
}

impl Stream {
    /// Opens `path` as SSE (`sse`) or NDJSON and reads the `session` message.
    async fn open(herald: &Herald, path: &str, sse: bool, headers: &[(&str, &str)]) -> Stream {
        let stream = Self::open_any(herald, path, sse, headers).await;
        assert_eq!(stream.status(), 200, "GET {path}");
        stream.read_session().await
    }

    async fn open_any(herald: &Herald, path: &str, sse: bool, headers: &[(&str, &str)]) -> Stream {
        Self::open_url(&herald.url(path), sse, headers).await
    }

    async fn open_url(url: &str, sse: bool, headers: &[(&str, &str)]) -> Stream {
        let accept = if sse { "text/event-stream" } else { "application/x-ndjson" };
        let mut request = reqwest::Client::new().get(url).header("accept", accept);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = tokio::time::timeout(WAIT, request.send()).await.expect("GET timed out").expect("GET");
        Stream { response, sse, buf: Vec::new(), id: None, last_id: None, keepalives: 0, session: Value::Null }
    }

    fn status(&self) -> u16 {
        self.response.status().as_u16()
    }

    async fn read_session(mut self) -> Stream {
        let session = self.next().await.expect("a session message").data;
        assert_eq!(session["type"], "session", "{session}");
        assert_eq!(session["transport"], if self.sse { "sse" } else { "stream" });
        self.session = session;
        self
    }

    /// The next message, or `None` when the response ends.
    async fn next(&mut self) -> Option<Received> {
        let mut data = String::new();
        loop {
            while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let line = String::from_utf8(line).expect("UTF-8");
                let line = line.trim_end_matches(['\n', '\r']);
                if !self.sse {
                    if line.is_empty() {
                        self.keepalives += 1;
                        continue;
                    }
                    return Some(Received { id: None, data: serde_json::from_str(line).expect("a JSON line") });
                }
                if line.is_empty() {
                    if data.is_empty() {
                        continue;
                    }
                    let id = self.id.take();
                    return Some(Received { id, data: serde_json::from_str(&data).expect("JSON data") });
                }
                if line.starts_with(':') {
                    self.keepalives += 1;
                    continue;
                }
                if let Some(id) = line.strip_prefix("id: ") {
                    self.id = Some(id.to_string());
                    self.last_id = Some(id.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(d);
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            match tokio::time::timeout(WAIT, self.response.chunk()).await.expect("nothing arrived in time") {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    async fn recv(&mut self) -> Value {
        self.next().await.expect("the stream ended").data
    }

    /// The next message of type `kind`, skipping heartbeats and others.
    async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let message = self.recv().await;
            if message["type"] == kind {
                return message;
            }
            assert_ne!(message["type"], "close", "closed while waiting for {kind}: {message}");
        }
    }

    /// The next event that is not Herald's own (heartbeat, replies).
    async fn recv_event(&mut self) -> Received {
        loop {
            let message = self.next().await.expect("the stream ended");
            let kind = message.data["type"].as_str().unwrap_or_default().to_string();
            if !["heartbeat", "connection", "connection_established", "resumed"].contains(&kind.as_str()) {
                return message;
            }
        }
    }

    /// POSTs `body` to this session; returns status and body.
    async fn post(&self, herald: &Herald, endpoint: &str, body: &str) -> (u16, Value) {
        self.post_with_key(herald, endpoint, body, self.session["key"].as_str().unwrap()).await
    }

    async fn post_with_key(&self, herald: &Herald, endpoint: &str, body: &str, key: &str) -> (u16, Value) {
        let id = self.session["id"].as_str().unwrap();
        post_raw(&herald.url(&format!("{endpoint}/sessions/{id}")), body, key).await
    }
}

async fn post_raw(url: &str, body: &str, key: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .header("x-herald-session-key", key)
        .body(body.to_string())
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn sse_subscribe_receive_and_commands_with_replies_on_the_stream() {
    let herald = Herald::start(OPEN).await;
    let mut sse = Stream::open(&herald, "/ws?channels=news", true, &[]).await;
    let welcome = sse.recv().await;
    assert_eq!(welcome["type"], "connection", "the endpoint's welcome follows the session message");
    assert_eq!(welcome["channels"], json!(["news"]));

    herald.publish(json!({"channel": "news", "event": {"type": "story", "n": 1}})).await;
    let event = sse.recv_event().await;
    assert_eq!(event.data["type"], "story");
    assert_eq!(event.data["seq"], 1, "fallback sessions follow streams with positions");
    assert!(event.id.as_deref().is_some_and(|id| id.starts_with("c%3Anews~")), "{event:?}");

    // Commands by POST; replies on the stream, correlated by id.
    let (status, _) = sse.post(&herald, "/ws", r#"{"type":"ping","id":"p1"}"#).await;
    assert_eq!(status, 202);
    assert_eq!(sse.recv_type("pong").await["id"], "p1");
    let batch = "{\"type\":\"subscribe\",\"channels\":[\"other\"],\"id\":\"s\"}\n{\"type\":\"join_room\",\"room\":\"hist_1\",\"id\":\"j\"}\n";
    assert_eq!(sse.post(&herald, "/ws", batch).await.0, 202);
    assert_eq!(sse.recv_type("subscribed").await["id"], "s");
    assert_eq!(sse.recv_type("room_joined").await["id"], "j");
    herald.publish(json!({"channel": "other", "event": {"type": "on_other"}})).await;
    assert_eq!(sse.recv_event().await.data["type"], "on_other");
    herald.publish(json!({"room": "hist_1", "event": {"type": "in_room", "n": 1}})).await;
    assert_eq!(sse.recv_event().await.data["type"], "in_room");
    // Presence and history over POST.
    assert_eq!(sse.post(&herald, "/ws", r#"{"type":"status_update","status":"away"}"#).await.0, 202);
    assert_eq!(sse.post(&herald, "/ws", r#"{"type":"history","room":"hist_1","id":"h"}"#).await.0, 202);
    let history = sse.recv_type("history").await;
    assert_eq!(history["id"], "h");
    assert_eq!(history["events"][0]["type"], "in_room", "{history}");
    // Operators see the transport.
    let (_, list) = herald.get("/api/connections").await;
    assert_eq!(list["connections"][0]["transport"], "sse", "{list}");
}

#[tokio::test]
async fn ndjson_subscribe_and_receive_with_the_query_parameter() {
    let herald = Herald::start(OPEN).await;
    // `?transport=stream` without the Accept header.
    let response =
        reqwest::Client::new().get(herald.url("/ws?transport=stream&channels=plain")).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut stream =
        Stream { response, sse: false, buf: Vec::new(), id: None, last_id: None, keepalives: 0, session: Value::Null }
            .read_session()
            .await;
    assert_eq!(stream.recv().await["type"], "connection");
    herald.publish(json!({"channel": "plain", "event": {"type": "line", "text": "a\nb"}})).await;
    let event = stream.recv_event().await.data;
    assert_eq!(event["text"], "a\nb", "an escaped newline stays inside its line");
    // A plain GET still gets 426, naming the fallbacks.
    let (status, body) = herald.get_text("/ws").await;
    assert_eq!(status, 426);
    assert!(body.contains("text/event-stream") && body.contains("application/x-ndjson"), "{body}");
}

#[tokio::test]
async fn malformed_posts_get_clear_errors_and_the_session_carries_on() {
    let herald = Herald::start("[websocket]\nmax_message_size = 200\n").await;
    let mut sse = Stream::open(&herald, "/ws", true, &[]).await;
    assert_eq!(sse.recv().await["type"], "connection");
    let (status, body) = sse.post(&herald, "/ws", "{\"type\":").await;
    assert_eq!((status, body["code"].as_str()), (400, Some("INVALID_JSON")), "{body}");
    let (status, body) = sse.post(&herald, "/ws", r#"{"no_type":1}"#).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["type"], "error");
    let (status, body) = sse.post(&herald, "/ws", &format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(300))).await;
    assert_eq!((status, body["code"].as_str()), (413, Some("MESSAGE_TOO_LARGE")), "{body}");
    let (status, body) = sse.post_with_key(&herald, "/ws", r#"{"type":"ping"}"#, "wrong").await;
    assert_eq!((status, body["code"].as_str()), (403, Some("PERMISSION_DENIED")), "{body}");
    let (status, _) = post_raw(&herald.url("/ws/sessions/nope"), r#"{"type":"ping"}"#, "k").await;
    assert_eq!(status, 404);
    // An unknown type is a protocol error on the stream, as on WebSocket.
    assert_eq!(sse.post(&herald, "/ws", r#"{"type":"no_such_thing","id":"u"}"#).await.0, 202);
    let error = sse.recv_type("error").await;
    assert_eq!((error["code"].as_str(), error["id"].as_str()), (Some("UNKNOWN_MESSAGE_TYPE"), Some("u")));
    // The session carries on.
    assert_eq!(sse.post(&herald, "/ws", r#"{"type":"ping","id":"after"}"#).await.0, 202);
    assert_eq!(sse.recv_type("pong").await["id"], "after");
}

#[tokio::test]
async fn rate_limited_posts_answer_429_and_the_error_arrives_on_the_stream() {
    let herald = Herald::start("[limits]\nmessages_per_minute = 2\nrate_exempt_types = []\n").await;
    let mut sse = Stream::open(&herald, "/ws", true, &[]).await;
    assert_eq!(sse.recv().await["type"], "connection");
    let mut statuses = Vec::new();
    for i in 0..3 {
        statuses.push(sse.post(&herald, "/ws", &format!(r#"{{"type":"ping","id":{i}}}"#)).await.0);
    }
    assert_eq!(statuses, vec![202, 202, 429]);
    let error = sse.recv_type("error").await;
    assert_eq!(error["code"], "RATE_LIMIT_EXCEEDED", "{error}");
}

async fn auth_node() -> Herald {
    let toml = format!(
        "[presence]\nenabled = true\n[auth]\nmode = \"required\"\njwt_secret = \"{SECRET}\"\nreject = \"close\"\n\
         [[access.rules]]\npattern = \"secret_*\"\nroles = [\"admin\"]\n\
         [[access.rules]]\npattern = \"*\"\npublic = true\n"
    );
    Herald::start(&toml).await
}

#[tokio::test]
async fn auth_by_header_and_by_one_time_ticket() {
    let herald = auth_node().await;
    let token = hs256("alice", json!({}));
    let bearer = format!("Bearer {token}");

    // A token in the Authorization header of the GET.
    let mut by_header = Stream::open(&herald, "/ws", false, &[("authorization", &bearer)]).await;
    assert_eq!(by_header.recv().await["user_id"], "alice");

    // A ticket for EventSource: asked for with the token, used once in the URL.
    let client = reqwest::Client::new();
    let answer: Value = client
        .post(herald.url("/ws/tickets"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["expires_in"], 30, "{answer}");
    let ticket = answer["ticket"].as_str().unwrap();
    let mut sse = Stream::open(&herald, &format!("/ws?ticket={ticket}"), true, &[]).await;
    let welcome = sse.recv().await;
    assert_eq!(welcome["user_id"], "alice", "{welcome}");

    // Used twice: refused in-band as this node refuses bad tokens (an error, then close 1008).
    let mut reused = Stream::open(&herald, &format!("/ws?ticket={ticket}"), true, &[]).await;
    let error = reused.recv().await;
    assert_eq!(error["code"], "AUTHENTICATION_FAILED", "{error}");
    assert!(error["error"].as_str().unwrap().contains("ticket"), "{error}");
    let close = reused.recv().await;
    assert_eq!((close["type"].as_str(), close["code"].as_u64()), (Some("close"), Some(1008)), "{close}");
    assert!(reused.next().await.is_none(), "the response ends after the close message");

    // A bad token gets no ticket; no token either.
    let bad = client.post(herald.url("/ws/tickets")).header("authorization", "Bearer x.y.z").send().await.unwrap();
    assert_eq!(bad.status(), 401);
    let none = client.post(herald.url("/ws/tickets")).send().await.unwrap();
    assert_eq!(none.status(), 401);
    // `?token=` works as it does for WebSocket (compatibility).
    let mut by_query = Stream::open(&herald, &format!("/ws?token={token}"), true, &[]).await;
    assert_eq!(by_query.recv().await["user_id"], "alice");
    // No credential at all on the GET.
    let mut anonymous = Stream::open(&herald, "/ws", true, &[]).await;
    assert_eq!(anonymous.recv().await["code"], "AUTHENTICATION_FAILED");
}

#[tokio::test]
async fn access_rules_apply_to_fallback_sessions() {
    let herald = auth_node().await;
    let bearer = format!("Bearer {}", hs256("bob", json!({})));
    let mut sse = Stream::open(&herald, "/ws?channels=secret_plans,public", true, &[("authorization", &bearer)]).await;
    let welcome = sse.recv().await;
    assert_eq!(welcome["channels"], json!(["public"]), "{welcome}");
    assert_eq!(sse.recv().await["code"], "PERMISSION_DENIED");
    assert_eq!(sse.post(&herald, "/ws", r#"{"type":"subscribe","channels":["secret_x"],"id":"s"}"#).await.0, 202);
    let refused = sse.recv_type("error").await;
    assert_eq!((refused["code"].as_str(), refused["id"].as_str()), (Some("PERMISSION_DENIED"), Some("s")));
    herald.publish(json!({"channel": "secret_x", "event": {"type": "leak"}})).await;
    herald.publish(json!({"channel": "public", "event": {"type": "marker"}})).await;
    assert_eq!(sse.recv_event().await.data["type"], "marker", "nothing from the refused channel");
}

#[tokio::test]
async fn the_per_address_cap_counts_fallback_sessions() {
    let herald = Herald::start("[limits]\nmax_connections_per_ip = 2\n").await;
    let _ws = herald.connect("/ws").await;
    let sse = Stream::open(&herald, "/ws", true, &[]).await;
    let third = Stream::open_any(&herald, "/ws", true, &[]).await;
    assert_eq!(third.status(), 429, "a WebSocket and an SSE session fill a cap of two");
    let ws = tokio_tungstenite::connect_async(herald.ws_url("/ws")).await;
    assert!(ws.is_err(), "the WebSocket upgrade is refused as well");
    // Closing the SSE session frees its place.
    drop(sse);
    herald.wait_for_total("connections", |n| n == 1).await;
    let again = Stream::open_any(&herald, "/ws", false, &[]).await;
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn resume_from_last_event_id_without_loss_or_duplicates() {
    let herald = Herald::start(OPEN).await;
    let mut first = Stream::open(&herald, "/ws?channels=news", true, &[]).await;
    let _ = first.recv().await;
    // A second stream followed by command, so the position vector holds two streams.
    assert_eq!(first.post(&herald, "/ws", r#"{"type":"subscribe","channels":["news2"],"id":"s"}"#).await.0, 202);
    first.recv_type("subscribed").await;
    for n in 1..=3 {
        herald.publish(json!({"channel": "news", "event": {"type": "e", "n": n}})).await;
    }
    herald.publish(json!({"channel": "news2", "event": {"type": "e2", "n": 1}})).await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let event = first.recv_event().await;
        seen.push((event.data["stream"].as_str().unwrap().to_string(), event.data["n"].as_u64().unwrap()));
    }
    let last = first.last_id.clone().expect("events with positions carry an id");
    assert!(last.contains("c%3Anews~") && last.contains("c%3Anews2~"), "{last}");
    drop(first);
    herald.wait_for_total("connections", |n| n == 0).await;
    // Missed while away.
    for n in 4..=5 {
        herald.publish(json!({"channel": "news", "event": {"type": "e", "n": n}})).await;
    }
    herald.publish(json!({"channel": "news2", "event": {"type": "e2", "n": 2}})).await;

    // What EventSource does: the same URL, with Last-Event-ID.
    let mut again = Stream::open(&herald, "/ws?channels=news", true, &[("last-event-id", &last)]).await;
    let welcome = again.recv().await;
    assert_eq!(welcome["channels"], json!(["news", "news2"]), "the resumed streams are followed again");
    let resumed = again.recv().await;
    assert_eq!(resumed["type"], "resumed");
    assert_eq!(resumed["streams"]["c:news"]["recovered"], true, "{resumed}");
    herald.publish(json!({"channel": "news", "event": {"type": "e", "n": 6}})).await;
    let mut got = Vec::new();
    while got.len() < 4 {
        let event = again.recv_event().await;
        got.push((event.data["stream"].as_str().unwrap().to_string(), event.data["n"].as_u64().unwrap()));
    }
    got.sort();
    let expected: Vec<(String, u64)> =
        vec![("c:news".into(), 4), ("c:news".into(), 5), ("c:news".into(), 6), ("c:news2".into(), 2)];
    assert_eq!(got, expected, "exactly what was missed, then live; nothing twice");

    // By hand (NDJSON): the same position as ?last_event_id=.
    let encoded: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
    let mut by_hand = Stream::open(&herald, &format!("/ws?last_event_id={encoded}"), false, &[]).await;
    let _ = by_hand.recv().await;
    assert_eq!(by_hand.recv().await["type"], "resumed");
    let first_replayed = by_hand.recv_event().await.data;
    assert!(first_replayed["n"] == 4 || first_replayed["n"] == 2, "{first_replayed}");
    // A malformed position is refused.
    let bad = Stream::open_any(&herald, "/ws", true, &[("last-event-id", "nonsense")]).await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn a_slow_sse_consumer_is_closed_without_affecting_others() {
    let herald =
        Herald::start("[websocket]\noutbound_queue = 64\noutbound_queue_bytes = 262144\nmax_message_size = 65536\n")
            .await;
    // A client that asks for the stream and never reads it.
    let mut stalled = tokio::net::TcpStream::connect(herald.addr).await.unwrap();
    stalled
        .write_all(b"GET /ws?channels=flood HTTP/1.1\r\nHost: h\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut reader = Stream::open(&herald, "/ws?channels=flood", false, &[]).await;
    let _ = reader.recv().await;
    herald.wait_for_total("connections", |n| n == 2).await;
    let pad = "x".repeat(8 * 1024);
    let mut sent = 0u64;
    // Bounded: kernel and proxy buffers take some megabytes before the queue fills.
    for _ in 0..1000 {
        // Two at a time, far below the queue's bound, so the reader is never the slow one.
        for _ in 0..2 {
            sent += 1;
            herald.publish(json!({"channel": "flood", "event": {"type": "big", "n": sent, "pad": pad}})).await;
        }
        // The reader keeps up.
        while let Some(event) = reader.next().await {
            if event.data["n"] == sent {
                break;
            }
        }
        let (_, stats) = herald.get("/api/stats").await;
        if stats["totals"]["slow_consumer_disconnects"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
    }
    herald.wait_for_total("slow_consumer_disconnects", |n| n == 1).await;
    herald.wait_for_total("connections", |n| n == 1).await;
    // The reader got everything, in order, and carries on.
    herald.publish(json!({"channel": "flood", "event": {"type": "after"}})).await;
    assert_eq!(reader.recv_event().await.data["type"], "after");
    // Metrics say which transport.
    let (_, metrics) = herald.get("/metrics").await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    for line in [
        "herald_transport_slow_consumer_disconnects_total{transport=\"sse\"} 1",
        "herald_transport_slow_consumer_disconnects_total{transport=\"stream\"} 0",
        "herald_transport_connections{transport=\"stream\"} 1",
        "herald_transport_connections{transport=\"sse\"} 0",
        "herald_transport_connections_total{transport=\"sse\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    // The stalled client's connection is cut, not left to TCP: reading what it never read
    // ends in end-of-stream (or a reset).
    let ended = tokio::time::timeout(WAIT, async {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match tokio::io::AsyncReadExt::read(&mut stalled, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the slow consumer's connection stayed open");
}

/// `tests/fallback/nginx-no-websocket.conf` in front of `upstream`.
fn nginx_refusing_websocket(listen: u16, upstream: u16) -> Nginx {
    let path = format!("{}/tests/fallback/nginx-no-websocket.conf", env!("CARGO_MANIFEST_DIR"));
    let conf = std::fs::read_to_string(path)
        .unwrap()
        .replace("@LISTEN@", &listen.to_string())
        .replace("@UPSTREAM@", &upstream.to_string());
    nginx::start(conf)
}

#[tokio::test]
async fn through_nginx_refusing_websocket() {
    let herald = Herald::start_with(Options::toml(OPEN)).await;
    let listen = free_port();
    let _nginx = nginx_refusing_websocket(listen, herald.addr.port());
    let base = format!("http://127.0.0.1:{listen}");
    // Wait for nginx to listen.
    let up = tokio::time::timeout(WAIT, async {
        loop {
            if reqwest::get(format!("{base}/health")).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(up.is_ok(), "nginx never answered");

    let refused = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{listen}/ws")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("the proxy must refuse the upgrade, got {other:?}"),
    }

    let mut sse = Stream::open_url(&format!("{base}/ws?channels=news"), true, &[]).await.read_session().await;
    assert_eq!(sse.recv().await["type"], "connection");
    herald.publish(json!({"channel": "news", "event": {"type": "through", "n": 1}})).await;
    assert_eq!(sse.recv_event().await.data["type"], "through", "events pass the proxy unbuffered");
    let id = sse.session["id"].as_str().unwrap().to_string();
    let key = sse.session["key"].as_str().unwrap().to_string();
    let (status, _) = post_raw(&format!("{base}/ws/sessions/{id}"), r#"{"type":"ping","id":"via"}"#, &key).await;
    assert_eq!(status, 202);
    assert_eq!(sse.recv_type("pong").await["id"], "via");
}

#[tokio::test]
async fn chat_with_presence_over_post_on_an_authenticated_node() {
    let herald = auth_node().await;
    let (alice, bob) = (format!("Bearer {}", hs256("alice", json!({}))), format!("Bearer {}", hs256("bob", json!({}))));
    let mut a = Stream::open(&herald, "/ws", true, &[("authorization", &alice)]).await;
    let mut b = Stream::open(&herald, "/ws", false, &[("authorization", &bob)]).await;
    let _ = (a.recv().await, b.recv().await);
    for (stream, who) in [(&mut a, "a"), (&mut b, "b")] {
        let join = format!(r#"{{"type":"join_room","room":"lobby","id":"{who}"}}"#);
        assert_eq!(stream.post(&herald, "/ws", &join).await.0, 202);
        assert_eq!(stream.recv_type("room_joined").await["id"], who);
    }
    // Bob's arrival is presence news for Alice.
    let joined = a.recv_type("user_joined").await;
    assert_eq!(joined["user_id"], "bob", "{joined}");
    let chat = r#"{"type":"chat_message","room":"lobby","content":"hello","id":"c1"}"#;
    assert_eq!(a.post(&herald, "/ws", chat).await.0, 202);
    assert_eq!(a.recv_type("chat_message_ack").await["id"], "c1");
    let message = b.recv_type("chat_message").await;
    assert_eq!((message["content"].as_str(), message["user_id"].as_str()), (Some("hello"), Some("alice")));
}

#[tokio::test]
async fn templates_mounts_and_user_targets_reach_fallback_sessions() {
    let herald = Herald::start(
        "[server]\nmounts = [\"/ws\", \"/api/v1/ws\"]\n[[endpoints]]\npath = \"/campaigns\"\n\
         rooms = [\"campaign:{campaign_id}\"]\nwelcome = \"connection_established\"\n",
    )
    .await;
    let mut sse = Stream::open(&herald, "/api/v1/ws/campaigns?campaign_id=7&user_id=u7", true, &[]).await;
    let welcome = sse.recv().await;
    assert_eq!(welcome["type"], "connection_established", "{welcome}");
    assert_eq!(welcome["rooms"], json!(["campaign:7"]));
    herald.publish(json!({"room": "campaign:7", "event": {"type": "campaign:launched"}})).await;
    assert_eq!(sse.recv_event().await.data["type"], "campaign:launched");
    herald.publish(json!({"user_id": "u7", "event": {"type": "for_you"}})).await;
    assert_eq!(sse.recv_event().await.data["type"], "for_you");
    // Commands go to the endpoint the session was opened on, not another.
    let id = sse.session["id"].as_str().unwrap();
    let key = sse.session["key"].as_str().unwrap();
    let (status, _) = post_raw(&herald.url(&format!("/ws/campaigns/sessions/{id}")), r#"{"type":"ping"}"#, key).await;
    assert_eq!(status, 404);
    assert_eq!(sse.post(&herald, "/api/v1/ws/campaigns", r#"{"type":"ping","id":1}"#).await.0, 202);
    assert_eq!(sse.recv_type("pong").await["id"], 1);
}

#[tokio::test]
async fn origins_are_checked_and_shutdown_says_goodbye() {
    let mut herald = Herald::start("[server]\nallowed_origins = [\"https://app.example.com\"]\n").await;
    let foreign = Stream::open_any(&herald, "/ws", true, &[("origin", "https://evil.example")]).await;
    assert_eq!(foreign.status(), 403);
    let mut sse = Stream::open(&herald, "/ws", true, &[("origin", "https://app.example.com")]).await;
    assert_eq!(
        sse.response.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap()),
        Some("https://app.example.com")
    );
    let _ = sse.recv().await;
    herald.signal("TERM");
    let close = sse.recv_type("close").await;
    assert_eq!(close["code"], 1001, "{close}");
    assert!(sse.next().await.is_none(), "the response ends after the close message");
    assert_eq!(herald.wait_exit().await, Some(0));
}

#[tokio::test]
async fn heartbeats_and_the_node_cap() {
    let herald = Herald::start("[websocket]\nheartbeat_interval = \"1s\"\n[limits]\nmax_connections = 2\n").await;
    let mut sse = Stream::open(&herald, "/ws", true, &[]).await;
    let mut ndjson = Stream::open(&herald, "/ws", false, &[]).await;
    // The JSON heartbeat comes with a keepalive line before or after it; wait for both kinds.
    for stream in [&mut sse, &mut ndjson] {
        stream.recv_type("heartbeat").await;
        while stream.keepalives == 0 {
            stream.recv_type("heartbeat").await;
        }
    }
    // Two sessions fill a node cap of two, whichever the transport.
    let third = Stream::open_any(&herald, "/ws", true, &[]).await;
    assert_eq!(third.status(), 503);
    assert!(tokio_tungstenite::connect_async(herald.ws_url("/ws")).await.is_err());
}

#[tokio::test]
async fn commands_posted_to_another_node_reach_the_session() {
    let redis = crate::common::redis::RedisServer::start().await;
    let config = format!("[redis]\nurl = \"{}\"\n", redis.url());
    let (a, b) = (Herald::start(&config).await, Herald::start(&config).await);
    for node in [&a, &b] {
        crate::redis::wait_redis_connected(node, true).await;
    }
    let mut sse = Stream::open(&a, "/ws?channels=news", true, &[]).await;
    let _ = sse.recv().await;
    // A load balancer sent the POST to the other node.
    let id = sse.session["id"].as_str().unwrap().to_string();
    let key = sse.session["key"].as_str().unwrap().to_string();
    let key = key.as_str();
    let (status, body) = post_raw(&b.url(&format!("/ws/sessions/{id}")), r#"{"type":"ping","id":"far"}"#, key).await;
    assert_eq!((status, body["forwarded"].as_bool()), (202, Some(true)), "{body}");
    assert_eq!(sse.recv_type("pong").await["id"], "far");
    // Malformed is still refused where it lands; an id naming no live node is unknown.
    let (status, _) = post_raw(&b.url(&format!("/ws/sessions/{id}")), "{", key).await;
    assert_eq!(status, 400);
    let (status, _) = post_raw(&b.url("/ws/sessions/n-gone.0123"), r#"{"type":"ping"}"#, key).await;
    assert_eq!(status, 404);
    // Events published on either node reach the session.
    b.publish(json!({"channel": "news", "event": {"type": "from_b"}})).await;
    assert_eq!(sse.recv_event().await.data["type"], "from_b");
}
