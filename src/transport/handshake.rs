//! The WebSocket opening handshake (RFC 6455 section 4.2), checked on the HTTP request before
//! hyper hands over the socket.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use sha1::{Digest, Sha1};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why a request is not a valid WebSocket upgrade.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Not a WebSocket upgrade at all (a plain GET).
    #[error(
        "this endpoint speaks WebSocket; send an Upgrade: websocket request, or use a fallback: \
         Server-Sent Events (Accept: text/event-stream or ?transport=sse) or HTTP streaming \
         (Accept: application/x-ndjson or ?transport=stream)"
    )]
    NotUpgrade,
    /// Upgrade requested with a method other than GET.
    #[error("a WebSocket upgrade must use GET")]
    Method,
    /// A version other than 13.
    #[error("unsupported Sec-WebSocket-Version; only 13 is supported")]
    Version,
    /// Missing or malformed Sec-WebSocket-Key.
    #[error("missing or malformed Sec-WebSocket-Key")]
    Key,
}

impl HandshakeError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            HandshakeError::NotUpgrade => StatusCode::UPGRADE_REQUIRED,
            HandshakeError::Method => StatusCode::METHOD_NOT_ALLOWED,
            HandshakeError::Version => StatusCode::UPGRADE_REQUIRED,
            HandshakeError::Key => StatusCode::BAD_REQUEST,
        }
    }
}

/// What a valid upgrade request asks for.
#[derive(Debug, Clone)]
pub struct Upgrade {
    /// The `Sec-WebSocket-Key`.
    pub key: String,
    /// Offered subprotocols, in the client's order.
    pub protocols: Vec<String>,
    /// The raw `Sec-WebSocket-Extensions` offers.
    pub extensions: Vec<String>,
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether the request asks to upgrade to WebSocket at all.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    header_has_token(headers, header::UPGRADE, "websocket")
}

/// Checks an upgrade request.
pub fn check(method: &Method, headers: &HeaderMap) -> Result<Upgrade, HandshakeError> {
    if !is_upgrade(headers) || !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err(HandshakeError::NotUpgrade);
    }
    if method != Method::GET {
        return Err(HandshakeError::Method);
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()).map(str::trim) != Some("13") {
        return Err(HandshakeError::Version);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| BASE64.decode(k).is_ok_and(|raw| raw.len() == 16))
        .ok_or(HandshakeError::Key)?;
    let list = |name| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    Ok(Upgrade {
        key: key.to_string(),
        protocols: list(header::SEC_WEBSOCKET_PROTOCOL),
        extensions: list(header::SEC_WEBSOCKET_EXTENSIONS),
    })
}

/// `Sec-WebSocket-Accept` for a key.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// The `101 Switching Protocols` response, with the chosen subprotocol and extension if any.
pub fn switching_protocols<B: Default>(key: &str, protocol: Option<&str>, extension: Option<&str>) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept_key(key)) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    if let Some(value) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    if let Some(value) = extension.and_then(|e| HeaderValue::from_str(e).ok()) {
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        h.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="));
        h
    }

    #[test]
    fn rfc_example_accept_key() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn checks_the_request() {
        let h = upgrade_headers();
        assert!(check(&Method::GET, &h).is_ok());
        assert_eq!(check(&Method::POST, &h).unwrap_err(), HandshakeError::Method);
        let mut v = h.clone();
        v.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(check(&Method::GET, &v).unwrap_err(), HandshakeError::Version);
        let mut k = h.clone();
        k.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("short"));
        assert_eq!(check(&Method::GET, &k).unwrap_err(), HandshakeError::Key);
        assert_eq!(check(&Method::GET, &HeaderMap::new()).unwrap_err(), HandshakeError::NotUpgrade);
    }
}
