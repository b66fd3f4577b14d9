//! Side doors (issue 22): a self-asserted identity beside proven ones, issuer and audience claims
//! left out, a channel rule reached through the room of the same name, sensitive chat resting in
//! clear, unpaged admin listings.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::common::Herald;
use crate::common::redis::RedisServer;

const SECRET: &str = "side-doors-test-secret";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn token(claims: Value) -> String {
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn user(sub: &str, extra: Value) -> String {
    let mut claims = json!({"sub": sub, "exp": now() + 3600});
    if let (Some(map), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        map.extend(extra);
    }
    token(claims)
}

async fn get_with(herald: &Herald, path: &str, bearer: &str) -> (u16, Value) {
    let response = reqwest::Client::new().get(herald.url(path)).bearer_auth(bearer).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// 22.1: on a node that requires tokens, a public endpoint (`auth = "off"`) with
/// `?user_id=alice` must not become alice: no user events, no presence or status as alice.
#[tokio::test]
async fn a_claimed_user_id_never_meets_the_proven_one() {
    let herald = Herald::start(&format!(
        r#"
[auth]
mode = "required"
jwt_secret = "{SECRET}"
[access]
default = "allow"
[presence]
enabled = true
[[endpoints]]
path = "/public"
auth = "off"
"#
    ))
    .await;
    let mut alice = herald.connect(&format!("/ws?token={}", user("alice", json!({})))).await;
    let mut claimed = herald.connect("/ws/public?user_id=alice&channels=news").await;
    assert_eq!(claimed.welcome["user_id"], Value::Null, "{}", claimed.welcome);

    let (status, _) = herald.post("/api/users/alice/notify", json!({"type": "private", "secret": "s3"})).await;
    assert_eq!(status, 200);
    assert_eq!(alice.recv_event().await["type"], "private");
    // Anything addressed to alice would have been queued before this: the claimed connection's
    // next event is the broadcast.
    herald.publish(json!({"channel": "news", "event": {"type": "headline"}})).await;
    assert_eq!(claimed.recv_event().await["type"], "headline");

    let reply = claimed.request(json!({"type": "status_update", "status": "away"})).await;
    assert_eq!(reply["type"], "error", "a claimed id set alice's status: {reply}");
    assert_eq!(reply["code"], "AUTHENTICATION_FAILED");
    // Her stored notifications are neither replayed to it nor marked read by it.
    for request in
        [json!({"type": "subscribe_notifications"}), json!({"type": "notification_read", "notification_id": 1})]
    {
        let reply = claimed.request(request.clone()).await;
        assert_eq!(reply["code"], "AUTHENTICATION_FAILED", "{request} under a claimed id: {reply}");
    }
    alice.assert_alive().await;
}

/// 22.1 over REST, on a node whose default is `auth = "off"` with one endpoint that requires
/// tokens: `?user_id=alice` must not read alice's rooms, unread counts and last messages, nor
/// mark them read.
#[tokio::test]
async fn a_claimed_user_id_reads_nothing_of_the_proven_one_over_rest() {
    let db = tempfile::tempdir().unwrap();
    let herald = Herald::start(&format!(
        r#"
[auth]
mode = "off"
jwt_secret = "{SECRET}"
[access]
default = "allow"
[database]
url = "sqlite://{}/herald.db"
[[endpoints]]
path = "/secure"
auth = "required"
"#,
        db.path().display()
    ))
    .await;
    // Start-up says so, once.
    herald.wait_for_log("a user_id parameter names nobody").await;
    let mut alice = herald.connect(&format!("/ws/secure?token={}", user("alice", json!({})))).await;
    assert_eq!(alice.welcome["user_id"], "alice");
    assert_eq!(alice.request(json!({"type": "join_room", "room": "plans"})).await["type"], "room_joined");
    alice.send_json(json!({"type": "chat_message", "room": "plans", "id": "p1", "content": "merger on friday"})).await;
    loop {
        let reply = alice.recv_event().await;
        if reply["id"] == "p1" {
            assert_eq!(reply["type"], "chat_message_ack", "{reply}");
            break;
        }
    }
    let client = reqwest::Client::new();
    let response = client.get(herald.url("/ws/rooms?user_id=alice")).send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    assert!(!body.contains("merger"), "alice's last message under a claimed id: {body}");
    assert_eq!(status, 401, "{body}");
    let response = client
        .post(herald.url("/ws/rooms/plans/mark-read?user_id=alice"))
        .json(&json!({"up_to": 1_000_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

/// 22.2: with `auth.issuers` and `auth.audiences` set, a token without `iss` or `aud` is refused
/// on connect, on REST and by `refresh_token`.
#[tokio::test]
async fn configured_issuers_and_audiences_are_required() {
    let herald = Herald::start(&format!(
        r#"
[auth]
mode = "required"
jwt_secret = "{SECRET}"
issuers = ["https://idp.example"]
audiences = ["herald"]
[access]
default = "allow"
"#
    ))
    .await;
    let good = user("u1", json!({"iss": "https://idp.example", "aud": "herald"}));
    let no_iss = user("u1", json!({"aud": "herald"}));
    let no_aud = user("u1", json!({"iss": "https://idp.example"}));

    for (what, bad) in [("iss", &no_iss), ("aud", &no_aud)] {
        let mut refused = herald.connect_raw(&format!("/ws?token={bad}")).await;
        let error = refused.recv().await;
        assert_eq!(error["code"], "AUTHENTICATION_FAILED", "without {what}: {error}");
        assert_eq!(refused.expect_close().await.0, 1008);
        let (status, body) = get_with(&herald, "/ws/rooms/lobby/messages", bad).await;
        assert_eq!(status, 401, "REST without {what}: {body}");
    }
    let (status, body) = get_with(&herald, "/ws/rooms/lobby/messages", &good).await;
    assert_ne!(status, 401, "{body}");

    let mut client = herald.connect(&format!("/ws?token={good}")).await;
    for bad in [&no_iss, &no_aud] {
        let reply = client.request(json!({"type": "refresh_token", "token": bad})).await;
        assert_eq!(reply["code"], "AUTHENTICATION_FAILED", "{reply}");
    }
    let fresh = user("u1", json!({"iss": "https://idp.example", "aud": "herald", "exp": now() + 7200}));
    assert_eq!(client.request(json!({"type": "refresh_token", "token": fresh})).await["type"], "token_refreshed");
}

/// 22.3: a rule on channel `finance*` guards the room `finance` too: joining it, reading its
/// history and finding it in search, where `POST /messages` stores channel messages.
#[tokio::test]
async fn a_channel_rule_guards_the_room_of_the_same_name() {
    let db = tempfile::tempdir().unwrap();
    let herald = Herald::start(&format!(
        r#"
[auth]
mode = "required"
jwt_secret = "{SECRET}"
[access]
default = "allow"
[[access.rules]]
pattern = "finance*"
applies_to = ["channel"]
roles = ["finance"]
[database]
url = "sqlite://{}/herald.db"
[ingest]
# The searches below must find the message: answer once it is committed.
wait_for_commit = true
"#,
        db.path().display()
    ))
    .await;
    let clerk = user("clerk", json!({"roles": ["finance"]}));
    let stranger = user("stranger", json!({}));

    let (status, body) =
        herald.post("/messages", json!({"user_id": "cfo", "channel_id": "finance", "content": "q3 payroll"})).await;
    assert_eq!(status, 201, "{body}");

    let mut outsider = herald.connect(&format!("/ws?token={stranger}")).await;
    let channel = outsider.request(json!({"type": "subscribe", "channel": "finance"})).await;
    assert_eq!(channel["code"], "PERMISSION_DENIED", "{channel}");
    let room = outsider.request(json!({"type": "join_room", "room": "finance"})).await;
    assert_eq!(room["code"], "PERMISSION_DENIED", "the room of the same name: {room}");
    let (status, body) = get_with(&herald, "/ws/rooms/finance/messages", &stranger).await;
    assert_eq!(status, 403, "history: {body}");
    let (status, body) = get_with(&herald, "/ws/search?query=payroll", &stranger).await;
    assert_eq!((status, &body["count"]), (200, &json!(0)), "search: {body}");

    let mut member = herald.connect(&format!("/ws?token={clerk}")).await;
    assert_eq!(member.request(json!({"type": "join_room", "room": "finance"})).await["type"], "room_joined");
    let (status, body) = get_with(&herald, "/ws/rooms/finance/messages", &clerk).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = get_with(&herald, "/ws/search?query=payroll", &clerk).await;
    assert_eq!(body["count"], 1, "{body}");
}

/// 22.4 and 22.5: a sensitive room with `[[history]]` on Redis: the Redis stream keeps only the
/// sealed form, the database keeps the metadata sealed too, and both read back in clear for
/// those who may read.
#[tokio::test]
async fn sensitive_chat_rests_encrypted_in_redis_history_and_metadata() {
    let redis = RedisServer::start().await;
    let db = tempfile::tempdir().unwrap();
    let herald = Herald::start(&format!(
        r#"
[auth]
mode = "required"
jwt_secret = "{SECRET}"
[access]
default = "allow"
[redis]
url = "{redis}"
[[history]]
rooms = "vault_*"
size = 100
max_age = "10m"
[database]
url = "sqlite://{db}/herald.db"
encryption_key = "a passphrase for the vault"
sensitive_rooms = ["vault_*"]
"#,
        redis = redis.url(),
        db = db.path().display()
    ))
    .await;
    // Until its Redis subscriptions are live the node delivers locally and records nothing in
    // Redis (by design); this test is about what Redis records, so it starts once they are.
    crate::redis::wait_redis_connected(&herald, true).await;
    let alice = user("alice", json!({}));
    let mut client = herald.connect(&format!("/ws?token={alice}")).await;
    assert_eq!(client.request(json!({"type": "join_room", "room": "vault_1"})).await["type"], "room_joined");
    client
        .send_json(json!({"type": "chat_message", "room": "vault_1", "id": "m1", "content": "launch code 0451",
            "metadata": {"file": "https://files.example/secret-plan.pdf"}}))
        .await;
    loop {
        let reply = client.recv_event().await;
        if reply["id"] == "m1" {
            assert_eq!(reply["type"], "chat_message_ack", "{reply}");
            break;
        }
    }

    // Redis: every stream entry of the room is sealed.
    let keys = redis.cli(&["--scan", "--pattern", "*:h:*vault_1*"]).unwrap();
    let key = keys.lines().next().unwrap_or_else(|| panic!("no history stream in Redis: {keys:?}"));
    let entries = redis.cli(&["XRANGE", key, "-", "+"]).unwrap();
    // Both places are checked before failing, so a failure names every one that leaks.
    let mut leaks = Vec::new();
    if !entries.contains("sealed:") || ["launch code", "secret-plan"].iter().any(|s| entries.contains(s)) {
        leaks.push(format!("Redis stream history: {entries}"));
    }
    // SQLite: the metadata column too.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}/herald.db", db.path().display())).await.unwrap();
    let metadata: Vec<Option<String>> =
        sqlx::query_scalar("SELECT metadata FROM messages WHERE room = 'vault_1'").fetch_all(&pool).await.unwrap();
    assert_eq!(metadata.len(), 1);
    let stored = metadata[0].clone().unwrap_or_default();
    if !stored.starts_with("sealed:") || stored.contains("secret-plan") {
        leaks.push(format!("SQLite metadata column: {stored}"));
    }
    assert!(leaks.is_empty(), "sensitive data in clear:\n{}", leaks.join("\n"));

    // Read back in clear: stream history (resume) and the room's history.
    client.send_json(json!({"type": "history", "room": "vault_1", "limit": 5})).await;
    let history = client.recv_type("history").await;
    let events = history["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 1, "{history}");
    assert_eq!(events[0]["content"], "launch code 0451");
    let (status, page) = get_with(&herald, "/ws/rooms/vault_1/messages", &alice).await;
    assert_eq!(status, 200, "{page}");
    let message = &page["messages"][0];
    assert_eq!(message["content"], "launch code 0451", "{page}");
    assert_eq!(message["metadata"]["file"], "https://files.example/secret-plan.pdf", "{page}");
}

/// 22.7: every operator listing is paged (`limit`, `offset`, `total`, `next_offset`), with a
/// bounded default and maximum, as `/api/connections` is.
#[tokio::test]
async fn admin_listings_are_paged() {
    let herald = Herald::start("[access]\ndefault = \"allow\"\n[presence]\nenabled = true").await;
    let channels: Vec<String> = (0..25).map(|i| format!("feed-{i:02}")).collect();
    let mut client = herald.connect(&format!("/ws?channels={}", channels.join(","))).await;
    for i in 0..25 {
        let reply = client.request(json!({"type": "join_room", "room": format!("room-{i:02}")})).await;
        assert_eq!(reply["type"], "room_joined", "{reply}");
    }
    let _other = herald.connect("/ws").await;
    let _third = herald.connect("/ws").await;

    for (path, key) in [("/api/rooms", "rooms"), ("/api/channels", "channels")] {
        let (status, first) = herald.get(&format!("{path}?limit=10")).await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(first[key].as_array().map(Vec::len), Some(10), "{path}: {first}");
        assert_eq!((&first["count"], &first["total"], &first["next_offset"]), (&json!(10), &json!(25), &json!(10)));
        let (_, last) = herald.get(&format!("{path}?limit=10&offset=20")).await;
        assert_eq!(last[key].as_array().map(Vec::len), Some(5), "{path}: {last}");
        assert_eq!(last["next_offset"], Value::Null);
        let (_, huge) = herald.get(&format!("{path}?limit=1000000")).await;
        assert_eq!(huge["limit"], 10_000, "{path}: the page size is bounded: {huge}");
    }
    // A room's presence, with three users in it (each announced to the first).
    let mut first = herald.connect("/ws?user_id=u0").await;
    assert_eq!(first.request(json!({"type": "join_room", "room": "crowd"})).await["type"], "room_joined");
    let mut others = Vec::new();
    for i in 1..3 {
        let mut other = herald.connect(&format!("/ws?user_id=u{i}")).await;
        assert_eq!(other.request(json!({"type": "join_room", "room": "crowd"})).await["type"], "room_joined");
        assert_eq!(first.recv_type("user_joined").await["user_id"], format!("u{i}"));
        others.push(other);
    }
    let (_, presence) = herald.get("/api/rooms/crowd/presence?limit=2").await;
    assert_eq!(presence["users"].as_array().map(Vec::len), Some(2), "{presence}");
    assert_eq!((&presence["total_users"], &presence["next_offset"]), (&json!(3), &json!(2)), "{presence}");
    let (_, page) = herald.get("/api/connections?limit=2").await;
    assert_eq!(page["connections"].as_array().map(Vec::len), Some(2), "{page}");
    assert_eq!((&page["total"], &page["next_offset"]), (&json!(6), &json!(2)), "{page}");
    let (_, rest) = herald.get("/api/connections?limit=2&offset=4").await;
    assert_eq!(rest["connections"].as_array().map(Vec::len), Some(2), "{rest}");
    assert_eq!(rest["next_offset"], Value::Null, "{rest}");
}
