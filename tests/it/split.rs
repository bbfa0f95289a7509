//! Online resharding against a real catalog: planning a split from the
//! loaded routing, the job row's lifecycle in `pgrouter.split_jobs`
//! (one active job per keyspace, compare-and-set phases, stale plans,
//! unknown shards).

use pg_router::split::{self, store, Phase, RangeChoice, SplitError};

use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_jobs_are_recorded_once_per_keyspace() {
    let dev = common::start(2, 2).await;
    let cat = common::connect_direct(&dev.cluster.catalog).await;
    let s0 = dev.cluster.shards[0].name.clone();
    let s1 = dev.cluster.shards[1].name.clone();
    // A target shard: registered, owning nothing (its address is never
    // used by these steps).
    let port = dev.cluster.shards[1].port.to_string();
    common::meta(
        &dev,
        &[
            "add-shard",
            "--name",
            "spare0",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
        ],
    );
    let catalog = pg_router::catalog::load(&cat).await.expect("load catalog");
    let routing = &catalog.keyspaces["main"].routing;
    let spec = split::plan(routing, &s0, "spare0", RangeChoice::UpperHalf).unwrap();
    assert_eq!(spec.range.end, Some(1 << 63), "{spec:?}");

    let job = store::create(&cat, &spec).await.expect("create");
    assert_eq!(job.phase, Phase::Created);
    assert_eq!(job.spec, spec);
    assert_eq!(
        store::active(&cat, "main").await.unwrap(),
        Some(job.clone())
    );

    // A second job of the keyspace is refused, naming the running one.
    let other = split::plan(routing, &s1, "spare0", RangeChoice::UpperHalf).unwrap();
    let e = store::create(&cat, &other).await.unwrap_err();
    assert!(matches!(e, SplitError::JobRunning { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("split job {}", job.id)) && msg.contains(&s0),
        "{msg}"
    );

    // Phases move by compare-and-set.
    store::advance(&cat, job.id, Phase::Created, Phase::Capture)
        .await
        .unwrap();
    let e = store::advance(&cat, job.id, Phase::Created, Phase::Capture)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            SplitError::PhaseChanged {
                found: Phase::Capture,
                ..
            }
        ),
        "{e}"
    );
    store::record_capture(&cat, job.id, "pgr_split_1", "pgr_split_1", "0/16B3748")
        .await
        .unwrap();
    store::set_error(&cat, job.id, "boom").await.unwrap();
    let j = store::load(&cat, job.id).await.unwrap().unwrap();
    assert_eq!(j.slot_name.as_deref(), Some("pgr_split_1"));
    assert_eq!(j.snapshot_lsn.as_deref(), Some("0/16B3748"));
    assert_eq!(j.error.as_deref(), Some("boom"));
    // Recording a capture outside phase capture is refused.
    store::advance(&cat, job.id, Phase::Capture, Phase::RolledBack)
        .await
        .unwrap();
    let e = store::record_capture(&cat, job.id, "x", "x", "0/1")
        .await
        .unwrap_err();
    assert!(matches!(e, SplitError::PhaseChanged { .. }), "{e}");
    assert!(store::load(&cat, job.id)
        .await
        .unwrap()
        .unwrap()
        .error
        .is_none());

    // The job ended: the keyspace takes a new one.
    assert_eq!(store::active(&cat, "main").await.unwrap(), None);
    let next = store::create(&cat, &other)
        .await
        .expect("second job after the first ended");
    assert_eq!(store::list(&cat).await.unwrap().len(), 2);
    assert!(next.id > job.id);

    // Stale plans and unknown shards.
    store::advance(&cat, next.id, Phase::Created, Phase::RolledBack)
        .await
        .unwrap();
    let mut stale = spec.clone();
    stale.generation += 1;
    let e = store::create(&cat, &stale).await.unwrap_err();
    assert!(matches!(e, SplitError::StalePlan { .. }), "{e}");
    let mut unknown = spec.clone();
    unknown.target = "nowhere".into();
    let e = store::create(&cat, &unknown).await.unwrap_err();
    assert!(
        matches!(e, SplitError::UnknownShard(ref s) if s == "nowhere"),
        "{e}"
    );
    assert!(matches!(store::load(&cat, 999_999).await, Ok(None)));
    assert!(matches!(
        store::advance(&cat, 999_999, Phase::Created, Phase::Capture).await,
        Err(SplitError::NoSuchJob(999_999))
    ));
}

/// Counts of `pg_replication_slots`, `pg_publication` and walsenders on a
/// shard.
pub(crate) async fn capture_state(c: &tokio_postgres::Client) -> (i64, i64, i64) {
    let r = c
        .query_one(
            "select (select count(*) from pg_replication_slots), \
                    (select count(*) from pg_publication), \
                    (select count(*) from pg_stat_activity where backend_type = 'walsender')",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

/// Waits (up to 5 s) until a shard has no slot, publication or walsender.
pub(crate) async fn wait_no_capture(c: &tokio_postgres::Client) {
    for _ in 0..50 {
        if capture_state(c).await == (0, 0, 0) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(capture_state(c).await, (0, 0, 0));
}

/// Two shards and a spare (`shard2`), `pgbench -i -s 1` through the router.
pub(crate) async fn pgbench_with_spare() -> pg_router::dev::DevCluster {
    pgbench_with_spare_pool(2).await
}

/// [`pgbench_with_spare`] with `pool` backend connections per shard.
pub(crate) async fn pgbench_with_spare_pool(pool: usize) -> pg_router::dev::DevCluster {
    let dev = common::start_spare(2, 1, pool).await;
    let mut args = vec!["-i", "-s", "1", "-q"];
    let conn = common::conn_args(&dev);
    args.extend(conn.iter().map(String::as_str));
    let (ok, out, err) = common::run_pg_tool(&dev, "pgbench", &args);
    assert!(ok, "pgbench -i: {out}{err}");
    dev
}

/// The split job's shard access in the dev cluster (trust auth).
pub(crate) fn dev_access() -> pg_router::split::shards::ShardAccess {
    pg_router::split::shards::ShardAccess {
        user: "postgres".into(),
        password: None,
        connect_timeout: std::time::Duration::from_secs(5),
        tls: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_creates_slot_and_snapshot_refuses_and_rolls_back() {
    use pg_router::split::capture::{self, CaptureSettings};
    use pg_router::split::rollback::rollback;
    use pg_router::split::wal::PgWalSource;
    use std::time::Duration;

    let dev = pgbench_with_spare().await;
    let cat = common::connect_direct(&dev.cluster.catalog).await;
    let s0 = dev.cluster.shards[0].name.clone();
    let spare = dev.cluster.shards[2].name.clone();
    let catalog = pg_router::catalog::load(&cat).await.unwrap();
    assert!(
        !catalog.keyspaces["main"].routing.shards().contains(&spare),
        "a spare shard owns no key range"
    );
    let spec = split::plan(
        &catalog.keyspaces["main"].routing,
        &s0,
        &spare,
        RangeChoice::UpperHalf,
    )
    .unwrap();
    let job = store::create(&cat, &spec).await.unwrap();
    let access = dev_access();
    let info = catalog.shards[&s0].clone();
    let source = access.connect(&info).await.unwrap();
    let tgt_info = catalog.shards[&spare].clone();
    let target = access.connect(&tgt_info).await.unwrap();
    let env = split::JobEnv {
        cat: &cat,
        catalog: &catalog,
        access: &access,
        source_info: &info,
        target_info: &tgt_info,
        source: &source,
        target: &target,
    };
    let direct = common::connect_direct(&dev.cluster.shards[0]).await;
    let wal = |id| {
        PgWalSource::new(
            &s0,
            access.replication_conninfo(&info, id),
            Duration::from_secs(5),
        )
    };
    let settings = CaptureSettings {
        slot_timeout: Duration::from_millis(1500),
        recovery_grace_ms: 60_000,
    };

    // pgbench_history has neither a primary key nor a replica identity.
    let e = capture::run(env, &job, wal(job.id), &settings)
        .await
        .err()
        .expect("pgbench_history refused");
    let msg = e.to_string();
    assert!(matches!(e, SplitError::TablesRefused { .. }), "{msg}");
    assert!(
        msg.contains("'pgbench_history'") && msg.contains("REPLICA IDENTITY FULL"),
        "{msg}"
    );
    assert!(!msg.contains("pgbench_accounts"), "{msg}");
    assert_eq!(capture_state(&direct).await, (0, 0, 0));
    let router = common::connect(&dev).await;
    router
        .batch_execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
        .await
        .unwrap();

    // A prepared transaction blocks the slot: the wait is bounded, the
    // blocker named, nothing left behind.
    direct
        .batch_execute(
            "BEGIN; INSERT INTO pgbench_history (tid, bid, aid, delta) VALUES (1, 1, 1, 1); \
             PREPARE TRANSACTION 'manual_block'",
        )
        .await
        .unwrap();
    let job = store::load(&cat, job.id).await.unwrap().unwrap();
    assert_eq!(job.phase, Phase::Capture);
    let e = capture::run(env, &job, wal(job.id), &settings)
        .await
        .err()
        .expect("slot creation times out");
    let msg = e.to_string();
    assert!(matches!(e, SplitError::SlotTimeout { .. }), "{msg}");
    assert!(msg.contains("'manual_block'"), "{msg}");
    // The cancelled walsender goes away.
    wait_no_capture(&direct).await;
    direct
        .batch_execute("ROLLBACK PREPARED 'manual_block'")
        .await
        .unwrap();

    // A router's in-doubt transaction with a commit decision is committed
    // first; then the slot is created.
    direct
        .batch_execute(
            "BEGIN; INSERT INTO pgbench_history (tid, bid, aid, delta) VALUES (7, 7, 7, 7); \
             PREPARE TRANSACTION 'pgr_splittest_1'",
        )
        .await
        .unwrap();
    cat.execute(
        "insert into pgrouter.twopc_decisions (gid, decision, router_id, shards) \
         values ('pgr_splittest_1', 'c', 'splittest', array[$1])",
        &[&s0],
    )
    .await
    .unwrap();
    let before: i64 = direct
        .query_one("select count(*) from pgbench_accounts", &[])
        .await
        .unwrap()
        .get(0);
    let cap = capture::run(env, &job, wal(job.id), &settings)
        .await
        .expect("capture");
    let prepared: i64 = direct
        .query_one("select count(*) from pg_prepared_xacts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(prepared, 0, "the in-doubt transaction was resolved");
    let delta7: i64 = direct
        .query_one("select count(*) from pgbench_history where delta = 7", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(delta7, 1, "committed by recovery");
    let mut tables = vec![
        "pgbench_accounts",
        "pgbench_branches",
        "pgbench_history",
        "pgbench_tellers",
    ];
    tables.sort();
    assert_eq!(cap.tables, tables);
    let slot = direct
        .query_one(
            "select plugin, confirmed_flush_lsn::text from pg_replication_slots where slot_name = $1",
            &[&cap.slot],
        )
        .await
        .unwrap();
    assert_eq!(slot.get::<_, String>(0), "pgoutput");
    assert_eq!(slot.get::<_, String>(1), cap.lsn);
    let published: i64 = direct
        .query_one(
            "select count(*) from pg_publication_tables where pubname = $1",
            &[&cap.slot],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(published, 4);
    let recorded = store::load(&cat, job.id).await.unwrap().unwrap();
    assert_eq!(recorded.snapshot_lsn.as_deref(), Some(cap.lsn.as_str()));
    assert_eq!(recorded.slot_name.as_deref(), Some(cap.slot.as_str()));

    // The exported snapshot is the consistent point: a row written after it
    // is not in it.
    direct
        .batch_execute(
            "INSERT INTO pgbench_accounts (aid, bid, abalance, filler) VALUES (999999, 1, 0, '')",
        )
        .await
        .unwrap();
    let reader = common::connect_direct(&dev.cluster.shards[0]).await;
    reader
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '{}'",
            cap.snapshot
        ))
        .await
        .unwrap();
    let seen: i64 = reader
        .query_one("select count(*) from pgbench_accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, before, "the snapshot predates the insert");
    reader.batch_execute("COMMIT").await.unwrap();

    // Rollback drops slot and publication (also while the replication
    // connection still holds the slot) and ends the job.
    let job = store::load(&cat, job.id).await.unwrap().unwrap();
    rollback(env, &job, None).await.expect("rollback");
    drop(cap);
    wait_no_capture(&direct).await;
    let job = store::load(&cat, job.id).await.unwrap().unwrap();
    assert_eq!(job.phase, Phase::RolledBack);
    // Again: only what is named after the job is dropped (nothing left).
    rollback(env, &job, None).await.expect("second rollback");
    assert_eq!(
        store::load(&cat, job.id).await.unwrap().unwrap().phase,
        Phase::RolledBack
    );
}

/// Whether table `t` exists on a shard, and its row count (0 if missing).
pub(crate) async fn table_rows(c: &tokio_postgres::Client, t: &str) -> Option<i64> {
    let exists: bool = c
        .query_one("select to_regclass($1) is not null", &[&t])
        .await
        .unwrap()
        .get(0);
    if !exists {
        return None;
    }
    Some(
        c.query_one(&format!("select count(*) from {t}"), &[])
            .await
            .unwrap()
            .get(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_creates_missing_tables_and_refuses_a_dirty_target() {
    use pg_router::split::bootstrap::{self, BootstrapSettings};
    use pg_router::split::capture::{self, CaptureSettings};
    use pg_router::split::rollback::rollback;
    use pg_router::split::wal::PgWalSource;
    use std::time::Duration;

    let dev = pgbench_with_spare().await;
    let router = common::connect(&dev).await;
    router
        .batch_execute(
            "ALTER TABLE pgbench_history REPLICA IDENTITY FULL; \
             CREATE TABLE countries (code text PRIMARY KEY, name text)",
        )
        .await
        .unwrap();
    common::meta(&dev, &["add-reference-table", "--table", "countries"]);
    // The router picks the catalog change up within a second.
    let mut tries = 0;
    while let Err(e) = router
        .batch_execute("INSERT INTO countries VALUES ('fr', 'France'), ('jp', 'Japan')")
        .await
    {
        tries += 1;
        assert!(tries < 50, "reference table never became writable: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cat = common::connect_direct(&dev.cluster.catalog).await;
    let s0 = dev.cluster.shards[0].name.clone();
    let spare = dev.cluster.shards[2].name.clone();
    let spare_direct = common::connect_direct(&dev.cluster.shards[2]).await;
    // The spare got every DDL statement (it is registered) but owns no
    // rows; make it miss one sharded and the reference table.
    assert_eq!(table_rows(&spare_direct, "pgbench_accounts").await, Some(0));
    assert_eq!(table_rows(&spare_direct, "countries").await, Some(2));
    spare_direct
        .batch_execute("DROP TABLE pgbench_history; DROP TABLE countries")
        .await
        .unwrap();

    let catalog = pg_router::catalog::load(&cat).await.unwrap();
    assert!(catalog.reference_tables.contains("countries"));
    let spec = split::plan(
        &catalog.keyspaces["main"].routing,
        &s0,
        &spare,
        RangeChoice::UpperHalf,
    )
    .unwrap();
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
    let settings = BootstrapSettings {
        pg_bin: dev.cluster.bin("pg_dump").parent().unwrap().to_path_buf(),
    };
    let wal = PgWalSource::new(
        &s0,
        access.replication_conninfo(&src_info, job.id),
        Duration::from_secs(5),
    );
    let cap = capture::run(env, &job, wal, &CaptureSettings::default())
        .await
        .expect("capture");

    // A dirty target is refused, every table named.
    spare_direct
        .batch_execute(
            "INSERT INTO pgbench_branches (bid, bbalance) VALUES (1, 0); \
             ALTER TABLE pgbench_tellers ADD COLUMN extra int",
        )
        .await
        .unwrap();
    let job = store::load(&cat, job.id).await.unwrap().unwrap();
    let e = bootstrap::run(env, &job, &settings).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, SplitError::TargetRefused { .. }), "{msg}");
    assert!(
        msg.contains("'pgbench_branches': already holds rows"),
        "{msg}"
    );
    assert!(
        msg.contains("'pgbench_tellers': columns differ") && msg.contains("extra integer"),
        "{msg}"
    );
    assert!(!msg.contains("pgbench_accounts"), "{msg}");
    assert_eq!(table_rows(&spare_direct, "pgbench_history").await, None);
    spare_direct
        .batch_execute(
            "DELETE FROM pgbench_branches; ALTER TABLE pgbench_tellers DROP COLUMN extra",
        )
        .await
        .unwrap();

    // Clean: the missing sharded table is created from the source's
    // definition, the missing reference table copied with its rows.
    let done = bootstrap::run(env, &job, &settings)
        .await
        .expect("bootstrap");
    assert_eq!(done.created, vec!["pgbench_history".to_string()]);
    assert_eq!(done.reference_copied, vec!["countries".to_string()]);
    assert_eq!(table_rows(&spare_direct, "pgbench_history").await, Some(0));
    assert_eq!(table_rows(&spare_direct, "countries").await, Some(2));
    let q = "select string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' \
             order by attnum) from pg_attribute \
             where attrelid = 'pgbench_history'::regclass and attnum > 0 and not attisdropped";
    let a: String = source.query_one(q, &[]).await.unwrap().get(0);
    let b: String = target.query_one(q, &[]).await.unwrap().get(0);
    assert_eq!(a, b);
    let job = store::load(&cat, job.id).await.unwrap().unwrap();
    assert_eq!(job.phase, Phase::Bootstrap);
    assert_eq!(job.created_tables, vec!["pgbench_history".to_string()]);
    assert_eq!(job.reference_created, vec!["countries".to_string()]);
    // Step 2 does not run twice.
    let e = bootstrap::run(env, &job, &settings).await.unwrap_err();
    assert!(matches!(e, SplitError::PhaseChanged { .. }), "{e}");

    // A session of the job still running on the target (as a killed job
    // process leaves one) is ended, and gone, before anything is removed.
    let app = pg_router::split::shards::job_application_name(job.id);
    let stray = access.connect_as(&tgt_info, &app).await.unwrap();
    let sleeping = tokio::spawn(async move {
        stray
            .batch_execute("BEGIN; LOCK pgbench_history; SELECT pg_sleep(60)")
            .await
    });
    let sessions = "select count(*) from pg_stat_activity where application_name = $1";
    while spare_direct
        .query_one(sessions, &[&app])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pg_router::split::shards::end_job_sessions(&target, &spare, job.id)
        .await
        .unwrap();
    let left: i64 = spare_direct
        .query_one(sessions, &[&app])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        left, 0,
        "the job's session has exited when end_job_sessions returns"
    );
    assert!(
        sleeping.await.unwrap().is_err(),
        "the session was terminated"
    );

    // Rollback drops what the job created on the target (the reference
    // table it copied too) and its slot.
    drop(cap);
    rollback(env, &job, None).await.expect("rollback");
    assert_eq!(table_rows(&spare_direct, "pgbench_history").await, None);
    assert_eq!(table_rows(&spare_direct, "countries").await, None);
    assert_eq!(table_rows(&spare_direct, "pgbench_accounts").await, Some(0));
    let direct = common::connect_direct(&dev.cluster.shards[0]).await;
    assert_eq!(capture_state(&direct).await.0, 0, "no slot left");
}
