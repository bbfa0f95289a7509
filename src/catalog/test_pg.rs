//! A throwaway PostgreSQL server for the catalog tests (to be replaced by
//! the shared `crate::cluster` harness). Runs as the `postgres` user, listens
//! on 127.0.0.1 only, and is stopped and deleted when the guard drops.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A running server; dropping it stops it (`-m immediate`) and removes its files.
pub struct TestPg {
    dir: PathBuf,
    bin: PathBuf,
    /// TCP port on 127.0.0.1.
    pub port: u16,
}

impl TestPg {
    /// initdb + start a fresh server on a free port.
    pub fn start() -> TestPg {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "pgrouter-catalog-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test dir");
        run(Command::new("chown").arg("postgres:postgres").arg(&dir));
        let data = dir.join("data");
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args([
                "-D",
                data.to_str().expect("utf8 path"),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ]));
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off",
            dir.display()
        );
        let guard = TestPg {
            dir: dir.clone(),
            bin: bin.clone(),
            port,
        };
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("pg_ctl"))
            .args([
                "-D",
                data.to_str().expect("utf8 path"),
                "-o",
                &opts,
                "-l",
                dir.join("log").to_str().expect("utf8 path"),
                "-w",
                "start",
            ]));
        guard
    }

    /// libpq key=value DSN for database `postgres` as user `postgres`.
    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// A connected client (its connection is driven by a spawned task).
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.dsn(), tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `$PG_BIN_DIR`, else the highest-version `/usr/lib/postgresql/<v>/bin`.
fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PG_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries not found under /usr/lib/postgresql (set PG_BIN_DIR)")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .expect("no /usr/lib/postgresql/<version>/bin/initdb (set PG_BIN_DIR)")
        .1
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
