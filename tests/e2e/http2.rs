//! The HTTP API over HTTP/2 with prior knowledge (h2c), beside HTTP/1.1 on the same port.

use std::collections::BTreeSet;

use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{API_KEY, Herald};

fn h2_client() -> reqwest::Client {
    reqwest::Client::builder().http2_prior_knowledge().build().expect("client")
}

async fn publish_h2(client: &reqwest::Client, herald: &Herald, body: Value) -> (reqwest::Version, u16, String) {
    let response =
        client.post(herald.url("/api/publish")).bearer_auth(API_KEY).json(&body).send().await.expect("HTTP/2 publish");
    let version = response.version();
    let status = response.status().as_u16();
    (version, status, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn concurrent_publishes_over_one_http2_connection_all_reach_the_subscriber() {
    let herald = Herald::start("").await;
    let mut subscriber = herald.connect("/ws?channels=news").await;
    let client = h2_client();
    let replies = join_all(
        (0..100)
            .map(|n| publish_h2(&client, &herald, json!({"channel": "news", "event": {"type": "headline", "n": n}}))),
    )
    .await;
    for (version, status, body) in &replies {
        assert_eq!(*version, reqwest::Version::HTTP_2);
        assert_eq!(*status, 200, "{body}");
    }
    let mut seen = BTreeSet::new();
    while seen.len() < 100 {
        let event = subscriber.recv_event().await;
        assert_eq!(event["type"], "headline", "{event}");
        assert!(seen.insert(event["n"].as_u64().expect("n")), "delivered twice: {event}");
    }
    assert_eq!(seen, (0..100).collect());
    // HTTP/1.1 on the same port is unchanged.
    herald.publish(json!({"channel": "news", "event": {"type": "headline", "n": 100}})).await;
    assert_eq!(subscriber.recv_event().await["n"], 100);
}

#[tokio::test]
async fn http2_requests_meet_the_same_checks_and_refusals() {
    let herald = Herald::start("").await;
    let client = h2_client();
    let anonymous = client.post(herald.url("/api/publish")).json(&json!({"channel": "news", "event": {}})).send().await;
    assert_eq!(anonymous.expect("reply").status().as_u16(), 401, "no API key, no publish");
    let huge = json!({"channel": "news", "event": {"type": "x", "blob": "x".repeat(8 * 1024 * 1024)}});
    let (version, status, body) = publish_h2(&client, &herald, huge).await;
    assert_eq!((version, status), (reqwest::Version::HTTP_2, 413), "{body}");
    // The refusal ends that stream, not the client's connection or the node.
    let (_, status, body) = publish_h2(&client, &herald, json!({"channel": "news", "event": {"type": "ok"}})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_preface_in_pieces_is_answered_and_a_broken_connection_harms_no_one() {
    let herald = Herald::start("").await;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // The preface in two writes, then an empty SETTINGS frame: the node answers with its own.
    let mut socket = tokio::net::TcpStream::connect(herald.addr).await.expect("connect");
    socket.set_nodelay(true).expect("nodelay");
    socket.write_all(&preface[..2]).await.expect("write");
    socket.flush().await.expect("flush");
    socket.write_all(&preface[2..]).await.expect("write");
    socket.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.expect("settings");
    let mut head = [0u8; 9];
    socket.read_exact(&mut head).await.expect("the node's first frame");
    assert_eq!(head[3], 4, "the node's first frame is SETTINGS: {head:?}");
    // Garbage where a frame belongs: the node closes this connection (a GOAWAY, then the end).
    socket.write_all(&[0xff; 64]).await.expect("garbage");
    let mut rest = Vec::new();
    let _ = socket.read_to_end(&mut rest).await;
    // Everyone else carries on, over both protocols.
    let (_, status, body) =
        publish_h2(&h2_client(), &herald, json!({"channel": "news", "event": {"type": "ok"}})).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = herald.get("/api/health").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn with_http2_off_only_http1_is_spoken() {
    let herald = Herald::start("[server]\nhttp2 = false\n").await;
    let refused = h2_client().get(herald.url("/api/health")).send().await;
    assert!(refused.is_err(), "an HTTP/2 preface is not answered as HTTP/2: {refused:?}");
    let (status, _) = herald.get("/api/health").await;
    assert_eq!(status, 200);
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn tls_toml(extra: &str) -> String {
    format!("[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{extra}", fixture("tls-cert.pem"), fixture("tls-key.pem"))
}

/// An HTTPS client trusting only the test CA; it offers `h2` and `http/1.1` by ALPN, as curl and
/// most HTTP libraries do.
fn https_client() -> reqwest::Client {
    let ca = std::fs::read(fixture("tls-ca.pem")).expect("test CA");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA certificate"))
        .build()
        .expect("client")
}

async fn publish_https(client: &reqwest::Client, herald: &Herald, body: Value) -> (reqwest::Version, u16) {
    let url = format!("https://localhost:{}/api/publish", herald.addr.port());
    let response = client.post(url).bearer_auth(API_KEY).json(&body).send().await.expect("HTTPS publish");
    (response.version(), response.status().as_u16())
}

/// A `wss://` client that offers only `http/1.1` by ALPN, as browsers do for a WebSocket.
async fn wss_subscriber(
    herald: &Herald,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(fixture("tls-ca.pem")).expect("test CA") {
        roots.add(cert.expect("CA certificate")).expect("trusted");
    }
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(herald.addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.expect("TLS");
    let url = format!("wss://localhost:{}{path}", herald.addr.port());
    tokio_tungstenite::client_async(url, tls).await.expect("wss upgrade").0
}

async fn next_event<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    loop {
        let message = tokio::time::timeout(crate::common::WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("a frame");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).expect("JSON");
            if value["type"] != "heartbeat" && value["type"] != "connection" {
                return value;
            }
        }
    }
}

#[tokio::test]
async fn tls_offers_http2_by_alpn_while_websockets_stay_on_http1() {
    let herald = Herald::start(&tls_toml("")).await;
    herald.wait_for_log("scheme=\"https\"").await;
    let mut subscriber = wss_subscriber(&herald, "/ws?channels=secure").await;
    let client = https_client();
    let replies =
        join_all((0..20).map(|n| publish_https(&client, &herald, json!({"channel": "secure", "event": {"n": n}}))))
            .await;
    for reply in &replies {
        assert_eq!(*reply, (reqwest::Version::HTTP_2, 200), "ALPN should have chosen h2");
    }
    let mut seen = BTreeSet::new();
    while seen.len() < 20 {
        let event = next_event(&mut subscriber).await;
        assert!(seen.insert(event["n"].as_u64().expect("n")), "delivered twice: {event}");
    }
    // A client that offers only HTTP/1.1 gets it.
    let http1 = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(fixture("tls-ca.pem")).expect("CA")).expect("CA"),
        )
        .http1_only()
        .build()
        .expect("client");
    assert_eq!(
        publish_https(&http1, &herald, json!({"channel": "secure", "event": {"n": 20}})).await,
        (reqwest::Version::HTTP_11, 200)
    );
    assert_eq!(next_event(&mut subscriber).await["n"], 20);
}

#[tokio::test]
async fn tls_without_http2_answers_http1_to_clients_that_offer_h2() {
    let herald = Herald::start(&tls_toml("[server]\nhttp2 = false\n")).await;
    herald.wait_for_log("scheme=\"https\"").await;
    let reply = publish_https(&https_client(), &herald, json!({"channel": "secure", "event": {}})).await;
    assert_eq!(reply, (reqwest::Version::HTTP_11, 200));
}
