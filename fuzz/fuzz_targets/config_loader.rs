//! A configuration file: arbitrary text through `config::from_toml_str` (defaults, the TOML
//! text, validation), exactly as `--config FILE` is read minus environment and flags.
//!
//! Checked: no panic; and what ARCHITECTURE.md promises of a configuration that validates:
//! it can start a node. Short of starting one, that means it validates again, its listen
//! address parses, endpoints and channel rules build, its durations can be added to the clock
//! (heartbeat, close and shutdown deadlines), and `herald --print-config` output loads back
//! into the same configuration.

#![no_main]

use std::time::Instant;

use herald::config::{Config, from_toml_str};
use herald::hub::rules::ChannelRules;
use herald::gateway::upgrade;
use libfuzzer_sys::fuzz_target;

fn printed(config: &Config) -> String {
    toml::to_string_pretty(config).expect("--print-config renders every valid configuration")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = from_toml_str(text) else {
        return;
    };

    config
        .validate()
        .expect("a valid configuration stays valid");
    config
        .listen_addr()
        .expect("a valid configuration has a listen address");
    let endpoints = upgrade::endpoints(&config);
    assert_eq!(
        endpoints.len(),
        config.server.mounts.len()
            * (config.endpoints.len()
                + usize::from(
                    config.websocket.main_endpoint
                        && !config.endpoints.iter().any(|e| e.path.is_empty())
                ))
    );
    let _ = ChannelRules::new(&config.channels);

    let now = Instant::now();
    for (key, duration) in [
        (
            "websocket.heartbeat_interval",
            config.websocket.heartbeat_interval,
        ),
        ("websocket.idle_timeout", config.websocket.idle_timeout),
        ("server.shutdown_timeout", config.server.shutdown_timeout),
    ] {
        assert!(
            now.checked_add(duration).is_some(),
            "{key} = {duration:?} validates but overflows the clock"
        );
    }

    let first = printed(&config);
    let reloaded = from_toml_str(&first)
        .unwrap_or_else(|e| panic!("--print-config output does not load: {e}\n{first}"));
    assert_eq!(
        printed(&reloaded),
        first,
        "--print-config does not round-trip"
    );
});
