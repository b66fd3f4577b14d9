//! A shard: one OS thread with its own single-threaded runtime, owning a share of the node's
//! connections, their index and their sockets.
//!
//! Everything about a connection happens on its shard's thread: the HTTP request that upgraded
//! it, its reader, its writes and every fan-out that reaches it. Events arrive through the
//! shard's bounded inbox; a batch of them is fanned out with writes deferred, then every touched
//! socket is written once. One event to ten thousand local connections is one pass over an
//! index and at most ten thousand `writev` calls, with no task wake-ups and no locks.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use slab::Slab;
use tokio::sync::mpsc;
use tokio::task::LocalSet;

use super::cycle::{Cycle, Dirty, slices_for, step, write_hold};
use super::event::{ConnId, Event, NotificationTags, Target, Transport};
use super::index::LocalIndex;
use super::{Hub, InterestKey, InterestReady, Route};
use crate::config::{CompressionConfig, Config, EndpointKind};
use crate::protocol::outbound;
use crate::stats::{self, ShardCounters, Stats};
use crate::transport::frame::{self, close_code};
use crate::transport::io::{ConnIo, TlsIo};

/// What a shard needs of the node it runs in (the node implements it; `node.rs`): the hub for
/// interest, the counters, the configuration (compression, heartbeats, timeouts). The shard
/// hands the whole host on to its connections ([`Shard::host`]) without looking further.
pub trait Host: Send + Sync + 'static {
    /// The node's hub (interest changes).
    fn hub(&self) -> &Hub;
    /// The node's counters.
    fn stats(&self) -> &Stats;
    /// The configuration the node started with.
    fn config(&self) -> &Config;
}

/// A connection as its shard sees it: what the index, the fan-out, the sweeps and the admin
/// commands need. `session::Session` implements it; the shard is generic over it, so the
/// per-recipient calls of the fan-out are direct (monomorphised), not through a vtable.
pub trait Connection: Sized + 'static {
    /// What the connection's handlers reach the node through.
    type Host: Host;
    /// What the upgrade decided about a connection, carried to its shard.
    type Plan: Send + 'static;

    /// Runs an adopted connection until it ends (its task on the shard).
    fn run(shard: Rc<Shard<Self>>, io: ConnIo, leftover: Bytes, plan: Self::Plan)
    -> impl Future<Output = ()> + 'static;

    /// Its number within the node (an event's `exclude`).
    fn id(&self) -> ConnId;
    /// The id clients and operators see.
    fn connection_id(&self) -> &str;
    /// The client's own id.
    fn client_id(&self) -> &str;
    /// What its endpoint serves.
    fn kind(&self) -> EndpointKind;
    /// The request path it connected to.
    fn path(&self) -> &str;
    /// Its transport (WebSocket, SSE, NDJSON).
    fn transport(&self) -> Transport;
    /// The user id, if any.
    fn user_id(&self) -> Option<Arc<str>>;
    /// Whether a token proved who this is.
    fn is_authenticated(&self) -> bool;
    /// Its slot in the shard's slab (the index's handle on it).
    fn slot(&self) -> &Cell<usize>;
    /// The channels and rooms it is in, mirroring the shard's index.
    fn memberships(&self) -> &RefCell<Memberships>;

    /// Whether its notification filter lets a notification through.
    fn accepts_notification(&self, tags: &NotificationTags) -> bool;
    /// The frame it gets for `event`, or `None` if it should not get it.
    fn frame_for(&self, event: &Event, compression: &CompressionConfig) -> Option<Bytes>;
    /// Queues a frame (written at once, or at the end of the shard's batch).
    fn send(self: &Rc<Self>, shard: &Shard<Self>, frame: Bytes);
    /// Writes what the batch queued.
    fn flush(self: &Rc<Self>, shard: &Shard<Self>);
    /// Starts closing it with `code`.
    fn close(self: &Rc<Self>, shard: &Shard<Self>, code: u16, reason: &str);
    /// Cuts the socket at once.
    fn abort(&self);
    /// Frames waiting in its queue.
    fn queued(&self) -> usize;
    /// When a closing connection is cut if the peer has not finished the handshake.
    fn close_deadline(&self) -> Option<Instant>;
    /// When anything last arrived from the peer.
    fn last_seen(&self) -> Instant;
    /// Whether it is a fallback session (no socket of its own: no pings, no idle timeout).
    fn is_fallback(&self) -> bool;
    /// Acts on its token's expiry (the sweep's per-connection check).
    fn check_expiry(self: &Rc<Self>, shard: &Rc<Shard<Self>>, now: std::time::SystemTime);
}

/// The channels and rooms a connection is in: the connection's side of the shard's index.
#[derive(Debug, Default)]
pub struct Memberships {
    /// Subscribed channels.
    pub channels: HashSet<Arc<str>>,
    /// Joined rooms.
    pub rooms: HashSet<Arc<str>>,
}

/// A WebSocket connection handed over after its upgrade, with what was decided about it.
pub(crate) struct Adoption<P> {
    /// The socket, detached from the runtime that served the HTTP request.
    pub stream: std::net::TcpStream,
    /// The TLS session, for a connection that arrived over TLS.
    pub tls: Option<tokio_rustls::rustls::ServerConnection>,
    /// Bytes the client sent after its handshake that HTTP parsing already read.
    pub leftover: Bytes,
    /// Pre-subscriptions, identity, limits.
    pub plan: P,
}

/// A shard as the hub reaches it from another thread, whatever its connections' type: for the
/// admin commands that concern every connection, and (downcast) for typed calls.
pub trait ShardRef: Any {
    /// Closes every connection that `pick` chooses (by connection id and user id), each with
    /// its protocol's code for "disconnected by an administrator"; returns how many.
    fn disconnect_matching(&self, pick: &dyn Fn(&str, Option<&str>) -> bool) -> usize;
    /// The client ids of every connection.
    fn client_ids(&self) -> Vec<String>;
}

impl<C: Connection> ShardRef for Rc<Shard<C>> {
    fn disconnect_matching(&self, pick: &dyn Fn(&str, Option<&str>) -> bool) -> usize {
        let picked: Vec<_> =
            self.all_sessions().into_iter().filter(|s| pick(s.connection_id(), s.user_id().as_deref())).collect();
        for session in &picked {
            let code = close_code::close_for(session.kind(), close_code::DISCONNECTED_BY_ADMIN);
            session.close(self, code, "disconnected by an administrator");
        }
        picked.len()
    }

    fn client_ids(&self) -> Vec<String> {
        self.sessions.borrow().iter().map(|(_, s)| s.client_id().to_string()).collect()
    }
}

/// A function run on a shard's thread.
pub(crate) type ShardCall = Box<dyn FnOnce(&dyn ShardRef) + Send>;

/// Work sent to a shard.
pub(crate) enum ShardMsg {
    /// An event to fan out to this shard's connections.
    Deliver(Arc<Event>),
    /// Several events to fan out in order (a batch publish), shared by every shard.
    DeliverMany(Arc<[Arc<Event>]>),
    /// A function to run on the shard's thread (adoptions, admin queries, targeted disconnects).
    Call(ShardCall),
    /// Close every connection with 1001 and stop accepting.
    Shutdown,
}

/// How long shutdown waits for pending acknowledgements before closing connections anyway.
const ACK_GRACE: Duration = Duration::from_secs(2);

/// One shard's state; lives on, and is only touched from, its own thread.
pub struct Shard<C: Connection> {
    number: usize,
    host: Arc<C::Host>,
    sessions: RefCell<Slab<Rc<C>>>,
    index: RefCell<LocalIndex>,
    batching: Cell<bool>,
    /// Connections whose writes a batch deferred, by slice of the write cycle ([`super::cycle`]).
    dirty: RefCell<Dirty<C>>,
    /// The most recipients of one event in the current pass: the connections it writes to,
    /// whether at once, at its end or (for a connection whose socket is full) when writable.
    pass_recipients: Cell<usize>,
    shutting_down: Cell<bool>,
    next_heartbeat: Cell<Instant>,
    /// Acknowledgement tasks waiting for the writer; shutdown lets them answer before closing.
    acks_pending: Cell<usize>,
    acks_settled: tokio::sync::Notify,
    /// `herald_publish_to_write_seconds`, looked up once instead of through the macro's
    /// registry lookup for every event delivered.
    publish_to_write: metrics::Histogram,
}

impl<C: Connection> Shard<C> {
    /// This shard's number.
    pub fn number(&self) -> usize {
        self.number
    }

    /// The node this shard belongs to, as its connections reach it.
    pub fn host(&self) -> &Arc<C::Host> {
        &self.host
    }

    fn hub(&self) -> &Hub {
        self.host.hub()
    }

    /// This shard's counters.
    pub fn counters(&self) -> &ShardCounters {
        &self.host.stats().shards[self.number]
    }

    /// Whether a fan-out batch is in progress (writes are deferred to its end).
    pub(crate) fn in_batch(&self) -> bool {
        self.batching.get()
    }

    /// Remembers a connection to write at the end of the batch, or in a write cycle at its
    /// slice's turn.
    pub(crate) fn mark_dirty(&self, session: &Rc<C>) {
        self.dirty.borrow_mut().mark(session.slot().get(), session);
    }

    /// Runs a task on this shard's thread.
    pub fn spawn(&self, future: impl Future<Output = ()> + 'static) {
        tokio::task::spawn_local(future);
    }

    /// Runs a task that acknowledges a write to a client once the writer answers. Shutdown
    /// waits (briefly) for these before closing connections, so a committed message is
    /// acknowledged before its connection closes.
    pub(crate) fn spawn_ack(self: &Rc<Self>, future: impl Future<Output = ()> + 'static) {
        self.acks_pending.set(self.acks_pending.get() + 1);
        let shard = self.clone();
        tokio::task::spawn_local(async move {
            future.await;
            shard.acks_pending.set(shard.acks_pending.get() - 1);
            if shard.acks_pending.get() == 0 {
                shard.acks_settled.notify_waiters();
            }
        });
    }

    /// Whether the shard is closing its connections for shutdown.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    /// Adds a connection.
    pub(crate) fn register(&self, session: &Rc<C>) {
        let slot = self.sessions.borrow_mut().insert(session.clone());
        session.slot().set(slot);
        let counters = self.counters();
        if session.kind() == EndpointKind::Stats {
            stats::bump(&counters.observers, 1);
            return;
        }
        stats::bump(&counters.connections, 1);
        stats::bump(&counters.connections_total, 1);
        let by_transport = &counters.by_transport[session.transport().index()];
        stats::bump(&by_transport[stats::by_transport::OPEN], 1);
        stats::bump(&by_transport[stats::by_transport::ACCEPTED], 1);
        let (path, transport) = match session.kind() {
            EndpointKind::Pusher => (stats::PUSHER_ENDPOINT, stats::PUSHER_TRANSPORT),
            _ => (session.path(), session.transport().index()),
        };
        self.host.stats().endpoints.opened(path, transport);
        if session.is_authenticated() {
            stats::bump(&counters.authenticated, 1);
        }
    }

    /// Removes a connection and every index entry that points at it.
    pub(crate) fn unregister(&self, session: &Rc<C>) {
        let slot = session.slot().get();
        let (channels, rooms) = {
            let mut state = session.memberships().borrow_mut();
            (std::mem::take(&mut state.channels), std::mem::take(&mut state.rooms))
        };
        {
            let mut index = self.index.borrow_mut();
            for channel in &channels {
                if index.channels.remove(channel, slot) {
                    self.hub().interest(InterestKey::Channel(channel.clone()), false);
                }
            }
            for room in &rooms {
                if index.rooms.remove(room, slot) {
                    self.hub().interest(InterestKey::Room(room.clone()), false);
                }
            }
            if let Some(user) = session.user_id()
                && index.users.remove(&user, slot)
            {
                self.hub().interest(InterestKey::User(user), false);
            }
        }
        let counters = self.counters();
        stats::drop_by(&counters.channel_subscriptions, channels.len() as u64);
        stats::drop_by(&counters.room_memberships, rooms.len() as u64);
        if session.kind() == EndpointKind::Stats {
            stats::drop_by(&counters.observers, 1);
        } else {
            stats::drop_by(&counters.connections, 1);
            let by_transport = &counters.by_transport[session.transport().index()];
            stats::drop_by(&by_transport[stats::by_transport::OPEN], 1);
            if session.is_authenticated() {
                stats::drop_by(&counters.authenticated, 1);
            }
        }
        let mut sessions = self.sessions.borrow_mut();
        if sessions.get(slot).is_some_and(|s| Rc::ptr_eq(s, session)) {
            sessions.remove(slot);
        }
    }

    /// Subscribes a connection to a channel. The returned future, if any, resolves once the
    /// broker listens for the channel; acknowledge only after it.
    pub(crate) fn subscribe(&self, session: &C, channel: &str) -> Option<InterestReady> {
        if session.memberships().borrow().channels.contains(channel) {
            return self.hub().pending(&InterestKey::Channel(Arc::from(channel)));
        }
        let (name, first) = self.index.borrow_mut().channels.add(channel, session.slot().get());
        session.memberships().borrow_mut().channels.insert(name.clone());
        stats::bump(&self.counters().channel_subscriptions, 1);
        self.interest_added(InterestKey::Channel(name), first)
    }

    fn interest_added(&self, key: InterestKey, first_on_shard: bool) -> Option<InterestReady> {
        if first_on_shard { self.hub().interest(key, true) } else { self.hub().pending(&key) }
    }

    /// Unsubscribes a connection from a channel; `false` if it was not subscribed.
    pub(crate) fn unsubscribe(&self, session: &C, channel: &str) -> bool {
        let Some(name) = session.memberships().borrow_mut().channels.take(channel) else {
            return false;
        };
        stats::drop_by(&self.counters().channel_subscriptions, 1);
        if self.index.borrow_mut().channels.remove(channel, session.slot().get()) {
            self.hub().interest(InterestKey::Channel(name), false);
        }
        true
    }

    /// Adds a connection to a room; the future works as for [`Shard::subscribe`].
    pub(crate) fn join(&self, session: &C, room: &str) -> Option<InterestReady> {
        if session.memberships().borrow().rooms.contains(room) {
            return self.hub().pending(&InterestKey::Room(Arc::from(room)));
        }
        let (name, first) = self.index.borrow_mut().rooms.add(room, session.slot().get());
        session.memberships().borrow_mut().rooms.insert(name.clone());
        stats::bump(&self.counters().room_memberships, 1);
        self.interest_added(InterestKey::Room(name), first)
    }

    /// Removes a connection from a room; `false` if it was not a member.
    pub(crate) fn leave(&self, session: &C, room: &str) -> bool {
        let Some(name) = session.memberships().borrow_mut().rooms.take(room) else {
            return false;
        };
        stats::drop_by(&self.counters().room_memberships, 1);
        if self.index.borrow_mut().rooms.remove(room, session.slot().get()) {
            self.hub().interest(InterestKey::Room(name), false);
        }
        true
    }

    /// Indexes a connection under its user, for user-targeted events.
    pub(crate) fn bind_user(&self, session: &C) -> Option<InterestReady> {
        let user = session.user_id()?;
        let (name, first) = self.index.borrow_mut().users.add(&user, session.slot().get());
        self.interest_added(InterestKey::User(name), first)
    }

    /// Fans an event out to this shard's recipients: channel subscribers, room members and the
    /// user's connections, each once.
    pub(crate) fn deliver(self: &Rc<Self>, event: &Event) {
        let sessions = self.sessions.borrow();
        let index = self.index.borrow();
        let mut delivered = 0u64;
        let compression = &self.host.config().compression;
        let mut deliver_to = |session: &Rc<C>| {
            if event.exclude == Some(session.id()) {
                return;
            }
            if let Some(tags) = &event.tags
                && !session.accepts_notification(tags)
            {
                return;
            }
            if let Some(frame) = session.frame_for(event, compression) {
                session.send(self, frame);
                delivered += 1;
            }
        };
        match event.route {
            Route::Broadcast => self.for_each_event_session(&sessions, &mut deliver_to),
            Route::Full if event.target.broadcast => self.for_each_event_session(&sessions, &mut deliver_to),
            route => index.for_each_recipient(&event.target, route, |slot| {
                if let Some(session) = sessions.get(slot) {
                    deliver_to(session);
                }
            }),
        }
        self.pass_recipients.set(self.pass_recipients.get().max(delivered as usize));
        let counters = self.counters();
        stats::bump(&counters.deliveries, delivered);
        stats::bump(&counters.fanouts, 1);
        let latency = event.received.elapsed();
        stats::bump(&counters.fanout_latency_us, latency.as_micros() as u64);
        if delivered > 0 {
            self.publish_to_write.record(latency.as_secs_f64());
        }
    }

    fn for_each_event_session(&self, sessions: &Slab<Rc<C>>, deliver_to: &mut impl FnMut(&Rc<C>)) {
        for (_, session) in sessions.iter() {
            if session.kind() == EndpointKind::Events {
                deliver_to(session);
            }
        }
    }

    /// Writes every connection whose write was deferred; how many there were.
    fn write_all(self: &Rc<Self>) -> usize {
        let dirty = self.dirty.borrow_mut().take_all();
        for session in &dirty {
            session.flush(self);
        }
        let written = dirty.len();
        self.dirty.borrow_mut().recycle(dirty);
        written
    }

    /// Handles a batch from the inbox, writes deferred or not.
    fn handle(self: &Rc<Self>, batch: &mut Vec<ShardMsg>, defer_writes: bool) {
        self.batching.set(defer_writes);
        for msg in batch.drain(..) {
            match msg {
                ShardMsg::Deliver(event) => self.deliver(&event),
                ShardMsg::DeliverMany(events) => {
                    for event in events.iter() {
                        self.deliver(event);
                    }
                }
                ShardMsg::Call(f) => f(self),
                ShardMsg::Shutdown => self.begin_shutdown(),
            }
        }
        self.batching.set(false);
    }

    /// Handles a batch outside a write cycle and writes what it touched. Returns the hold it
    /// earned when messages had queued up for it (`websocket.write_pacing` per connection
    /// written, at most `max_write_delay`): the write cycle that should follow.
    fn process(self: &Rc<Self>, batch: &mut Vec<ShardMsg>) -> Option<Duration> {
        // Deferring writes pays only when a socket may get several frames from one batch;
        // otherwise a lone message is written as it is delivered, so early recipients are not
        // held back, and the next one may well come alone too.
        let grouped = matches!(batch.first(), Some(ShardMsg::DeliverMany(events)) if events.len() > 1);
        let queued_up = batch.len() > 1 || grouped;
        self.handle(batch, queued_up);
        let written = self.write_all().max(self.pass_recipients.replace(0));
        let ws = &self.host.config().websocket;
        let hold = write_hold(ws.write_pacing, ws.max_write_delay, written);
        (queued_up && !hold.is_zero()).then_some(hold)
    }

    /// Handles everything waiting in the inbox, writes deferred to the cycle. Returns whether
    /// anything was waiting, and `false` as the second value once the inbox has closed.
    fn receive_waiting(
        self: &Rc<Self>,
        inbox: &mut mpsc::Receiver<ShardMsg>,
        batch: &mut Vec<ShardMsg>,
    ) -> (bool, bool) {
        let mut arrived = false;
        loop {
            match inbox.recv_many(batch, 256).now_or_never() {
                None => return (arrived, true),
                Some(0) => return (arrived, false),
                Some(_) => {
                    arrived = true;
                    self.handle(batch, true);
                }
            }
        }
    }

    /// One step of a write cycle: writes the next slice. At the end of a round through the
    /// slices, the hold is counted again from the connections the round wrote. Returns `false`
    /// when the cycle is over: a whole round in which nothing arrived and nothing waits (or
    /// pacing is off); what still waits is then written at once.
    fn write_step(self: &Rc<Self>, cycle: &mut Cycle, arrived: bool) -> bool {
        cycle.quiet_steps = if arrived { 0 } else { cycle.quiet_steps + 1 };
        let due = self.dirty.borrow_mut().take_slice(cycle.next_slice);
        for session in &due {
            session.flush(self);
        }
        cycle.written += due.len();
        self.dirty.borrow_mut().recycle(due);
        cycle.next_slice += 1;
        if cycle.next_slice >= self.dirty.borrow().slice_count() {
            cycle.next_slice = 0;
            let written = std::mem::take(&mut cycle.written).max(self.pass_recipients.replace(0));
            if written > 0 {
                let ws = &self.host.config().websocket;
                cycle.hold = write_hold(ws.write_pacing, ws.max_write_delay, written);
            }
            self.dirty.borrow_mut().reslice(slices_for(cycle.hold), |session| session.slot().get());
        }
        let slices = self.dirty.borrow().slice_count();
        let idle = cycle.quiet_steps >= slices && self.dirty.borrow().is_empty();
        if idle || cycle.hold.is_zero() {
            self.dirty.borrow_mut().reslice(1, |session| session.slot().get());
            self.write_all();
            return false;
        }
        // Behind schedule (a step took longer than its share), the next step runs at once: the
        // cycle then clocks itself to the writes.
        cycle.next_step = (cycle.next_step + step(cycle.hold, slices)).max(Instant::now());
        true
    }

    /// Owns an upgraded connection from now on: runs it ([`Connection::run`]) on this thread.
    pub(crate) fn adopt(self: &Rc<Self>, adoption: Adoption<C::Plan>) {
        let Adoption { stream, tls, leftover, plan } = adoption;
        if self.shutting_down.get() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
        match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => {
                let io = match tls {
                    Some(tls) => ConnIo::Tls(Box::new(TlsIo::new(stream, tls))),
                    None => ConnIo::Tcp(stream),
                };
                self.spawn(C::run(self.clone(), io, leftover, plan));
            }
            Err(e) => tracing::warn!(error = %e, "could not register an upgraded socket"),
        }
    }

    fn begin_shutdown(self: &Rc<Self>) {
        self.shutting_down.set(true);
        let shard = self.clone();
        // The node drained the writer before asking shards to close, so pending
        // acknowledgements resolve at once; a stuck one never holds the close for long.
        tokio::task::spawn_local(async move {
            let deadline = tokio::time::Instant::now() + ACK_GRACE;
            while shard.acks_pending.get() > 0 {
                let settled = shard.acks_settled.notified();
                if shard.acks_pending.get() == 0 {
                    break;
                }
                if tokio::time::timeout_at(deadline, settled).await.is_err() {
                    break;
                }
            }
            for session in shard.all_sessions() {
                session.close(&shard, close_code::GOING_AWAY, "server shutting down; reconnect to another node");
            }
        });
    }

    /// A snapshot of every connection on the shard.
    pub fn all_sessions(&self) -> Vec<Rc<C>> {
        self.sessions.borrow().iter().map(|(_, s)| s.clone()).collect()
    }

    /// Member counts of this shard's rooms.
    pub fn room_counts(&self) -> Vec<(Arc<str>, usize)> {
        self.index.borrow().rooms.counts().map(|(k, n)| (k.clone(), n)).collect()
    }

    /// Subscriber counts of this shard's channels.
    pub fn channel_counts(&self) -> Vec<(Arc<str>, usize)> {
        self.index.borrow().channels.counts().map(|(k, n)| (k.clone(), n)).collect()
    }

    /// Number of distinct rooms and channels on this shard.
    pub fn key_counts(&self) -> (usize, usize) {
        let index = self.index.borrow();
        (index.rooms.len(), index.channels.len())
    }

    /// Heartbeats, idle and close-deadline sweeps, gauges.
    fn tick(self: &Rc<Self>) {
        let now = Instant::now();
        let wall_clock = std::time::SystemTime::now();
        let ws = &self.host.config().websocket;
        let heartbeat_due = now >= self.next_heartbeat.get();
        if heartbeat_due {
            self.next_heartbeat.set(now + ws.heartbeat_interval);
        }
        let heartbeat =
            (heartbeat_due && ws.heartbeat_message).then(|| Event::new(Target::default(), outbound::heartbeat()));
        let ping = (heartbeat_due && ws.ping_frames).then(|| frame::encode(frame::OP_PING, b""));
        let mut queued = 0u64;
        self.batching.set(true);
        for session in self.all_sessions() {
            queued += session.queued() as u64;
            if let Some(deadline) = session.close_deadline() {
                if now >= deadline {
                    session.abort();
                }
                continue;
            }
            // A fallback client has no way to send anything but commands: its liveness is its
            // response body (a gone client ends it, a stalled one fills the queue).
            let idle_checked = !session.is_fallback();
            if idle_checked && now.duration_since(session.last_seen()) > ws.idle_timeout {
                stats::bump(&self.counters().idle_disconnects, 1);
                tracing::debug!(connection = %session.connection_id(), "idle timeout");
                let code = close_code::close_for(session.kind(), close_code::IDLE_TIMEOUT);
                session.close(self, code, "idle timeout: nothing received");
                continue;
            }
            if session.kind() == EndpointKind::Events {
                self.send_keepalive(&session, heartbeat_due, heartbeat.as_deref(), ping.as_ref());
                session.check_expiry(self, wall_clock);
            }
        }
        self.batching.set(false);
        if self.dirty.borrow().slice_count() == 1 {
            // In a write cycle, the cycle writes them at their slices' turns.
            self.write_all();
        }
        self.counters().queued_frames.store(queued, std::sync::atomic::Ordering::Relaxed);
    }

    fn send_keepalive(self: &Rc<Self>, session: &Rc<C>, due: bool, heartbeat: Option<&Event>, ping: Option<&Bytes>) {
        if let Some(frame) = heartbeat.and_then(|h| session.frame_for(h, &self.host.config().compression)) {
            session.send(self, frame);
            stats::bump(&self.counters().replies, 1);
        }
        if session.is_fallback() {
            // A comment line (SSE) or an empty line (NDJSON) keeps proxies from timing the
            // response out; there are no ping frames over HTTP.
            if due {
                session.send(self, keepalive_line(session.transport()));
            }
        } else if let Some(ping) = ping {
            session.send(self, ping.clone());
        }
    }
}

/// The keepalive of a fallback session, one shared allocation per transport.
fn keepalive_line(transport: super::event::Transport) -> Bytes {
    match transport {
        super::event::Transport::Sse => Bytes::from_static(b":\n"),
        _ => Bytes::from_static(b"\n"),
    }
}

/// Starts shard `number` on its own thread.
pub(crate) fn spawn_thread<C: Connection>(
    number: usize,
    host: Arc<C::Host>,
    inbox: mpsc::Receiver<ShardMsg>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("herald-shard-{number}")).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(shard = number, error = %e, "could not start the shard's runtime");
                return;
            }
        };
        LocalSet::new().block_on(&runtime, run::<C>(number, host, inbox));
    })
}

async fn run<C: Connection>(number: usize, host: Arc<C::Host>, mut inbox: mpsc::Receiver<ShardMsg>) {
    let heartbeat = host.config().websocket.heartbeat_interval;
    let period = tick_period_for(heartbeat);
    let shard = Rc::new(Shard::<C> {
        number,
        next_heartbeat: Cell::new(Instant::now() + heartbeat),
        host,
        sessions: RefCell::new(Slab::new()),
        index: RefCell::new(LocalIndex::default()),
        batching: Cell::new(false),
        dirty: RefCell::new(Dirty::default()),
        pass_recipients: Cell::new(0),
        shutting_down: Cell::new(false),
        acks_pending: Cell::new(0),
        acks_settled: tokio::sync::Notify::new(),
        // The recorder is installed before shards start (server.rs).
        publish_to_write: metrics::histogram!("herald_publish_to_write_seconds"),
    });
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(256);
    let mut cycle: Option<Cycle> = None;
    loop {
        let next_step = cycle.as_ref().map_or_else(Instant::now, |c| c.next_step);
        tokio::select! {
            biased;
            received = inbox.recv_many(&mut batch, 256), if cycle.is_none() => {
                if received == 0 {
                    break;
                }
                let pass_start = Instant::now();
                if let Some(hold) = shard.process(&mut batch) {
                    let slices = slices_for(hold);
                    shard.dirty.borrow_mut().reslice(slices, |session| session.slot().get());
                    stats::bump(&shard.counters().write_cycles, 1);
                    cycle = Some(Cycle::start(hold, slices, pass_start));
                }
            }
            () = tokio::time::sleep_until(next_step.into()), if cycle.is_some() => {
                // What arrived since the last step is queued on its recipients now; each gets
                // it at its slice's turn. The shard's other tasks (readers, adoptions) run
                // between steps.
                let (arrived, open) = shard.receive_waiting(&mut inbox, &mut batch);
                if !open {
                    shard.write_all();
                    break;
                }
                if let Some(running) = cycle.as_mut()
                    && !shard.write_step(running, arrived)
                {
                    cycle = None;
                }
            }
            _ = ticker.tick() => shard.tick(),
        }
    }
}

/// How often a shard sweeps: at least once a second, and at least as often as heartbeats.
pub(crate) fn tick_period_for(heartbeat: Duration) -> Duration {
    heartbeat.min(Duration::from_secs(1))
}
