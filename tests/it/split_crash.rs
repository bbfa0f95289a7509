//! Crash matrix of the split job. `pg-router split start` runs as a child
//! process with a failpoint armed (`PGROUTER_FAILPOINT=split_…`: the
//! process aborts there, like `kill -9`) in each phase of the job, while
//! two clients keep updating accounts through the router; then the job is
//! resumed (`split resume`) or rolled back (`split rollback`). After each
//! case: the job completed or rolled back, every row on the shard the
//! routing names, no slot, publication, walsender, replication origin or
//! write block left on any instance; at the end, the sum of all balances
//! equals the number of updates the clients saw succeed (none lost, none
//! applied twice) and no client update failed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pg_router::dev::DevCluster;

use crate::common;
use crate::split::{capture_state, pgbench_with_spare_pool, table_rows};
use crate::split_online::assert_placement;

/// What is done after the crash.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Then {
    Resume,
    Rollback,
}

/// Runs `pg-router split --catalog <dsn> <args>` with `failpoint` armed;
/// (success, stdout + stderr). Awaited, not blocking: the router under
/// test runs on this runtime's workers.
async fn split_cli(dev: &DevCluster, args: &[&str], failpoint: Option<&str>) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pg-router"));
    cmd.args(["--log", "warn", "split", "--catalog", &dev.catalog_dsn()])
        .args(args)
        .env("PG_BIN_DIR", dev.cluster.bin("pg_dump").parent().unwrap())
        .env_remove("PGROUTER_FAILPOINT");
    if let Some(fp) = failpoint {
        cmd.env("PGROUTER_FAILPOINT", fp);
    }
    let out = cmd.output().await.expect("run pg-router split");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The range the spare shard owns now, as `LO-HI`, if any.
async fn spare_range(dev: &DevCluster) -> Option<String> {
    let cat = common::connect_direct(&dev.cluster.catalog).await;
    let catalog = pg_router::catalog::load(&cat).await.unwrap();
    let spare = &dev.cluster.shards[2].name;
    catalog.keyspaces["main"]
        .routing
        .ranges()
        .iter()
        .find(|r| &r.shard == spare)
        .map(|r| {
            format!(
                "{}-{}",
                r.range.start,
                r.range.end.map(|e| e.to_string()).unwrap_or_default()
            )
        })
}

/// Keyspace generation and the latest job's (id, phase).
async fn catalog_state(dev: &DevCluster) -> (i64, i64, String) {
    let cat = common::connect_direct(&dev.cluster.catalog).await;
    let r = cat
        .query_one(
            "select (select generation from pgrouter.keyspaces where name = 'main'), \
                    coalesce(max(id), 0), \
                    coalesce((select phase from pgrouter.split_jobs order by id desc limit 1), '') \
             from pgrouter.split_jobs",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

/// Nothing of a job is left on any instance or in the catalog.
async fn assert_nothing_left(dev: &DevCluster) {
    for inst in &dev.cluster.shards {
        let c = common::connect_direct(inst).await;
        let mut state = capture_state(&c).await;
        for _ in 0..50 {
            if state == (0, 0, 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            state = capture_state(&c).await;
        }
        assert_eq!(
            state,
            (0, 0, 0),
            "slots, publications, walsenders on {}",
            inst.name
        );
        let origins: i64 = c
            .query_one("select count(*) from pg_replication_origin", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(origins, 0, "replication origins on {}", inst.name);
    }
    let cat = common::connect_direct(&dev.cluster.catalog).await;
    let blocks: i64 = cat
        .query_one("select count(*) from pgrouter.write_blocks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(blocks, 0, "write blocks left");
}

/// Clients updating random accounts through the router until `stop`;
/// counts the updates that succeeded, records any error.
struct Writers {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    async fn start(dev: &DevCluster, n: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for w in 0..n {
            let c = common::connect(dev).await;
            let (stop, done, errors) = (stop.clone(), done.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                let st = c
                    .prepare("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = $1")
                    .await
                    .unwrap();
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ w as u64;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let aid = (x % 100_000) as i32 + 1;
                    match c.execute(&st, &[&aid]).await {
                        Ok(1) => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(n) => errors.lock().push(format!("aid {aid}: {n} rows updated")),
                        Err(e) => errors.lock().push(format!("aid {aid}: {e:?}")),
                    }
                    // Lightly paced: unpaced, the two writers take most of
                    // the machine's two CPUs and the apply chain (walsender,
                    // job, target backend) stays seconds behind
                    // (docs/resharding.md, "Limits").
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }));
        }
        Writers {
            stop,
            done,
            errors,
            tasks,
        }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let errors = self.errors.lock().clone();
        assert!(errors.is_empty(), "client updates failed: {errors:?}");
        self.done.load(Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_killed_in_every_phase_resumes_or_rolls_back_cleanly() {
    let dev = pgbench_with_spare_pool(6).await;
    let router = common::connect(&dev).await;
    router
        .batch_execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
        .await
        .unwrap();
    let s0 = dev.cluster.shards[0].name.clone();
    let spare = dev.cluster.shards[2].name.clone();
    let writers = Writers::start(&dev, 2).await;

    let cases = [
        ("split_after_capture", Then::Resume),
        ("split_in_copy", Then::Rollback),
        ("split_in_copy", Then::Resume),
        ("split_after_bootstrap", Then::Rollback),
        ("split_in_catchup", Then::Resume),
        ("split_in_catchup", Then::Rollback),
        ("split_in_cutover", Then::Rollback),
        ("split_in_cutover", Then::Resume),
        ("split_after_routing", Then::Resume),
        ("split_in_cleanup", Then::Resume),
    ];
    for (point, then) in cases {
        let range = spare_range(&dev).await;
        let (generation, _, _) = catalog_state(&dev).await;
        let mut args = vec!["start", "--keyspace", "main", "--max-window-ms", "1000"];
        let what = match &range {
            None => {
                args.extend(["--source", &s0, "--target", &spare]);
                "split"
            }
            Some(r) => {
                args.extend(["--source", &spare, "--target", &s0, "--range", r]);
                "merge"
            }
        };
        let (ok, out) = split_cli(&dev, &args, Some(point)).await;
        assert!(!ok, "{what} with {point} armed did not crash:\n{out}");
        assert!(out.contains(&format!("failpoint {point} reached")), "{out}");
        let (_, id, phase) = catalog_state(&dev).await;
        eprintln!("{what} job {id} crashed at {point} in phase {phase}; then {then:?}");
        let past_routing = matches!(phase.as_str(), "routed" | "cleanup");
        match then {
            Then::Resume => {
                if past_routing {
                    let (ok, out) = split_cli(&dev, &["rollback"], None).await;
                    assert!(!ok && out.contains("point of no return"), "{out}");
                }
                let (ok, out) = split_cli(&dev, &["resume"], None).await;
                assert!(ok, "resume after {point}: {out}");
                let (g, _, phase) = catalog_state(&dev).await;
                assert_eq!(phase, "completed", "{out}");
                assert_eq!(g, generation + 1, "the new routing is installed");
                assert_ne!(spare_range(&dev).await, range, "the range moved");
            }
            Then::Rollback => {
                assert!(!past_routing, "{point}: {phase}");
                let (ok, out) = split_cli(&dev, &["rollback"], None).await;
                assert!(ok, "rollback after {point}: {out}");
                let (g, _, phase) = catalog_state(&dev).await;
                assert_eq!(phase, "rolled_back", "{out}");
                assert_eq!(g, generation, "routing unchanged");
                assert_eq!(spare_range(&dev).await, range, "nothing moved");
                if range.is_none() {
                    // The spare owned nothing: what was created is gone.
                    let spare_direct = common::connect_direct(&dev.cluster.shards[2]).await;
                    assert_eq!(
                        table_rows(&spare_direct, "pgbench_accounts")
                            .await
                            .unwrap_or(0),
                        0
                    );
                }
            }
        }
        assert_nothing_left(&dev).await;
        assert!(assert_placement(&dev).await >= 100_000);
    }

    let updates = writers.finish().await;
    let sum: i64 = router
        .query_one("SELECT sum(abalance) FROM pgbench_accounts", &[])
        .await
        .unwrap()
        .get(0);
    eprintln!("{updates} updates through the crashes");
    assert!(updates > 100, "{updates}");
    assert_eq!(sum as u64, updates, "every update once, none lost");

    // The admin console lists the ten jobs as the catalog ended them (the
    // router reads them about once a second).
    let mut admin_cfg = tokio_postgres::Config::new();
    admin_cfg
        .host("127.0.0.1")
        .port(dev.router.addr.port())
        .user("postgres")
        .dbname("pgrouter");
    let (admin, conn) = admin_cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let mut phases = Vec::new();
    for _ in 0..50 {
        phases = admin
            .simple_query("SHOW SPLITS")
            .await
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some((
                    r.get("id").unwrap().to_string(),
                    r.get("phase").unwrap().to_string(),
                )),
                _ => None,
            })
            .collect::<Vec<_>>();
        if phases.len() == 10
            && phases
                .iter()
                .all(|(_, p)| p == "completed" || p == "rolled_back")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let completed = phases.iter().filter(|(_, p)| p == "completed").count();
    let rolled_back = phases.iter().filter(|(_, p)| p == "rolled_back").count();
    assert_eq!((completed, rolled_back), (6, 4), "{phases:?}");
}
