//! The Pusher Channels face's error paths over real sockets and HTTP: unknown keys and protocol
//! versions are refused with the protocol's close codes, signed API requests with a wrong
//! signature, key, body digest or a stale timestamp get 401, client events are refused on public
//! channels, and malformed frames get a `pusher:error` while the connection carries on. The happy
//! paths run with the real pusher-js and server SDKs in `tests/pusher/`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use herald::pusher::sign::hmac_hex;

use crate::common::raw::RawClient;
use crate::common::{Client, Herald, until};

pub(crate) const KEY: &str = "e2e-key";
pub(crate) const SECRET: &str = "e2e-secret-0123";

fn config(client_messages: bool) -> String {
    format!(
        r#"
[[pusher.apps]]
id = "77"
key = "{KEY}"
secret = "{SECRET}"
enable_client_messages = {client_messages}
"#
    )
}

/// Connects to `/app/{KEY}` and returns the client and its socket id.
async fn connect(herald: &Herald) -> (Client, String) {
    let mut client = herald.connect_raw(&format!("/app/{KEY}?protocol=7&client=e2e&version=1")).await;
    let established = client.recv().await;
    assert_eq!(established["event"], "pusher:connection_established", "{established}");
    let data: Value = serde_json::from_str(established["data"].as_str().expect("data is a string")).unwrap();
    assert!(data["activity_timeout"].as_u64().is_some_and(|t| t > 0), "{data}");
    (client, data["socket_id"].as_str().unwrap().to_string())
}

async fn subscribe(client: &mut Client, channel: &str) {
    client.send_json(json!({"event": "pusher:subscribe", "data": {"channel": channel}})).await;
    let reply = client.recv().await;
    assert_eq!(reply, json!({"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": "{}"}));
}

/// Sends `message` and returns the `pusher:error` it draws.
async fn error_for(client: &mut Client, message: &str) -> Value {
    client.send_text(message).await;
    let reply = client.recv().await;
    assert_eq!(reply["event"], "pusher:error", "{message} drew {reply}");
    reply["data"].clone()
}

/// Proves the connection still works: `pusher:ping` → `pusher:pong`.
async fn assert_alive(client: &mut Client) {
    client.send_json(json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(client.recv().await["event"], "pusher:pong");
}

pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A signed query string for `method path` with `body`, signed with `secret` at `timestamp`.
pub(crate) fn signed(
    method: &str,
    path: &str,
    body: &str,
    secret: &str,
    timestamp: u64,
    extra: &[(&str, &str)],
) -> String {
    let mut params: Vec<(String, String)> = vec![
        ("auth_key".into(), KEY.into()),
        ("auth_timestamp".into(), timestamp.to_string()),
        ("auth_version".into(), "1.0".into()),
    ];
    if !body.is_empty() {
        params.push(("body_md5".into(), hex::encode(<md5::Md5 as md5::Digest>::digest(body.as_bytes()))));
    }
    params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    params.sort();
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let query = query.join("&");
    let signature = hmac_hex(secret, format!("{method}\n{path}\n{query}").as_bytes());
    format!("{path}?{query}&auth_signature={signature}")
}

async fn post_raw(herald: &Herald, path_and_query: &str, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(herald.url(path_and_query))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn unknown_keys_and_protocol_versions_get_the_protocols_close_codes() {
    let herald = Herald::start(&config(false)).await;
    for (path, code) in [
        ("/app/no-such-key?protocol=7", 4001),
        (&*format!("/app/{KEY}"), 4008),
        (&*format!("/app/{KEY}?protocol=seven"), 4006),
        (&*format!("/app/{KEY}?protocol=3"), 4007),
    ] {
        let mut client = herald.connect_raw(path).await;
        let error = client.recv().await;
        assert_eq!(error["event"], "pusher:error", "{path}: {error}");
        assert_eq!(error["data"]["code"], code, "{path}: {error}");
        assert_eq!(client.expect_close().await.0, code, "{path}");
    }
    // The node carries on.
    let (mut client, _) = connect(&herald).await;
    assert_alive(&mut client).await;
}

#[tokio::test]
async fn signed_api_requests_are_checked_and_refusals_are_401() {
    let herald = Herald::start(&config(false)).await;
    let (mut client, _) = connect(&herald).await;
    subscribe(&mut client, "news").await;
    let path = "/apps/77/events";
    let body = r#"{"name":"story","channel":"news","data":"{\"n\":1}"}"#;

    let wrong_secret = signed("POST", path, body, "not-the-secret", now(), &[]);
    let stale = signed("POST", path, body, SECRET, now() - 3600, &[]);
    let tampered_body = r#"{"name":"story","channel":"news","data":"{\"n\":2}"}"#;
    let good_for_other_body = signed("POST", path, body, SECRET, now(), &[]);
    for (what, query, body) in [
        ("wrong secret", wrong_secret.as_str(), body),
        ("stale timestamp", stale.as_str(), body),
        ("body changed after signing", good_for_other_body.as_str(), tampered_body),
        ("no signature at all", path, body),
    ] {
        let (status, reply) = post_raw(&herald, query, body).await;
        assert_eq!(status, 401, "{what}: {reply}");
        assert!(reply["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: {reply}");
    }
    let (status, reply) = post_raw(&herald, &signed("POST", "/apps/78/events", body, SECRET, now(), &[]), body).await;
    assert_eq!(status, 404, "unknown app: {reply}");

    // None of the refused requests published anything: the first event the client sees is the
    // one signed correctly.
    let (status, reply) = post_raw(&herald, &good_for_other_body, body).await;
    assert_eq!((status, reply), (200, json!({})));
    let event = client.recv().await;
    assert_eq!(event, json!({"event": "story", "channel": "news", "data": "{\"n\":1}"}));

    let query = signed("GET", "/apps/77/channels", "", SECRET, now(), &[("info", "subscription_count")]);
    let (status, reply) = herald.get(&query).await;
    assert_eq!((status, reply), (200, json!({"channels": {"news": {"subscription_count": 1}}})));
    let forged = query.replace("subscription_count&", "user_count&");
    assert_eq!(herald.get(&forged).await.0, 401, "a parameter changed after signing");
}

#[tokio::test]
async fn client_events_are_refused_on_public_channels_and_when_disabled() {
    let herald = Herald::start(&config(true)).await;
    let (mut sender, _) = connect(&herald).await;
    let (mut listener, _) = connect(&herald).await;
    for client in [&mut sender, &mut listener] {
        subscribe(client, "lobby").await;
    }
    let error = error_for(&mut sender, r#"{"event":"client-shout","channel":"lobby","data":{"loud":true}}"#).await;
    assert!(error["message"].as_str().unwrap().contains("only on private and presence channels"), "{error}");
    let error =
        error_for(&mut sender, r#"{"event":"client-shout","channel":"private-not-subscribed","data":{}}"#).await;
    assert!(error["message"].as_str().unwrap().contains("subscribe to"), "{error}");

    // Nothing reached the listener: the next thing it sees is an event published after.
    let body = r#"{"name":"after","channel":"lobby","data":"1"}"#;
    let (status, _) = post_raw(&herald, &signed("POST", "/apps/77/events", body, SECRET, now(), &[]), body).await;
    assert_eq!(status, 200);
    assert_eq!(listener.recv().await["event"], "after");
    assert_eq!(sender.recv().await["event"], "after");

    let disabled = Herald::start(&config(false)).await;
    let (mut client, socket_id) = connect(&disabled).await;
    let channel = "private-room";
    let auth = format!("{KEY}:{}", hmac_hex(SECRET, format!("{socket_id}:{channel}").as_bytes()));
    client.send_json(json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth}})).await;
    assert_eq!(client.recv().await["event"], "pusher_internal:subscription_succeeded");
    let error = error_for(&mut client, r#"{"event":"client-x","channel":"private-room","data":{}}"#).await;
    assert!(error["message"].as_str().unwrap().contains("not enabled"), "{error}");
    assert_alive(&mut client).await;
}

#[tokio::test]
async fn malformed_frames_get_pusher_errors_and_the_connection_carries_on() {
    let herald = Herald::start(&config(true)).await;
    let (mut client, socket_id) = connect(&herald).await;
    for message in [
        "not json",
        "[1,2]",
        r#"{"data":{}}"#,
        r#"{"event":""}"#,
        r#"{"event":"pusher:subscribe","channel":7}"#,
        r#"{"event":"pusher:subscribe"}"#,
        r#"{"event":"pusher:subscribe","data":{"channel":"has space"}}"#,
        r#"{"event":"pusher:subscribe","data":"not an object"}"#,
        r#"{"event":"pusher:unsubscribe","data":{}}"#,
        r#"{"event":"pusher:signin","data":{"auth":"x","user_data":"{\"id\":\"u\"}"}}"#,
        r#"{"event":"no-such-event","data":{}}"#,
    ] {
        let error = error_for(&mut client, message).await;
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{message}: {error}");
        assert_alive(&mut client).await;
    }
    // A forged private or presence authorization is a subscription error for that channel.
    for (channel, data) in [
        ("private-x", json!({"channel": "private-x", "auth": format!("{KEY}:{}", "0".repeat(64))})),
        (
            "presence-x",
            json!({"channel": "presence-x", "auth": format!("{KEY}:{}", "0".repeat(64)), "channel_data": "{\"user_id\":\"u\"}"}),
        ),
        ("private-y", json!({"channel": "private-y"})),
    ] {
        client.send_json(json!({"event": "pusher:subscribe", "data": data})).await;
        let reply = client.recv().await;
        assert_eq!(reply["event"], "pusher:subscription_error", "{reply}");
        assert_eq!(reply["channel"], channel);
        assert_eq!(reply["data"]["status"], 401);
    }
    // A signature for another socket does not open the channel either.
    let other = format!("{KEY}:{}", hmac_hex(SECRET, b"1.1:private-x"));
    client.send_json(json!({"event": "pusher:subscribe", "data": {"channel": "private-x", "auth": other}})).await;
    assert_eq!(client.recv().await["event"], "pusher:subscription_error");
    let good = format!("{KEY}:{}", hmac_hex(SECRET, format!("{socket_id}:private-x").as_bytes()));
    client.send_json(json!({"event": "pusher:subscribe", "data": {"channel": "private-x", "auth": good}})).await;
    assert_eq!(client.recv().await["event"], "pusher_internal:subscription_succeeded");

    // A binary frame and a WebSocket-level oddity on a raw socket.
    let mut raw = RawClient::connect(herald.addr, &format!("/app/{KEY}?protocol=7")).await;
    assert_eq!(raw.next_json().await["event"], "pusher:connection_established");
    raw.send_frame(herald::transport::frame::OP_BINARY, b"\x01\x02").await;
    assert_eq!(raw.next_json().await["event"], "pusher:error");
    raw.send_frame(herald::transport::frame::OP_TEXT, br#"{"event":"pusher:ping","data":{}}"#).await;
    assert_eq!(raw.next_json().await["event"], "pusher:pong");
}

/// Subscribes to a presence channel as `user`; returns the member list's ids (sorted).
async fn join_presence(client: &mut Client, socket_id: &str, channel: &str, user: &str) -> Vec<String> {
    let channel_data = json!({"user_id": user, "user_info": {"name": user}}).to_string();
    let signature = hmac_hex(SECRET, format!("{socket_id}:{channel}:{channel_data}").as_bytes());
    let data = json!({"channel": channel, "auth": format!("{KEY}:{signature}"), "channel_data": channel_data});
    client.send_json(json!({"event": "pusher:subscribe", "data": data})).await;
    let reply = client.recv().await;
    assert_eq!(reply["event"], "pusher_internal:subscription_succeeded", "{reply}");
    let data: Value = serde_json::from_str(reply["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["presence"]["count"], data["presence"]["ids"].as_array().unwrap().len());
    let mut ids: Vec<String> =
        data["presence"]["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn presence_is_one_member_per_user_across_nodes_sharing_redis() {
    let redis = crate::common::redis::RedisServer::start().await;
    let toml = format!("{}\n[redis]\nurl = \"{}\"\n", config(false), redis.url());
    let [a, b] = crate::redis::live_nodes(&toml).await;
    let channel = "presence-team";

    // Events cross nodes.
    let (mut listener, _) = connect(&a).await;
    subscribe(&mut listener, "plain").await;
    let body = r#"{"name":"across","channel":"plain","data":"1"}"#;
    let (status, _) = post_raw(&b, &signed("POST", "/apps/77/events", body, SECRET, now(), &[]), body).await;
    assert_eq!(status, 200);
    assert_eq!(listener.recv().await["event"], "across");

    let (mut alice, alice_id) = connect(&a).await;
    assert_eq!(join_presence(&mut alice, &alice_id, channel, "alice").await, ["alice"]);
    let (mut bob, bob_id) = connect(&b).await;
    assert_eq!(join_presence(&mut bob, &bob_id, channel, "bob").await, ["alice", "bob"]);
    let added = alice.recv().await;
    assert_eq!(added["event"], "pusher_internal:member_added", "{added}");
    assert_eq!(serde_json::from_str::<Value>(added["data"].as_str().unwrap()).unwrap()["user_id"], "bob");

    // Alice's second socket, on the other node, is not a second member.
    let (mut alice2, alice2_id) = connect(&b).await;
    assert_eq!(join_presence(&mut alice2, &alice2_id, channel, "alice").await, ["alice", "bob"]);
    let query = signed("GET", &format!("/apps/77/channels/{channel}/users"), "", SECRET, now(), &[]);
    let (status, users) = a.get(&query).await;
    assert_eq!(status, 200, "{users}");
    let mut ids: Vec<&str> = users["users"].as_array().unwrap().iter().map(|u| u["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["alice", "bob"]);

    // Subscription counts are the cluster's: Alice on A, Bob and Alice's second socket on B.
    let counted = signed(
        "GET",
        &format!("/apps/77/channels/{channel}"),
        "",
        SECRET,
        now(),
        &[("info", "subscription_count,user_count")],
    );
    let cluster_counts = json!({"occupied": true, "subscription_count": 3, "user_count": 2});
    until("node A counts the cluster's subscriptions", async || a.get(&counted).await.1 == cluster_counts).await;

    // Alice's first socket leaves: she is still there through the other one, so Bob hears
    // nothing before the marker published after it.
    drop(alice);
    let departed = format!("/apps/77/channels/{channel}");
    let query = signed("GET", &departed, "", SECRET, now(), &[("info", "subscription_count")]);
    until("node A sees Alice's first socket leave", async || a.get(&query).await.1["subscription_count"] == 2).await;
    let body = format!(r#"{{"name":"marker","channel":"{channel}","data":"1"}}"#);
    let (status, _) = post_raw(&a, &signed("POST", "/apps/77/events", &body, SECRET, now(), &[]), &body).await;
    assert_eq!(status, 200);
    assert_eq!(bob.recv().await["event"], "marker");

    // Her last socket leaves: now she is gone, announced once.
    drop(alice2);
    let removed = bob.recv().await;
    assert_eq!(removed["event"], "pusher_internal:member_removed", "{removed}");
    assert_eq!(serde_json::from_str::<Value>(removed["data"].as_str().unwrap()).unwrap()["user_id"], "alice");
}

/// A quiet Pusher client is closed with 4201 (reconnect now), never with Herald's own 4000,
/// which pusher-js reads as "never reconnect"; it was told to ping well before that.
#[tokio::test]
async fn an_idle_pusher_client_is_told_to_reconnect() {
    let toml = format!("{}\n[websocket]\nheartbeat_interval = \"1s\"\nidle_timeout = \"2s\"\n", config(false));
    let herald = Herald::start(&toml).await;
    let mut client = herald.connect_raw(&format!("/app/{KEY}?protocol=7")).await;
    let established = client.recv().await;
    let data: Value = serde_json::from_str(established["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["activity_timeout"], 1, "{data}");
    assert_eq!(client.expect_close().await.0, 4201);
}

/// An app's connection quota refuses with 4004 and frees a place when a connection leaves.
#[tokio::test]
async fn the_app_connection_quota_is_4004_and_places_come_back() {
    let herald =
        Herald::start(&config(false).replace("enable_client_messages", "max_connections = 1\nenable_client_messages"))
            .await;
    let (first, _) = connect(&herald).await;
    let mut second = herald.connect_raw(&format!("/app/{KEY}?protocol=7")).await;
    assert_eq!(second.recv().await["data"]["code"], 4004);
    assert_eq!(second.expect_close().await.0, 4004);
    drop(first);
    herald.wait_for_total("connections", |n| n == 0).await;
    let (mut third, _) = connect(&herald).await;
    assert_alive(&mut third).await;
}

/// Herald's `[limits]` hold for Pusher clients: the message rate and channels per connection.
#[tokio::test]
async fn herald_limits_apply_to_pusher_clients() {
    let toml = format!(
        "{}\n[limits]\nmessages_per_minute = 3\nmessages_per_hour = 0\nmax_channels_per_connection = 2\n",
        config(false)
    );
    let herald = Herald::start(&toml).await;
    let (mut client, _) = connect(&herald).await;
    subscribe(&mut client, "one").await;
    subscribe(&mut client, "two").await;
    let error = error_for(&mut client, r#"{"event":"pusher:subscribe","data":{"channel":"three"}}"#).await;
    assert!(error["message"].as_str().unwrap().contains("at most 2 channels"), "{error}");
    // That was the third counted message; the fourth is over the rate.
    let error = error_for(&mut client, r#"{"event":"pusher:unsubscribe","data":{"channel":"one"}}"#).await;
    assert_eq!(error["code"], 4301, "{error}");
    // Keep-alives are never counted.
    assert_alive(&mut client).await;
}

/// `terminate_connections` through one node closes the user's connections on every node.
#[tokio::test]
async fn terminate_connections_reaches_every_node() {
    let redis = crate::common::redis::RedisServer::start().await;
    let toml = format!("{}\n[redis]\nurl = \"{}\"\n", config(false), redis.url());
    let [a, b] = crate::redis::live_nodes(&toml).await;
    let mut sessions = Vec::new();
    for node in [&a, &b] {
        let (mut client, socket_id) = connect(node).await;
        let user_data = json!({"id": "erin"}).to_string();
        let signature = hmac_hex(SECRET, format!("{socket_id}::user::{user_data}").as_bytes());
        let data = json!({"auth": format!("{KEY}:{signature}"), "user_data": user_data});
        client.send_json(json!({"event": "pusher:signin", "data": data})).await;
        assert_eq!(client.recv().await["event"], "pusher:signin_success");
        sessions.push(client);
    }
    let (mut bystander, _) = connect(&b).await;
    let path = "/apps/77/users/erin/terminate_connections";
    let (status, reply) = post_raw(&a, &signed("POST", path, "", SECRET, now(), &[]), "").await;
    assert_eq!(status, 200, "{reply}");
    for mut client in sessions {
        assert_eq!(client.recv().await["data"]["code"], 4009);
        assert_eq!(client.expect_close().await.0, 4009);
    }
    assert_alive(&mut bystander).await;
}

/// `socket_id` exclusion works whichever node the API request and the excluded socket are on.
#[tokio::test]
async fn socket_exclusion_reaches_the_sockets_node() {
    let redis = crate::common::redis::RedisServer::start().await;
    let toml = format!("{}\n[redis]\nurl = \"{}\"\n", config(false), redis.url());
    let [a, b] = crate::redis::live_nodes(&toml).await;
    let (mut excluded, excluded_id) = connect(&b).await;
    let (mut other, _) = connect(&b).await;
    for client in [&mut excluded, &mut other] {
        subscribe(client, "news").await;
    }
    let publish = |name: &str, socket: Option<&str>| {
        let mut body = json!({"name": name, "channel": "news", "data": "x"});
        if let Some(socket) = socket {
            body["socket_id"] = Value::from(socket);
        }
        body.to_string()
    };
    let first = publish("first", Some(&excluded_id));
    let (status, _) = post_raw(&a, &signed("POST", "/apps/77/events", &first, SECRET, now(), &[]), &first).await;
    assert_eq!(status, 200);
    assert_eq!(other.recv().await["event"], "first");
    // "first" has passed through Redis to node B; anything published now comes after it.
    let third = publish("third", None);
    let (status, _) = post_raw(&a, &signed("POST", "/apps/77/events", &third, SECRET, now(), &[]), &third).await;
    assert_eq!(status, 200);
    assert_eq!(excluded.recv().await["event"], "third", "the excluded socket got the event meant for others");
}

/// A `cache-` channel's last event, published through one node, is replayed on another.
#[tokio::test]
async fn cache_channels_replay_across_nodes() {
    let redis = crate::common::redis::RedisServer::start().await;
    let toml = format!("{}\n[redis]\nurl = \"{}\"\n", config(false), redis.url());
    let a = Herald::start(&toml).await;
    let b = Herald::start(&toml).await;
    crate::redis::wait_redis_connected(&a, true).await;
    crate::redis::wait_redis_connected(&b, true).await;
    let body = r#"{"name":"price","channel":"cache-eurusd","data":"1.08"}"#;
    let (status, _) = post_raw(&a, &signed("POST", "/apps/77/events", body, SECRET, now(), &[]), body).await;
    assert_eq!(status, 200);
    let (mut late, _) = connect(&b).await;
    late.send_json(json!({"event": "pusher:subscribe", "data": {"channel": "cache-eurusd"}})).await;
    assert_eq!(late.recv().await["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(late.recv().await, json!({"event": "price", "channel": "cache-eurusd", "data": "1.08"}));
    late.send_json(json!({"event": "pusher:subscribe", "data": {"channel": "cache-empty"}})).await;
    assert_eq!(late.recv().await["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(late.recv().await, json!({"event": "pusher:cache_miss", "channel": "cache-empty", "data": "{}"}));
}

/// A node that dies takes its members with it: the survivors announce `member_removed` once.
#[tokio::test]
async fn members_of_a_dead_node_are_announced_gone() {
    let redis = crate::common::redis::RedisServer::start().await;
    let toml = format!("{}\n[redis]\nurl = \"{}\"\nnode_timeout = \"3s\"\n", config(false), redis.url());
    let [mut a, b] = crate::redis::live_nodes(&toml).await;
    let (mut alice, alice_id) = connect(&a).await;
    join_presence(&mut alice, &alice_id, "presence-ops", "alice").await;
    let (mut bob, bob_id) = connect(&b).await;
    assert_eq!(join_presence(&mut bob, &bob_id, "presence-ops", "bob").await, ["alice", "bob"]);
    a.signal_and_wait("KILL").await;
    let removed = bob.recv().await;
    assert_eq!(removed["event"], "pusher_internal:member_removed", "{removed}");
    assert_eq!(serde_json::from_str::<Value>(removed["data"].as_str().unwrap()).unwrap()["user_id"], "alice");
    drop(alice);
}

/// Presence members are written to Redis again after Redis loses them (restart, flush).
#[tokio::test]
async fn presence_members_are_rewritten_after_redis_loses_them() {
    let redis = crate::common::redis::RedisServer::start().await;
    let toml = format!("{}\n[redis]\nurl = \"{}\"\nnode_timeout = \"3s\"\n", config(false), redis.url());
    let a = Herald::start(&toml).await;
    crate::redis::wait_redis_connected(&a, true).await;
    let (mut alice, alice_id) = connect(&a).await;
    join_presence(&mut alice, &alice_id, "presence-flush", "alice").await;
    let key = "herald:pp:\u{1f}p77\u{1f}presence-flush";
    let members = || redis.cli(&["HLEN", key]).map(|n| n.trim().to_string());
    assert_eq!(members().as_deref(), Some("1"));
    redis.cli(&["FLUSHALL"]).expect("FLUSHALL");
    // Only this node's rewrite can bring the field back.
    until("the member is written again", async || members().as_deref() == Some("1")).await;
    assert_alive(&mut alice).await;
}

/// Publishes event `name` with `data` on `channel` through the signed HTTP API of `herald`.
async fn trigger(herald: &Herald, channel: &str, name: &str, data: &str) {
    let body = json!({"name": name, "channel": channel, "data": data}).to_string();
    let (status, reply) = post_raw(herald, &signed("POST", "/apps/77/events", &body, SECRET, now(), &[]), &body).await;
    assert_eq!(status, 200, "{reply}");
}

/// Herald's positions through the Pusher socket: a client that asks (`"seq": true`) gets its
/// channel's position on `subscription_succeeded` and on every event; after a reconnect to
/// another node, `"recover"` replays exactly what it missed, in order, while events keep being
/// published, with nothing lost or twice. Presence announcements take no place in the stream;
/// a client that asks for nothing sees no new field.
#[tokio::test]
async fn positions_and_resume_through_the_pusher_socket() {
    let redis = crate::common::redis::RedisServer::start().await;
    let toml = format!(
        "{}\n[redis]\nurl = \"{}\"\n\n[[history]]\nchannels = \"jobs-*\"\nsize = 100\n\n[[history]]\nchannels = \"presence-desk*\"\n",
        config(false),
        redis.url()
    );
    let [a, b] = crate::redis::live_nodes(&toml).await;
    let channel = "jobs-7";

    let (mut plain, _) = connect(&a).await;
    subscribe(&mut plain, channel).await;
    let (mut client, _) = connect(&a).await;
    client.send_json(json!({"event": "pusher:subscribe", "data": {"channel": channel, "seq": true}})).await;
    let succeeded = client.recv().await;
    assert_eq!(succeeded["event"], "pusher_internal:subscription_succeeded", "{succeeded}");
    assert_eq!((&succeeded["data"], &succeeded["seq"]), (&json!("{}"), &json!(0)), "{succeeded}");
    assert!(succeeded.get("recovered").is_none(), "{succeeded}");

    for n in 1..=3 {
        trigger(&a, channel, "progress", &n.to_string()).await;
    }
    let mut epoch = String::new();
    for n in 1..=3 {
        let event = client.recv().await;
        assert_eq!(
            (&event["event"], &event["data"], &event["seq"]),
            (&json!("progress"), &json!(n.to_string()), &json!(n))
        );
        assert!(event.get("stream").is_none(), "the channel already names the stream: {event}");
        epoch = event["epoch"].as_str().expect("an epoch").to_string();
        let seen = plain.recv().await;
        assert_eq!(
            seen,
            json!({"event": "progress", "channel": channel, "data": n.to_string()}),
            "plain clients see no new field"
        );
    }
    drop(client);

    // Missed while away, then more published while the client comes back on the other node.
    for n in 4..=6 {
        trigger(&a, channel, "progress", &n.to_string()).await;
    }
    let publisher = {
        let url = a.url("");
        tokio::spawn(async move {
            for n in 7..=30 {
                let path = "/apps/77/events";
                let body = json!({"name": "progress", "channel": "jobs-7", "data": n.to_string()}).to_string();
                let query = signed("POST", path, &body, SECRET, now(), &[]);
                let response = reqwest::Client::new()
                    .post(format!("{}{}", url.trim_end_matches('/'), query))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("POST");
                assert_eq!(response.status().as_u16(), 200);
            }
        })
    };
    let (mut back, _) = connect(&b).await;
    let recover = json!({"seq": 3, "epoch": epoch});
    back.send_json(json!({"event": "pusher:subscribe", "data": {"channel": channel, "recover": recover}})).await;
    let succeeded = back.recv().await;
    assert_eq!(succeeded["event"], "pusher_internal:subscription_succeeded", "{succeeded}");
    assert_eq!((&succeeded["recovered"], &succeeded["epoch"]), (&json!(true), &json!(epoch)), "{succeeded}");
    let mut received = Vec::new();
    while received.last() != Some(&30) {
        let event = back.recv().await;
        assert_eq!(event["event"], "progress", "{event}");
        let n: u64 = event["data"].as_str().and_then(|d| d.parse().ok()).expect("a number");
        assert_eq!(event["seq"], n, "{event}");
        received.push(n);
    }
    assert_eq!(received, (4..=30).collect::<Vec<_>>(), "every missed and live event once, in order");
    publisher.await.expect("the publisher");

    // A position of another epoch cannot be resumed: said so, and live events follow.
    let (mut stale, _) = connect(&b).await;
    let recover = json!({"seq": 3, "epoch": "not-an-epoch"});
    stale.send_json(json!({"event": "pusher:subscribe", "data": {"channel": channel, "recover": recover}})).await;
    let succeeded = stale.recv().await;
    assert_eq!((&succeeded["recovered"], &succeeded["seq"]), (&json!(false), &json!(30)), "{succeeded}");
    trigger(&a, channel, "progress", "31").await;
    assert_eq!(stale.recv().await["seq"], 31);

    // On a presence channel with history, member changes are not events of the stream.
    let desk = "presence-desk";
    let (mut alice, alice_id) = connect(&a).await;
    let channel_data = json!({"user_id": "alice"}).to_string();
    let signature = hmac_hex(SECRET, format!("{alice_id}:{desk}:{channel_data}").as_bytes());
    let data =
        json!({"channel": desk, "auth": format!("{KEY}:{signature}"), "channel_data": channel_data, "seq": true});
    alice.send_json(json!({"event": "pusher:subscribe", "data": data})).await;
    let succeeded = alice.recv().await;
    assert_eq!((&succeeded["event"], &succeeded["seq"]), (&json!("pusher_internal:subscription_succeeded"), &json!(0)));
    let (mut bob, bob_id) = connect(&b).await;
    join_presence(&mut bob, &bob_id, desk, "bob").await;
    let added = alice.recv().await;
    assert_eq!(added["event"], "pusher_internal:member_added", "{added}");
    assert!(added.get("seq").is_none(), "{added}");
    trigger(&b, desk, "note", "x").await;
    let note = alice.recv().await;
    assert_eq!((&note["event"], &note["seq"]), (&json!("note"), &json!(1)), "{note}");
}

/// Herald's operator listings (`/api/channels`, `/api/connections`, which the dashboard shows)
/// name a Pusher app's channels and users as the app does, with the app's id beside them, never
/// by their hub names; a channel of Herald's own protocol with the same name stays apart.
#[tokio::test]
async fn admin_listings_name_pusher_channels_as_their_app_does() {
    let herald = Herald::start(&config(false)).await;
    let (mut client, socket_id) = connect(&herald).await;
    subscribe(&mut client, "news").await;
    let user_data = json!({"id": "alice"}).to_string();
    let signature = hmac_hex(SECRET, format!("{socket_id}::user::{user_data}").as_bytes());
    let auth = format!("{KEY}:{signature}");
    client.send_json(json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}})).await;
    assert_eq!(client.recv().await["event"], "pusher:signin_success");
    let mut native = herald.connect("/ws").await;
    native.send_json(json!({"type": "subscribe", "channels": ["news", "sports"]})).await;
    assert_eq!(native.recv().await["type"], "subscribed");

    let (status, listing) = herald.get("/api/channels").await;
    assert_eq!(status, 200, "{listing}");
    let mut rows = listing["channels"].as_array().expect("channels").clone();
    rows.sort_by_key(|r| r.to_string());
    assert_eq!(
        rows,
        [
            json!({"channel": "news", "pusher_app": "77", "subscribers": 1}),
            json!({"channel": "news", "subscribers": 1}),
            json!({"channel": "sports", "subscribers": 1}),
        ]
    );

    let (status, connections) = herald.get("/api/connections").await;
    assert_eq!(status, 200, "{connections}");
    let pusher = connections["connections"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c.get("pusher_app").is_some()))
        .unwrap_or_else(|| panic!("no Pusher connection listed: {connections}"));
    assert_eq!(
        (&pusher["pusher_app"], &pusher["channels"], &pusher["user_id"]),
        (&json!("77"), &json!(["news"]), &json!("alice"))
    );
    for text in [listing.to_string(), connections.to_string()] {
        assert!(!text.contains("\\u001f"), "a hub name leaked: {text}");
    }
}

/// A receiver of Pusher webhooks: every event of every batch, in arrival order.
async fn webhook_receiver() -> (String, std::sync::Arc<parking_lot::Mutex<Vec<Value>>>) {
    let seen: std::sync::Arc<parking_lot::Mutex<Vec<Value>>> = Default::default();
    let app = axum::Router::new().route(
        "/pusher",
        axum::routing::post({
            let seen = seen.clone();
            move |body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let batch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    seen.lock().extend(batch["events"].as_array().cloned().unwrap_or_default());
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/pusher", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// How many `name` webhooks `channel` drew so far.
fn hooks(seen: &parking_lot::Mutex<Vec<Value>>, name: &str, channel: &str) -> usize {
    seen.lock().iter().filter(|e| e["name"] == name && e["channel"] == channel).count()
}

/// Waits until `channel` drew a `name` webhook.
async fn wait_hook(seen: &parking_lot::Mutex<Vec<Value>>, name: &str, channel: &str) {
    tokio::time::timeout(crate::common::WAIT, async {
        while hooks(seen, name, channel) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {name} for {channel}: {:?}", seen.lock()));
}

/// Occupancy is the cluster's: two nodes gaining a channel at once send one `channel_occupied`;
/// a node that dies takes its counts with it (its Redis fields are deleted once the registry
/// forgets it) and a channel whose only subscribers were there is vacated once, by a survivor.
#[tokio::test]
async fn occupancy_webhooks_are_sent_once_for_the_cluster_even_when_a_node_dies() {
    let redis = crate::common::redis::RedisServer::start().await;
    let (hook, seen) = webhook_receiver().await;
    let toml = format!(
        "{}\n[[pusher.apps.webhooks]]\nurl = \"{hook}\"\nevent_types = [\"channel_occupied\", \"channel_vacated\"]\n\n[redis]\nurl = \"{}\"\nnode_timeout = \"3s\"\n",
        config(false),
        redis.url()
    );
    let [mut a, b] = crate::redis::live_nodes(&toml).await;

    let (mut on_a, _) = connect(&a).await;
    let (mut on_b, _) = connect(&b).await;
    tokio::join!(subscribe(&mut on_a, "shared"), subscribe(&mut on_b, "shared"));
    subscribe(&mut on_a, "lonely").await;
    wait_hook(&seen, "channel_occupied", "lonely").await;
    wait_hook(&seen, "channel_occupied", "shared").await;

    a.signal_and_wait("KILL").await;
    drop(on_a);
    wait_hook(&seen, "channel_vacated", "lonely").await;
    let fields = redis.cli(&["HKEYS", "herald:pc:77"]).expect("HKEYS");
    let mut fields: Vec<&str> = fields.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    fields.sort();
    assert_eq!(fields.len(), 2, "only B's count of `shared` and its flag are left: {fields:?}");
    assert!(fields[0].starts_with("shared ") && fields[1] == "shared ~", "{fields:?}");
    let query = signed("GET", "/apps/77/channels", "", SECRET, now(), &[("info", "subscription_count")]);
    let (status, channels) = b.get(&query).await;
    assert_eq!(status, 200, "{channels}");
    assert_eq!(channels["channels"], json!({"shared": {"subscription_count": 1}}));

    on_b.send_json(json!({"event": "pusher:unsubscribe", "data": {"channel": "shared"}})).await;
    wait_hook(&seen, "channel_vacated", "shared").await;
    // A marker: a channel occupied and vacated after everything above, so that any duplicate
    // sent before it has arrived by the time its own webhook does.
    subscribe(&mut on_b, "marker").await;
    on_b.send_json(json!({"event": "pusher:unsubscribe", "data": {"channel": "marker"}})).await;
    wait_hook(&seen, "channel_vacated", "marker").await;
    for channel in ["shared", "lonely"] {
        for name in ["channel_occupied", "channel_vacated"] {
            assert_eq!(hooks(&seen, name, channel), 1, "{name} of {channel}: {:?}", seen.lock());
        }
    }
}

/// With Redis a webhook batch outlives its node: the endpoint refuses while the node that made
/// the batch is killed; a survivor takes the batch over and delivers it, signed as it was.
#[tokio::test]
async fn a_pending_webhook_batch_is_delivered_by_a_survivor_after_its_node_dies() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let redis = crate::common::redis::RedisServer::start().await;
    let accept = std::sync::Arc::new(AtomicBool::new(false));
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen: std::sync::Arc<parking_lot::Mutex<Vec<(String, String)>>> = Default::default();
    let app = axum::Router::new().route(
        "/pusher",
        axum::routing::post({
            let (accept, refused, seen) = (accept.clone(), refused.clone(), seen.clone());
            move |headers: axum::http::HeaderMap, body: String| {
                let (accept, refused, seen) = (accept.clone(), refused.clone(), seen.clone());
                async move {
                    if !accept.load(Ordering::SeqCst) {
                        refused.fetch_add(1, Ordering::SeqCst);
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let signature = headers.get("x-pusher-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
                    seen.lock().push((signature.to_string(), body));
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/pusher", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let toml = format!(
        "{}\n[[pusher.apps.webhooks]]\nurl = \"{hook}\"\nevent_types = [\"channel_occupied\"]\n\n[redis]\nurl = \"{}\"\nnode_timeout = \"3s\"\n",
        config(false),
        redis.url()
    );
    let [mut a, _b] = crate::redis::live_nodes(&toml).await;
    let (mut client, _) = connect(&a).await;
    subscribe(&mut client, "orders").await;
    tokio::time::timeout(crate::common::WAIT, async {
        while refused.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the batch was never attempted");
    a.signal_and_wait("KILL").await;
    drop(client);
    accept.store(true, Ordering::SeqCst);
    let (signature, body) = tokio::time::timeout(crate::common::WAIT, async {
        loop {
            if let Some(found) = seen.lock().iter().find(|(_, body)| body.contains("\"orders\"")).cloned() {
                return found;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("nobody delivered the dead node's batch");
    assert_eq!(signature, hmac_hex(SECRET, body.as_bytes()), "signed as it was");
    let events: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(events["events"], json!([{"name": "channel_occupied", "channel": "orders"}]));
    // Delivered, it is forgotten: no pending batch is left in Redis.
    tokio::time::timeout(crate::common::WAIT, async {
        while redis.cli(&["KEYS", "{herald:pw}:*"]).unwrap_or_default().trim() != "{herald:pw}:owners" {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("a batch is still pending: {:?}", redis.cli(&["KEYS", "{herald:pw}:*"])));
}

/// The limits that Soketi's own test suite checks against its server (which its suite starts
/// in-process, so it cannot be pointed at Herald): channel name length, presence member size
/// and count, client event size, the HTTP API's event name, payload and channel count limits,
/// `users` of a non-presence channel, unknown routes, and that sockets closed without
/// unsubscribing leave no channel behind.
#[tokio::test]
async fn the_limits_soketis_suite_checks() {
    let toml = format!(
        "{}max_presence_members = 2\nmax_presence_user_info_bytes = 64\nmax_event_payload_bytes = 100\nmax_event_channels = 3\n",
        config(true)
    );
    let herald = Herald::start(&toml).await;
    let (mut client, socket_id) = connect(&herald).await;
    let long = format!("private-{}", "x".repeat(160));
    let error =
        error_for(&mut client, &json!({"event": "pusher:subscribe", "data": {"channel": long}}).to_string()).await;
    assert!(error["message"].as_str().is_some_and(|m| m.contains("164")), "{error}");

    // Presence: a member's user_info is bounded, and so is the channel's member count.
    let presence = |client_socket: &str, user: &str, info: Value| {
        let channel_data = json!({"user_id": user, "user_info": info}).to_string();
        let signature = hmac_hex(SECRET, format!("{client_socket}:presence-full:{channel_data}").as_bytes());
        json!({"event": "pusher:subscribe", "data": {"channel": "presence-full", "auth": format!("{KEY}:{signature}"), "channel_data": channel_data}})
    };
    let error = error_for(&mut client, &presence(&socket_id, "big", json!({"bio": "y".repeat(100)})).to_string()).await;
    assert!(error["message"].as_str().is_some_and(|m| m.contains("64 bytes")), "{error}");
    let mut members = Vec::new();
    for user in ["u1", "u2"] {
        let (mut member, id) = connect(&herald).await;
        member.send_json(presence(&id, user, json!({}))).await;
        assert_eq!(member.recv().await["event"], "pusher_internal:subscription_succeeded");
        members.push(member);
    }
    let error = error_for(&mut client, &presence(&socket_id, "u3", json!({})).to_string()).await;
    assert_eq!(error["code"], 4004, "{error}");

    // A client event larger than the app's payload limit is refused; the connection carries on.
    let private = format!("{KEY}:{}", hmac_hex(SECRET, format!("{socket_id}:private-chat").as_bytes()));
    client.send_json(json!({"event": "pusher:subscribe", "data": {"channel": "private-chat", "auth": private}})).await;
    assert_eq!(client.recv().await["event"], "pusher_internal:subscription_succeeded");
    let big = json!({"event": "client-big", "channel": "private-chat", "data": {"text": "z".repeat(1000)}});
    let error = error_for(&mut client, &big.to_string()).await;
    assert!(error["message"].as_str().is_some_and(|m| m.contains("larger")), "{error}");
    assert_alive(&mut client).await;

    // The HTTP API's limits.
    let events = "/apps/77/events";
    for (what, body, status) in [
        ("event name over 200 characters", json!({"name": "n".repeat(201), "channel": "a", "data": "1"}), 400),
        ("payload over the limit", json!({"name": "e", "channel": "a", "data": "d".repeat(101)}), 413),
        ("more channels than allowed", json!({"name": "e", "channels": ["a", "b", "c", "d"], "data": "1"}), 400),
        ("channel name over 164 characters", json!({"name": "e", "channel": "c".repeat(165), "data": "1"}), 400),
    ] {
        let body = body.to_string();
        let (got, reply) = post_raw(&herald, &signed("POST", events, &body, SECRET, now(), &[]), &body).await;
        assert_eq!(got, status, "{what}: {reply}");
    }
    let (status, reply) =
        herald.get(&signed("GET", "/apps/77/channels/public-news/users", "", SECRET, now(), &[])).await;
    assert_eq!(status, 400, "users of a public channel: {reply}");
    let (status, reply) = herald.get(&signed("GET", "/apps/77/no-such-route", "", SECRET, now(), &[])).await;
    assert_eq!(status, 404, "{reply}");

    // Sockets closed without unsubscribing leave no channel and no member behind.
    drop(members);
    drop(client);
    let query = signed("GET", "/apps/77/channels", "", SECRET, now(), &[]);
    tokio::time::timeout(crate::common::WAIT, async {
        while herald.get(&query).await.1 != json!({"channels": {}}) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("channels were left behind: {}", "see the log"));
    let users = signed("GET", "/apps/77/channels/presence-full/users", "", SECRET, now(), &[]);
    assert_eq!(herald.get(&users).await.1, json!({"users": []}));
}
