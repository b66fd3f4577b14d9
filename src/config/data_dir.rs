//! Where an embedded node keeps its SQLite database when `database.url` does not say.
//!
//! Not the working directory: a service's working directory is often `/` or read-only, and a
//! file appearing wherever Herald happened to be started surprises operators. The order:
//! `database.data_dir` (`--data-dir`), systemd's `$STATE_DIRECTORY` (set by `StateDirectory=`),
//! `/var/lib/herald` when running as root, else the user's data directory
//! (`$XDG_DATA_HOME/herald`, usually `~/.local/share/herald`).

use std::path::PathBuf;

/// The system-wide data directory a service uses.
pub const SYSTEM_DATA_DIR: &str = "/var/lib/herald";

/// The file name of the embedded database inside the data directory.
pub const DATABASE_FILE: &str = "herald.db";

/// The data directory to use when none is configured; `None` when no home directory is known
/// (then `--data-dir` or `database.url` must say).
pub fn default_data_dir() -> Option<PathBuf> {
    if let Some(state) = std::env::var_os("STATE_DIRECTORY") {
        // systemd passes one path per StateDirectory= entry, separated by ':'.
        let first = state.to_string_lossy().split(':').next().unwrap_or_default().to_string();
        if !first.is_empty() {
            return Some(PathBuf::from(first));
        }
    }
    if rustix::process::geteuid().is_root() {
        return Some(PathBuf::from(SYSTEM_DATA_DIR));
    }
    dirs::data_dir().map(|dir| dir.join("herald"))
}
