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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use redis::aio::{AsyncPushSender, ConnectionManager, ConnectionManagerConfig, SendError};
use redis::cluster_async::ClusterConnection;
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value as RedisValue};
use serde::Deserialize;
use tokio::sync::mpsc;

mod envelope;
mod scripts;

use super::{BrokerError, BrokerHandler, BurstLog};
use crate::config::{RedisConfig, RedisMode};
use crate::hub::{Event, InterestChange, InterestKey, Target};

/// Pushes buffered between the Redis connection and the dispatcher; beyond this they are dropped
/// and counted rather than growing memory without bound.
const PUSH_QUEUE: usize = 64 * 1024;

/// How often the connection is checked (and, when down, retried).
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);

/// How often this node records its figures for cluster-wide statistics, and when a record is stale.
const REGISTRY_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn query(&self, cmd: &redis::Cmd) -> redis::RedisResult<RedisValue> {
        match self.clone() {
            Conn::Single(mut c) => cmd.query_async(&mut c).await,
            Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
        }
    }

    async fn script(&self, invocation: &redis::ScriptInvocation<'_>) -> redis::RedisResult<RedisValue> {
        match self.clone() {
            Conn::Single(mut c) => invocation.invoke_async(&mut c).await,
            Conn::Cluster(mut c) => invocation.invoke_async(&mut c).await,
        }
    }

    async fn pipeline(&self, pipe: &redis::Pipeline) -> redis::RedisResult<RedisValue> {
        match self.clone() {
            Conn::Single(mut c) => pipe.query_async(&mut c).await,
            Conn::Cluster(mut c) => pipe.query_async(&mut c).await,
        }
    }
}

/// A bounded push sender: Redis connections must never block on their consumer.
struct BoundedPush {
    tx: mpsc::Sender<PushInfo>,
    dropped: Arc<AtomicU64>,
}

impl AsyncPushSender for BoundedPush {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        match self.tx.try_send(info) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError),
        }
    }
}

/// A command for one node (cross-node admin), sent with [`RedisBroker::send_control`].
#[derive(Debug, Default, Deserialize)]
pub struct Control {
    /// Close this connection of the node.
    #[serde(default)]
    pub disconnect: Option<String>,
    /// A user id: close all of that user's connections on this node.
    #[serde(default)]
    pub disconnect_user: Option<String>,
    /// `[app id, user id]`: close that Pusher user's connections on this node.
    #[serde(default)]
    pub pusher_terminate: Option<(String, String)>,
    /// A Pusher event to publish here, where its excluded socket lives.
    #[serde(default)]
    pub pusher_publish: Option<serde_json::Value>,
    /// Commands POSTed on another node to a fallback session that lives here.
    #[serde(default)]
    pub fallback_command: Option<crate::transport::fallback::Forwarded>,
}

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

/// Rendezvous weight of a node for a stream (stable across processes and versions).
fn owner_weight(incarnation: &str, stream: &str) -> u64 {
    use sha1::{Digest, Sha1};
    let mut sha = Sha1::new();
    sha.update(incarnation.as_bytes());
    sha.update(b"\n");
    sha.update(stream.as_bytes());
    let digest = sha.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

impl RedisBroker {
    /// Creates the broker for one Redis server. Connections are lazy: an unreachable Redis does not
    /// stop the node from starting. Returns the stream of pushes for [`run`].
    pub fn connect(
        config: &RedisConfig,
        node_id: Arc<str>,
    ) -> Result<(RedisBroker, mpsc::Receiver<PushInfo>), BrokerError> {
        let url = config.url.clone().ok_or_else(|| BrokerError::Config("redis.url is not set".into()))?;
        let dropped = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel(PUSH_QUEUE);
        let push = BoundedPush { tx, dropped: dropped.clone() };
        let (commands, subscriber) = match config.mode {
            RedisMode::Standalone => {
                let info =
                    url.as_str().into_connection_info().map_err(|e| BrokerError::Config(format!("redis.url: {e}")))?;
                let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
                let client = redis::Client::open(info.set_redis_settings(settings))
                    .map_err(|e| BrokerError::Config(format!("redis.url: {e}")))?;
                let base = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.timeout))
                    .set_response_timeout(Some(config.timeout))
                    .set_min_delay(Duration::from_millis(100))
                    .set_max_delay(Duration::from_secs(2))
                    .set_number_of_retries(2);
                let commands = ConnectionManager::new_lazy_with_config(client.clone(), base.clone())
                    .map_err(|e| BrokerError::Config(format!("redis: {e}")))?;
                let subscriber = ConnectionManager::new_lazy_with_config(client, base.set_push_sender(push))
                    .map_err(|e| BrokerError::Config(format!("redis: {e}")))?;
                (Conn::Single(commands), Conn::Single(subscriber))
            }
            RedisMode::Cluster => return Err(BrokerError::Config("cluster mode connects with connect_cluster".into())),
        };
        Ok((Self::assemble(config, node_id, commands, subscriber, dropped), rx))
    }

    /// Creates the broker for a Redis Cluster (connects at once; fails if no node answers).
    pub async fn connect_cluster(
        config: &RedisConfig,
        node_id: Arc<str>,
    ) -> Result<(RedisBroker, mpsc::Receiver<PushInfo>), BrokerError> {
        let url = config.url.clone().ok_or_else(|| BrokerError::Config("redis.url is not set".into()))?;
        let nodes: Vec<String> = std::iter::once(url).chain(config.cluster_nodes.iter().cloned()).collect();
        let dropped = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel(PUSH_QUEUE);
        let build = |push: Option<BoundedPush>| {
            let mut builder = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                .use_protocol(ProtocolVersion::RESP3)
                .connection_timeout(config.timeout)
                .response_timeout(config.timeout)
                .retries(3);
            if let Some(push) = push {
                builder = builder.push_sender(push);
            }
            builder.build().map_err(|e| BrokerError::Config(format!("redis cluster: {e}")))
        };
        let commands =
            build(None)?.get_async_connection().await.map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let subscriber = build(Some(BoundedPush { tx, dropped: dropped.clone() }))?
            .get_async_connection()
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        Ok((Self::assemble(config, node_id, Conn::Cluster(commands), Conn::Cluster(subscriber), dropped), rx))
    }

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
            dropped,
            malformed_log: Mutex::new(BurstLog::default()),
            outage_since: Mutex::new(None),
            incarnation,
            live: Mutex::new(Vec::new()),
            append_script: redis::Script::new(scripts::APPEND_LUA),
            read_script: redis::Script::new(scripts::READ_LUA),
        }
    }

    /// Whether Redis answered the last check and every wanted subscription is live.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
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

    /// Whether this node owns a stream: of all live nodes it has the highest rendezvous weight.
    /// The owner alone sequences publishers' raw messages for the stream.
    pub fn owns(&self, stream: &str) -> bool {
        let live = self.live.lock();
        let mine = owner_weight(&self.incarnation, stream);
        !live.iter().any(|other| other != &self.incarnation && owner_weight(other, stream) > mine)
    }

    async fn refresh_live(&self) {
        if let Ok(live) = self.live_incarnations().await {
            let mut live: Vec<String> = live.into_iter().collect();
            live.sort();
            *self.live.lock() = live;
        }
    }

    fn history_keys(&self, stream: &str) -> (String, String) {
        super::keys::stream(&self.config.key_prefix, stream)
    }

    /// Sequences, records and publishes an event of a stream with history (see [`scripts::APPEND_LUA`]).
    /// `record` is what the stream keeps: the payload, or its sealed form for a sensitive one.
    pub async fn append_and_publish(
        &self,
        node_id: &str,
        event: &Event,
        record: &[u8],
        stream: &str,
        settings: super::stream::Settings,
    ) -> Result<(), BrokerError> {
        self.ensure_subscribed()?;
        let head = envelope::stream_head(node_id, event, stream);
        let (key, meta) = self.history_keys(stream);
        let mut script = self.append_script.key(key);
        script
            .key(meta)
            .arg(super::stream::new_epoch())
            .arg(settings.size)
            .arg(settings.max_age.as_millis() as u64)
            .arg(record)
            .arg(head);
        for (kind, name) in envelope::copies(&event.target) {
            let mut tail = Vec::with_capacity(event.payload.len() + 16);
            envelope::push_tail(&mut tail, kind, &event.payload);
            script.arg(self.copy_channel(kind, name)).arg(tail);
        }
        match self.commands.script(&script).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.mark_down(&e.to_string());
                Err(BrokerError::Unavailable(e.to_string()))
            }
        }
    }

    /// A stream's history as Redis holds it.
    pub async fn read_history(
        &self,
        stream: &str,
        settings: super::stream::Settings,
    ) -> Result<super::stream::Snapshot, BrokerError> {
        let (key, meta) = self.history_keys(stream);
        let mut script = self.read_script.key(key);
        script.key(meta).arg(settings.size);
        let value = self.commands.script(&script).await.map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let RedisValue::Array(parts) = value else {
            return Err(BrokerError::Unavailable("unexpected history reply".into()));
        };
        let text = |v: &RedisValue| bytes_of(v).and_then(|b| std::str::from_utf8(b).ok()).map(String::from);
        let epoch = parts.first().and_then(text).unwrap_or_default();
        let top = match parts.get(1) {
            Some(RedisValue::Int(n)) => *n as u64,
            Some(other) => text(other).and_then(|t| t.parse().ok()).unwrap_or(0),
            None => 0,
        };
        let mut events = Vec::new();
        if let Some(RedisValue::Array(entries)) = parts.get(2) {
            for entry in entries {
                let RedisValue::Array(entry) = entry else { continue };
                let fields: Vec<&RedisValue> = match entry.get(1) {
                    Some(RedisValue::Array(fields)) => fields.iter().collect(),
                    Some(RedisValue::Map(pairs)) => pairs.iter().flat_map(|(k, v)| [k, v]).collect(),
                    _ => continue,
                };
                let (mut seq, mut payload) = (None, None);
                for pair in fields.chunks(2) {
                    match (pair.first().and_then(|k| bytes_of(k)), pair.get(1)) {
                        (Some(b"s"), Some(v)) => seq = text(v).and_then(|t| t.parse::<u64>().ok()),
                        (Some(b"e"), Some(v)) => payload = bytes_of(v).map(Bytes::copy_from_slice),
                        _ => {}
                    }
                }
                if let (Some(seq), Some(payload)) = (seq, payload) {
                    events.push((seq, payload));
                }
            }
        }
        events.reverse();
        Ok(super::stream::Snapshot { epoch: Arc::from(epoch), top, events })
    }

    /// Prefix of Herald's own keys.
    pub fn key_prefix(&self) -> &str {
        &self.config.key_prefix
    }

    /// This run of this node.
    pub fn incarnation(&self) -> &str {
        &self.incarnation
    }

    fn stale_ms(&self) -> u64 {
        self.config.node_timeout.as_millis() as u64
    }

    /// Incarnations whose registry record is fresh.
    pub fn live_from_registry<'a>(&self, records: impl Iterator<Item = &'a String>) -> HashSet<String> {
        let now = crate::stats::unix_millis();
        records
            .filter_map(|json| serde_json::from_str::<serde_json::Value>(json).ok())
            .filter(|r| r["updated_ms"].as_u64().is_some_and(|t| now.saturating_sub(t) < self.stale_ms()))
            .filter_map(|r| r["incarnation"].as_str().map(String::from))
            .collect()
    }

    /// Incarnations of live nodes, read from the registry now.
    pub async fn live_incarnations(&self) -> Result<HashSet<String>, BrokerError> {
        let records: HashMap<String, String> = self
            .query_as(redis::cmd("HGETALL").arg(self.registry_key()))
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        Ok(self.live_from_registry(records.values()))
    }

    /// The hash in which every node records its figures.
    pub fn registry_key(&self) -> String {
        super::keys::fixed(&self.config.key_prefix, "nodes")
    }

    /// Runs a command and converts its reply.
    pub async fn query_as<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let value = self.commands.query(cmd).await?;
        redis::from_redis_value(value).map_err(Into::into)
    }

    /// Runs a pipeline and converts its replies.
    pub async fn pipeline_as<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> redis::RedisResult<T> {
        let value = self.commands.pipeline(pipe).await?;
        redis::from_redis_value(value).map_err(Into::into)
    }

    /// Pushes dropped because the node could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The Redis mode.
    pub fn mode(&self) -> RedisMode {
        self.config.mode
    }

    fn key(&self, kind: &str, name: &str) -> String {
        super::keys::trailing(&self.config.key_prefix, kind, name)
    }

    fn all_key(&self) -> String {
        super::keys::fixed(&self.config.key_prefix, "all")
    }

    fn control_key(&self) -> String {
        super::keys::trailing(&self.config.key_prefix, "ctl", &self.node_id)
    }

    fn interest_channel(&self, key: &InterestKey) -> String {
        match key {
            InterestKey::Channel(c) => self.key("c", c),
            InterestKey::Room(r) => self.key("r", r),
            InterestKey::User(u) => self.key("u", u),
        }
    }

    fn publish_cmd(&self) -> &'static str {
        match self.config.mode {
            RedisMode::Standalone => "PUBLISH",
            RedisMode::Cluster => "SPUBLISH",
        }
    }

    fn subscribe_cmd(&self, subscribe: bool) -> &'static str {
        match (self.config.mode, subscribe) {
            (RedisMode::Standalone, true) => "SUBSCRIBE",
            (RedisMode::Standalone, false) => "UNSUBSCRIBE",
            (RedisMode::Cluster, true) => "SSUBSCRIBE",
            (RedisMode::Cluster, false) => "SUNSUBSCRIBE",
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

    /// Refuses to publish through Redis until this node's subscriptions are live (at start and
    /// after every reconnect): the event would reach other nodes but none of this node's own
    /// subscribers, who were acknowledged in local mode. The caller delivers locally instead.
    fn ensure_subscribed(&self) -> Result<(), BrokerError> {
        if self.is_connected() {
            Ok(())
        } else {
            Err(BrokerError::Unavailable("redis subscriptions are not live yet".into()))
        }
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
        for (kind, name) in envelope::copies(&event.target) {
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

    /// Sends a command to another node (cross-node admin); returns whether a node listened.
    pub async fn send_control(&self, node: &str, body: &serde_json::Value) -> Result<bool, BrokerError> {
        let channel = super::keys::trailing(&self.config.key_prefix, "ctl", node);
        let cmd = redis::cmd("PUBLISH").arg(channel).arg(body.to_string()).to_owned();
        match self.commands.query(&cmd).await {
            Ok(RedisValue::Int(n)) => Ok(n > 0),
            Ok(_) => Ok(false),
            Err(e) => Err(BrokerError::Unavailable(e.to_string())),
        }
    }

    /// Figures of every live node, as recorded in the registry.
    pub async fn cluster_nodes(&self) -> Result<Vec<serde_json::Value>, BrokerError> {
        let key = super::keys::fixed(&self.config.key_prefix, "nodes");
        let cmd = redis::cmd("HGETALL").arg(&key).to_owned();
        let value = self.commands.query(&cmd).await.map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let now = crate::stats::unix_millis();
        let mut nodes = Vec::new();
        let mut stale = Vec::new();
        let pairs: Vec<(String, String)> = redis::from_redis_value(value).unwrap_or_default();
        for (id, json) in pairs {
            match serde_json::from_str::<serde_json::Value>(&json) {
                Ok(record)
                    if record["updated_ms"].as_u64().is_some_and(|t| now.saturating_sub(t) < self.stale_ms()) =>
                {
                    nodes.push(record)
                }
                _ => stale.push(id),
            }
        }
        if !stale.is_empty() {
            let cmd = redis::cmd("HDEL").arg(&key).arg(stale).to_owned();
            let _ = self.commands.query(&cmd).await;
        }
        nodes.sort_by(|a, b| a["node"].as_str().cmp(&b["node"].as_str()));
        Ok(nodes)
    }

    fn mark_down(&self, why: &str) {
        if self.connected.swap(false, Ordering::Relaxed) {
            *self.outage_since.lock() = Some(Instant::now());
            tracing::warn!(error = why, "redis connection lost; local delivery continues, retrying with backoff");
        }
    }

    async fn set_subscription(&self, channels: &[String], subscribe: bool) -> redis::RedisResult<()> {
        if channels.is_empty() {
            return Ok(());
        }
        // One channel per command: in cluster mode each sharded channel may live on another node.
        let cmds: Vec<redis::Cmd> = match self.config.mode {
            RedisMode::Cluster => {
                channels.iter().map(|c| redis::cmd(self.subscribe_cmd(subscribe)).arg(c).to_owned()).collect()
            }
            RedisMode::Standalone => vec![redis::cmd(self.subscribe_cmd(subscribe)).arg(channels).to_owned()],
        };
        for cmd in cmds {
            self.subscriber.query(&cmd).await?;
        }
        Ok(())
    }

    /// Subscribes to everything this node needs: ingest patterns, exact channels, the broadcast
    /// and control channels, and every internal key of current interest.
    async fn subscribe_all(&self) -> redis::RedisResult<usize> {
        let patterns: Vec<String> = self.config.prefixes.iter().map(|p| format!("{p}:*")).collect();
        if !patterns.is_empty() {
            self.subscriber.query(&redis::cmd("PSUBSCRIBE").arg(&patterns).to_owned()).await?;
        }
        let mut plain: Vec<String> = self.config.channels.clone();
        plain.push(self.control_key());
        self.subscriber.query(&redis::cmd("SUBSCRIBE").arg(&plain).to_owned()).await?;
        let mut internal: Vec<String> = self.wanted.lock().iter().cloned().collect();
        internal.push(self.all_key());
        self.set_subscription(&internal, true).await?;
        Ok(patterns.len() + plain.len() + internal.len())
    }

    async fn check(&self) -> bool {
        let ping = redis::cmd("PING");
        let subscriber_ok = self.subscriber.query(&ping).await.is_ok();
        subscriber_ok && self.commands.query(&ping).await.is_ok()
    }

    async fn record_node(&self, handler: &impl BrokerHandler) {
        let mut record = handler.figures();
        if let Some(fields) = record.as_object_mut() {
            fields.insert("node".into(), (*self.node_id).into());
            fields.insert("incarnation".into(), self.incarnation.clone().into());
            fields.insert("updated_ms".into(), crate::stats::unix_millis().into());
        }
        let cmd = redis::cmd("HSET").arg(self.registry_key()).arg(&*self.node_id).arg(record.to_string()).to_owned();
        let _ = self.commands.query(&cmd).await;
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

    let health = async {
        let mut ticker = tokio::time::interval(HEALTH_INTERVAL);
        // Several records per node timeout, so that a busy moment never makes a live node
        // look dead to the others.
        let registry_interval = REGISTRY_INTERVAL.min(broker.config.node_timeout / 5);
        let mut last_record = Instant::now() - registry_interval;
        loop {
            ticker.tick().await;
            if broker.check().await {
                if !broker.is_connected() {
                    // Until `connected` is set, interest changes only update `wanted`.
                    let _subscribing = broker.subscribing.lock().await;
                    match broker.subscribe_all().await {
                        Ok(n) => {
                            // Registered before it says it is connected, so that other nodes
                            // count this one from the first moment it takes cross-node traffic.
                            broker.record_node(&*handler).await;
                            broker.refresh_live().await;
                            last_record = Instant::now();
                            broker.connected.store(true, Ordering::Relaxed);
                            match broker.outage_since.lock().take() {
                                Some(since) => tracing::info!(
                                    subscriptions = n,
                                    outage_ms = since.elapsed().as_millis() as u64,
                                    "redis connection restored; resubscribed"
                                ),
                                None => tracing::info!(subscriptions = n, mode = ?broker.mode(), "redis connected"),
                            }
                        }
                        Err(e) => broker.mark_down(&e.to_string()),
                    }
                }
            } else {
                if broker.outage_since.lock().is_none() && !broker.is_connected() {
                    // Never connected yet: say so once.
                    *broker.outage_since.lock() = Some(Instant::now());
                    tracing::warn!("redis is unreachable; serving local traffic and retrying with backoff");
                }
                broker.mark_down("health check failed");
            }
            if broker.is_connected() && last_record.elapsed() >= registry_interval {
                last_record = Instant::now();
                broker.record_node(&*handler).await;
                broker.refresh_live().await;
            }
        }
    };

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
        ingest(broker, handler, channel, payload).await;
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

/// A message a publisher put on `<prefix>:<channel>` or an exact ingest channel.
async fn ingest(broker: &RedisBroker, handler: &impl BrokerHandler, redis_channel: &str, payload: &[u8]) {
    let channel = broker
        .config
        .prefixes
        .iter()
        .find_map(|p| redis_channel.strip_prefix(p.as_str()).and_then(|r| r.strip_prefix(':')))
        .unwrap_or(redis_channel);
    let value: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(value @ serde_json::Value::Object(_)) => value,
        Ok(_) => {
            handler.malformed();
            broker.malformed_log.lock().warn("dropped a published message that is not a JSON object", redis_channel);
            return;
        }
        Err(e) => {
            handler.malformed();
            broker
                .malformed_log
                .lock()
                .warn("dropped a published message that is not valid JSON", &format!("{redis_channel}: {e}"));
            return;
        }
    };
    let field = |name: &str| -> Option<Arc<str>> {
        if name.is_empty() {
            return None;
        }
        match value.get(name) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Some(Arc::from(s.as_str())),
            Some(serde_json::Value::Number(n)) => Some(Arc::from(n.to_string())),
            _ => None,
        }
    };
    let target = Target {
        channel: Some(Arc::from(channel)),
        room: field(&broker.config.room_field),
        user: field(&broker.config.user_field),
        broadcast: false,
    };
    let owns = |stream: &str| broker.owns(stream);
    if let Err(e) = handler.ingest(target, value, &owns).await {
        handler.malformed();
        broker.malformed_log.lock().warn("dropped a published message", &format!("{redis_channel}: {e}"));
    }
}
