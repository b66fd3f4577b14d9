//! A throwaway PostgreSQL cluster in a temporary directory on a free loopback port, started with
//! the server binaries of Debian's `postgresql` package (as the `postgres` user when the tests
//! run as root, since PostgreSQL refuses to run as root).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::redis::free_port;

pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    running: bool,
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries in /usr/lib/postgresql (scripts/test installs Debian's postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb under /usr/lib/postgresql/*/bin")
}

impl Postgres {
    fn run(&self, program: &str, args: &[&str]) -> std::process::Output {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        command.args(args).current_dir(self.dir.path()).output().unwrap_or_else(|e| panic!("{program}: {e}"))
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Creates and starts a cluster with a `herald` superuser (trust authentication, loopback only).
    pub async fn start() -> Postgres {
        let dir = tempfile::tempdir().expect("temp dir");
        if is_root() {
            let status =
                Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().expect("chown");
            assert!(status.success());
        }
        let mut pg = Postgres { port: free_port(), bin: bin_dir(), dir, running: false };
        let data = pg.data();
        let out = pg.run("initdb", &["-D", &data, "-A", "trust", "-U", "herald", "-E", "UTF8", "--no-sync"]);
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        pg.start_again().await;
        pg
    }

    /// Starts the server (again) on the same data directory and port.
    pub async fn start_again(&mut self) {
        let data = self.data();
        let socket_dir = self.dir.path().display().to_string();
        let options = format!("-p {} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off", self.port);
        let log = Path::new(&socket_dir).join("postgres.log").display().to_string();
        let out = self.run("pg_ctl", &["-D", &data, "-o", &options, "-l", &log, "-w", "-t", "30", "start"]);
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.running = true;
        let url = self.url();
        super::until("PostgreSQL accepts connections", async || sqlx::PgPool::connect(&url).await.is_ok()).await;
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn stop_immediate(&mut self) {
        if self.running {
            let data = self.data();
            let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
            self.running = false;
        }
    }

    /// `postgres://herald@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://herald@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop_immediate();
    }
}
