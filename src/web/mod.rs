//! The pages served by the binary itself: a live dashboard and a test console. Both are single
//! HTML files embedded at compile time (no CDN, nothing fetched from elsewhere); they talk to the
//! node through its own stats stream, REST API and WebSocket endpoints. Everything a client or a
//! publisher controls (room names, message text) is rendered with `textContent`, never as HTML.

use std::sync::Arc;

use axum::Router;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::node::Node;

const DASHBOARD: &str = include_str!("dashboard.html");
const CONSOLE: &str = include_str!("console.html");

/// Fills the page's placeholders: the WebSocket mount the pages connect to.
fn page(template: &str, node: &Node) -> Response {
    let mount = node.config.server.mounts.first().map(String::as_str).unwrap_or("/ws");
    let mut response = Html(template.replace("__HERALD_MOUNT__", mount)).into_response();
    // The pages hold no secrets but take an API key typed by a person: keep them out of frames.
    response.headers_mut().insert(http::header::X_FRAME_OPTIONS, http::HeaderValue::from_static("DENY"));
    response.headers_mut().insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self' ws: wss:; img-src 'self' data:",
        ),
    );
    response
}

/// Adds the dashboard at `server.dashboard_path` and the console beside it, when enabled.
pub fn routes(router: Router<Arc<Node>>, node: &Node) -> Router<Arc<Node>> {
    if !node.config.server.dashboard {
        return router;
    }
    let base = node.config.server.dashboard_path.clone();
    router.route(&base, get(|state: axum::extract::State<Arc<Node>>| async move { page(DASHBOARD, &state.0) })).route(
        &format!("{base}console"),
        get(|state: axum::extract::State<Arc<Node>>| async move { page(CONSOLE, &state.0) }),
    )
}
