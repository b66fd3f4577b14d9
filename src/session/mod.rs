//! One WebSocket connection: its identity, subscriptions, rooms and outbound queue, and the
//! reader that turns its frames into actions.
//!
//! A [`Session`] lives on one shard and is shared (`Rc`) between the shard's index, its own
//! reader task and, when its socket is full, a flusher task. All of them run on the shard's
//! thread, so its state uses `Cell`/`RefCell` rather than locks.

pub(crate) mod connect;
mod dispatch;
mod handlers;
pub mod outbound;
mod reader;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use serde_json::Value;

pub use connect::ConnectPlan;
pub use outbound::SendOutcome;

use crate::auth::Identity;
use crate::config::EndpointKind;
use crate::hub::shard::Shard;
use crate::hub::{ConnId, Event};
use crate::protocol::{ProtocolError, outbound as out};
use crate::stats;
use crate::transport::frame;
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
    /// The authenticated user, if any.
    pub user: Option<Arc<Identity>>,
    /// Largest message it may send.
    pub max_message: usize,
}

/// What a connection has subscribed to and joined.
#[derive(Debug, Default)]
pub struct SessionState {
    /// Subscribed channels.
    pub channels: HashSet<Arc<str>>,
    /// Joined rooms.
    pub rooms: HashSet<Arc<str>>,
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
    /// Fan-out stamp: equal to the shard's current stamp once this event was delivered here.
    pub(crate) stamp: Cell<u64>,
    /// When anything last arrived from the peer.
    pub(crate) last_seen: Cell<Instant>,
    /// When a closing connection is cut if the peer has not finished the handshake.
    pub(crate) close_deadline: Cell<Option<Instant>>,
    pub(crate) reader_waker: Cell<Option<Waker>>,
    pub(crate) killed: Cell<bool>,
    /// Takes events (set once the welcome is sent).
    pub(crate) accepting: Cell<bool>,
}

impl Session {
    pub(crate) fn new(id: ConnId, connection_id: Arc<str>, info: ConnInfo, io: ConnIo) -> Self {
        Session {
            id,
            connection_id,
            info,
            state: RefCell::new(SessionState::default()),
            io,
            out: RefCell::new(outbound::Outbound::default()),
            slot: Cell::new(usize::MAX),
            stamp: Cell::new(0),
            last_seen: Cell::new(Instant::now()),
            close_deadline: Cell::new(None),
            reader_waker: Cell::new(None),
            killed: Cell::new(false),
            accepting: Cell::new(false),
        }
    }

    /// The frame this connection gets for `event`, or `None` if it should not get it.
    pub fn frame_for(&self, event: &Event) -> Option<Bytes> {
        if !self.accepting.get() {
            return None;
        }
        Some(event.text_frame().clone())
    }

    /// Sends a reply Herald built for this connection alone.
    pub fn reply(self: &Rc<Self>, shard: &Shard, payload: &[u8]) {
        stats::bump(&shard.counters().replies, 1);
        self.send(shard, frame::encode(frame::OP_TEXT, payload));
    }

    /// Sends an error reply.
    pub fn send_error(self: &Rc<Self>, shard: &Shard, error: &ProtocolError, id: Option<&Value>) {
        stats::bump(&shard.counters().client_errors, 1);
        self.reply(shard, &out::error(error.code, &error.message, id));
    }

    /// The user id, if authenticated.
    pub fn user_id(&self) -> Option<&str> {
        self.info.user.as_ref().map(|u| &*u.id)
    }
}
