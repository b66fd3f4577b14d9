//! The OpenAPI document a node serves: it describes exactly the routes the node serves, it is
//! valid OpenAPI 3.1, and real responses match its schemas (`tests/docs/check_openapi.py`).

use serde_json::{Value, json};

use crate::common::Herald;

/// The Pusher suite's app, so that its request signer serves here too.
const PUSHER_KEY: &str = crate::pusher::KEY;

/// A node with every optional part of the HTTP surface on: two mounts, a dedicated endpoint, the
/// dashboard, a Pusher app.
fn config() -> String {
    format!(
        r#"
[server]
mounts = ["/ws", "/api/v1/ws"]

[[endpoints]]
path = "/campaigns"
rooms = ["campaign:{{campaign_id}}"]

[[pusher.apps]]
id = "77"
key = "{PUSHER_KEY}"
secret = "{}"
"#,
        crate::pusher::SECRET
    )
}

/// A concrete path for a documented one.
fn fill(template: &str) -> String {
    template
        .replace("{room}", "lobby")
        .replace("{user}", "u1")
        .replace("{id}", "nobody-1")
        .replace("{kind}", "channel")
        .replace("{name}", "news")
        .replace("{app_id}", "77")
        .replace("{channel}", "news")
        .replace("{key}", PUSHER_KEY)
}

fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "delete", "put", "patch"] {
            if item.get(method).is_some() {
                out.push((method.to_string(), path.clone()));
            }
        }
    }
    out
}

async fn document(herald: &Herald) -> Value {
    let (status, doc) = herald.get("/api/openapi.json").await;
    assert_eq!(status, 200, "{doc}");
    doc
}

fn python() -> String {
    std::env::var("HERALD_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs the checker on the document (and recorded responses); returns its report.
async fn check(herald: &Herald, doc: &Value, responses: Option<&Value>) -> String {
    let doc_path = herald.dir().join("openapi.json");
    std::fs::write(&doc_path, doc.to_string()).expect("write document");
    let mut command = tokio::process::Command::new(python());
    command.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/docs/check_openapi.py")).arg(&doc_path);
    if let Some(responses) = responses {
        let path = herald.dir().join("responses.json");
        std::fs::write(&path, responses.to_string()).expect("write responses");
        command.arg(path);
    }
    let output = command.output().await.expect("run tests/docs/check_openapi.py");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the checker refused (scripts/test installs tests/requirements.txt):\n{report}");
    report
}

/// Every operation in the document is served: asked without credentials, none falls through to
/// the router's fallback (`no route for …`) or gets 405. The other direction holds by
/// construction: `api::openapi::Routes` is the only way a route reaches the router, and it adds
/// the route's description with it. The configuration-dependent paths are there as this node
/// serves them.
#[tokio::test]
async fn every_documented_operation_is_served_and_mount_routes_are_documented() {
    let herald = Herald::start(&config()).await;
    let doc = document(&herald).await;
    let operations = operations(&doc);
    let http = reqwest::Client::new();
    for (method, path) in &operations {
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let response = http.request(method.clone(), herald.url(&fill(path))).send().await.expect("request");
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        assert_ne!(status, 405, "{method} {path} is documented but not served: {body}");
        assert!(!body.contains("no route for"), "{method} {path} is documented but not served: {body}");
    }
    let paths = doc["paths"].as_object().expect("paths");
    for served in [
        "/ws/connection-stats",
        "/api/v1/ws/connection-stats",
        "/ws/rooms/{room}/mark-read",
        "/api/v1/ws/rooms/{room}/broadcast",
        "/ws/history/{kind}/{name}",
        "/ws/stats",
        "/ws",
        "/ws/campaigns",
        "/api/v1/ws/campaigns",
        "/app/{key}",
        "/apps/{app_id}/events",
        "/apps/{app_id}/channels/{channel}/users",
        "/",
        "/console",
        "/api/openapi.json",
    ] {
        assert!(paths.contains_key(served), "{served} is served but not in the document");
    }
    assert!(!paths.contains_key("/api/rooms/{room}/mark-read"), "mark-read is served under mounts only");
    assert!(operations.len() >= 75, "only {} operations", operations.len());
    let schemes = doc["components"]["securitySchemes"].as_object().expect("security schemes");
    for scheme in ["api_key", "x_api_key", "user_token", "pusher_signature"] {
        assert!(schemes.contains_key(scheme), "no {scheme} security scheme");
    }
}

/// The document is valid OpenAPI 3.1 according to openapi-spec-validator.
#[tokio::test]
async fn the_document_is_valid_openapi() {
    let herald = Herald::start(&config()).await;
    let doc = document(&herald).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let report = check(&herald, &doc, None).await;
    assert!(report.contains("valid OpenAPI 3.1.0"), "{report}");
}

/// Real answers of a node, successes and refusals, validate against the schemas the document
/// gives for their operation and status.
#[tokio::test]
async fn real_responses_match_the_documented_schemas() {
    let herald = Herald::start(&config()).await;
    let doc = document(&herald).await;
    let mut client = herald.connect("/ws?channels=news&user_id=u1").await;
    client.send_json(json!({"type": "join_room", "room": "lobby"})).await;
    herald.wait_for_total("room_memberships", |n| n == 1).await;
    let http = reqwest::Client::new();
    let key = crate::common::API_KEY;
    let calls: Vec<(&str, &str, Option<Value>, bool)> = vec![
        ("get", "/health", None, false),
        ("get", "/livez", None, false),
        ("get", "/readyz", None, false),
        ("get", "/api/health", None, false),
        ("get", "/ws/health", None, false),
        ("get", "/api/stats", None, false),
        ("get", "/ws/connection-stats", None, false),
        ("get", "/api/stats/detailed", None, true),
        ("get", "/api/connections", None, true),
        ("get", "/api/channels", None, true),
        ("get", "/api/rooms", None, true),
        ("get", "/ws/rooms", None, true),
        ("post", "/api/publish", Some(json!({"channel": "news", "event": {"type": "hello"}})), true),
        ("post", "/api/publish", Some(json!({"event": {"type": "hello"}})), true),
        ("post", "/api/publish", Some(json!({"channel": "news", "event": {}})), false),
        ("post", "/api/broadcast", Some(json!({"channels": ["news", "sport"], "event": {"type": "x"}})), true),
        ("post", "/api/rooms/{room}/broadcast", Some(json!({"type": "hello"})), true),
        ("post", "/api/users/{user}/notify", Some(json!({"type": "hello"})), true),
        ("post", "/api/rooms/{room}/messages", Some(json!({"content": "hello there", "user_id": 7})), true),
        ("get", "/api/rooms/{room}/messages", None, true),
        ("get", "/ws/rooms/{room}/messages", None, true),
        ("get", "/api/search", None, true),
        ("post", "/api/retention/run", None, true),
        ("get", "/api/users/{user}/presence", None, true),
        ("get", "/api/rooms/{room}/presence", None, true),
        ("post", "/api/broadcast/notification", Some(json!({"user_id": "u1", "title": "t"})), true),
        ("get", "/api/users/{user}/notifications", None, true),
        ("get", "/api/history/{kind}/{name}", None, true),
        ("delete", "/api/connections/{id}", None, true),
        ("get", "/messages", None, true),
        ("get", "/apps/{app_id}/channels", None, false),
    ];
    let mut recorded = Vec::new();
    // The Pusher HTTP API, signed as its SDKs sign.
    let pusher_body =
        json!({"name": "greeting", "channel": "news", "data": "{}", "info": "subscription_count"}).to_string();
    for (method, template, body) in [
        ("get", "/apps/{app_id}/channels", ""),
        ("get", "/apps/{app_id}/channels/{channel}", ""),
        ("get", "/apps/{app_id}/channels/{channel}/users", ""),
        ("post", "/apps/{app_id}/events", pusher_body.as_str()),
    ] {
        let path = fill(template).replace("news", if template.ends_with("/users") { "presence-news" } else { "news" });
        let url = crate::pusher::signed(
            &method.to_uppercase(),
            &path,
            body,
            crate::pusher::SECRET,
            crate::pusher::now(),
            &[],
        );
        let request = http
            .request(reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method"), herald.url(&url));
        let request = if body.is_empty() {
            request
        } else {
            request.header("content-type", "application/json").body(body.to_string())
        };
        let response = request.send().await.expect("pusher request");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        recorded.push(json!({"method": method, "path": template, "status": status, "body": body}));
    }
    for (method, path, body, with_key) in calls {
        let mut url = herald.url(&fill(path));
        if path == "/api/search" {
            url.push_str("?query=hello");
        }
        let mut request =
            http.request(reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method"), url);
        if with_key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        recorded.push(json!({"method": method, "path": path, "status": status, "body": body}));
    }
    let report = check(&herald, &doc, Some(&Value::Array(recorded))).await;
    // Successes and refusals were both among them.
    for expected in [
        "ok   post /api/rooms/{room}/messages 201",
        "ok   post /api/publish 400",
        "ok   get /api/stats 200",
        "ok   get /apps/{app_id}/channels 200",
        "ok   post /apps/{app_id}/events 200",
        "ok   get /apps/{app_id}/channels/{channel}/users 200",
    ] {
        assert!(report.contains(expected), "{expected} missing from:\n{report}");
    }
}
