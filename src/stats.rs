//! Counters and rates: what `stats`, `/metrics` and the dashboard report.
//!
//! Hot-path counters are per shard and written only by their shard's thread, so counting a
//! delivery is a plain store to a cache line no other core writes. Readers sum the shards.
//! `report.rs` renders them, with the node's other figures, for the stats routes and
//! stream.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;

use crate::protocol::{ErrorCode, kinds};

/// Adds `n` to a counter that only the calling thread writes.
#[inline]
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Counts one error reply to a client, in total and under its code.
pub fn count_client_error(counters: &ShardCounters, code: ErrorCode) {
    bump(&counters.client_errors, 1);
    if let Some(counter) = counters.client_errors_by_code.get(code.index()) {
        bump(counter, 1);
    }
}

/// Counts one client message under its `type` label (`protocol::kinds::label`), and, when it was
/// refused (an error reply or the rate limits), as refused too.
pub fn count_message_type(counters: &ShardCounters, label: usize, refused: bool) {
    if let Some(counter) = counters.messages_by_type.get(label) {
        bump(counter, 1);
    }
    if refused && let Some(counter) = counters.refused_by_type.get(label) {
        bump(counter, 1);
    }
}

/// Which of [`ShardCounters::by_transport`]'s figures.
pub mod by_transport {
    /// Open connections (gauge).
    pub const OPEN: usize = 0;
    /// Connections accepted.
    pub const ACCEPTED: usize = 1;
    /// Slow-consumer disconnects.
    pub const SLOW: usize = 2;
}

/// Subtracts `n` from a gauge that only the calling thread writes.
#[inline]
pub fn drop_by(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).saturating_sub(n), Relaxed);
}

/// Counters of one shard. Aligned so two shards never share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardCounters {
    /// Open WebSocket connections (gauge), statistics streams excepted.
    pub connections: AtomicU64,
    /// Open statistics streams (`<mount>/stats`, the dashboard's own socket) (gauge): watching
    /// the node is not being a client of it, so they are not in `connections`.
    pub observers: AtomicU64,
    /// Connections ever accepted.
    pub connections_total: AtomicU64,
    /// Connections with an authenticated identity (gauge).
    pub authenticated: AtomicU64,
    /// Channel subscriptions summed over connections (gauge).
    pub channel_subscriptions: AtomicU64,
    /// Room memberships summed over connections (gauge).
    pub room_memberships: AtomicU64,
    /// Messages received from clients.
    pub messages_in: AtomicU64,
    /// Event deliveries to connections (one per recipient).
    pub deliveries: AtomicU64,
    /// Frames Herald wrote itself (replies, errors, heartbeats).
    pub replies: AtomicU64,
    /// Events processed by the shard's fan-out.
    pub fanouts: AtomicU64,
    /// Connections closed because their outbound queue filled.
    pub slow_consumer_disconnects: AtomicU64,
    /// Per transport (`Transport::index`: WebSocket, SSE, NDJSON): open connections (gauge),
    /// connections accepted, slow-consumer disconnects.
    pub by_transport: [[AtomicU64; 3]; 3],
    /// Connections closed for silence.
    pub idle_disconnects: AtomicU64,
    /// Write cycles entered: passes of fan-out under load after which the shard paced its
    /// writes (`websocket.write_pacing`, `hub::cycle`).
    pub write_cycles: AtomicU64,
    /// Connections closed for breaking the WebSocket protocol.
    pub protocol_errors: AtomicU64,
    /// Client messages refused with an error reply.
    pub client_errors: AtomicU64,
    /// The same, per error code (`ErrorCode::index`).
    pub client_errors_by_code: [AtomicU64; ErrorCode::ALL.len()],
    /// Client messages of the Herald protocol per `type` label (`protocol::kinds::label`).
    pub messages_by_type: [AtomicU64; kinds::LABELS],
    /// The same, refused (an error reply or the rate limits).
    pub refused_by_type: [AtomicU64; kinds::LABELS],
    /// Client messages refused by the rate limits.
    pub rate_limited: AtomicU64,
    /// Frames queued but not yet written, summed over connections (gauge).
    pub queued_frames: AtomicU64,
    /// Sum of publish-to-write latency in microseconds of events, and their count.
    pub fanout_latency_us: AtomicU64,
}

/// Counters written from many threads (API handlers, broker listeners).
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Events accepted for publishing on this node (API, Redis ingest, clients).
    pub publishes: AtomicU64,
    /// Publishes refused (bad input) or failed (broker down).
    pub publish_errors: AtomicU64,
    /// Upgrades refused (limits, auth, origin).
    pub refused_connections: AtomicU64,
    /// Messages received from the broker that could not be parsed.
    pub broker_malformed: AtomicU64,
    /// Messages made durable by the persistence writer.
    pub stored_messages: AtomicU64,
    /// Batches the persistence writer committed.
    pub stored_batches: AtomicU64,
    /// Messages waiting in the persistence writer's queue (gauge).
    pub writer_queue_depth: AtomicU64,
}

/// A per-second sample for rates and the dashboard chart.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    /// Unix time in milliseconds.
    pub t: u64,
    /// Open connections.
    pub connections: u64,
    /// Deliveries per second.
    pub deliveries_per_second: f64,
    /// Publishes per second.
    pub publishes_per_second: f64,
    /// Client messages per second.
    pub messages_in_per_second: f64,
    /// Frames waiting in outbound queues.
    pub queued_frames: u64,
    /// Slow-consumer disconnects so far.
    pub slow_consumer_disconnects: u64,
    /// Messages persisted per second.
    pub stored_per_second: f64,
    /// Messages persisted per second over the last 10 seconds (the dashboard profile's
    /// `current_rps`), so a burst stays visible for the window instead of one second.
    pub stored_per_second_10s: f64,
    /// Persistence writer queue depth.
    pub writer_queue_depth: u64,
}

/// Summed counters at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Totals {
    /// Open connections (statistics streams excepted).
    pub connections: u64,
    /// Open statistics streams.
    pub observers: u64,
    /// Connections ever accepted.
    pub connections_total: u64,
    /// Authenticated connections.
    pub authenticated: u64,
    /// Channel subscriptions.
    pub channel_subscriptions: u64,
    /// Room memberships.
    pub room_memberships: u64,
    /// Client messages received.
    pub messages_in: u64,
    /// Deliveries.
    pub deliveries: u64,
    /// Frames Herald wrote itself.
    pub replies: u64,
    /// Events fanned out (per shard).
    pub fanouts: u64,
    /// Publishes accepted.
    pub publishes: u64,
    /// Publishes refused or failed.
    pub publish_errors: u64,
    /// Slow-consumer disconnects.
    pub slow_consumer_disconnects: u64,
    /// Idle disconnects.
    pub idle_disconnects: u64,
    /// Write cycles entered (fan-out under load, paced).
    pub write_cycles: u64,
    /// Protocol-error disconnects.
    pub protocol_errors: u64,
    /// Refused client messages.
    pub client_errors: u64,
    /// The same, per error code (`ErrorCode::index`); for metrics, not the JSON statistics.
    #[serde(skip)]
    pub client_errors_by_code: [u64; ErrorCode::ALL.len()],
    /// Client messages per `type` label; for metrics.
    #[serde(skip)]
    pub messages_by_type: [u64; kinds::LABELS],
    /// The same, refused; for metrics.
    #[serde(skip)]
    pub refused_by_type: [u64; kinds::LABELS],
    /// Per transport: open, accepted, slow-consumer disconnects (see
    /// [`ShardCounters::by_transport`]); for metrics.
    #[serde(skip)]
    pub by_transport: [[u64; 3]; 3],
    /// Messages refused by the rate limits.
    pub rate_limited: u64,
    /// Refused upgrades.
    pub refused_connections: u64,
    /// Unparseable broker messages.
    pub broker_malformed: u64,
    /// Frames waiting in outbound queues.
    pub queued_frames: u64,
    /// Sum of fan-out latency in microseconds.
    pub fanout_latency_us: u64,
    /// Messages persisted.
    pub stored_messages: u64,
    /// Batches committed by the persistence writer.
    pub stored_batches: u64,
    /// Persistence writer queue depth.
    pub writer_queue_depth: u64,
}

const HISTORY: usize = 600;
/// Samples (seconds) averaged for the 10-second persistence rate.
const RATE_WINDOW: usize = 10;

/// All of a node's counters.
#[derive(Debug)]
pub struct Stats {
    /// One block per shard.
    pub shards: Box<[ShardCounters]>,
    /// Node-wide counters.
    pub node: NodeCounters,
    /// When the node started.
    pub started: Instant,
    /// The same, as wall-clock time.
    pub started_at: SystemTime,
    history: Mutex<History>,
    /// Connections opened per endpoint and transport.
    pub endpoints: EndpointCounts,
}

/// The `transport` labels of `herald_connections_opened_total`: Herald's transports
/// (`hub::event::Transport`, in its order) and the Pusher protocol.
pub const TRANSPORTS: [&str; 4] = ["websocket", "sse", "stream", "pusher"];

/// The index of `pusher` in [`TRANSPORTS`].
pub const PUSHER_TRANSPORT: usize = 3;

/// The `endpoint` label of the Pusher face (its paths carry an app key).
pub const PUSHER_ENDPOINT: &str = "/app/{key}";

/// Connections opened per configured endpoint path and transport: a closed set of labels
/// decided at start-up (a path outside it is counted as `other`). Written at connect time from
/// any shard, so these are shared atomics, never on the message path.
#[derive(Debug, Default)]
pub struct EndpointCounts {
    paths: Vec<Box<str>>,
    /// One row per path, then one for `other`.
    counts: Vec<[AtomicU64; TRANSPORTS.len()]>,
}

impl EndpointCounts {
    /// Counters for these endpoint paths.
    pub fn new(paths: impl IntoIterator<Item = String>) -> EndpointCounts {
        let mut paths: Vec<Box<str>> = paths.into_iter().map(String::into_boxed_str).collect();
        paths.sort();
        paths.dedup();
        let counts = (0..=paths.len()).map(|_| Default::default()).collect();
        EndpointCounts { paths, counts }
    }

    /// Counts a connection opened on `path` with transport `TRANSPORTS[transport]`.
    pub fn opened(&self, path: &str, transport: usize) {
        let row = self.paths.binary_search_by(|p| (**p).cmp(path)).unwrap_or(self.paths.len());
        if let Some(counter) = self.counts.get(row).and_then(|row| row.get(transport)) {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// `(endpoint, transport, count)` for every label pair.
    pub fn snapshot(&self) -> Vec<(&str, &'static str, u64)> {
        let names = self.paths.iter().map(|p| &**p).chain(["other"]);
        names
            .zip(&self.counts)
            .flat_map(|(path, row)| TRANSPORTS.iter().zip(row).map(move |(t, n)| (path, *t, n.load(Relaxed))))
            .collect()
    }
}

#[derive(Debug, Default)]
struct History {
    last: Option<(Instant, Totals)>,
    samples: VecDeque<Sample>,
}

impl Stats {
    /// Counters for `shards` shards.
    pub fn new(shards: usize) -> Self {
        Stats {
            shards: (0..shards).map(|_| ShardCounters::default()).collect(),
            node: NodeCounters::default(),
            started: Instant::now(),
            started_at: SystemTime::now(),
            history: Mutex::new(History::default()),
            endpoints: EndpointCounts::default(),
        }
    }

    /// The same, counting connections per endpoint under these paths.
    pub fn with_endpoints(mut self, paths: impl IntoIterator<Item = String>) -> Self {
        self.endpoints = EndpointCounts::new(paths);
        self
    }

    /// Sums every counter.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for s in self.shards.iter() {
            t.connections += s.connections.load(Relaxed);
            t.observers += s.observers.load(Relaxed);
            t.connections_total += s.connections_total.load(Relaxed);
            t.authenticated += s.authenticated.load(Relaxed);
            t.channel_subscriptions += s.channel_subscriptions.load(Relaxed);
            t.room_memberships += s.room_memberships.load(Relaxed);
            t.messages_in += s.messages_in.load(Relaxed);
            t.deliveries += s.deliveries.load(Relaxed);
            t.replies += s.replies.load(Relaxed);
            t.fanouts += s.fanouts.load(Relaxed);
            t.slow_consumer_disconnects += s.slow_consumer_disconnects.load(Relaxed);
            t.idle_disconnects += s.idle_disconnects.load(Relaxed);
            t.write_cycles += s.write_cycles.load(Relaxed);
            t.protocol_errors += s.protocol_errors.load(Relaxed);
            t.client_errors += s.client_errors.load(Relaxed);
            for (total, count) in t.client_errors_by_code.iter_mut().zip(&s.client_errors_by_code) {
                *total += count.load(Relaxed);
            }
            for (total, count) in t.messages_by_type.iter_mut().zip(&s.messages_by_type) {
                *total += count.load(Relaxed);
            }
            for (total, count) in t.refused_by_type.iter_mut().zip(&s.refused_by_type) {
                *total += count.load(Relaxed);
            }
            for (total, counts) in t.by_transport.iter_mut().zip(&s.by_transport) {
                for (total, count) in total.iter_mut().zip(counts) {
                    *total += count.load(Relaxed);
                }
            }
            t.rate_limited += s.rate_limited.load(Relaxed);
            t.queued_frames += s.queued_frames.load(Relaxed);
            t.fanout_latency_us += s.fanout_latency_us.load(Relaxed);
        }
        t.publishes = self.node.publishes.load(Relaxed);
        t.publish_errors = self.node.publish_errors.load(Relaxed);
        t.refused_connections = self.node.refused_connections.load(Relaxed);
        t.broker_malformed = self.node.broker_malformed.load(Relaxed);
        t.stored_messages = self.node.stored_messages.load(Relaxed);
        t.stored_batches = self.node.stored_batches.load(Relaxed);
        t.writer_queue_depth = self.node.writer_queue_depth.load(Relaxed);
        t
    }

    /// Takes a sample; called once a second by the node's control task.
    pub fn sample(&self) {
        let now = Instant::now();
        let totals = self.totals();
        let mut history = self.history.lock();
        if let Some((then, before)) = history.last {
            let secs = now.duration_since(then).as_secs_f64().max(1e-3);
            let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
            let sample = Sample {
                t: unix_millis(),
                connections: totals.connections,
                deliveries_per_second: rate(totals.deliveries, before.deliveries),
                publishes_per_second: rate(totals.publishes, before.publishes),
                messages_in_per_second: rate(totals.messages_in, before.messages_in),
                queued_frames: totals.queued_frames,
                slow_consumer_disconnects: totals.slow_consumer_disconnects,
                stored_per_second: rate(totals.stored_messages, before.stored_messages),
                stored_per_second_10s: 0.0,
                writer_queue_depth: totals.writer_queue_depth,
            };
            if history.samples.len() == HISTORY {
                history.samples.pop_front();
            }
            history.samples.push_back(sample);
            let window: Vec<f64> =
                history.samples.iter().rev().take(RATE_WINDOW).map(|s| s.stored_per_second).collect();
            let average = window.iter().sum::<f64>() / window.len() as f64;
            if let Some(last) = history.samples.back_mut() {
                last.stored_per_second_10s = (average * 100.0).round() / 100.0;
            }
        }
        history.last = Some((now, totals));
    }

    /// The most recent per-second sample.
    pub fn latest(&self) -> Sample {
        self.history.lock().samples.back().copied().unwrap_or_default()
    }

    /// Up to the last `n` samples, oldest first.
    pub fn recent(&self, n: usize) -> Vec<Sample> {
        let history = self.history.lock();
        let skip = history.samples.len().saturating_sub(n);
        history.samples.iter().skip(skip).copied().collect()
    }

    /// Seconds since start.
    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Logs the first occurrence of a recurring problem and then at most one summary per interval,
/// so a burst of bad input produces a handful of lines, not one per message.
#[derive(Debug, Default)]
pub struct BurstLog {
    window_start: Option<Instant>,
    suppressed: u64,
}

impl BurstLog {
    const WINDOW: Duration = Duration::from_secs(10);

    /// Logs `what` (with `detail`) unless a line was written in the current window.
    pub fn warn(&mut self, what: &str, detail: &str) {
        match self.window_start {
            Some(start) if start.elapsed() < Self::WINDOW => self.suppressed += 1,
            _ => {
                if self.suppressed > 0 {
                    tracing::warn!(suppressed = self.suppressed, "{what} (and more like it): {detail}");
                } else {
                    tracing::warn!("{what}: {detail}");
                }
                self.window_start = Some(Instant::now());
                self.suppressed = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ten_second_rate_outlives_a_burst() {
        let stats = Stats::new(1);
        stats.sample();
        stats.node.stored_messages.fetch_add(100, Relaxed);
        stats.sample();
        stats.sample();
        let latest = stats.latest();
        assert_eq!(latest.stored_per_second, 0.0, "the per-second rate is back to 0");
        assert!(latest.stored_per_second_10s > 0.0, "the 10-second window still shows the burst");
    }

    #[test]
    fn totals_sum_shards_and_samples_compute_rates() {
        let stats = Stats::new(2);
        bump(&stats.shards[0].deliveries, 10);
        bump(&stats.shards[1].deliveries, 5);
        assert_eq!(stats.totals().deliveries, 15);
        stats.sample();
        bump(&stats.shards[1].deliveries, 100);
        stats.sample();
        assert!(stats.latest().deliveries_per_second > 0.0);
        assert_eq!(stats.recent(10).len(), 1);
    }
}
