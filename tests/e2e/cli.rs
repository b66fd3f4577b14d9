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
        "--data-dir",
        "--shards",
        "--log-format",
        "--log-level",
        "--set",
        "--print-config",
        "--check-config",
        "check-config",
        "probe",
    ] {
        assert!(out.contains(flag), "{flag} missing from --help:\n{out}");
    }
    // Users never saw the documents the compatibility profiles come from.
    assert!(!out.to_lowercase().contains("seed"), "--help speaks of seeds:\n{out}");
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
    assert!(out.contains("key = \"********\"  # --api-key"), "{out}");
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

#[test]
fn version_names_the_revision_and_the_build_date() {
    let (code, out, _) = run(&["--version"], &[]);
    assert_eq!(code, 0);
    // herald 0.1.0 (rev 1a2b3c4d5e6f, built 2026-11-29)
    let version = env!("CARGO_PKG_VERSION");
    assert!(out.starts_with(&format!("herald {version} (rev ")), "{out}");
    let rest = out.trim().trim_start_matches(&format!("herald {version} (rev ")).trim_end_matches(')');
    let (revision, date) = rest.split_once(", built ").unwrap_or_else(|| panic!("{out}"));
    assert!(revision == "unknown" || revision.chars().all(|c| c.is_ascii_hexdigit()), "{out}");
    let parts: Vec<&str> = date.split('-').collect();
    assert!(parts.len() == 3 && parts.iter().all(|p| p.parse::<u32>().is_ok()), "{out}");
}

#[test]
fn print_config_masks_secrets_and_names_each_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("h.toml");
    std::fs::write(
        &file,
        "[database]\nencryption_key = \"file-encryption-key-1\"\nurl = \"postgres://herald:pg-pass-2@db/herald\"\n\
         [websocket]\nidle_timeout = \"100s\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let (code, out, err) = run(
        &["--config", file, "--print-config", "--api-key", "flag-api-key-3", "--set", "log.level=debug"],
        &[
            ("HERALD_AUTH__JWT_SECRET", "env-jwt-secret-4-0123456789abcdef"),
            ("REDIS_URL", "redis://:redis-pass-5@127.0.0.1:6379/0"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    for secret in ["file-encryption-key-1", "pg-pass-2", "flag-api-key-3", "env-jwt-secret-4", "redis-pass-5"] {
        assert!(!out.contains(secret), "{secret} printed:\n{out}");
    }
    for line in [
        format!("encryption_key = \"********\"  # {file}"),
        format!("url = \"postgres://herald:********@db/herald\"  # {file}"),
        format!("idle_timeout = \"1m 40s\"  # {file}"),
        "key = \"********\"  # --api-key".to_string(),
        "level = \"debug\"  # --set log.level".to_string(),
        "jwt_secret = \"********\"  # environment variable HERALD_AUTH__JWT_SECRET".to_string(),
        "url = \"redis://:********@127.0.0.1:6379/0\"  # environment variable REDIS_URL".to_string(),
        "heartbeat_interval = \"30s\"  # default".to_string(),
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in:\n{out}");
    }
    // What it prints is a configuration Herald reads back.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &out).unwrap();
    let (code, _, err) = run(&["check-config", printed.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn check_config_reports_by_exit_status() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/job-updates.toml");
    let (code, out, err) = run(&["check-config", example], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration is valid"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[websocket]\noutbound_queue = 0\n").unwrap();
    let (code, _, err) = run(&["check-config", bad.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("websocket.outbound_queue"), "{err}");

    let (code, _, err) = run(&["check-config", "/nonexistent/herald.toml"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/herald.toml"), "{err}");
}

#[test]
fn config_errors_speak_the_users_language() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.toml");
    std::fs::write(&file, "[websocket]\nidle_timeut = \"5m\"\n").unwrap();
    let file = file.to_str().unwrap();
    let (code, _, err) = run(&["check-config", file], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("websocket.idle_timeut: is not a configuration key; did you mean websocket.idle_timeout?"),
        "{err}"
    );
    assert!(err.contains(file), "the file is named: {err}");

    let (code, _, err) = run(&["--check-config"], &[("HERALD_WEBOSCKET__IDLE_TIMEOUT", "5m")]);
    assert_eq!(code, 2);
    assert!(err.contains("did you mean websocket?"), "{err}");
    assert!(err.contains("environment variable HERALD_WEBOSCKET__IDLE_TIMEOUT"), "{err}");

    // A wrong type from a flag: the key and the flag, never a place in Herald's source.
    let (code, _, err) = run(&["--check-config", "--set", "websocket.max_message_size=big"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("websocket.max_message_size"), "{err}");
    assert!(err.contains("--set websocket.max_message_size"), "{err}");
    assert!(!err.contains("src/") && !err.contains(".rs:"), "internal location in: {err}");

    for level in ["verbose", "warning", "herald=loud"] {
        let (code, _, err) = run(&["--check-config", "--log-level", level], &[]);
        assert_eq!(code, 2, "log.level {level} accepted");
        assert!(err.contains("log.level"), "{err}");
    }
    let (code, _, err) = run(&["--check-config", "--log-level", "herald=debug,warn"], &[]);
    assert_eq!(code, 0, "{err}");
}

/// Starts the binary in `cwd` with `args` and `env` (no harness defaults), waits until it listens,
/// and returns its stdout up to then; the process is killed when `child` drops.
fn start_in(cwd: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut command = Command::new(herald_bin());
    command
        .args(["--listen", "127.0.0.1:0", "--log-level", "warn"])
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .env_remove("HERALD_DATABASE_URL")
        .env_remove("HERALD_DATA_DIR")
        .env_remove("STATE_DIRECTORY")
        .current_dir(cwd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn herald");
    let stdout = child.stdout.take().expect("stdout");
    let mut seen = String::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("herald listening on") {
            return (child, seen);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("herald did not start; stdout:\n{seen}");
}

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn data_goes_to_the_data_dir_never_the_working_directory() {
    let root = tempfile::tempdir().unwrap();
    let cwd = root.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();

    // systemd's StateDirectory= names the default; it is created when missing.
    let state = root.path().join("state/herald");
    let (child, out) = start_in(&cwd, &[], &[("STATE_DIRECTORY", state.to_str().unwrap())]);
    let _child = Killed(child);
    assert!(out.contains(&format!("herald stores its data in {}", state.display())), "{out}");
    assert!(state.join("herald.db").exists(), "no database in {}", state.display());
    drop(_child);

    // --data-dir wins over the environment, and nested directories are created.
    let chosen = root.path().join("chosen/a/b");
    let (child, out) =
        start_in(&cwd, &["--data-dir", chosen.to_str().unwrap()], &[("STATE_DIRECTORY", state.to_str().unwrap())]);
    let _child = Killed(child);
    assert!(out.contains(&format!("herald stores its data in {}", chosen.display())), "{out}");
    assert!(chosen.join("herald.db").exists());
    drop(_child);

    // The working directory was never written to (a read-only one works).
    let written: Vec<_> = std::fs::read_dir(&cwd).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(written.is_empty(), "the working directory got {written:?}");

    // An in-memory database writes nothing at all.
    let (child, out) = start_in(&cwd, &["--database-url", "sqlite::memory:"], &[]);
    let _child = Killed(child);
    assert!(out.contains("herald stores its data in sqlite::memory:"), "{out}");
    assert_eq!(std::fs::read_dir(&cwd).unwrap().count(), 0);
}

#[test]
fn an_unusable_data_dir_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let inside = file.join("data");
    let (code, _, err) = run(&["--listen", "127.0.0.1:0", "--data-dir", inside.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot create the data directory") && err.contains("--data-dir"), "{err}");
}

#[test]
fn sighup_reloads_the_log_level_and_survives_a_bad_file() {
    use std::io::{BufRead, BufReader};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("h.toml");
    std::fs::write(&file, "[log]\nlevel = \"warn\"\n").unwrap();
    let mut command = Command::new(herald_bin());
    command
        .args(["--listen", "127.0.0.1:0", "--config", file.to_str().unwrap()])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("HERALD_LOG_LEVEL")
        .env_remove("REDIS_URL")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("spawn herald");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let addr = lines
        .find_map(|l| {
            l.strip_prefix("herald listening on http://")
                .map(|r| r.split_whitespace().next().unwrap_or_default().to_string())
        })
        .expect("herald listens");
    std::thread::spawn(move || lines.for_each(drop));
    let child = Killed(child);
    let pid = child.0.id().to_string();
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + crate::common::WAIT;
        while !log.lock().unwrap().contains(needle) {
            assert!(std::time::Instant::now() < deadline, "no {needle:?} in the log:\n{}", log.lock().unwrap());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    assert!(!log.lock().unwrap().contains("herald started"), "info lines at level warn");

    // Raise the level and change a key that needs a restart.
    std::fs::write(&file, "[log]\nlevel = \"info\"\n[limits]\nmessages_per_minute = 7\n").unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    // An info line can only appear once the new level is in force.
    wait_for("configuration reloaded");
    wait_for("limits.messages_per_minute");

    // A broken file is refused and the node carries on.
    std::fs::write(&file, "[log]\nlevel = \"verbose\"\n").unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_for("configuration reload refused");
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(&addr).expect("the node still accepts");
    socket.write_all(b"GET /livez HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    socket.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    drop(child);
}
