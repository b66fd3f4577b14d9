//! The outside attack's findings (hardening issue 14, and the bounds on collaborative state):
//! each test replays one attack over real sockets and checks Herald's answer.

use serde_json::json;

use crate::common::{Herald, Options};

/// A keyless node behind a same-host proxy: forwarding headers must not make anyone an admin,
/// and keyless admin is something an operator turns on, never the default.
#[tokio::test]
async fn proxy_headers_never_make_a_remote_client_an_admin() {
    let toml = "[server]\ntrusted_proxies = [\"127.0.0.0/8\", \"::1\"]\n[api]\nlocal_admin_without_key = true\n\
                [auth]\nmode = \"required\"\njwt_secret = \"hardening-test-secret-0123456789\"";
    let herald = Herald::start_with(Options { no_api_key: true, ..Options::toml(toml) }).await;
    herald.wait_for_log("DEVELOPMENT SETTING").await;
    let http = reqwest::Client::new();
    let forwarded = |method: reqwest::Method, path: &str| {
        http.request(method, herald.url(path)).header("X-Forwarded-For", "203.0.113.9")
    };
    for (method, path) in [
        (reqwest::Method::GET, "/api/connections"),
        (reqwest::Method::GET, "/api/rooms"),
        (reqwest::Method::GET, "/api/rooms/secret/messages"),
        (reqwest::Method::DELETE, "/api/connections/1"),
    ] {
        let status = forwarded(method.clone(), path).send().await.unwrap().status().as_u16();
        assert!(status == 403 || status == 401, "{method} {path} through the proxy answered {status}");
    }
    for path in ["/api/publish", "/api/shutdown"] {
        let response =
            forwarded(reqwest::Method::POST, path).json(&json!({"channel": "a", "event": {}})).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 403, "POST {path} through the proxy");
    }
    // Even a proxied request from the proxy's own (loopback) address, with no header at all, is
    // not local: the proxy speaks for someone else.
    let (status, _) = herald.post("/api/publish", json!({"channel": "a", "event": {}})).await;
    assert_eq!(status, 403, "a request from a trusted proxy is never keyless-local");

    // Without a proxy configured, the development setting lets a direct local caller in…
    let dev =
        Herald::start_with(Options { no_api_key: true, ..Options::toml("[api]\nlocal_admin_without_key = true") })
            .await;
    let (status, body) = dev.post("/api/publish", json!({"channel": "a", "event": {}})).await;
    assert_eq!(status, 200, "{body}");
    // …but not one that says it forwards for someone else.
    let status = reqwest::Client::new()
        .get(dev.url("/api/connections"))
        .header("X-Forwarded-For", "127.0.0.1")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 403);

    // And with neither a key nor the setting, admin is closed, even to loopback.
    let closed = Herald::start_with(Options { no_api_key: true, ..Default::default() }).await;
    let (status, body) = closed.post("/api/publish", json!({"channel": "a", "event": {}})).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("api.key"), "{body}");
    let (status, _) = closed.get("/api/connections").await;
    assert_eq!(status, 403);
}
