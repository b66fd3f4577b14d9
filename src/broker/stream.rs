//! Streams with history as the broker keeps them: a stream's limits, its state at one moment, and
//! the local broker's logs in memory. (The Redis broker keeps a stream as a Redis Stream.)

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::OwnedMutexGuard;

use crate::hub::event::StreamPos;

/// Limits of one stream's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Most events kept.
    pub size: usize,
    /// Oldest event kept.
    pub max_age: Duration,
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

/// A fresh random epoch.
pub fn new_epoch() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// How long a memory stream's position (epoch and seq) outlives its last event, like the meta
/// hash of a Redis stream: a client that was up to date can still resume after a quiet spell.
pub const POSITION_TTL: Duration = Duration::from_secs(24 * 3600);

/// One stream's log in memory.
pub struct MemStream {
    epoch: Arc<str>,
    top: u64,
    entries: VecDeque<(u64, Instant, Bytes)>,
    /// Last append or read, for [`MemoryStreams::sweep`].
    used: Instant,
}

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

    /// The stream now (trimmed first).
    pub fn snapshot(&mut self, settings: Settings) -> Snapshot {
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

/// The local broker's streams. Per-stream locks: the seq assignment and the hand-over to the
/// shards happen under the stream's lock, so the shards see a stream's events in seq order.
#[derive(Default)]
pub struct MemoryStreams {
    streams: Mutex<HashMap<Arc<str>, Arc<tokio::sync::Mutex<MemStream>>>>,
}

impl MemoryStreams {
    /// The stream's log, locked (created empty, with a new epoch, on first use).
    pub async fn lock(&self, stream: &Arc<str>) -> OwnedMutexGuard<MemStream> {
        let lock = self
            .streams
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

    /// Bounds the streams of a quiet node: drops events older than `max_age` from streams nobody
    /// publishes to (trimming otherwise happens only on append and read), and forgets streams
    /// unused for `max_age` (never published to) or `max_age` + [`POSITION_TTL`], and streams
    /// `settings_of` no longer knows. A forgotten stream starts a new epoch, so an old position is
    /// answered `recovered: false`. Returns how many streams were forgotten.
    pub fn sweep(&self, now: Instant, settings_of: impl Fn(&str) -> Option<Settings>) -> usize {
        let mut streams = self.streams.lock();
        let before = streams.len();
        streams.retain(|stream, log| {
            let Some(settings) = settings_of(stream) else { return false };
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
        before - streams.len()
    }

    /// How many streams are held.
    pub fn len(&self) -> usize {
        self.streams.lock().len()
    }

    /// Whether no stream is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn quiet_streams_are_trimmed_then_forgotten() {
        let settings = Settings { size: 100, max_age: Duration::from_secs(60) };
        let settings_of = |stream: &str| stream.starts_with("c:jobs:").then_some(settings);
        let streams = MemoryStreams::default();
        let (busy, read_only): (Arc<str>, Arc<str>) = (Arc::from("c:jobs:1"), Arc::from("c:jobs:2"));
        for i in 0..3 {
            streams.lock(&busy).await.append(&busy, Bytes::from(format!("{i}")), settings);
        }
        let _ = streams.lock(&read_only).await.snapshot(settings);
        let start = Instant::now();
        assert_eq!(streams.sweep(start, settings_of), 0);

        // After max_age: events dropped; the stream never published to is forgotten.
        assert_eq!(streams.sweep(start + Duration::from_secs(61), settings_of), 1);
        assert_eq!(streams.len(), 1);
        let log = streams.lock(&busy).await;
        assert_eq!((log.top, log.entries.len()), (3, 0), "the position stays, the events go");
        drop(log);

        // A stream in use is never forgotten, whatever its age.
        let held = streams.lock(&busy).await;
        assert_eq!(streams.sweep(start + POSITION_TTL + Duration::from_secs(120), settings_of), 0);
        drop(held);
        // After max_age + POSITION_TTL of quiet, the position goes too.
        assert_eq!(streams.sweep(start + POSITION_TTL + Duration::from_secs(120), settings_of), 1);
        assert!(streams.is_empty());
    }
}
