//! Chat with persistence: clients send `chat_message`s into rooms and wait for each
//! `chat_message_ack` (sent only once the message is durable); prints acknowledged messages per
//! second and ack latency.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use herald::transport::frame::Message;
use serde_json::json;

use crate::report::{self, ms};
use crate::ws::{self, json_u64};

/// Chat options.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Herald's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub server: String,
    /// WebSocket path.
    #[arg(long, default_value = "/ws")]
    pub path: String,
    /// Sending clients.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Rooms the clients are spread over.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Messages each client keeps in flight (sent, not yet acknowledged).
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Message size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
}

/// Runs the scenario.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let host =
        args.server.trim_end_matches('/').strip_prefix("http://").context("--server must be http://host:port")?;
    let server: SocketAddr = host.parse().context("--server must be http://IP:port")?;
    if !server.ip().is_loopback() {
        bail!("--server {server} is not loopback");
    }
    println!("herald-load chat: {}", std::env::args().collect::<Vec<_>>().join(" "));
    println!("machine: {}", report::machine());
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let args = args.clone();
        let (acked, errors) = (acked.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let room = format!("bench-chat-{}", i % args.rooms.max(1));
            let mut client = ws::connect(server, None, &format!("{}?client_id=chat-{i}", args.path)).await?;
            let mut scratch = vec![0u8; 16 * 1024];
            let mut messages = Vec::new();
            let pad = "x".repeat(args.size.saturating_sub(40));
            let mut sent: HashMap<u64, u64> = HashMap::new();
            let mut next = 0u64;
            loop {
                while Instant::now() < deadline && sent.len() < args.window {
                    let body = json!({"type": "chat_message", "room": room, "content": pad, "id": next});
                    client.send_text(&body.to_string()).await?;
                    sent.insert(next, report::now_ns());
                    next += 1;
                }
                if sent.is_empty() {
                    return anyhow::Ok(());
                }
                if !client.read_into(&mut scratch, &mut messages).await? {
                    bail!("connection closed");
                }
                let now = report::now_ns();
                for message in messages.drain(..) {
                    let Message::Text(text) = message else { continue };
                    if text.windows(16).any(|w| w == b"chat_message_ack") {
                        if let Some(id) = json_u64(&text, "id")
                            && let Some(at) = sent.remove(&id)
                        {
                            report::record(now.saturating_sub(at));
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                    } else if text.windows(13).any(|w| w == b"\"type\":\"error") {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if let Some(id) = json_u64(&text, "id") {
                            sent.remove(&id);
                        }
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.context("client task")??;
    }
    let secs = started.elapsed().as_secs_f64();
    let total = acked.load(Ordering::Relaxed);
    let histogram = report::merged();
    println!(
        "acknowledged {total} messages in {secs:.2} s: {:.0} per second; errors {}",
        total as f64 / secs,
        errors.load(Ordering::Relaxed)
    );
    println!(
        "ack latency ms: p50 {} p90 {} p99 {} max {}",
        ms(histogram.value_at_quantile(0.5)),
        ms(histogram.value_at_quantile(0.9)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.max())
    );
    Ok(())
}
