//! The HTTP surface: publishing for backends, admin, stats, health and metrics.
//!
//! Routes live at `/api/...` and, for the compatibility profiles' clients, are mirrored under every
//! WebSocket mount (`/ws/stats`, `/api/v1/ws/rooms/{room}/broadcast`, …). Every response is JSON;
//! every refusal is a 4xx with `{"success":false,"error":…,"code":…}`.

pub mod admin;
pub mod batch;
pub mod health;
pub mod history;
pub mod ingest;
pub mod metrics;
pub mod openapi;
pub mod presence;
pub mod publish;
pub mod schema;
pub mod stats;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Request};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use http::request::Parts;
use serde_json::json;
use subtle::ConstantTimeEq;

use openapi::{Routes, mounted};
use utoipa_axum::routes;

use crate::config::EndpointKind;
use crate::gateway::fallback;
use crate::gateway::upgrade::{self, Endpoint};
use crate::node::Node;
use crate::transport::handshake;

/// Default largest request body.
pub(crate) const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The largest body any route accepts (the batch route may allow more than the others), which
/// is what the HTTP layer reads at most.
pub(crate) fn largest_body(config: &crate::config::Config) -> usize {
    let api = &config.api;
    api.max_body_size.unwrap_or(DEFAULT_BODY_LIMIT).max(api.max_batch_bytes.unwrap_or(batch::DEFAULT_MAX_BYTES))
}

/// A refused or failed API request.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code.
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        upgrade::refuse(self.status, self.code, &self.message)
    }
}

/// Proof that the request carries the admin key (or, with no key configured and
/// `api.local_admin_without_key` on, comes straight from loopback: see `keyless_local`) and
/// comes from an address in `api.allowed_ips`.
pub struct Admin {
    /// The caller's address, for the audit log.
    pub peer: String,
}

impl FromRequestParts<Arc<Node>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Self, ApiError> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let client = peer.map(|ip| crate::gateway::upgrade::client_ip(&node.config, ip, &parts.headers));
        // The key and addresses of the last reload.
        let live = node.live();
        let allowed = &live.api.allowed_ips;
        if !allowed.is_empty() && !client.is_some_and(|ip| allowed.contains(&ip)) {
            let who = client.map(|ip| ip.to_string()).unwrap_or_default();
            crate::audit::admin_action(&who, "refused", "address not in api.allowed_ips");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "this address may not use the admin API",
            ));
        }
        let admin = Admin { peer: client.map(|ip| ip.to_string()).unwrap_or_default() };
        let presented = presented_key(&parts.headers);
        match (&live.api.key, presented) {
            (Some(key), Some(given)) if bool::from(key.as_bytes().ct_eq(given.as_bytes())) => Ok(admin),
            (Some(_), Some(_)) => {
                crate::audit::authentication_failed(&admin.peer, parts.uri.path(), "invalid API key");
                Err(ApiError::new(StatusCode::UNAUTHORIZED, "AUTHENTICATION_FAILED", "invalid API key"))
            }
            (Some(_), None) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "AUTHENTICATION_FAILED",
                "this route needs the API key: Authorization: Bearer <key>",
            )),
            (None, _) => {
                if keyless_local(node, parts) {
                    Ok(admin)
                } else {
                    crate::audit::admin_action(&admin.peer, "refused", "no api.key configured");
                    Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "PERMISSION_DENIED",
                        "no api.key is configured: set api.key (or, for development on this machine only, \
                         api.local_admin_without_key = true)",
                    ))
                }
            }
        }
    }
}

/// The key a request presents: `Authorization: Bearer <key>` or `X-API-Key`.
pub(crate) fn presented_key(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
}

/// Whether a request without credentials may act as the backend. Only when the operator asked
/// for it (`api.local_admin_without_key`, no `api.key`), and only for a caller that is itself on
/// this machine: the socket's peer is loopback, is not one of `server.trusted_proxies`, and the
/// request carries no forwarding header. A proxied request is never local, whatever the proxy's
/// own address, because the proxy speaks for someone else.
pub(crate) fn keyless_local(node: &Node, parts: &Parts) -> bool {
    let live = node.live();
    let api = &live.api;
    if api.key.is_some() || !api.local_admin_without_key {
        return false;
    }
    let Some(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()) else {
        return false;
    };
    let proxy = node.config.server.trusted_proxies.contains(&peer);
    let forwarded = ["x-forwarded-for", "forwarded", "x-real-ip", "x-forwarded-host"]
        .iter()
        .any(|h| parts.headers.contains_key(*h));
    peer.is_loopback() && !proxy && !forwarded
}

/// Parses a JSON request body, refusing with a clear 400.
pub fn parse_body<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("INVALID_JSON", "the request body is empty; send a JSON object"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("INVALID_JSON", format!("invalid request body: {e}")))
}

/// Refuses a room, channel or user name that no client could use (empty, over 200 bytes, control
/// characters) with `400 INVALID_NAME`, as the WebSocket protocol does, instead of answering for
/// a room that cannot exist.
pub fn valid_name(what: &str, name: &str) -> Result<(), ApiError> {
    crate::protocol::validate_name(what, name).map_err(|e| ApiError::bad_request("INVALID_NAME", e.message))
}

/// The whole HTTP surface of a node, and its OpenAPI document (served at `/api/openapi.json`).
pub fn router(node: Arc<Node>, faces: &[Face]) -> Router {
    router_and_document(node, faces).0
}

/// A part that serves routes of its own beside the API (the dashboard pages, the Pusher face):
/// it adds them to the routes, described like every other. The server hands them in, so this
/// module never names the parts above it.
pub type Face = fn(Routes, &Node) -> Routes;

/// The node's router and the OpenAPI document generated from the same registrations: every
/// route goes through [`openapi::Routes::serve`], so none is served without being described.
pub fn router_and_document(node: Arc<Node>, faces: &[Face]) -> (Router, utoipa::openapi::OpenApi) {
    let mut routes = Routes::new()
        .serve(routes!(health::health))
        .serve(routes!(health::livez))
        .serve(routes!(health::readyz))
        .serve(routes!(metrics::metrics))
        .serve(routes!(publish::publish))
        .serve(routes!(publish::broadcast))
        .serve(batch_route(&node))
        .serve(routes!(stats::stats))
        .serve(openapi::at("/api/health", routes!(health::health)))
        .serve(routes!(ingest::post, ingest::recent))
        .serve(routes!(history::messages, history::post_message))
        .serve(routes!(history::run_retention))
        .serve(routes!(history::search))
        .serve(routes!(history::stream_history));
    let admin_routes = |prefix: &str, routes: Routes| {
        routes
            .serve(mounted(prefix, routes!(history::rooms)))
            .serve(mounted(prefix, routes!(admin::channels)))
            .serve(mounted(prefix, routes!(publish::room_broadcast)))
            .serve(mounted(prefix, routes!(publish::notify_user)))
            .serve(mounted(prefix, routes!(presence::user)))
            .serve(mounted(prefix, routes!(presence::list)))
            .serve(mounted(prefix, routes!(presence::room)))
            .serve(mounted(prefix, routes!(presence::broadcast)))
            .serve(mounted(prefix, routes!(admin::connections)))
            .serve(mounted(prefix, routes!(admin::disconnect)))
            .serve(mounted(prefix, routes!(admin::disconnect_user)))
            .serve(mounted(prefix, routes!(stats::detailed)))
            .serve(mounted(prefix, routes!(admin::shutdown)))
    };
    routes = admin_routes("/api", routes);
    for mount in &node.config.server.mounts {
        routes = admin_routes(mount, routes)
            .serve(openapi::at(&format!("{mount}/health"), routes!(health::health)))
            // The manufacturing-chat profile's troubleshooting call; the same figures as stats.
            .serve(openapi::at(&format!("{mount}/connection-stats"), routes!(stats::stats)))
            .serve(openapi::at(&format!("{mount}/rooms/{{room}}/messages"), routes!(history::messages)))
            .serve(mounted(mount, routes!(history::mark_read)))
            .serve(openapi::at(&format!("{mount}/search"), routes!(history::search)))
            .serve(openapi::at(&format!("{mount}/history/{{kind}}/{{name}}"), routes!(history::stream_history)));
        let stats_stream = Endpoint {
            path: format!("{mount}/stats"),
            kind: EndpointKind::Stats,
            channels: Vec::new(),
            rooms: Vec::new(),
            query_channels: false,
            welcome: crate::config::WelcomeStyle::None,
            max_message: node.config.websocket.max_message_size,
            auth: crate::config::AuthMode::Off,
        };
        routes = route_endpoint(routes, stats_stream);
    }
    for endpoint in upgrade::endpoints(&node.config) {
        routes = route_endpoint(routes, endpoint);
    }
    for face in faces {
        routes = face(routes, &node);
    }
    let (router, mut document) = routes.finish();
    openapi::describe_self(&mut document);
    let served = document.to_json().map(bytes::Bytes::from).unwrap_or_default();
    let router = router.route(
        "/api/openapi.json",
        get(move || async move { ([(http::header::CONTENT_TYPE, "application/json")], served.clone()) }),
    );
    let body_limit = node.config.api.max_body_size.unwrap_or(DEFAULT_BODY_LIMIT);
    let cors = cors(&node.config.server.allowed_origins);
    let router = router.fallback(not_found).layer(DefaultBodyLimit::max(body_limit)).layer(cors).with_state(node);
    (router, document)
}

/// `POST /api/publish/batch` with its state; the route checks `api.max_batch_bytes` itself, with
/// a JSON 413, instead of the router-wide body limit.
fn batch_route(node: &Node) -> utoipa_axum::router::UtoipaMethodRouter<Arc<Node>> {
    let (schemas, paths, method_router) = routes!(batch::publish_batch);
    let method_router = method_router
        .layer::<_, std::convert::Infallible>(DefaultBodyLimit::disable())
        .layer::<_, std::convert::Infallible>(axum::Extension(batch::BatchState::new(node)));
    (schemas, paths, method_router)
}

/// CORS for browser callers of the API, from `server.allowed_origins` (empty or `*`: any origin).
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let methods = [http::Method::GET, http::Method::POST, http::Method::DELETE, http::Method::OPTIONS];
    let headers = [
        http::header::AUTHORIZATION,
        http::header::CONTENT_TYPE,
        http::HeaderName::from_static("x-api-key"),
        http::HeaderName::from_static(fallback::SESSION_KEY_HEADER),
        http::HeaderName::from_static("last-event-id"),
    ];
    let layer = CorsLayer::new().allow_methods(methods).allow_headers(headers);
    if origins.is_empty() || origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        layer.allow_origin(AllowOrigin::list(origins.iter().filter_map(|o| http::HeaderValue::from_str(o).ok())))
    }
}

fn route_endpoint(routes: Routes, endpoint: Endpoint) -> Routes {
    let path = endpoint.path.clone();
    let about = match endpoint.kind {
        EndpointKind::Stats => "The statistics stream (JSON without an upgrade)".to_string(),
        kind => format!("WebSocket endpoint ({kind:?}); SSE and NDJSON fallbacks without an upgrade"),
    };
    let offered = fallback::offered(&endpoint);
    let endpoint = Arc::new(endpoint);
    let get_endpoint = endpoint.clone();
    let handler = get(move |State(node): State<Arc<Node>>, request: Request| {
        endpoint_get(node, get_endpoint.clone(), offered, request)
    });
    let routes = routes.serve(openapi::websocket(&path, &about, handler));
    if !offered {
        return routes;
    }
    let ticket_endpoint = endpoint.clone();
    let tickets = post(move |State(node): State<Arc<Node>>, request: Request| {
        let fallback = node.fallback.clone();
        fallback::ticket(node, fallback, ticket_endpoint.clone(), request)
    });
    let sessions = post(move |State(node): State<Arc<Node>>, Path(id): Path<String>, request: Request| {
        let fallback = node.fallback.clone();
        fallback::command(node, fallback, endpoint.clone(), id, request)
    });
    routes
        .serve(openapi::fallback_tickets(&format!("{path}/tickets"), tickets))
        .serve(openapi::fallback_commands(&format!("{path}/sessions/{{id}}"), sessions))
}

/// A GET to an endpoint: a WebSocket upgrade, or an SSE / NDJSON fallback when asked for.
async fn endpoint_get(node: Arc<Node>, endpoint: Arc<Endpoint>, offered: bool, request: Request) -> Response {
    let params = upgrade::query_params(&request);
    match fallback::wanted(request.headers(), &params).filter(|_| offered) {
        Some(transport) if !handshake::is_upgrade(request.headers()) => {
            let fallback = node.fallback.clone();
            fallback::open(node, fallback, endpoint, request, transport).await
        }
        _ => upgrade::handle(node, endpoint, request).await,
    }
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}

/// `201 Created` with `{"success":true, …fields}`.
pub fn created(fields: serde_json::Value) -> Response {
    let mut response = ok(fields);
    *response.status_mut() = StatusCode::CREATED;
    response
}

/// `{"success":true, …fields}`.
pub fn ok(fields: serde_json::Value) -> Response {
    let mut body = json!({ "success": true });
    if let (Some(target), serde_json::Value::Object(extra)) = (body.as_object_mut(), fields) {
        target.extend(extra);
    }
    axum::Json(body).into_response()
}
