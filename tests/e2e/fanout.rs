//! Fan-out under load: the write cycle (`hub/cycle.rs`) spreads a shard's writes across its hold
//! without losing, repeating or reordering anything, and answers commands meanwhile.

use serde_json::{Value, json};

use crate::common::{Client, Herald};

/// A hold long enough that every publish below lands inside a cycle: 1 ms per connection
/// written, so the 20 connections of each shard get a 20 ms hold cut into 10 slices.
const PACED: &str = r#"
[websocket]
write_pacing = "1ms"
max_write_delay = "1s"
"#;

const SUBSCRIBERS: usize = 40;
const BATCHES: usize = 5;
const PER_BATCH: usize = 20;

/// Reads `client`'s events until the one numbered `last`, returning the numbers seen and
/// whether a pong came in between.
async fn numbers_until(client: &mut Client, last: u64) -> (Vec<u64>, bool) {
    let (mut seen, mut ponged) = (Vec::new(), false);
    loop {
        let message: Value = client.recv_event().await;
        if message["type"] == "pong" {
            ponged = true;
            continue;
        }
        assert_eq!(message["type"], "burst", "unexpected message {message}");
        let n = message["n"].as_u64().unwrap_or_else(|| panic!("no number in {message}"));
        seen.push(n);
        if n == last {
            return (seen, ponged);
        }
    }
}

#[tokio::test]
async fn a_paced_burst_reaches_every_subscriber_once_in_order_and_commands_are_answered_meanwhile() {
    let herald = Herald::start(PACED).await;
    let mut subscribers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        subscribers.push(herald.connect("/ws?channels=burst").await);
    }

    // Batches fan out as one inbox message per shard, so the first one starts a cycle and the
    // rest arrive while it runs. A ping sent meanwhile is answered among the events.
    for batch in 0..BATCHES {
        let items: Vec<Value> = (0..PER_BATCH)
            .map(|i| json!({"channel": "burst", "event": {"type": "burst", "n": batch * PER_BATCH + i}}))
            .collect();
        let (status, reply) = herald.post("/api/publish/batch", json!({"items": items})).await;
        assert_eq!(status, 200, "batch publish failed: {reply}");
        if batch == 0 {
            subscribers[0].send_json(json!({"type": "ping"})).await;
        }
    }
    let last = (BATCHES * PER_BATCH - 1) as u64;
    let expected: Vec<u64> = (0..=last).collect();
    for (i, subscriber) in subscribers.iter_mut().enumerate() {
        let (seen, ponged) = numbers_until(subscriber, last).await;
        assert_eq!(seen, expected, "subscriber {i} saw the burst out of order, twice or in part");
        if i == 0 && !ponged {
            // The ping may have been read after the whole burst was queued: its answer follows.
            assert_eq!(
                subscriber.recv_event().await["type"],
                "pong",
                "the ping sent during the burst was not answered"
            );
        }
    }
    herald.wait_for_total("write_cycles", |n| n >= 1).await;
    let (_, metrics) = herald.get_text("/metrics").await;
    assert!(metrics.contains("herald_write_cycles_total"), "no write-cycle metric in:\n{metrics}");

    // Once the burst is over, a lone event still reaches everyone, once.
    herald.publish(json!({"channel": "burst", "event": {"type": "burst", "n": last + 1}})).await;
    for subscriber in &mut subscribers {
        assert_eq!(numbers_until(subscriber, last + 1).await.0, [last + 1]);
    }
}
