//! Redis: publishers' PUBLISH, several nodes acting as one, Redis Cluster, and Redis outages.

use std::process::Command;

use serde_json::json;

use crate::common::redis::{RedisCluster, RedisServer};
use crate::common::{Herald, Options, eventually, until};

fn node_config(redis: &str, extra: &str) -> String {
    format!(
        r#"
[redis]
url = "{redis}"
prefixes = ["fliptechpro", "botrix"]
{extra}

[[channels]]
name = "jobs:updates"
default_type = "job_update"
broadcast = true
"#
    )
}

async fn node(redis: &RedisServer) -> Herald {
    Herald::start(&node_config(&redis.url(), "")).await
}

/// Waits until `count` subscribers listen on a Redis channel (`PUBSUB NUMSUB`).
async fn wait_numsub(redis: &RedisServer, channel: &str, count: u64) {
    until(format_args!("{channel} has {count} subscribers"), async || {
        let out = redis.cli(&["PUBSUB", "NUMSUB", channel]).unwrap_or_default();
        out.lines().nth(1).and_then(|n| n.trim().parse::<u64>().ok()) == Some(count)
    })
    .await;
}

/// Waits until a node's registry shows `n` live nodes and its Redis connection is up.
pub(crate) async fn wait_live_nodes(herald: &Herald, n: u64) {
    until("the nodes see each other", async || {
        let (_, stats) = herald.get("/api/stats").await;
        stats["redis"]["live_nodes"] == n && stats["redis"]["connected"] == true
    })
    .await;
}

/// Starts `N` nodes with one configuration and waits until each sees all `N` live.
pub(crate) async fn live_nodes<const N: usize>(toml: &str) -> [Herald; N] {
    let mut nodes = Vec::with_capacity(N);
    for _ in 0..N {
        nodes.push(Herald::start(toml).await);
    }
    for node in &nodes {
        wait_live_nodes(node, N as u64).await;
    }
    let Ok(nodes) = nodes.try_into() else { unreachable!("N nodes were started") };
    nodes
}

/// Waits until the node reports Redis as connected.
pub(crate) async fn wait_redis_connected(herald: &Herald, connected: bool) {
    until(format_args!("the node reports redis connected = {connected}"), async || {
        herald.get("/health").await.1["data"]["broker"]["connected"] == connected
    })
    .await;
}

#[tokio::test]
async fn a_prefixed_publish_reaches_channel_room_and_user_once_each() {
    let redis = RedisServer::start().await;
    let herald = node(&redis).await;
    wait_redis_connected(&herald, true).await;
    let mut subscriber = herald.connect("/ws?channels=campaigns").await;
    let mut member = herald.connect("/ws").await;
    member.request(json!({"type": "join_room", "room": "campaign:123"})).await;
    let mut user = herald.connect("/ws?user_id=owner-7").await;
    let mut everything = herald.connect("/ws?channels=campaigns&user_id=owner-7").await;
    everything.request(json!({"type": "join_room", "room": "campaign:123"})).await;
    let mut outsider = herald.connect("/ws?channels=emails").await;

    let event = json!({"type": "campaign:launched", "campaign_id": 123, "room": "campaign:123", "user_id": "owner-7"});
    assert_eq!(redis.publish("fliptechpro:campaigns", &event.to_string()), 1, "one node listens on the pattern");
    redis.publish("fliptechpro:emails", &json!({"type": "marker"}).to_string());
    redis.publish("fliptechpro:campaigns", &json!({"type": "marker"}).to_string());
    herald.publish(json!({"user_id": "owner-7", "room": "campaign:123", "event": {"type": "marker"}})).await;

    for client in [&mut subscriber, &mut member, &mut user, &mut everything] {
        let got = client.recv_event().await;
        assert_eq!(got, event, "delivered exactly as published");
        assert_eq!(client.recv_event().await["type"], "marker", "and only once");
    }
    assert_eq!(outsider.recv_event().await["type"], "marker");
}

#[tokio::test]
async fn the_documents_publishers_work_unchanged() {
    let redis = RedisServer::start().await;
    let herald = node(&redis).await;
    wait_redis_connected(&herald, true).await;

    // Document 002: `redis-cli PUBLISH botrix:jobs:updates '…'`, the exact line, to a browser
    // that subscribed to nothing.
    let mut browser = herald.connect("/ws").await;
    let status = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .args([
            "PUBLISH",
            "botrix:jobs:updates",
            r#"{"job_id":"test-123","status":"completed","data":{"success":true}}"#,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let job = browser.recv_event().await;
    assert_eq!(job["type"], "job_update");
    assert_eq!(job["job_id"], "test-123");
    assert_eq!(job["data"]["success"], true);

    // Document 000: redis-py's `r.publish("fliptechpro:campaigns", json.dumps({...}))`, as written.
    let mut dashboard = herald.connect("/ws?channels=campaigns").await;
    let source =
        std::fs::read_to_string(format!("{}/tests/seeds/doc000_redis_publish.py", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let script = herald.dir().join("doc000_redis_publish.py");
    std::fs::write(&script, source.replace("redis://localhost:6379", &redis.url())).unwrap();
    let python = std::env::var("HERALD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let output = Command::new(python).arg(&script).output().expect("python3");
    assert!(
        output.status.success(),
        "publisher failed (is the redis package installed?): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let launched = dashboard.recv_event().await;
    assert_eq!(launched["type"], "campaign:launched");
    assert_eq!(launched["campaign_name"], "Test");
}

#[tokio::test]
async fn malformed_messages_are_counted_logged_once_and_never_stop_the_listener() {
    let redis = RedisServer::start().await;
    let herald = node(&redis).await;
    wait_redis_connected(&herald, true).await;
    let mut client = herald.connect("/ws?channels=campaigns").await;
    for i in 0..50 {
        redis.publish("fliptechpro:campaigns", &format!("not json {i}"));
    }
    redis.publish("fliptechpro:campaigns", "[1,2,3]");
    redis.publish("fliptechpro:campaigns", &json!({"type": "fine"}).to_string());
    assert_eq!(client.recv_event().await["type"], "fine");
    herald.wait_for_total("broker_malformed", |n| n == 51).await;
    let log = herald.log.lock().clone();
    let lines = log.lines().filter(|l| l.contains("dropped a published message")).count();
    assert!((1..=2).contains(&lines), "a burst should log once, not {lines} times:\n{log}");
}

#[tokio::test]
async fn three_nodes_act_as_one() {
    let redis = RedisServer::start().await;
    let (a, b, c) = (node(&redis).await, node(&redis).await, node(&redis).await);
    for n in [&a, &b, &c] {
        wait_redis_connected(n, true).await;
    }

    // A channel subscriber on A receives what C's API publishes.
    let mut on_a = a.connect("/ws?channels=news").await;
    c.publish(json!({"channel": "news", "event": {"type": "from-c"}})).await;
    assert_eq!(on_a.recv_event().await["type"], "from-c");

    // A room spans nodes.
    let mut room_a = a.connect("/ws").await;
    room_a.request(json!({"type": "join_room", "room": "order_1"})).await;
    let mut room_b = b.connect("/ws").await;
    room_b.request(json!({"type": "join_room", "room": "order_1"})).await;
    c.publish(json!({"room": "order_1", "event": {"type": "room-event"}})).await;
    assert_eq!(room_a.recv_event().await["type"], "room-event");
    assert_eq!(room_b.recv_event().await["type"], "room-event");

    // A user notified on any node gets it on every connection on every node.
    let mut tab_a = a.connect("/ws?user_id=dana").await;
    let mut tab_c = c.connect("/ws?user_id=dana").await;
    let (status, _) = b.post("/api/users/dana/notify", json!({"type": "direct_message", "message": "hi"})).await;
    assert_eq!(status, 200);
    assert_eq!(tab_a.recv_event().await["message"], "hi");
    assert_eq!(tab_c.recv_event().await["message"], "hi");

    // A connection reached through channel, room and user gets one copy, not three.
    let mut all_three = a.connect("/ws?channels=news&user_id=dana").await;
    all_three.request(json!({"type": "join_room", "room": "order_1"})).await;
    b.publish(json!({"channel": "news", "room": "order_1", "user_id": "dana", "event": {"type": "once"}})).await;
    b.publish(json!({"channel": "news", "event": {"type": "marker"}})).await;
    assert_eq!(all_three.recv_event().await["type"], "once");
    assert_eq!(all_three.recv_event().await["type"], "marker");

    // Stats report this node and the cluster.
    let expected_total = 6;
    let cluster_total = eventually("the cluster-wide connection count", async || {
        let (_, stats) = b.get("/api/stats").await;
        (stats["stats"]["cluster"]["total_connections"].as_u64() == Some(expected_total)).then_some(stats)
    })
    .await;
    assert_eq!(cluster_total["stats"]["cluster"]["node_count"], 3);
    assert_eq!(cluster_total["connected_clients"], 1, "node B's own figure");
}

#[tokio::test]
async fn a_node_subscribes_only_to_what_its_clients_need() {
    let redis = RedisServer::start().await;
    let herald = node(&redis).await;
    wait_redis_connected(&herald, true).await;
    wait_numsub(&redis, "herald:c:sparse", 0).await;
    let mut one = herald.connect("/ws?channels=sparse").await;
    let mut two = herald.connect("/ws?channels=sparse").await;
    wait_numsub(&redis, "herald:c:sparse", 1).await;
    one.request(json!({"type": "unsubscribe", "channels": ["sparse"]})).await;
    // Still one local subscriber: the node stays subscribed.
    two.assert_alive().await;
    wait_numsub(&redis, "herald:c:sparse", 1).await;
    two.request(json!({"type": "unsubscribe", "channels": ["sparse"]})).await;
    wait_numsub(&redis, "herald:c:sparse", 0).await;
}

#[tokio::test]
async fn a_subscription_acknowledged_on_one_node_receives_what_another_node_publishes_next() {
    let redis = RedisServer::start().await;
    // Node A talks to Redis over a slow link, node B over a fast one: without the wait for the
    // subscription, A's acknowledgement would beat its SUBSCRIBE and B's event would be lost.
    let slow = crate::common::redis::latency_proxy(redis.port, std::time::Duration::from_millis(100)).await;
    let a = Herald::start(&node_config(&format!("redis://127.0.0.1:{slow}"), "")).await;
    let b = node(&redis).await;
    wait_redis_connected(&a, true).await;
    wait_redis_connected(&b, true).await;
    let mut client = a.connect("/ws").await;
    for round in 0..5 {
        let channel = format!("fresh-{round}");
        let ack = client.request(json!({"type": "subscribe", "channels": [channel]})).await;
        assert_eq!(ack["type"], "subscribed");
        // No waiting here: the acknowledgement itself promises the subscription is live.
        b.publish(json!({"channel": channel, "event": {"type": "right-after", "round": round}})).await;
        assert_eq!(client.recv_event().await["round"], round);
    }
}

#[tokio::test]
async fn redis_restart_mid_stream_degrades_then_recovers_without_restarting_herald() {
    let mut redis = RedisServer::start().await;
    let herald = node(&redis).await;
    wait_redis_connected(&herald, true).await;
    let mut client = herald.connect("/ws?channels=campaigns").await;
    redis.publish("fliptechpro:campaigns", &json!({"type": "before"}).to_string());
    assert_eq!(client.recv_event().await["type"], "before");

    redis.kill();
    wait_redis_connected(&herald, false).await;
    let (status, health) = herald.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["data"]["health_status"], "degraded");
    let (_, stats) = herald.get("/ws/stats").await;
    assert_eq!(stats["stats"]["redis_connected"], false);

    // Local traffic continues.
    let (status, reply) =
        herald.post("/api/publish", json!({"channel": "campaigns", "event": {"type": "during"}})).await;
    assert_eq!(status, 200);
    assert_eq!(reply["local_only"], true);
    assert_eq!(client.recv_event().await["type"], "during");
    // A subscription made during the outage is restored with the rest.
    client.request(json!({"type": "subscribe", "channels": ["made-during-outage"]})).await;

    redis.restart().await;
    wait_redis_connected(&herald, true).await;
    redis.publish("fliptechpro:campaigns", &json!({"type": "after"}).to_string());
    assert_eq!(client.recv_event().await["type"], "after");
    wait_numsub(&redis, "herald:c:made-during-outage", 1).await;
    herald.publish(json!({"channel": "made-during-outage", "event": {"type": "restored"}})).await;
    assert_eq!(client.recv_event().await["type"], "restored");

    let log = herald.log.lock().clone();
    assert_eq!(log.matches("redis connection lost").count(), 1, "the outage is logged once:\n{log}");
    assert_eq!(log.matches("redis connection restored").count(), 1, "and its end once:\n{log}");
}

#[tokio::test]
async fn redis_cluster_with_sharded_pub_sub() {
    let cluster = RedisCluster::start().await;
    let config = node_config(&cluster.url(), "mode = \"cluster\"");
    let (a, b) = (Herald::start(&config).await, Herald::start(&config).await);
    wait_redis_connected(&a, true).await;
    wait_redis_connected(&b, true).await;
    let (_, stats) = a.get("/api/stats").await;
    assert_eq!(stats["broker"]["kind"], "redis-cluster");

    // Many channels, so they land on every shard of the cluster.
    let channels: Vec<String> = (0..12).map(|i| format!("sharded-{i}")).collect();
    let mut client = a.connect(&format!("/ws?channels={}", channels.join(","))).await;
    for channel in &channels {
        b.publish(json!({"channel": channel, "event": {"type": "x", "channel": channel}})).await;
        assert_eq!(&client.recv_event().await["channel"], channel);
    }
    // The internal channels are sharded: each master serves some of them.
    let mut serving = 0;
    for master in &cluster.nodes {
        let out = master.cli(&["PUBSUB", "SHARDCHANNELS", "herald:*"]).unwrap_or_default();
        if out.lines().any(|l| l.starts_with("herald:c:{c:sharded-")) {
            serving += 1;
        }
    }
    assert!(serving >= 2, "sharded channels should spread over the masters, {serving} served them");

    // Publishers' PUBLISH on any cluster node reaches both Herald nodes.
    let mut on_b = b.connect("/ws?channels=campaigns").await;
    cluster.publish(2, "fliptechpro:campaigns", &json!({"type": "campaign:launched"}).to_string());
    assert_eq!(on_b.recv_event().await["type"], "campaign:launched");

    // A room across Herald nodes.
    let mut room_a = a.connect("/ws").await;
    room_a.request(json!({"type": "join_room", "room": "quote_9"})).await;
    let mut room_b = b.connect("/ws").await;
    room_b.request(json!({"type": "join_room", "room": "quote_9"})).await;
    a.publish(json!({"room": "quote_9", "event": {"type": "quote"}})).await;
    assert_eq!(room_a.recv_event().await["type"], "quote");
    assert_eq!(room_b.recv_event().await["type"], "quote");
}

#[tokio::test]
async fn admin_disconnect_reaches_the_owning_node() {
    let redis = RedisServer::start().await;
    let (a, b) = (node(&redis).await, node(&redis).await);
    wait_redis_connected(&a, true).await;
    wait_redis_connected(&b, true).await;
    let mut on_b = b.connect("/ws").await;
    let id = on_b.welcome["connection_id"].as_str().unwrap().to_string();
    let (status, _) = a.delete(&format!("/api/connections/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(on_b.expect_close().await.0, 4001);
}

/// The dashboard's "disconnect a user": one call on any node closes that user's connections on
/// every node (the others through their control channels) and leaves everyone else connected.
#[tokio::test]
async fn disconnecting_a_user_reaches_every_node() {
    let redis = RedisServer::start().await;
    let (a, b) = (node(&redis).await, node(&redis).await);
    wait_live_nodes(&a, 2).await;
    let mut alice_a = a.connect("/ws?user_id=alice").await;
    let mut alice_b1 = b.connect("/ws?user_id=alice").await;
    let mut alice_b2 = b.connect("/ws?user_id=alice").await;
    let mut bob_b = b.connect("/ws?user_id=bob").await;
    let (status, body) = a.delete("/api/users/alice/connections").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disconnected"], 1, "{body}");
    assert_eq!(body["nodes_asked"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(alice_a.expect_close().await.0, 4001);
    assert_eq!(alice_b1.expect_close().await.0, 4001);
    assert_eq!(alice_b2.expect_close().await.0, 4001);
    bob_b.assert_alive().await;
}

#[tokio::test]
async fn an_unreachable_redis_at_start_is_not_fatal() {
    let port = crate::common::redis::free_port();
    let herald = Herald::start_with(Options::toml(&node_config(&format!("redis://127.0.0.1:{port}"), ""))).await;
    let (_, health) = herald.get("/health").await;
    assert_eq!(health["data"]["health_status"], "degraded");
    let mut client = herald.connect("/ws?channels=a").await;
    herald.publish(json!({"channel": "a", "event": {"type": "local"}})).await;
    assert_eq!(client.recv_event().await["type"], "local");
}

/// Names may hold any printable character; ones that JSON escapes (`"`, `\`) must cross nodes
/// too (the envelope between nodes once borrowed them unescaped and dropped such events).
#[tokio::test]
async fn names_that_json_escapes_cross_nodes() {
    let redis = RedisServer::start().await;
    let a = node(&redis).await;
    let b = node(&redis).await;
    wait_redis_connected(&a, true).await;
    wait_redis_connected(&b, true).await;
    let channel = r#"quote"and\backslash"#;
    let mut subscriber = a.connect("/ws").await;
    let ack = subscriber.request(json!({"type": "subscribe", "channels": [channel]})).await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    b.publish(json!({"channel": channel, "event": {"type": "crossed"}})).await;
    assert_eq!(subscriber.recv_event().await["type"], "crossed");
}

/// A node whose one client may join and subscribe as often as the rounds below need.
fn unlimited(redis: &str) -> String {
    node_config(redis, "")
        + "\n[limits]\nmessages_per_minute = 0\nmessages_per_hour = 0\n\
           max_channels_per_connection = 0\nmax_rooms_per_connection = 0\n"
}

/// Joins a fresh room and subscribes to a fresh channel, then publishes to each right after its
/// acknowledgement, without looking at `/health`; every event must arrive.
async fn acknowledged_then_published(herald: &Herald, client: &mut crate::common::Client, round: usize) {
    let room = format!("early-room-{round}");
    let ack = client.request(json!({"type": "join_room", "room": room})).await;
    assert_eq!(ack["type"], "room_joined", "{ack}");
    herald.publish(json!({"room": room, "event": {"type": "right-after", "round": round, "via": "room"}})).await;
    assert_eq!(client.recv_type("right-after").await["round"], round, "room event of round {round}");
    let channel = format!("early-channel-{round}");
    let ack = client.request(json!({"type": "subscribe", "channels": [channel]})).await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    herald
        .publish(json!({"channel": channel, "event": {"type": "right-after", "round": round, "via": "channel"}}))
        .await;
    assert_eq!(client.recv_type("right-after").await["round"], round, "channel event of round {round}");
}

/// Runs rounds of [`acknowledged_then_published`] from before the node reports Redis connected
/// until a few rounds after, so that some fall in the moment it switches over to Redis; returns
/// how many ran.
async fn rounds_across_the_switch(herald: &Herald, client: &mut crate::common::Client) -> usize {
    const AFTER: usize = 3;
    const MOST: usize = 5_000;
    let (mut round, mut after) = (0, 0);
    while after < AFTER {
        assert!(round < MOST, "the node never reported redis connected");
        acknowledged_then_published(herald, client, round).await;
        round += 1;
        let (_, health) = herald.get("/health").await;
        if health["data"]["broker"]["connected"] == true {
            after += 1;
        }
    }
    round
}

/// Once Redis is up, every key acknowledged earlier is subscribed (one subscriber each: the
/// other node wants none of them), and events another node publishes to the first and last reach
/// the client.
async fn every_early_key_is_live(
    redis: &RedisServer,
    herald: &Herald,
    other: &Herald,
    client: &mut crate::common::Client,
    rounds: usize,
) {
    wait_redis_connected(herald, true).await;
    wait_redis_connected(other, true).await;
    let keys: Vec<String> = (0..rounds)
        .flat_map(|round| [format!("herald:r:early-room-{round}"), format!("herald:c:early-channel-{round}")])
        .collect();
    let mut args = vec!["PUBSUB", "NUMSUB"];
    args.extend(keys.iter().map(String::as_str));
    let out = redis.cli(&args).expect("PUBSUB NUMSUB");
    let lines: Vec<&str> = out.lines().collect();
    for pair in lines.chunks(2) {
        assert_eq!(pair.get(1).map(|n| n.trim()), Some("1"), "{} is not subscribed after redis came up", pair[0]);
    }
    assert_eq!(lines.len(), keys.len() * 2);
    for round in [0, rounds - 1] {
        other.publish(json!({"room": format!("early-room-{round}"), "event": {"type": "later", "round": round}})).await;
        assert_eq!(client.recv_type("later").await["round"], round, "room of round {round} after redis is up");
        let channel = format!("early-channel-{round}");
        other.publish(json!({"channel": channel, "event": {"type": "later", "round": round}})).await;
        assert_eq!(client.recv_type("later").await["round"], round, "channel of round {round} after redis is up");
    }
}

/// An acknowledgement given while the node is still connecting to Redis is kept: events published
/// right after it arrive, and so do events published later from another node. Redis sits behind a
/// slow link so that the connecting phase spans several rounds.
#[tokio::test]
async fn events_right_after_an_acknowledgement_arrive_while_redis_is_coming_up() {
    let redis = RedisServer::start().await;
    let other = node(&redis).await;
    let slow = crate::common::redis::latency_proxy(redis.port, std::time::Duration::from_millis(40)).await;
    let herald = Herald::start(&unlimited(&format!("redis://127.0.0.1:{slow}"))).await;
    let mut client = herald.connect("/ws").await;
    let rounds = rounds_across_the_switch(&herald, &mut client).await;
    every_early_key_is_live(&redis, &herald, &other, &mut client, rounds).await;
}

/// The same across a Redis restart: acknowledgements given while the node reconnects are kept.
#[tokio::test]
async fn events_right_after_an_acknowledgement_arrive_while_redis_comes_back() {
    let mut redis = RedisServer::start().await;
    let herald = Herald::start(&unlimited(&redis.url())).await;
    wait_redis_connected(&herald, true).await;
    let mut client = herald.connect("/ws").await;
    redis.kill();
    wait_redis_connected(&herald, false).await;
    redis.restart().await;
    let rounds = rounds_across_the_switch(&herald, &mut client).await;
    let other = node(&redis).await;
    every_early_key_is_live(&redis, &herald, &other, &mut client, rounds).await;
}
