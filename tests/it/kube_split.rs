//! The ShardSplitJob reconciler's split step against real PostgreSQL
//! shards (feature `operator`): the reconcile loop with kube's API server
//! mocked (`tower-test`) and the split library for real
//! ([`PgSplit`] pointed at the embedded cluster's catalog). A ShardSplitJob
//! moving the upper half of shard0 to the spare shard2 is reconciled until
//! its status reads Completed; its status mirrors the catalog's job, the
//! rows are on the target and the router routes to it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use http::{Method, Request, Response};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;
use parking_lot::Mutex;

use pg_router::reconciler::catalog_sync::PgCatalog;
use pg_router::reconciler::cluster::Context;
use pg_router::reconciler::crd::{PostgresCluster, ShardSplitJob};
use pg_router::reconciler::split_access::{
    CreateError, JobSnapshot, PgSplit, RunnerSettings, SplitAccess, SplitConn, SplitRequest,
};
use pg_router::reconciler::split_job::{reconcile, FINALIZER};

use crate::common;
use crate::split::pgbench_with_spare;

/// [`PgSplit`] with the catalog the embedded cluster runs (the DSN the
/// reconcile derives names the cluster's Kubernetes Service).
struct Local {
    inner: PgSplit,
    catalog_dsn: String,
    seen: Mutex<Vec<String>>,
}

impl Local {
    fn conn(&self, conn: SplitConn) -> SplitConn {
        self.seen.lock().push(conn.catalog_dsn);
        SplitConn {
            catalog_dsn: self.catalog_dsn.clone(),
            shard_password: conn.shard_password,
        }
    }
}

impl SplitAccess for Local {
    fn find_or_create(
        &self,
        conn: SplitConn,
        req: SplitRequest,
    ) -> BoxFuture<'_, Result<i64, CreateError>> {
        self.inner.find_or_create(self.conn(conn), req)
    }
    fn find(&self, conn: SplitConn, owner: String) -> BoxFuture<'_, Result<Option<i64>, String>> {
        self.inner.find(self.conn(conn), owner)
    }
    fn observe(
        &self,
        conn: SplitConn,
        id: i64,
    ) -> BoxFuture<'_, Result<Option<JobSnapshot>, String>> {
        self.inner.observe(self.conn(conn), id)
    }
    fn ensure_running(
        &self,
        conn: SplitConn,
        id: i64,
        settings: RunnerSettings,
    ) -> BoxFuture<'_, Result<bool, String>> {
        self.inner.ensure_running(self.conn(conn), id, settings)
    }
    fn approve_cutover(&self, conn: SplitConn, id: i64) -> BoxFuture<'_, Result<(), String>> {
        self.inner.approve_cutover(self.conn(conn), id)
    }
    fn rollback(&self, conn: SplitConn, id: i64) -> BoxFuture<'_, Result<(), String>> {
        self.inner.rollback(self.conn(conn), id)
    }
}

fn respond(send: tower_test::mock::SendResponse<Response<Body>>, code: u16, v: &serde_json::Value) {
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(v).expect("json")))
            .expect("response"),
    );
}

/// A mock API server answering the reconcile's requests by route; records
/// each status patch, Event reason and finalizer patch.
fn api_server(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    cluster: serde_json::Value,
    job: serde_json::Value,
    log: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (method, path) = (req.method().clone(), req.uri().path().to_string());
            let body = req.into_body().collect_bytes().await.expect("body");
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let ns = "/namespaces/db/";
            match (method, path.as_str()) {
                (Method::GET, p) if p.ends_with(&format!("{ns}postgresclusters/shop")) => {
                    respond(send, 200, &cluster)
                }
                (Method::GET, p) if p.ends_with(&format!("{ns}secrets/shop-postgres")) => respond(
                    send,
                    200,
                    &serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "shop-postgres", "namespace": "db"},
                        "data": {"password": "cHc="}}),
                ),
                (Method::PATCH, p) if p.ends_with("/shardsplitjobs/split1/status") => {
                    log.lock().push(("status".into(), body["status"].clone()));
                    respond(send, 200, &job)
                }
                (Method::PATCH, p) if p.ends_with("/shardsplitjobs/split1") => {
                    log.lock().push(("finalizers".into(), body.clone()));
                    respond(send, 200, &job)
                }
                (Method::POST, p) if p.ends_with("/events") => {
                    log.lock().push(("event".into(), body["reason"].clone()));
                    respond(send, 201, &body)
                }
                (m, p) => panic!("unexpected request {m} {p}"),
            }
        }
    })
}

/// The embedded cluster (pgbench data, spare shard2), a reconcile context
/// on a mock API server (its log), and a ShardSplitJob moving shard0's
/// upper half to shard2 with `cutover` settings.
struct Setup {
    dev: pg_router::dev::DevCluster,
    ctx: Arc<Context>,
    split: Arc<Local>,
    log: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    server: tokio::task::JoinHandle<()>,
    sj: ShardSplitJob,
}

async fn setup(cutover: serde_json::Value) -> Setup {
    let dev = pgbench_with_spare().await;
    let s0 = common::connect_direct(&dev.cluster.shards[0]).await;
    s0.batch_execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
        .await
        .expect("replica identity");
    let cluster: PostgresCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "pgrouter.io/v1alpha1", "kind": "PostgresCluster",
        "metadata": {"name": "shop", "namespace": "db", "uid": "0b3c5e9a-0000-0000-0000-000000000001"},
        "spec": {"shards": {"count": 3}, "router": {}}
    }))
    .expect("cluster");
    let sj: ShardSplitJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "pgrouter.io/v1alpha1", "kind": "ShardSplitJob",
        "metadata": {"name": "split1", "namespace": "db", "generation": 1,
                     "uid": "9d0e0000-0000-0000-0000-000000000002", "resourceVersion": "1"},
        "spec": {"cluster": "shop", "keyspace": "main", "source": "shard0", "target": "shard2",
                 "cutover": cutover}
    }))
    .expect("job");
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log = Arc::new(Mutex::new(Vec::new()));
    let server = api_server(
        handle,
        serde_json::to_value(&cluster).expect("json"),
        serde_json::to_value(&sj).expect("json"),
        log.clone(),
    );
    let client = Client::new(svc, "db");
    let pg_bin = dev
        .cluster
        .bin("pg_dump")
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let split = Arc::new(Local {
        inner: PgSplit::new(Some(pg_bin)),
        catalog_dsn: dev.cluster.catalog.dsn(),
        seen: Mutex::new(Vec::new()),
    });
    let ctx = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "pg-router-operator".into(),
                instance: None,
            },
        ),
        client,
        now: pg_router::reconciler::cluster::now_rfc3339,
        catalog: Arc::new(PgCatalog),
        split: split.clone(),
        metrics: Default::default(),
    });
    Setup {
        dev,
        ctx,
        split,
        log,
        server,
        sj,
    }
}

impl Setup {
    /// One reconcile; the object takes the status it patched.
    async fn reconcile(&mut self) {
        reconcile(Arc::new(self.sj.clone()), self.ctx.clone())
            .await
            .expect("reconcile");
        let last = self
            .log
            .lock()
            .iter()
            .rev()
            .find(|(k, _)| k == "status")
            .map(|(_, v)| v.clone());
        if let Some(v) = last {
            self.sj.status = Some(serde_json::from_value(v).expect("status"));
        }
        let added = self.log.lock().iter().any(|(k, _)| k == "finalizers");
        if added && self.sj.metadata.deletion_timestamp.is_none() {
            self.sj.metadata.finalizers = Some(vec![FINALIZER.into()]);
        }
    }

    /// Reconciles until the status phase is one of `phases` (120 s at
    /// most); returns the phases seen.
    async fn until(&mut self, phases: &[&str]) -> Vec<String> {
        let t0 = Instant::now();
        let mut seen: Vec<String> = Vec::new();
        loop {
            self.reconcile().await;
            let st = self.sj.status.clone().unwrap_or_default();
            if let Some(p) = &st.phase {
                if seen.last() != Some(p) {
                    seen.push(p.clone());
                }
                if phases.contains(&p.as_str()) {
                    return seen;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "no {phases:?} within 120 s: {seen:?} {st:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_job_resource_runs_the_split_on_real_shards() {
    let mut s = setup(serde_json::json!({})).await;
    let dev = &s.dev;
    let before = common::sum_on_shards(dev, "select count(*) from pgbench_accounts").await;
    // First pass: the finalizer only.
    s.reconcile().await;
    assert_eq!(s.log.lock()[0].0, "finalizers");
    let phases = s.until(&["Completed", "Failed"]).await;
    let status = s.sj.status.clone().unwrap_or_default();
    assert_eq!(
        status.phase.as_deref(),
        Some("Completed"),
        "{phases:?} {status:?}"
    );
    assert!(status.job_id.is_some());
    assert!(status.rows_copied.unwrap_or(0) > 0, "{status:?}");
    assert_eq!(status.verification.as_deref(), Some("ok"));
    assert!(status.cutover_window_ms.is_some() && status.cutover_started_at.is_some());
    assert!(status.snapshot_lsn.is_some());
    assert!(status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True"));
    // The reconcile asked for the cluster's catalog Service.
    assert!(s.split.seen.lock()[0].starts_with("host=shop-catalog.db.svc"));
    // Events were published for the phases seen.
    let events: Vec<serde_json::Value> = s
        .log
        .lock()
        .iter()
        .filter(|(k, _)| k == "event")
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(events.last(), Some(&serde_json::json!("Completed")));
    // The rows moved: shard2 has the upper half of shard0's, none lost.
    let dev = &s.dev;
    let spare = common::connect_direct(&dev.cluster.shards[2]).await;
    let on_target: i64 = spare
        .query_one("select count(*) from pgbench_accounts", &[])
        .await
        .expect("count")
        .get(0);
    assert!(on_target > 0);
    let after = common::sum_on_shards(dev, "select count(*) from pgbench_accounts").await;
    assert_eq!(after, before, "every row once");
    let router = common::connect(dev).await;
    let via_router: i64 = router
        .query_one("select count(*) from pgbench_accounts", &[])
        .await
        .expect("count via router")
        .get(0);
    assert_eq!(via_router, before);
    s.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_running_split_job_resource_rolls_it_back() {
    // Manual cutover, not approved: the job waits in catch-up.
    let mut s = setup(serde_json::json!({"mode": "Manual"})).await;
    let before = common::sum_on_shards(&s.dev, "select count(*) from pgbench_accounts").await;
    s.until(&["CatchUp", "Failed"]).await;
    assert_eq!(
        s.sj.status.as_ref().and_then(|st| st.phase.as_deref()),
        Some("CatchUp")
    );
    let id =
        s.sj.status
            .as_ref()
            .and_then(|st| st.job_id)
            .expect("job id");
    s.sj.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-12-07T00:00:00Z".parse().expect("time"),
    ));
    s.reconcile().await;
    // The finalizer was removed after the rollback.
    let last = s.log.lock().last().cloned().expect("a request");
    assert_eq!(last.0, "finalizers");
    assert_eq!(last.1["metadata"]["finalizers"], serde_json::json!([]));
    let cat = common::connect_direct(&s.dev.cluster.catalog).await;
    let phase: String = cat
        .query_one(
            "select phase from pgrouter.split_jobs where id = $1",
            &[&id],
        )
        .await
        .expect("job")
        .get(0);
    assert_eq!(phase, "rolled_back");
    // The target keeps none of the copied rows; no row moved or was lost.
    let spare = common::connect_direct(&s.dev.cluster.shards[2]).await;
    let left: i64 = spare
        .query_one("select count(*) from pgbench_accounts", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0, "the copied rows were removed");
    let after = common::sum_on_shards(&s.dev, "select count(*) from pgbench_accounts").await;
    assert_eq!(after, before);
    crate::split::wait_no_capture(&common::connect_direct(&s.dev.cluster.shards[0]).await).await;
    s.server.abort();
}
