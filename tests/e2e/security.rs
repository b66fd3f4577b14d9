//! Security: tokens, room access rules, rate and connection limits, origins, TLS, audit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::raw::RawClient;
use crate::common::{Herald, Options, WAIT, eventually, until};

const SECRET: &str = "document-001-test-secret";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn hs256(claims: Value) -> String {
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn rs256(claims: Value, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(String::from);
    let key = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rs256-private.pem")).unwrap()).unwrap();
    encode(&header, &claims, &key).unwrap()
}

fn es256(claims: Value) -> String {
    let key = EncodingKey::from_ec_pem(&std::fs::read(fixture("es256-private.pem")).unwrap()).unwrap();
    encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap()
}

fn user(sub: &str, extra: Value) -> Value {
    let mut claims = json!({"sub": sub, "exp": now() + 3600, "name": format!("User {sub}")});
    if let (Some(map), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        map.extend(extra);
    }
    claims
}

/// Document 001's manufacturing platform: `examples/manufacturing-chat.toml` as written, with the
/// secret in the environment as a deployment would set it, plus `env` overrides.
async fn manufacturing(env: &[(&str, &str)]) -> Herald {
    let example =
        std::fs::read_to_string(format!("{}/examples/manufacturing-chat.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    // Tests open many connections from one address; the per-address cap has its own test.
    let mut options =
        Options::toml(&example).env("JWT_SECRET_KEY", SECRET).env("HERALD_LIMITS__MAX_CONNECTIONS_PER_IP", "0");
    for (k, v) in env {
        options = options.env(k, v);
    }
    Herald::start_with(options).await
}

async fn expect_refused(herald: &Herald, path: &str) -> String {
    let mut raw = RawClient::connect(herald.addr, path).await;
    let error = raw.next_json().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "AUTHENTICATION_FAILED", "{error}");
    assert_eq!(raw.expect_close().await, 1008);
    error["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn tokens_are_accepted_from_query_header_and_subprotocol() {
    let herald = manufacturing(&[]).await;
    let token = hs256(user("7", json!({"roles": ["customer"], "email": "c@x.io"})));

    let client = herald.connect(&format!("/ws/connect?token={token}&client_type=web")).await;
    assert_eq!(client.welcome["type"], "connection_established");
    assert_eq!(client.welcome["user_id"], "7");
    assert_eq!(client.welcome["user"]["name"], "User 7");

    let mut request = herald.ws_url("/ws/connect").into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("header token");
    let welcome = next_text(&mut ws).await;
    assert_eq!(welcome["user_id"], "7");

    let mut request = herald.ws_url("/ws/connect").into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", format!("bearer, {token}").parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.expect("subprotocol token");
    assert_eq!(response.headers()["sec-websocket-protocol"], "bearer");
    assert_eq!(next_text(&mut ws).await["user_id"], "7");
}

#[tokio::test]
async fn bad_tokens_are_refused_with_authentication_failed_and_1008() {
    let herald = manufacturing(&[]).await;
    let expired = hs256(json!({"sub": "7", "exp": now() - 3600}));
    let wrong_key = encode(
        &Header::new(Algorithm::HS256),
        &user("7", json!({})),
        &EncodingKey::from_secret(b"not-the-secret-at-all"),
    )
    .unwrap();
    let alg_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiI3IiwiZXhwIjo5OTk5OTk5OTk5fQ.";
    assert!(expect_refused(&herald, &format!("/ws/connect?token={expired}")).await.contains("expired"));
    assert!(expect_refused(&herald, &format!("/ws/connect?token={wrong_key}")).await.contains("signature"));
    assert!(expect_refused(&herald, "/ws/connect?token=garbage").await.contains("malformed"));
    assert!(expect_refused(&herald, &format!("/ws/connect?token={alg_none}")).await.contains("malformed"));
    assert!(expect_refused(&herald, "/ws/connect").await.contains("required"));
    // A token signed for RS256 while only an HMAC secret is configured.
    let rsa = rs256(user("7", json!({})), None);
    assert!(expect_refused(&herald, &format!("/ws/connect?token={rsa}")).await.contains("no key"));
    herald.wait_for_log("authentication_failed").await;
    herald.wait_for_total("refused_connections", |n| n >= 6).await;
}

#[tokio::test]
async fn refusals_can_be_http_401_before_the_upgrade() {
    let herald = manufacturing(&[("HERALD_AUTH__REJECT", "http")]).await;
    let refused = RawClient::connect_with_headers(herald.addr, "/ws/connect?token=garbage", &[]).await.err().unwrap();
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(refused.contains("AUTHENTICATION_FAILED"), "{refused}");
}

#[tokio::test]
async fn rs256_with_a_pem_key_or_a_jwks_and_es256() {
    let toml = format!(
        "[auth]\nmode = \"required\"\njwks_file = \"{}\"\n[[endpoints]]\npath = \"/es\"\n",
        fixture("rs256.jwks.json")
    );
    let herald = Herald::start(&toml).await;
    let token = rs256(user("r1", json!({})), Some("test-rsa-1"));
    assert_eq!(herald.connect(&format!("/ws?token={token}")).await.welcome["user_id"], "r1");
    let unknown_kid = rs256(user("r1", json!({})), Some("other-key"));
    assert!(expect_refused(&herald, &format!("/ws?token={unknown_kid}")).await.contains("no key"));

    let pem =
        Herald::start(&format!("[auth]\nmode = \"required\"\npublic_key_file = \"{}\"", fixture("rs256-public.pem")))
            .await;
    let token = rs256(user("r2", json!({})), None);
    assert_eq!(pem.connect(&format!("/ws?token={token}")).await.welcome["user_id"], "r2");

    let ec =
        Herald::start(&format!("[auth]\nmode = \"required\"\npublic_key_file = \"{}\"", fixture("es256-public.pem")))
            .await;
    let token = es256(user("e1", json!({})));
    assert_eq!(ec.connect(&format!("/ws?token={token}")).await.welcome["user_id"], "e1");
    // An RS256 token against the EC key is refused.
    let wrong_family = rs256(user("e1", json!({})), None);
    assert!(expect_refused(&ec, &format!("/ws?token={wrong_family}")).await.contains("no key"));
}

async fn join(herald: &Herald, claims: Value, room: &str) -> Value {
    let token = hs256(claims);
    let mut client = herald.connect(&format!("/ws/connect?token={token}")).await;
    client.request(json!({"type": "join_room", "room": room, "id": "j"})).await
}

#[tokio::test]
async fn document_001_room_table_allowed_and_refused() {
    let herald = manufacturing(&[]).await;
    let customer = user("7", json!({"order_ids": [123], "quote_ids": [456], "ticket_ids": [42]}));
    let manufacturer = user("8", json!({"order_ids": [123], "roles": ["manufacturer"]}));
    let stranger = user("9", json!({}));
    let agent = user("50", json!({"roles": ["support"]}));
    let cases = [
        (customer.clone(), "order_123", true),
        (manufacturer.clone(), "order_123", true),
        (stranger.clone(), "order_123", false),
        (customer.clone(), "quote_456", true),
        (manufacturer.clone(), "quote_456", false),
        (customer.clone(), "user_7_8", true),
        (manufacturer.clone(), "user_7_8", true),
        (stranger.clone(), "user_7_8", false),
        (customer.clone(), "support_42", true),
        (agent.clone(), "support_42", true),
        (stranger.clone(), "support_42", false),
        (stranger.clone(), "channel_announcements", true),
        (stranger.clone(), "secret_room", false),
    ];
    for (claims, room, allowed) in cases {
        let reply = join(&herald, claims.clone(), room).await;
        let who = claims["sub"].clone();
        if allowed {
            assert_eq!(reply["type"], "room_joined", "user {who} should join {room}: {reply}");
        } else {
            assert_eq!(reply["code"], "PERMISSION_DENIED", "user {who} must not join {room}: {reply}");
            assert_eq!(reply["id"], "j");
        }
    }
    // Refusals are audited with the room; the last refusal's record names it.
    herald.wait_for_log("permission_denied").await;
    herald.wait_for_log("secret_room").await;
}

#[tokio::test]
async fn a_refused_room_delivers_nothing_and_presubscriptions_are_checked_too() {
    let herald = manufacturing(&[]).await;
    let token = hs256(user("9", json!({})));
    let mut stranger = herald.connect(&format!("/ws/connect?token={token}")).await;
    let refused = stranger.request(json!({"type": "join_room", "room": "order_123"})).await;
    assert_eq!(refused["code"], "PERMISSION_DENIED");
    herald.publish(json!({"room": "order_123", "event": {"type": "order_status_update", "secret": true}})).await;
    herald.publish(json!({"user_id": "9", "event": {"type": "marker"}})).await;
    assert_eq!(stranger.recv_event().await["type"], "marker", "the order event must not arrive first");

    // Channels named in the URL go through the same rules: the connection opens, the refused
    // channel is reported, the allowed one works.
    let mut raw =
        RawClient::connect(herald.addr, &format!("/ws/connect?token={token}&channels=secret_feed,channel_news")).await;
    let welcome = raw.next_json().await;
    assert_eq!(welcome["channels"], json!(["channel_news"]));
    let refused = raw.next_json().await;
    assert_eq!(refused["code"], "PERMISSION_DENIED", "{refused}");
}

#[tokio::test]
async fn a_backend_check_decides_and_is_cached() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().route(
        "/can-access",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let allow = body["user_id"] == "7" && body["room"] == "project_1";
                axum::Json(json!({ "allow": allow }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let toml = format!(
        "[auth]\nmode = \"required\"\njwt_secret = \"{SECRET}\"\n[access]\nbackend_url = \"http://{backend}/can-access\"\nbackend_cache_ttl = \"1h\"\n[[access.rules]]\npattern = \"project_{{id}}\"\nbackend = true\n"
    );
    let herald = Herald::start(&toml).await;
    let token = hs256(user("7", json!({})));
    let mut client = herald.connect(&format!("/ws?token={token}")).await;
    assert_eq!(client.request(json!({"type": "join_room", "room": "project_1"})).await["type"], "room_joined");
    assert_eq!(client.request(json!({"type": "join_room", "room": "project_2"})).await["code"], "PERMISSION_DENIED");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    client.request(json!({"type": "leave_room", "room": "project_1"})).await;
    assert_eq!(client.request(json!({"type": "join_room", "room": "project_1"})).await["type"], "room_joined");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the second decision comes from the cache");
}

#[tokio::test]
async fn a_flooder_is_limited_and_then_cut_while_a_polite_client_carries_on() {
    let toml = "[limits]\nmessages_per_minute = 10\nmessages_per_hour = 100\nblock_duration = \"1m\"\ndisconnect_after_refusals = 5";
    let herald = Herald::start(toml).await;
    let mut flooder = herald.connect("/ws").await;
    let mut polite = herald.connect("/ws").await;
    let mut limited = None;
    for i in 0..30 {
        let reply = flooder.request(json!({"type": "subscribe", "channels": [format!("c{i}")]})).await;
        if reply["code"] == "RATE_LIMIT_EXCEEDED" {
            limited = Some(reply);
            break;
        }
        assert_eq!(reply["type"], "subscribed");
    }
    let limited = limited.expect("the flood is limited");
    assert!(limited["retry_after"].as_u64().is_some_and(|s| s > 0 && s <= 60), "{limited}");
    // Persistent abuse ends the connection.
    for _ in 0..4 {
        flooder.send_json(json!({"type": "subscribe", "channels": ["more"]})).await;
    }
    assert_eq!(flooder.expect_close().await.0, 1008);
    // The polite client on the same node is unaffected.
    for i in 0..5 {
        assert_eq!(
            polite.request(json!({"type": "subscribe", "channels": [format!("p{i}")]})).await["type"],
            "subscribed"
        );
    }
    herald.wait_for_log("rate limit abuse").await;
}

#[tokio::test]
async fn pings_are_not_rate_limited() {
    let herald = Herald::start("[limits]\nmessages_per_minute = 3").await;
    let mut client = herald.connect("/ws").await;
    for _ in 0..20 {
        client.assert_alive().await;
    }
}

#[tokio::test]
async fn connections_per_address_and_per_user_are_capped() {
    let toml = format!(
        "[auth]\nmode = \"optional\"\njwt_secret = \"{SECRET}\"\n[limits]\nmax_connections_per_ip = 3\nmax_connections_per_user = 2"
    );
    let herald = Herald::start(&toml).await;
    let token = hs256(user("7", json!({})));
    let one = herald.connect(&format!("/ws?token={token}")).await;
    let _two = herald.connect(&format!("/ws?token={token}")).await;
    let third_tab =
        RawClient::connect_with_headers(herald.addr, &format!("/ws?token={token}"), &[]).await.err().unwrap();
    assert!(third_tab.starts_with("HTTP/1.1 429"), "{third_tab}");
    let _anonymous = herald.connect("/ws").await;
    let fourth = RawClient::connect_with_headers(herald.addr, "/ws", &[]).await.err().unwrap();
    assert!(fourth.starts_with("HTTP/1.1 429"), "{fourth}");
    assert!(fourth.contains("address"), "{fourth}");
    // Closing a connection frees its slot.
    drop(one);
    until("a freed slot can be used again", async || {
        RawClient::connect_with_headers(herald.addr, &format!("/ws?token={token}"), &[]).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn a_refused_origin_cannot_open_a_websocket() {
    let herald = Herald::start("[server]\nallowed_origins = [\"https://app.example.com\"]").await;
    let refused =
        RawClient::connect_with_headers(herald.addr, "/ws", &[("Origin", "https://evil.example")]).await.err().unwrap();
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(refused.contains("ORIGIN_NOT_ALLOWED"), "{refused}");
    assert!(
        RawClient::connect_with_headers(herald.addr, "/ws", &[("Origin", "https://app.example.com")]).await.is_ok()
    );
    // CORS preflight for the API names the allowed origin only.
    let response = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, herald.url("/api/stats"))
        .header("Origin", "https://app.example.com")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "https://app.example.com");
}

#[tokio::test]
async fn the_admin_api_honours_its_ip_allowlist() {
    let herald = Herald::start("[api]\nallowed_ips = [\"10.0.0.0/8\"]").await;
    let (status, body) = herald.post("/api/publish", json!({"channel": "a", "event": {}})).await;
    assert_eq!(status, 403, "{body}");
    let open = Herald::start("[api]\nallowed_ips = [\"127.0.0.0/8\", \"::1\"]").await;
    let (status, _) = open.post("/api/publish", json!({"channel": "a", "event": {}})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_expired_token_disconnects_with_4003() {
    let toml = format!(
        "[auth]\nmode = \"required\"\njwt_secret = \"{SECRET}\"\nleeway = 0\n[websocket]\nheartbeat_interval = \"100ms\"\nidle_timeout = \"30s\""
    );
    let herald = Herald::start(&toml).await;
    let token = hs256(json!({"sub": "7", "exp": now() + 2}));
    let mut client = herald.connect(&format!("/ws?token={token}")).await;
    let error = client.recv_type("error").await;
    assert_eq!(error["code"], "AUTHENTICATION_FAILED");
    assert_eq!(client.expect_close().await.0, 4003);
}

#[tokio::test]
async fn a_token_is_refreshed_before_it_expires() {
    let herald = manufacturing(&[("HERALD_WEBSOCKET__HEARTBEAT_INTERVAL", "200ms")]).await;
    let token = hs256(json!({"sub": "7", "exp": now() + 3}));
    let mut client = herald.connect(&format!("/ws/connect?token={token}")).await;
    let expiring = client.recv_type("token_expiring").await;
    assert!(expiring["expires_in"].as_u64().is_some());
    let other_user = hs256(user("8", json!({})));
    let refused = client.request(json!({"type": "refresh_token", "token": other_user})).await;
    assert_eq!(refused["code"], "AUTHENTICATION_FAILED");
    let fresh = hs256(user("7", json!({"roles": ["support"]})));
    let refreshed = client.request(json!({"type": "refresh_token", "token": fresh})).await;
    assert_eq!(refreshed["type"], "token_refreshed");
    // Past the old expiry (heartbeats are the clock) the connection is still open, and the new
    // claims apply: the support role opens support rooms.
    let old_expiry = now() + 4;
    while now() < old_expiry {
        client.recv_type("heartbeat").await;
    }
    assert_eq!(client.request(json!({"type": "join_room", "room": "support_1"})).await["type"], "room_joined");
}

#[tokio::test]
async fn tls_serves_wss_and_https() {
    let toml = format!("[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"", fixture("tls-cert.pem"), fixture("tls-key.pem"));
    let herald = Herald::start(&toml).await;
    herald.wait_for_log("scheme=\"https\"").await;

    // A TLS client trusting only the test certificate.
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in rustls_pki_certs(&fixture("tls-ca.pem")) {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(herald.addr).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let url = format!("wss://localhost:{}/ws?channels=secure", herald.addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls).await.expect("wss upgrade");
    assert_eq!(next_text(&mut ws).await["type"], "connection");
    ws.send(Message::text(json!({"type": "ping"}).to_string())).await.unwrap();
    assert_eq!(next_text(&mut ws).await["type"], "pong");

    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(fixture("tls-ca.pem")).unwrap()).unwrap())
        .build()
        .unwrap();
    let response = https
        .post(format!("https://localhost:{}/api/publish", herald.addr.port()))
        .bearer_auth(crate::common::API_KEY)
        .json(&json!({"channel": "secure", "event": {"type": "over-tls", "pad": "x".repeat(100_000)}}))
        .send()
        .await
        .expect("https publish");
    assert_eq!(response.status(), 200);
    let event = next_text(&mut ws).await;
    assert_eq!(event["type"], "over-tls");
    assert_eq!(event["pad"].as_str().unwrap().len(), 100_000, "a large event crosses TLS intact");
}

fn rustls_pki_certs(path: &str) -> Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    tokio_rustls::rustls::pki_types::CertificateDer::pem_file_iter(path).unwrap().map(Result::unwrap).collect()
}

async fn next_text<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let message = tokio::time::timeout(WAIT, ws.next()).await.expect("message in time").expect("open").expect("ok");
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] != "heartbeat" {
                return value;
            }
        }
    }
}

#[tokio::test]
async fn audit_records_go_to_their_own_file_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let herald = manufacturing(&[("HERALD_AUDIT__FILE", audit.to_str().unwrap())]).await;
    expect_refused(&herald, "/ws/connect?token=garbage").await;
    let line = eventually("an audit record", async || {
        std::fs::read_to_string(&audit).ok().and_then(|t| t.lines().next().map(String::from))
    })
    .await;
    let record: Value = serde_json::from_str(&line).expect("one JSON object per line");
    assert_eq!(record["fields"]["audit"], "authentication_failed", "{record}");
}

#[tokio::test]
async fn limits_are_counted_across_nodes_with_redis() {
    let redis = crate::common::redis::RedisServer::start().await;
    let toml = format!(
        "[auth]\nmode = \"required\"\njwt_secret = \"{SECRET}\"\n[redis]\nurl = \"{}\"\n[limits]\nmax_connections_per_user = 2\nmessages_per_minute = 6\nblock_duration = \"1m\"",
        redis.url()
    );
    let (a, b) = (Herald::start(&toml).await, Herald::start(&toml).await);
    for node in [&a, &b] {
        crate::redis::wait_redis_connected(node, true).await;
    }
    let token = hs256(user("7", json!({})));
    let mut on_a = a.connect(&format!("/ws?token={token}")).await;
    let mut on_b = b.connect(&format!("/ws?token={token}")).await;
    // The user's third connection is refused on either node.
    let third = RawClient::connect_with_headers(a.addr, &format!("/ws?token={token}"), &[]).await.err().unwrap();
    assert!(third.starts_with("HTTP/1.1 429"), "{third}");

    // The user's messages count together: six in all, whichever node they go through.
    let refused = crate::common::first_rate_limited(&mut on_a, &mut on_b).await;
    assert_eq!(refused, Some(6), "the seventh message of the user is the first refused");
    // The block is shared too: the other node refuses as well.
    let reply = on_a.request(json!({"type": "subscribe", "channels": ["after-block"]})).await;
    assert_eq!(reply["code"], "RATE_LIMIT_EXCEEDED");
}
