//! Rate and connection limits.
//!
//! - Messages per minute and per hour, per connection (GCRA via `governor`, allocated only once a
//!   connection first sends something) and per user. Exceeding either blocks the connection and
//!   its user for `limits.block_duration`; refusals answer `RATE_LIMIT_EXCEEDED` with a retry hint,
//!   and a connection that keeps sending while blocked is closed.
//! - Connections per client address and per user.
//!
//! With Redis the per-user rates, blocks and both connection counts are shared by all nodes: rate
//! windows are `INCR` counters, connection counts are per-node fields of a hash, so a node that
//! dies stops counting once the node registry forgets it. Which store counts is decided once, at
//! start-up ([`Limits::new`] is given the Redis broker or not); while Redis is down, the node's
//! memory counts. Limits know nothing else of the node.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;

use crate::broker::keys;
use crate::broker::redis::RedisBroker;
use crate::config::LimitsConfig;

type UserLimiter = DefaultKeyedRateLimiter<Arc<str>>;

/// Per-connection rate state, kept in the session once it first sends a counted message.
pub struct RateState {
    minute: Option<DefaultDirectRateLimiter>,
    hour: Option<DefaultDirectRateLimiter>,
    /// The budget of rate-exempt types, made on first use.
    exempt: Option<DefaultDirectRateLimiter>,
    blocked_until: Option<Instant>,
    refusals: u32,
    /// The [`Rates`] generation its limiters were made under.
    generation: u64,
}

/// The verdict on one client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Go ahead.
    Allowed,
    /// Refused; try again after this long. `disconnect` when the client keeps pushing.
    Refused {
        /// When to retry.
        retry_after: Duration,
        /// Close the connection now.
        disconnect: bool,
    },
}

/// Why a connection was refused at upgrade.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionRefused {
    /// Too many connections from one address.
    #[error("too many connections from this address (limit {0})")]
    PerIp(usize),
    /// Too many connections of one user.
    #[error("too many connections for this user (limit {0})")]
    PerUser(usize),
}

/// Node-wide limit state.
pub struct Limits {
    /// What a reload may replace, swapped whole so that the message path takes no lock.
    rates: ArcSwap<Rates>,
    blocked_users: Mutex<HashMap<Arc<str>, Instant>>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    per_user_connections: Mutex<HashMap<Arc<str>, usize>>,
    /// The Redis broker, when limits are shared by a cluster.
    cluster: Option<Arc<RedisBroker>>,
}

fn quota_minute(n: u32) -> Option<Quota> {
    NonZeroU32::new(n).map(Quota::per_minute)
}

fn quota_hour(n: u32) -> Option<Quota> {
    NonZeroU32::new(n).map(Quota::per_hour)
}

/// The configured limits and the per-user limiters made for their rates.
struct Rates {
    config: Arc<LimitsConfig>,
    /// Per-minute and per-hour limiters keyed by user, when rates are limited at all.
    per_user: Option<Arc<(Option<UserLimiter>, Option<UserLimiter>)>>,
    /// Told apart from the previous rates by a reload that changed a quota; a connection's own
    /// limiters made under another generation are made again.
    generation: u64,
}

impl Rates {
    fn new(config: &LimitsConfig, generation: u64) -> Rates {
        let limited = config.messages_per_minute > 0 || config.messages_per_hour > 0;
        Rates {
            per_user: limited.then(|| {
                Arc::new((
                    quota_minute(config.messages_per_minute).map(RateLimiter::keyed),
                    quota_hour(config.messages_per_hour).map(RateLimiter::keyed),
                ))
            }),
            config: Arc::new(config.clone()),
            generation,
        }
    }

    fn same_quotas(&self, config: &LimitsConfig) -> bool {
        let old = &self.config;
        (old.messages_per_minute, old.messages_per_hour, old.exempt_per_second)
            == (config.messages_per_minute, config.messages_per_hour, config.exempt_per_second)
    }
}

impl Limits {
    /// Limits as configured, shared through `cluster` when the node runs with Redis.
    pub fn new(config: &LimitsConfig, cluster: Option<Arc<RedisBroker>>) -> Limits {
        Limits {
            rates: ArcSwap::from_pointee(Rates::new(config, 0)),
            blocked_users: Mutex::new(HashMap::new()),
            per_ip: Mutex::new(HashMap::new()),
            per_user_connections: Mutex::new(HashMap::new()),
            cluster,
        }
    }

    /// Redis while it is connected; `None` means this node's memory counts.
    fn shared(&self) -> Option<&RedisBroker> {
        self.cluster.as_deref().filter(|r| r.is_connected())
    }

    /// The limits in force: after a reload, the new ones.
    pub fn config(&self) -> Arc<LimitsConfig> {
        self.rates.load().config.clone()
    }

    /// Applies reloaded limits. New values apply to the next check: caps to the next connection,
    /// subscription or join (connections and memberships over a lowered cap stay); changed rates
    /// start each connection and user afresh under the new quota. Connection counts and blocks
    /// in force are kept.
    pub fn reload(&self, config: &LimitsConfig) {
        let current = self.rates.load_full();
        let next = if current.same_quotas(config) {
            // The limiters and everyone's place in them stay; only the other values change.
            Rates {
                config: Arc::new(config.clone()),
                per_user: current.per_user.clone(),
                generation: current.generation,
            }
        } else {
            Rates::new(config, current.generation + 1)
        };
        self.rates.store(Arc::new(next));
    }

    fn state<'a>(&self, rates: &Rates, state: &'a mut Option<Box<RateState>>) -> &'a mut RateState {
        if state.as_ref().is_some_and(|s| s.generation != rates.generation) {
            // Made under other quotas: its blocks and refusals stay, its windows start afresh.
            if let Some(old) = state.as_mut() {
                old.minute = quota_minute(rates.config.messages_per_minute).map(RateLimiter::direct);
                old.hour = quota_hour(rates.config.messages_per_hour).map(RateLimiter::direct);
                old.exempt = None;
                old.generation = rates.generation;
            }
        }
        state.get_or_insert_with(|| {
            Box::new(RateState {
                minute: quota_minute(rates.config.messages_per_minute).map(RateLimiter::direct),
                hour: quota_hour(rates.config.messages_per_hour).map(RateLimiter::direct),
                exempt: None,
                blocked_until: None,
                refusals: 0,
                generation: rates.generation,
            })
        })
    }

    /// Whether frames that are not valid messages (invalid JSON, no `type`) are rate limited:
    /// they are, whenever messages are, so garbage is never a free channel.
    pub fn counts_invalid(&self) -> bool {
        self.rates.load().per_user.is_some()
    }

    /// Whether `kind` is one of the rate-exempt types, which have their own per-second budget.
    pub fn is_exempt(&self, kind: &str) -> bool {
        self.rates.load().config.rate_exempt_types.iter().any(|t| t == kind)
    }

    /// Counts one message of a rate-exempt type against the connection's per-second budget.
    /// An allowed one does not forgive earlier refusals, so a flood that is mostly refused ends
    /// in a disconnection like any other abuse. `cursor_move` is outside the budget: whatever
    /// its rate, at most one position per connection and room goes out per
    /// `presence.cursor_interval`, and a pointer moved fast must not get an honest client closed.
    pub fn check_exempt(&self, state: &mut Option<Box<RateState>>, kind: &str) -> RateDecision {
        let rates = self.rates.load();
        let Some(per_second) = NonZeroU32::new(rates.config.exempt_per_second) else {
            return RateDecision::Allowed;
        };
        if kind == "cursor_move" {
            return RateDecision::Allowed;
        }
        let state = self.state(&rates, state);
        let budget = state.exempt.get_or_insert_with(|| RateLimiter::direct(Quota::per_second(per_second)));
        if budget.check().is_ok() {
            return RateDecision::Allowed;
        }
        refuse(&rates, state, Duration::from_secs(1))
    }

    /// Records a refusal decided by a handler (its own bound, e.g. typing changes per room);
    /// true when the connection has now been refused often enough to be closed.
    pub fn note_refusal(&self, state: &mut Option<Box<RateState>>) -> bool {
        let rates = self.rates.load();
        let state = self.state(&rates, state);
        matches!(refuse(&rates, state, Duration::from_secs(1)), RateDecision::Refused { disconnect: true, .. })
    }

    /// Whether messages of `kind` are rate limited at all.
    pub fn counts(&self, kind: &str) -> bool {
        let rates = self.rates.load();
        rates.per_user.is_some() && !rates.config.rate_exempt_types.iter().any(|t| t == kind)
    }

    /// Counts one message of a connection (and its user); `state` is the connection's own.
    pub async fn check_message(&self, state: &mut Option<Box<RateState>>, user: Option<&Arc<str>>) -> RateDecision {
        let now = Instant::now();
        // Held across the Redis round trips below: a reload during them applies from the next
        // message on. A guard, not a clone of the `Arc`: every shard counts messages here, and a
        // shared reference count would be one cache line all of them write.
        let rates = self.rates.load();
        let state = self.state(&rates, state);
        let user_block = match user {
            Some(user) => self.user_blocked_until(user, now).await,
            None => None,
        };
        let blocked = state.blocked_until.into_iter().chain(user_block).filter(|until| *until > now).max();
        if let Some(until) = blocked {
            return refuse(&rates, state, until - now);
        }
        let connection_ok = state.minute.as_ref().is_none_or(|l| l.check().is_ok())
            && state.hour.as_ref().is_none_or(|l| l.check().is_ok());
        let user_ok = match user {
            Some(user) => self.user_message(&rates, user).await,
            None => true,
        };
        if connection_ok && user_ok {
            state.refusals = 0;
            return RateDecision::Allowed;
        }
        let until = now + rates.config.block_duration;
        state.blocked_until = Some(until);
        if let Some(user) = user {
            self.block_user(user, until).await;
        }
        refuse(&rates, state, rates.config.block_duration)
    }

    async fn user_blocked_until(&self, user: &Arc<str>, now: Instant) -> Option<Instant> {
        if let Some(redis) = self.shared() {
            let key = keys::key(redis.key_prefix(), "lim:block", &[user]);
            let ttl_ms: i64 = redis.query_as(redis::cmd("PTTL").arg(key)).await.unwrap_or(-2);
            return (ttl_ms > 0).then(|| now + Duration::from_millis(ttl_ms as u64));
        }
        self.blocked_users.lock().get(user).copied()
    }

    async fn block_user(&self, user: &Arc<str>, until: Instant) {
        if let Some(redis) = self.shared() {
            let key = keys::key(redis.key_prefix(), "lim:block", &[user]);
            let ms = until.saturating_duration_since(Instant::now()).as_millis().max(1) as u64;
            let _: Result<(), _> = redis.query_as(redis::cmd("SET").arg(key).arg(1).arg("PX").arg(ms)).await;
            return;
        }
        self.blocked_users.lock().insert(user.clone(), until);
    }

    /// Counts a message of `user`; false once the user is over a rate.
    async fn user_message(&self, rates: &Rates, user: &Arc<str>) -> bool {
        if let Some(redis) = self.shared() {
            // Fixed windows shared by all nodes: one round trip per message.
            let secs = crate::stats::unix_millis() / 1000;
            let prefix = redis.key_prefix();
            // Both windows under the user's hash tag: one slot, so one pipeline on a Redis Cluster.
            let user_key = keys::tagged(prefix, "lim:rate", user);
            let minute_key = format!("{user_key}:m{}", secs / 60);
            let hour_key = format!("{user_key}:h{}", secs / 3600);
            let mut pipe = redis::pipe();
            pipe.cmd("INCR").arg(&minute_key).cmd("EXPIRE").arg(&minute_key).arg(120).ignore();
            pipe.cmd("INCR").arg(&hour_key).cmd("EXPIRE").arg(&hour_key).arg(7200).ignore();
            let Ok((minute, hour)) = redis.pipeline_as::<(u64, u64)>(&pipe).await else { return true };
            let over = |count: u64, limit: u32| limit > 0 && count > u64::from(limit);
            return !over(minute, rates.config.messages_per_minute) && !over(hour, rates.config.messages_per_hour);
        }
        let Some((minute, hour)) = rates.per_user.as_deref() else { return true };
        minute.as_ref().is_none_or(|l| l.check_key(user).is_ok())
            && hour.as_ref().is_none_or(|l| l.check_key(user).is_ok())
    }

    /// Forgets idle per-user state; called once a second.
    pub fn housekeeping(&self) {
        if let Some((minute, hour)) = self.rates.load().per_user.as_deref() {
            for limiter in [minute, hour].into_iter().flatten() {
                limiter.retain_recent();
            }
        }
        let now = Instant::now();
        self.blocked_users.lock().retain(|_, until| *until > now);
    }

    /// Reserves a connection slot for `ip` and `user`; the permit gives it back when dropped.
    pub async fn acquire_connection(
        self: &Arc<Self>,
        ip: IpAddr,
        user: Option<Arc<str>>,
    ) -> Result<ConnectionPermit, ConnectionRefused> {
        let config = self.config();
        let (ip_cap, user_cap) = (config.max_connections_per_ip, config.max_connections_per_user);
        let user = user.filter(|_| user_cap > 0);
        let shared = self.shared().is_some();
        let mut permit = ConnectionPermit { limits: self.clone(), ip: None, user: None, shared };
        if ip_cap > 0 {
            let count = self
                .count_up(shared, ("ip", &ip.to_string()), || {
                    let mut map = self.per_ip.lock();
                    let n = map.entry(ip).or_default();
                    *n += 1;
                    *n
                })
                .await;
            permit.ip = Some(ip);
            if count > ip_cap {
                return Err(ConnectionRefused::PerIp(ip_cap));
            }
        }
        if let Some(user) = user {
            let count = self
                .count_up(shared, ("user", &user), || {
                    let mut map = self.per_user_connections.lock();
                    let n = map.entry(user.clone()).or_default();
                    *n += 1;
                    *n
                })
                .await;
            permit.user = Some(user);
            if count > user_cap {
                return Err(ConnectionRefused::PerUser(user_cap));
            }
        }
        Ok(permit)
    }

    /// Counts a connection up, locally or across nodes; returns the new total. A failed Redis
    /// round trip counts the connection as the only one rather than refusing it.
    async fn count_up(&self, shared: bool, (kind, name): (&str, &str), local: impl FnOnce() -> usize) -> usize {
        if !shared {
            return local();
        }
        if let Some(redis) = self.cluster.as_deref() {
            let hash = keys::key(redis.key_prefix(), "lim:conn", &[kind, name]);
            let field = redis.incarnation();
            // The count and the registry of live nodes in one round trip: a field counts only while
            // its node is alive. (Two slots on a Redis Cluster: the pipeline is split there, and
            // every reply is returned, so none is ignored here.)
            let mut pipe = redis::pipe();
            pipe.cmd("HINCRBY").arg(&hash).arg(field).arg(1).cmd("HGETALL").arg(&hash);
            pipe.cmd("HGETALL").arg(redis.registry_key());
            if let Ok((_, counts, registry)) =
                redis.pipeline_as::<(i64, HashMap<String, i64>, HashMap<String, String>)>(&pipe).await
            {
                let live = redis.live_from_registry(registry.values());
                return counts
                    .iter()
                    .filter(|(field, _)| *field == redis.incarnation() || live.contains(*field))
                    .map(|(_, n)| (*n).max(0) as usize)
                    .sum();
            }
        }
        1
    }

    fn release(&self, shared: bool, ip: Option<IpAddr>, user: Option<&Arc<str>>) {
        if shared {
            let Some(redis) = self.cluster.clone() else { return };
            let keys: Vec<String> = ip
                .map(|ip| keys::key(redis.key_prefix(), "lim:conn", &["ip", &ip.to_string()]))
                .into_iter()
                .chain(user.map(|u| keys::key(redis.key_prefix(), "lim:conn", &["user", u])))
                .collect();
            let field = redis.incarnation().to_string();
            // Runs on whichever runtime drops the permit (a shard's or the control runtime).
            tokio::spawn(async move {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("HINCRBY").arg(key).arg(&field).arg(-1).ignore();
                }
                // If Redis is down the count stays with this node's incarnation, which stops
                // counting when the node restarts or dies.
                let _ = redis.pipeline_as::<()>(&pipe).await;
            });
            return;
        }
        if let Some(ip) = ip {
            let mut map = self.per_ip.lock();
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
        if let Some(user) = user {
            let mut map = self.per_user_connections.lock();
            if let Some(n) = map.get_mut(user) {
                *n -= 1;
                if *n == 0 {
                    map.remove(user);
                }
            }
        }
    }
}

fn refuse(rates: &Rates, state: &mut RateState, retry_after: Duration) -> RateDecision {
    state.refusals += 1;
    let limit = rates.config.disconnect_after_refusals;
    RateDecision::Refused { retry_after, disconnect: limit > 0 && state.refusals >= limit }
}

/// A reserved connection slot; dropping it gives the slot back.
pub struct ConnectionPermit {
    limits: Arc<Limits>,
    ip: Option<IpAddr>,
    user: Option<Arc<str>>,
    shared: bool,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if self.ip.is_some() || self.user.is_some() {
            self.limits.release(self.shared, self.ip, self.user.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload with another quota applies to a connection that already has its limiters; one
    /// with the same quotas keeps its place in them.
    #[test]
    fn a_reloaded_quota_applies_to_existing_connections() {
        let generous = LimitsConfig { exempt_per_second: 1000, ..LimitsConfig::default() };
        let limits = Limits::new(&generous, None);
        let mut state = None;
        for _ in 0..3 {
            assert_eq!(limits.check_exempt(&mut state, "typing_start"), RateDecision::Allowed);
        }
        // Same quotas, another cap: the budget already used stays used.
        limits.reload(&LimitsConfig { max_connections: 7, ..generous.clone() });
        assert_eq!(limits.config().max_connections, 7);
        assert_eq!(state.as_ref().map(|s| s.generation), Some(0));
        assert_eq!(limits.check_exempt(&mut state, "typing_start"), RateDecision::Allowed);
        assert_eq!(state.as_ref().map(|s| s.generation), Some(0));

        limits.reload(&LimitsConfig { exempt_per_second: 1, ..generous });
        assert_eq!(limits.check_exempt(&mut state, "typing_start"), RateDecision::Allowed);
        assert!(matches!(limits.check_exempt(&mut state, "typing_start"), RateDecision::Refused { .. }));
    }

    #[test]
    fn exempt_types_are_not_counted() {
        let limits = Limits::new(&LimitsConfig::default(), None);
        assert!(limits.counts("chat_message"));
        assert!(!limits.counts("cursor_move"));
        let off = Limits::new(
            &LimitsConfig { messages_per_minute: 0, messages_per_hour: 0, ..LimitsConfig::default() },
            None,
        );
        assert!(!off.counts("chat_message"));
    }
}
