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
