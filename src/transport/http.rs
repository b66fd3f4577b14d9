//! Serving HTTP/1.1 on an accepted socket, on the shard that owns it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::config::ServerConfig;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The bounds every HTTP request of a node shares.
#[derive(Clone)]
pub(crate) struct HttpLimits {
    /// From the end of the headers to the end of the body.
    request_timeout: Duration,
    /// Largest body read (the API's own limit; bodies are small JSON documents).
    max_body: usize,
    /// Places for requests in flight; `None`: no cap.
    in_flight: Option<Arc<Semaphore>>,
    /// The configured cap, for the refusal's message.
    cap: usize,
}

impl HttpLimits {
    /// The bounds of `[server]`, reading bodies up to `max_body` bytes (the API's largest).
    pub(crate) fn new(server: &ServerConfig, max_body: usize) -> Self {
        let cap = server.max_requests_in_flight;
        HttpLimits {
            request_timeout: server.request_timeout,
            max_body,
            in_flight: (cap > 0).then(|| Arc::new(Semaphore::new(cap))),
            cap,
        }
    }
}

/// Serves one HTTP connection (plain or TLS). A WebSocket upgrade hands the socket to a shard.
///
/// Each request is read whole (headers, then body) before the router sees it, within
/// `server.request_timeout`: a body that stalls gets 408 and the connection is closed, whether or
/// not the route would have read it. A request holds one of `server.max_requests_in_flight`
/// places while it is read and handled; with none free the answer is 503 at once.
pub(crate) async fn serve<I>(io: I, peer: SocketAddr, router: axum::Router, limits: HttpLimits)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let cut = ConnectionCut::default();
    let cut_handle = cut.clone();
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(cut_handle.clone());
        let (router, limits) = (router.clone(), limits.clone());
        async move {
            let _place = match &limits.in_flight {
                None => None,
                Some(places) => match places.clone().try_acquire_owned() {
                    Ok(place) => Some(place),
                    Err(_) => return Ok(busy(limits.cap)),
                },
            };
            let (parts, body) = request.into_parts();
            let read = tokio::time::timeout(limits.request_timeout, Limited::new(body, limits.max_body).collect());
            let body = match read.await {
                Ok(Ok(collected)) => axum::body::Body::new(http_body_util::Full::new(collected.to_bytes())),
                Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                    return Ok(closing(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "PAYLOAD_TOO_LARGE",
                        "the request body is too large",
                    ));
                }
                Ok(Err(_)) => {
                    return Ok(closing(
                        StatusCode::BAD_REQUEST,
                        "INVALID_REQUEST",
                        "the request body could not be read",
                    ));
                }
                Err(_) => {
                    return Ok(closing(
                        StatusCode::REQUEST_TIMEOUT,
                        "REQUEST_TIMEOUT",
                        "the request body did not arrive in time (server.request_timeout)",
                    ));
                }
            };
            // Handlers bound their own waits (the write queue, Redis, the database); a long admin
            // operation such as retention must not be cut off halfway.
            router.oneshot(http::Request::from_parts(parts, body)).await
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
        }
        // Dropping the connection closes the socket, whatever hyper still holds for it.
        () = cut.0.cancelled() => tracing::debug!(%peer, "http connection cut"),
    }
}

/// Cuts an HTTP connection at once (a response nobody reads: a fallback session closed as a
/// slow consumer), found in each request's extensions.
#[derive(Clone, Default)]
pub struct ConnectionCut(tokio_util::sync::CancellationToken);

impl ConnectionCut {
    /// Closes the connection.
    pub fn cut(&self) {
        self.0.cancel();
    }
}

/// Plain-text-free JSON error response for HTTP refusals.
pub fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "success": false, "error": message, "code": code });
    (status, axum::Json(body)).into_response()
}

/// A refusal after which the connection is closed (its request was not read to the end).
fn closing(status: StatusCode, code: &str, message: &str) -> Response {
    let mut response = refuse(status, code, message);
    response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    response
}

fn busy(cap: usize) -> Response {
    tracing::debug!(cap, "requests in flight at the cap; answering 503");
    let mut response = closing(
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        &format!("{cap} requests are in flight (server.max_requests_in_flight); retry shortly"),
    );
    response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    response
}
