//! Starting and stopping a node: bind, start shards and background tasks, accept, and shut down
//! gracefully on SIGINT, SIGTERM or the admin API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, AuthSetupError};
use crate::broker::redis::RedisBroker;
use crate::broker::{Broker, BrokerError};
use crate::config::{Config, ConfigError, RedisMode};
use crate::hub::Hub;
use crate::hub::rules::ChannelRules;
use crate::limits::Limits;
use crate::node::Node;
use crate::stats::Stats;
use crate::store::Store;
use crate::store::writer::Writer;
use crate::transport::listener;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::transport::tls::TlsError),
    /// Keys or access rules could not be loaded.
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    /// The message store could not be opened.
    #[error("cannot open the message store ({0}); check database.url")]
    Store(#[from] crate::store::StoreError),
    /// The broker could not be set up.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source} (choose another with --data-dir, or set database.url)")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A shard thread could not be started.
    #[error("cannot start shard threads: {0}")]
    Threads(std::io::Error),
}

/// A started node: its address and the means to stop it.
pub struct Running {
    /// The bound address (with the real port when 0 was asked for).
    pub local_addr: SocketAddr,
    /// The node.
    pub node: Arc<Node>,
    /// `http` or `https`.
    pub scheme: &'static str,
    accept: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

fn node_id(config: &Config) -> Arc<str> {
    match &config.server.node_id {
        Some(id) => Arc::from(id.as_str()),
        None => Arc::from(format!("n{:06x}", rand::random::<u32>() & 0xFF_FFFF)),
    }
}

/// Binds, starts the shards and the accept loop. Must run inside a multi-threaded Tokio runtime.
pub async fn start(config: Config) -> Result<Running, StartError> {
    config.validate()?;
    let addr = config.listen_addr()?;
    let std_listener = listener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    let local_addr = std_listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;

    let shards = match config.server.shards {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    if let Some(dir) = config.database.data_dir() {
        std::fs::create_dir_all(&dir).map_err(|source| StartError::DataDir { path: dir.clone(), source })?;
    }
    tracing::info!(database = %crate::config::show::mask_url(&config.database.effective_url()), "message store");
    let store = Arc::new(Store::open(&config.database).await?);
    let (writer, write_queue) = Writer::new(config.database.queue_capacity);
    let (hub, inboxes) = Hub::new(shards);
    let id = node_id(&config);
    let (broker, pushes) = match (&config.redis.url, config.redis.mode) {
        (None, _) => (Broker::Local(Default::default()), None),
        (Some(_), RedisMode::Standalone) => {
            let (redis, pushes) = RedisBroker::connect(&config.redis, id.clone())?;
            (Broker::Redis(Arc::new(redis)), Some(pushes))
        }
        (Some(_), RedisMode::Cluster) => {
            let (redis, pushes) = RedisBroker::connect_cluster(&config.redis, id.clone()).await?;
            (Broker::Redis(Arc::new(redis)), Some(pushes))
        }
    };
    let config_history = config.history.clone();
    // Parts with state shared by the cluster choose where it lives once, here.
    let redis_handle = broker.redis_handle();
    let presence = crate::presence::Presence::new(
        &config.presence,
        config.api.bare_room_list,
        config.redis.node_timeout,
        redis_handle.clone(),
    );
    let pusher = crate::pusher::Pusher::new(&config.pusher, &id, redis_handle.clone());
    let upstream = Arc::new(crate::upstream::Upstream::new(&config.upstream, id.clone(), redis_handle.clone()));
    let endpoint_paths: Vec<String> = crate::gateway::upgrade::endpoints(&config)
        .into_iter()
        .map(|e| e.path)
        .chain((!config.pusher.apps.is_empty()).then(|| crate::stats::PUSHER_ENDPOINT.to_string()))
        .collect();
    let node = Arc::new(Node {
        id,
        rules: ChannelRules::new(&config.channels),
        auth: Auth::new(&config)?,
        limits: Arc::new(Limits::new(&config.limits, redis_handle.clone())),
        store: store.clone(),
        writer,
        live: arc_swap::ArcSwap::from_pointee(config.clone()),
        config: Arc::new(config),
        hub,
        broker,
        stats: Stats::new(shards).with_endpoints(endpoint_paths),
        shutdown: CancellationToken::new(),
        next_connection: AtomicU64::new(1),
        presence,
        cells: crate::cells::Cells::new(redis_handle),
        upstream,
        history: crate::streams::History::new(&config_history),
        faces: crate::node::Faces::new(vec![Box::new(pusher)]),
        fallback: Default::default(),
    });
    crate::api::metrics::install();
    let router = crate::api::router(node.clone(), &[crate::web::routes, crate::pusher::api::routes]);
    let tls = crate::transport::tls::acceptor(&node.config.tls, node.config.server.http2)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    for (number, inbox) in inboxes.into_iter().enumerate() {
        crate::hub::shard::spawn_thread::<crate::session::Session>(number, node.clone(), inbox)
            .map_err(StartError::Threads)?;
    }
    tokio::spawn(sample_stats(node.clone()));
    let writer = tokio::spawn(crate::store::writer::run(node.clone(), store, write_queue));
    tokio::spawn(crate::store::retention::run(node.store.clone(), node.writer.health(), node.shutdown.clone()));
    tokio::spawn({
        let node = node.clone();
        async move { crate::presence::run(&node.presence, &*node, &node.shutdown).await }
    });
    tokio::spawn(crate::upstream::run(node.upstream.clone(), node.shutdown.clone()));
    tokio::spawn(crate::pusher::run(node.clone()));
    tokio::spawn({
        let node = node.clone();
        async move { node.history.run(&node.broker, &node.shutdown).await }
    });
    if let (Some(pushes), Broker::Redis(redis)) = (pushes, &node.broker) {
        let interest = node.hub.watch_interest();
        tokio::spawn(crate::broker::redis::run(redis.clone(), node.clone(), pushes, interest, node.shutdown.clone()));
    }
    let limits = crate::transport::http::HttpLimits::new(&node.config.server, crate::api::largest_body(&node.config));
    let accept = tokio::spawn({
        let shutdown = node.shutdown.clone();
        async move {
            if let Err(e) = listener::accept_loop(limits, shutdown, router, std_listener, tls).await {
                tracing::error!(error = %e, "accept loop failed");
            }
        }
    });
    if node.config.api.key.is_none() {
        if node.config.api.local_admin_without_key {
            tracing::warn!(
                "DEVELOPMENT SETTING: api.local_admin_without_key is on and no api.key is set: any program on \
                 this machine may publish and use admin routes without credentials (proxied requests never)"
            );
        } else {
            tracing::info!("no api.key is set: publish and admin routes are closed");
        }
    }
    tracing::info!(node = %node.id, %local_addr, shards, broker = node.broker.status().kind, scheme, "herald started");
    Ok(Running { local_addr, node, accept, scheme, writer })
}

async fn sample_stats(node: Arc<Node>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                node.stats.sample();
                node.limits.housekeeping();
                node.cells.evict_unused(|room| node.hub.has_room(room));
            }
            _ = node.shutdown.cancelled() => return,
        }
    }
}

impl Running {
    /// Waits for SIGINT, SIGTERM or an API shutdown request, then shuts down gracefully.
    pub async fn run_until_signalled(self) {
        let node = self.node.clone();
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("signal received; shutting down"),
            _ = node.shutdown.cancelled() => {}
        }
        self.shutdown().await;
    }

    /// Stops accepting, writes and acknowledges every queued message, closes every connection
    /// with 1001, and waits for them to go, all within `server.shutdown_timeout`.
    ///
    /// The writer is drained *before* connections close: a message stored during shutdown is
    /// acknowledged to its sender (who then does not retry it) whenever the deadline allows.
    /// Messages sent while the writer drains are refused with `UNAVAILABLE`, never stored
    /// unacknowledged.
    pub async fn shutdown(self) {
        let node = self.node;
        let mut writer = self.writer;
        node.shutdown.cancel();
        let _ = self.accept.await;
        let deadline = Instant::now() + node.config.server.shutdown_timeout;
        node.writer.close();
        let drained =
            tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), &mut writer).await.is_ok();
        // Each shard lets its pending acknowledgements answer before it queues the close frames
        // (`Shard::spawn_ack`).
        node.hub.shutdown().await;
        loop {
            let open: u64 = node
                .stats
                .shards
                .iter()
                .map(|s| s.connections.load(Ordering::Relaxed) + s.observers.load(Ordering::Relaxed))
                .sum();
            if open == 0 {
                tracing::info!("all connections closed; bye");
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(open, "shutdown deadline reached; dropping remaining connections");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !drained {
            let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(2));
            if tokio::time::timeout(remaining, writer).await.is_err() {
                tracing::error!("the message writer did not drain before the deadline");
            }
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// The reader (`session::reader`) on a started node: these start the whole server, so they live
/// here, at the top of the module graph, rather than beside the reader.
#[cfg(test)]
mod reader_tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use crate::config::{Config, EndpointConfig, EndpointKind};
    use crate::transport::frame::{Decoder, Message, OP_BINARY, OP_TEXT, Role, close_code, encode_masked};

    const KEY: [u8; 4] = [1, 2, 3, 4];
    /// Only a guard against a hung test; nothing here measures time.
    const WAIT: Duration = Duration::from_secs(15);

    /// Opens an upgraded connection to a fresh node's echo endpoint.
    async fn echo_connection() -> (crate::server::Running, TcpStream, Vec<u8>) {
        let mut config = Config::default();
        config.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        config.server.shards = 1;
        config.endpoints.push(EndpointConfig { path: "/echo".into(), kind: EndpointKind::Echo, ..Default::default() });
        let running = crate::server::start(config).await.unwrap();
        let mut stream = TcpStream::connect(running.local_addr).await.unwrap();
        stream
            .write_all(
                b"GET /ws/echo HTTP/1.1\r\nHost: herald\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                  Sec-WebSocket-Version: 13\r\n\r\n",
            )
            .await
            .unwrap();
        let mut head = Vec::new();
        let end = loop {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed during the handshake");
            head.extend_from_slice(&chunk[..n]);
            if let Some(pos) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
        };
        assert!(head.starts_with(b"HTTP/1.1 101"), "{:?}", String::from_utf8_lossy(&head));
        let rest = head.split_off(end);
        (running, stream, rest)
    }

    /// Every message the server sends until it ends the stream.
    async fn read_to_end(mut stream: TcpStream, already: Vec<u8>) -> Vec<Message> {
        let mut decoder = Decoder::new(Role::Client, 1 << 20);
        let mut out = Vec::new();
        decoder.feed(&already, &mut out).unwrap();
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            if n == 0 {
                return out;
            }
            decoder.feed(&chunk[..n], &mut out).unwrap();
            if matches!(out.last(), Some(Message::Close(_))) {
                return out;
            }
        }
    }

    // Autobahn 3.2, 4.1.3, 5.15: a valid message and a violation in the same read. The message
    // came first and must be answered before the connection is failed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_before_a_violation_in_the_same_read_are_handled() {
        tokio::time::timeout(WAIT, async {
            let (running, mut stream, rest) = echo_connection().await;
            let mut bytes = encode_masked(OP_TEXT, b"Hello", KEY).to_vec();
            bytes.extend_from_slice(&encode_masked(OP_BINARY, b"bin", KEY));
            let mut bad = encode_masked(OP_TEXT, b"x", KEY).to_vec();
            bad[0] |= 0x20; // RSV2 without an extension
            bytes.extend_from_slice(&bad);
            stream.write_all(&bytes).await.unwrap();
            let messages = read_to_end(stream, rest).await;
            assert_eq!(
                messages,
                vec![
                    Message::Text("Hello".into()),
                    Message::Binary("bin".into()),
                    Message::Close(Some((
                        close_code::PROTOCOL_ERROR,
                        "protocol error: reserved bits RSV2/RSV3 set".into()
                    ))),
                ]
            );
            running.shutdown().await;
        })
        .await
        .expect("the exchange did not finish");
    }
}
