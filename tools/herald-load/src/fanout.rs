//! Fan-out: many subscribers, one or more publishers, latency from publish to receive.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use herald::transport::frame::Message;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::client::{self, Client, ClientKind, ReadMessages};
use crate::report::{self, ms};
use crate::ws::json_u64;

/// Fan-out options.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Herald's HTTP address (where HTTP publishing goes).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub server: String,
    /// Nodes the clients connect to, round-robin (comma-separated http://host:port); default: --server.
    #[arg(long)]
    pub connect: Option<String>,
    /// Publish through the HTTP API (`http`) or with Redis PUBLISH on `<prefix>:<channel>` (`redis`).
    #[arg(long, default_value = "http")]
    pub via: Via,
    /// Redis URL for `--via redis`.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Publishers' prefix Herald listens on (`redis.prefixes`), for `--via redis`.
    #[arg(long, default_value = "bench")]
    pub redis_prefix: String,
    /// WebSocket path.
    #[arg(long, default_value = "/ws")]
    pub path: String,
    /// Number of subscribing clients.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Spread clients over this many rooms (each event goes to one room); 0: one channel.
    #[arg(long, default_value_t = 0)]
    pub rooms: usize,
    /// Make clients the tabs of this many users (each event goes to one user); 0: one channel.
    #[arg(long, default_value_t = 0)]
    pub users: usize,
    /// Events per second across all targets; 0 publishes as fast as the API accepts.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Events published first and left out of the figures.
    #[arg(long, default_value_t = 20)]
    pub warmup: u64,
    /// Approximate event size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Concurrent publishers.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Events per HTTP request (`--via http`): above 1, each request is a `POST
    /// /api/publish/batch` of this many events, each with its own target.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// API key for publishing.
    #[arg(long, env = "HERALD_API_KEY")]
    pub api_key: Option<String>,
    /// Source addresses for client sockets, e.g. 127.0.0.2-127.0.0.9 or 127.0.0.1,127.0.0.2.
    #[arg(long, default_value = "127.0.0.1")]
    pub sources: String,
    /// Connections opened at once while connecting.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Writer threads of the floor server (`--via floor`); Herald's default is 2 shards.
    #[arg(long, default_value_t = 2)]
    pub floor_threads: usize,
    /// Ask for stream positions (`?seq=1`); the channel needs a `[[history]]` entry (`bench-*`).
    #[arg(long)]
    pub seq: bool,
    /// Offer permessage-deflate and inflate what arrives compressed.
    #[arg(long)]
    pub deflate: bool,
    /// Pusher app id (`--via pusher`).
    #[arg(long, default_value = "1001")]
    pub pusher_app_id: String,
    /// Pusher app key (`--via pusher`).
    #[arg(long, default_value = "app-key")]
    pub pusher_key: String,
    /// Pusher app secret (`--via pusher`).
    #[arg(long, default_value = "app-secret-change-me")]
    pub pusher_secret: String,
    /// The subscribers' WebSocket client: the load tool's own light one, or tokio-tungstenite.
    #[arg(long, value_enum, default_value = "light")]
    pub client: ClientKind,
    /// Worker threads of the yardstick's runtime (`--via yardstick`).
    #[arg(long, default_value_t = 2)]
    pub yardstick_threads: usize,
    /// Messages each yardstick connection's channel holds before it is dropped as slow.
    #[arg(long, default_value_t = crate::yardstick::DEFAULT_QUEUE)]
    pub yardstick_queue: usize,
    /// The server's process id: its CPU time over the publishing and delivery is reported, per
    /// delivery. The yardstick's is reported without it.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Run the publishers on the subscribers' runtime, as before `--client` existed. By default
    /// they get a thread of their own: thousands of busy reader tasks would otherwise delay every
    /// publish (an HTTP round trip is several task wake-ups), and the publishing rate would
    /// depend on how costly the client is rather than on the server.
    #[arg(long)]
    pub shared_runtime: bool,
    /// Seconds to wait for stragglers after the last publish.
    #[arg(long, default_value_t = 10.0)]
    pub grace: f64,
    /// Seconds to wait after the last client connected before publishing.
    #[arg(long, default_value_t = 0.0)]
    pub settle: f64,
}

/// Parses `a,b` or `a-b` (last octet range) into addresses.
pub fn parse_sources(spec: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((from, to)) = part.split_once('-') {
            let from: std::net::Ipv4Addr = from.parse().context("source range start")?;
            let to: std::net::Ipv4Addr = to.parse().context("source range end")?;
            let (f, t) = (u32::from(from), u32::from(to));
            if t < f || t - f > 254 {
                bail!("bad source range {part}");
            }
            out.extend((f..=t).map(|ip| IpAddr::V4(ip.into())));
        } else {
            out.push(part.parse().with_context(|| format!("bad source address {part}"))?);
        }
    }
    for ip in &out {
        if !ip.is_loopback() {
            bail!("source address {ip} is not loopback; the load tool only uses loopback");
        }
    }
    Ok(out)
}

/// How events are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// `POST /api/publish`.
    Http,
    /// Redis `PUBLISH <prefix>:<channel>`, with `room`/`user_id` fields for rooms and users.
    Redis,
    /// The Pusher Channels protocol: clients at `/app/{key}` subscribing with `pusher:subscribe`,
    /// events through the signed `POST /apps/{id}/events` (Herald, Soketi, Sockudo alike).
    Pusher,
    /// No Herald: the floor, an in-process server that only writes each event to every socket
    /// (one `write` each, from `--floor-threads` threads). The same clients, the same events.
    Floor,
    /// No Herald: the yardstick, a straightforward tokio-tungstenite server in its own process
    /// (one task and one bounded channel per connection, see `yardstick.rs`).
    Yardstick,
}

pub(crate) fn loopback_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let host = url.trim_end_matches('/').strip_prefix("http://").context("addresses must be http://host:port")?;
    let addr: SocketAddr = host.to_socket_addrs()?.next().context("resolving an address")?;
    if !addr.ip().is_loopback() {
        bail!("{addr} is not a loopback address; the load tool only targets loopback");
    }
    Ok(addr)
}

struct Shared {
    received: AtomicU64,
    counted_latencies: AtomicU64,
    last_receive_ns: AtomicU64,
    closed_early: AtomicUsize,
    stop: AtomicBool,
    warmup: u64,
}

enum Mode {
    Channel,
    Rooms(usize),
    Users(usize),
}

/// Runs the scenario and prints the report.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let base = args.server.trim_end_matches('/').to_string();
    loopback_addr(&base)?;
    let floor = if args.via == Via::Floor {
        if args.rooms > 0 || args.users > 0 {
            bail!("--via floor serves one channel only");
        }
        Some(Arc::new(crate::floor::Floor::start(args.clients, args.floor_threads)?))
    } else {
        None
    };
    let yardstick = if args.via == Via::Yardstick {
        if args.rooms > 0 || args.users > 0 || args.seq {
            bail!("--via yardstick serves one channel, without --seq");
        }
        Some(Arc::new(crate::yardstick::Yardstick::start(args.yardstick_threads, args.yardstick_queue).await?))
    } else {
        None
    };
    let server_pid = args.pid.or(yardstick.as_ref().map(|y| y.pid));
    let servers: Vec<SocketAddr> = match &args.connect {
        _ if floor.is_some() => vec![floor.as_ref().map(|f| f.addr).context("floor")?],
        _ if yardstick.is_some() => vec![yardstick.as_ref().map(|y| y.addr).context("yardstick")?],
        Some(list) => {
            list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(loopback_addr).collect::<Result<_, _>>()?
        }
        None => vec![loopback_addr(&base)?],
    };
    let sources = parse_sources(&args.sources)?;
    if args.via == Via::Pusher && (args.rooms > 0 || args.users > 0 || args.seq) {
        bail!("--via pusher serves one channel, without --seq");
    }
    let mode = match (args.rooms, args.users) {
        (0, 0) => Mode::Channel,
        (r, 0) => Mode::Rooms(r),
        (0, u) => Mode::Users(u),
        _ => bail!("choose --rooms or --users, not both"),
    };
    let targets = match mode {
        Mode::Channel => 1,
        Mode::Rooms(n) | Mode::Users(n) => n,
    };
    let channel = format!("bench-{}", std::process::id());
    println!("herald-load fanout: {}", std::env::args().collect::<Vec<_>>().join(" "));
    println!("machine: {}", report::machine());

    let shared = Arc::new(Shared {
        received: AtomicU64::new(0),
        counted_latencies: AtomicU64::new(0),
        last_receive_ns: AtomicU64::new(0),
        closed_early: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        warmup: args.warmup,
    });
    let members: Arc<Vec<AtomicU64>> = Arc::new((0..targets).map(|_| AtomicU64::new(0)).collect());

    // Connect.
    let connect_started = Instant::now();
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut connecting = Vec::with_capacity(args.clients);
    let seq = if args.seq { "&seq=1" } else { "" };
    let deflate = args.deflate;
    let pusher = args.via == Via::Pusher;
    let pusher_key = args.pusher_key.clone();
    let client_kind = args.client;
    for i in 0..args.clients {
        let source = sources.get(i % sources.len().max(1)).copied();
        let server = servers[i % servers.len()];
        let target = i % targets;
        let path = match mode {
            Mode::Channel if pusher => format!("/app/{pusher_key}?protocol=7&client=herald-load&version=1"),
            Mode::Channel => format!("{}?channels={channel}&client_id=load-{i}{seq}", args.path),
            Mode::Rooms(_) => format!("{}?client_id=load-{i}", args.path),
            Mode::Users(_) => format!("{}?client_id=load-{i}&user_id={channel}-user-{target}", args.path),
        };
        let room = matches!(mode, Mode::Rooms(_)).then(|| format!("{channel}-room-{target}"));
        let permits = permits.clone();
        let members = members.clone();
        let channel = channel.clone();
        connecting.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let mut client = client::connect(client_kind, server, source, &path, deflate).await?;
            let mut scratch = vec![0u8; 4096];
            let mut messages = Vec::new();
            if pusher {
                wait_for(&mut client, &mut scratch, &mut messages, "pusher:connection_established").await?;
                let subscribe = json!({"event": "pusher:subscribe", "data": {"channel": channel}});
                client.send_text(&subscribe.to_string()).await?;
                wait_for(&mut client, &mut scratch, &mut messages, "subscription_succeeded").await?;
                members[target].fetch_add(1, Ordering::Relaxed);
                return anyhow::Ok((client, target));
            }
            wait_for(&mut client, &mut scratch, &mut messages, "\"type\":\"connection").await?;
            if let Some(room) = &room {
                client.send_text(&json!({"type": "join_room", "room": room}).to_string()).await?;
                wait_for(&mut client, &mut scratch, &mut messages, "\"type\":\"room_joined").await?;
            }
            members[target].fetch_add(1, Ordering::Relaxed);
            anyhow::Ok((client, target))
        }));
    }
    let mut clients = Vec::with_capacity(args.clients);
    for handle in connecting {
        clients.push(handle.await.context("connect task")??);
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    println!(
        "connected {} clients in {:.2} s ({:.0}/s) from {} source address(es) to {} node(s)",
        clients.len(),
        connect_secs,
        clients.len() as f64 / connect_secs,
        sources.len(),
        servers.len()
    );

    // Receive.
    let mut readers = Vec::with_capacity(clients.len());
    for (client, _) in clients {
        readers.push(tokio::spawn(receive(client, shared.clone())));
    }

    if args.settle > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    }

    // Publish.
    let own_runtime = (!args.shared_runtime)
        .then(|| {
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("publisher").enable_all().build()
        })
        .transpose()?;
    let spawn_on = own_runtime.as_ref().map_or_else(tokio::runtime::Handle::current, |rt| rt.handle().clone());
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.publishers.max(1)).build()?;
    let redis = match args.via {
        Via::Redis => {
            let client = redis::Client::open(args.redis_url.as_str()).context("--redis-url")?;
            Some(client.get_multiplexed_async_connection().await.context("connecting to Redis")?)
        }
        Via::Http | Via::Floor | Via::Pusher | Via::Yardstick => None,
    };
    let pusher_app = (args.via == Via::Pusher)
        .then(|| Arc::new((args.pusher_app_id.clone(), args.pusher_key.clone(), args.pusher_secret.clone())));
    let redis_prefix = args.redis_prefix.clone();
    let published: Arc<Vec<AtomicU64>> = Arc::new((0..targets).map(|_| AtomicU64::new(0)).collect());
    let seq = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let pad = "x".repeat(args.size.saturating_sub(60));
    let total_events = args.warmup + (args.rate * args.duration).round() as u64;
    let cpu_before = server_pid.and_then(report::cpu_seconds);
    let publish_started_ns = report::now_ns();
    let publish_started = Instant::now();
    let mut publishers = Vec::new();
    for _ in 0..args.publishers.max(1) {
        let (http, base, api_key, channel, pad) =
            (http.clone(), base.clone(), args.api_key.clone(), channel.clone(), pad.clone());
        let (seq, published) = (seq.clone(), published.clone());
        let (mut redis, redis_prefix) = (redis.clone(), redis_prefix.clone());
        let floor = floor.clone();
        let yardstick = yardstick.clone();
        let pusher_app = pusher_app.clone();
        let rate = args.rate;
        let duration = Duration::from_secs_f64(args.duration);
        let mode_kind: u8 = match mode {
            Mode::Channel => 0,
            Mode::Rooms(_) => 1,
            Mode::Users(_) => 2,
        };
        let publisher_count = args.publishers.max(1) as f64;
        let warmup = args.warmup;
        let batch = if args.via == Via::Http { args.batch.max(1) } else { 1 };
        let requests = requests.clone();
        publishers.push(spawn_on.spawn(async move {
            let mut ticker = (rate > 0.0).then(|| {
                let mut t = tokio::time::interval(Duration::from_secs_f64(publisher_count * batch as f64 / rate));
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            loop {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                let n = seq.fetch_add(batch as u64, Ordering::Relaxed);
                let past_warmup = n >= warmup;
                let done =
                    if rate > 0.0 { n >= total_events } else { past_warmup && publish_started.elapsed() >= duration };
                if done {
                    break;
                }
                if batch > 1 {
                    let last = if rate > 0.0 { total_events.min(n + batch as u64) } else { n + batch as u64 };
                    // Written straight into the body: the load tool shares the cores with the
                    // node, so building a JSON tree per item would measure the tool.
                    let mut body = String::with_capacity((last - n) as usize * (pad.len() + 128) + 16);
                    body.push_str("{\"items\":[");
                    for m in n..last {
                        if m > n {
                            body.push(',');
                        }
                        let target = m % published.len() as u64;
                        body.push_str(&target_json(mode_kind, &channel, target));
                        body.push_str(",\"event\":");
                        body.push_str(&event_json(m, &pad));
                        body.push('}');
                    }
                    body.push_str("]}");
                    let mut request = http
                        .post(format!("{base}/api/publish/batch"))
                        .header("content-type", "application/json")
                        .body(body);
                    if let Some(key) = &api_key {
                        request = request.bearer_auth(key);
                    }
                    let response = request.send().await?;
                    let status = response.status();
                    let reply = response.bytes().await.unwrap_or_default();
                    let failed = serde_json::from_slice::<BatchReply>(&reply).map(|r| r.failed).unwrap_or(u64::MAX);
                    if !status.is_success() || failed != 0 {
                        bail!("batch publish failed: {status} {}", String::from_utf8_lossy(&reply));
                    }
                    requests.fetch_add(1, Ordering::Relaxed);
                    for m in n..last {
                        if m >= warmup {
                            published[(m % published.len() as u64) as usize].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    continue;
                }
                let target = (n % published.len() as u64) as usize;
                let room = (mode_kind == 1).then(|| format!("{channel}-room-{target}"));
                let user = (mode_kind == 2).then(|| format!("{channel}-user-{target}"));
                let mut event = json!({"type": "bench", "t": report::now_ns(), "seq": n, "pad": pad});
                if let Some(floor) = &floor {
                    floor.publish(event.to_string().as_bytes());
                } else if let Some(yardstick) = &yardstick {
                    yardstick.publish(event.to_string().as_bytes()).await?;
                } else if let Some(app) = &pusher_app {
                    let (id, key, secret) = &**app;
                    let path = format!("/apps/{id}/events");
                    let body = json!({"name": "bench", "channel": channel, "data": event.to_string()}).to_string();
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
                    let query = herald::pusher::sign::signed_query(key, secret, "POST", &path, body.as_bytes(), now);
                    let response = http
                        .post(format!("{base}{path}?{query}"))
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await?;
                    if !response.status().is_success() {
                        bail!("publish failed: {} {}", response.status(), response.text().await.unwrap_or_default());
                    }
                } else if let Some(redis) = redis.as_mut() {
                    // Through Redis the room and user travel inside the event, on the channel.
                    if let Some(room) = &room {
                        event["room"] = json!(room);
                    }
                    if let Some(user) = &user {
                        event["user_id"] = json!(user);
                    }
                    let target_channel =
                        if mode_kind == 0 { channel.clone() } else { format!("{channel}-unsubscribed") };
                    redis::cmd("PUBLISH")
                        .arg(format!("{redis_prefix}:{target_channel}"))
                        .arg(event.to_string())
                        .query_async::<i64>(redis)
                        .await
                        .context("PUBLISH")?;
                } else {
                    let body = format!(
                        "{},\"event\":{}}}",
                        target_json(mode_kind, &channel, target as u64),
                        event_json(n, &pad)
                    );
                    let mut request =
                        http.post(format!("{base}/api/publish")).header("content-type", "application/json").body(body);
                    if let Some(key) = &api_key {
                        request = request.bearer_auth(key);
                    }
                    let response = request.send().await?;
                    if !response.status().is_success() {
                        bail!("publish failed: {} {}", response.status(), response.text().await.unwrap_or_default());
                    }
                    requests.fetch_add(1, Ordering::Relaxed);
                }
                if past_warmup {
                    published[target].fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }));
    }
    for publisher in publishers {
        publisher.await.context("publisher task")??;
    }
    if let Some(runtime) = own_runtime {
        // Dropping a runtime inside another one's task would panic; its tasks are done anyway.
        runtime.shutdown_background();
    }
    let publish_secs = publish_started.elapsed().as_secs_f64();
    let expected: u64 =
        published.iter().zip(members.iter()).map(|(p, m)| p.load(Ordering::Relaxed) * m.load(Ordering::Relaxed)).sum();
    let events: u64 = published.iter().map(|p| p.load(Ordering::Relaxed)).sum();

    // Wait for deliveries to arrive.
    let grace_end = Instant::now() + Duration::from_secs_f64(args.grace);
    while shared.counted_latencies.load(Ordering::Relaxed) < expected && Instant::now() < grace_end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu_after = server_pid.and_then(report::cpu_seconds);
    shared.stop.store(true, Ordering::Relaxed);
    for reader in &readers {
        reader.abort();
    }
    let received = shared.counted_latencies.load(Ordering::Relaxed);
    if args.via == Via::Http {
        let requests = requests.load(Ordering::Relaxed);
        println!(
            "HTTP requests: {requests} ({:.1}/s, {} event(s) each) over {} keep-alive publisher(s)",
            requests as f64 / publish_secs,
            args.batch.max(1),
            args.publishers.max(1)
        );
    }
    let span_ns = shared.last_receive_ns.load(Ordering::Relaxed).saturating_sub(publish_started_ns).max(1);
    let histogram = report::merged();
    println!(
        "published {events} events in {publish_secs:.2} s ({:.1}/s) to {targets} target(s), {} subscribers each on average",
        events as f64 / publish_secs,
        args.clients / targets
    );
    println!(
        "deliveries: {received} of {expected} expected ({:.0} per second); lost {}; connections closed early {}",
        received as f64 / (span_ns as f64 / 1e9),
        expected.saturating_sub(received),
        shared.closed_early.load(Ordering::Relaxed)
    );
    println!(
        "latency ms: p50 {} p90 {} p99 {} p99.9 {} max {}",
        ms(histogram.value_at_quantile(0.5)),
        ms(histogram.value_at_quantile(0.9)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.value_at_quantile(0.999)),
        ms(histogram.max())
    );
    if let (Some(pid), Some(before), Some(after)) = (server_pid, cpu_before, cpu_after) {
        let delivered = shared.received.load(Ordering::Relaxed).max(1);
        println!(
            "server CPU (pid {pid}) from the first publish to the last delivery: {:.2} s, {:.3} µs per delivery",
            after - before,
            (after - before) * 1e6 / delivered as f64
        );
    }
    Ok(())
}

/// The part of a batch reply the publisher checks.
#[derive(serde::Deserialize)]
struct BatchReply {
    failed: u64,
}

/// `{"channel":…` (mode 0), `{"room":…` (1) or `{"user_id":…` (2) for target number `target`,
/// without the closing brace. Names are `bench-<pid>…`: nothing to escape.
fn target_json(mode_kind: u8, channel: &str, target: u64) -> String {
    match mode_kind {
        0 => format!("{{\"channel\":\"{channel}\""),
        1 => format!("{{\"room\":\"{channel}-room-{target}\""),
        _ => format!("{{\"user_id\":\"{channel}-user-{target}\""),
    }
}

/// The benchmark event: its publish time, its number and the padding (only `x`s).
fn event_json(seq: u64, pad: &str) -> String {
    format!("{{\"type\":\"bench\",\"t\":{},\"seq\":{seq},\"pad\":\"{pad}\"}}", report::now_ns())
}

pub(crate) async fn wait_for(
    client: &mut impl ReadMessages,
    scratch: &mut [u8],
    messages: &mut Vec<Message>,
    needle: &str,
) -> anyhow::Result<()> {
    loop {
        for message in messages.drain(..) {
            if let Message::Text(text) = message
                && text.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                return Ok(());
            }
        }
        if !client.read_messages(scratch, messages).await? {
            bail!("closed before {needle}");
        }
    }
}

async fn receive(mut client: Client, shared: Arc<Shared>) {
    let mut scratch = vec![0u8; 4096];
    let mut messages = Vec::new();
    loop {
        match client.read_into(&mut scratch, &mut messages).await {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                if !shared.stop.load(Ordering::Relaxed) {
                    shared.closed_early.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        }
        let now = report::now_ns();
        let mut counted = 0;
        for message in messages.drain(..) {
            match message {
                Message::Text(text) => {
                    let (Some(t), Some(seq)) = (json_u64(&text, "t"), json_u64(&text, "seq")) else {
                        continue;
                    };
                    if seq >= shared.warmup {
                        report::record(now.saturating_sub(t));
                        counted += 1;
                    }
                }
                Message::Ping(payload) => {
                    let _ = client.pong(&payload).await;
                }
                Message::Close(_) => {
                    shared.closed_early.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                _ => {}
            }
        }
        if counted > 0 {
            shared.counted_latencies.fetch_add(counted, Ordering::Relaxed);
            shared.received.fetch_add(counted, Ordering::Relaxed);
            shared.last_receive_ns.fetch_max(now, Ordering::Relaxed);
        }
    }
}
