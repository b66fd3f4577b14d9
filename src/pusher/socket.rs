//! A Pusher connection: the upgrade at `/app/{key}`, `pusher:connection_established`, and the
//! client's messages (ping, subscribe, unsubscribe, sign-in, client events).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::PusherOf;
use super::presence::Added;
use super::protocol::{self, Inbound, code};
use super::{App, ChannelKind, sign};
use crate::auth::Identity;
use crate::config::{EndpointKind, NameKind, WelcomeStyle};
use crate::gateway::upgrade::refuse;
use crate::hub::{Event, Hub, Target};
use crate::node::Node;
use crate::session::Shard;
use crate::session::face::{self, Face, FaceConn};
use crate::session::handlers::streams;
use crate::session::{ConnectPlan, Session};
use crate::transport::handshake;
use futures_util::future::LocalBoxFuture;

/// What the upgrade decided for a Pusher connection, carried to its shard in the plan.
#[derive(Debug)]
pub struct Opening {
    /// The app, when the key is known and the connection may stay.
    pub app: Option<super::AppSlot>,
    /// Why it may not: a protocol close code and message, sent as `pusher:error` then close.
    pub refusal: Option<(u16, String)>,
}

/// A Pusher connection's own state, beside its [`Session`]. Kept small (80 bytes, no other
/// allocation while idle): every idle connection holds one. The socket id is not stored (it is
/// derived from the connection number), and presence memberships share the channel map.
#[derive(Debug)]
pub struct Conn {
    app: super::AppSlot,
    /// Every channel (hub name) it is subscribed to, for `channel_vacated` after it closes, with
    /// the member this socket is on presence channels. Empty maps allocate nothing.
    channels: HashMap<Arc<str>, Option<Box<str>>>,
    /// The signed-in user (`pusher:signin`).
    user: Option<Box<str>>,
    /// Client events in the current one-second window: (Unix second, count).
    window: (u32, u32),
}

impl Conn {
    /// The connection's app.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// The signed-in user id, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

/// The handler of `GET /app/{key}`.
pub async fn upgrade(node: Arc<Node>, key: String, mut request: Request) -> Response {
    let upgrade = match handshake::check(request.method(), request.headers()) {
        Ok(upgrade) => upgrade,
        Err(e) => return refuse(e.status(), "UPGRADE_REQUIRED", &e.to_string()),
    };
    if node.shutdown.is_cancelled() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "SHUTTING_DOWN", "server shutting down");
    }
    let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "peer address unknown");
    };
    let client_ip = crate::gateway::upgrade::client_ip(&node.config, peer.ip(), request.headers());
    if let Err(origin) = crate::gateway::upgrade::check_origin(&node.config, request.headers()) {
        node.stats.node.refused_connections.fetch_add(1, Ordering::Relaxed);
        return refuse(StatusCode::FORBIDDEN, "ORIGIN_NOT_ALLOWED", &format!("origin {origin:?} is not allowed"));
    }
    let params: HashMap<String, String> =
        request.uri().query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    // Refusals after this point are in-band (`pusher:error`, then the protocol's close code),
    // which is how pusher-js learns whether to reconnect.
    let mut opening = Opening { app: None, refusal: None };
    let cap = node.limits.config().max_connections;
    let app = node.pusher().by_key(&key);
    opening.refusal = match (params.get("protocol").map(|p| p.parse::<u32>()), app) {
        (None, _) => Some((code::NO_PROTOCOL, "no protocol version given; pusher-js sends ?protocol=7".into())),
        (Some(Err(_)), _) => Some((code::INVALID_VERSION, "the protocol version must be a number".into())),
        (Some(Ok(v)), _) if !(5..=7).contains(&v) => {
            Some((code::UNSUPPORTED_PROTOCOL, format!("protocol {v} is not supported; use 7")))
        }
        (_, None) => Some((code::APP_NOT_FOUND, format!("App key {key} does not exist"))),
        _ if cap > 0 && node.stats.totals().connections >= cap as u64 => {
            Some((code::OVER_CAPACITY, "the server is over capacity; try again later".into()))
        }
        (_, Some(app)) => match super::AppSlot::take(app) {
            Some(slot) => {
                opening.app = Some(slot);
                None
            }
            None => Some((code::OVER_QUOTA, "the app has reached its connection quota".into())),
        },
    };
    let mut permit = None;
    if opening.refusal.is_none() {
        match node.limits.acquire_connection(client_ip, None).await {
            Ok(p) => permit = Some(p),
            Err(e) => {
                opening.app = None;
                opening.refusal = Some((code::OVER_CAPACITY, e.to_string()));
            }
        }
    }
    if opening.refusal.is_some() {
        node.stats.node.refused_connections.fetch_add(1, Ordering::Relaxed);
    }
    let mut wire = crate::hub::event::Wire::default();
    let extension = crate::transport::deflate::negotiate(&upgrade.extensions, &node.config.compression).map(
        |(response, params)| {
            wire.deflate = Some(params);
            response
        },
    );
    let plan = ConnectPlan {
        client_id: None,
        peer,
        client_ip,
        kind: EndpointKind::Pusher,
        path: request.uri().path().to_string(),
        channels: Vec::new(),
        rooms: Vec::new(),
        welcome: WelcomeStyle::None,
        max_message: node.config.websocket.max_message_size,
        user: None,
        expires_at: None,
        rejection: None,
        permit,
        wire,
        seq: false,
        face: Some(Box::new(opening)),
        fallback: None,
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let shard = node.hub.pick_shard(|i| node.stats.shards[i].connections.load(Ordering::Relaxed));
    tokio::spawn(crate::session::connect::hand_over(node.clone(), shard, on_upgrade, plan));
    handshake::switching_protocols::<Body>(&upgrade.key, None, extension.as_deref())
}

/// The `activity_timeout` announced to clients: how long a quiet client waits before it sends
/// `pusher:ping`. Half the node's idle timeout, at most the protocol's 120 s.
fn activity_timeout(node: &Node) -> u64 {
    (node.config.websocket.idle_timeout / 2).as_secs().clamp(1, 120)
}

/// The Pusher face's handlers, named by every Pusher connection's [`Conn`].
struct PusherFace;

static FACE: PusherFace = PusherFace;

impl Face for PusherFace {
    fn text<'a>(&self, shard: &'a Rc<Shard>, session: &'a Rc<Session>, text: Bytes) -> LocalBoxFuture<'a, ()> {
        Box::pin(handle_text(shard, session, text))
    }

    fn binary(&self, shard: &Rc<Shard>, session: &Rc<Session>) {
        binary(shard, session);
    }

    fn finish<'a>(&self, shard: &'a Rc<Shard>, session: &'a Rc<Session>) -> LocalBoxFuture<'a, ()> {
        Box::pin(finish(shard, session))
    }
}

impl FaceConn for Conn {
    fn face(&self) -> &'static dyn Face {
        &FACE
    }

    fn app_id(&self) -> Option<&str> {
        Some(&self.app.config.id)
    }

    fn own_name<'a>(&self, hub_name: &'a str) -> Option<&'a str> {
        self.app.own_name(hub_name)
    }
}

impl face::Opening for Opening {
    fn start(self: Box<Self>, shard: &Rc<Shard>, session: &Rc<Session>) {
        start(shard, session, *self);
    }
}

/// Starts a Pusher session on its shard: `pusher:connection_established`, or the refusal.
fn start(shard: &Rc<Shard>, session: &Rc<Session>, opening: Opening) {
    let app = match (opening.refusal, opening.app) {
        (None, Some(app)) => app,
        (refusal, _slot) => {
            let (close, text) = refusal.unwrap_or((code::APP_NOT_FOUND, "unknown app".into()));
            session.reply(shard, &protocol::error(Some(close), &text));
            session.close(shard, close, &text);
            return;
        }
    };
    let node = shard.node();
    let socket_id = node.pusher().socket_id(session.id);
    let established = json!({ "socket_id": socket_id, "activity_timeout": activity_timeout(node) });
    session.set_face_state(Box::new(Conn { app, channels: HashMap::new(), user: None, window: (0, 0) }));
    session.accepting.set(true);
    session.reply(shard, &protocol::message_json("pusher:connection_established", None, &established));
}

/// After the session left its shard's index: presence departures and the app's slot.
async fn finish(shard: &Rc<Shard>, session: &Rc<Session>) {
    // Dropping `conn` at the end gives its app slot back.
    let Some(conn) = session.take_face_state::<Conn>() else { return };
    for (channel, member) in &conn.channels {
        if let Some(user) = member {
            leave_presence(shard, &conn.app, channel, user).await;
        }
    }
    for channel in conn.channels.keys() {
        shard.node().pusher().occupancy.remove(channel);
    }
}

async fn leave_presence(shard: &Shard, app: &Arc<App>, hub_channel: &Arc<str>, user: &str) {
    let node = shard.node();
    if super::presence::leave(node, hub_channel, user).await {
        let name = app.own_name(hub_channel).unwrap_or_default();
        node.pusher().webhooks.send(app, json!({ "name": "member_removed", "channel": name, "user_id": user }));
        let payload = protocol::message_json("pusher_internal:member_removed", Some(name), &json!({ "user_id": user }));
        let target = Target { channel: Some(hub_channel.clone()), ..Default::default() };
        super::publish_internal(node, Event::new(target, payload)).await;
    }
}

/// Handles one text message of a Pusher client. Every refusal is a `pusher:error` (or a
/// `pusher:subscription_error`) and the connection carries on.
async fn handle_text(shard: &Rc<Shard>, session: &Rc<Session>, text: Bytes) {
    let message = match Inbound::parse(&text) {
        Ok(message) => message,
        Err(e) => return fail(shard, session, Some(code::INVALID_MESSAGE), &e),
    };
    // Herald's message rate limits (`[limits]`) apply to Pusher clients too; the protocol's own
    // keep-alives are never counted.
    let node = shard.node();
    let keepalive = matches!(message.event.as_str(), "pusher:ping" | "pusher:pong");
    if !keepalive && node.limits.counts(&message.event) {
        let mut rate = session.rate.borrow_mut().take();
        let decision = node.limits.check_message(&mut rate, None).await;
        *session.rate.borrow_mut() = rate;
        if let crate::limits::RateDecision::Refused { retry_after, disconnect } = decision {
            crate::stats::bump(&shard.counters().rate_limited, 1);
            let text = format!("rate limit exceeded: retry in {} s", retry_after.as_secs_f64().ceil());
            fail(shard, session, Some(code::CLIENT_EVENT_RATE), &text);
            if disconnect {
                // 4100: over capacity, reconnect after a back-off.
                session.close(shard, code::OVER_CAPACITY, "rate limit exceeded repeatedly");
            }
            return;
        }
    }
    let result = match message.event.as_str() {
        "pusher:ping" => {
            session.reply(shard, br#"{"event":"pusher:pong","data":"{}"}"#);
            Ok(())
        }
        "pusher:pong" => Ok(()),
        "pusher:subscribe" => Box::pin(subscribe(shard, session, &message)).await,
        "pusher:unsubscribe" => unsubscribe(shard, session, &message).await,
        "pusher:signin" => signin(shard, session, &message),
        name if name.starts_with("client-") => Box::pin(client_event(shard, session, &message)).await,
        other => Err((Some(code::INVALID_MESSAGE), format!("unknown event {other:?}"))),
    };
    if let Err((code, text)) = result {
        fail(shard, session, code, &text);
    }
}

/// A binary frame: the protocol is JSON text only.
fn binary(shard: &Rc<Shard>, session: &Rc<Session>) {
    fail(shard, session, Some(code::INVALID_MESSAGE), "binary frames are not part of the protocol; send JSON text");
}

fn fail(shard: &Rc<Shard>, session: &Rc<Session>, code: Option<u16>, text: &str) {
    crate::stats::bump(&shard.counters().client_errors, 1);
    session.reply(shard, &protocol::error(code, text));
}

type Refusal = (Option<u16>, String);

fn refusal(text: impl Into<String>) -> Refusal {
    (Some(code::INVALID_MESSAGE), text.into())
}

fn conn_facts(shard: &Shard, session: &Session) -> Option<(Arc<App>, String, Option<String>)> {
    let conn = session.face_state::<Conn>()?;
    Some((conn.app.clone(), shard.node().pusher().socket_id(session.id), conn.user.as_deref().map(String::from)))
}

fn string_field<'a>(data: &'a serde_json::Map<String, Value>, field: &str) -> Option<&'a str> {
    data.get(field).and_then(Value::as_str)
}

async fn subscribe(shard: &Rc<Shard>, session: &Rc<Session>, message: &Inbound) -> Result<(), Refusal> {
    let Some((app, socket_id, user)) = conn_facts(shard, session) else { return Ok(()) };
    let data = message.data_object().ok_or_else(|| refusal("pusher:subscribe needs data {\"channel\": …}"))?;
    let channel = string_field(&data, "channel").ok_or_else(|| refusal("pusher:subscribe needs data.channel"))?;
    super::valid_channel(channel).map_err(refusal)?;
    let auth_error = |text: &str| {
        session.reply(shard, &protocol::subscription_error(channel, "AuthError", text, 401));
        Ok(())
    };
    let kind = ChannelKind::of(channel);
    let key = &app.config.key;
    let secret = &app.config.secret;
    let mut member = None;
    match kind {
        ChannelKind::Public => {}
        ChannelKind::Private => {
            let auth = string_field(&data, "auth").unwrap_or_default();
            if !sign::verify_channel(key, secret, auth, &socket_id, channel, None) {
                return auth_error(&format!(
                    "Invalid signature for {channel}: expected key:HMAC-SHA256(secret, \"{socket_id}:{channel}\")"
                ));
            }
        }
        ChannelKind::Presence => {
            let auth = string_field(&data, "auth").unwrap_or_default();
            let Some(channel_data) = string_field(&data, "channel_data") else {
                return auth_error("presence channels need channel_data");
            };
            if !sign::verify_channel(key, secret, auth, &socket_id, channel, Some(channel_data)) {
                return auth_error(&format!(
                    "Invalid signature for {channel}: expected key:HMAC-SHA256(secret, \"{socket_id}:{channel}:<channel_data>\")"
                ));
            }
            let parsed: Value = serde_json::from_str(channel_data).map_err(|_| refusal("channel_data must be JSON"))?;
            let user_id = match parsed.get("user_id") {
                Some(Value::String(id)) if !id.is_empty() && id.len() <= 200 => id.clone(),
                Some(Value::Number(id)) => id.to_string(),
                _ => return Err(refusal("channel_data needs a user_id (a non-empty string of at most 200 bytes)")),
            };
            let info = parsed.get("user_info").cloned().unwrap_or(Value::Null);
            if info.to_string().len() > app.config.max_presence_user_info_bytes {
                return Err(refusal(format!(
                    "user_info is larger than {} bytes",
                    app.config.max_presence_user_info_bytes
                )));
            }
            member = Some((user_id, info));
        }
        ChannelKind::User => {
            let wanted = channel.trim_start_matches("#server-to-user-");
            if user.as_deref() != Some(wanted) {
                return auth_error("only the signed-in user may subscribe to its #server-to-user- channel");
            }
        }
    }
    // Herald's positions, where the channel has history: `"seq": true` follows the channel with
    // positions, `"recover": {"seq", "epoch"}` also replays what was missed since then.
    let wanted = data.get("seq").and_then(Value::as_bool).unwrap_or(false);
    let since = data
        .get("recover")
        .map(|p| streams::parse_position(p, "recover"))
        .transpose()
        .map_err(|e| refusal(e.message))?;
    let asked_to_recover = since.is_some();
    let hub: Arc<str> = Arc::from(app.hub_name(channel));
    let node = shard.node().clone();
    let already = session.state.borrow().channels.contains(&*hub);
    let limit = node.limits.config().max_channels_per_connection;
    if !already && limit > 0 && session.state.borrow().channels.len() >= limit {
        return Err(refusal(format!("a connection may subscribe to at most {limit} channels")));
    }
    if !already && let Some((user_id, info)) = &member {
        match super::presence::join(&node, &hub, user_id, info.clone(), app.config.max_presence_members).await {
            Added::Full => {
                return Err((
                    Some(code::OVER_QUOTA),
                    format!("{channel} already has {} members", app.config.max_presence_members),
                ));
            }
            Added::New => {
                let hook = json!({ "name": "member_added", "channel": channel, "user_id": user_id });
                node.pusher().webhooks.send(&app, hook);
                let added = json!({ "user_id": user_id, "user_info": info });
                let payload = protocol::message_json("pusher_internal:member_added", Some(channel), &added);
                let target = Target { channel: Some(hub.clone()), ..Default::default() };
                super::publish_internal(&node, Event::excluding(target, payload, session.id)).await;
            }
            Added::Again => {}
        }
    }
    let ready = shard.subscribe(session, &hub);
    if !already {
        if let Some(mut conn) = session.face_state::<Conn>() {
            let member = member.as_ref().map(|(user_id, _)| Box::from(user_id.as_str()));
            conn.channels.insert(hub.clone(), member);
        }
        node.pusher().occupancy.add(&app, &hub);
    }
    // Right after the index subscription, before any await: live events from here on are held
    // until the replay is done.
    let pending = streams::begin(shard, session, NameKind::Channel, &hub, wanted, since);
    Hub::ready(ready.into_iter().collect(), node.config.redis.timeout).await;
    let succeeded = match kind {
        ChannelKind::Presence => super::presence::snapshot(&node, &hub).await.to_string(),
        _ => "{}".to_string(),
    };
    let recovery = match &pending {
        Some(pending) => Some(streams::fetch(shard, pending).await),
        None => None,
    };
    let position = recovery.as_ref().map(|r| streams::report(r, asked_to_recover));
    session.reply(shard, &protocol::subscription_succeeded(channel, &succeeded, position));
    if let (Some(pending), Some(recovery)) = (pending, recovery) {
        streams::finish(shard, session, &pending, recovery);
    }
    if super::is_cache(channel) {
        let cached = super::cache::recall(&node, &hub).await;
        match cached {
            Some(last) => session.reply(shard, &last),
            None => {
                session.reply(shard, &protocol::message("pusher:cache_miss", Some(channel), "{}"));
                node.pusher().webhooks.send(&app, json!({ "name": "cache_miss", "channel": channel }));
            }
        }
    }
    Ok(())
}

async fn unsubscribe(shard: &Rc<Shard>, session: &Rc<Session>, message: &Inbound) -> Result<(), Refusal> {
    let Some((app, _, _)) = conn_facts(shard, session) else { return Ok(()) };
    let data = message.data_object().ok_or_else(|| refusal("pusher:unsubscribe needs data {\"channel\": …}"))?;
    let channel = string_field(&data, "channel").ok_or_else(|| refusal("pusher:unsubscribe needs data.channel"))?;
    super::valid_channel(channel).map_err(refusal)?;
    let hub: Arc<str> = Arc::from(app.hub_name(channel));
    let was = shard.unsubscribe(session, &hub);
    streams::end(session, NameKind::Channel, &hub);
    let member = session.face_state::<Conn>().and_then(|mut c| c.channels.remove(&hub).flatten());
    if let Some(user) = member {
        leave_presence(shard, &app, &hub, &user).await;
    }
    if was {
        shard.node().pusher().occupancy.remove(&hub);
    }
    Ok(())
}

fn signin(shard: &Rc<Shard>, session: &Rc<Session>, message: &Inbound) -> Result<(), Refusal> {
    let Some((app, socket_id, user)) = conn_facts(shard, session) else { return Ok(()) };
    let data = message.data_object().ok_or_else(|| refusal("pusher:signin needs data {auth, user_data}"))?;
    let auth = string_field(&data, "auth").unwrap_or_default();
    let user_data = string_field(&data, "user_data").ok_or_else(|| refusal("pusher:signin needs user_data"))?;
    if !sign::verify_signin(&app.config.key, &app.config.secret, auth, &socket_id, user_data) {
        return Err((Some(code::UNAUTHORIZED), "Invalid signature for pusher:signin".into()));
    }
    let parsed: Value = serde_json::from_str(user_data).map_err(|_| refusal("user_data must be JSON"))?;
    let id = match parsed.get("id") {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= 200 && super::valid_channel(id).is_ok() => id.clone(),
        _ => return Err(refusal("user_data needs an id of 1 to 164 characters A-Z a-z 0-9 _ - = @ , . ;")),
    };
    if user.is_some_and(|u| u != id) {
        return Err(refusal("this connection is already signed in as another user"));
    }
    if let Some(mut conn) = session.face_state::<Conn>() {
        conn.user = Some(Box::from(id.as_str()));
    }
    if session.user_id().is_none() {
        // Indexed under the app's hub name of the user, so the node can find its sockets.
        session.set_user(Arc::new(Identity::unverified(&app.hub_name(&id))));
        drop(shard.bind_user(session));
    }
    let success = json!({ "user_data": user_data });
    session.reply(shard, &protocol::message_json("pusher:signin_success", None, &success));
    Ok(())
}

async fn client_event(shard: &Rc<Shard>, session: &Rc<Session>, message: &Inbound) -> Result<(), Refusal> {
    let Some((app, _, _)) = conn_facts(shard, session) else { return Ok(()) };
    if !app.config.enable_client_messages {
        return Err(refusal("client events are not enabled for this app"));
    }
    let channel = message.channel.as_deref().ok_or_else(|| refusal("a client event needs a channel"))?;
    let kind = ChannelKind::of(channel);
    if !matches!(kind, ChannelKind::Private | ChannelKind::Presence) {
        return Err(refusal(format!(
            "client events are allowed only on private and presence channels, not {channel:?}"
        )));
    }
    let hub: Arc<str> = Arc::from(app.hub_name(channel));
    if !session.state.borrow().channels.contains(&*hub) {
        return Err(refusal(format!("subscribe to {channel} before sending client events on it")));
    }
    let (limited, user_id, socket_id) = {
        let Some(mut conn) = session.face_state::<Conn>() else { return Ok(()) };
        let second = (crate::stats::unix_millis() / 1000) as u32;
        if conn.window.0 != second {
            conn.window = (second, 0);
        }
        conn.window.1 += 1;
        let limited = conn.window.1 > app.config.max_client_events_per_second;
        let member = conn.channels.get(&hub).cloned().flatten().map(String::from);
        (limited, member, shard.node().pusher().socket_id(session.id))
    };
    if limited {
        crate::stats::bump(&shard.counters().rate_limited, 1);
        return Err((
            Some(code::CLIENT_EVENT_RATE),
            format!("client event rejected: at most {} per second", app.config.max_client_events_per_second),
        ));
    }
    let payload = protocol::event(&message.event, channel, &message.data, user_id.as_deref());
    if payload.len() > app.config.max_event_payload_bytes + 512 {
        return Err(refusal(format!("the event is larger than {} bytes", app.config.max_event_payload_bytes)));
    }
    if super::is_cache(channel) {
        super::cache::remember(shard.node(), &hub, &payload).await;
    }
    let target = Target { channel: Some(hub), ..Default::default() };
    let _ = shard.node().publisher().publish_event(Event::excluding(target, payload, session.id)).await;
    // Webhooks carry `data` as a string, as the protocol's server messages do.
    let data = match &message.data {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let mut hook = json!({
        "name": "client_event", "channel": channel, "event": message.event, "data": data, "socket_id": socket_id,
    });
    if let Some(user) = user_id {
        hook["user_id"] = Value::from(user);
    }
    shard.node().pusher().webhooks.send(&app, hook);
    Ok(())
}

/// Closes every connection of `user` in `app` on this shard with 4009; returns how many.
pub fn terminate_user(shard: &Rc<Shard>, app: &App, user: &str) -> usize {
    let mut closed = 0;
    for session in shard.all_sessions() {
        let matches = session
            .face_state::<Conn>()
            .is_some_and(|c| c.app.config.id == app.config.id && c.user.as_deref() == Some(user));
        if matches {
            session.reply(shard, &protocol::error(Some(code::UNAUTHORIZED), "connection terminated by the app"));
            session.close(shard, code::UNAUTHORIZED, "terminated by the app");
            closed += 1;
        }
    }
    closed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_pusher_connection_holds_little() {
        // Every idle Pusher connection holds one `Conn` beside its `Session`; it was 176 bytes
        // plus a heap-allocated socket id before.
        assert!(std::mem::size_of::<Conn>() <= 80, "{}", std::mem::size_of::<Conn>());
    }
}
