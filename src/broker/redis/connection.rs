//! The connection to Redis, standalone or cluster: two connections (commands, and the subscriber
//! that receives pushes), the bounded push queue, the health check, and the up/down state with
//! reconnect and resubscription.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{AsyncPushSender, ConnectionManager, ConnectionManagerConfig, SendError};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, Value as RedisValue};
use tokio::sync::mpsc;

use super::RedisBroker;
use super::registry::REGISTRY_INTERVAL;
use crate::broker::{BrokerError, BrokerHandler};
use crate::config::{RedisConfig, RedisMode};

/// Pushes buffered between the Redis connection and the dispatcher; beyond this they are dropped
/// and counted rather than growing memory without bound.
pub(super) const PUSH_QUEUE: usize = 64 * 1024;

/// How often the connection is checked (and, when down, retried).
pub(super) const HEALTH_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    pub(super) async fn query(&self, cmd: &redis::Cmd) -> redis::RedisResult<RedisValue> {
        match self.clone() {
            Conn::Single(mut c) => cmd.query_async(&mut c).await,
            Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
        }
    }

    pub(super) async fn script(&self, invocation: &redis::ScriptInvocation<'_>) -> redis::RedisResult<RedisValue> {
        match self.clone() {
            Conn::Single(mut c) => invocation.invoke_async(&mut c).await,
            Conn::Cluster(mut c) => invocation.invoke_async(&mut c).await,
        }
    }

    /// Runs a pipeline. On a Redis Cluster, where a pipeline may not span hash slots, one that
    /// does is split into a pipeline per slot, run concurrently (each keeps its commands'
    /// order); its reply then holds every command's reply in order, `ignore()` or not.
    pub(super) async fn pipeline(&self, pipe: &redis::Pipeline) -> redis::RedisResult<RedisValue> {
        match self.clone() {
            Conn::Single(mut c) => pipe.query_async(&mut c).await,
            Conn::Cluster(mut c) => {
                let groups = by_slot(pipe);
                if groups.len() <= 1 {
                    return pipe.query_async(&mut c).await;
                }
                let commands: Vec<&redis::Cmd> = pipe.cmd_iter().collect();
                let runs = groups.iter().map(|indices| {
                    let mut part = redis::pipe();
                    for &i in indices {
                        part.add_command(commands[i].clone());
                    }
                    let mut c = c.clone();
                    async move { part.query_async::<Vec<RedisValue>>(&mut c).await }
                });
                let replies = futures_util::future::try_join_all(runs).await?;
                let mut all = vec![RedisValue::Nil; commands.len()];
                for (indices, values) in groups.iter().zip(replies) {
                    for (&i, value) in indices.iter().zip(values) {
                        all[i] = value;
                    }
                }
                Ok(RedisValue::Array(all))
            }
        }
    }
}

/// A bounded push sender: Redis connections must never block on their consumer.
pub(super) struct BoundedPush {
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

impl RedisBroker {
    /// Creates the broker for one Redis server. Connections are lazy: an unreachable Redis does not
    /// stop the node from starting. Returns the stream of pushes for [`super::run`].
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

    /// Whether Redis answered the last check and every wanted subscription is live.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Runs a command and converts its reply.
    pub async fn query_as<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let value = self.commands.query(cmd).await?;
        redis::from_redis_value(value).map_err(Into::into)
    }

    /// Runs a pipeline and converts its replies. On a Redis Cluster a pipeline whose keys span
    /// hash slots is split per slot (order kept within each); its reply then holds every
    /// command's reply, `ignore()`d or not, so a caller that reads the replies of a pipeline that
    /// may span slots ignores none. Keys that must be read or written together take one hash tag
    /// (`broker::keys::tagged`).
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

    pub(super) fn publish_cmd(&self) -> &'static str {
        match self.config.mode {
            RedisMode::Standalone => "PUBLISH",
            RedisMode::Cluster => "SPUBLISH",
        }
    }

    pub(super) fn subscribe_cmd(&self, subscribe: bool) -> &'static str {
        match (self.config.mode, subscribe) {
            (RedisMode::Standalone, true) => "SUBSCRIBE",
            (RedisMode::Standalone, false) => "UNSUBSCRIBE",
            (RedisMode::Cluster, true) => "SSUBSCRIBE",
            (RedisMode::Cluster, false) => "SUNSUBSCRIBE",
        }
    }

    /// Refuses to publish through Redis until this node's subscriptions are live (at start and
    /// after every reconnect): the event would reach other nodes but none of this node's own
    /// subscribers, who were acknowledged in local mode. The caller delivers locally instead.
    pub(super) fn ensure_subscribed(&self) -> Result<(), BrokerError> {
        if self.is_connected() {
            Ok(())
        } else {
            Err(BrokerError::Unavailable("redis subscriptions are not live yet".into()))
        }
    }

    pub(super) fn mark_down(&self, why: &str) {
        if self.connected.swap(false, Ordering::Relaxed) {
            *self.outage_since.lock() = Some(Instant::now());
            tracing::warn!(error = why, "redis connection lost; local delivery continues, retrying with backoff");
        }
    }

    pub(super) async fn set_subscription(&self, channels: &[String], subscribe: bool) -> redis::RedisResult<()> {
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
    pub(super) async fn subscribe_all(&self) -> redis::RedisResult<usize> {
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

    /// Whether this node wants to receive an internal channel now (interest, or the broadcast key).
    fn still_wanted(&self, channel: &str) -> bool {
        channel == self.all_key() || self.wanted.lock().contains(channel)
    }

    /// A `SUNSUBSCRIBE` push: the confirmation of this node's own (for a channel it no longer
    /// wants), or Redis dropping a sharded subscription by itself, which it does to every
    /// subscriber of a slot that moved to another master (resharding) and of a master that became
    /// a replica (failover). The cluster client forgets the subscription as well, so nothing would
    /// ever arrive on the channel again: a channel still wanted is handed to
    /// [`resubscribe_dropped`].
    pub(super) fn unsubscribed(&self, channel: &str) {
        if self.still_wanted(channel) {
            self.lost.lock().insert(channel.to_string());
            self.lost_notify.notify_one();
        }
    }

    pub(super) async fn check(&self) -> bool {
        let ping = redis::cmd("PING");
        let subscriber_ok = self.subscriber.query(&ping).await.is_ok();
        subscriber_ok && self.commands.query(&ping).await.is_ok()
    }
}

/// Checks the connection every [`HEALTH_INTERVAL`] until the task is dropped: marks it down when
/// Redis stops answering, resubscribes everything once it answers again, and records this node in
/// the registry while it is up.
pub(super) async fn keep_connected<H: BrokerHandler>(broker: &RedisBroker, handler: &H) {
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
                        broker.record_node(handler).await;
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
            broker.record_node(handler).await;
            broker.refresh_live().await;
        }
    }
}

/// Subscribes again, until the task is dropped, to the sharded channels Redis dropped while this
/// node still wants them (see [`RedisBroker::unsubscribed`]). The cluster client routes each
/// `SSUBSCRIBE` to the slot's master now, following `MOVED`.
pub(super) async fn resubscribe_dropped(broker: &RedisBroker) {
    loop {
        broker.lost_notify.notified().await;
        let lost: Vec<String> = std::mem::take(&mut *broker.lost.lock()).into_iter().collect();
        let _subscribing = broker.subscribing.lock().await;
        let again: Vec<String> = lost.into_iter().filter(|c| broker.still_wanted(c)).collect();
        // While down, the reconnection subscribes to everything anyway.
        if again.is_empty() || !broker.is_connected() {
            continue;
        }
        tracing::info!(channels = again.len(), "redis moved sharded channels away; subscribing again");
        if let Err(e) = broker.set_subscription(&again, true).await {
            broker.mark_down(&e.to_string());
        }
    }
}

/// The indices of a pipeline's commands, grouped by the hash slot of their key (commands
/// without a key go with the first group).
fn by_slot(pipe: &redis::Pipeline) -> Vec<Vec<usize>> {
    let mut groups: Vec<(Option<Slot>, Vec<usize>)> = Vec::new();
    for (i, cmd) in pipe.cmd_iter().enumerate() {
        let slot = slot_of(cmd);
        let found = match slot {
            None => groups.first_mut(),
            Some(_) => groups.iter_mut().find(|(s, _)| s.is_none_or(|s| Some(s) == slot)),
        };
        match found {
            Some((s, indices)) => {
                *s = s.or(slot);
                indices.push(i);
            }
            None => groups.push((slot, vec![i])),
        }
    }
    groups.into_iter().map(|(_, indices)| indices).collect()
}

/// The hash slot of a command's key: its first argument, or an `EVAL`'s first key.
/// (redis-rs routes commands the same way, but keeps that routing private to the crate; only
/// [`Slot::for_key`] is public.)
fn slot_of(cmd: &redis::Cmd) -> Option<Slot> {
    let mut args = cmd.args_iter().filter_map(|arg| match arg {
        redis::Arg::Simple(bytes) => Some(bytes),
        _ => None,
    });
    let name = args.next()?;
    if name.eq_ignore_ascii_case(b"EVAL") || name.eq_ignore_ascii_case(b"EVALSHA") {
        let _script = args.next()?;
        if args.next()? == b"0" {
            return None;
        }
    }
    args.next().map(Slot::for_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_is_grouped_by_the_slot_of_each_key() {
        let mut pipe = redis::pipe();
        pipe.cmd("PING");
        pipe.cmd("SPUBLISH").arg("herald:c:{c:a}").arg("1");
        pipe.cmd("HSET").arg("herald:h:{c:a}").arg("f").arg("v");
        pipe.cmd("SPUBLISH").arg("herald:r:{r:b}").arg("2");
        pipe.cmd("EVAL").arg("return 1").arg(1).arg("x:{c:a}");
        pipe.cmd("SPUBLISH").arg("herald:c:{c:a}").arg("3");
        assert_eq!(by_slot(&pipe), [vec![0, 1, 2, 4, 5], vec![3]]);
        let mut one = redis::pipe();
        one.cmd("INCR").arg("k:{u}:m").cmd("INCR").arg("k:{u}:h");
        assert_eq!(by_slot(&one).len(), 1);
    }
}
