//! Online resharding end to end: shard0 of a 2-shard pgbench keyspace is
//! split onto a spare shard and merged back, each while pgbench TPC-B runs
//! through **two** routers on the same catalog. Checked: no failed client
//! transaction, the TPC-B balance invariant, every row on the shard its
//! vindex names under the new routing (recomputed here), no slot,
//! publication or origin left, the job's window recorded.

use std::time::Duration;

use pg_router::split::progress::Quiet;
use pg_router::split::run::{drive, JobContext, RunSettings};
use pg_router::split::{self, store, Phase, RangeChoice};
use pg_router::vindex::{KeyType, KeyValue, VindexKind};

use crate::common;
use crate::split::{capture_state, dev_access, pgbench_with_spare_pool};

/// pgbench against a router for `secs` seconds, in the background.
fn pgbench(
    port: u16,
    bin: std::path::PathBuf,
    extra: &[&str],
    secs: u32,
) -> tokio::task::JoinHandle<String> {
    let mut args: Vec<String> = ["-n", "-c", "2", "-T", &secs.to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(
        ["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"]
            .iter()
            .map(|s| s.to_string()),
    );
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(bin)
            .args(&args)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("run pgbench");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn assert_clean_run(out: &str) {
    eprintln!(
        "{}",
        out.lines()
            .filter(|l| l.starts_with("tps") || l.contains("processed"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert!(
        out.contains("number of failed transactions: 0"),
        "pgbench saw failures: {out}"
    );
    assert!(!out.contains("ERROR") && !out.contains("aborted"), "{out}");
}

/// Sums through the router: accounts, branches, tellers, history.
async fn balances(c: &tokio_postgres::Client) -> [i64; 4] {
    let mut out = [0; 4];
    for (i, q) in [
        "SELECT sum(abalance) FROM pgbench_accounts",
        "SELECT sum(bbalance) FROM pgbench_branches",
        "SELECT sum(tbalance) FROM pgbench_tellers",
        "SELECT sum(delta) FROM pgbench_history",
    ]
    .iter()
    .enumerate()
    {
        out[i] = c
            .query_one(*q, &[])
            .await
            .unwrap()
            .get::<_, Option<i64>>(0)
            .unwrap_or(0);
    }
    out
}

/// Every row of every pgbench table sits on the shard the catalog's
/// current routing names for its key. On failure the message counts the
/// misplaced rows per table and instance (with a few keys and their
/// `xmin`) and prints the routing.
pub(crate) async fn assert_placement(dev: &pg_router::dev::DevCluster) -> usize {
    let cat = common::connect_direct(&dev.cluster.catalog).await;
    let catalog = pg_router::catalog::load(&cat).await.unwrap();
    let routing = &catalog.keyspaces["main"].routing;
    let mut rows = 0;
    let mut misplaced = Vec::new();
    for inst in &dev.cluster.shards {
        let c = common::connect_direct(inst).await;
        for (t, k) in [
            ("pgbench_accounts", "aid"),
            ("pgbench_branches", "bid"),
            ("pgbench_tellers", "tid"),
            ("pgbench_history", "aid"),
        ] {
            let (mut wrong, mut examples) = (0usize, Vec::new());
            for r in c
                .query(&format!("select {k}::int8, xmin::text from {t}"), &[])
                .await
                .unwrap()
            {
                let key: i64 = r.get(0);
                let id = VindexKind::HashMurmur3.keyspace_id(&KeyValue::Int(key));
                if routing.shard_for(id) != inst.name {
                    wrong += 1;
                    if examples.len() < 5 {
                        examples.push(format!(
                            "{key} (xmin {}, belongs on {})",
                            r.get::<_, String>(1),
                            routing.shard_for(id)
                        ));
                    }
                }
                rows += 1;
            }
            if wrong > 0 {
                misplaced.push(format!(
                    "{wrong} rows of {t} on {}: {examples:?}",
                    inst.name
                ));
            }
        }
    }
    assert!(
        misplaced.is_empty(),
        "rows on the wrong shard: {misplaced:#?}\nrouting: {:?}",
        routing.ranges()
    );
    let _ = KeyType::Int;
    rows
}

fn settings(dev: &pg_router::dev::DevCluster) -> RunSettings {
    RunSettings {
        capture: Default::default(),
        parallel_tables: 2,
        pg_bin: dev.cluster.bin("pg_dump").parent().unwrap().to_path_buf(),
        catchup: Default::default(),
        cutover: Default::default(),
        verify: true,
        manual_cutover: false,
    }
}

/// Plans, records and drives one move to its end; returns the window, ms.
async fn move_range(
    dev: &pg_router::dev::DevCluster,
    source: &str,
    target: &str,
    choice: RangeChoice,
) -> f64 {
    let cat = common::connect_direct(&dev.cluster.catalog).await;
    let catalog = pg_router::catalog::load(&cat).await.unwrap();
    let spec = split::plan(&catalog.keyspaces["main"].routing, source, target, choice).unwrap();
    let job = store::create(&cat, &spec).await.unwrap();
    let ctx = JobContext::open(cat, dev_access(), &job).await.unwrap();
    let phase = drive(&ctx, job.id, &settings(dev), &Quiet)
        .await
        .expect("the job runs to its end");
    assert_eq!(phase, Phase::Completed);
    let r = ctx
        .cat
        .query_one(
            "select cutover_window_ms, (verification->>'ok')::bool, generation \
               from pgrouter.split_jobs where id = $1",
            &[&job.id],
        )
        .await
        .unwrap();
    let window: f64 = r.get(0);
    let t: String = ctx
        .cat
        .query_one(
            "select (progress->'cutover')::text from pgrouter.split_jobs where id = $1",
            &[&job.id],
        )
        .await
        .unwrap()
        .get(0);
    eprintln!("cutover timings: {t}");
    assert_eq!(r.get::<_, Option<bool>>(1), Some(true), "verified");
    let blocks: i64 = ctx
        .cat
        .query_one("select count(*) from pgrouter.write_blocks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(blocks, 0);
    window
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_merge_under_load_through_two_routers() {
    let dev = pgbench_with_spare_pool(12).await;
    let router = common::connect(&dev).await;
    router
        .batch_execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
        .await
        .unwrap();
    let mut cfg2 = dev.router.config.clone();
    cfg2.listen = "127.0.0.1:0".into();
    let r2 = pg_router::dev::start_router(&cfg2)
        .await
        .expect("second router");
    let bin = dev.cluster.bin("pgbench");
    let s0 = dev.cluster.shards[0].name.clone();
    let spare = dev.cluster.shards[2].name.clone();
    let before = balances(&router).await;
    assert_eq!(before, [0; 4]);

    // Split shard0's upper half onto the spare while both routers write.
    let a = pgbench(dev.router.addr.port(), bin.clone(), &[], 12);
    let b = pgbench(r2.addr.port(), bin.clone(), &[], 12);
    let c = pgbench(r2.addr.port(), bin.clone(), &["-S"], 12);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let window = move_range(&dev, &s0, &spare, RangeChoice::UpperHalf).await;
    eprintln!("split window {window:.1} ms");
    assert!(window > 0.0, "{window}");
    for h in [a, b, c] {
        assert_clean_run(&h.await.unwrap());
    }
    let after = balances(&router).await;
    assert_eq!(after[0], after[1], "TPC-B: accounts = branches {after:?}");
    assert_eq!(after[1], after[2], "TPC-B: branches = tellers {after:?}");
    assert_eq!(after[2], after[3], "TPC-B: tellers = history {after:?}");
    assert!(assert_placement(&dev).await >= 100_000);
    let direct0 = common::connect_direct(&dev.cluster.shards[0]).await;
    assert_eq!(capture_state(&direct0).await.0, 0, "no slot on the source");
    let spare_direct = common::connect_direct(&dev.cluster.shards[2]).await;
    let spare_rows: i64 = spare_direct
        .query_one("select count(*) from pgbench_accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert!(spare_rows > 10_000, "{spare_rows}");
    let origins: i64 = spare_direct
        .query_one("select count(*) from pg_replication_origin", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(origins, 0);

    // Merge it back: the spare's whole range onto shard0.
    let cat = common::connect_direct(&dev.cluster.catalog).await;
    let catalog = pg_router::catalog::load(&cat).await.unwrap();
    let routing = &catalog.keyspaces["main"].routing;
    let moved = routing
        .ranges()
        .iter()
        .find(|r| r.shard == spare)
        .expect("the spare owns a range")
        .range;
    let a = pgbench(dev.router.addr.port(), bin.clone(), &[], 10);
    let b = pgbench(r2.addr.port(), bin.clone(), &[], 10);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let window = move_range(&dev, &spare, &s0, RangeChoice::Range(moved)).await;
    eprintln!("merge window {window:.1} ms");
    for h in [a, b] {
        assert_clean_run(&h.await.unwrap());
    }
    let merged = balances(&router).await;
    assert_eq!(merged[0], merged[1], "{merged:?}");
    assert_eq!(merged[1], merged[2], "{merged:?}");
    assert_eq!(merged[2], merged[3], "{merged:?}");
    assert!(merged[3] != after[3], "the second run wrote");
    assert!(assert_placement(&dev).await >= 100_000);
    let catalog = pg_router::catalog::load(&cat).await.unwrap();
    assert!(!catalog.keyspaces["main"].routing.shards().contains(&spare));
    assert_eq!(
        catalog.keyspaces["main"].routing.ranges().len(),
        2,
        "coalesced"
    );
    assert_eq!(capture_state(&spare_direct).await.0, 0);
    r2.stop().await;
}

/// Runs `pg-router split --catalog <dsn> <args>`; (success, stdout, stderr).
fn split_cli(dev: &pg_router::dev::DevCluster, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pg-router"))
        .args(["split", "--catalog", &dev.catalog_dsn()])
        .args(args)
        .env("PG_BIN_DIR", dev.cluster.bin("pg_dump").parent().unwrap())
        .output()
        .expect("run pg-router split");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_cli_runs_a_job_and_reports_it() {
    let dev = pgbench_with_spare_pool(4).await;
    let router = common::connect(&dev).await;
    let s0 = dev.cluster.shards[0].name.clone();
    let spare = dev.cluster.shards[2].name.clone();
    // pgbench_history has no replica identity: refused, named, nothing
    // left behind, the job failed.
    let (ok, _, err) = split_cli(
        &dev,
        &[
            "start",
            "--keyspace",
            "main",
            "--source",
            &s0,
            "--target",
            &spare,
        ],
    );
    assert!(!ok, "{err}");
    assert!(
        err.contains("'pgbench_history'") && err.contains("REPLICA IDENTITY FULL"),
        "{err}"
    );
    let (ok, out, err) = split_cli(&dev, &["status", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["phase"], "failed", "{v}");
    let direct0 = common::connect_direct(&dev.cluster.shards[0]).await;
    assert_eq!(capture_state(&direct0).await.0, 0);

    router
        .batch_execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
        .await
        .unwrap();
    let (ok, out, err) = split_cli(
        &dev,
        &[
            "start",
            "--keyspace",
            "main",
            "--source",
            &s0,
            "--target",
            &spare,
        ],
    );
    assert!(ok, "start: {out}{err}");
    assert!(
        out.contains("phase completed") && out.contains("cutover window"),
        "{out}"
    );
    let (ok, out, _) = split_cli(&dev, &["status", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["phase"], "completed", "{v}");
    assert!(
        v["cutover_window_ms"].as_f64().is_some_and(|w| w > 0.0),
        "{v}"
    );
    assert_eq!(v["verification"]["ok"], true, "{v}");
    assert!(
        v["progress"]["copy"]["pgbench_accounts"]["rows_copied"]
            .as_u64()
            .unwrap()
            > 10_000
    );
    // Past the point of no return: no rollback.
    let (ok, _, err) = split_cli(&dev, &["rollback", "--job", &v["id"].to_string()]);
    assert!(!ok && err.contains("point of no return"), "{err}");
    // Reads and writes through the router see the moved rows.
    let n: i64 = router
        .query_one("SELECT count(*) FROM pgbench_accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 100_000);
    router
        .batch_execute("UPDATE pgbench_accounts SET abalance = abalance + 1")
        .await
        .unwrap();
    let s: i64 = router
        .query_one("SELECT sum(abalance) FROM pgbench_accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(s, 100_000);
    assert!(assert_placement(&dev).await >= 100_000);
}
