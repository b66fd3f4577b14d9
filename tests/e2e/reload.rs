//! SIGHUP reloads of the real binary: the file is rewritten, the process signalled, and each
//! change observed from outside (limits, keys, the API key, access rules), as well as a broken
//! file and a key that needs a restart leaving everything as it was.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::common::raw::RawClient;
use crate::common::{Herald, Options};

fn token(secret: &str, sub: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": exp}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// GET with a given key (or none); returns the status.
async fn admin_status(herald: &Herald, key: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new().get(herald.url("/api/connections"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.expect("GET").status().as_u16()
}

/// Sends one `subscribe` and returns the reply (`subscribed` or an error).
async fn subscribe(client: &mut crate::common::Client, channel: &str) -> Value {
    client.request(json!({"type": "subscribe", "channels": [channel]})).await
}

#[tokio::test]
async fn reloaded_limits_apply_to_the_next_check() {
    let herald = Herald::start("").await;
    let mut first = herald.connect("/ws").await;
    for i in 0..3 {
        assert_eq!(subscribe(&mut first, &format!("c{i}")).await["type"], "subscribed");
    }

    let answer = herald
        .reload("[limits]\nmax_connections = 1\nmax_channels_per_connection = 3\nmessages_per_minute = 1000\n")
        .await;
    assert!(answer.contains("configuration reloaded"), "{answer}");
    assert!(answer.contains("limits.max_connections"), "{answer}");

    // The node cap refuses the next connection; the one already here keeps its place...
    match tokio_tungstenite::connect_async(herald.ws_url("/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected 503 Too many connections, got {:?}", other.map(|_| ())),
    }
    first.assert_alive().await;
    // ...and the lowered channel cap refuses its next subscription, leaving the three it holds.
    let reply = subscribe(&mut first, "c3").await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "LIMIT_EXCEEDED", "{reply}");
}

#[tokio::test]
async fn a_removed_token_key_is_refused_and_the_new_one_accepted() {
    let (old, new) = ("the-first-secret-of-enough-length", "the-second-secret-of-enough-length");
    let config = |secret: &str| format!("[auth]\nmode = \"required\"\njwt_secret = \"{secret}\"\n");
    let herald = Herald::start(&config(old)).await;
    let kept = herald.connect(&format!("/ws?token={}", token(old, "alice"))).await;
    assert_eq!(kept.welcome["user_id"], "alice");

    let answer = herald.reload(&config(new)).await;
    assert!(answer.contains("auth.jwt_secret"), "{answer}");
    let mut raw = RawClient::connect(herald.addr, &format!("/ws?token={}", token(old, "alice"))).await;
    let refusal = raw.next_json().await;
    assert_eq!(refusal["code"], "AUTHENTICATION_FAILED", "{refusal}");
    let fresh = herald.connect(&format!("/ws?token={}", token(new, "bob"))).await;
    assert_eq!(fresh.welcome["user_id"], "bob");
    // The secret is never logged.
    assert!(!answer.contains(new) && !answer.contains(old), "{answer}");
}

#[tokio::test]
async fn a_new_api_key_is_accepted_and_the_old_refused() {
    let mut options = Options::toml("[api]\nkey = \"first-api-key\"\n");
    options.no_api_key = true;
    let herald = Herald::start_with(options).await;
    assert_eq!(admin_status(&herald, Some("first-api-key")).await, 200);

    herald.reload("[api]\nkey = \"second-api-key\"\n").await;
    assert_eq!(admin_status(&herald, Some("first-api-key")).await, 401);
    assert_eq!(admin_status(&herald, Some("second-api-key")).await, 200);
}

/// Access rules are checked again for the subscriptions a connection already holds: one that
/// became forbidden is left (`unsubscribed` with `revoked`), and the next attempt is refused.
#[tokio::test]
async fn reloaded_access_rules_revoke_what_they_now_forbid() {
    let herald = Herald::start("").await;
    let mut client = herald.connect("/ws").await;
    assert_eq!(subscribe(&mut client, "secret-plans").await["type"], "subscribed");
    assert_eq!(subscribe(&mut client, "news").await["type"], "subscribed");

    herald.reload("[[access.rules]]\npattern = \"secret-*\"\ndeny = true\n").await;
    let revoked = client.recv_type("unsubscribed").await;
    assert_eq!(revoked["channels"], json!(["secret-plans"]), "{revoked}");
    assert_eq!(revoked["revoked"], true, "{revoked}");
    let again = subscribe(&mut client, "secret-plans").await;
    assert_eq!(again["code"], "PERMISSION_DENIED", "{again}");
    // Events on the channel it still holds keep coming.
    herald.publish(json!({"channel": "news", "event": {"type": "still-here"}})).await;
    assert_eq!(client.recv_event().await["type"], "still-here");
}

#[tokio::test]
async fn a_broken_file_changes_nothing_and_restart_keys_are_named() {
    let mut options = Options::toml("[api]\nkey = \"first-api-key\"\n");
    options.no_api_key = true;
    let herald = Herald::start_with(options).await;

    // Invalid: refused with the reason; the old key stays in force, the new one is not.
    let answer = herald.reload("[api]\nkey = \"second-api-key\"\n[limits]\nmax_connections = \"many\"\n").await;
    assert!(answer.contains("configuration reload refused"), "{answer}");
    assert!(answer.contains("limits.max_connections"), "{answer}");
    assert_eq!(admin_status(&herald, Some("first-api-key")).await, 200);
    assert_eq!(admin_status(&herald, Some("second-api-key")).await, 401);

    // A key that needs a restart beside a live one: the live one applies, the other is named
    // in the log and keeps its value.
    let answer = herald.reload("[api]\nkey = \"second-api-key\"\n[server]\nshards = 7\n").await;
    assert!(answer.contains("configuration reloaded"), "{answer}");
    herald.wait_for_log("need a restart").await;
    let log = herald.log.lock().clone();
    assert!(log.lines().any(|l| l.contains("need a restart") && l.contains("server.shards")), "{log}");
    assert_eq!(admin_status(&herald, Some("second-api-key")).await, 200);
    let response = reqwest::Client::new()
        .get(herald.url("/api/stats/detailed"))
        .bearer_auth("second-api-key")
        .send()
        .await
        .expect("GET");
    let detailed: Value = response.json().await.expect("JSON");
    assert_ne!(detailed["shards"].as_array().map(Vec::len), Some(7), "{detailed}");
}
