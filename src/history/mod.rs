//! Stream history: sequence numbers, a bounded recent log per channel or room, and recovery of
//! what a reconnecting client missed.
//!
//! A *stream* is a channel (`c:<name>`) or a room (`r:<name>`) that a `[[history]]` entry
//! covers. An event belongs to at most one stream: its channel's if that has history, else its
//! room's. Each event of a stream gets the next `seq` and the stream's `epoch`; the epoch
//! changes whenever the history is lost (memory history at every start of the process; Redis
//! history when its keys vanish), so a client holding an old position learns it cannot resume.
//!
//! With the local broker the log is kept here, in memory. With Redis it is a Redis Stream, and
//! the sequence assignment, the append and the publication to other nodes are one Lua script
//! (`broker::redis`), so any node can serve a resume and every node sees one order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::OwnedMutexGuard;

use crate::broker::{Broker, BrokerError, Published};
use crate::config::{HistoryConfig, NameKind};
use crate::hub::event::StreamPos;
use crate::hub::{Event, Target};
use crate::node::Node;
use crate::store::crypto::Keyring;

/// Limits of one stream's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Most events kept.
    pub size: usize,
    /// Oldest event kept.
    pub max_age: Duration,
}

struct Rule {
    kind: NameKind,
    pattern: String,
    settings: Settings,
}

/// A stream's history at one moment: its epoch, its last seq, and the events still kept
/// (oldest first).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The stream's epoch (empty when the stream never had an event).
    pub epoch: Arc<str>,
    /// The last seq given out.
    pub top: u64,
    /// `(seq, payload)`, oldest first.
    pub events: Vec<(u64, Bytes)>,
}

/// What a client that presented a position gets back.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// Whether every event after the position is in `events`.
    pub recovered: bool,
    /// The stream's current epoch.
    pub epoch: Arc<str>,
    /// The stream's current last seq.
    pub top: u64,
    /// The missed events, in order (empty unless `recovered`).
    pub events: Vec<(u64, Bytes)>,
}

impl Snapshot {
    /// The events after `since` (`(seq, epoch)`), if history still holds all of them.
    pub fn recover(self, since: Option<(u64, &str)>) -> Recovery {
        let Snapshot { epoch, top, events } = self;
        let Some((seq, client_epoch)) = since else {
            return Recovery { recovered: true, epoch, top, events: Vec::new() };
        };
        let same_epoch = *epoch == *client_epoch || (top == 0 && client_epoch.is_empty());
        if !same_epoch {
            return Recovery { recovered: false, epoch, top, events: Vec::new() };
        }
        if seq >= top {
            return Recovery { recovered: true, epoch, top, events: Vec::new() };
        }
        let missed: Vec<(u64, Bytes)> = events.into_iter().filter(|(s, _)| *s > seq).collect();
        let complete = missed.first().is_some_and(|(s, _)| *s == seq + 1)
            && missed.windows(2).all(|w| w[1].0 == w[0].0 + 1)
            && missed.last().is_some_and(|(s, _)| *s == top);
        if complete {
            Recovery { recovered: true, epoch, top, events: missed }
        } else {
            Recovery { recovered: false, epoch, top, events: Vec::new() }
        }
    }
}

/// One stream's log in memory.
pub struct MemStream {
    epoch: Arc<str>,
    top: u64,
    entries: VecDeque<(u64, Instant, Bytes)>,
    /// Last append or read, for [`History::sweep`].
    used: Instant,
}

/// How long a memory stream's position (epoch and seq) outlives its last event, like the meta
/// hash of a Redis stream: a client that was up to date can still resume after a quiet spell.
pub const POSITION_TTL: Duration = Duration::from_secs(24 * 3600);

/// How often [`run`] sweeps the memory streams.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

impl MemStream {
    fn trim(&mut self, settings: Settings, now: Instant) {
        while self.entries.len() > settings.size
            || self.entries.front().is_some_and(|(_, at, _)| now.duration_since(*at) > settings.max_age)
        {
            self.entries.pop_front();
        }
    }

    /// Appends an event, giving it the next seq.
    pub fn append(&mut self, stream: &Arc<str>, payload: Bytes, settings: Settings) -> StreamPos {
        self.top += 1;
        let now = Instant::now();
        self.used = now;
        self.entries.push_back((self.top, now, payload));
        self.trim(settings, now);
        StreamPos { stream: stream.clone(), seq: self.top, epoch: self.epoch.clone() }
    }

    fn snapshot(&mut self, settings: Settings) -> Snapshot {
        let now = Instant::now();
        self.used = now;
        self.trim(settings, now);
        Snapshot {
            epoch: self.epoch.clone(),
            top: self.top,
            events: self.entries.iter().map(|(s, _, p)| (*s, p.clone())).collect(),
        }
    }
}

/// The node's history: which streams have it, and (with the local broker) their logs.
pub struct History {
    rules: Vec<Rule>,
    /// Per-stream locks: the seq assignment and the hand-over to the shards happen under the
    /// stream's lock, so the shards see a stream's events in seq order.
    memory: Mutex<HashMap<Arc<str>, Arc<tokio::sync::Mutex<MemStream>>>>,
}

/// A fresh random epoch.
pub fn new_epoch() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// The stream name of a channel or a room.
pub fn stream_name(kind: NameKind, name: &str) -> String {
    match kind {
        NameKind::Room => format!("r:{name}"),
        _ => format!("c:{name}"),
    }
}

impl History {
    /// History as configured.
    pub fn new(config: &[HistoryConfig]) -> Self {
        let rules = config
            .iter()
            .filter_map(|h| {
                let settings = Settings { size: h.size, max_age: h.max_age };
                match (&h.channels, &h.rooms) {
                    (Some(p), _) => Some(Rule { kind: NameKind::Channel, pattern: p.clone(), settings }),
                    (None, Some(p)) => Some(Rule { kind: NameKind::Room, pattern: p.clone(), settings }),
                    (None, None) => None,
                }
            })
            .collect();
        History { rules, memory: Mutex::new(HashMap::new()) }
    }

    /// Whether any stream has history (when none does, publishing takes the plain path).
    pub fn is_enabled(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The settings of a channel's or room's history, if it has one (first matching entry). A
    /// Pusher app's channel is matched by the name its app knows: an entry covers that name in
    /// Herald's protocol and in every app, each its own stream.
    pub fn settings(&self, kind: NameKind, name: &str) -> Option<Settings> {
        let name = match kind {
            NameKind::Room => name,
            _ => crate::pusher::bare_channel(name).unwrap_or(name),
        };
        self.rules
            .iter()
            .find(|r| r.kind == kind && crate::config::stream::pattern_matches(&r.pattern, name))
            .map(|r| r.settings)
    }

    /// The settings of a stream given by its name (`c:…` / `r:…`).
    pub fn stream_settings(&self, stream: &str) -> Option<Settings> {
        match stream.split_once(':') {
            Some(("c", name)) => self.settings(NameKind::Channel, name),
            Some(("r", name)) => self.settings(NameKind::Room, name),
            _ => None,
        }
    }

    /// The stream an event with this target belongs to: its channel's, else its room's.
    pub fn stream_for(&self, target: &Target) -> Option<(Arc<str>, Settings)> {
        if !self.is_enabled() {
            return None;
        }
        if let Some(channel) = &target.channel
            && let Some(settings) = self.settings(NameKind::Channel, channel)
        {
            return Some((Arc::from(stream_name(NameKind::Channel, channel)), settings));
        }
        let room = target.room.as_ref()?;
        let settings = self.settings(NameKind::Room, room)?;
        Some((Arc::from(stream_name(NameKind::Room, room)), settings))
    }

    async fn lock_memory(&self, stream: &Arc<str>) -> OwnedMutexGuard<MemStream> {
        let lock = self
            .memory
            .lock()
            .entry(stream.clone())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(MemStream {
                    epoch: Arc::from(new_epoch()),
                    top: 0,
                    entries: VecDeque::new(),
                    used: Instant::now(),
                }))
            })
            .clone();
        lock.lock_owned().await
    }

    /// Bounds the memory streams of a quiet node: drops events older than `max_age` from streams
    /// nobody publishes to (trimming otherwise happens only on append and read), and forgets
    /// streams unused for `max_age` (never published to) or `max_age` + [`POSITION_TTL`]. A
    /// forgotten stream starts a new epoch, so an old position is answered `recovered: false`.
    /// Returns how many streams were forgotten.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut memory = self.memory.lock();
        let before = memory.len();
        memory.retain(|stream, log| {
            let Some(settings) = self.stream_settings(stream) else { return false };
            // Clones are made under the map's lock, which this holds: another holder is a
            // publish or read in progress.
            if Arc::strong_count(log) > 1 {
                return true;
            }
            let Ok(mut log) = log.try_lock() else { return true };
            log.trim(settings, now);
            let idle = now.saturating_duration_since(log.used);
            let keep_for = if log.top == 0 { settings.max_age } else { settings.max_age + POSITION_TTL };
            idle < keep_for
        });
        before - memory.len()
    }

    /// How many streams are held in memory.
    pub fn memory_streams(&self) -> usize {
        self.memory.lock().len()
    }

    /// The stream's history now, from memory or from Redis.
    pub async fn snapshot(&self, node: &Node, stream: &Arc<str>, settings: Settings) -> Result<Snapshot, BrokerError> {
        match &node.broker {
            Broker::Local => Ok(self.lock_memory(stream).await.snapshot(settings)),
            Broker::Redis(redis) => {
                let mut snapshot = redis.read_history(stream, settings).await?;
                let keyring = node.store.keyring();
                // A sealed entry that no configured key opens is left out: the gap makes the
                // recovery incomplete rather than silently short.
                snapshot.events.retain_mut(|(_, payload)| {
                    if !Keyring::is_sealed(payload) {
                        return true;
                    }
                    match keyring.open_text(payload) {
                        Ok(plain) => {
                            *payload = Bytes::from(plain);
                            true
                        }
                        Err(e) => {
                            tracing::warn!(stream = %stream, error = %e, "cannot open a sealed history entry");
                            false
                        }
                    }
                });
                Ok(snapshot)
            }
        }
    }
}

/// Sweeps the memory streams every minute until the node shuts down (with the local broker
/// and history configured; Redis trims and expires its own keys).
pub async fn run(node: Arc<Node>) {
    if !node.history.is_enabled() || !matches!(node.broker, Broker::Local) {
        return;
    }
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let forgotten = node.history.sweep(Instant::now());
                if forgotten > 0 {
                    tracing::debug!(forgotten, "forgot quiet history streams");
                }
            }
            _ = node.shutdown.cancelled() => return,
        }
    }
}

/// Publishes an event of a stream with history: gives it its seq, records it and hands it to
/// every node, in one step per stream so that every node sees the stream in seq order.
pub async fn publish(
    node: &Node,
    event: Arc<Event>,
    stream: Arc<str>,
    settings: Settings,
) -> Result<Published, BrokerError> {
    match &node.broker {
        Broker::Local => {
            let mut log = node.history.lock_memory(&stream).await;
            let pos = log.append(&stream, event.payload.clone(), settings);
            let _ = event.stream.set(pos);
            node.hub.dispatch(event).await;
            drop(log);
            Ok(Published::Everywhere)
        }
        Broker::Redis(redis) => {
            // Redis keeps the stream on disk (RDB/AOF): a message stored encrypted is kept there
            // only in its sealed form. Live delivery carries the plaintext, as it always has.
            let sealed = match event.sensitive.then(|| node.store.keyring().seal_text(&event.payload)) {
                None => None,
                Some(Ok(sealed)) => Some(sealed),
                Some(Err(e)) => {
                    // Never recorded in the clear: delivered here, unrecorded.
                    tracing::warn!(stream = %stream, error = %e, "cannot seal a sensitive event; not recorded");
                    node.hub.dispatch(event).await;
                    return Ok(Published::LocalOnly);
                }
            };
            let record = sealed.as_deref().map_or(&event.payload[..], str::as_bytes);
            match redis.append_and_publish(&node.id, &event, record, &stream, settings).await {
                Ok(()) => Ok(Published::Everywhere),
                Err(_) => {
                    // Without Redis there is no cluster-wide seq to give: local clients get the
                    // event without a position, as they would any event during an outage.
                    node.hub.dispatch(event).await;
                    Ok(Published::LocalOnly)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(top: u64, seqs: &[u64]) -> Snapshot {
        Snapshot {
            epoch: Arc::from("e1"),
            top,
            events: seqs.iter().map(|s| (*s, Bytes::from(format!("{{\"n\":{s}}}")))).collect(),
        }
    }

    #[test]
    fn recovers_only_complete_gaps_of_the_same_epoch() {
        let r = snapshot(10, &[6, 7, 8, 9, 10]).recover(Some((7, "e1")));
        assert!(r.recovered);
        assert_eq!(r.events.iter().map(|e| e.0).collect::<Vec<_>>(), vec![8, 9, 10]);
        assert!(!snapshot(10, &[6, 7, 8, 9, 10]).recover(Some((4, "e1"))).recovered);
        assert!(!snapshot(10, &[6, 7, 8, 9, 10]).recover(Some((7, "other"))).recovered);
        let up_to_date = snapshot(10, &[]).recover(Some((10, "e1")));
        assert!(up_to_date.recovered && up_to_date.events.is_empty());
    }

    #[test]
    fn memory_history_is_bounded_by_count() {
        let mut log = MemStream { epoch: Arc::from("e"), top: 0, entries: VecDeque::new(), used: Instant::now() };
        let settings = Settings { size: 3, max_age: Duration::from_secs(60) };
        let stream: Arc<str> = Arc::from("c:x");
        for i in 0..5 {
            log.append(&stream, Bytes::from(format!("{i}")), settings);
        }
        let snap = log.snapshot(settings);
        assert_eq!((snap.top, snap.events.iter().map(|e| e.0).collect::<Vec<_>>()), (5, vec![3, 4, 5]));
    }

    #[test]
    fn an_event_belongs_to_its_channel_first() {
        let history = History::new(&[
            HistoryConfig { channels: Some("jobs:*".into()), ..Default::default() },
            HistoryConfig { rooms: Some("order_*".into()), ..Default::default() },
        ]);
        let t = |c: Option<&str>, r: Option<&str>| Target {
            channel: c.map(Arc::from),
            room: r.map(Arc::from),
            ..Default::default()
        };
        assert_eq!(&*history.stream_for(&t(Some("jobs:1"), Some("order_1"))).unwrap().0, "c:jobs:1");
        assert_eq!(&*history.stream_for(&t(Some("other"), Some("order_1"))).unwrap().0, "r:order_1");
        assert!(history.stream_for(&t(Some("other"), None)).is_none());
        let pusher = history.stream_for(&t(Some("\u{1f}p1001\u{1f}jobs:1"), None)).unwrap().0;
        assert_eq!(&*pusher, "c:\u{1f}p1001\u{1f}jobs:1", "a Pusher app's channel is its own stream");
    }

    #[tokio::test]
    async fn quiet_streams_are_trimmed_then_forgotten() {
        let history = History::new(&[HistoryConfig {
            channels: Some("jobs:*".into()),
            size: 100,
            max_age: Duration::from_secs(60),
            ..Default::default()
        }]);
        let settings = history.settings(NameKind::Channel, "jobs:1").unwrap();
        let (busy, read_only): (Arc<str>, Arc<str>) = (Arc::from("c:jobs:1"), Arc::from("c:jobs:2"));
        for i in 0..3 {
            history.lock_memory(&busy).await.append(&busy, Bytes::from(format!("{i}")), settings);
        }
        let _ = history.lock_memory(&read_only).await.snapshot(settings);
        let start = Instant::now();
        assert_eq!(history.sweep(start), 0);

        // After max_age: events dropped; the stream never published to is forgotten.
        assert_eq!(history.sweep(start + Duration::from_secs(61)), 1);
        assert_eq!(history.memory_streams(), 1);
        let log = history.lock_memory(&busy).await;
        assert_eq!((log.top, log.entries.len()), (3, 0), "the position stays, the events go");
        drop(log);

        // A stream in use is never forgotten, whatever its age.
        let held = history.lock_memory(&busy).await;
        assert_eq!(history.sweep(start + POSITION_TTL + Duration::from_secs(120)), 0);
        drop(held);
        // After max_age + POSITION_TTL of quiet, the position goes too.
        assert_eq!(history.sweep(start + POSITION_TTL + Duration::from_secs(120)), 1);
        assert_eq!(history.memory_streams(), 0);
    }
}
