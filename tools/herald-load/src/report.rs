//! Latency histograms (one per worker thread, merged at the end) and the printed report.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use hdrhistogram::Histogram;
use parking_lot::Mutex;

static BASE: OnceLock<Instant> = OnceLock::new();
static HISTOGRAMS: Mutex<Vec<Arc<Mutex<Histogram<u64>>>>> = Mutex::new(Vec::new());

thread_local! {
    static LOCAL: RefCell<Option<Arc<Mutex<Histogram<u64>>>>> = const { RefCell::new(None) };
}

/// Nanoseconds since the process's time base; publisher and receivers share it.
pub fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 60 s at 3 significant digits.
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Records one latency in nanoseconds into this thread's histogram.
pub fn record(ns: u64) {
    LOCAL.with(|local| {
        let mut local = local.borrow_mut();
        let histogram = local.get_or_insert_with(|| {
            let h = Arc::new(Mutex::new(new_histogram()));
            HISTOGRAMS.lock().push(h.clone());
            h
        });
        histogram.lock().saturating_record(ns.max(1_000));
    });
}

/// All threads' histograms merged.
pub fn merged() -> Histogram<u64> {
    let mut total = new_histogram();
    for h in HISTOGRAMS.lock().iter() {
        let _ = total.add(&*h.lock());
    }
    total
}

/// Milliseconds with two decimals.
pub fn ms(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1e6)
}

/// What this machine is, for the report header.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}; herald-load {}", kernel.trim(), env!("CARGO_PKG_VERSION"))
}

/// User plus system CPU seconds a process has used so far (`/proc/<pid>/stat`), or `None` when
/// it cannot be read.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    (ticks > 0).then(|| (utime + stime) as f64 / ticks as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_cpu_time() {
        let own = super::cpu_seconds(std::process::id());
        assert!(own.is_some_and(|s| s >= 0.0), "{own:?}");
        assert_eq!(super::cpu_seconds(u32::MAX), None);
    }
}
