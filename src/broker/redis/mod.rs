//! The Redis broker: publishers' `PUBLISH <prefix>:<channel>` in, events between nodes, node
//! registry for cluster-wide statistics.
//!
//! Two kinds of traffic, two designs:
//!
//! - **Publisher ingest** (`<prefix>:*`, exact channels): every node pattern-subscribes and every
//!   node delivers each message to its own local recipients. A message may carry a room and a user
//!   that reach connections not subscribed to the channel, so a node cannot know in advance which
//!   messages it needs; pattern subscription is the only correct choice.
//! - **Herald's own traffic** (`<key_prefix>:c:<channel>`, `:r:<room>`, `:u:<user>`, `:all`): a
//!   node subscribes to a key only while it has local connections for it (reference counted by
//!   the hub's interest), so at scale a node receives only what its clients need. An event is
//!   published once per key of its target; the copy for a key is delivered to the local
//!   recipients reachable through that key and not through an earlier one (channel, then room,
//!   then user), so every connection still receives it exactly once. In cluster mode these are
//!   sharded channels (`SPUBLISH`/`SSUBSCRIBE`), spreading traffic over the cluster's shards.
//!
//! When Redis is unreachable, and until every wanted subscription is live again, publishing falls
//! back to local delivery and health says `degraded`; connections are retried with backoff, and
//! every subscription is restored once Redis is back.
//!
//! This module is the facade (the broker, its subscriptions and publishing, the dispatch of
//! pushes); the concerns live beside it: `connection` (standalone or cluster connections, health,
//! reconnect and resubscription), `registry` (node records, live nodes, stream ownership,
//! cluster-wide figures), `ingest` (publishers' messages), `control` (commands between nodes),
//! `history` (streams with history), `envelope` (the format between nodes) and `scripts` (Lua).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;

use parking_lot::Mutex;
use redis::{PushInfo, PushKind, Value as RedisValue};
use tokio::sync::mpsc;

mod connection;
mod control;
mod envelope;
mod history;
mod ingest;
mod registry;
mod scripts;

use connection::Conn;
pub use control::Control;

use super::{BrokerError, BrokerHandler, BurstLog};
use crate::config::{RedisConfig, RedisMode};
use crate::hub::{Event, InterestChange, InterestKey};

/// The Redis broker.
pub struct RedisBroker {
    config: RedisConfig,
    node_id: Arc<str>,
    commands: Conn,
    subscriber: Conn,
    /// Redis answers and every subscription this node wants is live. Only then do events travel
    /// through Redis: before that a published event would reach no subscriber of this node.
    connected: AtomicBool,
    /// Internal channels this node wants (from interest), restored after every reconnect.
    wanted: Mutex<HashSet<String>>,
    /// Held while (re)subscribing everything and while following one interest change, so that a
    /// key wanted during a resubscription is either in its snapshot or subscribed on its own.
    subscribing: tokio::sync::Mutex<()>,
    /// Sharded channels Redis unsubscribed this node from on its own (their slot moved to another
    /// master, or their master became a replica), to be subscribed again where they live now.
    lost: Mutex<HashSet<String>>,
    lost_notify: tokio::sync::Notify,
    dropped: Arc<AtomicU64>,
    malformed_log: Mutex<BurstLog>,
    outage_since: Mutex<Option<Instant>>,
    /// `<node>@<start ms>`: distinguishes this run of the node from earlier ones with the same id.
    incarnation: String,
    /// Incarnations of the live nodes, as last read from the registry: who owns which stream.
    live: Mutex<Vec<String>>,
    append_script: redis::Script,
    read_script: redis::Script,
}

impl RedisBroker {
    fn assemble(
        config: &RedisConfig,
        node_id: Arc<str>,
        commands: Conn,
        subscriber: Conn,
        dropped: Arc<AtomicU64>,
    ) -> Self {
        let incarnation = format!("{node_id}@{}", crate::stats::unix_millis());
        RedisBroker {
            config: config.clone(),
            node_id,
            commands,
            subscriber,
            connected: AtomicBool::new(false),
            wanted: Mutex::new(HashSet::new()),
            subscribing: tokio::sync::Mutex::new(()),
            lost: Mutex::new(HashSet::new()),
            lost_notify: tokio::sync::Notify::new(),
            dropped,
            malformed_log: Mutex::new(BurstLog::default()),
            outage_since: Mutex::new(None),
            incarnation,
            live: Mutex::new(Vec::new()),
            append_script: redis::Script::new(scripts::APPEND_LUA),
            read_script: redis::Script::new(scripts::READ_LUA),
        }
    }

    /// The campaign profile's `redis` object: state and what the node listens to.
    pub fn describe(&self) -> serde_json::Value {
        let connected = self.is_connected();
        let mut channels: Vec<String> = self.config.prefixes.iter().map(|p| format!("{p}:*")).collect();
        channels.extend(self.config.channels.iter().cloned());
        serde_json::json!({
            "healthy": connected,
            "connected": connected,
            "running": true,
            "mode": self.config.mode,
            "subscriptions": channels.len() + self.wanted.lock().len() + 2,
            "channels": channels,
            "dropped_messages": self.dropped(),
            "live_nodes": self.live.lock().len(),
        })
    }

    /// Prefix of Herald's own keys.
    pub fn key_prefix(&self) -> &str {
        &self.config.key_prefix
    }

    /// The pub/sub channel of a channel, room or user key. On a Redis Cluster a channel's and a
    /// room's carry the hash tag of their stream ([`super::keys::sharded`]).
    fn key(&self, kind: &str, name: &str) -> String {
        match self.config.mode {
            RedisMode::Cluster if kind == "c" || kind == "r" => {
                super::keys::sharded(&self.config.key_prefix, kind, name)
            }
            _ => super::keys::trailing(&self.config.key_prefix, kind, name),
        }
    }

    fn all_key(&self) -> String {
        super::keys::fixed(&self.config.key_prefix, "all")
    }

    fn interest_channel(&self, key: &InterestKey) -> String {
        match key {
            InterestKey::Channel(c) => self.key("c", c),
            InterestKey::Room(r) => self.key("r", r),
            InterestKey::User(u) => self.key("u", u),
        }
    }

    /// Publishes an event to every node subscribed to one of its keys.
    pub async fn publish(&self, node_id: &str, event: &Event) -> Result<(), BrokerError> {
        self.ensure_subscribed()?;
        let mut pipe = redis::pipe();
        self.add_to_pipeline(&mut pipe, node_id, event);
        self.run_publish(&pipe).await
    }

    /// Publishes events in order in one pipeline.
    pub async fn publish_batch(&self, node_id: &str, events: &[Arc<Event>]) -> Result<(), BrokerError> {
        if events.is_empty() {
            return Ok(());
        }
        self.ensure_subscribed()?;
        let mut pipe = redis::pipe();
        for event in events {
            self.add_to_pipeline(&mut pipe, node_id, event);
        }
        self.run_publish(&pipe).await
    }

    async fn run_publish(&self, pipe: &redis::Pipeline) -> Result<(), BrokerError> {
        match self.commands.pipeline(pipe).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.mark_down(&e.to_string());
                Err(BrokerError::Unavailable(e.to_string()))
            }
        }
    }

    fn add_to_pipeline(&self, pipe: &mut redis::Pipeline, node_id: &str, event: &Event) {
        let head = envelope::head(node_id, event);
        for (kind, name) in envelope::copies(&event.target, false) {
            let message = envelope::encode(&head, kind, &event.payload);
            pipe.cmd(self.publish_cmd()).arg(self.copy_channel(kind, name)).arg(message).ignore();
        }
    }

    /// The pub/sub channel of one copy of an event (see [`envelope::copies`]).
    fn copy_channel(&self, kind: &str, name: Option<&str>) -> String {
        match name {
            Some(name) => self.key(kind, name),
            None => self.all_key(),
        }
    }
}

/// Runs the broker's background work until `shutdown`: dispatching pushes to `handler`,
/// following the hub's interest, checking the connection and restoring subscriptions after an
/// outage. `interest` must come from [`crate::hub::Hub::watch_interest`], taken before the node
/// accepts connections so that no change is missed.
pub async fn run<H: BrokerHandler>(
    broker: Arc<RedisBroker>,
    handler: Arc<H>,
    mut pushes: mpsc::Receiver<PushInfo>,
    interest: (Vec<InterestKey>, mpsc::UnboundedReceiver<InterestChange>),
    shutdown: tokio_util::sync::CancellationToken,
) {
    let (initial, mut changes) = interest;
    broker.wanted.lock().extend(initial.iter().map(|k| broker.interest_channel(k)));

    let health = connection::keep_connected(&broker, &*handler);

    let interest = async {
        while let Some(InterestChange { key, present, ready }) = changes.recv().await {
            let channel = broker.interest_channel(&key);
            // Not while a resubscription is between its snapshot of `wanted` and `connected`:
            // a key added then would be in neither.
            let _subscribing = broker.subscribing.lock().await;
            let changed = {
                let mut wanted = broker.wanted.lock();
                if present { wanted.insert(channel.clone()) } else { wanted.remove(&channel) }
            };
            if changed && broker.is_connected() {
                // A failure here marks the connection down; the reconnect path resubscribes
                // everything in `wanted`, so nothing is lost.
                if let Err(e) = broker.set_subscription(std::slice::from_ref(&channel), present).await {
                    broker.mark_down(&e.to_string());
                }
            }
            // While Redis is down the subscription is restored on reconnect; waiting for it
            // would only hold acknowledgements hostage to the outage. Until then publishing
            // delivers locally (`ensure_subscribed`), so the acknowledgement holds.
            if let Some(ready) = ready {
                let _ = ready.send(());
            }
        }
    };

    let dispatch = async {
        while let Some(push) = pushes.recv().await {
            handle_push(&broker, &*handler, push).await;
        }
    };

    tokio::select! {
        _ = health => {}
        _ = interest => {}
        _ = dispatch => {}
        _ = connection::resubscribe_dropped(&broker) => {}
        _ = shutdown.cancelled() => {}
    }
}

async fn handle_push(broker: &RedisBroker, handler: &impl BrokerHandler, push: PushInfo) {
    let (channel, payload) = match push.kind {
        PushKind::Message | PushKind::SMessage => match (push.data.first(), push.data.get(1)) {
            (Some(channel), Some(payload)) => (channel, payload),
            _ => return,
        },
        PushKind::PMessage => match (push.data.get(1), push.data.get(2)) {
            (Some(channel), Some(payload)) => (channel, payload),
            _ => return,
        },
        PushKind::Disconnection => {
            broker.mark_down("connection closed");
            return;
        }
        PushKind::SUnsubscribe => {
            if let Some(channel) = push.data.first().and_then(bytes_of).and_then(|c| std::str::from_utf8(c).ok()) {
                broker.unsubscribed(channel);
            }
            return;
        }
        _ => return,
    };
    let (Some(channel), Some(payload)) = (bytes_of(channel), bytes_of(payload)) else { return };
    let Ok(channel) = std::str::from_utf8(channel) else { return };
    let prefix = &broker.config.key_prefix;
    if let Some(rest) = channel.strip_prefix(prefix.as_str()).and_then(|r| r.strip_prefix(':'))
        && (rest.starts_with("c:") || rest.starts_with("r:") || rest.starts_with("u:") || rest == "all")
    {
        internal_event(broker, handler, payload).await;
    } else if channel == broker.control_key() {
        if let Ok(command) = serde_json::from_slice::<Control>(payload) {
            handler.control(command).await;
        }
    } else {
        ingest::ingest(broker, handler, channel, payload).await;
    }
}

fn bytes_of(value: &RedisValue) -> Option<&[u8]> {
    match value {
        RedisValue::BulkString(bytes) => Some(bytes),
        RedisValue::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// An event from another node (or from this one, through Redis).
async fn internal_event(broker: &RedisBroker, handler: &impl BrokerHandler, payload: &[u8]) {
    match envelope::decode(payload, &broker.node_id) {
        Ok(event) => handler.deliver(event).await,
        Err(e) => {
            handler.malformed();
            broker.malformed_log.lock().warn("malformed message between nodes", &e.to_string());
        }
    }
}
