//! Shard failure against real shards: a shard stopped and restarted under
//! pgbench load (only the queries that need it fail, fast, naming it; the
//! router reconnects by itself), and a shard that stops answering (SIGSTOP)
//! is marked down by the health check.

use std::time::{Duration, Instant};

use pg_router::cluster::StopMode;
use pg_router::dev::DevCluster;

use crate::common;

/// `n` pgbench_accounts keys stored on shard `idx`, read from the shard.
async fn keys_on(dev: &DevCluster, idx: usize, n: i64) -> Vec<i32> {
    let d = common::connect_direct(&dev.cluster.shards[idx]).await;
    d.query(
        "SELECT aid FROM pgbench_accounts ORDER BY aid LIMIT $1",
        &[&n],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Connections the router's pools opened to `shard` (all workers).
fn opened(dev: &DevCluster, shard: &str) -> u64 {
    dev.router
        .state
        .pool_stats()
        .iter()
        .find(|p| p.shard == shard)
        .map(|p| p.opened)
        .unwrap_or(0)
}

async fn shard_up(http: std::net::SocketAddr, shard: &str) -> Option<f64> {
    let s = common::scrape(http).await;
    common::sample(&s, "pgrouter_shard_up", &[("shard", shard)])
}

/// Waits up to 10 s for `pgrouter_shard_up{shard}` to become `want`.
async fn wait_shard_up(http: std::net::SocketAddr, shard: &str, want: f64) {
    let t0 = Instant::now();
    while shard_up(http, shard).await != Some(want) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "pgrouter_shard_up{{shard=\"{shard}\"}} never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A pgbench script whose transactions touch only `keys` (one shard).
fn script(keys: &[i32]) -> String {
    let mut case = String::from("case");
    for (i, k) in keys.iter().enumerate() {
        case.push_str(&format!(" when :r = {i} then {k}"));
    }
    case.push_str(" end");
    format!(
        "\\set r random(0, {})\n\\set aid {case}\nBEGIN;\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\nEND;\n",
        keys.len() - 1
    )
}

fn assert_names_shard(e: &tokio_postgres::Error, shard: &str) {
    let code = common::sqlstate(e);
    assert!(
        code == "08006" || code == "57P01",
        "unexpected SQLSTATE {code}: {e:?}"
    );
    let db = e.as_db_error().expect("server error");
    let text = format!("{} {}", db.message(), db.detail().unwrap_or(""));
    assert!(
        text.contains(&format!("\"{shard}\"")) || text.contains(shard),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_stop_start_under_pgbench_load() {
    let mut dev = common::start_config(2, 8, |c| {
        c.metrics_listen = Some("127.0.0.1:0".into());
        c.backend.retry_backoff_max_ms = 300;
        c.backend.health_check_interval_ms = 500;
        c.workers = 2;
    })
    .await;
    let http = dev.router.http_addr.expect("metrics endpoint");
    let mut args = common::conn_args(&dev);
    args.extend(["-i", "-s", "1", "-q", "postgres"].map(String::from));
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let (ok, out, err) = common::run_pg_tool(&dev, "pgbench", &a);
    assert!(ok, "pgbench -i: {out}{err}");

    let keys0 = keys_on(&dev, 0, 16).await;
    let keys1 = keys_on(&dev, 1, 4).await;
    let s1 = dev.cluster.shards[1].name.clone();

    // pgbench on shard 0's keys for the whole outage.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shard0.sql");
    std::fs::write(&file, script(&keys0)).unwrap();
    let bin = dev.cluster.bin("pgbench");
    let mut cmd = std::process::Command::new(bin);
    cmd.args(common::conn_args(&dev)).args([
        "-n",
        "-c",
        "4",
        "-j",
        "2",
        "-T",
        "8",
        "-M",
        "extended",
        "-f",
        file.to_str().unwrap(),
        "postgres",
    ]);
    let bench = std::thread::spawn(move || cmd.output().unwrap());

    // Clients of shard 1: one idle, one inside a transaction on it.
    let c1 = common::connect(&dev).await;
    let sel = format!(
        "SELECT abalance FROM pgbench_accounts WHERE aid = {}",
        keys1[0]
    );
    c1.simple_query(&sel).await.unwrap();
    let tx = common::connect(&dev).await;
    tx.batch_execute(&format!("BEGIN; {sel}")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    dev.cluster.shards[1].stop(StopMode::Fast).unwrap();
    let down_at = Instant::now();

    // The open transaction lost its shard: an error naming it, then the
    // client can roll back and carry on.
    let e = tx.simple_query(&sel).await.unwrap_err();
    assert_names_shard(&e, &s1);
    tx.batch_execute("ROLLBACK").await.unwrap();

    // Queries needing shard 1 fail with 08006 naming it.
    let e = c1.simple_query(&sel).await.unwrap_err();
    assert_names_shard(&e, &s1);
    wait_shard_up(http, &s1, 0.0).await;
    // While it is marked down: no connect attempt per query, each fails at
    // once, scatter-gather needing it fails too; shard 0 keeps answering.
    let before = opened(&dev, &s1);
    let mut failed = 0;
    while down_at.elapsed() < Duration::from_millis(3000) {
        let e = c1.simple_query(&sel).await.unwrap_err();
        assert_names_shard(&e, &s1);
        let db = e.as_db_error().unwrap();
        assert!(db.message().contains("is unavailable"), "{}", db.message());
        failed += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        failed >= 20,
        "only {failed} queries ran while the shard was down"
    );
    assert_eq!(opened(&dev, &s1), before, "connect attempts while down");
    let e = c1
        .simple_query("SELECT count(*) FROM pgbench_accounts")
        .await
        .unwrap_err();
    assert_names_shard(&e, &s1);
    let r = c1
        .query_one(
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            &[&keys0[0]],
        )
        .await;
    assert!(r.is_ok(), "shard 0 query failed: {r:?}");
    // Statements any shard can answer avoid the down shard.
    for _ in 0..4 {
        c1.simple_query("SELECT 1").await.unwrap();
    }

    // The shard comes back: the same client connections work again without
    // reconnecting.
    dev.cluster.shards[1].start().unwrap();
    let t0 = Instant::now();
    loop {
        match c1.simple_query(&sel).await {
            Ok(_) => break,
            Err(e) => {
                assert_names_shard(&e, &s1);
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "shard never came back: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    wait_shard_up(http, &s1, 1.0).await;
    tx.batch_execute(&format!("BEGIN; {sel}; COMMIT"))
        .await
        .unwrap();
    let n: i64 = c1
        .query_one("SELECT count(*) FROM pgbench_accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 100_000);

    // pgbench on shard 0 never saw an error.
    let out = tokio::task::spawn_blocking(move || bench.join().unwrap())
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgbench failed:\n{text}");
    let processed = text
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no summary:\n{text}"));
    assert!(processed > 100, "{text}");
    let failed_line = text
        .lines()
        .find(|l| l.starts_with("number of failed transactions"))
        .unwrap_or("number of failed transactions: 0");
    assert!(failed_line.contains(": 0 "), "{failed_line}\n{text}");
    dev.stop().await;
}

/// The postmaster of shard `idx` and its children (first line of
/// postmaster.pid; parents from /proc/PID/stat).
fn shard_processes(dev: &DevCluster, idx: usize) -> Vec<i32> {
    let pidfile = dev.cluster.shards[idx].data_dir.join("postmaster.pid");
    let text = std::fs::read_to_string(pidfile).unwrap();
    let postmaster: i32 = text.lines().next().unwrap().trim().parse().unwrap();
    let mut pids = vec![postmaster];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(postmaster) {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresponsive_shard_is_marked_down() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let dev = common::start_config(2, 4, |c| {
        c.metrics_listen = Some("127.0.0.1:0".into());
        c.backend.connect_timeout_ms = 500;
        c.backend.health_check_interval_ms = 200;
        c.backend.retry_backoff_max_ms = 200;
    })
    .await;
    let http = dev.router.http_addr.expect("metrics endpoint");
    let c = common::connect(&dev).await;
    c.batch_execute("CREATE TABLE pgbench_branches (bid int primary key, bbalance int)")
        .await
        .unwrap();
    let count = "SELECT count(*) FROM pgbench_branches";
    c.simple_query(count).await.unwrap();
    let s1 = dev.cluster.shards[1].name.clone();
    wait_shard_up(http, &s1, 1.0).await;

    // The shard stops answering: postmaster and backends stopped (SIGSTOP),
    // TCP still accepts. The health check times out and marks it down.
    let pids = shard_processes(&dev, 1);
    for p in &pids {
        kill(Pid::from_raw(*p), Signal::SIGSTOP).unwrap();
    }
    wait_shard_up(http, &s1, 0.0).await;
    // Marked down: a query needing it fails at once instead of hanging.
    let t0 = Instant::now();
    let e = c.simple_query(count).await.unwrap_err();
    assert_names_shard(&e, &s1);
    assert!(t0.elapsed() < Duration::from_secs(5));
    for p in pids.iter().rev() {
        let _ = kill(Pid::from_raw(*p), Signal::SIGCONT);
    }
    wait_shard_up(http, &s1, 1.0).await;
    c.simple_query(count).await.unwrap();
    dev.stop().await;
}

/// Any shard the router has marked down, as "name: state".
fn first_down(dev: &DevCluster) -> Option<String> {
    dev.router
        .state
        .shard_health()
        .into_iter()
        .find_map(|(s, d)| d.map(|d| format!("{s}: {d:?}")))
}

/// Pauses (SIGSTOP) shard 0's processes, as everything pauses when this
/// machine stalls; returns them for [`resume_watching`].
fn pause_shard0(dev: &DevCluster) -> Vec<i32> {
    let pids = shard_processes(dev, 0);
    for p in &pids {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*p),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
    }
    pids
}

/// Resumes the paused `pids` 1.3 s from now, watching the router's shard
/// health every 5 ms for 3 s: panics (after resuming them) if it marks any
/// shard down.
async fn resume_watching(dev: &DevCluster, pids: &[i32]) {
    let resume = || {
        for p in pids.iter().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
    };
    let t0 = Instant::now();
    let mut resumed = false;
    while t0.elapsed() < Duration::from_millis(3000) {
        if !resumed && t0.elapsed() >= Duration::from_millis(1300) {
            resume();
            resumed = true;
        }
        if let Some(d) = first_down(dev) {
            resume();
            panic!("marked down after {:?}: {d}", t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shorter_than_two_health_checks_marks_nothing_down() {
    let dev = common::start_config(1, 2, |c| {
        c.backend.connect_timeout_ms = 1000;
        c.backend.health_check_interval_ms = 100;
    })
    .await;
    let c = common::connect(&dev).await;
    c.simple_query("SELECT 1").await.unwrap();
    assert_eq!(first_down(&dev), None);
    // One health check times out (1 s), its retry on a new connection is
    // answered once the shard runs again.
    let pids = pause_shard0(&dev);
    resume_watching(&dev, &pids).await;
    c.simple_query("SELECT 1").await.unwrap();
    dev.stop().await;
}

/// A checkout whose connect times out during such a stall fails that one
/// query, but only asks for a probe: the shard is not marked down (a
/// refused connect still marks it down at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_timeout_during_a_stall_marks_nothing_down() {
    let dev = common::start_config(1, 16, |c| {
        c.backend.connect_timeout_ms = 1000;
        c.backend.health_check_interval_ms = 100;
    })
    .await;
    // Clients connected, no query run yet: the pools hold few or no
    // connections, so the queries below have to open some.
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(std::sync::Arc::new(common::connect(&dev).await));
    }
    assert_eq!(first_down(&dev), None);
    let pids = pause_shard0(&dev);
    let queries: Vec<_> = clients
        .iter()
        .map(|c| {
            let c = c.clone();
            tokio::spawn(async move { c.simple_query("SELECT 1").await.map(|_| ()) })
        })
        .collect();
    resume_watching(&dev, &pids).await;
    // Some queries waited for a connect that timed out (08006).
    let mut timed_out = 0;
    for q in queries {
        if let Err(e) = q.await.unwrap() {
            assert_eq!(common::sqlstate(&e), "08006", "{e:?}");
            timed_out += 1;
        }
    }
    assert!(timed_out > 0, "no query needed a new connection");
    for c in &clients {
        c.simple_query("SELECT 1").await.unwrap();
    }
    dev.stop().await;
}
