//! Real `redis-server` processes on free loopback ports: standalone (stoppable and restartable on
//! the same port) and a three-master cluster built with `redis-cli --cluster create`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free loopback port (bound and released; the tiny race is acceptable for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// One redis-server process.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a standalone server.
    pub async fn start() -> RedisServer {
        Self::start_with(Vec::new()).await
    }

    async fn start_with(extra: Vec<String>) -> RedisServer {
        let mut server = RedisServer { port: free_port(), child: None, dir: tempfile::tempdir().expect("dir"), extra };
        server.launch().await;
        server
    }

    async fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", self.dir.path().to_str().expect("utf-8 path")])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let what = format!("redis-server on port {} answers PING", self.port);
        super::until(what, async || self.cli(&["PING"]).is_some_and(|out| out.trim() == "PONG")).await;
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli -p PORT args…`; returns stdout when it succeeded.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let output = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().ok()?;
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).to_string())
    }

    /// `PUBLISH channel payload`; returns the number of receivers Redis reports.
    pub fn publish(&self, channel: &str, payload: &str) -> u64 {
        self.cli(&["PUBLISH", channel, payload]).and_then(|out| out.trim().parse().ok()).expect("PUBLISH")
    }

    /// Kills the server abruptly (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of three masters and no replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(
                RedisServer::start_with(vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    "nodes.conf".into(),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                ])
                .await,
            );
        }
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(created.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&created.stdout));
        let cluster = RedisCluster { nodes };
        super::until("the cluster reaches cluster_state:ok", async || {
            cluster
                .nodes
                .iter()
                .all(|n| n.cli(&["CLUSTER", "INFO"]).is_some_and(|info| info.contains("cluster_state:ok")))
        })
        .await;
        cluster
    }

    /// A seed URL (the first node).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Runs `redis-cli -c args…` on the first node, following the cluster's redirections to the
    /// master of the command's key; returns stdout.
    pub fn cli_routed(&self, args: &[&str]) -> String {
        let port = self.nodes[0].port.to_string();
        let output = Command::new("redis-cli").args(["-c", "-p", &port]).args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    /// `PUBLISH` through one node (classic pub/sub is propagated to every node of a cluster).
    pub fn publish(&self, node: usize, channel: &str, payload: &str) {
        self.nodes[node].cli(&["PUBLISH", channel, payload]).expect("PUBLISH");
    }
}

/// A TCP proxy to `target` that holds every chunk for `delay` in each direction, to stand for a
/// distant Redis. Returns the proxy's port.
pub async fn latency_proxy(target: u16, delay: Duration) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else { continue };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pump(client_read, server_write, delay));
            tokio::spawn(pump(server_read, client_write, delay));
        }
    });
    port
}

async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, delay: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Simulated network latency, not a wait for an event.
        tokio::time::sleep(delay).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
