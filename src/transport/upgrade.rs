//! The WebSocket endpoints: check the upgrade, decide the connection's plan (pre-subscriptions
//! from the endpoint and query parameters), answer `101`, and start the session on this shard.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use super::handshake::{self, HandshakeError};
use crate::auth::Identity;
use crate::config::{Config, EndpointConfig, EndpointKind, WelcomeStyle};
use crate::node::Node;
use crate::protocol::{template, validate_name};
use crate::session::ConnectPlan;

/// Subprotocols Herald understands, in order of preference.
pub const PROTOCOLS: &[&str] = &["herald.json"];

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
            });
        }
    }
    out
}

/// Plain-text-free JSON error response for HTTP refusals.
pub fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "success": false, "error": message, "code": code });
    (status, axum::Json(body)).into_response()
}

/// The handler behind every WebSocket endpoint.
pub async fn handle(node: Arc<Node>, endpoint: Arc<Endpoint>, request: Request) -> Response {
    if endpoint.kind == EndpointKind::Stats && !handshake::is_upgrade(request.headers()) {
        return crate::api::stats::stats(axum::extract::State(node)).await;
    }
    accept(&node, &endpoint, request)
}

fn accept(node: &Arc<Node>, endpoint: &Endpoint, mut request: Request) -> Response {
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
    if node.shutdown.is_cancelled() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "SHUTTING_DOWN",
            "server shutting down; connect to another node",
        );
    }
    let cap = node.config.limits.max_connections;
    if cap > 0 && node.stats.totals().connections >= cap as u64 {
        node.stats.node.refused_connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "TOO_MANY_CONNECTIONS", "Too many connections");
    }
    let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "peer address unknown");
    };
    let params: HashMap<String, String> =
        request.uri().query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let plan = match plan(endpoint, &params, peer) {
        Ok(plan) => plan,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, "INVALID_NAME", &message),
    };
    let protocol = upgrade.protocols.iter().find(|p| PROTOCOLS.contains(&p.as_str())).cloned();
    let on_upgrade = hyper::upgrade::on(&mut request);
    let shard = node.hub.pick_shard(|i| node.stats.shards[i].connections.load(std::sync::atomic::Ordering::Relaxed));
    tokio::spawn(crate::session::connect::hand_over(node.clone(), shard, on_upgrade, plan));
    handshake::switching_protocols::<Body>(&upgrade.key, protocol.as_deref(), None)
}

/// Channels and rooms from the endpoint's templates and the `channels` parameter.
fn plan(endpoint: &Endpoint, params: &HashMap<String, String>, peer: SocketAddr) -> Result<ConnectPlan, String> {
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
    // Without authentication a client may name its user, as the anonymous seed deployments do;
    // such an identity is self-asserted and only routes user-targeted events.
    let user = match params.get("user_id").filter(|u| !u.is_empty()) {
        Some(user) => {
            validate_name("user", user).map_err(|e| e.message)?;
            Some(Arc::new(Identity::unverified(user)))
        }
        None => None,
    };
    Ok(ConnectPlan {
        client_id,
        peer,
        kind: endpoint.kind,
        path: endpoint.path.clone(),
        channels,
        rooms,
        welcome: endpoint.welcome,
        max_message: endpoint.max_message,
        user,
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
        }
    }

    #[test]
    fn plans_from_templates_and_query() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let params =
            HashMap::from([("campaign_id".to_string(), "123".to_string()), ("channels".into(), "emails, ai".into())]);
        let plan = plan(&campaigns(), &params, peer).unwrap();
        assert_eq!(plan.channels, vec!["campaigns", "emails", "ai"]);
        assert_eq!(plan.rooms, vec!["campaign:123"]);
        let plan_without = super::plan(&campaigns(), &HashMap::new(), peer).unwrap();
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
