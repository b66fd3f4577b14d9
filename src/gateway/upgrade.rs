//! The WebSocket endpoints: check the upgrade, decide the connection's plan (pre-subscriptions
//! from the endpoint and query parameters), answer `101`, and start the session on this shard.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::transport::handshake::{self, HandshakeError};
use std::net::IpAddr;
use std::sync::atomic::Ordering;

use crate::audit;
use crate::auth::{self, Identity, TokenError};
use crate::config::{AuthMode, Config, EndpointConfig, EndpointKind, RejectStyle, WelcomeStyle};
use crate::node::Node;
use crate::protocol::{template, validate_name};
use crate::session::ConnectPlan;

/// Subprotocols Herald understands, in order of preference.
pub const PROTOCOLS: &[&str] = &["herald.json", "herald.msgpack"];

/// An endpoint as mounted at one path.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The full path, e.g. `/ws/campaigns`.
    pub path: String,
    /// What it serves.
    pub kind: EndpointKind,
    /// Channel templates.
    pub channels: Vec<String>,
    /// Room templates.
    pub rooms: Vec<String>,
    /// Whether `channels=a,b` is honoured.
    pub query_channels: bool,
    /// Welcome style.
    pub welcome: WelcomeStyle,
    /// Largest client message.
    pub max_message: usize,
    /// Authentication on this endpoint.
    pub auth: AuthMode,
}

/// Every endpoint under every mount.
pub fn endpoints(config: &Config) -> Vec<Endpoint> {
    let main = EndpointConfig::default();
    let declared = config.endpoints.iter();
    let implicit_main = config.websocket.main_endpoint && !config.endpoints.iter().any(|e| e.path.is_empty());
    let all: Vec<&EndpointConfig> = implicit_main.then_some(&main).into_iter().chain(declared).collect();
    let mut out = Vec::new();
    for mount in &config.server.mounts {
        for e in &all {
            out.push(Endpoint {
                path: format!("{mount}{}", e.path),
                kind: e.kind,
                channels: e.channels.clone(),
                rooms: e.rooms.clone(),
                query_channels: e.query_channels.unwrap_or(true),
                welcome: e.welcome.unwrap_or(config.websocket.welcome),
                max_message: e.max_message_size.unwrap_or(config.websocket.max_message_size),
                auth: e.auth.unwrap_or(config.auth.mode),
            });
        }
    }
    out
}

pub use crate::transport::http::refuse;

/// How a connection proves who it is.
pub(crate) enum Credential {
    /// A token (or none) found in the query, a header or the subprotocols.
    Token(Option<String>),
    /// A fallback transport's one-time ticket, already redeemed.
    Ticket(Result<crate::auth::Verified, TokenError>),
}

/// The handler behind every WebSocket endpoint.
pub async fn handle(node: Arc<Node>, endpoint: Arc<Endpoint>, request: Request) -> Response {
    if endpoint.kind == EndpointKind::Stats && !handshake::is_upgrade(request.headers()) {
        return axum::Json(crate::report::snapshot(&node).await).into_response();
    }
    let upgrade = match handshake::check(request.method(), request.headers()) {
        Ok(upgrade) => upgrade,
        Err(e) => {
            let mut response = refuse(e.status(), "UPGRADE_REQUIRED", &e.to_string());
            if e == HandshakeError::Version {
                response.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            }
            return response;
        }
    };
    let params = query_params(&request);
    let presented = auth::presented(request.headers(), &params, &upgrade.protocols);
    let (parts, body) = request.into_parts();
    let prepared = prepare(&node, &endpoint, &parts, &params, Credential::Token(presented.token)).await;
    let mut request = Request::from_parts(parts, body);
    let mut plan = match prepared {
        Ok(plan) => plan,
        Err(response) => return response,
    };
    let protocol =
        presented.protocol.or_else(|| upgrade.protocols.iter().find(|p| PROTOCOLS.contains(&p.as_str())).cloned());
    plan.wire.msgpack = protocol.as_deref() == Some("herald.msgpack");
    let extension = crate::transport::deflate::negotiate(&upgrade.extensions, &node.config.compression).map(
        |(response, params)| {
            plan.wire.deflate = Some(params);
            response
        },
    );
    let on_upgrade = hyper::upgrade::on(&mut request);
    let shard = node.hub.pick_shard(|i| node.stats.shards[i].connections.load(Ordering::Relaxed));
    tokio::spawn(crate::session::connect::hand_over(node.clone(), shard, on_upgrade, plan));
    handshake::switching_protocols::<Body>(&upgrade.key, protocol.as_deref(), extension.as_deref())
}

/// The request's query parameters.
pub(crate) fn query_params(request: &Request) -> HashMap<String, String> {
    request.uri().query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

/// Everything every transport decides before a connection starts: the node takes connections,
/// the origin is allowed, the node cap, the plan from the endpoint and query, who it is, and its
/// place under the per-address and per-user caps. `Err` is the refusal to answer.
pub(crate) async fn prepare(
    node: &Arc<Node>,
    endpoint: &Endpoint,
    request: &http::request::Parts,
    params: &HashMap<String, String>,
    credential: Credential,
) -> Result<ConnectPlan, Response> {
    if node.shutdown.is_cancelled() {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "SHUTTING_DOWN",
            "server shutting down; connect to another node",
        ));
    }
    let Some(ConnectInfo(peer)) = request.extensions.get::<ConnectInfo<SocketAddr>>().copied() else {
        return Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "peer address unknown"));
    };
    let client_ip = client_ip(&node.config, peer.ip(), &request.headers);
    if let Err(origin) = check_origin(&node.config, &request.headers) {
        refused(node);
        audit::authentication_failed(&client_ip.to_string(), &endpoint.path, &format!("origin {origin:?} not allowed"));
        return Err(refuse(StatusCode::FORBIDDEN, "ORIGIN_NOT_ALLOWED", &format!("origin {origin:?} is not allowed")));
    }
    let cap = node.limits.config().max_connections;
    // Statistics streams are not clients, but they hold sockets all the same: they count here.
    let totals = node.stats.totals();
    if cap > 0 && totals.connections + totals.observers >= cap as u64 {
        refused(node);
        return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, "TOO_MANY_CONNECTIONS", "Too many connections"));
    }
    let mut plan = match plan(endpoint, params, peer, node.auth.believes_claimed_ids(endpoint.auth)) {
        Ok(plan) => plan,
        Err(message) => return Err(refuse(StatusCode::BAD_REQUEST, "INVALID_NAME", &message)),
    };
    plan.client_ip = client_ip;

    // Who is connecting.
    let verdict = match (endpoint.auth, credential) {
        (AuthMode::Off, _) => Ok(None),
        (_, Credential::Ticket(redeemed)) => redeemed.map(Some),
        (AuthMode::Optional, Credential::Token(None)) => Ok(None),
        (AuthMode::Required, Credential::Token(None)) => Err(TokenError::Missing),
        (_, Credential::Token(Some(token))) => node.auth.verify(&token).map(Some),
    };
    match verdict {
        Ok(Some(verified)) => {
            plan.user = Some(verified.identity);
            plan.expires_at = Some(verified.expires_at);
        }
        Ok(None) if endpoint.auth != AuthMode::Off => plan.user = None,
        Ok(None) => {}
        Err(e) => {
            refused(node);
            audit::authentication_failed(&client_ip.to_string(), &endpoint.path, &e.to_string());
            if node.auth.config().reject == RejectStyle::Http {
                return Err(refuse(StatusCode::UNAUTHORIZED, "AUTHENTICATION_FAILED", &e.to_string()));
            }
            plan.user = None;
            plan.rejection = Some(e.to_string());
            plan.channels.clear();
            plan.rooms.clear();
        }
    }

    // How many connections this address and this user already have.
    if plan.rejection.is_none() {
        let user = plan.user.as_ref().filter(|u| u.verified).map(|u| u.id.clone());
        match node.limits.acquire_connection(client_ip, user.clone()).await {
            Ok(permit) => plan.permit = Some(permit),
            Err(e) => {
                refused(node);
                audit::limit(&client_ip.to_string(), user.as_deref(), &e.to_string());
                return Err(refuse(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED", &e.to_string()));
            }
        }
    }
    Ok(plan)
}

/// The client's address of a request, as text (for audit records).
pub(crate) fn peer_ip(node: &Node, request: &Request) -> String {
    match request.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(peer)) => client_ip(&node.config, peer.ip(), request.headers()).to_string(),
        None => "unknown".into(),
    }
}

fn refused(node: &Node) {
    node.stats.node.refused_connections.fetch_add(1, Ordering::Relaxed);
}

/// The client's address: the peer, or, behind a trusted proxy, the last address in
/// `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(config: &Config, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
    let trusted = &config.server.trusted_proxies;
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded.into_iter().rev().find(|ip| !trusted.contains(ip)).unwrap_or(peer)
}

/// Checks the `Origin` of a browser's upgrade against `server.allowed_origins`. Requests without
/// an `Origin` (servers, native apps) are not browsers and pass.
pub(crate) fn check_origin(config: &Config, headers: &http::HeaderMap) -> Result<(), String> {
    let allowed = &config.server.allowed_origins;
    if allowed.is_empty() || allowed.iter().any(|o| o == "*") {
        return Ok(());
    }
    match headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("")) {
        None => Ok(()),
        Some(origin) if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) => Ok(()),
        Some(origin) => Err(origin.to_string()),
    }
}

/// Channels and rooms from the endpoint's templates and the `channels` parameter.
/// `claimed_ids`: whether a `user_id` parameter names the connection (see
/// [`auth::Auth::believes_claimed_ids`]); where it does not, the parameter is ignored and the
/// connection is anonymous.
fn plan(
    endpoint: &Endpoint,
    params: &HashMap<String, String>,
    peer: SocketAddr,
    claimed_ids: bool,
) -> Result<ConnectPlan, String> {
    let lookup = |name: &str| params.get(name).map(String::as_str);
    let mut channels: Vec<String> = endpoint.channels.iter().filter_map(|t| template::render(t, lookup)).collect();
    if endpoint.query_channels
        && let Some(list) = params.get("channels")
    {
        channels.extend(list.split(',').map(str::trim).filter(|c| !c.is_empty()).map(String::from));
    }
    let rooms: Vec<String> = endpoint.rooms.iter().filter_map(|t| template::render(t, lookup)).collect();
    for channel in &channels {
        validate_name("channel", channel).map_err(|e| e.message)?;
    }
    for room in &rooms {
        validate_name("room", room).map_err(|e| e.message)?;
    }
    let client_id = params.get("client_id").filter(|c| !c.is_empty() && c.len() <= 200).cloned();
    // Without authentication a client may name its user, as the anonymous compatibility profiles
    // do; such an identity is self-asserted, so it is believed only on a node where no token
    // could prove the same name.
    let user = match params.get("user_id").filter(|u| !u.is_empty() && claimed_ids) {
        Some(user) => {
            validate_name("user", user).map_err(|e| e.message)?;
            Some(Arc::new(Identity::unverified(user)))
        }
        None => None,
    };
    Ok(ConnectPlan {
        client_id,
        peer,
        client_ip: peer.ip(),
        kind: endpoint.kind,
        path: endpoint.path.clone(),
        channels,
        rooms,
        welcome: endpoint.welcome,
        max_message: endpoint.max_message,
        user,
        expires_at: None,
        rejection: None,
        permit: None,
        wire: Default::default(),
        seq: matches!(params.get("seq").map(String::as_str), Some("1" | "true")),
        face: None,
        fallback: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn campaigns() -> Endpoint {
        Endpoint {
            path: "/ws/campaigns".into(),
            kind: EndpointKind::Events,
            channels: vec!["campaigns".into()],
            rooms: vec!["campaign:{campaign_id}".into()],
            query_channels: true,
            welcome: WelcomeStyle::Connection,
            max_message: 1024,
            auth: AuthMode::Off,
        }
    }

    #[test]
    fn plans_from_templates_and_query() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let params =
            HashMap::from([("campaign_id".to_string(), "123".to_string()), ("channels".into(), "emails, ai".into())]);
        let plan = plan(&campaigns(), &params, peer, true).unwrap();
        assert_eq!(plan.channels, vec!["campaigns", "emails", "ai"]);
        assert_eq!(plan.rooms, vec!["campaign:123"]);
        let plan_without = super::plan(&campaigns(), &HashMap::new(), peer, true).unwrap();
        assert!(plan_without.rooms.is_empty());
    }

    #[test]
    fn endpoints_mount_everywhere() {
        let mut config = Config::default();
        config.server.mounts = vec!["/ws".into(), "/api/v1/ws".into()];
        config.endpoints.push(EndpointConfig { path: "/campaigns".into(), ..Default::default() });
        let paths: Vec<String> = endpoints(&config).into_iter().map(|e| e.path).collect();
        assert_eq!(paths, vec!["/ws", "/ws/campaigns", "/api/v1/ws", "/api/v1/ws/campaigns"]);
    }
}
