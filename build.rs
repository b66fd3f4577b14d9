//! Records what `herald --version` and `herald_build_info` report: the git revision and the build
//! date. A build outside a git checkout (a source tarball) or without git says "unknown" instead
//! of failing.
//!
//! Only optimised builds follow the checkout's HEAD. A build script that reruns makes cargo
//! recompile the whole package, so watching HEAD in debug builds recompiled Herald and every test
//! after each commit, merge or branch switch, even one that touched only documentation. Debug
//! builds therefore say "unknown" unless `HERALD_GIT_REVISION` names the revision.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    // HERALD_GIT_REVISION lets a build from a tarball name the revision it was cut from.
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    // Only this checkout's own history counts: a source tarball unpacked inside some other git
    // repository must not report that repository's revision.
    let optimised = std::env::var("PROFILE").is_ok_and(|profile| profile != "debug");
    let own_checkout = optimised
        && git(&["rev-parse", "--show-toplevel"])
            .and_then(|top| std::fs::canonicalize(top).ok())
            .is_some_and(|top| std::fs::canonicalize(&manifest_dir).is_ok_and(|dir| dir == top));
    let revision = std::env::var("HERALD_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| own_checkout.then(|| git(&["rev-parse", "--short=12", "HEAD"])).flatten())
        .unwrap_or_else(|| "unknown".into());

    // SOURCE_DATE_EPOCH (reproducible builds) wins over the clock.
    let built = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap_or_else(SystemTime::now);
    let date = humantime::format_rfc3339_seconds(built).to_string();
    let date = date.get(..10).unwrap_or(&date).to_string();

    println!("cargo:rustc-env=HERALD_GIT_REVISION={revision}");
    println!("cargo:rustc-env=HERALD_BUILD_DATE={date}");
    println!("cargo:rerun-if-env-changed=HERALD_GIT_REVISION");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
    // Rebuild when HEAD moves: HEAD itself, the branch it points to, and packed refs. Only files
    // that exist are named (a missing one would make cargo rerun this script on every build).
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"]), git(&["rev-parse", "--git-path", "packed-refs"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
    }
    for path in watched.into_iter().flatten().filter(|_| own_checkout) {
        let path = Path::new(&path);
        let path = if path.is_absolute() { path.to_path_buf() } else { manifest_dir.join(path) };
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
