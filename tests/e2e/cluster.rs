//! Every feature on a Redis Cluster: three Herald nodes (`redis.mode = "cluster"`) on a cluster of
//! three masters and three replicas, as a production cluster runs. Delivery, history and resume, presence, cells, limits, upstream streams and the
//! node registry, each across nodes.

use serde_json::{Value, json};

use crate::common::raw::RawClient;
use crate::common::redis::RedisCluster;
use crate::common::{Client, Herald, until};
use crate::redis::live_nodes;
use crate::resume::HISTORY;

fn cluster_toml(cluster: &RedisCluster, extra: &str) -> String {
    format!(
        "[redis]\nurl = \"{}\"\nmode = \"cluster\"\nnode_timeout = \"3s\"\nprefixes = [\"app\"]\n{extra}",
        cluster.url()
    )
}

/// Three nodes on the cluster, each seeing the other two.
async fn three_nodes(cluster: &RedisCluster, extra: &str) -> (Herald, Herald, Herald) {
    let [a, b, c] = live_nodes(&cluster_toml(cluster, extra)).await;
    (a, b, c)
}

/// Skips heartbeats and everything whose type is not in `kinds`.
async fn next_of(client: &mut Client, kinds: &[&str]) -> Value {
    loop {
        let message = client.recv().await;
        if kinds.iter().any(|k| message["type"] == *k) {
            return message;
        }
    }
}

async fn events(client: &mut Client, n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.push(client.recv_event().await);
    }
    out
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {e}"))).collect()
}

fn user_ids(state: &Value) -> Vec<String> {
    // Before a node has heard of the room, its answer has no `users`.
    let users = state["users"].as_array().cloned().unwrap_or_default();
    let mut ids: Vec<String> = users.iter().filter_map(|u| u["user_id"].as_str().map(String::from)).collect();
    ids.sort();
    ids
}

/// Joins a room; with presence on, returns the `room_state` that follows the acknowledgement.
async fn join(client: &mut Client, room: &str, presence: bool) -> Value {
    let ack = client.request(json!({"type": "join_room", "room_id": room})).await;
    assert_eq!(ack["type"], "room_joined", "{ack}");
    if presence { next_of(client, &["room_state"]).await } else { ack }
}

/// Sends a message and returns the first reply of one of `kinds`.
async fn reply_of(client: &mut Client, message: Value, kinds: &[&str]) -> Value {
    client.send_json(message).await;
    next_of(client, kinds).await
}

/// An event for a channel, a room and a user, published on one node, reaches every recipient on
/// the other nodes once: its copies travel on sharded channels of different slots.
#[tokio::test]
async fn delivery_across_nodes_reaches_channel_room_and_user_once_each() {
    let cluster = RedisCluster::start_with_replicas().await;
    let (a, b, c) = three_nodes(&cluster, "").await;
    let mut clients = Vec::new();
    for node in [&b, &c] {
        let subscriber = node.connect("/ws?channels=news").await;
        let mut member = node.connect("/ws").await;
        join(&mut member, "desk", false).await;
        let user = node.connect("/ws?user_id=editor").await;
        let mut everything = node.connect("/ws?channels=news&user_id=editor").await;
        join(&mut everything, "desk", false).await;
        clients.extend([subscriber, member, user, everything]);
    }
    let mut outsider = c.connect("/ws?channels=sports").await;

    let event = json!({"type": "story", "n": 1});
    a.publish(json!({"channel": "news", "room": "desk", "user_id": "editor", "event": event})).await;
    // A publisher's raw PUBLISH on any master, naming a room and a user too.
    let raw = json!({"type": "story", "n": 2, "room": "desk", "user_id": "editor"});
    cluster.publish(1, "app:news", &raw.to_string());
    a.publish(json!({"channel": "news", "room": "desk", "user_id": "editor", "event": {"type": "marker"}})).await;
    a.publish(json!({"channel": "sports", "event": {"type": "marker"}})).await;
    for client in &mut clients {
        let first = client.recv_event().await;
        assert_eq!((first["type"].as_str(), first["n"].as_u64()), (Some("story"), Some(1)), "{first}");
        let second = client.recv_event().await;
        assert_eq!(second, raw, "the raw message, as published");
        assert_eq!(client.recv_event().await["type"], "marker", "and each only once");
    }
    assert_eq!(outsider.recv_event().await["type"], "marker");

    // The registry: each node counts the cluster's nodes and connections.
    until("stats count three nodes and every connection", async || {
        let (_, stats) = a.get("/api/stats").await;
        stats["stats"]["cluster"]["node_count"] == 3 && stats["stats"]["cluster"]["total_connections"] == 9
    })
    .await;
}

/// History and resume on a cluster: whichever node publishes (raw or through the API), the
/// stream has one order; a client resumes on another node with everything it missed; a gap
/// beyond history is reported as `recovered: false`.
#[tokio::test]
async fn history_and_resume_across_nodes() {
    let cluster = RedisCluster::start_with_replicas().await;
    let (a, b, c) = three_nodes(&cluster, HISTORY).await;

    let mut watcher = c.connect("/ws?channels=feed&seq=1").await;
    let mut client = a.connect("/ws").await;
    let reply = client.request(json!({"type": "subscribe", "channels": ["feed"], "seq": true})).await;
    assert_eq!(reply["streams"]["feed"]["seq"], 0, "{reply}");
    b.publish(json!({"channel": "feed", "event": {"type": "f", "n": -1}})).await;
    let last = client.recv_event().await;
    assert_eq!(last["seq"], 1, "{last}");
    let position = json!({"seq": last["seq"], "epoch": last["epoch"]});
    assert_eq!(watcher.recv_event().await["seq"], 1);
    drop(client);

    // 40 events while it is away: raw PUBLISHes (the stream's owner sequences
    // each once), and publishes through node B's API.
    for n in 0..20 {
        cluster.publish(1, "app:feed", &json!({"type": "f", "n": n}).to_string());
    }
    assert_eq!(seqs(&events(&mut watcher, 20).await), (2..=21).collect::<Vec<_>>());
    for n in 20..40 {
        b.publish(json!({"channel": "feed", "event": {"type": "f", "n": n}})).await;
    }
    assert_eq!(seqs(&events(&mut watcher, 20).await), (22..=41).collect::<Vec<_>>());

    // Back on node C with its position: all 40, in order, then live.
    let mut back = c.connect("/ws").await;
    let reply = back.request(json!({"type": "subscribe", "channels": ["feed"], "recover": {"feed": position}})).await;
    assert_eq!(reply["streams"]["feed"]["recovered"], true, "{reply}");
    assert_eq!(reply["streams"]["feed"]["seq"], 41);
    let missed = events(&mut back, 40).await;
    assert_eq!(seqs(&missed), (2..=41).collect::<Vec<_>>());
    assert_eq!(missed.iter().map(|e| e["n"].as_i64().unwrap()).collect::<Vec<_>>(), (0..40).collect::<Vec<_>>());
    a.publish(json!({"channel": "feed", "event": {"type": "f", "n": 40}})).await;
    assert_eq!(back.recv_event().await["seq"], 42);
    assert_eq!(watcher.recv_event().await["seq"], 42);

    // More missed than history keeps: not recovered, and the position to go on from.
    let mut small = a.connect("/ws").await;
    small.request(json!({"type": "subscribe", "channels": ["small"], "seq": true})).await;
    b.publish(json!({"channel": "small", "event": {"type": "e", "n": 0}})).await;
    let first = small.recv_event().await;
    assert_eq!(first["seq"], 1);
    let epoch = first["epoch"].as_str().unwrap().to_string();
    drop(small);
    for n in 1..=20 {
        b.publish(json!({"channel": "small", "event": {"type": "e", "n": n}})).await;
    }
    let mut late = c.connect("/ws").await;
    let reply = late
        .request(json!({"type": "subscribe", "channels": ["small"], "recover": {"small": {"seq": 1, "epoch": epoch}}}))
        .await;
    assert_eq!(reply["streams"]["small"], json!({"seq": 21, "epoch": epoch, "recovered": false}));

    // A room stream whose events also name a channel: a member that also follows the channel
    // gets every event of the room once, in seq order, on another node than the publisher's.
    let mut member = b.connect("/ws?channels=plain").await;
    let joined = member.request(json!({"type": "join_room", "room": "order_1", "seq": true})).await;
    assert_eq!(joined["type"], "room_joined", "{joined}");
    let mut only_channel = c.connect("/ws?channels=plain").await;
    for n in 0..30 {
        let body = if n % 2 == 0 {
            json!({"room": "order_1", "channel": "plain", "event": {"type": "o", "n": n}})
        } else {
            json!({"room": "order_1", "event": {"type": "o", "n": n}})
        };
        [&a, &c][n % 2].publish(body).await;
    }
    let got = events(&mut member, 30).await;
    assert_eq!(seqs(&got), (1..=30).collect::<Vec<_>>());
    assert_eq!(got.iter().map(|e| e["n"].as_u64().unwrap()).collect::<Vec<_>>(), (0..30).collect::<Vec<_>>());
    let plain = events(&mut only_channel, 15).await;
    assert_eq!(
        plain.iter().map(|e| e["n"].as_u64().unwrap()).collect::<Vec<_>>(),
        (0..30).step_by(2).collect::<Vec<_>>()
    );
    a.publish(json!({"channel": "plain", "event": {"type": "marker"}})).await;
    assert_eq!(member.recv_event().await["type"], "marker", "nothing twice");
    assert_eq!(only_channel.recv_event().await["type"], "marker");
}

/// Presence, cells and upstream streams on a cluster, across nodes.
#[tokio::test]
async fn presence_cells_and_upstream_across_nodes() {
    let cluster = RedisCluster::start_with_replicas().await;
    let extra =
        "[presence]\nenabled = true\n[upstream]\ntypes = [\"ai_request\"]\nredis_stream = \"herald:requests\"\n";
    let (a, b, mut c) = three_nodes(&cluster, extra).await;

    // Presence: members, joins and leaves across nodes; a dead node's members go away.
    let mut alice = a.connect("/ws?user_id=alice").await;
    join(&mut alice, "shared", true).await;
    let mut carol = c.connect("/ws?user_id=carol").await;
    join(&mut carol, "shared", true).await;
    assert_eq!(next_of(&mut alice, &["user_joined"]).await["user_id"], "carol");
    until("node B sees alice and carol", async || {
        user_ids(&b.get("/api/rooms/shared/presence").await.1) == ["alice", "carol"]
    })
    .await;
    // Several rooms and the user in one mirror write: keys of several slots.
    let mut dave = a.connect("/ws?user_id=dave").await;
    for room in ["one", "two", "three"] {
        dave.send_json(json!({"type": "join_room", "room_id": room})).await;
    }
    for room in ["one", "two", "three"] {
        let path = format!("/api/rooms/{room}/presence");
        until(format_args!("node B sees dave in {room}"), async || user_ids(&b.get(&path).await.1) == ["dave"]).await;
    }
    let mut bob = b.connect("/ws?user_id=bob").await;
    let state = join(&mut bob, "shared", true).await;
    assert_eq!(user_ids(&state), ["alice", "bob", "carol"]);
    assert_eq!(next_of(&mut alice, &["user_joined"]).await["user_id"], "bob");

    // Cells: one version order for the whole cluster.
    let edit = json!({"type": "cell_update", "sheet_id": "s1", "cell_id": "A1", "value": "Hello", "version": 10});
    assert_eq!(reply_of(&mut alice, edit, &["cell_update_ack", "error"]).await["type"], "cell_update_ack");
    assert_eq!(next_of(&mut bob, &["cell_updated"]).await["value"], "Hello");
    let stale = json!({"type": "cell_update", "sheet_id": "s1", "cell_id": "A1", "value": "Bye", "version": 9});
    let conflict = reply_of(&mut bob, stale, &["cell_update_ack", "error"]).await;
    assert_eq!(conflict["code"], "VERSION_CONFLICT", "{conflict}");
    assert_eq!((conflict["current_value"].as_str(), conflict["current_version"].as_u64()), (Some("Hello"), Some(10)));
    let newer = json!({"type": "cell_update", "sheet_id": "s1", "cell_id": "A1", "value": "Bye", "version": 11});
    assert_eq!(reply_of(&mut bob, newer, &["cell_update_ack", "error"]).await["type"], "cell_update_ack");
    assert_eq!(next_of(&mut alice, &["cell_updated"]).await["value"], "Bye");

    // Node C dies without a word: after the node timeout the others hear carol is gone.
    c.signal("KILL");
    c.wait_exit().await;
    assert_eq!(next_of(&mut alice, &["user_left"]).await["user_id"], "carol");
    assert_eq!(next_of(&mut bob, &["user_left"]).await["user_id"], "carol");
    until("node B counts two nodes", async || b.get("/api/stats").await.1["stats"]["cluster"]["node_count"] == 2).await;

    // Upstream: a request is appended to a Redis stream of the cluster.
    let request = json!({"type": "ai_request", "request_id": "r1", "query": "q"});
    let ack = reply_of(&mut alice, request, &["request_accepted", "error"]).await;
    assert_eq!(ack["type"], "request_accepted", "{ack}");
    let id = ack["stream_id"].as_str().unwrap_or_else(|| panic!("{ack}"));
    let stored = cluster.cli_routed(&["XRANGE", "herald:requests", id, id]);
    assert!(stored.contains("\"request_id\":\"r1\""), "{stored}");
}

/// Rate and connection limits on a cluster: counted for the user across nodes.
#[tokio::test]
async fn limits_are_counted_across_nodes() {
    let cluster = RedisCluster::start_with_replicas().await;
    let extra = "[auth]\nmode = \"required\"\njwt_secret = \"cluster-test-secret\"\n\
                 [limits]\nmax_connections_per_user = 2\nmessages_per_minute = 6\nblock_duration = \"1m\"\n";
    let (a, b, _c) = three_nodes(&cluster, extra).await;
    // Limits, counted cluster-wide: a user's connections and messages, whichever node.
    // (Connections count per user for users a token proves.)
    let expires = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "busy", "exp": expires}),
        &jsonwebtoken::EncodingKey::from_secret(b"cluster-test-secret"),
    )
    .unwrap();
    let path = format!("/ws?token={token}");
    let mut on_a = a.connect(&path).await;
    let mut on_b = b.connect(&path).await;
    let third = RawClient::connect_with_headers(a.addr, &path, &[]).await.err().expect("a third connection is refused");
    assert!(third.starts_with("HTTP/1.1 429"), "{third}");
    let refused = crate::common::first_rate_limited(&mut on_a, &mut on_b).await;
    assert_eq!(refused, Some(6), "the seventh message of the user is the first refused");
    assert_eq!(on_a.request(json!({"type": "subscribe", "channels": ["after"]})).await["code"], "RATE_LIMIT_EXCEEDED");
}
