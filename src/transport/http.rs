//! Serving HTTP on an accepted socket: HTTP/1.1 (with WebSocket upgrades) and HTTP/2 for backends
//! that multiplex API calls, with prior knowledge (h2c) on a plaintext listener or chosen by ALPN
//! with TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::config::ServerConfig;

/// How long a client may take to send its request headers (HTTP/1.1), or its connection
/// preface (HTTP/2).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The client connection preface that opens every HTTP/2 connection (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Streams one HTTP/2 connection may have open at once; each also holds a place of
/// `server.max_requests_in_flight` while it is handled.
const H2_MAX_STREAMS: u32 = 128;
/// The largest header block an HTTP/2 client may send (decoded), like a generous HTTP/1.1 head.
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;
/// An HTTP/2 connection with no request for this long is asked to go away (GOAWAY; a client
/// opens a new one when it next needs it), as HTTP/1.1 keep-alive connections are closed.
const H2_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pings that find a vanished HTTP/2 peer.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

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
    /// Accept HTTP/2 with prior knowledge on plaintext connections (`server.http2`).
    http2: bool,
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
            http2: server.http2,
        }
    }
}

/// Serves one plaintext connection: HTTP/2 when it opens with the HTTP/2 preface (and
/// `server.http2` is on), HTTP/1.1 otherwise. The first bytes are peeked, not read, so the chosen
/// protocol sees them and an upgraded WebSocket keeps its plain `TcpStream`.
pub(crate) async fn serve_plain(stream: TcpStream, peer: SocketAddr, router: axum::Router, limits: HttpLimits) {
    if !limits.http2 {
        return serve(stream, peer, router, limits).await;
    }
    match tokio::time::timeout(HEADER_READ_TIMEOUT, sniff(&stream)).await {
        Ok(Ok(Some(Protocol::Http2))) => serve_h2(stream, peer, router, limits).await,
        Ok(Ok(Some(Protocol::Http1))) => serve(stream, peer, router, limits).await,
        Ok(Ok(None)) => {}
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection failed before its first request"),
        Err(_) => tracing::debug!(%peer, "no request within the header timeout"),
    }
}

/// Serves one connection after its TLS handshake, in the protocol ALPN chose: HTTP/2 for `h2`
/// (offered only with `server.http2`, `tls::acceptor`), HTTP/1.1 otherwise.
pub(crate) async fn serve_tls(
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: SocketAddr,
    router: axum::Router,
    limits: HttpLimits,
) {
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        serve_h2(stream, peer, router, limits).await;
    } else {
        serve(stream, peer, router, limits).await;
    }
}

/// The protocol a plaintext connection opens with.
#[derive(Debug, PartialEq)]
enum Protocol {
    Http1,
    Http2,
}

/// Tells HTTP/2 from HTTP/1.1 by the first bytes, without consuming them; `None` when the peer
/// closed before sending any. An HTTP/1.1 request line parts from the preface within its first
/// bytes (`POST`, `PUT`, `PATCH` at the second, against `PRI`), so only an HTTP/2 client, or one
/// that sends a byte at a time, is waited on for more.
async fn sniff(stream: &TcpStream) -> std::io::Result<Option<Protocol>> {
    let mut first = [0u8; H2_PREFACE.len()];
    let mut pause = Duration::from_millis(1);
    loop {
        let n = stream.peek(&mut first).await?;
        if n == 0 {
            return Ok(None);
        }
        if first[..n] != H2_PREFACE[..n] {
            return Ok(Some(Protocol::Http1));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some(Protocol::Http2));
        }
        // Part of the preface came alone. `peek` answers at once while any byte is waiting, so
        // readiness cannot say when more arrives: look again, less and less often, so that a
        // client stalling mid-preface costs a few dozen wake-ups before the caller's timeout.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Serves one HTTP/2 connection (h2c, or TLS with `h2` chosen by ALPN): every stream is a request
/// through the same bounds as HTTP/1.1.
async fn serve_h2<I>(stream: I, peer: SocketAddr, router: axum::Router, limits: HttpLimits)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let cut = ConnectionCut::default();
    let activity = Arc::new(Activity::new());
    let service = request_service(peer, router, limits, cut.clone(), Some(activity.clone()));
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut going_away = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "http/2 connection ended with an error");
                }
                return;
            }
            () = cut.0.cancelled() => {
                tracing::debug!(%peer, "http/2 connection cut");
                return;
            }
            () = activity.idle_for(H2_IDLE_TIMEOUT), if !going_away => {
                // Streams still open (a long response) finish; no new one is accepted.
                connection.as_mut().graceful_shutdown();
                going_away = true;
            }
        }
    }
}

/// Requests in progress on one HTTP/2 connection, and when the last one began or ended.
struct Activity {
    in_progress: AtomicUsize,
    last_change: std::sync::Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Activity { in_progress: AtomicUsize::new(0), last_change: std::sync::Mutex::new(Instant::now()) }
    }

    fn touch(&self) {
        if let Ok(mut last) = self.last_change.lock() {
            *last = Instant::now();
        }
    }

    /// Resolves once no request has been in progress for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.last_change.lock().map(|t| *t).unwrap_or_else(|_| Instant::now());
            let now = Instant::now();
            let wake = if self.in_progress.load(Ordering::Acquire) > 0 {
                // A request that outlasts `idle` (a long admin call) touches the clock when it
                // ends; looking again one `idle` later is soon enough, and costs no polling.
                now + idle
            } else if now >= last + idle {
                return;
            } else {
                last + idle
            };
            tokio::time::sleep_until(wake.into()).await;
        }
    }
}

/// Counts a request as in progress until dropped.
struct InProgress(Arc<Activity>);

impl InProgress {
    fn new(activity: Arc<Activity>) -> Self {
        activity.in_progress.fetch_add(1, Ordering::AcqRel);
        activity.touch();
        InProgress(activity)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_progress.fetch_sub(1, Ordering::AcqRel);
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
    let service = request_service(peer, router, limits, cut.clone(), None);
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

/// The service every HTTP request goes through, whatever the protocol: the peer's address and
/// the connection's cut in its extensions, a place of `server.max_requests_in_flight`, the body
/// read whole within `server.request_timeout`, then the router.
fn request_service(
    peer: SocketAddr,
    router: axum::Router,
    limits: HttpLimits,
    cut: ConnectionCut,
    activity: Option<Arc<Activity>>,
) -> impl hyper::service::Service<
    http::Request<Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(cut.clone());
        let (router, limits) = (router.clone(), limits.clone());
        let in_progress = activity.clone().map(InProgress::new);
        async move {
            let _in_progress = in_progress;
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
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A connected pair of real sockets: what the client wrote, as the server sniffs it.
    async fn sniffed(writes: &[&[u8]]) -> Option<Protocol> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let Some((first, rest)) = writes.split_first() else {
            drop(client);
            return sniff(&server).await.expect("sniff");
        };
        client.write_all(first).await.expect("write");
        // The server sees the first piece alone, and starts sniffing before the rest is sent.
        let mut seen = [0u8; 24];
        let n = server.peek(&mut seen).await.expect("peek");
        assert_eq!(n, first.len().min(seen.len()));
        let send_rest = async {
            for bytes in rest {
                tokio::task::yield_now().await;
                client.write_all(bytes).await.expect("write");
            }
        };
        let (protocol, ()) = tokio::join!(sniff(&server), send_rest);
        protocol.expect("sniff")
    }

    #[tokio::test]
    async fn the_first_bytes_tell_the_protocol() {
        assert_eq!(sniffed(&[b"GET /api/health HTTP/1.1\r\n"]).await, Some(Protocol::Http1));
        assert_eq!(sniffed(&[b"POST /api/publish HTTP/1.1\r\n"]).await, Some(Protocol::Http1));
        assert_eq!(sniffed(&[b"P", b"UT / HTTP/1.1\r\n"]).await, Some(Protocol::Http1), "P alone waits for more");
        assert_eq!(sniffed(&[H2_PREFACE]).await, Some(Protocol::Http2));
        assert_eq!(sniffed(&[&H2_PREFACE[..3], &H2_PREFACE[3..]]).await, Some(Protocol::Http2), "in pieces");
        assert_eq!(sniffed(&[]).await, None, "closed before a byte");
    }
}
