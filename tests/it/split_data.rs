//! Online resharding, the data steps against real shards: the initial copy
//! (step 3) under the exported snapshot and the CDC catch-up (step 4)
//! while pgbench writes through the router, a catch-up restarted after its
//! process "died", and a rollback that leaves the target as it was.

use std::time::Duration;

use pg_router::split::apply::Applier;
use pg_router::split::bootstrap::{self, BootstrapSettings};
use pg_router::split::capture::{self, CaptureSettings};
use pg_router::split::catchup::{self, CatchUpSettings, Until};
use pg_router::split::copy::{self, CopySettings};
use pg_router::split::progress::Quiet;
use pg_router::split::rollback::rollback;
use pg_router::split::wal::PgWalSource;
use pg_router::split::{self, store, Phase, RangeChoice};
use pg_router::topology::KeyRange;
use pg_router::vindex::KeyType;

use crate::common;
use crate::split::{
    capture_state, dev_access, pgbench_with_spare_pool, table_rows, wait_no_capture,
};

/// Sorted `t::text` of the rows of `table` on `c` whose key column `key`
/// (parsed as `kt`, hashed by murmur3) is in `range`; all rows if `range`
/// is None.
async fn rows_in(
    c: &tokio_postgres::Client,
    table: &str,
    key: &str,
    kt: KeyType,
    range: Option<KeyRange>,
) -> Vec<String> {
    let mut out: Vec<String> = c
        .query(&format!("select {key}::text, t::text from {table} t"), &[])
        .await
        .unwrap()
        .iter()
        .filter(|r| {
            let Some(range) = range else { return true };
            let k: Option<String> = r.get(0);
            k.is_some_and(|k| {
                let v = kt.parse_text(&k).unwrap();
                range.contains(pg_router::vindex::VindexKind::HashMurmur3.keyspace_id(&v))
            })
        })
        .map(|r| r.get(1))
        .collect();
    out.sort();
    out
}

const TABLES: [(&str, &str, KeyType); 5] = [
    ("pgbench_accounts", "aid", KeyType::Int),
    ("pgbench_branches", "bid", KeyType::Int),
    ("pgbench_tellers", "tid", KeyType::Int),
    ("pgbench_history", "aid", KeyType::Int),
    ("docs", "id", KeyType::Text),
];

/// The target holds exactly the source's rows of `range`, table by table.
async fn assert_moved(
    source: &tokio_postgres::Client,
    target: &tokio_postgres::Client,
    range: KeyRange,
) -> usize {
    let mut total = 0;
    for (t, k, kt) in TABLES {
        let want = rows_in(source, t, k, kt, Some(range)).await;
        let have = rows_in(target, t, k, kt, None).await;
        assert_eq!(have.len(), want.len(), "{t}: row counts");
        assert!(have == want, "{t}: rows differ");
        total += want.len();
    }
    total
}

fn pgbench(dev: &pg_router::dev::DevCluster, secs: u32) -> tokio::task::JoinHandle<String> {
    let mut args: Vec<String> = ["-n", "-c", "2", "-T", &secs.to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(common::conn_args(dev));
    let bin = dev.cluster.bin("pgbench");
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(bin)
            .args(&args)
            .output()
            .expect("run pgbench");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "pgbench failed: {text}");
        text
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_and_catch_up_move_exactly_the_range() {
    // Two backend connections per shard on each of the router's two
    // workers: two pgbench clients on one worker, each holding one shard
    // and waiting for the other's (TPC-B touches both shards in either
    // order), would otherwise wait out the checkout timeout.
    let dev = pgbench_with_spare_pool(4).await;
    let router = common::connect(&dev).await;
    router
        .batch_execute(
            "ALTER TABLE pgbench_history REPLICA IDENTITY FULL; \
             CREATE TABLE docs (id text PRIMARY KEY, n int NOT NULL, body text, \
                                n2 int GENERATED ALWAYS AS (n * 2) STORED)",
        )
        .await
        .unwrap();
    common::add_table(&dev, "docs", "id", "text").await;
    // Bodies of ~6 kB of random hex: stored out of line (TOAST).
    for i in 0..120 {
        let body: String = (0..6000)
            .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap())
            .collect();
        router
            .execute(
                "INSERT INTO docs (id, n, body) VALUES ($1, $2, $3)",
                &[&format!("doc-{i}"), &i, &body],
            )
            .await
            .unwrap();
    }
    let cat = common::connect_direct(&dev.cluster.catalog).await;
    let s0 = dev.cluster.shards[0].name.clone();
    let spare = dev.cluster.shards[2].name.clone();
    let catalog = pg_router::catalog::load(&cat).await.unwrap();
    let spec = split::plan(
        &catalog.keyspaces["main"].routing,
        &s0,
        &spare,
        RangeChoice::UpperHalf,
    )
    .unwrap();
    let range = spec.range;
    let job = store::create(&cat, &spec).await.unwrap();
    let access = dev_access();
    let src_info = catalog.shards[&s0].clone();
    let tgt_info = catalog.shards[&spare].clone();
    let source = access.connect(&src_info).await.unwrap();
    let target = access.connect(&tgt_info).await.unwrap();
    let env = split::JobEnv {
        cat: &cat,
        catalog: &catalog,
        access: &access,
        source_info: &src_info,
        target_info: &tgt_info,
        source: &source,
        target: &target,
    };
    let pg_bin = dev.cluster.bin("pg_dump").parent().unwrap().to_path_buf();
    let new_wal = |id| {
        PgWalSource::new(
            &s0,
            access.replication_conninfo(&src_info, id),
            Duration::from_secs(5),
        )
    };
    // The spare has every table (DDL reached it) but none of its own: step
    // 2 creates none; drop one so that one is created (post-data after the
    // copy).
    let spare_direct = common::connect_direct(&dev.cluster.shards[2]).await;
    spare_direct.batch_execute("DROP TABLE docs").await.unwrap();

    let load = pgbench(&dev, 6);
    let cap = capture::run(env, &job, new_wal(job.id), &CaptureSettings::default())
        .await
        .expect("capture");
    let job = store::load(&cat, job.id).await.unwrap().unwrap();
    bootstrap::run(
        env,
        &job,
        &BootstrapSettings {
            pg_bin: pg_bin.clone(),
        },
    )
    .await
    .expect("bootstrap");
    let job = store::load(&cat, job.id).await.unwrap().unwrap();
    assert_eq!(job.created_tables, vec!["docs".to_string()]);
    // Changes after the snapshot of every kind the apply handles: an
    // UPDATE leaving a TOASTed column unchanged, keys moving into and out
    // of the range, DELETE, TRUNCATE.
    let direct = common::connect_direct(&dev.cluster.shards[0]).await;
    // Each its own transaction: the renames and updates go through the
    // pipelined apply (a row renamed into the range matches no row there
    // and falls back to statement by statement), the TRUNCATE not.
    for sql in [
        "UPDATE docs SET n = n + 1000",
        "UPDATE docs SET id = id || '-renamed' WHERE n % 3 = 0",
        "BEGIN; UPDATE docs SET n = n + 1 WHERE n % 3 = 1; \
         UPDATE docs SET id = id || '-again' WHERE n % 3 = 2; COMMIT",
        "DELETE FROM docs WHERE n % 7 = 0",
        "INSERT INTO docs (id, n, body) VALUES ('late', 1, 'x')",
        "TRUNCATE pgbench_history",
    ] {
        direct.batch_execute(sql).await.unwrap();
    }
    let settings = CopySettings {
        parallel_tables: 2,
        pg_bin,
    };
    let report = copy::run(env, &job, &cap.snapshot, &settings, &Quiet)
        .await
        .expect("copy");
    let accounts = report
        .tables
        .iter()
        .find(|t| t.table == "pgbench_accounts")
        .unwrap();
    assert!(accounts.done && accounts.rows_read >= accounts.rows_copied);
    assert!(
        accounts.rows_copied > 10_000 && accounts.rows_copied < accounts.rows_read,
        "{accounts:?}"
    );
    let job = store::load(&cat, job.id).await.unwrap().unwrap();
    assert_eq!(job.phase, Phase::Copy);
    // The created table got its primary key after the copy.
    let pk: i64 = spare_direct
        .query_one(
            "select count(*) from pg_index where indrelid = 'docs'::regclass and indisprimary",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pk, 1);

    // Catch up while pgbench keeps writing, then until a fence after it.
    let mut wal = cap.wal;
    let mut applier: Applier = catchup::start(env, &job, &mut wal).await.expect("start");
    let job = store::load(&cat, job.id).await.unwrap().unwrap();
    assert_eq!(job.phase, Phase::CatchUp);
    let cs = CatchUpSettings::default();
    catchup::run(
        env,
        &job,
        &mut wal,
        &mut applier,
        &Until::LagBelow(1 << 20),
        &cs,
        &Quiet,
    )
    .await
    .expect("catch up");
    let out = load.await.unwrap();
    assert!(out.contains("number of failed transactions: 0"), "{out}");
    let fence = catchup::emit_fence(&source, &s0, job.id, b"one")
        .await
        .unwrap();
    assert!(fence > 0);
    // The fence is flushed as it is emitted, though the test shards commit
    // asynchronously: the walsender can send it (and all before it) at once
    // instead of after the WAL writer's next round.
    let flushed: bool = source
        .query_one(
            "select pg_current_wal_flush_lsn() >= $1::text::pg_lsn",
            &[&pg_router::split::change::lsn_text(fence)],
        )
        .await
        .unwrap()
        .get(0);
    assert!(flushed, "the fence is not flushed");
    let p = catchup::run(
        env,
        &job,
        &mut wal,
        &mut applier,
        &Until::Fence(b"one".to_vec()),
        &cs,
        &Quiet,
    )
    .await
    .expect("apply to the fence");
    assert!(p.transactions > 0 && p.changes > 0, "{p:?}");
    // The backlog pgbench left during the copy was applied in groups.
    assert!(p.commits > 0 && p.commits < p.transactions, "{p:?}");
    let moved = assert_moved(&source, &target, range).await;
    assert!(moved > 10_000, "{moved}");
    let docs_on_target = table_rows(&target, "docs").await.unwrap();
    assert!(docs_on_target > 0);
    let recorded = store::load(&cat, job.id).await.unwrap().unwrap();
    let row = cat
        .query_one(
            "select confirmed_lsn::text, lag_bytes, progress->'catchup'->>'transactions' \
               from pgrouter.split_jobs where id = $1",
            &[&recorded.id],
        )
        .await
        .unwrap();
    assert!(row.get::<_, Option<String>>(0).is_some());
    assert!(row.get::<_, Option<String>>(2).is_some());

    // The process "dies" (stream and apply dropped without a word); more
    // writes; a new process resumes from the slot's confirmed position and
    // applies every transaction exactly once.
    drop(applier);
    drop(wal);
    let load = pgbench(&dev, 2);
    direct
        .batch_execute("UPDATE docs SET n = n + 1; DELETE FROM docs WHERE n % 5 = 0")
        .await
        .unwrap();
    let out = load.await.unwrap();
    assert!(out.contains("number of failed transactions: 0"), "{out}");
    // Wait for the old walsender to let go of the slot.
    let mut wal = new_wal(job.id);
    let mut tries = 0;
    let mut applier = loop {
        match catchup::start(env, &recorded, &mut wal).await {
            Ok(a) => break a,
            Err(e) => {
                tries += 1;
                assert!(tries < 50, "restart: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                wal = new_wal(job.id);
            }
        }
    };
    catchup::emit_fence(&source, &s0, job.id, b"two")
        .await
        .unwrap();
    catchup::run(
        env,
        &recorded,
        &mut wal,
        &mut applier,
        &Until::Fence(b"two".to_vec()),
        &cs,
        &Quiet,
    )
    .await
    .expect("apply to the second fence");
    assert_moved(&source, &target, range).await;

    // Rollback: slot, publication, origin gone; the created table dropped;
    // the copied rows removed from the tables that were there before.
    drop(applier);
    drop(wal);
    let job = store::load(&cat, job.id).await.unwrap().unwrap();
    rollback(env, &job, None).await.expect("rollback");
    wait_no_capture(&direct).await;
    assert_eq!(capture_state(&direct).await, (0, 0, 0));
    assert_eq!(table_rows(&spare_direct, "docs").await, None);
    for t in [
        "pgbench_accounts",
        "pgbench_branches",
        "pgbench_tellers",
        "pgbench_history",
    ] {
        assert_eq!(table_rows(&spare_direct, t).await, Some(0), "{t}");
    }
    let origins: i64 = spare_direct
        .query_one("select count(*) from pg_replication_origin", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(origins, 0);
    assert_eq!(
        store::load(&cat, job.id).await.unwrap().unwrap().phase,
        Phase::RolledBack
    );
}
