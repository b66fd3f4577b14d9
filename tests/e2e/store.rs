//! Chat and history: the same scenarios on SQLite and on a real PostgreSQL server.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::common::postgres::Postgres;
use crate::common::{Client, Herald, Options, WAIT};

const SECRET: &str = "store-test-secret-value";

/// Which database a scenario runs on.
pub enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(Postgres),
}

impl Db {
    async fn new(postgres: bool) -> Db {
        if postgres { Db::Postgres(Postgres::start().await) } else { Db::Sqlite(tempfile::tempdir().unwrap()) }
    }

    fn url(&self) -> String {
        match self {
            Db::Sqlite(dir) => format!("sqlite://{}/herald.db", dir.path().display()),
            Db::Postgres(pg) => pg.url(),
        }
    }

    /// Reads raw rows with sqlx, bypassing Herald: `(id, content, encrypted, key_id)`.
    async fn raw_rows(&self, room: &str) -> Vec<(i64, Option<String>, Option<Vec<u8>>, Option<String>)> {
        match self {
            Db::Sqlite(_) => {
                let pool = sqlx::SqlitePool::connect(&self.url()).await.unwrap();
                sqlx::query_as("SELECT id, content, encrypted, key_id FROM messages WHERE room = ? ORDER BY id")
                    .bind(room)
                    .fetch_all(&pool)
                    .await
                    .unwrap()
            }
            Db::Postgres(_) => {
                let pool = sqlx::PgPool::connect(&self.url()).await.unwrap();
                sqlx::query_as("SELECT id, content, encrypted, key_id FROM messages WHERE room = $1 ORDER BY id")
                    .bind(room)
                    .fetch_all(&pool)
                    .await
                    .unwrap()
            }
        }
    }

    /// The raw `metadata` column of a room's first message.
    async fn raw_metadata(&self, room: &str) -> String {
        let query = "SELECT metadata FROM messages WHERE room = $1 ORDER BY id LIMIT 1";
        let value: Option<String> = match self {
            Db::Sqlite(_) => {
                let pool = sqlx::SqlitePool::connect(&self.url()).await.unwrap();
                sqlx::query_scalar(query).bind(room).fetch_one(&pool).await.unwrap()
            }
            Db::Postgres(_) => {
                let pool = sqlx::PgPool::connect(&self.url()).await.unwrap();
                sqlx::query_scalar(query).bind(room).fetch_one(&pool).await.unwrap()
            }
        };
        value.unwrap_or_default()
    }

    async fn archived(&self) -> i64 {
        match self {
            Db::Sqlite(_) => {
                let pool = sqlx::SqlitePool::connect(&self.url()).await.unwrap();
                sqlx::query_scalar("SELECT COUNT(*) FROM messages_archive").fetch_one(&pool).await.unwrap()
            }
            Db::Postgres(_) => {
                let pool = sqlx::PgPool::connect(&self.url()).await.unwrap();
                sqlx::query_scalar("SELECT COUNT(*) FROM messages_archive").fetch_one(&pool).await.unwrap()
            }
        }
    }
}

fn config(db: &Db, extra: &str) -> String {
    format!(
        r#"
[auth]
mode = "required"
jwt_secret = "{SECRET}"

[limits]
messages_per_minute = 0
messages_per_hour = 0

[access]
default = "allow"

[[access.rules]]
pattern = "private_{{id}}"
claims = [{{ claim = "private", contains = "{{id}}" }}]

[database]
url = "{url}"
encryption_keys = {{ k1 = "first passphrase for tests" }}
sensitive_rooms = ["vault_*"]
sensitive_patterns = ['\b(?:\d[ -]?){{13,16}}\b']
max_content_size = 2000
{extra}
"#,
        url = db.url()
    )
}

fn token(user: &str, extra: Value) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    let mut claims = json!({"sub": user, "name": format!("User {user}"), "exp": exp});
    if let (Some(map), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        map.extend(extra);
    }
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

async fn user(herald: &Herald, name: &str) -> Client {
    herald.connect(&format!("/ws?token={}", token(name, json!({})))).await
}

async fn get_as(herald: &Herald, path: &str, user: &str) -> (u16, Value) {
    let response =
        reqwest::Client::new().get(herald.url(path)).bearer_auth(token(user, json!({}))).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

async fn post_as(herald: &Herald, path: &str, user: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(herald.url(path))
        .bearer_auth(token(user, json!({})))
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// Sends a chat message and returns its acknowledgement (skipping the room's own delivery).
async fn say(client: &mut Client, room: &str, content: &str, extra: Value) -> Value {
    let id = format!("m-{content}");
    let mut message = json!({"type": "chat_message", "room": room, "content": content, "id": id});
    if let (Some(map), Value::Object(extra)) = (message.as_object_mut(), extra) {
        map.extend(extra);
    }
    client.send_json(message).await;
    loop {
        let reply = client.recv_event().await;
        if reply["id"] == id {
            return reply;
        }
    }
}

/// Posts a message as a backend and returns its id.
async fn post(herald: &Herald, room: &str, content: &str) -> i64 {
    let (status, reply) = herald
        .post(
            &format!("/api/rooms/{room}/messages"),
            json!({"content": content, "message_type": "text", "user_id": "backend"}),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    reply["message"]["id"].as_i64().unwrap()
}

macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test]
                async fn sqlite() {
                    super::$scenario(super::Db::new(false).await).await;
                }
                #[tokio::test]
                async fn postgres() {
                    super::$scenario(super::Db::new(true).await).await;
                }
            }
        )*
    };
}

on_both!(
    chat_is_stored_delivered_and_acknowledged,
    refused_chat_writes_nothing,
    history_pages_by_offset_and_cursor,
    my_rooms_unread_counts_and_read_receipts,
    search_ranks_and_filters_by_access,
    sensitive_content_is_encrypted_at_rest,
    acknowledged_messages_survive_kill_9,
    ingestion_api_under_load_and_the_stats_stream,
    retention_deletes_or_archives,
    shutdown_drains_the_write_queue,
    hostile_content_is_stored_and_returned_verbatim,
);

/// SQL-like and script-like text, quotes, NULs, control characters and far Unicode: stored,
/// delivered, paged and searched exactly as sent, never interpreted.
async fn hostile_content_is_stored_and_returned_verbatim(db: Db) {
    let herald = Herald::start(&config(&db, "")).await;
    let mut alice = user(&herald, "alice").await;
    let mut bob = user(&herald, "bob").await;
    let room = "room_'; DROP TABLE messages; --";
    for client in [&mut alice, &mut bob] {
        assert_eq!(client.request(json!({"type": "join_room", "room": room})).await["type"], "room_joined");
    }
    let contents = [
        "'; DROP TABLE messages; --",
        "\" OR 1=1 -- hostile",
        "1); DELETE FROM messages WHERE (1=1",
        "<script>alert('hostile')</script>",
        "<img src=x onerror=alert(1)>",
        "{{7*7}} ${7*7} %s %n %x",
        "hostile \u{7} bell and \u{1b}[31m escape",
        "emoji 🚀 RTL \u{202e}txet and combining e\u{301}",
        "back\\slash and \"quotes\" and 'apostrophes'",
    ];
    let mut ids = Vec::new();
    for content in contents {
        let ack = say(&mut alice, room, content, json!({})).await;
        assert_eq!(ack["type"], "chat_message_ack", "{content:?}: {ack}");
        ids.push(ack["message_id"].as_i64().unwrap());
        let seen = bob.recv_event().await;
        assert_eq!(seen["content"], content, "delivered as sent");
    }
    // NUL cannot be stored (PostgreSQL refuses it in text): refused clearly on both backends.
    let nul = say(&mut alice, room, "nul \u{0} inside", json!({})).await;
    assert_eq!(nul["code"], "INVALID_MESSAGE", "{nul}");
    let encoded: String = room
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    let (status, page) = get_as(&herald, &format!("/ws/rooms/{encoded}/messages?limit=50"), "alice").await;
    assert_eq!(status, 200, "{page}");
    let stored: Vec<&str> =
        page["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    for content in contents {
        assert!(stored.contains(&content), "{content:?} missing from {stored:?}");
    }
    let (status, found) = get_as(&herald, "/ws/search?query=DROP", "alice").await;
    assert_eq!(status, 200, "{found}");
    assert!(
        found["results"].as_array().is_some_and(|r| !r.is_empty())
            || found["messages"].as_array().is_some_and(|r| !r.is_empty()),
        "{found}"
    );
    // The table is still there and still takes writes.
    assert_eq!(say(&mut alice, room, "still here", json!({})).await["type"], "chat_message_ack");
    assert_eq!(db.raw_rows(room).await.len(), contents.len() + 1);
}

async fn chat_is_stored_delivered_and_acknowledged(db: Db) {
    let herald = Herald::start(&config(&db, "")).await;
    let mut alice = user(&herald, "alice").await;
    let mut bob = user(&herald, "bob").await;
    for client in [&mut alice, &mut bob] {
        assert_eq!(client.request(json!({"type": "join_room", "room": "order_1"})).await["type"], "room_joined");
    }
    let ack = say(&mut alice, "order_1", "Hello, how is the order progressing?", json!({})).await;
    assert_eq!(ack["type"], "chat_message_ack", "{ack}");
    let id = ack["message_id"].as_i64().expect("an id");
    let seen = bob.recv_event().await;
    assert_eq!(seen["type"], "chat_message");
    assert_eq!(seen["id"], id);
    assert_eq!(seen["content"], "Hello, how is the order progressing?");
    assert_eq!(seen["user_id"], "alice");
    assert_eq!(seen["username"], "User alice");
    assert_eq!(seen["message_type"], "text");
    assert!(seen["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    // A file message keeps its metadata.
    let ack = say(
        &mut bob,
        "order_1",
        "drawing.pdf",
        json!({"message_type": "file", "metadata": {"url": "https://files/x.pdf"}}),
    )
    .await;
    assert_eq!(ack["type"], "chat_message_ack");
    let (_, history) = get_as(&herald, "/ws/rooms/order_1/messages", "alice").await;
    assert_eq!(history["count"], 2);
    assert_eq!(history["messages"][1]["metadata"]["url"], "https://files/x.pdf");
}

async fn refused_chat_writes_nothing(db: Db) {
    let herald = Herald::start(&config(&db, "")).await;
    let mut alice = user(&herald, "alice").await;
    let cases = [
        (json!({"type": "chat_message", "room": "private_9", "content": "hi", "id": 1}), "PERMISSION_DENIED"),
        (
            json!({"type": "chat_message", "room": "r", "content": "hi", "message_type": "video", "id": 2}),
            "INVALID_MESSAGE",
        ),
        (
            json!({"type": "chat_message", "room": "r", "content": "hi", "message_type": "system", "id": 3}),
            "PERMISSION_DENIED",
        ),
        (json!({"type": "chat_message", "room": "r", "content": "x".repeat(2001), "id": 4}), "MESSAGE_TOO_LARGE"),
        (json!({"type": "chat_message", "room": "r", "id": 5}), "INVALID_MESSAGE"),
        (json!({"type": "chat_message", "room": "r", "content": 7, "id": 6}), "INVALID_MESSAGE"),
        (json!({"type": "chat_message", "room": "r", "content": "hi", "metadata": [1], "id": 7}), "INVALID_MESSAGE"),
        (json!({"type": "chat_message", "content": "hi", "id": 8}), "INVALID_MESSAGE"),
    ];
    for (message, code) in cases {
        let reply = alice.request(message.clone()).await;
        assert_eq!(reply["code"], code, "{message} -> {reply}");
        assert_eq!(reply["id"], message["id"]);
    }
    for room in ["r", "private_9"] {
        let (_, history) = herald.get(&format!("/api/rooms/{room}/messages")).await;
        assert_eq!(history["count"], 0, "nothing half written in {room}");
    }
    // The connection still works.
    assert_eq!(say(&mut alice, "r", "fine", json!({})).await["type"], "chat_message_ack");
}

async fn history_pages_by_offset_and_cursor(db: Db) {
    let herald = Herald::start(&config(&db, "")).await;
    let mut ids = Vec::new();
    for i in 1..=30 {
        ids.push(post(&herald, "room_p", &format!("message {i}")).await);
    }
    let contents = |page: &Value| -> Vec<String> {
        page["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap().to_string()).collect()
    };
    let (status, newest) = get_as(&herald, "/ws/rooms/room_p/messages?limit=10", "alice").await;
    assert_eq!(status, 200);
    assert_eq!(contents(&newest), (21..=30).map(|i| format!("message {i}")).collect::<Vec<_>>());
    assert_eq!(newest["has_more"], true);
    let before = newest["next_before"].as_i64().unwrap();
    let (_, older) = get_as(&herald, &format!("/ws/rooms/room_p/messages?limit=10&before={before}"), "alice").await;
    assert_eq!(contents(&older), (11..=20).map(|i| format!("message {i}")).collect::<Vec<_>>());
    let (_, after) = get_as(&herald, &format!("/ws/rooms/room_p/messages?limit=3&after={}", ids[24]), "alice").await;
    assert_eq!(contents(&after), ["message 26", "message 27", "message 28"]);
    assert_eq!(after["has_more"], true);
    let (_, oldest) = get_as(&herald, "/ws/rooms/room_p/messages?limit=10&offset=25", "alice").await;
    assert_eq!(contents(&oldest), (1..=5).map(|i| format!("message {i}")).collect::<Vec<_>>());
    assert_eq!(oldest["has_more"], false);
    for bad in ["limit=0", "limit=501", "limit=ten", "offset=-1", "before=5&after=2", "offset=1&before=3", "before=0"] {
        let (status, reply) = get_as(&herald, &format!("/ws/rooms/room_p/messages?{bad}"), "alice").await;
        assert_eq!(status, 400, "{bad}: {reply}");
        assert_eq!(reply["code"], "INVALID_PAGINATION");
    }
    let (status, reply) = get_as(&herald, "/ws/rooms/private_3/messages", "alice").await;
    assert_eq!((status, reply["code"].clone()), (403, json!("PERMISSION_DENIED")));
    let response = reqwest::Client::new().get(herald.url("/ws/rooms/room_p/messages")).send().await.unwrap();
    assert_eq!(response.status(), 401, "history needs a token or the API key");
}

async fn my_rooms_unread_counts_and_read_receipts(db: Db) {
    let herald = Herald::start(&config(&db, "")).await;
    let mut alice = user(&herald, "alice").await;
    let mut bob = user(&herald, "bob").await;
    for client in [&mut alice, &mut bob] {
        client.request(json!({"type": "join_room", "room": "quote_5"})).await;
    }
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        ids.push(say(&mut bob, "quote_5", text, json!({})).await["message_id"].as_i64().unwrap());
    }
    for _ in 0..3 {
        alice.recv_type("chat_message").await;
    }
    let unread =
        |rooms: &Value| rooms["rooms"].as_array().unwrap().iter().find(|r| r["room"] == "quote_5").unwrap().clone();
    let (_, rooms) = get_as(&herald, "/ws/rooms", "alice").await;
    let room = unread(&rooms);
    assert_eq!(room["unread_count"], 3, "{rooms}");
    assert_eq!(room["last_message"]["content"], "three");
    let (_, bobs) = get_as(&herald, "/ws/rooms", "bob").await;
    assert_eq!(unread(&bobs)["unread_count"], 0, "one's own messages are not unread");

    let (status, marked) =
        post_as(&herald, "/ws/rooms/quote_5/mark-read", "alice", json!({"message_ids": [ids[0], 999_999]})).await;
    assert_eq!(status, 200, "{marked}");
    assert_eq!(marked["marked"], json!([ids[0]]), "ids outside the room are ignored");
    let receipt = bob.recv_type("read_receipt").await;
    assert_eq!(receipt["user_id"], "alice");
    assert_eq!(receipt["message_ids"], json!([ids[0]]));
    let (_, rooms) = get_as(&herald, "/ws/rooms", "alice").await;
    assert_eq!(unread(&rooms)["unread_count"], 2);

    // Alice is in the room too: her own receipts reach her before the reply.
    alice.send_json(json!({"type": "mark_read", "room": "quote_5", "up_to": ids[2], "id": "r"})).await;
    let reply = alice.recv_type("marked_read").await;
    assert_eq!(reply["id"], "r");
    assert_eq!(bob.recv_type("read_receipt").await["last_read_id"], ids[2]);
    let (_, rooms) = get_as(&herald, "/ws/rooms", "alice").await;
    assert_eq!(unread(&rooms)["unread_count"], 0);

    let (status, bad) = post_as(&herald, "/ws/rooms/quote_5/mark-read", "alice", json!({"message_ids": "all"})).await;
    assert_eq!((status, bad["code"].clone()), (400, json!("INVALID_MESSAGE")));
}

async fn search_ranks_and_filters_by_access(db: Db) {
    let herald = Herald::start(&config(&db, "")).await;
    post(&herald, "room_s", "invoice overdue, second invoice reminder invoice").await;
    post(&herald, "room_s", "the invoice was paid").await;
    post(&herald, "room_s", "shipping update").await;
    post(&herald, "private_9", "invoice for the secret project").await;
    post(&herald, "room_t", "another invoice elsewhere").await;
    let (status, found) = get_as(&herald, "/ws/search?query=invoice", "alice").await;
    assert_eq!(status, 200, "{found}");
    let rooms: Vec<&str> = found["results"].as_array().unwrap().iter().map(|r| r["room"].as_str().unwrap()).collect();
    assert!(!rooms.contains(&"private_9"), "a room the caller may not read never appears: {found}");
    assert_eq!(rooms.len(), 3);
    assert_eq!(found["results"][0]["content"], "invoice overdue, second invoice reminder invoice", "best match first");
    let (_, insider) = get(&herald, "/ws/search?query=secret", token("carol", json!({"private": ["9"]}))).await;
    assert_eq!(insider["count"], 1, "who may read the room finds it: {insider}");
    let (_, in_room) = get_as(&herald, "/ws/search?query=invoice&room_name=room_t", "alice").await;
    assert_eq!(in_room["count"], 1);
    let (_, phrase) = get_as(&herald, "/ws/search?query=%22was%20paid%22", "alice").await;
    assert_eq!(phrase["count"], 1);
    let (_, prefix) = get_as(&herald, "/ws/search?query=ship*", "alice").await;
    assert_eq!(prefix["count"], 1);
    for bad in ["%22open", "", "OR", "-only"] {
        let (status, reply) = get_as(&herald, &format!("/ws/search?query={bad}"), "alice").await;
        assert_eq!((status, reply["code"].clone()), (400, json!("INVALID_QUERY")), "{bad}: {reply}");
    }
    let (status, _) = get_as(&herald, "/ws/search?query=invoice&room_name=private_9", "alice").await;
    assert_eq!(status, 403);
}

async fn get(herald: &Herald, path: &str, bearer: String) -> (u16, Value) {
    let response = reqwest::Client::new().get(herald.url(path)).bearer_auth(bearer).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

async fn sensitive_content_is_encrypted_at_rest(db: Db) {
    let herald = Herald::start(&config(&db, "")).await;
    let mut alice = user(&herald, "alice").await;
    let mut bob = user(&herald, "bob").await;
    for room in ["room_e", "vault_1"] {
        for client in [&mut alice, &mut bob] {
            client.request(json!({"type": "join_room", "room": room})).await;
        }
    }
    let flagged = say(&mut alice, "room_e", "flagged margin figures", json!({"sensitive": true})).await;
    assert_eq!(flagged["type"], "chat_message_ack", "{flagged}");
    say(&mut alice, "vault_1", "vault combination", json!({"metadata": {"file": "https://files/vault-map.pdf"}})).await;
    say(&mut alice, "room_e", "card 4111 1111 1111 1111 please", json!({})).await;
    say(&mut alice, "room_e", "plain hello", json!({})).await;
    // Entitled readers get plaintext, live and from history.
    assert_eq!(bob.recv_type("chat_message").await["content"], "flagged margin figures");
    let (_, history) = get_as(&herald, "/ws/rooms/room_e/messages", "bob").await;
    let texts: Vec<(&str, bool)> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["content"].as_str().unwrap(), m["encrypted"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        texts,
        [("flagged margin figures", true), ("card 4111 1111 1111 1111 please", true), ("plain hello", false)]
    );
    // The database never holds the plaintext.
    for room in ["room_e", "vault_1"] {
        for (_, content, sealed, key) in db.raw_rows(room).await {
            if let Some(sealed) = sealed {
                assert!(content.is_none());
                assert_eq!(key.as_deref(), Some("k1"));
                for secret in [&b"margin"[..], b"4111", b"combination"] {
                    assert!(!sealed.windows(secret.len()).any(|w| w == secret), "ciphertext leaks plaintext");
                }
            } else {
                assert_eq!(content.as_deref(), Some("plain hello"));
            }
        }
    }
    // Nor the metadata of a sensitive message (issue 22.5), which readers still get in clear.
    let metadata = db.raw_metadata("vault_1").await;
    assert!(metadata.starts_with("sealed:k1:") && !metadata.contains("vault-map"), "metadata in clear: {metadata}");
    let (_, vault) = get_as(&herald, "/ws/rooms/vault_1/messages", "bob").await;
    assert_eq!(vault["messages"][0]["metadata"]["file"], "https://files/vault-map.pdf", "{vault}");
    // Encrypted messages are never found by search.
    let (_, found) = get_as(&herald, "/ws/search?query=margin", "alice").await;
    assert_eq!(found["count"], 0);

    // Rotation: a new active key, the old one kept for reading.
    drop((alice, bob));
    drop(herald);
    let rotated = config(&db, "").replace(
        "encryption_keys = { k1 = \"first passphrase for tests\" }",
        "encryption_keys = { k1 = \"first passphrase for tests\", k2 = \"second passphrase\" }\nencryption_key_id = \"k2\"",
    );
    let herald = Herald::start(&rotated).await;
    let mut alice = user(&herald, "alice").await;
    say(&mut alice, "vault_1", "after rotation", json!({})).await;
    let (_, vault) = get_as(&herald, "/ws/rooms/vault_1/messages", "alice").await;
    let texts: Vec<&str> =
        vault["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(texts, ["vault combination", "after rotation"]);
    let keys: Vec<Option<String>> = db.raw_rows("vault_1").await.into_iter().map(|r| r.3).collect();
    assert_eq!(keys, [Some("k1".to_string()), Some("k2".to_string())]);
}

async fn acknowledged_messages_survive_kill_9(db: Db) {
    let herald = Herald::start(&config(&db, "")).await;
    let mut acked = 0;
    let mut clients = Vec::new();
    for i in 0..4 {
        clients.push(user(&herald, &format!("writer{i}")).await);
    }
    // Send without waiting, then count the acknowledgements.
    for round in 0..50 {
        for client in clients.iter_mut() {
            client
                .send_json(
                    json!({"type": "chat_message", "room": "room_k", "content": format!("m{round}"), "id": round}),
                )
                .await;
        }
    }
    for client in clients.iter_mut() {
        let mut mine = 0;
        while mine < 50 {
            if client.recv_type("chat_message_ack").await["message_id"].is_i64() {
                mine += 1;
                acked += 1;
            }
        }
    }
    let mut herald = herald;
    assert_eq!(herald.signal_and_wait("KILL").await, None, "killed by a signal");
    let restarted = Herald::start(&config(&db, "")).await;
    let (_, history) = restarted.get("/api/rooms/room_k/messages?limit=500").await;
    assert_eq!(history["count"], acked, "every acknowledged message is there after kill -9");
}

async fn ingestion_api_under_load_and_the_stats_stream(db: Db) {
    // The dashboard document's worker: 50 rows or 2 seconds.
    // Waiting for the commit (ingest.wait_for_commit) is what answers with the ids.
    let herald = Herald::start_with(
        Options::toml(&config(&db, "batch_linger = \"2s\""))
            .env("HERALD_AUTH__MODE", "off")
            .env("HERALD_INGEST__WAIT_FOR_COMMIT", "true"),
    )
    .await;
    let mut subscriber = herald.connect_raw("/ws?channels=1").await;
    subscriber.recv().await;
    let mut stream = herald.connect_raw("/ws/stats").await;
    let http = reqwest::Client::new();
    let mut requests = Vec::new();
    for batch in 0..20 {
        let body: Vec<Value> = (0..50)
            .map(|i| json!({"user_id": batch * 50 + i, "channel_id": 1, "content": format!("Test {batch}-{i}")}))
            .collect();
        let request = http.post(herald.url("/messages")).bearer_auth(crate::common::API_KEY).json(&body).send();
        requests.push(tokio::spawn(request));
    }
    let mut ids = 0;
    for request in requests {
        let response = request.await.unwrap().unwrap();
        assert_eq!(response.status(), 201);
        ids += response.json::<Value>().await.unwrap()["ids"].as_array().unwrap().len();
    }
    assert_eq!(ids, 1000);
    // The single-message form, as the document's curl loop sends it.
    let response = http
        .post(herald.url("/messages"))
        .bearer_auth(crate::common::API_KEY)
        .json(&json!({"user_id": 7, "channel_id": 1, "content": "Test 7"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // Subscribers of the channel receive what was ingested.
    let first = subscriber.recv_event().await;
    assert_eq!(first["type"], "chat_message");
    let (_, recent) = herald.get("/messages?channel_id=1&limit=5").await;
    assert_eq!(recent["messages"][4]["content"], "Test 7");
    // The stats stream reports the writer's work in the dashboard's fields.
    let frame = tokio::time::timeout(WAIT, async {
        loop {
            let frame = stream.recv().await;
            if frame["total_messages"].as_u64() == Some(1001) {
                return frame;
            }
        }
    })
    .await
    .expect("the stats stream reaches the total");
    assert!(frame["total_batches"].as_u64().unwrap() >= 1);
    assert!(frame["avg_batch_size"].as_f64().unwrap() > 1.0, "rows are batched: {frame}");
    for field in ["current_rps", "messages_per_second", "queue_depth", "queue_length", "timestamp"] {
        assert!(!frame[field].is_null(), "{field} in {frame}");
    }
    let (status, bad) = herald.post("/messages", json!({"channel_id": 1})).await;
    assert_eq!((status, bad["code"].clone()), (400, json!("INVALID_JSON")));
}

async fn retention_deletes_or_archives(db: Db) {
    let herald = Herald::start(&config(&db, "retention_mode = \"archive\"")).await;
    for i in 0..3 {
        post(&herald, "room_old", &format!("old {i}")).await;
    }
    // "Older than 0 s" spares a message stamped in the very millisecond retention runs, so wait
    // until the clock has left the newest message's millisecond.
    let (_, listed) = herald.get("/api/rooms/room_old/messages").await;
    let newest = listed["messages"].as_array().unwrap().iter().filter_map(|m| m["created_at"].as_i64()).max().unwrap();
    tokio::time::timeout(WAIT, async {
        while std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 <= newest {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the clock moves on");
    let (status, reply) = herald.post("/api/retention/run?older_than=0s", json!({})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["removed"], 3);
    let (_, history) = herald.get("/api/rooms/room_old/messages").await;
    assert_eq!(history["count"], 0);
    assert_eq!(db.archived().await, 3);
    let (status, _) = herald.post("/api/retention/run?older_than=soon", json!({})).await;
    assert_eq!(status, 400);
}

async fn shutdown_drains_the_write_queue(db: Db) {
    // With a 10 s linger a lone message waits in the queue; SIGTERM must still write it.
    let toml = config(&db, "batch_linger = \"10s\"");
    let mut herald = Herald::start(&toml).await;
    let mut alice = user(&herald, "alice").await;
    alice.send_json(json!({"type": "chat_message", "room": "room_d", "content": "queued at shutdown"})).await;
    tokio::time::timeout(WAIT, async {
        while herald.get("/ws/stats").await.1["stats"]["database"]["queue_depth"].as_u64().unwrap_or(0) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .ok();
    herald.signal("TERM");
    assert_eq!(alice.expect_close().await.0, 1001);
    assert_eq!(herald.wait_exit().await, Some(0));
    let restarted = Herald::start(&toml).await;
    let (_, history) = restarted.get("/api/rooms/room_d/messages").await;
    assert_eq!(history["messages"][0]["content"], "queued at shutdown");
}

#[tokio::test]
async fn a_database_outage_fails_writes_fast_and_recovers() {
    let Db::Postgres(mut pg) = Db::new(true).await else { unreachable!() };
    let db = Db::Sqlite(tempfile::tempdir().unwrap());
    let toml = config(&db, "").replace(&db.url(), &pg.url());
    let herald = Herald::start(&toml).await;
    let mut alice = user(&herald, "alice").await;
    assert_eq!(say(&mut alice, "room_o", "before", json!({})).await["type"], "chat_message_ack");
    pg.stop_immediate();
    let failed = say(&mut alice, "room_o", "during", json!({})).await;
    assert_eq!(failed["code"], "UNAVAILABLE", "{failed}");
    let (_, health) = herald.get("/health").await;
    assert_eq!(health["data"]["health_status"], "degraded");
    assert_eq!(health["data"]["database"]["connected"], false);
    pg.start_again().await;
    tokio::time::timeout(WAIT, async {
        while herald.get("/health").await.1["data"]["database"]["connected"] != true {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the node notices the database is back");
    assert_eq!(say(&mut alice, "room_o", "after", json!({})).await["type"], "chat_message_ack");
    let (_, history) = herald.get("/api/rooms/room_o/messages").await;
    let texts: Vec<&str> =
        history["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(texts, ["before", "after"], "the refused message was not half written");
}
