//! Streams: sequence numbers and positions, a bounded recent log per channel or room, and
//! recovery of what a reconnecting client missed (resume). (Chat history, stored messages, is
//! `store` and `api::history`.)
//!
//! A *stream* is a channel (`c:<name>`) or a room (`r:<name>`) that a `[[history]]` entry
//! covers. An event belongs to at most one stream: its channel's if that has history, else its
//! room's. Each event of a stream gets the next `seq` and the stream's `epoch`; the epoch
//! changes whenever the history is lost (memory history at every start of the process; Redis
//! history when its keys vanish), so a client holding an old position learns it cannot resume.
//!
//! This module decides which streams have history and how a position is recovered; the broker
//! keeps the logs (`broker::stream`): the local broker in memory, Redis as a Redis Stream whose
//! sequence assignment, append and publication to other nodes are one Lua script, so any node
//! can serve a resume and every node sees one order. Nothing here knows which broker runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use tokio_util::sync::CancellationToken;

pub use crate::broker::stream::{Settings, Snapshot};
use crate::broker::{Broker, BrokerError, Published};
use crate::config::{HistoryConfig, NameKind};
use crate::hub::{Event, Hub, Target};
use crate::store::crypto::Keyring;

/// How often [`run`] sweeps the streams held in memory.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

struct Rule {
    kind: NameKind,
    pattern: String,
    settings: Settings,
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

/// The node's history: which streams have it.
pub struct History {
    rules: Vec<Rule>,
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
        History { rules }
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
            _ => crate::protocol::bare_channel(name).unwrap_or(name),
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

    /// The stream's history now, from whichever broker keeps it (`keyring` opens sensitive
    /// events).
    pub async fn snapshot(
        &self,
        broker: &Broker,
        keyring: &Keyring,
        stream: &Arc<str>,
        settings: Settings,
    ) -> Result<Snapshot, BrokerError> {
        broker.stream_snapshot(stream, settings, keyring).await
    }

    /// Sweeps the streams `broker` holds in memory every minute until `shutdown` (when history
    /// is configured; a broker that expires its own streams has nothing to sweep).
    pub async fn run(&self, broker: &Broker, shutdown: &CancellationToken) {
        if !self.is_enabled() {
            return;
        }
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let forgotten = broker.sweep_streams(Instant::now(), |stream| self.stream_settings(stream));
                    if forgotten > 0 {
                        tracing::debug!(forgotten, "forgot quiet history streams");
                    }
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// What publishing into a stream uses: the broker that sequences, the hub it delivers to
/// locally, the node's id and the keyring that seals sensitive events. The node implements it
/// (`node.rs`); this module knows nothing else of the node.
pub trait Sequencer {
    /// The broker that keeps the streams.
    fn broker(&self) -> &Broker;
    /// The hub of this node.
    fn hub(&self) -> &Hub;
    /// This node's id.
    fn node_id(&self) -> &Arc<str>;
    /// The keyring sealing sensitive events before they are recorded.
    fn keyring(&self) -> &Keyring;
}

/// Publishes an event of a stream with history: gives it its seq, records it and hands it to
/// every node, in one step per stream so that every node sees the stream in seq order.
pub async fn publish(
    via: &impl Sequencer,
    event: Arc<Event>,
    stream: Arc<str>,
    settings: Settings,
) -> Result<Published, BrokerError> {
    Ok(via.broker().publish_in_stream(via.hub(), via.node_id(), event, stream, settings, via.keyring()).await)
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
}
