//! One WebSocket connection: its identity, subscriptions, rooms and outbound queue, and the
//! reader that turns its frames into actions.
//!
//! A [`Session`] lives on one shard and is shared (`Rc`) between the shard's index, its own
//! reader task and, when its socket is full, a flusher task. All of them run on the shard's
//! thread, so its state uses `Cell`/`RefCell` rather than locks.

pub(crate) mod connect;
mod dispatch;
pub mod face;
pub mod handlers;
pub mod live;
pub mod outbound;
mod reader;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use serde_json::Value;

pub use connect::ConnectPlan;
pub(crate) use handlers::auth::check_expiry;
pub use handlers::chat::{parse_mark, record_read};
pub use outbound::SendOutcome;

use crate::auth::Identity;
use crate::config::EndpointKind;
use crate::hub::event::Wire;
use crate::hub::{ConnId, Event};
use crate::limits::{ConnectionPermit, RateState};
use crate::protocol::{ProtocolError, outbound as out};
use crate::stats;
use crate::transport::io::ConnIo;

/// What a connection is, fixed at connect time.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's own id (`client_id` query parameter), or the connection id.
    pub client_id: String,
    /// Remote address.
    pub peer: SocketAddr,
    /// What the endpoint serves.
    pub kind: EndpointKind,
    /// The request path it connected to.
    pub path: String,
    /// When it connected.
    pub connected_at: SystemTime,
    /// Largest message it may send.
    pub max_message: usize,
    /// Encoding and compression negotiated at the upgrade.
    pub wire: Wire,
    /// Whether the client asked for stream positions on everything it follows (`?seq=1`).
    pub seq: bool,
}

/// A stream a connection follows with positions (`seq`): the last position it was given, and,
/// while history is being replayed to it, the live frames held back until the replay is done.
#[derive(Debug, Default)]
pub struct Follow {
    /// Last seq delivered (events at or below it are not delivered again).
    pub last: u64,
    /// The epoch of `last`; an event of another epoch starts the count again.
    pub epoch: Option<Arc<str>>,
    /// Live frames `(seq, frame)` held back during a replay.
    pub held: Option<Vec<(u64, Bytes)>>,
}

/// What a connection has subscribed to and joined (its side of the shard's index).
pub use crate::hub::shard::Memberships as SessionState;

/// A shard of sessions: the hub's shard runtime, run with [`Session`] as its connection.
pub type Shard = crate::hub::shard::Shard<Session>;

impl Shard {
    /// The node the shard's sessions belong to (the shard's host).
    pub fn node(&self) -> &Arc<crate::node::Node> {
        self.host()
    }
}

/// The shard's view of a session: mostly its fields, and the session's own send, flush and
/// close (`outbound.rs`), called directly from the fan-out (the shard is generic over this).
impl crate::hub::shard::Connection for Session {
    type Host = crate::node::Node;
    type Plan = ConnectPlan;

    fn run(shard: Rc<Shard>, io: ConnIo, leftover: Bytes, plan: ConnectPlan) -> impl Future<Output = ()> + 'static {
        connect::run(shard, io, connect::Input::Socket(leftover), plan)
    }

    fn id(&self) -> ConnId {
        self.id
    }

    fn connection_id(&self) -> &str {
        &self.connection_id
    }

    fn client_id(&self) -> &str {
        &self.info.client_id
    }

    fn kind(&self) -> EndpointKind {
        self.info.kind
    }

    fn path(&self) -> &str {
        &self.info.path
    }

    fn transport(&self) -> crate::hub::event::Transport {
        self.info.wire.transport
    }

    fn user_id(&self) -> Option<Arc<str>> {
        Session::user_id(self)
    }

    fn is_authenticated(&self) -> bool {
        Session::is_authenticated(self)
    }

    fn slot(&self) -> &Cell<usize> {
        &self.slot
    }

    fn memberships(&self) -> &RefCell<SessionState> {
        &self.state
    }

    #[inline]
    fn accepts_notification(&self, tags: &crate::hub::event::NotificationTags) -> bool {
        Session::accepts_notification(self, tags)
    }

    #[inline]
    fn frame_for(&self, event: &Event, compression: &crate::config::CompressionConfig) -> Option<Bytes> {
        Session::frame_for(self, event, compression)
    }

    #[inline]
    fn send(self: &Rc<Self>, shard: &Shard, frame: Bytes) {
        Session::send(self, shard, frame);
    }

    #[inline]
    fn flush(self: &Rc<Self>, shard: &Shard) {
        Session::flush(self, shard);
    }

    fn close(self: &Rc<Self>, shard: &Shard, code: u16, reason: &str) {
        Session::close(self, shard, code, reason);
    }

    fn abort(&self) {
        Session::abort(self);
    }

    fn queued(&self) -> usize {
        Session::queued(self)
    }

    fn close_deadline(&self) -> Option<Instant> {
        self.close_deadline.get()
    }

    fn last_seen(&self) -> Instant {
        self.last_seen.get()
    }

    fn is_fallback(&self) -> bool {
        matches!(self.io, ConnIo::Stream(_))
    }

    fn check_expiry(self: &Rc<Self>, shard: &Rc<Shard>, now: SystemTime) {
        check_expiry(shard, self, now);
    }
}

/// One live connection.
pub struct Session {
    /// Number unique within the node.
    pub id: ConnId,
    /// The id clients and operators see (`<node>-<number>`).
    pub connection_id: Arc<str>,
    /// Fixed facts about the connection.
    pub info: ConnInfo,
    /// Subscriptions and rooms.
    pub state: RefCell<SessionState>,
    pub(crate) io: ConnIo,
    pub(crate) out: RefCell<outbound::Outbound>,
    /// Slot in the shard's slab, used by the index.
    pub(crate) slot: Cell<usize>,
    /// When anything last arrived from the peer.
    pub(crate) last_seen: Cell<Instant>,
    /// When a closing connection is cut if the peer has not finished the handshake.
    pub(crate) close_deadline: Cell<Option<Instant>>,
    pub(crate) reader_waker: Cell<Option<Waker>>,
    pub(crate) killed: Cell<bool>,
    /// Takes events (set once the welcome is sent).
    pub(crate) accepting: Cell<bool>,
    /// Who it is; replaced when the client refreshes its token (the user id never changes).
    user: RefCell<Option<Arc<Identity>>>,
    /// When the user's token expires.
    pub(crate) expires_at: Cell<Option<SystemTime>>,
    /// Whether the client was asked for a fresh token.
    pub(crate) refresh_requested: Cell<bool>,
    /// Streams followed with positions; empty (and never looked up) for plain clients.
    pub(crate) follows: RefCell<std::collections::HashMap<Arc<str>, Follow>>,
    /// Message-rate state, allocated once the client first sends a counted message.
    pub(crate) rate: RefCell<Option<Box<RateState>>>,
    /// Typing, cursors and notification filters, allocated on first use.
    pub(crate) live: RefCell<Option<Box<live::LiveState>>>,
    /// Its slot under the per-address and per-user connection caps.
    _permit: Option<ConnectionPermit>,
    /// The state of another protocol face (see [`face`]); `None` for Herald's own protocol.
    face: RefCell<Option<Box<dyn face::FaceConn>>>,
}

impl Session {
    pub(crate) fn new(
        id: ConnId,
        connection_id: Arc<str>,
        info: ConnInfo,
        io: ConnIo,
        user: Option<Arc<Identity>>,
        permit: Option<ConnectionPermit>,
    ) -> Self {
        Session {
            id,
            connection_id,
            info,
            state: RefCell::new(SessionState::default()),
            io,
            out: RefCell::new(outbound::Outbound::default()),
            slot: Cell::new(usize::MAX),
            last_seen: Cell::new(Instant::now()),
            close_deadline: Cell::new(None),
            reader_waker: Cell::new(None),
            killed: Cell::new(false),
            accepting: Cell::new(false),
            user: RefCell::new(user),
            expires_at: Cell::new(None),
            refresh_requested: Cell::new(false),
            rate: RefCell::new(None),
            live: RefCell::new(None),
            follows: RefCell::new(std::collections::HashMap::new()),
            _permit: permit,
            face: RefCell::new(None),
        }
    }

    /// The frame this connection gets for `event`, or `None` if it should not get it.
    pub fn frame_for(&self, event: &Event, compression: &crate::config::CompressionConfig) -> Option<Bytes> {
        if !self.accepting.get() {
            return None;
        }
        let wire = &self.info.wire;
        // `Event::frame` hands plain connections the shared text frame.
        let Some(pos) = event.stream.get() else { return Some(event.frame(false, wire, compression)) };
        let mut follows = self.follows.borrow_mut();
        let Some(follow) = follows.get_mut(&pos.stream) else {
            drop(follows);
            return Some(event.frame(false, wire, compression));
        };
        if follow.epoch.as_ref() == Some(&pos.epoch) && pos.seq <= follow.last {
            return None; // already delivered (by a replay, or a duplicate copy)
        }
        let frame = event.frame(true, wire, compression);
        if let Some(held) = follow.held.as_mut() {
            held.push((pos.seq, frame));
            return None;
        }
        follow.last = pos.seq;
        follow.epoch = Some(pos.epoch.clone());
        Some(frame)
    }

    /// Sends a reply Herald built for this connection alone.
    pub fn reply(self: &Rc<Self>, shard: &Shard, payload: &[u8]) {
        stats::bump(&shard.counters().replies, 1);
        self.send(shard, self.info.wire.encode(payload, &shard.node().config.compression));
    }

    /// Sends an error reply.
    pub fn send_error(self: &Rc<Self>, shard: &Shard, error: &ProtocolError, id: Option<&Value>) {
        stats::count_client_error(shard.counters(), error.code);
        self.reply(shard, &out::error(error.code, &error.message, id));
    }

    /// The connection's identity (verified by a token, or self-asserted with authentication off).
    pub fn user(&self) -> Option<Arc<Identity>> {
        self.user.borrow().clone()
    }

    /// The user id, if any.
    pub fn user_id(&self) -> Option<Arc<str>> {
        self.user.borrow().as_ref().map(|u| u.id.clone())
    }

    /// Whether a token proved who this is.
    pub fn is_authenticated(&self) -> bool {
        self.user.borrow().as_ref().is_some_and(|u| u.verified)
    }

    /// Whether this connection's notification filter lets a notification through.
    pub fn accepts_notification(&self, tags: &crate::hub::event::NotificationTags) -> bool {
        match &*self.live.borrow() {
            Some(live) => live.notifications.as_ref().is_none_or(|f| f.accepts(tags)),
            None => true,
        }
    }

    /// Runs `f` on the interactive state, allocating it on first use.
    pub(crate) fn with_live<R>(&self, f: impl FnOnce(&mut live::LiveState) -> R) -> R {
        let mut live = self.live.borrow_mut();
        f(live.get_or_insert_with(Default::default))
    }

    /// Replaces the identity after a token refresh (same user id).
    pub(crate) fn set_user(&self, user: Arc<Identity>) {
        *self.user.borrow_mut() = Some(user);
    }
}

/// The SSE `id:` of a connection: its position on every stream it follows, as
/// `<stream>~<epoch>~<seq>` joined by `,` (stream and epoch percent-encoded), in stream order.
/// `None` while it has no position anywhere.
pub fn position_id(follows: &HashMap<Arc<str>, Follow>) -> Option<String> {
    let mut entries: Vec<(&str, &str, u64)> =
        follows.iter().filter_map(|(s, f)| f.epoch.as_ref().map(|e| (&**s, &**e, f.last))).collect();
    if entries.is_empty() {
        return None;
    }
    entries.sort_unstable();
    let parts: Vec<String> = entries
        .into_iter()
        .map(|(stream, epoch, seq)| {
            let stream: String = form_urlencoded::byte_serialize(stream.as_bytes()).collect();
            let epoch: String = form_urlencoded::byte_serialize(epoch.as_bytes()).collect();
            format!("{stream}~{epoch}~{seq}")
        })
        .collect();
    Some(parts.join(","))
}
