//! The hub: which connections an event reaches, and the shards that deliver it.
//!
//! The node-wide [`Hub`] is a handle: it holds each shard's inbox and the node's *interest*
//! (which channels, rooms and users have at least one local connection), which the broker uses
//! to subscribe only to what this node needs. The index itself is split per shard
//! ([`shard::Shard`]), so no lock sits between an event and its recipients.

pub(crate) mod cycle;
pub mod event;
pub(crate) mod index;
pub mod rules;
pub mod shape;
pub mod shard;

use std::any::Any;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::FutureExt;
use futures_util::future::Shared;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

pub use event::{ConnId, Event, Route, Target};
use shard::{ShardMsg, ShardRef};

/// The prefix of every hub name (channel or user) in the namespace `space` of a protocol face:
/// `"\x1fp<space>\x1f"` (a Pusher app's id). Herald's own names can never hold a control
/// character, so nothing else can reach these names.
pub fn namespace_prefix(space: &str) -> String {
    format!("\u{1f}p{space}\u{1f}")
}

/// A namespaced hub name's namespace and its own name (see [`namespace_prefix`]); `None` for a
/// name of Herald's own protocol. Namespaces hold no control character.
pub fn namespaced(hub_name: &str) -> Option<(&str, &str)> {
    hub_name.strip_prefix("\u{1f}p")?.split_once('\u{1f}')
}

/// Capacity of a shard's inbox; a full inbox makes publishers wait (back-pressure).
const INBOX_CAPACITY: usize = 16 * 1024;

/// A key the node may need events for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InterestKey {
    /// A channel with local subscribers.
    Channel(Arc<str>),
    /// A room with local members.
    Room(Arc<str>),
    /// A user with local connections.
    User(Arc<str>),
}

/// Resolves once the broker listens for a key, so that an acknowledgement sent after it means
/// "events published anywhere reach you from now on".
pub type InterestReady = Shared<oneshot::Receiver<()>>;

/// A change of the node's interest: `present` is true when the first local connection appeared,
/// false when the last one left.
#[derive(Debug)]
pub struct InterestChange {
    /// The key.
    pub key: InterestKey,
    /// Whether the node now has local connections for it.
    pub present: bool,
    /// Signalled by the broker once it listens for the key.
    pub ready: Option<oneshot::Sender<()>>,
}

struct ShardHandle {
    inbox: mpsc::Sender<ShardMsg>,
}

/// The node-wide handle on all shards.
pub struct Hub {
    shards: Vec<ShardHandle>,
    next_shard: AtomicUsize,
    interest: Mutex<Interest>,
}

#[derive(Default)]
struct Interest {
    /// Number of shards with local connections for each key.
    counts: HashMap<InterestKey, u32>,
    listener: Option<mpsc::UnboundedSender<InterestChange>>,
    /// Keys whose broker subscription is still in flight.
    pending: HashMap<InterestKey, InterestReady>,
}

impl Hub {
    /// A hub for `shards` shards, with the inboxes the shard threads will read.
    pub(crate) fn new(shards: usize) -> (Hub, Vec<mpsc::Receiver<ShardMsg>>) {
        let (handles, inboxes) = (0..shards)
            .map(|_| {
                let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
                (ShardHandle { inbox: tx }, rx)
            })
            .unzip();
        (Hub { shards: handles, next_shard: AtomicUsize::new(0), interest: Mutex::new(Interest::default()) }, inboxes)
    }

    /// Hands an event to every shard for local fan-out. Waits while a shard's inbox is full.
    pub async fn dispatch(&self, event: Arc<Event>) {
        for shard in &self.shards {
            // A closed inbox means the node is stopping; the event has nowhere to go.
            let _ = shard.inbox.send(ShardMsg::Deliver(event.clone())).await;
        }
    }

    /// Hands several events to every shard in one inbox message per shard, in order: a batch
    /// publish of a hundred targeted events costs each shard one wake-up, not a hundred, and
    /// the shard writes each touched socket once for the whole group.
    pub async fn dispatch_many(&self, events: Vec<Arc<Event>>) {
        if events.len() <= 1 {
            // None, or a lone event: the ordinary path, with no shared slice to allocate.
            for event in events {
                self.dispatch(event).await;
            }
            return;
        }
        let events: Arc<[Arc<Event>]> = events.into();
        for shard in &self.shards {
            let _ = shard.inbox.send(ShardMsg::DeliverMany(events.clone())).await;
        }
    }

    /// The shard with the fewest connections (ties rotate).
    pub(crate) fn pick_shard(&self, load: impl Fn(usize) -> u64) -> usize {
        let start = self.next_shard.fetch_add(1, Ordering::Relaxed);
        let n = self.shards.len();
        (0..n).map(|i| (start + i) % n).min_by_key(|&i| load(i)).unwrap_or(0)
    }

    /// Runs `f` on one shard's thread (adopting an upgraded connection, starting a fallback
    /// session there). `S` is the shard's type (`session::Shard`); the hub does not know it.
    pub(crate) async fn run_on<S: 'static>(&self, shard: usize, f: impl FnOnce(&Rc<S>) + Send + 'static) {
        if let Some(handle) = self.shards.get(shard) {
            let call: shard::ShardCall = Box::new(move |s: &dyn ShardRef| {
                if let Some(s) = (s as &dyn Any).downcast_ref::<Rc<S>>() {
                    f(s);
                }
            });
            let _ = handle.inbox.send(ShardMsg::Call(call)).await;
        }
    }

    /// Runs `f` on every shard and collects the results. `S` is the shard's type
    /// (`session::Shard`), named by the caller; the hub does not know it.
    pub async fn ask<S, T, F>(&self, f: F) -> Vec<T>
    where
        S: 'static,
        T: Send + 'static,
        F: Fn(&Rc<S>) -> T + Send + Sync + 'static,
    {
        self.ask_any(move |s: &dyn ShardRef| (s as &dyn Any).downcast_ref::<Rc<S>>().map(&f))
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Runs `f` on every shard, whatever its connections' type, and collects the results.
    pub async fn ask_any<T, F>(&self, f: F) -> Vec<T>
    where
        T: Send + 'static,
        F: Fn(&dyn ShardRef) -> T + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let mut replies = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            let (tx, rx) = oneshot::channel();
            let f = f.clone();
            let call = ShardMsg::Call(Box::new(move |s: &dyn ShardRef| {
                let _ = tx.send(f(s));
            }));
            if shard.inbox.send(call).await.is_ok() {
                replies.push(rx);
            }
        }
        let mut results = Vec::with_capacity(replies.len());
        for reply in replies {
            if let Ok(value) = reply.await {
                results.push(value);
            }
        }
        results
    }

    /// Closes the connection `id` of this node with 4001 (its protocol's code for "disconnected
    /// by an administrator"); returns whether it was here.
    pub async fn disconnect_local(&self, id: &str) -> bool {
        let wanted: Arc<str> = Arc::from(id);
        self.disconnect_matching(move |connection, _| *connection == *wanted).await > 0
    }

    /// Closes every connection of `user` on this node with 4001 (or its protocol's code); returns
    /// how many there were.
    pub async fn disconnect_user_local(&self, user: &str) -> usize {
        let wanted: Arc<str> = Arc::from(user);
        self.disconnect_matching(move |_, user| user == Some(&*wanted)).await
    }

    /// Closes every connection of this node that `matches` picks by connection and user id, each with its protocol's code
    /// for "disconnected by an administrator"; returns how many there were.
    async fn disconnect_matching<F>(&self, matches: F) -> usize
    where
        F: Fn(&str, Option<&str>) -> bool + Send + Sync + 'static,
    {
        self.ask_any(move |shard| shard.disconnect_matching(&matches)).await.into_iter().sum()
    }

    /// The client ids of every connection of this node (with repeats).
    pub async fn client_ids(&self) -> Vec<String> {
        self.ask_any(|shard| shard.client_ids()).await.into_iter().flatten().collect()
    }

    /// Tells every shard to close its connections with 1001.
    pub(crate) async fn shutdown(&self) {
        for shard in &self.shards {
            let _ = shard.inbox.send(ShardMsg::Shutdown).await;
        }
    }

    /// Records that a shard gained (`present`) or lost its last local connection for `key`;
    /// the listener hears only node-wide transitions. When the broker must first subscribe, the
    /// returned future resolves once it has.
    pub(crate) fn interest(&self, key: InterestKey, present: bool) -> Option<InterestReady> {
        let mut interest = self.interest.lock();
        if present {
            let count = interest.counts.entry(key.clone()).or_insert(0);
            *count += 1;
            if *count > 1 {
                // Another shard's subscription for the key may still be in flight.
                let pending = interest.pending.get(&key).cloned();
                return match pending {
                    Some(ready) if ready.peek().is_none() => Some(ready),
                    Some(_) => {
                        interest.pending.remove(&key);
                        None
                    }
                    None => None,
                };
            }
            let listener = interest.listener.clone()?;
            let (tx, rx) = oneshot::channel();
            let ready = rx.shared();
            interest.pending.insert(key.clone(), ready.clone());
            let _ = listener.send(InterestChange { key, present: true, ready: Some(tx) });
            Some(ready)
        } else {
            match interest.counts.get_mut(&key) {
                Some(count) if *count > 1 => *count -= 1,
                Some(_) => {
                    interest.counts.remove(&key);
                    interest.pending.remove(&key);
                    if let Some(listener) = &interest.listener {
                        let _ = listener.send(InterestChange { key, present: false, ready: None });
                    }
                }
                None => {}
            }
            None
        }
    }

    /// The readiness of a key whose broker subscription is still in flight.
    pub(crate) fn pending(&self, key: &InterestKey) -> Option<InterestReady> {
        self.interest.lock().pending.get(key).filter(|ready| ready.peek().is_none()).cloned()
    }

    /// Waits (bounded by `limit`) until the broker listens for every key in `waits`.
    pub async fn ready(waits: Vec<InterestReady>, limit: std::time::Duration) {
        if !waits.is_empty() {
            let _ = tokio::time::timeout(limit, futures_util::future::join_all(waits)).await;
        }
    }

    /// Starts reporting interest changes; returns the keys of current interest and the stream
    /// of later changes, atomically so none is missed.
    pub fn watch_interest(&self) -> (Vec<InterestKey>, mpsc::UnboundedReceiver<InterestChange>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut interest = self.interest.lock();
        interest.listener = Some(tx);
        (interest.counts.keys().cloned().collect(), rx)
    }

    /// Distinct channels, rooms and users with local connections.
    pub fn interest_counts(&self) -> (usize, usize, usize) {
        let interest = self.interest.lock();
        let mut counts = (0, 0, 0);
        for key in interest.counts.keys() {
            match key {
                InterestKey::Channel(_) => counts.0 += 1,
                InterestKey::Room(_) => counts.1 += 1,
                InterestKey::User(_) => counts.2 += 1,
            }
        }
        counts
    }

    /// Whether this node has a local connection in `room`.
    pub fn has_room(&self, room: &str) -> bool {
        self.interest.lock().counts.contains_key(&InterestKey::Room(Arc::from(room)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespaced_name_splits_back_into_its_parts() {
        let name = format!("{}private-jobs", namespace_prefix("app-1"));
        assert_eq!(namespaced(&name), Some(("app-1", "private-jobs")));
        assert_eq!(namespaced("jobs"), None);
    }

    #[test]
    fn a_batch_reaches_each_shard_as_one_message_in_order() {
        let (hub, mut inboxes) = Hub::new(2);
        let events: Vec<Arc<Event>> = (0..3)
            .map(|n| Event::new(Target::of(None, None, Some(&format!("u{n}"))), bytes::Bytes::from("{}")))
            .collect();
        hub.dispatch_many(events.clone()).now_or_never().expect("room in the inboxes");
        for inbox in &mut inboxes {
            let Ok(ShardMsg::DeliverMany(got)) = inbox.try_recv() else { panic!("one grouped message") };
            assert!(got.iter().zip(&events).all(|(a, b)| Arc::ptr_eq(a, b)), "the same events, in order");
            assert!(inbox.try_recv().is_err(), "and nothing else");
        }
    }

    #[test]
    fn interest_reports_only_node_wide_transitions() {
        let (hub, _inboxes) = Hub::new(2);
        let (initial, mut changes) = hub.watch_interest();
        assert!(initial.is_empty());
        let key = InterestKey::Channel(Arc::from("jobs"));
        let first = hub.interest(key.clone(), true).expect("the first subscriber waits for the broker");
        let second = hub.interest(key.clone(), true).expect("so does a second one while it is in flight");
        hub.interest(key.clone(), false);
        hub.interest(key.clone(), false);
        hub.interest(key.clone(), false);
        let change = changes.try_recv().unwrap();
        assert_eq!((&change.key, change.present), (&key, true));
        change.ready.unwrap().send(()).unwrap();
        assert!(first.now_or_never().is_some() && second.now_or_never().is_some());
        let change = changes.try_recv().unwrap();
        assert_eq!((&change.key, change.present), (&key, false));
        assert!(changes.try_recv().is_err());
    }
}
