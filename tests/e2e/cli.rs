//! The binary's command line and configuration sources.

use std::process::Command;

use crate::common::{Herald, Options, herald_bin};

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(herald_bin());
    command.args(args).env_remove("REDIS_URL").env_remove("DATABASE_URL");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().expect("run herald");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn help_documents_every_flag() {
    let (code, out, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    for flag in [
        "--config",
        "--listen",
        "--api-key",
        "--redis-url",
        "--database-url",
        "--shards",
        "--log-format",
        "--log-level",
        "--set",
        "--print-config",
        "--check-config",
    ] {
        assert!(out.contains(flag), "{flag} missing from --help:\n{out}");
    }
}

#[test]
fn the_default_is_embedded_on_loopback() {
    let (code, out, err) = run(&["--print-config"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("listen = \"127.0.0.1:8000\""), "{out}");
    assert!(!out.contains("redis://"), "{out}");
}

#[test]
fn a_bad_value_stops_startup_naming_the_key() {
    let (code, _, err) = run(&["--set", "websocket.max_message_size=big"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("websocket.max_message_size"), "{err}");

    let (code, _, err) = run(&["--listen", "not-an-address"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("server.listen"), "{err}");

    let (code, _, err) = run(&["--check-config"], &[("HERALD_WEBSOCKET__OUTBOUND_QUEUE", "0")]);
    assert_eq!(code, 2);
    assert!(err.contains("websocket.outbound_queue"), "{err}");

    let (code, _, err) = run(&["--config", "/nonexistent/herald.toml"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/herald.toml"), "{err}");
}

#[test]
fn file_then_aliases_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("h.toml");
    std::fs::write(
        &file,
        "[websocket]\nidle_timeout = \"100s\"\nheartbeat_interval = \"10s\"\nmax_message_size = 1000\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();

    let (_, out, err) = run(&["--config", file, "--print-config"], &[]);
    assert!(out.contains("idle_timeout = \"1m 40s\""), "{out}{err}");

    // The seed documents' variable overrides the file…
    let (_, out, _) = run(&["--config", file, "--print-config"], &[("WEBSOCKET_PING_INTERVAL", "25")]);
    assert!(out.contains("heartbeat_interval = \"25s\""), "{out}");
    // …HERALD_* overrides the alias…
    let (_, out, _) = run(
        &["--config", file, "--print-config"],
        &[("WEBSOCKET_PING_INTERVAL", "25"), ("HERALD_WEBSOCKET__HEARTBEAT_INTERVAL", "20s")],
    );
    assert!(out.contains("heartbeat_interval = \"20s\""), "{out}");
    // …and flags override everything.
    let (_, out, _) = run(
        &["--config", file, "--print-config", "--set", "websocket.idle_timeout=300"],
        &[("HERALD_WEBSOCKET__IDLE_TIMEOUT", "200s")],
    );
    assert!(out.contains("idle_timeout = \"5m\""), "{out}");
    let (_, out, _) = run(&["--print-config", "--api-key", "flag-key-123"], &[("HERALD_API_KEY", "env-key-123")]);
    assert!(out.contains("key = \"flag-key-123\""), "{out}");
}

#[tokio::test]
async fn herald_listen_from_the_environment_is_used() {
    // The harness passes --listen 127.0.0.1:0; here the file asks for a port that is certainly
    // taken (the harness node's own), and the flag must win.
    let first = Herald::start("").await;
    let toml = format!("[server]\nlisten = \"{}\"", first.addr);
    let second = Herald::start_with(Options::toml(&toml)).await;
    assert_ne!(first.addr, second.addr);
}

#[tokio::test]
async fn logs_can_be_json() {
    let herald = Herald::start_with(Options::default().arg("--log-format").arg("json")).await;
    herald.wait_for_log("\"herald started\"").await;
    let log = herald.log.lock().clone();
    let line = log.lines().find(|l| l.contains("herald started")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
    assert_eq!(parsed["level"], "INFO");
}
