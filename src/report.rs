//! What the node reports about itself: the JSON of `GET <mount>/stats` and `/api/stats`, and the
//! frames of the live stream behind the WebSocket upgrade of `<mount>/stats`. The HTTP routes
//! (`api::stats`), the stats endpoint's plain GET (`gateway::upgrade`) and its stream
//! (`session::connect`) all read it here. It sits beside `node.rs`, whose parts it reads; the
//! counters themselves are `stats.rs`'s, below every part that counts.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::node::Node;
use crate::protocol::outbound;

/// Figures shared by every stats shape.
pub fn figures(node: &Node, clients: Option<usize>) -> Value {
    let totals = node.stats.totals();
    let latest = node.stats.latest();
    let broker = node.broker.status();
    let (channels, rooms, users) = node.hub.interest_counts();
    let redis_connected = broker.kind != "local" && broker.connected;
    json!({
        "connected_clients": totals.connections,
        "total_connections": totals.connections,
        "clients": clients.unwrap_or(totals.connections as usize),
        "authenticated_connections": totals.authenticated,
        "unique_users": users,
        "total_channel_subscriptions": totals.channel_subscriptions,
        "total_room_subscriptions": totals.room_memberships,
        "channels_active": channels,
        "rooms_active": rooms,
        "messages_per_second": latest.deliveries_per_second,
        "deliveries_per_second": latest.deliveries_per_second,
        "publishes_per_second": latest.publishes_per_second,
        "messages_in_per_second": latest.messages_in_per_second,
        "uptime_seconds": node.stats.uptime_seconds(),
        "redis_connected": redis_connected,
        "broker": broker,
        "database": {
            "kind": node.store.kind(),
            "connected": node.writer.is_healthy(),
            "queue_depth": node.writer.queue_depth(),
            "stored_messages": totals.stored_messages,
            "batches": totals.stored_batches,
        },
        "node": &*node.id,
        "totals": totals,
    })
}

/// The whole stats object: the fields the compatibility profiles' dashboards read, at the top
/// level and under `stats`, with the Redis broker's state and the cluster's figures.
pub async fn snapshot(node: &Node) -> Value {
    let distinct = node.hub.client_ids().await.into_iter().collect::<HashSet<_>>().len();
    let mut figures = figures(node, Some(distinct));
    if let (Some(redis), Some(map)) = (node.broker.redis(), figures.as_object_mut()) {
        map.insert("redis".into(), redis.describe());
        map.insert("cluster".into(), cluster(redis).await);
    }
    let mut body = json!({ "success": true, "stats": figures.clone(), "timestamp": outbound::now() });
    if let (Some(body), Value::Object(top)) = (body.as_object_mut(), figures) {
        for (k, v) in top {
            body.entry(k).or_insert(v);
        }
    }
    body
}

/// Every live node's figures and their sums, from the registry in Redis.
async fn cluster(redis: &crate::broker::redis::RedisBroker) -> Value {
    let Ok(nodes) = redis.cluster_nodes().await else { return Value::Null };
    let sum = |field: &str| nodes.iter().filter_map(|n| n[field].as_u64()).sum::<u64>();
    json!({
        "node_count": nodes.len(),
        "total_connections": sum("connections"),
        "authenticated_connections": sum("authenticated_connections"),
        "total_channel_subscriptions": sum("channel_subscriptions"),
        "total_room_subscriptions": sum("room_memberships"),
        "deliveries": sum("deliveries"),
        "publishes": sum("publishes"),
        "messages_per_second": nodes.iter().filter_map(|n| n["deliveries_per_second"].as_f64()).sum::<f64>(),
        "nodes": nodes,
    })
}

/// The object pushed on the stats stream: the dashboard profile's fields, from Herald's own
/// persistence writer, plus the node's live figures.
pub fn stream_frame(node: &Node) -> Value {
    let totals = node.stats.totals();
    let latest = node.stats.latest();
    let avg_batch = if totals.stored_batches == 0 {
        0.0
    } else {
        (totals.stored_messages as f64 / totals.stored_batches as f64 * 10.0).round() / 10.0
    };
    let mut frame = json!({
        "type": "stats",
        "total_messages": totals.stored_messages,
        "current_rps": latest.stored_per_second_10s,
        "messages_per_second": latest.stored_per_second_10s,
        "queue_depth": totals.writer_queue_depth,
        "queue_length": totals.writer_queue_depth,
        "total_batches": totals.stored_batches,
        "avg_batch_size": avg_batch,
        "timestamp": outbound::now(),
    });
    if let (Some(frame), Value::Object(extra)) = (frame.as_object_mut(), figures(node, None)) {
        for (k, v) in extra {
            frame.entry(k).or_insert(v);
        }
    }
    frame
}
