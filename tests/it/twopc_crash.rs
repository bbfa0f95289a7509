//! Crash matrix for two-phase commit. A `pg-router serve` child process
//! runs concurrent multi-shard transfers; it is crashed (failpoints
//! `after_prepare_some`, `after_decision`, `after_commit_some`, and a plain
//! SIGKILL) or a shard is stopped immediately in the middle of commits and
//! started again. After a restarted router's recovery: no prepared
//! transaction is left on any shard, every transfer a client saw committed
//! is there, and every account's balance equals its initial balance plus
//! the transfers recorded (all-or-nothing on every shard).

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pg_router::cluster::StopMode;
use pg_router::dev::DevCluster;
use pg_router::txn::TransactionMode;

use crate::common;

const ACCOUNTS: i32 = 40;
const START_BALANCE: i64 = 1000;

struct ChildRouter {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl ChildRouter {
    fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=5",
            self.port
        )
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChildRouter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `pg-router serve` against the dev cluster's catalog, with a fast
/// recovery loop (every 300 ms, grace 1 s) and `failpoint` armed.
async fn spawn_router(dev: &DevCluster, failpoint: Option<&str>) -> ChildRouter {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let cfg = dir.path().join("router.toml");
    let mut f = std::fs::File::create(&cfg).unwrap();
    writeln!(
        f,
        "listen = \"127.0.0.1:{port}\"\ncatalog = \"{}\"\nworkers = 2\n[backend]\npool_size = 8\n\
         [transactions]\nrecovery_interval_ms = 300\nrecovery_grace_ms = 1000\n\
         [auth]\nmethod = \"trust\"",
        dev.catalog_dsn()
    )
    .unwrap();
    let log = dir.path().join("router.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pg-router"));
    cmd.args(["--log", "warn,pg_router::txn=info", "serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .env_remove("PGROUTER_FAILPOINT");
    if let Some(fp) = failpoint {
        cmd.env("PGROUTER_FAILPOINT", fp);
    }
    let child = cmd.spawn().expect("spawn pg-router serve");
    let r = ChildRouter {
        child,
        port,
        log,
        _dir: dir,
    };
    let t0 = Instant::now();
    loop {
        if tokio_postgres::connect(&r.dsn(), tokio_postgres::NoTls)
            .await
            .is_ok()
        {
            return r;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "router did not start:\n{}",
            r.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Transfers acknowledged (COMMIT returned success) by id.
type Acked = Arc<Mutex<Vec<i64>>>;

/// Runs `clients` transfer loops against `dsn` until `deadline`, or until
/// the router is gone when `stop_on_error`. Each transfer moves 1..=5
/// between two random accounts (updates in id order: no distributed
/// deadlock) and records itself in `transfers`.
async fn transfers(
    dsn: String,
    clients: usize,
    deadline: Instant,
    stop_on_error: bool,
    base: i64,
) -> (Acked, usize) {
    let acked: Acked = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(0usize));
    let mut tasks = Vec::new();
    for t in 0..clients {
        let (dsn, acked, errors) = (dsn.clone(), acked.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(base as u64 + t as u64);
            let mut n = 0i64;
            'outer: while Instant::now() < deadline {
                let Ok((c, conn)) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await else {
                    if stop_on_error {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                tokio::spawn(conn);
                while Instant::now() < deadline {
                    n += 1;
                    let id = base + (t as i64) * 1_000_000 + n;
                    let a = rng.i32(1..=ACCOUNTS);
                    let mut b = rng.i32(1..=ACCOUNTS - 1);
                    if b >= a {
                        b += 1;
                    }
                    let amt = rng.i32(1..=5);
                    let (lo, hi) = (a.min(b), a.max(b));
                    let delta = |acct: i32| if acct == a { -amt } else { amt };
                    let sql = format!(
                        "BEGIN; UPDATE acct SET bal = bal + {} WHERE id = {lo}; \
                         UPDATE acct SET bal = bal + {} WHERE id = {hi}; \
                         INSERT INTO transfers (id, src, dst, amt) VALUES ({id}, {a}, {b}, {amt}); COMMIT",
                        delta(lo),
                        delta(hi)
                    );
                    match tokio::time::timeout(Duration::from_secs(20), c.batch_execute(&sql)).await {
                        Ok(Ok(())) => acked.lock().push(id),
                        _ => {
                            *errors.lock() += 1;
                            if stop_on_error {
                                break 'outer;
                            }
                            continue 'outer;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let e = *errors.lock();
    (acked, e)
}

/// In-doubt transactions after a crash: (distinct prepared gids, gids
/// with a COMMIT decision, gids with a COMMIT decision holding an insert
/// into `transfers` — found through the lock on the table that the prepared
/// transaction still holds in `pg_locks`).
async fn in_doubt(dev: &DevCluster) -> (usize, usize, i64) {
    let mut gids = std::collections::HashSet::new();
    let mut with_row = Vec::new();
    for s in &dev.cluster.shards {
        let d = common::connect_direct(s).await;
        for r in d
            .query("SELECT gid FROM pg_prepared_xacts", &[])
            .await
            .unwrap()
        {
            gids.insert(r.get::<_, String>(0));
        }
        for r in d
            .query(
                "SELECT DISTINCT p.gid FROM pg_prepared_xacts p \
                 JOIN pg_locks x ON x.locktype = 'transactionid' AND x.transactionid = p.transaction \
                 AND x.pid IS NULL \
                 JOIN pg_locks l ON l.virtualtransaction = x.virtualtransaction AND l.pid IS NULL \
                 WHERE l.locktype = 'relation' AND l.relation = 'transfers'::regclass",
                &[],
            )
            .await
            .unwrap()
        {
            with_row.push(r.get::<_, String>(0));
        }
    }
    let cat = common::connect_dsn(&dev.catalog_dsn()).await;
    let count = |list: Vec<String>| {
        let cat = &cat;
        async move {
            cat.query_one(
                "SELECT count(*) FROM pgrouter.twopc_decisions WHERE decision = 'c' AND gid = ANY($1)",
                &[&list],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    let committed = count(gids.iter().cloned().collect()).await as usize;
    let committed_rows = count(with_row).await;
    (gids.len(), committed, committed_rows)
}

/// Waits until recovery left no prepared transaction on any shard.
async fn wait_resolved(dev: &DevCluster, r: &ChildRouter) {
    let t0 = Instant::now();
    while common::prepared_xacts(dev).await > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "prepared transactions left after 30 s:\n{}",
            r.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks the invariants on the shards directly: acknowledged transfers
/// present, balances = start + recorded transfers, total unchanged.
async fn check(dev: &DevCluster, acked: &[i64], what: &str) {
    let mut bal = std::collections::HashMap::new();
    let mut ids = std::collections::HashSet::new();
    let mut expect: std::collections::HashMap<i32, i64> =
        (1..=ACCOUNTS).map(|i| (i, START_BALANCE)).collect();
    for s in &dev.cluster.shards {
        let d = common::connect_direct(s).await;
        for r in d.query("SELECT id, bal FROM acct", &[]).await.unwrap() {
            bal.insert(r.get::<_, i32>(0), r.get::<_, i64>(1));
        }
        for r in d
            .query("SELECT id, src, dst, amt FROM transfers", &[])
            .await
            .unwrap()
        {
            ids.insert(r.get::<_, i64>(0));
            let amt = r.get::<_, i32>(3) as i64;
            *expect.entry(r.get(1)).or_default() -= amt;
            *expect.entry(r.get(2)).or_default() += amt;
        }
    }
    for id in acked {
        assert!(
            ids.contains(id),
            "{what}: acknowledged transfer {id} was lost"
        );
    }
    assert_eq!(bal.len(), ACCOUNTS as usize);
    for (id, want) in &expect {
        assert_eq!(
            bal.get(id),
            Some(want),
            "{what}: account {id} balance vs recorded transfers"
        );
    }
    assert_eq!(
        bal.values().sum::<i64>(),
        START_BALANCE * ACCOUNTS as i64,
        "{what}: total"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_matrix_leaves_no_partial_commit() {
    // The in-process router only sets up and reads; its recovery stays idle.
    let mut dev = common::start_with(2, 4, common::quiet_recovery(TransactionMode::Twopc)).await;
    let c = common::connect(&dev).await;
    c.batch_execute(
        "CREATE TABLE acct (id int primary key, bal int8 not null); \
         CREATE TABLE transfers (id int8 primary key, src int not null, dst int not null, amt int not null)",
    )
    .await
    .unwrap();
    common::add_table(&dev, "acct", "id", "int").await;
    common::add_table(&dev, "transfers", "id", "int").await;
    for i in 1..=ACCOUNTS {
        c.batch_execute(&format!(
            "INSERT INTO acct (id, bal) VALUES ({i}, {START_BALANCE})"
        ))
        .await
        .unwrap();
    }

    let mut base = 0i64;
    for fp in [
        "after_prepare_some@15",
        "after_decision@15",
        "after_commit_some@15",
    ] {
        base += 100_000_000;
        let mut r = spawn_router(&dev, Some(fp)).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let (acked, _) = transfers(r.dsn(), 4, deadline, true, base).await;
        let status = tokio::task::block_in_place(|| r.child.wait()).unwrap();
        assert!(
            !status.success(),
            "{fp}: the router should have crashed:\n{}",
            r.log_text()
        );
        assert!(
            r.log_text().contains("failpoint"),
            "{fp}:\n{}",
            r.log_text()
        );
        let (gids, committed, committed_rows) = in_doubt(&dev).await;
        assert!(gids > 0, "{fp}: the crash left no prepared transaction");
        let before = common::sum_on_shards(&dev, "SELECT count(*) FROM transfers").await;
        let acked = acked.lock().clone();
        assert!(
            acked.len() >= 10,
            "{fp}: {} transfers acknowledged",
            acked.len()
        );
        let r2 = spawn_router(&dev, None).await;
        wait_resolved(&dev, &r2).await;
        check(&dev, &acked, fp).await;
        // Exactly the in-doubt transactions with a COMMIT decision were
        // committed (their transfers rows appeared); the others rolled back.
        let after = common::sum_on_shards(&dev, "SELECT count(*) FROM transfers").await;
        assert_eq!(after - before, committed_rows, "{fp}");
        if fp.starts_with("after_decision") {
            assert!(
                committed > 0,
                "{fp}: no in-doubt transaction had a decision"
            );
        }
        eprintln!(
            "{fp}: {} transfers acknowledged; {gids} in-doubt ({committed} with a commit decision) resolved",
            acked.len()
        );
        drop(r2);
    }

    // SIGKILL at an arbitrary moment under load.
    base += 100_000_000;
    let mut r = spawn_router(&dev, None).await;
    let load = tokio::spawn(transfers(
        r.dsn(),
        4,
        Instant::now() + Duration::from_secs(30),
        true,
        base,
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    r.child.kill().unwrap();
    let _ = r.child.wait();
    let (acked, _) = load.await.unwrap();
    let acked = acked.lock().clone();
    let r2 = spawn_router(&dev, None).await;
    wait_resolved(&dev, &r2).await;
    check(&dev, &acked, "SIGKILL").await;
    drop(r2);

    // A shard stopped (immediate) while transactions are between their
    // commit decision and COMMIT PREPARED, then started again.
    base += 100_000_000;
    let r = spawn_router(&dev, Some("after_decision=sleep:200")).await;
    let load = tokio::spawn(transfers(
        r.dsn(),
        4,
        Instant::now() + Duration::from_secs(6),
        false,
        base,
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::block_in_place(|| {
        dev.cluster.shards[1]
            .stop(StopMode::Immediate)
            .map_err(|e| e.to_string())
    })
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    tokio::task::block_in_place(|| dev.cluster.shards[1].start().map_err(|e| e.to_string()))
        .unwrap();
    let (acked, errors) = load.await.unwrap();
    let acked = acked.lock().clone();
    wait_resolved(&dev, &r).await;
    check(&dev, &acked, "shard stop").await;
    eprintln!(
        "shard stop: {} transfers acknowledged, {errors} failed",
        acked.len()
    );
    assert!(acked.len() >= 10);
    drop(r);
    drop(c);
    dev.stop().await;
}
