//! The pages served by the binary itself: a live dashboard and a test console. Both are single
//! HTML files embedded at compile time (no CDN, nothing fetched from elsewhere); they talk to the
//! node through its own stats stream, REST API and WebSocket endpoints. Everything a client or a
//! publisher controls (room names, message text) is rendered with `textContent`, never as HTML.

use std::sync::Arc;

use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::api::openapi::{self, Routes};
use crate::node::Node;

const DASHBOARD: &str = include_str!("dashboard.html");
const CONSOLE: &str = include_str!("console.html");

/// A page ready to serve: its HTML with the placeholders filled, and the hashes of its inline
/// scripts, computed from that very HTML at start-up so the policy can never drift from the page.
struct Page {
    html: String,
    script_hashes: String,
}

impl Page {
    /// Fills the page's placeholders (the WebSocket mount the pages connect to) and hashes its
    /// scripts.
    fn new(template: &str, node: &Node) -> Page {
        let mount = node.config.server.mounts.first().map(String::as_str).unwrap_or("/ws");
        let html = template.replace("__HERALD_MOUNT__", mount);
        let script_hashes = inline_scripts(&html)
            .map(|script| {
                format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script)))
            })
            .collect::<Vec<_>>()
            .join(" ");
        let script_hashes = if script_hashes.is_empty() { "'none'".to_string() } else { script_hashes };
        Page { html, script_hashes }
    }

    fn serve(&self, headers: &http::HeaderMap) -> Response {
        let mut response = Html(self.html.clone()).into_response();
        // The pages hold no secrets but take an API key typed by a person: keep them out of frames.
        response.headers_mut().insert(http::header::X_FRAME_OPTIONS, http::HeaderValue::from_static("DENY"));
        if let Ok(policy) = http::HeaderValue::from_str(&self.policy(headers)) {
            response.headers_mut().insert(http::header::CONTENT_SECURITY_POLICY, policy);
        }
        response
    }

    /// Only the page's own scripts run, and it talks only to its own origin: `'self'` and the
    /// WebSocket URLs of the host it was loaded from.
    fn policy(&self, headers: &http::HeaderMap) -> String {
        let own_sockets = headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|host| is_plain_host(host))
            .map(|host| format!(" ws://{host} wss://{host}"))
            .unwrap_or_default();
        format!(
            "default-src 'self'; script-src {}; style-src 'unsafe-inline'; connect-src 'self'{own_sockets}; \
             img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            self.script_hashes
        )
    }
}

/// The text of every inline `<script>` element, exactly as the browser hashes it.
fn inline_scripts(html: &str) -> impl Iterator<Item = &str> {
    html.split("<script").skip(1).filter_map(|rest| {
        let body = &rest[rest.find('>')? + 1..];
        Some(&body[..body.find("</script>")?])
    })
}

/// A `Host` header that can go into a policy as it is: a name or address and a port, nothing
/// that could end a source expression or a directive.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// Adds the dashboard at `server.dashboard_path` and the console beside it, when enabled.
pub fn routes(routes: Routes, node: &Node) -> Routes {
    if !node.config.server.dashboard {
        return routes;
    }
    let base = node.config.server.dashboard_path.clone();
    let dashboard = Arc::new(Page::new(DASHBOARD, node));
    let console = Arc::new(Page::new(CONSOLE, node));
    let dashboard = get(move |headers: http::HeaderMap| async move { dashboard.serve(&headers) });
    let console = get(move |headers: http::HeaderMap| async move { console.serve(&headers) });
    routes.serve(openapi::page(&base, "The dashboard", dashboard)).serve(openapi::page(
        &format!("{base}console"),
        "The operator console",
        console,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_inline_script_is_hashed_and_nothing_inline_is_allowed() {
        let html = "<p>x</p><script>let a = 1;</script><script type=\"module\">b()</script>";
        assert_eq!(inline_scripts(html).collect::<Vec<_>>(), vec!["let a = 1;", "b()"]);
        for page in [DASHBOARD, CONSOLE] {
            assert_eq!(inline_scripts(page).count(), 1, "one script per page");
        }
    }

    #[test]
    fn only_plain_hosts_reach_the_policy() {
        assert!(is_plain_host("127.0.0.1:8080") && is_plain_host("[::1]:80") && is_plain_host("herald.example"));
        for hostile in ["", "a; script-src *", "a b", "evil'", "x\u{7f}"] {
            assert!(!is_plain_host(hostile), "{hostile:?}");
        }
    }
}
