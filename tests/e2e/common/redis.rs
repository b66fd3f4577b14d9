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
        let cluster = RedisCluster::create(3, 0, 2000).await;
        super::until("the cluster reaches cluster_state:ok", async || {
            cluster
                .nodes
                .iter()
                .all(|n| n.cli(&["CLUSTER", "INFO"]).is_some_and(|info| info.contains("cluster_state:ok")))
        })
        .await;
        cluster
    }

    /// Starts `masters × (1 + replicas_each)` cluster-enabled servers on free loopback ports and
    /// joins them with `redis-cli --cluster create`; the caller waits for the state it needs.
    async fn create(masters: usize, replicas_each: usize, node_timeout_ms: u64) -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas_each) {
            nodes.push(
                RedisServer::start_with(vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    "nodes.conf".into(),
                    "--cluster-node-timeout".into(),
                    node_timeout_ms.to_string(),
                ])
                .await,
            );
        }
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas_each.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(created.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&created.stdout));
        RedisCluster { nodes }
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

/// `cluster-node-timeout` of the replicated cluster: low, so that a killed master is failed over
/// within a few seconds, and well above the scheduling hiccups of a loaded test machine.
pub const FAILOVER_NODE_TIMEOUT_MS: u64 = 1000;

/// One line of `CLUSTER NODES`: a node as one member of the cluster sees it.
#[derive(Debug, Clone)]
pub struct ClusterNodeView {
    pub id: String,
    pub port: u16,
    pub flags: Vec<String>,
    /// The master's id, for a replica.
    pub master: Option<String>,
    /// Slot ranges served (masters), inclusive.
    pub slots: Vec<(u16, u16)>,
}

impl ClusterNodeView {
    pub fn is_master(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
    }

    /// Flagged as failing (`fail`) or suspected (`fail?`) by the node that answered.
    pub fn is_failing(&self) -> bool {
        self.flags.iter().any(|f| f == "fail" || f == "fail?")
    }

    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(from, to)| (from..=to).contains(&slot))
    }
}

/// Parses `CLUSTER NODES` (migration markers such as `[42->-id]` are skipped).
fn parse_cluster_nodes(out: &str) -> Vec<ClusterNodeView> {
    out.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (id, addr, flags, master) = (fields.first()?, fields.get(1)?, fields.get(2)?, fields.get(3)?);
            let port = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let slots = fields
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(ClusterNodeView {
                id: id.to_string(),
                port,
                flags: flags.split(',').map(String::from).collect(),
                master: (*master != "-").then(|| master.to_string()),
                slots,
            })
        })
        .collect()
}

impl RedisServer {
    /// Whether this process runs (not killed by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The cluster as this node sees it.
    pub fn cluster_view(&self) -> Option<Vec<ClusterNodeView>> {
        self.cli(&["CLUSTER", "NODES"]).map(|out| parse_cluster_nodes(&out))
    }

    /// This node's cluster id.
    pub fn cluster_id(&self) -> String {
        self.cli(&["CLUSTER", "MYID"]).map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).expect("CLUSTER MYID")
    }

    /// Runs a command that must answer `OK`.
    pub fn cli_ok(&self, args: &[&str]) {
        let out = self.cli(args).unwrap_or_default();
        assert_eq!(out.trim(), "OK", "redis-cli -p {} {args:?}", self.port);
    }

    /// `ROLE` says master.
    pub fn is_master(&self) -> bool {
        self.cli(&["ROLE"]).is_some_and(|out| out.lines().next() == Some("master"))
    }

    /// A replica whose link to its master is up and whose initial sync is done.
    pub fn replica_in_sync(&self) -> bool {
        self.cli(&["INFO", "replication"])
            .is_some_and(|info| info.contains("master_link_status:up") && info.contains("master_sync_in_progress:0"))
    }
}

/// Redis Cluster with replicas: failover and resharding.
impl RedisCluster {
    /// Three masters, each with one replica (six `redis-server` processes on free loopback
    /// ports, all killed on drop), `cluster-node-timeout` [`FAILOVER_NODE_TIMEOUT_MS`]. Returns
    /// once every node reports `cluster_state:ok`, sees three masters serving all slots and
    /// three replicas, and every replica is in sync with its master.
    pub async fn start_with_replicas() -> RedisCluster {
        let cluster = RedisCluster::create(3, 1, FAILOVER_NODE_TIMEOUT_MS).await;
        cluster.wait_settled(3, 3).await;
        cluster
    }

    /// Waits until every running node reports `cluster_state:ok` and sees `masters` healthy
    /// masters covering all 16,384 slots and `replicas` healthy replicas, and every replica is in
    /// sync with its master.
    pub async fn wait_settled(&self, masters: usize, replicas: usize) {
        let what = format!("the cluster settles with {masters} masters and {replicas} replicas in sync");
        super::until(what, async || {
            self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                let ok = n.cli(&["CLUSTER", "INFO"]).is_some_and(|info| info.contains("cluster_state:ok"));
                let Some(view) = n.cluster_view() else { return false };
                let live: Vec<&ClusterNodeView> = view.iter().filter(|v| !v.is_failing()).collect();
                let slots: u32 =
                    live.iter().flat_map(|v| v.slots.iter()).map(|&(a, b)| u32::from(b) - u32::from(a) + 1).sum();
                let in_sync = n.is_master() || n.replica_in_sync();
                ok && in_sync
                    && slots == 16_384
                    && live.iter().filter(|v| v.is_master() && !v.slots.is_empty()).count() == masters
                    && live.iter().filter(|v| !v.is_master()).count() == replicas
            })
        })
        .await;
    }

    fn first_running(&self) -> &RedisServer {
        self.nodes.iter().find(|n| n.is_running()).expect("a running cluster node")
    }

    fn index_of_port(&self, port: u16) -> usize {
        self.nodes.iter().position(|n| n.port == port).expect("a node of this cluster")
    }

    /// `CLUSTER KEYSLOT key`.
    pub fn slot_of(&self, key: &str) -> u16 {
        self.first_running().cli(&["CLUSTER", "KEYSLOT", key]).and_then(|s| s.trim().parse().ok()).expect("KEYSLOT")
    }

    /// The index (in `nodes`) of the master serving `slot`, as a running node sees it.
    pub fn master_of(&self, slot: u16) -> usize {
        self.slot_owners()(slot)
    }

    /// Who serves which slot, read once: a function from slot to the index of its master.
    pub fn slot_owners(&self) -> impl Fn(u16) -> usize + '_ {
        let view = self.first_running().cluster_view().expect("CLUSTER NODES");
        let masters: Vec<ClusterNodeView> = view.into_iter().filter(|v| v.is_master() && !v.is_failing()).collect();
        move |slot| {
            let master = masters.iter().find(|v| v.serves(slot)).expect("every slot is served");
            self.index_of_port(master.port)
        }
    }

    /// The index of `master`'s replica.
    pub fn replica_of(&self, master: usize) -> usize {
        let id = self.nodes[master].cluster_id();
        let view = self.nodes[master].cluster_view().expect("CLUSTER NODES");
        let replica = view.iter().find(|v| v.master.as_deref() == Some(id.as_str())).expect("a replica");
        self.index_of_port(replica.port)
    }

    /// Kills a node abruptly (SIGKILL).
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// Waits until `replica` was promoted: it says it is master, and every running node sees it
    /// as a master with slots and reports `cluster_state:ok`.
    pub async fn wait_promoted(&self, replica: usize) {
        let port = self.nodes[replica].port;
        super::until(format_args!("the replica on port {port} is promoted and the cluster is ok"), async || {
            self.nodes[replica].is_master()
                && self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                    n.cli(&["CLUSTER", "INFO"]).is_some_and(|info| info.contains("cluster_state:ok"))
                        && n.cluster_view().is_some_and(|view| {
                            view.iter().any(|v| v.port == port && v.is_master() && !v.slots.is_empty())
                        })
                })
        })
        .await;
    }

    /// First step of moving `slot` from master `from` to master `to`: `to` imports it, `from`
    /// migrates it. From now on a key of the slot that `from` no longer holds is answered with
    /// `ASK`.
    pub fn begin_migration(&self, slot: u16, from: usize, to: usize) {
        let slot = slot.to_string();
        let (from_id, to_id) = (self.nodes[from].cluster_id(), self.nodes[to].cluster_id());
        self.nodes[to].cli_ok(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        self.nodes[from].cli_ok(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
    }

    /// Second step: `MIGRATE`s every key of `slot` from `from` to `to`; returns how many moved.
    pub fn move_keys(&self, slot: u16, from: usize, to: usize) -> usize {
        let (slot, port) = (slot.to_string(), self.nodes[to].port.to_string());
        let mut moved = 0;
        loop {
            let out = self.nodes[from].cli(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"]).expect("GETKEYSINSLOT");
            let keys: Vec<&str> = out.lines().map(str::trim).filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                return moved;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(&keys);
            let out = self.nodes[from].cli(&args).unwrap_or_default();
            assert!(out.trim() == "OK" || out.trim() == "NOKEY", "MIGRATE {keys:?}: {out}");
            moved += keys.len();
        }
    }

    /// Last step: `slot` belongs to `to`, told to both ends and then to every other master.
    pub fn finish_migration(&self, slot: u16, from: usize, to: usize) {
        let (slot_text, to_id) = (slot.to_string(), self.nodes[to].cluster_id());
        self.nodes[to].cli_ok(&["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id]);
        self.nodes[from].cli_ok(&["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id]);
        for (i, node) in self.nodes.iter().enumerate() {
            if i != from && i != to && node.is_running() && node.is_master() {
                node.cli_ok(&["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id]);
            }
        }
    }

    /// Waits until every running node sees `slot` served by master `to`.
    pub async fn wait_slot_owner(&self, slot: u16, to: usize) {
        let port = self.nodes[to].port;
        super::until(format_args!("every node sees slot {slot} on port {port}"), async || {
            self.nodes
                .iter()
                .filter(|n| n.is_running())
                .all(|n| n.cluster_view().is_some_and(|view| view.iter().any(|v| v.port == port && v.serves(slot))))
        })
        .await;
    }
}

/// The Redis Cluster hash slot of a key (CRC16/XMODEM of the key or of its `{hash tag}`, mod
/// 16,384), computed here so that a test can pick names on a chosen master without asking Redis
/// thousands of times.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    let mut crc: u16 = 0;
    for &byte in tagged.unwrap_or(bytes) {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16_384
}
