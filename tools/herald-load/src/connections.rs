//! Connections: opens N idle WebSocket connections (over several loopback source addresses and,
//! past one process's open-file limit, over several processes of this tool), then prints the
//! server's resident memory per connection and the connect rate.
//!
//! The server's memory is read from `/proc/<pid>/status` (`VmRSS`) of the `--pid`s given, before
//! any connection is opened and once the servers report every connection; the difference over N
//! is the cost of one idle connection (kernel socket buffers are not in a process's RSS).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use herald::transport::frame::Message;
use tokio::sync::Semaphore;

use crate::fanout::{loopback_addr, parse_sources, wait_for};
use crate::report;
use crate::ws;

/// Connections options.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Nodes to connect to, round-robin (comma-separated http://host:port).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub connect: String,
    /// WebSocket path.
    #[arg(long, default_value = "/ws")]
    pub path: String,
    /// Connections to open in all.
    #[arg(long, default_value_t = 10_000)]
    pub count: usize,
    /// Processes of this tool to spread them over (each needs one file per connection).
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Source addresses for client sockets, e.g. 127.0.0.2-127.0.0.9.
    #[arg(long, default_value = "127.0.0.1")]
    pub sources: String,
    /// Connections opened at once, per process.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Herald process ids whose resident memory is measured (comma-separated).
    #[arg(long)]
    pub pid: Option<String>,
    /// Seconds to keep the connections open once all are up (they answer pings meanwhile).
    #[arg(long, default_value_t = 2.0)]
    pub hold: f64,
    /// API key, to read each node's connection count from /api/stats.
    #[arg(long, env = "HERALD_API_KEY")]
    pub api_key: Option<String>,
    /// Speak the Pusher protocol instead: connect to `/app/{KEY}` (protocol 7), wait for
    /// `pusher:connection_established`, and count connections on the client side (Soketi and
    /// Sockudo have no `/api/stats`); `--path` and `--api-key` are then unused.
    #[arg(long, value_name = "KEY")]
    pub pusher_key: Option<String>,
    /// Internal: this process is a child of another; open `count` connections starting at
    /// `offset`, print `ready`, and hold them until stdin closes.
    #[arg(long, hide = true)]
    pub child_offset: Option<usize>,
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("process {pid}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")
}

/// The request path of idle connection `i` and the text its welcome message contains.
fn idle_target(path: &str, pusher_key: Option<&str>, i: usize) -> (String, &'static str) {
    match pusher_key {
        Some(key) => (format!("/app/{key}?protocol=7&client=herald-load&version=1"), "pusher:connection_established"),
        None => (format!("{path}?client_id=idle-{i}"), "\"type\":\"connection"),
    }
}

fn parse_pids(spec: &Option<String>) -> anyhow::Result<Vec<u32>> {
    spec.iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().with_context(|| format!("bad pid {s}")))
        .collect()
}

/// Opens this process's share; returns the clients' tasks once all are connected.
async fn open(
    args: &Args,
    servers: &[SocketAddr],
    offset: usize,
    count: usize,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let sources = parse_sources(&args.sources)?;
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut connecting = Vec::with_capacity(count);
    for i in offset..offset + count {
        let source = sources.get(i % sources.len().max(1)).copied();
        let server = servers[i % servers.len()];
        let (path, welcome) = idle_target(&args.path, args.pusher_key.as_deref(), i);
        let permits = permits.clone();
        connecting.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let mut client = ws::connect(server, source, &path).await?;
            let mut scratch = [0u8; 512];
            let mut messages = Vec::new();
            wait_for(&mut client, &mut scratch, &mut messages, welcome).await?;
            anyhow::Ok(client)
        }));
    }
    let mut holders = Vec::with_capacity(count);
    for handle in connecting {
        match handle.await.context("connect task")? {
            Ok(client) => holders.push(tokio::spawn(hold(client))),
            Err(e) => {
                if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("a connection failed: {e:#}");
                }
            }
        }
    }
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} of {count} connections failed");
    }
    Ok(holders)
}

/// Keeps a connection open: answers pings, ignores everything else.
async fn hold(mut client: ws::WsClient) {
    let mut scratch = [0u8; 512];
    let mut messages = Vec::new();
    loop {
        match client.read_into(&mut scratch, &mut messages).await {
            Ok(true) => {}
            _ => return,
        }
        for message in messages.drain(..) {
            if let Message::Ping(payload) = message
                && client.pong(&payload).await.is_err()
            {
                return;
            }
        }
    }
}

async fn server_connections(http: &reqwest::Client, base: &str, key: Option<&str>) -> anyhow::Result<u64> {
    let mut request = http.get(format!("{base}/api/stats"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let stats: serde_json::Value = request.send().await?.json().await?;
    stats["total_connections"]
        .as_u64()
        .or_else(|| stats["connections"].as_u64())
        .context("total_connections in /api/stats")
}

/// Runs the scenario and prints the report.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let bases: Vec<String> = args
        .connect
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('/').to_string())
        .collect();
    let servers: Vec<SocketAddr> = bases.iter().map(|b| loopback_addr(b)).collect::<Result<_, _>>()?;
    if servers.is_empty() {
        bail!("--connect names no node");
    }
    if let Some(offset) = args.child_offset {
        let holders = open(&args, &servers, offset, args.count).await?;
        println!("ready {}", holders.len());
        std::io::stdout().flush()?;
        // Hold until the parent closes stdin.
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
        })
        .await?;
        return Ok(());
    }

    println!("herald-load connections: {}", std::env::args().collect::<Vec<_>>().join(" "));
    println!("machine: {}", report::machine());
    let pids = parse_pids(&args.pid)?;
    let http = reqwest::Client::new();
    let key = args.api_key.as_deref();
    // A Pusher server has no stats endpoint: every client saw its welcome, which the server
    // sends once the connection is registered, and that count stands in for the server's.
    let pusher = args.pusher_key.is_some();
    let mut baseline = 0;
    if !pusher {
        for base in &bases {
            baseline += server_connections(&http, base, key).await?;
        }
    }
    let rss_before: u64 = pids.iter().map(|p| rss_kib(*p)).sum::<anyhow::Result<u64>>()?;

    let started = Instant::now();
    let processes = args.processes.max(1);
    let mut children = Vec::new();
    let mut local = Vec::new();
    if processes == 1 {
        local = open(&args, &servers, 0, args.count).await?;
    } else {
        let exe = std::env::current_exe()?;
        let share = args.count.div_ceil(processes);
        for p in 0..processes {
            let offset = p * share;
            let count = share.min(args.count.saturating_sub(offset));
            if count == 0 {
                break;
            }
            let child = Command::new(&exe)
                .args(["connections", "--connect", &args.connect, "--path", &args.path, "--sources", &args.sources])
                .args(["--count", &count.to_string(), "--child-offset", &offset.to_string()])
                .args(["--connect-concurrency", &args.connect_concurrency.to_string()])
                .args(args.pusher_key.iter().flat_map(|key| ["--pusher-key", key.as_str()]))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .context("spawning a child load process")?;
            children.push(child);
        }
        for child in &mut children {
            let stdout = child.stdout.take().context("child stdout")?;
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line)?;
            if !line.starts_with("ready") {
                bail!("a child process failed to open its connections (see its error above)");
            }
        }
    }
    let connect_time = started.elapsed();
    // Every connection is registered on its node before its welcome, but count on the servers
    // themselves: that is what the memory figure is about.
    let expected = baseline + args.count as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    if !pusher {
        loop {
            let mut now = 0;
            for base in &bases {
                now += server_connections(&http, base, key).await?;
            }
            if now >= expected {
                break;
            }
            if Instant::now() > deadline {
                bail!("the servers report {now} connections, expected {expected}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Let allocator caches settle before reading memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after: u64 = pids.iter().map(|p| rss_kib(*p)).sum::<anyhow::Result<u64>>()?;
    println!();
    println!("connections        {}", args.count);
    println!("nodes              {}", bases.len());
    println!("client processes   {processes}");
    println!("connect time       {:.2} s", connect_time.as_secs_f64());
    println!("connect rate       {:.0} /s", args.count as f64 / connect_time.as_secs_f64());
    if !pids.is_empty() {
        let per = (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / args.count as f64;
        println!("server RSS before  {:.1} MiB", rss_before as f64 / 1024.0);
        println!("server RSS after   {:.1} MiB", rss_after as f64 / 1024.0);
        println!("per connection     {:.2} KiB ({per:.0} bytes)", per / 1024.0);
    }
    tokio::time::sleep(Duration::from_secs_f64(args.hold.max(0.0))).await;
    if !pusher {
        let mut still = 0;
        for base in &bases {
            still += server_connections(&http, base, key).await?;
        }
        println!("still connected    {} after {:.0} s", still.saturating_sub(baseline), args.hold);
    }
    drop(local);
    for mut child in children {
        drop(child.stdin.take());
        let _ = child.wait();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::idle_target;

    #[test]
    fn herald_idle_connections_carry_a_client_id() {
        assert_eq!(idle_target("/ws", None, 7), ("/ws?client_id=idle-7".to_string(), "\"type\":\"connection"));
    }

    #[test]
    fn pusher_idle_connections_use_the_app_path_and_protocol_7() {
        let (path, welcome) = idle_target("/ws", Some("app-key"), 7);
        assert_eq!(path, "/app/app-key?protocol=7&client=herald-load&version=1");
        assert_eq!(welcome, "pusher:connection_established");
    }
}
