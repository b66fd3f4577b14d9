//! Redis Cluster failover and resharding under traffic: three Herald nodes on a cluster of three
//! masters with one replica each. A master is killed mid-traffic (its replica is promoted) and a
//! slot is migrated while events flow; Herald must not crash, must report the outage in
//! `/health`, must resume delivery, and must never lose an acknowledged event silently.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::common::redis::{RedisCluster, key_slot};
use crate::common::{Client, Herald, until};
use crate::redis::{live_nodes, wait_live_nodes};

/// The Herald configuration for `cluster`: every node of the cluster listed, so that a node can
/// rediscover the cluster whichever node died; presence on; history for `fo-*` channels.
fn config(cluster: &RedisCluster) -> String {
    let nodes: Vec<String> = cluster.nodes.iter().map(|n| format!("\"{}\"", n.url())).collect();
    format!(
        r#"
[presence]
enabled = true

[redis]
url = "{}"
mode = "cluster"
cluster_nodes = [{}]
prefixes = ["app"]
"#,
        cluster.url(),
        nodes.join(", ")
    )
}

/// The first `<base>-<i>` whose keys (as `keys_of` builds them) all live on master `master`.
fn name_on(cluster: &RedisCluster, master: usize, base: &str, keys_of: impl Fn(&str) -> Vec<String>) -> String {
    let owner = cluster.slot_owners();
    (0..20_000)
        .map(|i| format!("{base}-{i}"))
        .find(|name| keys_of(name).iter().all(|key| owner(key_slot(key)) == master))
        .expect("a name on that master")
}

/// A channel's sharded pub/sub channel and its stream's keys (see `src/broker/keys.rs`): one
/// hash tag, so one slot.
fn channel_keys(channel: &str) -> Vec<String> {
    vec![format!("herald:c:{{c:{channel}}}"), format!("herald:h:{{c:{channel}}}")]
}

/// A wait's description that, shown on failure, carries the nodes' logs (what Redis did to them).
struct WithLogs<'a>(&'a str, [&'a Herald; 3]);

impl std::fmt::Display for WithLogs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.0)?;
        for (name, node) in ["A", "B", "C"].iter().zip(self.1) {
            let log = node.log.lock();
            let interesting: Vec<&str> =
                log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("redis")).collect();
            writeln!(f, "--- node {name} ({} lines, warnings and redis):", log.lines().count())?;
            for line in interesting.iter().rev().take(40).rev() {
                writeln!(f, "{line}")?;
            }
        }
        Ok(())
    }
}

/// `/health`'s `health_status`.
async fn health_of(node: &Herald) -> String {
    node.get("/health").await.1["data"]["health_status"].as_str().unwrap_or_default().to_string()
}

/// Joins a room; returns the `room_state` that follows the acknowledgement.
async fn join(client: &mut Client, room: &str) -> Value {
    let ack = client.request(json!({"type": "join_room", "room_id": room})).await;
    assert_eq!(ack["type"], "room_joined", "{ack}");
    client.recv_type("room_state").await
}

fn user_ids(state: &Value) -> BTreeSet<String> {
    state["users"].as_array().into_iter().flatten().filter_map(|u| u["user_id"].as_str().map(String::from)).collect()
}

/// Publishes `{"type":"tick","n":n}` on `channel` through `node` until `stop`, at most `limit`
/// times; records each `n` with whether Herald acknowledged it as handed to every node (no
/// `local_only`). Traffic, not a timing: each publish waits for the previous answer.
fn traffic(
    node: &Herald,
    channel: &str,
    stop: Arc<AtomicBool>,
    limit: u64,
) -> tokio::task::JoinHandle<Vec<(u64, bool)>> {
    let (url, channel) = (node.url("/api/publish"), channel.to_string());
    let key = node.api_key.clone().expect("api key");
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut sent = Vec::new();
        // A steady stream, so that a failing Redis (answered at once) does not turn it into a flood.
        let mut pace = tokio::time::interval(std::time::Duration::from_millis(5));
        for n in 0..limit {
            pace.tick().await;
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let body = json!({"channel": channel, "event": {"type": "tick", "n": n}});
            let reply = http.post(&url).bearer_auth(&key).json(&body).send().await;
            let everywhere = match reply {
                Ok(response) if response.status().is_success() => {
                    let body: Value = response.json().await.unwrap_or_default();
                    body["local_only"] != true
                }
                _ => false,
            };
            sent.push((n, everywhere));
        }
        sent
    })
}

/// Reads a client's events until a `marker` with `n`, collecting the ticks on the way.
async fn ticks_until_marker(client: &mut Client, n: u64, ticks: &mut Vec<Value>) {
    loop {
        let event = client.recv_event().await;
        match event["type"].as_str() {
            Some("tick") => ticks.push(event),
            Some("marker") if event["n"] == n => return,
            _ => {}
        }
    }
}

#[tokio::test]
async fn the_test_computes_slots_as_redis_does() {
    let cluster = RedisCluster::start().await;
    for key in ["herald:nodes", "herald:c:fo-1", "herald:h:{c:feed}", "123456789", "{}x", "a{b}c"] {
        assert_eq!(key_slot(key), cluster.slot_of(key), "{key}");
    }
}

/// A master killed mid-traffic: its replica is promoted, no Herald node crashes, `/health` says
/// `degraded` during the failover and `healthy` after, `/api/stats` answers throughout, and
/// delivery on a channel of the killed master resumes, from every node; the node registry (on
/// the killed master too) has all three nodes again.
#[tokio::test]
async fn a_killed_master_is_failed_over_and_delivery_resumes() {
    let mut cluster = RedisCluster::start_with_replicas().await;
    // The registry and the channel on the master that dies.
    let victim = cluster.master_of(key_slot("herald:nodes"));
    let replica = cluster.replica_of(victim);
    let channel = name_on(&cluster, victim, "fo-ch", channel_keys);
    let [a, b, c] = live_nodes(&config(&cluster)).await;
    let mut subscriber = b.connect(&format!("/ws?channels={channel}")).await;

    // Traffic flows through node A to node B's subscriber.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = traffic(&a, &channel, stop.clone(), 20_000);
    let mut ticks = vec![subscriber.recv_type("tick").await];

    cluster.kill(victim);

    // Node B's link to the dead master is gone: degraded, and its statistics still answer.
    until(WithLogs("node B reports degraded health", [&a, &b, &c]), async || health_of(&b).await == "degraded").await;
    let (status, stats) = b.get("/api/stats").await;
    assert_eq!(status, 200, "{stats}");

    cluster.wait_promoted(replica).await;
    for node in [&a, &b, &c] {
        let what = format!("node on {} is healthy again", node.addr);
        until(WithLogs(&what, [&a, &b, &c]), async || health_of(node).await == "healthy").await;
    }

    // Delivery resumes: an event published after the failover reaches node B's subscriber, from
    // every node (node B's own publish goes through Redis too).
    for (n, node) in [&a, &b, &c].into_iter().enumerate() {
        node.publish(json!({"channel": channel, "event": {"type": "marker", "n": n}})).await;
        ticks_until_marker(&mut subscriber, n as u64, &mut ticks).await;
    }
    stop.store(true, Ordering::Relaxed);
    let sent = publisher.await.expect("publisher");
    assert!(sent.iter().any(|&(_, everywhere)| everywhere), "some ticks were handed to every node");
    eprintln!(
        "failover without history: {} ticks sent, {} acknowledged, {} delivered",
        sent.len(),
        sent.iter().filter(|(_, e)| *e).count(),
        ticks.len()
    );

    // Nobody crashed, and the registry has all three nodes again.
    for node in [&a, &b, &c] {
        assert_eq!(node.get("/livez").await.0, 200);
        wait_live_nodes(node, 3).await;
        let log = node.log.lock().clone();
        assert!(!log.contains("panicked"), "a node panicked:\n{log}");
    }
}

/// Presence and the node registry survive a failover and a resharding: a room's members (their
/// records on the killed master, then on a slot moved to another master) stay members, seen from
/// every node, and nobody is announced as gone.
#[tokio::test]
async fn presence_and_the_registry_survive_a_failover_and_a_migration() {
    let mut cluster = RedisCluster::start_with_replicas().await;
    let victim = cluster.master_of(key_slot("herald:nodes"));
    let replica = cluster.replica_of(victim);
    let room = name_on(&cluster, victim, "fo-room", |r| vec![format!("herald:pr:room:{r}")]);
    let [a, b, c] = live_nodes(&config(&cluster)).await;
    let mut alice = c.connect("/ws?user_id=alice").await;
    join(&mut alice, &room).await;
    until(WithLogs("node A sees alice in the room", [&a, &b, &c]), async || {
        user_ids(&a.get(&format!("/api/rooms/{room}/presence")).await.1).contains("alice")
    })
    .await;
    let mut bob = a.connect("/ws?user_id=bob").await;
    let state = join(&mut bob, &room).await;
    assert_eq!(user_ids(&state), BTreeSet::from(["alice".to_string(), "bob".to_string()]));

    cluster.kill(victim);
    cluster.wait_promoted(replica).await;
    for node in [&a, &b, &c] {
        let what = format!("node on {} is healthy again", node.addr);
        until(WithLogs(&what, [&a, &b, &c]), async || health_of(node).await == "healthy").await;
        wait_live_nodes(node, 3).await;
    }
    until(WithLogs("the room still has alice and bob, seen from node B", [&a, &b, &c]), async || {
        user_ids(&b.get(&format!("/api/rooms/{room}/presence")).await.1)
            == BTreeSet::from(["alice".to_string(), "bob".to_string()])
    })
    .await;
    // The room's presence moves to another master: still both members, seen from node C.
    let from = cluster.master_of(key_slot(&format!("herald:pr:room:{room}")));
    let to =
        (0..cluster.nodes.len()).find(|&i| i != from && cluster.nodes[i].is_running() && cluster.nodes[i].is_master());
    let moved =
        migrate(&cluster, &[key_slot(&format!("herald:pr:room:{room}"))], from, to.expect("another master")).await;
    assert!(moved >= 1, "the room's presence moved");
    until(WithLogs("the room still has alice and bob after the move, seen from node C", [&a, &b, &c]), async || {
        user_ids(&c.get(&format!("/api/rooms/{room}/presence")).await.1)
            == BTreeSet::from(["alice".to_string(), "bob".to_string()])
    })
    .await;
    // Nobody was announced as gone: the next thing bob hears in the room is the marker.
    let (status, _) = a.post(&format!("/api/rooms/{room}/broadcast"), json!({"type": "marker", "n": 3})).await;
    assert_eq!(status, 200);
    loop {
        let event = bob.recv_event().await;
        assert_ne!(event["type"], "user_left", "alice never left: {event}");
        if event["type"] == "marker" {
            break;
        }
    }
}

/// Streams with history for the accounting tests.
const HISTORY: &str = "\n[[history]]\nchannels = \"fo-*\"\nsize = 100000\nmax_age = \"10m\"\n";

/// What a client following a stream with positions saw live: each event's seq, epoch and `n`.
#[derive(Default)]
struct Followed {
    events: Vec<(u64, String, Value)>,
}

impl Followed {
    fn push(&mut self, event: &Value) {
        let seq = event["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {event}"));
        let epoch = event["epoch"].as_str().unwrap_or_default().to_string();
        self.events.push((seq, epoch, event.clone()));
    }
}

/// Reads a following client's events until the marker `n`, recording every event's position.
async fn follow_until_marker(client: &mut Client, n: u64, followed: &mut Followed) {
    loop {
        let event = client.recv_event().await;
        if event["type"] != "tick" && event["type"] != "marker" {
            continue;
        }
        followed.push(&event);
        if event["type"] == "marker" && event["n"] == n {
            return;
        }
    }
}

/// Reads a following client's events until `n` more ticks arrived, recording every position.
async fn follow_ticks(client: &mut Client, n: usize, followed: &mut Followed) {
    let mut seen = 0;
    while seen < n {
        let event = client.recv_event().await;
        if event["type"] == "tick" || event["type"] == "marker" {
            seen += usize::from(event["type"] == "tick");
            followed.push(&event);
        }
    }
}

/// Checks the promise for a stream with history: every tick acknowledged as handed to every
/// node (`sent`) reached the client live, or is replayed by a resume from the position before a
/// jump in seq, or lies in a gap Herald reports (`recovered: false`, a changed epoch). Returns how
/// many ticks were replayed and how many fell into reported gaps.
async fn account(client: &mut Client, channel: &str, followed: &Followed, sent: &[(u64, bool)]) -> (usize, u64) {
    let mut delivered: BTreeSet<u64> = followed
        .events
        .iter()
        .filter(|(_, _, e)| e["type"] == "tick")
        .filter_map(|(_, _, e)| e["n"].as_u64())
        .collect();
    let live = delivered.len();
    let mut reported = 0u64;
    for pair in followed.events.windows(2) {
        let ((seq, epoch, _), (next, next_epoch, _)) = (&pair[0], &pair[1]);
        if epoch != next_epoch {
            // A new epoch: the old position must be reported unrecoverable, never half-served.
            let reply = client
                .request(json!({"type": "history", "channel": channel, "since": {"seq": seq, "epoch": epoch}}))
                .await;
            assert_eq!(reply["recovered"], false, "an old epoch cannot be recovered: {reply}");
            reported += u64::MAX / 4;
            continue;
        }
        assert!(next > seq, "seq went backwards or repeated within one epoch: {seq} then {next}");
        if next - seq == 1 {
            continue;
        }
        // A jump: resume from the last position seen, as a client does.
        let reply =
            client.request(json!({"type": "history", "channel": channel, "since": {"seq": seq, "epoch": epoch}})).await;
        assert_eq!(reply["type"], "history", "{reply}");
        if reply["recovered"] == true {
            for event in reply["events"].as_array().into_iter().flatten() {
                if let (Some(s), Some(n)) = (event["seq"].as_u64(), event["n"].as_u64())
                    && s > *seq
                    && s < *next
                    && event["type"] == "tick"
                {
                    delivered.insert(n);
                }
            }
        } else {
            reported += next - seq - 1;
        }
    }
    let missing: Vec<u64> =
        sent.iter().filter(|(n, everywhere)| *everywhere && !delivered.contains(n)).map(|(n, _)| *n).collect();
    assert!(
        missing.len() as u64 <= reported,
        "acknowledged ticks neither delivered, replayed nor inside a reported gap: {missing:?} \
         (reported gaps cover {reported})"
    );
    (delivered.len() - live, reported)
}

/// The promise with history: a master killed mid-traffic loses no acknowledged event silently.
/// What the subscriber missed while the cluster failed over is replayed from the stream's
/// history (kept on the promoted replica) or reported as a gap.
#[tokio::test]
async fn what_a_failover_misses_is_replayed_or_reported_never_silently_lost() {
    let mut cluster = RedisCluster::start_with_replicas().await;
    // The stream's keys and its pub/sub channel on the master that dies.
    let victim = cluster.master_of(key_slot("herald:nodes"));
    let channel = name_on(&cluster, victim, "fo-stream", channel_keys);
    let replica = cluster.replica_of(victim);
    let [a, b, _c] = live_nodes(&(config(&cluster) + HISTORY)).await;

    let mut subscriber = b.connect("/ws").await;
    let reply = subscriber.request(json!({"type": "subscribe", "channels": [channel], "seq": true})).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = traffic(&a, &channel, stop.clone(), 20_000);
    let mut followed = Followed::default();
    follow_ticks(&mut subscriber, 20, &mut followed).await;

    cluster.kill(victim);
    until("node A reports degraded health", async || health_of(&a).await == "degraded").await;
    cluster.wait_promoted(replica).await;
    for node in [&a, &b] {
        until(format_args!("node on {} is healthy again", node.addr), async || health_of(node).await == "healthy")
            .await;
    }
    a.publish(json!({"channel": channel, "event": {"type": "marker", "n": 1}})).await;
    follow_until_marker(&mut subscriber, 1, &mut followed).await;
    follow_ticks(&mut subscriber, 20, &mut followed).await;
    stop.store(true, Ordering::Relaxed);
    let sent = publisher.await.expect("publisher");
    a.publish(json!({"channel": channel, "event": {"type": "marker", "n": 2}})).await;
    follow_until_marker(&mut subscriber, 2, &mut followed).await;

    let (replayed, reported) = account(&mut subscriber, &channel, &followed, &sent).await;
    eprintln!(
        "failover: {} ticks sent, {} acknowledged, {} seen live, {replayed} replayed, gaps reported: {reported}",
        sent.len(),
        sent.iter().filter(|(_, e)| *e).count(),
        followed.events.len()
    );
}

/// Moves every slot in `slots` from master `from` to master `to`; returns how many keys moved.
async fn migrate(cluster: &RedisCluster, slots: &[u16], from: usize, to: usize) -> usize {
    for &slot in slots {
        cluster.begin_migration(slot, from, to);
    }
    let moved = slots.iter().map(|&slot| cluster.move_keys(slot, from, to)).sum();
    for &slot in slots {
        cluster.finish_migration(slot, from, to);
    }
    for &slot in slots {
        cluster.wait_slot_owner(slot, to).await;
    }
    moved
}

/// A slot migrated while events flow (`MIGRATING`/`IMPORTING`, `MIGRATE`, `SETSLOT NODE`):
/// Herald follows the move (`MOVED`/`ASK` answered by the cluster client) and subscribes again
/// on the new master when Redis drops the slot's sharded subscriptions (`SUNSUBSCRIBE`), so
/// delivery keeps working from every node, on the moved channel and on others.
#[tokio::test]
async fn a_slot_migrated_while_events_flow_keeps_delivery() {
    let cluster = RedisCluster::start().await;
    // The channel on a master that gives its slot away; the registry stays where it is.
    let from = (cluster.master_of(key_slot("herald:nodes")) + 1) % 3;
    let to = (from + 1) % 3;
    let channel = name_on(&cluster, from, "fo-mig", channel_keys);
    let slot = key_slot(&channel_keys(&channel)[0]);
    let [a, b, c] = live_nodes(&config(&cluster)).await;
    let mut subscriber = b.connect(&format!("/ws?channels={channel}")).await;

    let stop = Arc::new(AtomicBool::new(false));
    let publisher = traffic(&a, &channel, stop.clone(), 20_000);
    let mut ticks = vec![subscriber.recv_type("tick").await];

    cluster.begin_migration(slot, from, to);
    c.publish(json!({"channel": channel, "event": {"type": "marker", "n": 0}})).await;
    ticks_until_marker(&mut subscriber, 0, &mut ticks).await;
    cluster.move_keys(slot, from, to);
    cluster.finish_migration(slot, from, to);
    cluster.wait_slot_owner(slot, to).await;

    // Delivery keeps working from every node after the move.
    for (n, node) in [&a, &b, &c].into_iter().enumerate() {
        let n = n as u64 + 1;
        node.publish(json!({"channel": channel, "event": {"type": "marker", "n": n}})).await;
        let what = format!("marker {n} after the move");
        tokio::time::timeout(
            crate::common::WAIT - std::time::Duration::from_secs(1),
            ticks_until_marker(&mut subscriber, n, &mut ticks),
        )
        .await
        .unwrap_or_else(|_| panic!("{}", WithLogs(&what, [&a, &b, &c])));
    }
    stop.store(true, Ordering::Relaxed);
    let sent = publisher.await.expect("publisher");
    eprintln!(
        "migration without history: {} ticks sent, {} acknowledged, {} delivered",
        sent.len(),
        sent.iter().filter(|(_, e)| *e).count(),
        ticks.len()
    );
    for node in [&a, &b, &c] {
        assert_eq!(health_of(node).await, "healthy", "a migration is no outage");
    }
}

/// The promise with history through a resharding: every acknowledged event of a stream whose
/// keys and channel move to another master while events flow is delivered live or replayed; a
/// migration is no outage, so no gap may be reported.
#[tokio::test]
async fn a_slot_migrated_while_events_flow_loses_nothing_with_history() {
    let cluster = RedisCluster::start().await;
    let from = (cluster.master_of(key_slot("herald:nodes")) + 1) % 3;
    let to = (from + 1) % 3;
    let channel = name_on(&cluster, from, "fo-mig", channel_keys);
    let mut slots: Vec<u16> = channel_keys(&channel).iter().map(|k| key_slot(k)).collect();
    slots.sort_unstable();
    slots.dedup();
    let [a, b, c] = live_nodes(&(config(&cluster) + HISTORY)).await;
    let mut subscriber = b.connect("/ws").await;
    let reply = subscriber.request(json!({"type": "subscribe", "channels": [channel], "seq": true})).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");

    let stop = Arc::new(AtomicBool::new(false));
    let publisher = traffic(&a, &channel, stop.clone(), 20_000);
    let mut followed = Followed::default();
    followed.push(&subscriber.recv_type("tick").await);
    let moved = migrate(&cluster, &slots, from, to).await;
    assert!(moved >= 2, "the stream's keys moved ({moved})");
    for (n, node) in [&a, &b, &c].into_iter().enumerate() {
        node.publish(json!({"channel": channel, "event": {"type": "marker", "n": n}})).await;
        follow_until_marker(&mut subscriber, n as u64, &mut followed).await;
    }
    stop.store(true, Ordering::Relaxed);
    let sent = publisher.await.expect("publisher");
    a.publish(json!({"channel": channel, "event": {"type": "marker", "n": 9}})).await;
    follow_until_marker(&mut subscriber, 9, &mut followed).await;
    let (replayed, reported) = account(&mut subscriber, &channel, &followed, &sent).await;
    assert_eq!(reported, 0, "a migration is no outage: nothing may be reported lost");
    eprintln!(
        "migration with history: {} ticks sent, {} seen live, {replayed} replayed",
        sent.len(),
        followed.events.len()
    );
}
