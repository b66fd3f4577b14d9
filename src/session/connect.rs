//! From an accepted upgrade to a registered, welcomed, pre-subscribed session.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use super::Shard;
use super::{ConnInfo, Session, handlers, reader};
use crate::auth::Identity;
use crate::config::{EndpointKind, WelcomeStyle};
use crate::hub::shard::Adoption;
use crate::hub::{Hub, InterestReady};
use crate::node::Node;
use crate::protocol::{ErrorCode, ProtocolError, outbound};
use crate::transport::frame::close_code;
use crate::transport::io::ConnIo;

/// Everything decided about a connection before the upgrade completes.
pub struct ConnectPlan {
    /// The client's own id.
    pub client_id: Option<String>,
    /// Remote address.
    pub peer: SocketAddr,
    /// The client's address (behind trusted proxies, from `X-Forwarded-For`).
    pub client_ip: std::net::IpAddr,
    /// What the endpoint serves.
    pub kind: EndpointKind,
    /// The request path.
    pub path: String,
    /// Channels to subscribe at once.
    pub channels: Vec<String>,
    /// Rooms to join at once.
    pub rooms: Vec<String>,
    /// Which welcome message to send.
    pub welcome: WelcomeStyle,
    /// Largest message the client may send.
    pub max_message: usize,
    /// The authenticated user.
    pub user: Option<Arc<Identity>>,
    /// When the user's token expires.
    pub expires_at: Option<std::time::SystemTime>,
    /// Why authentication failed, when refusals are sent in-band (close 1008).
    pub rejection: Option<String>,
    /// The connection's slot under the per-address and per-user caps.
    pub permit: Option<crate::limits::ConnectionPermit>,
    /// Encoding and compression negotiated at the upgrade.
    pub wire: crate::hub::event::Wire,
    /// Positions on every stream it follows (`?seq=1`).
    pub seq: bool,
    /// For a connection of another protocol face: what its upgrade decided (see [`super::face`]).
    pub face: Option<Box<dyn super::face::Opening>>,
    /// For a fallback (SSE, NDJSON) session: its opening message and what it resumes.
    pub fallback: Option<Box<crate::transport::fallback::Start>>,
}

/// Where a session's input comes from.
pub(crate) enum Input {
    /// Its socket, with what HTTP parsing read past the handshake.
    Socket(Bytes),
    /// A fallback session: commands POSTed to it, while it is registered under its id.
    Commands(
        tokio::sync::mpsc::Receiver<crate::transport::fallback::Command>,
        crate::transport::fallback::Registration,
    ),
}

/// Waits for hyper to finish the upgrade, then hands the socket to `shard`.
pub(crate) async fn hand_over(node: Arc<Node>, shard: usize, on_upgrade: OnUpgrade, plan: ConnectPlan) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let (tcp, tls, leftover) = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => (parts.io.into_inner(), None, parts.read_buf),
        Err(upgraded) => match upgraded.downcast::<TokioIo<tokio_rustls::server::TlsStream<TcpStream>>>() {
            Ok(parts) => {
                // The session keeps any plaintext it has decrypted but nobody has read yet.
                let (tcp, session) = parts.io.into_inner().into_inner();
                (tcp, Some(session), parts.read_buf)
            }
            Err(_) => {
                tracing::error!("upgraded connection has an unexpected transport type");
                return;
            }
        },
    };
    // hyper hands back its whole read buffer (8 KiB or more) even when nothing is left in it;
    // keeping that for the connection's life would triple an idle connection's memory.
    let leftover = if leftover.is_empty() { Bytes::new() } else { Bytes::copy_from_slice(&leftover) };
    let stream = match tcp.into_std() {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(error = %e, "could not detach an upgraded socket");
            return;
        }
    };
    let adoption = Adoption { stream, tls, leftover, plan };
    node.hub.run_on(shard, move |shard: &Rc<Shard>| shard.adopt(adoption)).await;
}

/// Runs a session on its shard until the connection ends.
pub(crate) async fn run(shard: Rc<Shard>, io: ConnIo, input: Input, mut plan: ConnectPlan) {
    let node = shard.node();
    let id = node.next_connection.fetch_add(1, Ordering::Relaxed);
    let connection_id: Arc<str> = Arc::from(format!("{}-{id}", node.id));
    let info = ConnInfo {
        client_id: plan.client_id.clone().unwrap_or_else(|| connection_id.to_string()),
        peer: plan.peer,
        kind: plan.kind,
        path: plan.path.clone(),
        connected_at: SystemTime::now(),
        max_message: plan.max_message,
        wire: plan.wire,
        seq: plan.seq,
    };
    let session = Rc::new(Session::new(id, connection_id, info, io, plan.user.clone(), plan.permit.take()));
    session.expires_at.set(plan.expires_at);
    shard.register(&session);
    let user_ready = shard.bind_user(&session);
    tracing::debug!(connection = %session.connection_id, peer = %plan.peer, path = %plan.path, "connected");
    if let Some(start) = &plan.fallback {
        session.reply(&shard, &start.opening);
    }

    let events = plan.kind == EndpointKind::Events && plan.rejection.is_none();
    if let Some(reason) = &plan.rejection {
        // Refused in-band so that a browser learns why: an error frame, then close 1008.
        session.send_error(&shard, &ProtocolError::new(ErrorCode::AuthenticationFailed, reason.clone()), None);
        session.close(&shard, close_code::POLICY_VIOLATION, "authentication failed");
    } else if events {
        handlers::presence::after_connect(&shard, &session);
        // Boxed, here and below: this future lives as long as the connection, so it must not be
        // sized for steps that run once (an idle connection's memory is mostly this future).
        Box::pin(start_events(&shard, &session, &plan, user_ready)).await;
    } else if let Some(opening) = plan.face.take() {
        opening.start(&shard, &session);
    } else if plan.kind == EndpointKind::Stats {
        shard.spawn(stats_stream(shard.clone(), session.clone()));
    }
    drop(plan);
    match input {
        Input::Socket(leftover) => reader::run(&shard, &session, leftover).await,
        Input::Commands(commands, registration) => {
            reader::run_commands(&shard, &session, commands).await;
            drop(registration);
        }
    }
    let rooms: Vec<Arc<str>> = session.state.borrow().rooms.iter().cloned().collect();
    shard.unregister(&session);
    if events {
        Box::pin(handlers::presence::after_disconnect(&shard, &session, rooms)).await;
    }
    if let Some(face) = session.face() {
        face.finish(&shard, &session).await;
    }
    tracing::debug!(connection = %session.connection_id, "disconnected");
}

/// Pre-subscriptions and the welcome message. The welcome is sent once every pre-subscription
/// is live across the cluster, and the connection takes events only from then on, so a client
/// always sees its welcome first.
async fn start_events(shard: &Rc<Shard>, session: &Rc<Session>, plan: &ConnectPlan, user_ready: Option<InterestReady>) {
    use crate::config::NameKind;
    let mut refused = Vec::new();
    let mut waits: Vec<InterestReady> = user_ready.into_iter().collect();
    let resume = plan.fallback.as_ref().map_or(&[][..], |f| &f.resume[..]);
    let since = |kind: NameKind, name: &str| {
        resume.iter().find(|r| r.kind == kind && r.name == name).map(|r| (r.seq, r.epoch.clone()))
    };
    // What the URL names, then what a resumed session followed beyond it.
    let extra = |kind: NameKind, planned: &[String]| -> Vec<String> {
        resume.iter().filter(|r| r.kind == kind && !planned.contains(&r.name)).map(|r| r.name.clone()).collect()
    };
    let channels: Vec<String> = plan.channels.iter().cloned().chain(extra(NameKind::Channel, &plan.channels)).collect();
    let rooms: Vec<String> = plan.rooms.iter().cloned().chain(extra(NameKind::Room, &plan.rooms)).collect();
    let mut pending = Vec::new();
    for (kind, name) in channels.iter().map(|c| (NameKind::Channel, c)).chain(rooms.iter().map(|r| (NameKind::Room, r)))
    {
        let joined = match kind {
            NameKind::Channel => handlers::channels::subscribe_one(shard, session, name).await,
            NameKind::Room => handlers::rooms::join_one(shard, session, name).await,
        };
        match joined {
            Ok(ready) => {
                waits.extend(ready);
                match since(kind, name) {
                    Some(since) => {
                        pending.extend(handlers::streams::begin(shard, session, kind, name, true, Some(since)))
                    }
                    None => start_follow(shard, session, kind, name),
                }
            }
            Err(e) => refused.push(e),
        }
    }
    Hub::ready(waits, shard.node().config.redis.timeout).await;
    session.accepting.set(true);
    let kind = match plan.welcome {
        WelcomeStyle::Connection => Some("connection"),
        WelcomeStyle::ConnectionEstablished => Some("connection_established"),
        WelcomeStyle::None => None,
    };
    if let Some(kind) = kind {
        session.reply(shard, &welcome(shard, session, kind));
    }
    for error in refused {
        session.send_error(shard, &error, None);
    }
    if !pending.is_empty() {
        resume_streams(shard, session, pending).await;
    }
    let mut rooms: Vec<Arc<str>> = session.state.borrow().rooms.iter().cloned().collect();
    rooms.sort();
    for room in rooms {
        handlers::presence::after_join(shard, session, &room).await;
    }
}

/// Replays what a resumed fallback session missed: one `resumed` message reporting every
/// stream's position (`recovered: false` is a gap history no longer covers, as on WebSocket),
/// then the missed events of each stream, then its held live ones.
async fn resume_streams(shard: &Rc<Shard>, session: &Rc<Session>, pending: Vec<handlers::streams::Pending>) {
    let mut recoveries = Vec::with_capacity(pending.len());
    let mut report = serde_json::Map::new();
    for p in pending {
        let recovery = handlers::streams::fetch(shard, &p).await;
        report.insert(p.stream.to_string(), handlers::streams::report(&recovery, true));
        recoveries.push((p, recovery));
    }
    session.reply(shard, &outbound::reply("resumed", json!({ "streams": report }), None));
    for (p, recovery) in recoveries {
        handlers::streams::finish(shard, session, &p, recovery);
    }
}

/// With `?seq=1`, a pre-subscribed stream with history is followed with positions from the
/// welcome on (the connection takes no events before it, so nothing needs holding back).
fn start_follow(shard: &Shard, session: &Session, kind: crate::config::NameKind, name: &str) {
    if session.info.seq && shard.node().history.settings(kind, name).is_some() {
        let stream = crate::streams::stream_name(kind, name);
        session.follows.borrow_mut().insert(Arc::from(stream), super::Follow::default());
    }
}

fn welcome(shard: &Shard, session: &Session, kind: &str) -> Bytes {
    let state = session.state.borrow();
    let mut channels: Vec<&str> = state.channels.iter().map(|c| &**c).collect();
    channels.sort_unstable();
    let mut rooms: Vec<&str> = state.rooms.iter().map(|r| &**r).collect();
    rooms.sort_unstable();
    let config = &shard.node().config.websocket;
    let mut fields = json!({
            "status": "connected",
            "connection_id": &*session.connection_id,
            "client_id": session.info.client_id,
            "channels": channels,
            "rooms": rooms,
            "node": &*shard.node().id,
            "server": "herald",
            "version": env!("CARGO_PKG_VERSION"),
            "heartbeat_interval": config.heartbeat_interval.as_secs_f64(),
    });
    if let (Some(user), Some(map)) = (session.user(), fields.as_object_mut()) {
        map.insert("user_id".into(), Value::from(&*user.id));
        if user.verified {
            map.insert("user".into(), serde_json::to_value(&*user).unwrap_or(Value::Null));
        }
    }
    outbound::reply(kind, fields, None)
}

/// How often the stats stream pushes (the dashboard profile's 500 ms).
const STATS_STREAM_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Pushes [`crate::report::stream_frame`] every 500 ms until the connection closes.
async fn stats_stream(shard: Rc<Shard>, session: Rc<Session>) {
    let mut ticker = tokio::time::interval(STATS_STREAM_INTERVAL);
    loop {
        ticker.tick().await;
        if session.is_closing() || session.killed.get() {
            return;
        }
        session.reply(&shard, &outbound::to_bytes(&crate::report::stream_frame(shard.node())));
    }
}
