//! The ShardSplitJob reconcile against kube's mock API server, with the
//! split-job side faked at the library boundary ([`FakeSplit`]): the
//! finalizer, a job walked through every phase (status and Event each
//! time), a manual cutover's approval, a failed job, deletion before and
//! after the point of no return, and a new target shard bootstrapped.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Method, Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::Client;
use parking_lot::Mutex;

use super::cluster_tests::{
    body_json, ctx_with, fake, fake_with, respond, serve_applies, serve_event_on, serve_secret,
    Handle,
};
use super::crd::{ShardSplitJob, ShardSplitJobSpec};
use super::desired::tests::{cluster, TWO_SHARDS};
use super::desired::{shard_objects, Ctx};
use super::split_access::{
    CreateError, JobSnapshot, RunnerSettings, SplitAccess, SplitConn, SplitRequest,
};
use super::split_job::{reconcile, FINALIZER};
use crate::split::Phase;

/// The split-job side faked: one job (id 7) whose phase the test sets;
/// every call is recorded as a line.
#[derive(Default)]
pub(super) struct FakeSplit {
    pub phase: Mutex<Option<Phase>>,
    pub calls: Mutex<Vec<String>>,
    pub create_error: Mutex<Option<CreateError>>,
}

impl FakeSplit {
    fn at(phase: Phase) -> Arc<FakeSplit> {
        let f = FakeSplit::default();
        *f.phase.lock() = Some(phase);
        Arc::new(f)
    }

    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock())
    }
}

impl SplitAccess for FakeSplit {
    fn find_or_create(
        &self,
        conn: SplitConn,
        req: SplitRequest,
    ) -> BoxFuture<'_, Result<i64, CreateError>> {
        self.calls.lock().push(format!(
            "find_or_create {} {} {}→{} {:?} pw={}",
            req.owner, req.keyspace, req.source, req.target, req.choice, conn.shard_password
        ));
        let r = match self.create_error.lock().clone() {
            Some(e) => Err(e),
            None => {
                self.phase.lock().get_or_insert(Phase::Created);
                Ok(7)
            }
        };
        Box::pin(async move { r })
    }

    fn find(&self, _conn: SplitConn, owner: String) -> BoxFuture<'_, Result<Option<i64>, String>> {
        self.calls.lock().push(format!("find {owner}"));
        let r = self.phase.lock().map(|_| 7);
        Box::pin(async move { Ok(r) })
    }

    fn observe(
        &self,
        _conn: SplitConn,
        id: i64,
    ) -> BoxFuture<'_, Result<Option<JobSnapshot>, String>> {
        self.calls.lock().push(format!("observe {id}"));
        let snap = self.phase.lock().map(|phase| {
            let copied = phase >= Phase::CatchUp && phase != Phase::Failed;
            JobSnapshot {
                id,
                phase,
                snapshot_lsn: (phase >= Phase::Capture).then(|| "0/16B3748".to_string()),
                lag_bytes: (phase >= Phase::CatchUp).then_some(4096),
                rows_copied: if copied { 1000 } else { 0 },
                verification: (phase >= Phase::Cutover && phase != Phase::Failed)
                    .then(|| "ok".to_string()),
                cutover_started_at: (phase >= Phase::Cutover && phase != Phase::Failed)
                    .then(|| "2026-12-06T12:00:01.000Z".to_string()),
                cutover_window_ms: (phase >= Phase::Routed && phase != Phase::Failed)
                    .then_some(12.4),
                error: (phase == Phase::Failed).then(|| "copy: disk full".to_string()),
            }
        });
        Box::pin(async move { Ok(snap) })
    }

    fn ensure_running(
        &self,
        _conn: SplitConn,
        id: i64,
        settings: RunnerSettings,
    ) -> BoxFuture<'_, Result<bool, String>> {
        self.calls.lock().push(format!(
            "ensure_running {id} window={} lag={} manual={}",
            settings.max_window_ms, settings.lag_threshold_bytes, settings.manual_cutover
        ));
        Box::pin(async move { Ok(true) })
    }

    fn approve_cutover(&self, _conn: SplitConn, id: i64) -> BoxFuture<'_, Result<(), String>> {
        self.calls.lock().push(format!("approve_cutover {id}"));
        Box::pin(async move { Ok(()) })
    }

    fn rollback(&self, _conn: SplitConn, id: i64) -> BoxFuture<'_, Result<(), String>> {
        self.calls.lock().push(format!("rollback {id}"));
        let mut phase = self.phase.lock();
        let r = match *phase {
            Some(p) if p.past_point_of_no_return() => Err("past the point of no return".into()),
            _ => {
                *phase = Some(Phase::RolledBack);
                Ok(())
            }
        };
        Box::pin(async move { r })
    }
}

const UID: &str = "9d0e0000-aaaa-bbbb-cccc-000000000001";

fn split_job(spec_yaml: &str, finalizer: bool) -> ShardSplitJob {
    let spec: ShardSplitJobSpec = serde_norway::from_str(spec_yaml).expect("spec");
    let mut sj = ShardSplitJob::new("split1", spec);
    sj.metadata.namespace = Some("db".into());
    sj.metadata.uid = Some(UID.into());
    sj.metadata.generation = Some(1);
    sj.metadata.resource_version = Some("41".into());
    if finalizer {
        sj.metadata.finalizers = Some(vec![FINALIZER.into()]);
    }
    sj
}

const TO_SHARD1: &str = "
cluster: shop
keyspace: main
source: shard0
target: shard1
splitPoint: '0x4000000000000000'
cutover: { maxWindowMs: 500, lagThresholdBytes: 8192 }
";

/// Answers the read of PostgresCluster `shop`.
async fn serve_cluster(handle: &mut Handle) {
    let (req, send) = handle.next_request().await.expect("cluster read");
    assert_eq!(req.method(), Method::GET);
    assert_eq!(
        req.uri().path(),
        "/apis/pgrouter.io/v1alpha1/namespaces/db/postgresclusters/shop"
    );
    respond(
        send,
        200,
        &serde_json::to_value(cluster(TWO_SHARDS)).expect("json"),
    );
}

/// Answers the status patch; returns the status sent.
async fn serve_status(handle: &mut Handle) -> serde_json::Value {
    let (req, send) = handle.next_request().await.expect("status patch");
    assert_eq!(req.method(), Method::PATCH);
    assert_eq!(
        req.uri().path(),
        "/apis/pgrouter.io/v1alpha1/namespaces/db/shardsplitjobs/split1/status"
    );
    let patch = body_json(req).await;
    respond(
        send,
        200,
        &serde_json::to_value(split_job(TO_SHARD1, true)).expect("json"),
    );
    patch["status"].clone()
}

/// Answers the finalizer patch, asserting the list and resourceVersion.
async fn serve_finalizers(handle: &mut Handle, want: &[&str]) {
    let (req, send) = handle.next_request().await.expect("finalizer patch");
    assert_eq!(req.method(), Method::PATCH);
    assert_eq!(
        req.uri().path(),
        "/apis/pgrouter.io/v1alpha1/namespaces/db/shardsplitjobs/split1"
    );
    assert_eq!(
        req.headers()["content-type"],
        "application/merge-patch+json"
    );
    let patch = body_json(req).await;
    assert_eq!(
        patch,
        serde_json::json!({"metadata": {"finalizers": want, "resourceVersion": "41"}})
    );
    respond(
        send,
        200,
        &serde_json::to_value(split_job(TO_SHARD1, true)).expect("json"),
    );
}

async fn event(handle: &mut Handle, type_: &str, reason: &str, note: &str) {
    serve_event_on(handle, "ShardSplitJob", "split1", type_, reason, note).await;
}

#[tokio::test]
async fn the_finalizer_comes_first() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        serve_finalizers(&mut handle, &[FINALIZER]).await;
    });
    let split = Arc::new(FakeSplit::default());
    let action = reconcile(
        Arc::new(split_job(TO_SHARD1, false)),
        ctx_with(Client::new(svc, "db"), fake(), split.clone()),
    )
    .await
    .expect("reconcile");
    server.await.expect("server");
    assert_eq!(action, Action::await_change());
    assert!(
        split.calls().is_empty(),
        "nothing runs before the finalizer"
    );
}

#[tokio::test]
async fn a_job_is_mirrored_through_every_phase() {
    let split = Arc::new(FakeSplit::default());
    let mut sj = split_job(TO_SHARD1, true);
    let steps = [
        (None, "Pending"),
        (Some(Phase::Capture), "Capture"),
        (Some(Phase::Bootstrap), "Bootstrap"),
        (Some(Phase::Copy), "Copy"),
        (Some(Phase::CatchUp), "CatchUp"),
        (Some(Phase::Cutover), "Cutover"),
        (Some(Phase::Routed), "Routed"),
        (Some(Phase::Cleanup), "Cleanup"),
        (Some(Phase::Completed), "Completed"),
    ];
    for (phase, name) in steps {
        if phase.is_some() {
            *split.phase.lock() = phase;
        }
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(async move {
            serve_cluster(&mut handle).await;
            serve_secret(&mut handle, Some("pw")).await;
            let status = serve_status(&mut handle).await;
            let note = if name == "Completed" {
                "cutover window 12.4 ms".to_string()
            } else {
                "split job 7 is in phase".to_string()
            };
            event(&mut handle, "Normal", name, &note).await;
            status
        });
        let action = reconcile(
            Arc::new(sj.clone()),
            ctx_with(Client::new(svc, "db"), fake(), split.clone()),
        )
        .await
        .expect("reconcile");
        let status = server.await.expect("server");
        assert_eq!(status["phase"], name);
        assert_eq!(status["jobId"], 7);
        let calls = split.calls();
        assert_eq!(
            calls[0],
            format!("find_or_create {UID} main shard0→shard1 At(4611686018427387904) pw=pw")
        );
        assert_eq!(calls[1], "observe 7");
        if name == "Completed" {
            assert_eq!(calls.len(), 2, "an ended job is not run: {calls:?}");
            assert_eq!(action, Action::await_change());
            assert_eq!(status["conditions"][0]["status"], "True", "Ready");
            assert_eq!(status["cutoverWindowMs"], 12);
            assert_eq!(status["rowsCopied"], 1000);
            assert_eq!(status["verification"], "ok");
            assert_eq!(status["cutoverStartedAt"], "2026-12-06T12:00:01.000Z");
        } else {
            assert_eq!(
                calls[2..],
                ["ensure_running 7 window=500 lag=8192 manual=false"]
            );
            assert_eq!(action, Action::requeue(Duration::from_secs(10)));
            assert_eq!(status["conditions"][1]["status"], "True", "Progressing");
        }
        sj.status = Some(serde_json::from_value(status).expect("status"));
    }
    // Steady: the same phase again patches nothing and publishes nothing.
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        serve_cluster(&mut handle).await;
        serve_secret(&mut handle, Some("pw")).await;
    });
    let action = reconcile(
        Arc::new(sj),
        ctx_with(Client::new(svc, "db"), fake(), split.clone()),
    )
    .await
    .expect("reconcile");
    server.await.expect("server");
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn a_manual_cutover_is_approved_once_set() {
    for approved in [false, true] {
        let split = FakeSplit::at(Phase::CatchUp);
        let spec = TO_SHARD1.replace(
            "cutover: { maxWindowMs: 500, lagThresholdBytes: 8192 }",
            &format!("cutover: {{ mode: Manual, approved: {approved} }}"),
        );
        let sj = split_job(&spec, true);
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(async move {
            serve_cluster(&mut handle).await;
            serve_secret(&mut handle, Some("pw")).await;
            serve_status(&mut handle).await;
            event(&mut handle, "Normal", "CatchUp", "phase catchup").await;
        });
        reconcile(
            Arc::new(sj),
            ctx_with(Client::new(svc, "db"), fake(), split.clone()),
        )
        .await
        .expect("reconcile");
        server.await.expect("server");
        let calls = split.calls();
        let approve = calls.iter().any(|c| c == "approve_cutover 7");
        assert_eq!(approve, approved, "{calls:?}");
        assert!(calls
            .last()
            .is_some_and(|c| c.ends_with("window=1000 lag=65536 manual=true")));
    }
}

#[tokio::test]
async fn a_failed_job_is_degraded_with_its_reason() {
    let split = FakeSplit::at(Phase::Failed);
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        serve_cluster(&mut handle).await;
        serve_secret(&mut handle, Some("pw")).await;
        let status = serve_status(&mut handle).await;
        assert_eq!(status["phase"], "Failed");
        assert_eq!(status["failureReason"], "copy: disk full");
        assert_eq!(status["conditions"][2]["status"], "True");
        event(&mut handle, "Warning", "Failed", "disk full").await;
    });
    let c = ctx_with(Client::new(svc, "db"), fake(), split.clone());
    let action = reconcile(Arc::new(split_job(TO_SHARD1, true)), c.clone())
        .await
        .expect("reconcile");
    server.await.expect("server");
    assert_eq!(action, Action::await_change());
    assert!(
        c.metrics
            .render()
            .contains(r#"pgrouter_operator_split_job_failed{namespace="db",name="split1"} 1"#),
        "{}",
        c.metrics.render()
    );
    // A spec that cannot be planned: Degraded/Refused, retried later.
    let split = Arc::new(FakeSplit::default());
    *split.create_error.lock() = Some(CreateError::Refused(
        "keyspace 'main': shard 'shard0' owns no key range".into(),
    ));
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        serve_cluster(&mut handle).await;
        serve_secret(&mut handle, Some("pw")).await;
        let status = serve_status(&mut handle).await;
        assert_eq!(status["phase"], "Pending");
        assert_eq!(status["conditions"][2]["reason"], "Refused");
        event(&mut handle, "Normal", "Pending", "owns no key range").await;
    });
    let action = reconcile(
        Arc::new(split_job(TO_SHARD1, true)),
        ctx_with(Client::new(svc, "db"), fake(), split),
    )
    .await
    .expect("reconcile");
    server.await.expect("server");
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
}

fn deleted(spec: &str, phase: &str) -> ShardSplitJob {
    let mut sj = split_job(spec, true);
    sj.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-12-06T12:00:00Z".parse().expect("time"),
    ));
    sj.status = Some(super::crd::ShardSplitJobStatus {
        phase: Some(phase.into()),
        job_id: Some(7),
        ..Default::default()
    });
    sj
}

#[tokio::test]
async fn deletion_rolls_back_before_the_point_of_no_return() {
    let split = FakeSplit::at(Phase::CatchUp);
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        serve_cluster(&mut handle).await;
        serve_secret(&mut handle, Some("pw")).await;
        event(
            &mut handle,
            "Normal",
            "RolledBack",
            "rolled back on deletion",
        )
        .await;
        serve_finalizers(&mut handle, &[]).await;
    });
    let c = ctx_with(Client::new(svc, "db"), fake(), split.clone());
    c.metrics.split_job_failed("db", "split1", Some(false));
    let action = reconcile(Arc::new(deleted(TO_SHARD1, "CatchUp")), c.clone())
        .await
        .expect("reconcile");
    server.await.expect("server");
    assert_eq!(action, Action::await_change());
    assert_eq!(split.calls(), ["observe 7", "rollback 7"]);
    assert!(
        !c.metrics.render().contains("split1"),
        "the released object's series is gone"
    );
    assert_eq!(*split.phase.lock(), Some(Phase::RolledBack));
}

#[tokio::test]
async fn deletion_after_the_point_of_no_return_waits_or_goes_forward() {
    // Without allowForwardOnly: the finalizer stays, the job keeps running.
    let split = FakeSplit::at(Phase::Routed);
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        serve_cluster(&mut handle).await;
        serve_secret(&mut handle, Some("pw")).await;
        handle
    });
    let action = reconcile(
        Arc::new(deleted(TO_SHARD1, "Routed")),
        ctx_with(Client::new(svc, "db"), fake(), split.clone()),
    )
    .await
    .expect("reconcile");
    let _handle = server.await.expect("server");
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    let calls = split.calls();
    assert_eq!(calls[0], "observe 7");
    assert!(calls[1].starts_with("ensure_running 7"), "{calls:?}");
    assert!(!calls.iter().any(|c| c.starts_with("rollback")));
    // With it: released, the job left to finish.
    let spec = format!("{TO_SHARD1}allowForwardOnly: true\n");
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        serve_cluster(&mut handle).await;
        serve_secret(&mut handle, Some("pw")).await;
        event(&mut handle, "Normal", "ForwardOnly", "runs to completion").await;
        serve_finalizers(&mut handle, &[]).await;
    });
    let action = reconcile(
        Arc::new(deleted(&spec, "Routed")),
        ctx_with(Client::new(svc, "db"), fake(), split.clone()),
    )
    .await
    .expect("reconcile");
    server.await.expect("server");
    assert_eq!(action, Action::await_change());
    // An ended job: just released.
    let split = FakeSplit::at(Phase::Completed);
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        serve_cluster(&mut handle).await;
        serve_secret(&mut handle, Some("pw")).await;
        serve_finalizers(&mut handle, &[]).await;
    });
    reconcile(
        Arc::new(deleted(TO_SHARD1, "Completed")),
        ctx_with(Client::new(svc, "db"), fake(), split.clone()),
    )
    .await
    .expect("reconcile");
    server.await.expect("server");
    assert_eq!(split.calls(), ["observe 7"]);
}

#[tokio::test]
async fn a_new_target_shard_is_bootstrapped_and_registered_first() {
    let spec = TO_SHARD1.replace("target: shard1", "target: shard2");
    let pc = cluster(TWO_SHARDS);
    let expected = shard_objects(&Ctx::new(&pc).expect("ctx"), &pc, 2).expect("objects");
    assert!(expected
        .iter()
        .any(|o| o["kind"] == "StatefulSet" && o["metadata"]["name"] == "shop-shard2"));
    for ready in [0u64, 2] {
        let split = Arc::new(FakeSplit::default());
        let catalog = fake_with(Ok(Default::default()), Ok((1, false)));
        let sj = split_job(&spec, true);
        let expected = expected.clone();
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(async move {
            serve_cluster(&mut handle).await;
            serve_secret(&mut handle, Some("pw")).await;
            serve_applies(&mut handle, &expected, |_| ready).await;
            let status = serve_status(&mut handle).await;
            assert_eq!(status["phase"], "Pending");
            let note = if ready == 0 {
                "waiting for the target shard2"
            } else {
                "split job 7 is in phase created"
            };
            assert!(
                status["conditions"][1]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(note)),
                "{status}"
            );
            event(&mut handle, "Normal", "Pending", note).await;
        });
        reconcile(
            Arc::new(sj),
            ctx_with(Client::new(svc, "db"), catalog.clone(), split.clone()),
        )
        .await
        .expect("reconcile");
        server.await.expect("server");
        let registered = catalog.calls.lock().clone();
        if ready == 0 {
            assert!(registered.is_empty() && split.calls().is_empty());
        } else {
            let names: Vec<&str> = registered[0].1.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, ["shard0", "shard1", "shard2"]);
            assert_eq!(registered[0].1[2].host, "shop-shard2.db.svc");
            assert!(split.calls()[0].contains("shard0→shard2"));
        }
    }
}

#[tokio::test]
async fn deletion_finds_a_job_whose_id_the_status_lost() {
    let split = FakeSplit::at(Phase::Copy);
    let mut sj = deleted(TO_SHARD1, "Pending");
    if let Some(st) = sj.status.as_mut() {
        st.job_id = None;
    }
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        serve_cluster(&mut handle).await;
        serve_secret(&mut handle, Some("pw")).await;
        event(
            &mut handle,
            "Normal",
            "RolledBack",
            "rolled back on deletion",
        )
        .await;
        serve_finalizers(&mut handle, &[]).await;
    });
    reconcile(
        Arc::new(sj),
        ctx_with(Client::new(svc, "db"), fake(), split.clone()),
    )
    .await
    .expect("reconcile");
    server.await.expect("server");
    assert_eq!(
        split.calls(),
        [
            format!("find {UID}"),
            "observe 7".into(),
            "rollback 7".into()
        ]
    );
    // Nothing recorded: released at once.
    let split = Arc::new(FakeSplit::default());
    let mut sj = deleted(TO_SHARD1, "Pending");
    if let Some(st) = sj.status.as_mut() {
        st.job_id = None;
    }
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        serve_cluster(&mut handle).await;
        serve_secret(&mut handle, Some("pw")).await;
        serve_finalizers(&mut handle, &[]).await;
    });
    reconcile(
        Arc::new(sj),
        ctx_with(Client::new(svc, "db"), fake(), split.clone()),
    )
    .await
    .expect("reconcile");
    server.await.expect("server");
    assert_eq!(split.calls(), [format!("find {UID}")]);
}
