//! Connections: opens N idle WebSocket connections (over several loopback source addresses and,
//! past one process's open-file limit, over several processes of this tool), then prints the
//! server's resident memory per connection and the connect rate.
//!
//! The server's memory is read from `/proc/<pid>/status` (`VmRSS`) of the `--pid`s given, before
//! any connection is opened and once the servers report every connection; the difference over N
//! is the cost of one idle connection (kernel socket buffers are not in a process's RSS, so the
//! kernel's side is read from `/proc/meminfo` and `/proc/net/sockstat`).
//!
//! With `--channel` every connection follows that channel from its URL; with `--publish` one
//! event then goes to it through the first node's HTTP API and the report says how long it took
//! to reach every open connection (`scripts/bench-million`). `--mem-floor-mib` stops opening
//! connections when the machine's `MemAvailable` falls under a floor, and the report says so.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// API key, to read each node's connection count from /api/stats (and to publish).
    #[arg(long, env = "HERALD_API_KEY")]
    pub api_key: Option<String>,
    /// Speak the Pusher protocol instead: connect to `/app/{KEY}` (protocol 7), wait for
    /// `pusher:connection_established`, and count connections on the client side (Soketi and
    /// Sockudo have no `/api/stats`); `--path` and `--api-key` are then unused.
    #[arg(long, value_name = "KEY")]
    pub pusher_key: Option<String>,
    /// Every connection follows these channels from its URL (`channels=a,b`), subscribed before
    /// its welcome arrives; `{i}` becomes the connection's number (`c{i}`: a channel each).
    #[arg(long)]
    pub channel: Option<String>,
    /// After the hold, publish one event to `--channel` through the first node's
    /// `POST /api/publish` and report the time until every open connection has it.
    #[arg(long, requires = "channel")]
    pub publish: bool,
    /// Seconds to wait for that event to reach every connection.
    #[arg(long, default_value_t = 300.0)]
    pub deliver_timeout: f64,
    /// Stop opening connections when the machine's MemAvailable falls under this many MiB
    /// (0: no floor). The report says where it stopped.
    #[arg(long, default_value_t = 0)]
    pub mem_floor_mib: u64,
    /// Internal: this process is a child of another; open `count` connections starting at
    /// `offset`, print `ready`, answer `report` lines on stdin, and hold them until stdin closes.
    #[arg(long, hide = true)]
    pub child_offset: Option<usize>,
}

/// Marks the one event of `--publish`, so that holders tell it from heartbeats.
const MARK: &str = "herald-load-connections-event";

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("process {pid}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")
}

/// A field of `/proc/meminfo` in KiB (`MemAvailable`, `Slab`, `SUnreclaim`), 0 if absent.
fn meminfo_kib(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// TCP sockets in use and the pages of socket buffer memory the kernel has allocated for TCP
/// (`/proc/net/sockstat`: the sum of what `ss -m` shows per socket, without listing them all).
fn tcp_sockstat() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("TCP:")) else { return (0, 0) };
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| {
        words.iter().position(|w| *w == name).and_then(|i| words.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    (field("inuse"), field("mem"))
}

/// The machine's memory as the kernel sees it, at one moment.
#[derive(Debug, Clone, Copy)]
struct Kernel {
    available_kib: u64,
    slab_kib: u64,
    unreclaimable_kib: u64,
    tcp_inuse: u64,
    tcp_mem_pages: u64,
}

impl Kernel {
    fn now() -> Self {
        let (tcp_inuse, tcp_mem_pages) = tcp_sockstat();
        Self {
            available_kib: meminfo_kib("MemAvailable"),
            slab_kib: meminfo_kib("Slab"),
            unreclaimable_kib: meminfo_kib("SUnreclaim"),
            tcp_inuse,
            tcp_mem_pages,
        }
    }
}

fn realtime_ns() -> u64 {
    // Wall-clock time: the one clock every client process and the publisher share.
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The request path of idle connection `i` and the text its welcome message contains.
fn idle_target(path: &str, pusher_key: Option<&str>, channel: Option<&str>, i: usize) -> (String, &'static str) {
    match pusher_key {
        Some(key) => (format!("/app/{key}?protocol=7&client=herald-load&version=1"), "pusher:connection_established"),
        None => {
            let follow = channel.map(|c| format!("&channels={}", c.replace("{i}", &i.to_string()))).unwrap_or_default();
            (format!("{path}?client_id=idle-{i}{follow}"), "\"type\":\"connection")
        }
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

/// What the holders of one process saw: connections still open, and the marked event.
#[derive(Default)]
struct Tally {
    open: AtomicUsize,
    received: AtomicUsize,
    last_ns: AtomicU64,
}

impl Tally {
    fn line(&self) -> String {
        format!(
            "tally {} {} {}",
            self.received.load(Ordering::Relaxed),
            self.last_ns.load(Ordering::Relaxed),
            self.open.load(Ordering::Relaxed)
        )
    }
}

/// One process's share once opened.
struct Opened {
    holders: Vec<tokio::task::JoinHandle<()>>,
    failed: usize,
    first_error: Option<String>,
    /// Why opening stopped early (the memory floor), if it did.
    stopped: Option<String>,
}

/// Opens this process's share; returns the clients' tasks once all are connected (or the
/// memory floor stopped it), with the failures counted rather than fatal.
async fn open(
    args: &Args,
    servers: &[SocketAddr],
    offset: usize,
    count: usize,
    tally: &Arc<Tally>,
) -> anyhow::Result<Opened> {
    let sources = parse_sources(&args.sources)?;
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let stop: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let floor_kib = args.mem_floor_mib * 1024;
    let mut connecting = Vec::with_capacity(count);
    for i in offset..offset + count {
        let source = sources.get(i % sources.len().max(1)).copied();
        let server = servers[i % servers.len()];
        let (path, welcome) = idle_target(&args.path, args.pusher_key.as_deref(), args.channel.as_deref(), i);
        let permits = permits.clone();
        let stop = stop.clone();
        let tally = tally.clone();
        connecting.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            if stop.get().is_some() {
                return Ok(None);
            }
            if floor_kib > 0 && i % 256 == 0 {
                let available = meminfo_kib("MemAvailable");
                if available < floor_kib {
                    let _ = stop.set(format!(
                        "memory floor: MemAvailable {} MiB < {} MiB",
                        available / 1024,
                        floor_kib / 1024
                    ));
                    return Ok(None);
                }
            }
            let mut client = ws::connect(server, source, &path).await?;
            let mut scratch = [0u8; 512];
            let mut messages = Vec::new();
            wait_for(&mut client, &mut scratch, &mut messages, welcome).await?;
            // Hold (and answer pings) at once: the rest may take longer than the idle timeout.
            tally.open.fetch_add(1, Ordering::Relaxed);
            anyhow::Ok(Some(tokio::spawn(hold(client, tally))))
        }));
    }
    let mut opened = Opened { holders: Vec::with_capacity(count), failed: 0, first_error: None, stopped: None };
    for handle in connecting {
        match handle.await.context("connect task")? {
            Ok(Some(holder)) => opened.holders.push(holder),
            Ok(None) => {}
            Err(e) => {
                opened.failed += 1;
                opened.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    opened.stopped = stop.get().cloned();
    Ok(opened)
}

thread_local! {
    /// One read buffer per thread, so that an idle connection holds none.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 4096]);
}

/// Keeps a connection open: answers pings, counts the marked event, ignores everything else.
async fn hold(mut client: ws::WsClient, tally: Arc<Tally>) {
    'open: loop {
        let mut messages = Vec::new();
        let read = SCRATCH.with(|scratch| client.try_read_into(&mut scratch.borrow_mut(), &mut messages));
        match read {
            Ok(Some(true)) => {}
            Ok(None) => {
                if client.stream.readable().await.is_err() {
                    break;
                }
                continue;
            }
            Ok(Some(false)) | Err(_) => break,
        }
        for message in messages {
            let alive = match message {
                Message::Ping(payload) => client.pong(&payload).await.is_ok(),
                Message::Text(text) if text.windows(MARK.len()).any(|w| w == MARK.as_bytes()) => {
                    tally.last_ns.fetch_max(realtime_ns(), Ordering::Relaxed);
                    tally.received.fetch_add(1, Ordering::Relaxed);
                    true
                }
                _ => true,
            };
            if !alive {
                break 'open;
            }
        }
    }
    tally.open.fetch_sub(1, Ordering::Relaxed);
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

/// A child load process and its stdout.
struct Child {
    process: std::process::Child,
    stdout: BufReader<std::process::ChildStdout>,
    opened: usize,
}

impl Child {
    /// Asks the child for its tally: (received, last receive ns, still open).
    fn tally(&mut self) -> anyhow::Result<(usize, u64, usize)> {
        let stdin = self.process.stdin.as_mut().context("child stdin")?;
        stdin.write_all(b"report\n")?;
        stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        parse_tally(&line).with_context(|| format!("child answered {line:?}"))
    }
}

fn parse_tally(line: &str) -> Option<(usize, u64, usize)> {
    let mut words = line.split_whitespace();
    if words.next()? != "tally" {
        return None;
    }
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

/// The child's side: open, report, then answer `report` lines until stdin closes.
async fn run_child(args: &Args, servers: &[SocketAddr], offset: usize) -> anyhow::Result<()> {
    let tally = Arc::new(Tally::default());
    let opened = open(args, servers, offset, args.count, &tally).await?;
    let why = opened.stopped.as_deref().or(opened.first_error.as_deref()).unwrap_or("-").replace('\n', " ");
    println!("ready {} {} {why}", opened.holders.len(), opened.failed);
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        loop {
            line.clear();
            if !std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                break;
            }
            if line.trim() == "report" {
                println!("{}", tally.line());
                let _ = std::io::stdout().flush();
            }
        }
    })
    .await?;
    drop(opened.holders);
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
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
        return run_child(&args, &servers, offset).await;
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
    let kernel_before = Kernel::now();

    let started = Instant::now();
    let processes = args.processes.max(1);
    let tally = Arc::new(Tally::default());
    let mut children = Vec::new();
    let mut local = None;
    // (opened, failed, why) per client process.
    let mut shares: Vec<(usize, usize, String)> = Vec::new();
    if processes == 1 {
        let opened = open(&args, &servers, 0, args.count, &tally).await?;
        let why = opened.stopped.clone().or(opened.first_error.clone()).unwrap_or_else(|| "-".into());
        shares.push((opened.holders.len(), opened.failed, why));
        local = Some(opened);
    } else {
        let exe = std::env::current_exe()?;
        let share = args.count.div_ceil(processes);
        for p in 0..processes {
            let offset = p * share;
            let count = share.min(args.count.saturating_sub(offset));
            if count == 0 {
                break;
            }
            let mut child = Command::new(&exe)
                .args(["connections", "--connect", &args.connect, "--path", &args.path, "--sources", &args.sources])
                .args(["--count", &count.to_string(), "--child-offset", &offset.to_string()])
                .args(["--connect-concurrency", &args.connect_concurrency.to_string()])
                .args(["--mem-floor-mib", &args.mem_floor_mib.to_string()])
                .args(args.pusher_key.iter().flat_map(|key| ["--pusher-key", key.as_str()]))
                .args(args.channel.iter().flat_map(|channel| ["--channel", channel.as_str()]))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .context("spawning a child load process")?;
            let stdout = BufReader::new(child.stdout.take().context("child stdout")?);
            children.push(Child { process: child, stdout, opened: 0 });
        }
        for child in &mut children {
            let mut line = String::new();
            child.stdout.read_line(&mut line)?;
            let mut words = line.trim_end().splitn(4, ' ');
            if words.next() != Some("ready") {
                bail!("a child process failed to open its connections (see its error above)");
            }
            let opened: usize = words.next().and_then(|w| w.parse().ok()).context("child's ready line")?;
            let failed: usize = words.next().and_then(|w| w.parse().ok()).context("child's ready line")?;
            child.opened = opened;
            shares.push((opened, failed, words.next().unwrap_or("-").to_string()));
        }
    }
    let connect_time = started.elapsed();
    let opened: usize = shares.iter().map(|s| s.0).sum();
    let failed: usize = shares.iter().map(|s| s.1).sum();
    // Every connection is registered on its node before its welcome, but count on the servers
    // themselves: that is what the memory figure is about.
    let expected = baseline + opened as u64;
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
    let kernel_after = Kernel::now();
    println!();
    println!("connections        {opened} of {} requested, {failed} failed", args.count);
    println!("nodes              {}", bases.len());
    println!("client processes   {}", shares.len());
    for (p, (opened, failed, why)) in shares.iter().enumerate() {
        if shares.len() > 1 || failed > &0 || why != "-" {
            println!(
                "  process {p:<3}      {opened} open, {failed} failed{}",
                if why == "-" { String::new() } else { format!(": {why}") }
            );
        }
    }
    println!("connect time       {:.2} s", connect_time.as_secs_f64());
    println!("connect rate       {:.0} /s", opened as f64 / connect_time.as_secs_f64());
    if !pids.is_empty() && opened > 0 {
        let per = (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / opened as f64;
        println!("server RSS before  {:.1} MiB", mib(rss_before));
        println!("server RSS after   {:.1} MiB", mib(rss_after));
        println!("per connection     {:.2} KiB ({per:.0} bytes)", per / 1024.0);
    }
    let (b, a) = (kernel_before, kernel_after);
    println!("MemAvailable       {:.0} → {:.0} MiB", mib(b.available_kib), mib(a.available_kib));
    println!(
        "kernel Slab        {:.0} → {:.0} MiB (SUnreclaim {:.0} → {:.0} MiB)",
        mib(b.slab_kib),
        mib(a.slab_kib),
        mib(b.unreclaimable_kib),
        mib(a.unreclaimable_kib)
    );
    println!(
        "TCP sockets        {} → {} in use, buffers {:.1} → {:.1} MiB (sockstat mem)",
        b.tcp_inuse,
        a.tcp_inuse,
        mib(b.tcp_mem_pages * 4),
        mib(a.tcp_mem_pages * 4)
    );
    if opened > 0 {
        let slab = a.slab_kib.saturating_sub(b.slab_kib) as f64 * 1024.0 / opened as f64;
        let machine = b.available_kib.saturating_sub(a.available_kib) as f64 * 1024.0 / opened as f64;
        println!("kernel per conn    {slab:.0} bytes of Slab (both ends of a loopback connection)");
        println!("machine per conn   {machine:.0} bytes of MemAvailable (server, clients and kernel)");
    }
    tokio::time::sleep(Duration::from_secs_f64(args.hold.max(0.0))).await;
    if !pusher {
        let mut still = 0;
        for base in &bases {
            still += server_connections(&http, base, key).await?;
        }
        println!("still connected    {} after {:.0} s", still.saturating_sub(baseline), args.hold);
    }
    if args.publish {
        deliver_one(&args, &bases[0], &http, &tally, &mut children, opened).await?;
    }
    drop(local);
    for mut child in children {
        drop(child.process.stdin.take());
        let _ = child.process.wait();
    }
    if failed > 0 {
        bail!("{failed} of {} connections failed", args.count);
    }
    Ok(())
}

/// Publishes the one marked event and waits until every open connection has it.
async fn deliver_one(
    args: &Args,
    base: &str,
    http: &reqwest::Client,
    tally: &Tally,
    children: &mut [Child],
    opened: usize,
) -> anyhow::Result<()> {
    // The first channel named is the one every connection follows.
    let channel = args.channel.as_deref().and_then(|c| c.split(',').next()).context("--publish needs --channel")?;
    if channel.contains("{i}") {
        bail!("--publish goes to the first channel of --channel, which must be the same for every connection");
    }
    let body = serde_json::json!({"channel": channel, "event": {"type": "bench", "mark": MARK}});
    let sent_ns = realtime_ns();
    let mut request = http.post(format!("{base}/api/publish")).json(&body);
    if let Some(key) = &args.api_key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await?;
    let answered_ns = realtime_ns();
    if !response.status().is_success() {
        bail!("publish failed: {} {}", response.status(), response.text().await.unwrap_or_default());
    }
    let deadline = Instant::now() + Duration::from_secs_f64(args.deliver_timeout);
    let (received, last_ns, open, per_process) = loop {
        let mut all = vec![(
            tally.received.load(Ordering::Relaxed),
            tally.last_ns.load(Ordering::Relaxed),
            tally.open.load(Ordering::Relaxed),
        )];
        for child in children.iter_mut() {
            all.push(tokio::task::block_in_place(|| child.tally())?);
        }
        let received: usize = all.iter().map(|t| t.0).sum();
        let last_ns = all.iter().map(|t| t.1).max().unwrap_or(0);
        let open: usize = all.iter().map(|t| t.2).sum();
        if received >= open || Instant::now() > deadline {
            break (received, last_ns, open, all);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("event published    answered in {:.1} ms", (answered_ns.saturating_sub(sent_ns)) as f64 / 1e6);
    println!("event delivered    to {received} of {open} open connections ({opened} opened)");
    if received > 0 {
        println!("time to deliver    {:.1} ms to the last of them", (last_ns.saturating_sub(sent_ns)) as f64 / 1e6);
    }
    if !children.is_empty() {
        let counts: Vec<String> = per_process[1..].iter().map(|t| t.0.to_string()).collect();
        println!("per client process {}", counts.join(" "));
    }
    if received < open {
        bail!("{} connections did not receive the event within {} s", open - received, args.deliver_timeout);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{idle_target, parse_tally};

    #[test]
    fn a_child_tally_line_parses() {
        assert_eq!(parse_tally("tally 3 17 5\n"), Some((3, 17, 5)));
        assert_eq!(parse_tally("ready 3 0 -"), None);
    }

    #[test]
    fn herald_idle_connections_carry_a_client_id() {
        assert_eq!(idle_target("/ws", None, None, 7), ("/ws?client_id=idle-7".to_string(), "\"type\":\"connection"));
        assert_eq!(idle_target("/ws", None, Some("all"), 7).0, "/ws?client_id=idle-7&channels=all");
        assert_eq!(idle_target("/ws", None, Some("all,c{i}"), 7).0, "/ws?client_id=idle-7&channels=all,c7");
    }

    #[test]
    fn pusher_idle_connections_use_the_app_path_and_protocol_7() {
        let (path, welcome) = idle_target("/ws", Some("app-key"), None, 7);
        assert_eq!(path, "/app/app-key?protocol=7&client=herald-load&version=1");
        assert_eq!(welcome, "pusher:connection_established");
    }
}
