//! The yardstick: the straightforward tokio-tungstenite fan-out server a competent Rust developer
//! writes in an afternoon, to compare Herald with (`fanout --via yardstick`).
//!
//! It accepts connections on a multi-threaded Tokio runtime, completes each handshake with
//! tokio-tungstenite (default configuration), and gives every connection one task and one bounded
//! `mpsc` channel. An event is turned into one `Message::Text` (its bytes shared by every clone)
//! and `try_send` to every connection's channel; each task `feed`s what it receives, and whatever
//! else is already waiting in its channel, then flushes once, and answers the client's frames. A
//! full channel drops the connection, as a slow consumer. There is no index and no sharding.
//!
//! It runs as its own process (the hidden `herald-load yardstick` subcommand), so it has its own
//! 20,000 open files for server sockets and its CPU time can be read like Herald's. The load tool
//! starts it, reads its address from its first line of output, and publishes by writing one
//! event (a JSON text) per line to its standard input; it exits when that input ends.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// The yardstick server's options.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Where to listen (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Worker threads of its runtime (Herald runs one shard per core; this machine has two).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Messages each connection's channel holds before the connection is dropped as slow.
    #[arg(long, default_value_t = DEFAULT_QUEUE)]
    pub queue: usize,
}

/// Each connection's channel bound by default. Herald's queue holds 256 frames, but its frames
/// move into the kernel's socket buffer as soon as they are queued; the yardstick's channel holds
/// every message until the connection's task runs, which on a busy machine can take longer than
/// 256 events last at 1,500 events/s. At 256 it dropped most connections in a first run here
/// (load average 22); 4,096 measures the design rather than the scheduler.
pub const DEFAULT_QUEUE: usize = 4096;

/// The welcome the load tool's subscribers wait for before they count as connected.
const WELCOME: &str = r#"{"type":"connection","status":"connected"}"#;

type Subscribers = Arc<Mutex<Vec<mpsc::Sender<Message>>>>;

/// Runs the yardstick server until its standard input ends.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        anyhow::bail!("{} is not a loopback address; the yardstick only listens on loopback", args.listen);
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    runtime.block_on(async move {
        // A deep backlog, as Herald's: thousands of clients connect at once.
        let socket = socket2::Socket::new(socket2::Domain::for_address(args.listen), socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&args.listen.into()).context("binding the yardstick")?;
        socket.listen(8192)?;
        socket.set_nonblocking(true)?;
        let listener = TcpListener::from_std(socket.into())?;
        let addr = listener.local_addr()?;
        let mut stdout = tokio::io::stdout();
        stdout.write_all(format!("yardstick listening on {addr}\n").as_bytes()).await?;
        stdout.flush().await?;
        run(listener, BufReader::new(tokio::io::stdin()), args.queue).await
    })
}

/// Accepts connections on `listener` and sends every line of `input` to each, until `input` ends.
async fn run(listener: TcpListener, input: impl AsyncBufRead + Unpin, queue: usize) -> anyhow::Result<()> {
    let subscribers: Subscribers = Arc::new(Mutex::new(Vec::new()));
    let accepting = subscribers.clone();
    let queue = queue.max(1);
    let acceptor = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(connection(stream, accepting.clone(), queue));
        }
    });
    let mut lines = input.lines();
    while let Some(line) = lines.next_line().await? {
        // Serialized once: every clone of the message shares these bytes.
        let message = Message::text(line);
        let mut subscribers = subscribers.lock().map_err(|_| anyhow::anyhow!("subscriber list poisoned"))?;
        subscribers.retain(|tx| tx.try_send(message.clone()).is_ok());
    }
    acceptor.abort();
    Ok(())
}

async fn connection(stream: TcpStream, subscribers: Subscribers, queue: usize) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else { return };
    // Listed before the welcome, so a client that saw the welcome gets every later event.
    let (tx, mut rx) = mpsc::channel(queue);
    match subscribers.lock() {
        Ok(mut list) => list.push(tx),
        Err(_) => return,
    }
    if socket.send(Message::text(WELCOME)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            message = rx.recv() => {
                // None: dropped from the list as a slow consumer.
                let Some(message) = message else { break };
                // What else is already waiting goes out with it, in one flush.
                let mut result = socket.feed(message).await;
                while result.is_ok() && let Ok(more) = rx.try_recv() {
                    result = socket.feed(more).await;
                }
                if result.and(socket.flush().await).is_err() {
                    break;
                }
            }
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                // tungstenite answers pings itself; nothing else is expected from subscribers.
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The load tool's handle on a yardstick process it started.
pub struct Yardstick {
    /// Where its clients connect.
    pub addr: SocketAddr,
    /// Its process id, for its CPU time.
    pub pid: u32,
    stdin: tokio::sync::Mutex<ChildStdin>,
    _child: Child,
}

impl Yardstick {
    /// Starts `herald-load yardstick` (this same binary) and waits for its address.
    pub async fn start(threads: usize, queue: usize) -> anyhow::Result<Yardstick> {
        let exe = std::env::current_exe().context("finding the load tool's own binary")?;
        let mut child = Command::new(exe)
            .args(["yardstick", "--threads", &threads.to_string(), "--queue", &queue.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the yardstick")?;
        let stdout = child.stdout.take().context("yardstick stdout")?;
        let stdin = child.stdin.take().context("yardstick stdin")?;
        let pid = child.id().context("yardstick pid")?;
        let line = BufReader::new(stdout).lines().next_line().await?.context("the yardstick exited at start")?;
        let addr = line
            .strip_prefix("yardstick listening on ")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("unexpected yardstick output: {line}"))?;
        Ok(Yardstick { addr, pid, stdin: tokio::sync::Mutex::new(stdin), _child: child })
    }

    /// Hands an event (one line of JSON) to the yardstick, which sends it to every connection.
    pub async fn publish(&self, json: &[u8]) -> anyhow::Result<()> {
        let mut stdin = self.stdin.lock().await;
        stdin.write_all(json).await?;
        stdin.write_all(b"\n").await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{self, ClientKind};
    use crate::fanout::wait_for;

    /// Both subscriber clients connect to the yardstick, get its welcome and then every event.
    #[tokio::test]
    async fn both_clients_receive_every_event() {
        // A deadline for a hang, not a timed assertion.
        tokio::time::timeout(std::time::Duration::from_secs(60), exchange()).await.expect("the exchange finished");
    }

    async fn exchange() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (mut publisher, input) = tokio::io::duplex(4096);
        let server = tokio::spawn(run(listener, BufReader::new(input), 8));
        let mut scratch = vec![0u8; 4096];
        let mut messages = Vec::new();
        let mut clients = Vec::new();
        for kind in [ClientKind::Light, ClientKind::Tungstenite] {
            let mut client = client::connect(kind, addr, None, "/ws", false).await.expect("connect");
            wait_for(&mut client, &mut scratch, &mut messages, "\"type\":\"connection").await.expect("welcome");
            clients.push(client);
        }
        for i in 0..3 {
            publisher.write_all(format!("{{\"type\":\"bench\",\"seq\":{i}}}\n").as_bytes()).await.expect("publish");
        }
        for client in &mut clients {
            wait_for(client, &mut scratch, &mut messages, "\"seq\":2").await.expect("third event");
        }
        drop(publisher);
        server.await.expect("server task").expect("server");
    }
}
