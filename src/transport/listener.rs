//! The listening socket and the accept loop. HTTP is served on the control runtime, so API
//! requests never wait behind a fan-out; only upgraded WebSocket sockets move to shards.

use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use tokio_rustls::TlsAcceptor;

use tokio_util::sync::CancellationToken;

use super::http::HttpLimits;

/// How long a client may take to complete its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the listening socket with a deep backlog (connection storms happen at reconnect time).
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Accepts until `shutdown`, serving HTTP on each socket within `limits`.
pub(crate) async fn accept_loop(
    limits: HttpLimits,
    shutdown: CancellationToken,
    router: axum::Router,
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let mut last_error_log = None::<std::time::Instant>;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => return Ok(()),
        };
        match accepted {
            Ok((stream, peer)) => {
                // Events are small and latency matters more than packet count.
                let _ = stream.set_nodelay(true);
                match &tls {
                    None => {
                        tokio::spawn(super::http::serve_plain(stream, peer, router.clone(), limits.clone()));
                    }
                    Some(acceptor) => {
                        let (acceptor, router, limits) = (acceptor.clone(), router.clone(), limits.clone());
                        tokio::spawn(async move {
                            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => super::http::serve_tls(stream, peer, router, limits).await,
                                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
            Err(e) => {
                // Out of file descriptors or a transient kernel error: say so once in a while,
                // back off briefly, and keep serving the connections we have.
                if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "accept failed; backing off");
                    last_error_log = Some(std::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
