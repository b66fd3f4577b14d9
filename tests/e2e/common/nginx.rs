//! nginx in front of test nodes, from a configuration text, in its own temp dir.

use std::process::{Command, Stdio};

/// A running nginx; killed when dropped.
pub struct Nginx {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs nginx with `conf` (ports already filled in) in the foreground.
pub fn start(mut conf: String) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if is_root {
        // Workers otherwise drop to an account that cannot write the private temp directory.
        conf = format!("user root;\n{conf}");
    }
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let error_log = dir.path().join("error.log");
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&path)
        .arg("-e")
        .arg(&error_log)
        .args(["-g", "daemon off; pid nginx.pid;"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx must be installed (scripts/test installs nginx-light)");
    Nginx { child, _dir: dir }
}
