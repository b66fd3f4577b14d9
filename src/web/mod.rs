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
/// scripts and style sheets, computed from that very HTML at start-up so the policy can never
/// drift from the page.
struct Page {
    html: String,
    script_hashes: String,
    style_hashes: String,
}

impl Page {
    /// Fills the page's placeholders (the WebSocket mount the pages connect to) and hashes its
    /// scripts and style sheets.
    fn new(template: &str, node: &Node) -> Page {
        let mount = node.config.server.mounts.first().map(String::as_str).unwrap_or("/ws");
        let html = template.replace("__HERALD_MOUNT__", mount);
        let script_hashes = hash_sources(inline_elements(&html, "script"));
        let style_hashes = hash_sources(inline_elements(&html, "style"));
        Page { html, script_hashes, style_hashes }
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

    /// Only the page's own scripts and style sheets apply (no `style` attribute, no injected
    /// `<style>`), and it talks only to its own origin: `'self'` and the WebSocket URLs of the
    /// host it was loaded from.
    fn policy(&self, headers: &http::HeaderMap) -> String {
        let own_sockets = headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|host| is_plain_host(host))
            .map(|host| format!(" ws://{host} wss://{host}"))
            .unwrap_or_default();
        format!(
            "default-src 'self'; script-src {}; style-src {}; connect-src 'self'{own_sockets}; \
             img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            self.script_hashes, self.style_hashes
        )
    }
}

/// The text of every inline `<tag>` element (`script`, `style`), exactly as the browser hashes
/// it.
fn inline_elements<'a>(html: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}"), format!("</{tag}>"));
    html.split(open.as_str())
        .skip(1)
        .filter_map(|rest| {
            let body = &rest[rest.find('>')? + 1..];
            Some(&body[..body.find(close.as_str())?])
        })
        .collect()
}

/// A CSP source list of the SHA-256 hashes of `sources`; `'none'` for none.
fn hash_sources(sources: Vec<&str>) -> String {
    let hashes: Vec<String> = sources
        .into_iter()
        .map(|source| format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(Sha256::digest(source))))
        .collect();
    if hashes.is_empty() { "'none'".to_string() } else { hashes.join(" ") }
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
    fn every_inline_script_and_style_sheet_is_hashed_and_nothing_inline_is_allowed() {
        let html = "<p>x</p><script>let a = 1;</script><script type=\"module\">b()</script><style>p{}</style>";
        assert_eq!(inline_elements(html, "script"), vec!["let a = 1;", "b()"]);
        assert_eq!(inline_elements(html, "style"), vec!["p{}"]);
        assert_eq!(hash_sources(Vec::new()), "'none'");
        for page in [DASHBOARD, CONSOLE] {
            assert_eq!(inline_elements(page, "script").len(), 1, "one script per page");
            assert_eq!(inline_elements(page, "style").len(), 1, "one style sheet per page");
            // A `style` attribute would need 'unsafe-inline' (or 'unsafe-hashes').
            assert!(!page.contains(" style=\""), "a style attribute in a page");
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
