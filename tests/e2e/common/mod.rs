//! Test harness: the real `herald` binary on a free loopback port, real WebSocket clients
//! (tokio-tungstenite, an independent implementation), and a raw-socket client for the paths a
//! well-behaved client never takes.
//!
//! Every wait is for an event (a line, a frame, a counter reaching a value); the timeouts only
//! turn a hang into a failure with a message.

#![allow(dead_code)]

pub mod nginx;
pub mod postgres;
pub mod raw;
pub mod redis;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expected event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(15);

/// How often [`eventually`] asks again.
const POLL: Duration = Duration::from_millis(20);

/// Asks `probe` until it answers `Some`, and returns the answer; fails the test naming `what`
/// when [`WAIT`] passes first. For states only visible by asking (a counter, a Redis key, a log
/// line); an event that arrives on its own is awaited directly.
pub async fn eventually<T>(what: impl std::fmt::Display, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let outcome = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(answer) = probe().await {
                return answer;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    outcome.unwrap_or_else(|_| panic!("{what}: not within {WAIT:?}"))
}

/// Asks `check` until it holds; fails the test naming `what` when [`WAIT`] passes first.
pub async fn until(what: impl std::fmt::Display, mut check: impl AsyncFnMut() -> bool) {
    eventually(what, async || check().await.then_some(())).await
}

/// The API key every test node uses unless a test says otherwise.
pub const API_KEY: &str = "test-api-key-0123";

/// A running `herald` process.
pub struct Herald {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its log (stderr), for failure messages and log assertions.
    pub log: Arc<Mutex<String>>,
    /// The API key it was given, if any.
    pub api_key: Option<String>,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// How to start a node.
#[derive(Clone, Default)]
pub struct Options {
    /// TOML configuration.
    pub toml: String,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Extra arguments.
    pub args: Vec<String>,
    /// No API key at all.
    pub no_api_key: bool,
}

impl Options {
    pub fn toml(toml: &str) -> Self {
        Options { toml: toml.to_string(), ..Default::default() }
    }
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }
}

/// Sends subscribe requests alternately through two connections of one user and returns the
/// index of the first that is refused with `RATE_LIMIT_EXCEEDED` (at most eight are sent): the
/// probe of a rate limit counted across nodes.
pub async fn first_rate_limited(on_a: &mut Client, on_b: &mut Client) -> Option<usize> {
    for i in 0..8 {
        let client = if i % 2 == 0 { &mut *on_a } else { &mut *on_b };
        let reply = client.request(serde_json::json!({"type": "subscribe", "channels": [format!("x{i}")]})).await;
        if reply["code"] == "RATE_LIMIT_EXCEEDED" {
            return Some(i);
        }
    }
    None
}

pub fn herald_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_herald"))
}

impl Herald {
    /// Starts a node with a TOML configuration.
    pub async fn start(toml: &str) -> Herald {
        Herald::start_with(Options::toml(toml)).await
    }

    /// Starts a node with full options.
    pub async fn start_with(options: Options) -> Herald {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("herald.toml");
        std::fs::write(&config_path, &options.toml).expect("write config");
        let mut command = Command::new(herald_bin());
        command
            .arg("--config")
            .arg(&config_path)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path())
            .args(&options.args)
            .env_remove("REDIS_URL")
            .env_remove("DATABASE_URL")
            .env("HERALD_LOG_LEVEL", "herald=debug,info")
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let api_key = (!options.no_api_key).then(|| API_KEY.to_string());
        if let Some(key) = &api_key {
            command.env("HERALD_API_KEY", key);
        }
        for (k, v) in &options.env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn herald");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = sink.lock();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(WAIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let rest = line
                    .strip_prefix("herald listening on http://")
                    .or_else(|| line.strip_prefix("herald listening on https://"));
                if let Some(rest) = rest {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    return addr.parse::<SocketAddr>().ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(addr) = addr else {
            let _ = child.kill().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            panic!("herald did not start; log:\n{}", log.lock());
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Herald { child: Some(child), addr, log, api_key, dir, http: reqwest::Client::new() }
    }

    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(|c| c.id()).expect("running")
    }

    /// Connects a WebSocket client and consumes the welcome message.
    pub async fn connect(&self, path_and_query: &str) -> Client {
        let mut client = self.connect_raw(path_and_query).await;
        let welcome = client.recv().await;
        assert!(
            welcome["type"] == "connection" || welcome["type"] == "connection_established",
            "expected a welcome, got {welcome}"
        );
        client.welcome = welcome;
        client
    }

    /// Connects without consuming anything.
    pub async fn connect_raw(&self, path_and_query: &str) -> Client {
        let url = self.ws_url(path_and_query);
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(&url))
            .await
            .unwrap_or_else(|_| panic!("connect to {url} timed out"))
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        Client { ws, welcome: Value::Null }
    }

    /// POSTs JSON with the API key; returns status and body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let mut request = self.http.post(self.url(path)).json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        Self::finish(request.send().await.expect("POST")).await
    }

    /// GETs with the API key.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let mut request = self.http.get(self.url(path));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        Self::finish(request.send().await.expect("GET")).await
    }

    /// DELETEs with the API key.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let mut request = self.http.delete(self.url(path));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        Self::finish(request.send().await.expect("DELETE")).await
    }

    /// GETs plain text.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self.http.get(self.url(path)).send().await.expect("GET");
        (response.status().as_u16(), response.text().await.unwrap_or_default())
    }

    async fn finish(response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Publishes through the HTTP API and asserts success.
    pub async fn publish(&self, body: Value) {
        let (status, reply) = self.post("/api/publish", body).await;
        assert_eq!(status, 200, "publish failed: {reply}");
    }

    /// Waits until a stats total satisfies `pred`.
    pub async fn wait_for_total(&self, field: &str, pred: impl Fn(u64) -> bool) -> u64 {
        eventually(format_args!("stats total {field} never reached the expected value"), async || {
            self.get("/api/stats").await.1["totals"][field].as_u64().filter(|v| pred(*v))
        })
        .await
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str) {
        // Displayed only on failure, so the log shown is the log at that moment.
        struct Missing<'a>(&'a str, &'a Mutex<String>);
        impl std::fmt::Display for Missing<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "log never contained {:?}; log:\n{}", self.0, self.1.lock())
            }
        }
        until(Missing(needle, &self.log), async || self.log.lock().contains(needle)).await;
    }

    /// Rewrites the configuration file, sends SIGHUP and waits until the node has answered
    /// that reload (applied or refused); returns the log from the line that answered it on.
    pub async fn reload(&self, toml: &str) -> String {
        let before = self.log.lock().matches("configuration reload").count();
        std::fs::write(self.dir().join("herald.toml"), toml).expect("rewrite config");
        self.signal("HUP");
        let answered = tokio::time::timeout(WAIT, async {
            loop {
                {
                    let log = self.log.lock();
                    // The answering line and what follows (a refusal's reasons take lines of their own).
                    if let Some((at, _)) = log.match_indices("configuration reload").nth(before) {
                        let start = log[..at].rfind('\n').map_or(0, |n| n + 1);
                        return log[start..].to_string();
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        answered.unwrap_or_else(|_| panic!("the reload was never answered; log:\n{}", self.log.lock()))
    }

    /// Waits for the process to exit by itself; returns its exit code.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let exit = tokio::time::timeout(WAIT, child.wait()).await.expect("herald did not exit").expect("wait");
        exit.code()
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {pid} failed");
    }

    /// Sends a signal and waits for the process to exit; returns its exit code.
    pub async fn signal_and_wait(&mut self, signal: &str) -> Option<i32> {
        self.signal(signal);
        self.wait_exit().await
    }
}

/// A WebSocket client (tokio-tungstenite).
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub welcome: Value,
}

impl Client {
    pub async fn send_json(&mut self, value: Value) {
        self.ws.send(Message::text(value.to_string())).await.expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_string())).await.expect("send");
    }

    /// The next text message as JSON, skipping control frames. Fails on close or timeout.
    pub async fn recv(&mut self) -> Value {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next()).await.expect("no message arrived in time");
            match next {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON text {text:?}: {e}"));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The next message that is not a heartbeat.
    pub async fn recv_event(&mut self) -> Value {
        loop {
            let message = self.recv().await;
            if message["type"] != "heartbeat" {
                return message;
            }
        }
    }

    /// Skips messages until one of `kind` arrives.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let message = self.recv().await;
            if message["type"] == kind {
                return message;
            }
        }
    }

    /// Sends a request and returns the reply that is not a heartbeat.
    pub async fn request(&mut self, value: Value) -> Value {
        self.send_json(value).await;
        self.recv_event().await
    }

    /// Waits for the server's close frame; returns its code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next()).await.expect("no close arrived in time");
            match next {
                Some(Ok(Message::Close(frame))) => {
                    // Poll once more so tungstenite sends its close reply, as a browser would.
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.ws.next()).await;
                    return match frame {
                        Some(CloseFrame { code, reason }) => (code.into(), reason.to_string()),
                        None => (1005, String::new()),
                    };
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("connection failed before a close frame: {e}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }

    /// Publishes nothing; proves the connection still works with a ping round trip.
    pub async fn assert_alive(&mut self) {
        let pong = self.request(json!({"type": "ping", "id": "alive"})).await;
        assert_eq!(pong["type"], "pong", "expected pong, got {pong}");
        assert_eq!(pong["id"], "alive");
    }
}
