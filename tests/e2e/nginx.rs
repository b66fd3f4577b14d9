//! The nginx example in front of three nodes: clients spread over nodes, events reach them all.

use std::collections::HashSet;

use serde_json::json;

use crate::common::nginx::{self, Nginx};
use crate::common::redis::{RedisServer, free_port};
use crate::common::{Herald, WAIT};

/// Runs `examples/nginx.conf` with its ports pointed at the test nodes.
fn start_nginx(listen: u16, upstreams: &[u16]) -> Nginx {
    let example = std::fs::read_to_string(format!("{}/examples/nginx.conf", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut conf = example.replace("listen 127.0.0.1:8000;", &format!("listen 127.0.0.1:{listen};"));
    for (default, port) in [8001, 8002, 8003].iter().zip(upstreams) {
        conf = conf.replace(&format!("server 127.0.0.1:{default};"), &format!("server 127.0.0.1:{port};"));
    }
    conf = conf.replace("worker_processes auto;", "worker_processes 1;");
    nginx::start(conf)
}

#[tokio::test]
async fn three_nodes_behind_nginx() {
    let redis = RedisServer::start().await;
    let config = format!("[redis]\nurl = \"{}\"", redis.url());
    let nodes = [Herald::start(&config).await, Herald::start(&config).await, Herald::start(&config).await];
    let ports: Vec<u16> = nodes.iter().map(|n| n.addr.port()).collect();
    let listen = free_port();
    let _nginx = start_nginx(listen, &ports);
    let front = format!("127.0.0.1:{listen}");

    // Wait for nginx and every node's Redis link.
    let http = reqwest::Client::new();
    let ready = tokio::time::timeout(WAIT, async {
        loop {
            let health = http.get(format!("http://{front}/health")).send().await;
            let mut all_connected = true;
            for node in &nodes {
                let (_, h) = node.get("/health").await;
                all_connected &= h["data"]["broker"]["connected"] == true;
            }
            if health.is_ok_and(|r| r.status() == 200) && all_connected {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(ready.is_ok(), "nginx or the nodes never became ready");

    let mut clients = Vec::new();
    let mut seen_nodes = HashSet::new();
    for i in 0..6 {
        let url = format!("ws://{front}/ws?channels=jobs&client_id=c{i}");
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("connect through nginx");
        let welcome = next_json(&mut ws).await;
        seen_nodes.insert(welcome["node"].as_str().unwrap().to_string());
        clients.push(ws);
    }
    assert!(seen_nodes.len() >= 2, "least_conn should spread 6 clients over the nodes: {seen_nodes:?}");

    let response = http
        .post(format!("http://{front}/api/publish"))
        .bearer_auth(crate::common::API_KEY)
        .json(&json!({"channel": "jobs", "event": {"type": "job_update", "job_id": "j1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for ws in &mut clients {
        assert_eq!(next_json(ws).await["job_id"], "j1");
    }
}

async fn next_json(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> serde_json::Value {
    use futures_util::StreamExt;
    loop {
        let message = tokio::time::timeout(WAIT, ws.next()).await.expect("message in time").expect("open").expect("ok");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            if value["type"] != "heartbeat" {
                return value;
            }
        }
    }
}
