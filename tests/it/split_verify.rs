//! Verification while a write transaction stays open on the source: its
//! temporary slot cannot export a snapshot until the transaction ends, so
//! the wait is bounded (`capture.slot_timeout`), recorded with the blocker
//! named (`progress.verify_waits`), and verification is taken again after a
//! catch-up; once the transaction commits, the job verifies, cuts over and
//! completes, with the transaction's row on the target.

use std::time::{Duration, Instant};

use pg_router::split::capture::CaptureSettings;
use pg_router::split::cutover::CutoverSettings;
use pg_router::split::progress::Quiet;
use pg_router::split::run::{drive, JobContext, RunSettings};
use pg_router::split::{self, store, Phase, RangeChoice};
use pg_router::vindex::{KeyValue, VindexKind};

use crate::common;
use crate::split::{capture_state, dev_access, pgbench_with_spare_pool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_waits_for_an_open_writer_bounded_then_verifies() {
    let dev = pgbench_with_spare_pool(4).await;
    let router = common::connect(&dev).await;
    router
        .batch_execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
        .await
        .unwrap();
    let cat = common::connect_direct(&dev.cluster.catalog).await;
    let catalog = pg_router::catalog::load(&cat).await.unwrap();
    let s0 = dev.cluster.shards[0].name.clone();
    let spare = dev.cluster.shards[2].name.clone();
    let spec = split::plan(
        &catalog.keyspaces["main"].routing,
        &s0,
        &spare,
        RangeChoice::UpperHalf,
    )
    .unwrap();
    let aid = (1..=100_000i64)
        .find(|aid| {
            spec.range
                .contains(VindexKind::HashMurmur3.keyspace_id(&KeyValue::Int(*aid)))
        })
        .unwrap();
    let job = store::create(&cat, &spec).await.unwrap();
    let ctx = JobContext::open(
        common::connect_direct(&dev.cluster.catalog).await,
        dev_access(),
        &job,
    )
    .await
    .unwrap();
    let settings = RunSettings {
        capture: CaptureSettings {
            slot_timeout: Duration::from_millis(800),
            ..Default::default()
        },
        parallel_tables: 2,
        pg_bin: dev.cluster.bin("pg_dump").parent().unwrap().to_path_buf(),
        catchup: Default::default(),
        cutover: CutoverSettings {
            attempts: 20,
            ..Default::default()
        },
        verify: true,
        manual_cutover: false,
    };
    let direct = common::connect_direct(&dev.cluster.shards[0]).await;
    let pid: i32 = direct
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    // The job runs in this task (its replication stream is not Send).
    let steer = async {
        // After step 1 (whose own slot would wait too), before verification.
        let t0 = Instant::now();
        loop {
            let phase = store::load(&cat, job.id).await.unwrap().unwrap().phase;
            if matches!(phase, Phase::Bootstrap | Phase::Copy) {
                break;
            }
            assert!(
                !matches!(phase, Phase::CatchUp | Phase::Cutover | Phase::Completed),
                "the job reached {phase:?} before the test could open its transaction"
            );
            assert!(t0.elapsed() < Duration::from_secs(60), "no bootstrap");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        direct
            .batch_execute(&format!(
                "BEGIN; INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
                 VALUES (1, 1, {aid}, 515151, now())"
            ))
            .await
            .unwrap();
        let t0 = Instant::now();
        let wait = loop {
            let w: Option<String> = cat
                .query_one(
                    "select progress #>> '{verify_waits,error}' from pgrouter.split_jobs where id = $1",
                    &[&job.id],
                )
                .await
                .unwrap()
                .get(0);
            if let Some(w) = w {
                break w;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "verification never reported its wait"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The wait was given up: its walsender is gone (the next attempt's
        // may be waiting by now).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let verify_slots: i64 = direct
            .query_one(
                "select count(*) from pg_replication_slots where slot_name like '%\\_verify'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        direct.batch_execute("COMMIT").await.unwrap();
        (wait, verify_slots)
    };
    let (phase, (wait, verify_slots)) = tokio::join!(
        tokio::time::timeout(
            Duration::from_secs(120),
            drive(&ctx, job.id, &settings, &Quiet)
        ),
        steer
    );
    let phase = phase
        .expect("the job ends within 2 minutes")
        .expect("the job completes");
    assert_eq!(phase, Phase::Completed);
    eprintln!("verification wait: {wait}");
    assert!(
        wait.contains(&format!("pid {pid} ")) && wait.contains("_verify"),
        "{wait}"
    );
    assert!(verify_slots <= 1, "{verify_slots}");
    let r = cat
        .query_one(
            "select (verification->>'ok')::bool from pgrouter.split_jobs where id = $1",
            &[&job.id],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, Option<bool>>(0), Some(true), "verified");
    let target = common::connect_direct(&dev.cluster.shards[2]).await;
    let moved: i64 = target
        .query_one(
            "select count(*) from pgbench_history where delta = 515151",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(moved, 1, "the writer's row is on the target");
    assert_eq!(capture_state(&direct).await, (0, 0, 0), "nothing left");
}
