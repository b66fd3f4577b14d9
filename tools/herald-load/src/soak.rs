//! Soak: a bounded run of steady churn (connections opened every second and others dropped without
//! a close frame), published events and persisted chat, sampling the node's resident memory and
//! open descriptors. After the warm-up both must stay flat; the run fails otherwise.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::fanout::{loopback_addr, wait_for};
use crate::report;
use crate::ws;

/// Soak options.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The node (http://host:port).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub server: String,
    /// Its process id, for memory and descriptors.
    #[arg(long)]
    pub pid: u32,
    /// API key for publishing.
    #[arg(long, env = "HERALD_API_KEY")]
    pub api_key: Option<String>,
    /// Seconds to run.
    #[arg(long, default_value_t = 1200.0)]
    pub duration: f64,
    /// Share of the run that is warm-up (not judged).
    #[arg(long, default_value_t = 0.25)]
    pub warmup_share: f64,
    /// Connections kept open.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Connections replaced every second (dropped without a close frame).
    #[arg(long, default_value_t = 50)]
    pub churn: usize,
    /// Events published per second (to a channel every connection is on) and chat messages
    /// posted per second (persisted).
    #[arg(long, default_value_t = 20)]
    pub rate: usize,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10.0)]
    pub sample: f64,
    /// Most growth of resident memory after the warm-up, in percent.
    #[arg(long, default_value_t = 10.0)]
    pub max_rss_growth: f64,
    /// Most growth of open descriptors after the warm-up.
    #[arg(long, default_value_t = 16)]
    pub max_fd_growth: usize,
}

fn sample(pid: u32) -> anyhow::Result<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("the node is gone")?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok((rss, fds))
}

async fn open(server: SocketAddr, i: u64) -> anyhow::Result<ws::WsClient> {
    let mut client = ws::connect(server, None, &format!("/ws?channels=soak&client_id=soak-{i}")).await?;
    let (mut scratch, mut messages) = ([0u8; 1024], Vec::new());
    wait_for(&mut client, &mut scratch, &mut messages, "\"type\":\"connection").await?;
    Ok(client)
}

/// Runs the soak and prints the samples.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let base = args.server.trim_end_matches('/').to_string();
    let server = loopback_addr(&base)?;
    println!("herald-load soak: {}", std::env::args().collect::<Vec<_>>().join(" "));
    println!("machine: {}", report::machine());
    let http = reqwest::Client::new();
    let mut next_id = 0u64;
    let mut pool: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let keep = |client: ws::WsClient| tokio::spawn(drain(client));
    for _ in 0..args.connections {
        pool.push(keep(open(server, next_id).await?));
        next_id += 1;
    }
    let started = Instant::now();
    let duration = Duration::from_secs_f64(args.duration);
    let warmup_end = Duration::from_secs_f64(args.duration * args.warmup_share);
    let mut samples: Vec<(f64, u64, usize)> = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let (mut published, mut chats) = (0u64, 0u64);
    println!("{:>8} {:>10} {:>6} {:>12} {:>10}", "seconds", "rss KiB", "fds", "connections", "events");
    while started.elapsed() < duration {
        ticker.tick().await;
        // Churn: the oldest go, without a close frame.
        for handle in pool.drain(..args.churn.min(pool.len())) {
            handle.abort();
        }
        while pool.len() < args.connections {
            pool.push(keep(open(server, next_id).await?));
            next_id += 1;
        }
        for _ in 0..args.rate {
            let mut event = http
                .post(format!("{base}/api/publish"))
                .json(&json!({"channel": "soak", "event": {"type": "soak", "n": published}}));
            let mut chat = http
                .post(format!("{base}/api/rooms/soak-room/messages"))
                .json(&json!({"content": format!("soak message {chats}"), "message_type": "text", "user_id": "soak"}));
            if let Some(key) = &args.api_key {
                event = event.bearer_auth(key);
                chat = chat.bearer_auth(key);
            }
            if !event.send().await?.status().is_success() || !chat.send().await?.status().is_success() {
                bail!("the node refused a publish or a chat message");
            }
            published += 1;
            chats += 1;
        }
        if started.elapsed() >= next_sample {
            let (rss, fds) = sample(args.pid)?;
            let t = started.elapsed().as_secs_f64();
            println!("{t:>8.0} {rss:>10} {fds:>6} {:>12} {published:>10}", pool.len());
            samples.push((t, rss, fds));
            next_sample += Duration::from_secs_f64(args.sample);
        }
    }
    let (rss, fds) = sample(args.pid)?;
    samples.push((started.elapsed().as_secs_f64(), rss, fds));
    let Some(&(_, rss_after_warmup, fds_after_warmup)) =
        samples.iter().find(|(t, _, _)| *t >= warmup_end.as_secs_f64())
    else {
        bail!("the run is shorter than its warm-up");
    };
    let judged = samples.iter().filter(|(t, _, _)| *t >= warmup_end.as_secs_f64());
    let max_rss = judged.clone().map(|s| s.1).max().unwrap_or(rss_after_warmup);
    let max_fds = judged.map(|s| s.2).max().unwrap_or(fds_after_warmup);
    let growth = (max_rss as f64 / rss_after_warmup.max(1) as f64 - 1.0) * 100.0;
    println!();
    println!("opened {next_id} connections in all, published {published} events and {chats} chat messages");
    println!(
        "after warm-up: rss {rss_after_warmup} KiB, fds {fds_after_warmup}; highest since: rss {max_rss} KiB ({growth:+.1} %), fds {max_fds}"
    );
    if growth > args.max_rss_growth || max_fds > fds_after_warmup + args.max_fd_growth {
        bail!("memory or descriptors grew after the warm-up");
    }
    println!("flat: ok");
    Ok(())
}

/// Reads and discards until the connection ends; answers nothing (Herald's pings come every 30 s
/// and a soak connection lives a few seconds to minutes).
async fn drain(mut client: ws::WsClient) {
    let mut scratch = [0u8; 2048];
    let mut messages = Vec::new();
    loop {
        messages.clear();
        match client.read_into(&mut scratch, &mut messages).await {
            Ok(true) => {
                for m in messages.drain(..) {
                    if let herald::transport::frame::Message::Ping(p) = m {
                        let _ = client.pong(&p).await;
                    }
                }
            }
            _ => return,
        }
    }
}
