//! The PostgresCluster reconcile against kube's mock API server
//! (`tower-test`): the exact requests, in order, and the responses the
//! reconcile reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;

use http::{Method, Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;

use super::catalog_sync::{CatalogAccess, RangesError, RangesRequest};
use super::cluster::{reconcile, Context};
use super::crd::PostgresCluster;
use super::desired::tests::{cluster, TWO_SHARDS};
use super::desired::{cluster_objects, Object};
use super::split_job_tests::FakeSplit;
use crate::catalog::ShardInfo;

pub(super) type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// The catalog faked at the library boundary: records each call, answers
/// a sync with `answer` and a layout with `ranges_answer`.
pub(super) struct FakeCatalog {
    pub calls: Mutex<Vec<(String, Vec<ShardInfo>)>>,
    pub answer: Result<BTreeMap<String, i64>, String>,
    /// (DSN, shard password, request) of each `apply_ranges`.
    pub range_calls: Mutex<Vec<(String, String, RangesRequest)>>,
    pub ranges_answer: Result<(i64, bool), RangesError>,
}

impl CatalogAccess for FakeCatalog {
    fn sync(
        &self,
        dsn: String,
        shards: Vec<ShardInfo>,
    ) -> BoxFuture<'_, Result<BTreeMap<String, i64>, String>> {
        self.calls.lock().push((dsn, shards));
        let a = self.answer.clone();
        Box::pin(async move { a })
    }

    fn apply_ranges(
        &self,
        dsn: String,
        shard_password: String,
        req: RangesRequest,
    ) -> BoxFuture<'_, Result<(i64, bool), RangesError>> {
        self.range_calls.lock().push((dsn, shard_password, req));
        let a = self.ranges_answer.clone();
        Box::pin(async move { a })
    }
}

fn generations() -> BTreeMap<String, i64> {
    BTreeMap::from([("main".to_string(), 1)])
}

pub(super) fn fake() -> Arc<FakeCatalog> {
    fake_with(Ok(generations()), Ok((1, false)))
}

pub(super) fn fake_with(
    answer: Result<BTreeMap<String, i64>, String>,
    ranges_answer: Result<(i64, bool), RangesError>,
) -> Arc<FakeCatalog> {
    Arc::new(FakeCatalog {
        calls: Mutex::new(Vec::new()),
        answer,
        range_calls: Mutex::new(Vec::new()),
        ranges_answer,
    })
}

pub(super) fn ctx(client: Client, catalog: Arc<FakeCatalog>) -> Arc<Context> {
    ctx_with(client, catalog, Arc::new(FakeSplit::default()))
}

/// A context with the catalog and the split jobs faked.
pub(super) fn ctx_with(
    client: Client,
    catalog: Arc<FakeCatalog>,
    split: Arc<FakeSplit>,
) -> Arc<Context> {
    let reporter = Reporter {
        controller: "pg-router-operator".into(),
        instance: Some("operator-0".into()),
    };
    Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        now: || "2026-12-06T12:00:00Z".to_string(),
        catalog,
        split,
        metrics: Default::default(),
    })
}

/// Answers the Event the reconcile publishes, asserting type, reason and
/// that its note contains `note`.
async fn serve_event(handle: &mut Handle, type_: &str, reason: &str, note: &str) {
    serve_event_on(handle, "PostgresCluster", "shop", type_, reason, note).await
}

/// Answers an Event about the `kind` object `name`, asserting type,
/// reason and that its note contains `note`.
pub(super) async fn serve_event_on(
    handle: &mut Handle,
    kind: &str,
    name: &str,
    type_: &str,
    reason: &str,
    note: &str,
) {
    let (req, send) = handle.next_request().await.expect("an Event");
    assert_eq!(req.method(), Method::POST);
    assert_eq!(
        req.uri().path(),
        "/apis/events.k8s.io/v1/namespaces/db/events"
    );
    let ev = body_json(req).await;
    assert_eq!(
        (ev["type"].as_str(), ev["reason"].as_str()),
        (Some(type_), Some(reason)),
        "{ev}"
    );
    assert!(
        ev["note"].as_str().is_some_and(|n| n.contains(note)),
        "{ev}"
    );
    assert_eq!(ev["regarding"]["kind"], kind);
    assert_eq!(ev["regarding"]["name"], name);
    assert_eq!(ev["reportingController"], "pg-router-operator");
    respond(send, 201, &ev);
}

/// Answers the read of Secret `shop-postgres` (None: 404).
pub(super) async fn serve_secret(handle: &mut Handle, password: Option<&str>) {
    let (req, send) = handle.next_request().await.expect("secret read");
    assert_eq!(req.method(), Method::GET);
    assert_eq!(
        req.uri().path(),
        "/api/v1/namespaces/db/secrets/shop-postgres"
    );
    match password {
        Some(p) => {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(p);
            respond(
                send,
                200,
                &serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "shop-postgres", "namespace": "db"},
                    "data": {"password": b64}}),
            );
        }
        None => respond(
            send,
            404,
            &serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "secrets \"shop-postgres\" not found", "reason": "NotFound", "code": 404}),
        ),
    }
}

/// The path an apply of `o` must use.
fn path_of(o: &Object) -> String {
    let api_version = o["apiVersion"].as_str().expect("apiVersion");
    let kind = o["kind"].as_str().expect("kind").to_ascii_lowercase();
    let name = o["metadata"]["name"].as_str().expect("name");
    let base = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    format!("{base}/namespaces/db/{kind}s/{name}")
}

pub(super) async fn body_json(req: Request<Body>) -> serde_json::Value {
    let bytes = req.into_body().collect_bytes().await.expect("body");
    serde_json::from_slice(&bytes).expect("JSON body")
}

pub(super) fn respond(
    send: tower_test::mock::SendResponse<Response<Body>>,
    status: u16,
    v: &serde_json::Value,
) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(v).expect("json")))
            .expect("response"),
    );
}

/// Answers the applies of `expected` (echoing each object with
/// `readyReplicas` = `ready(o)`), asserting method, path, field manager
/// and body.
pub(super) async fn serve_applies(
    handle: &mut Handle,
    expected: &[Object],
    ready: impl Fn(&Object) -> u64,
) {
    for o in expected {
        let (req, send) = handle.next_request().await.expect("an apply");
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(req.uri().path(), path_of(o));
        let query = req.uri().query().unwrap_or("");
        assert!(
            query.contains("fieldManager=pg-router-operator") && query.contains("force=true"),
            "{query}"
        );
        assert_eq!(
            req.headers()["content-type"],
            "application/apply-patch+yaml"
        );
        assert_eq!(&body_json(req).await, o, "apply body of {}", path_of(o));
        let mut stored = o.clone();
        stored["status"] = serde_json::json!({ "readyReplicas": ready(o) });
        respond(send, 200, &stored);
    }
}

#[tokio::test]
async fn a_new_cluster_is_applied_then_its_status_patched() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let pc = cluster(TWO_SHARDS);
    let expected = cluster_objects(&pc).expect("objects");
    let server = tokio::spawn(async move {
        // shard1 has one of its two instances ready.
        serve_applies(&mut handle, &expected, |o| {
            match (o["kind"].as_str(), o["metadata"]["name"].as_str()) {
                (Some("StatefulSet"), Some("shop-shard1")) => 1,
                (Some("StatefulSet"), _) => o["spec"]["replicas"].as_u64().unwrap_or(0),
                (Some("Deployment"), _) => 2,
                _ => 0,
            }
        })
        .await;
        serve_secret(&mut handle, Some("s3'cret")).await;
        let (req, send) = handle.next_request().await.expect("status patch");
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(
            req.uri().path(),
            "/apis/pgrouter.io/v1alpha1/namespaces/db/postgresclusters/shop/status"
        );
        assert_eq!(
            req.headers()["content-type"],
            "application/merge-patch+json"
        );
        let patch = body_json(req).await;
        let status = &patch["status"];
        assert_eq!(status["phase"], "Provisioning");
        assert_eq!(status["routerReplicas"], 2);
        assert_eq!(status["catalogGenerations"], serde_json::json!({"main": 1}));
        assert_eq!(
            status["shards"][1],
            serde_json::json!({"name": "shard1", "readyReplicas": 1, "ready": false})
        );
        assert_eq!(status["conditions"][1]["type"], "Progressing");
        assert_eq!(status["conditions"][1]["message"], "waiting for shard1");
        assert_eq!(
            status["conditions"][1]["lastTransitionTime"],
            "2026-12-06T12:00:00Z"
        );
        let mut stored = serde_json::to_value(cluster(TWO_SHARDS)).expect("json");
        stored["status"] = status.clone();
        respond(send, 200, &stored);
        serve_event(&mut handle, "Normal", "Provisioning", "waiting for shard1").await;
        handle
    });
    let catalog = fake();
    let action = reconcile(Arc::new(pc), ctx(Client::new(svc, "db"), catalog.clone()))
        .await
        .expect("reconcile");
    let mut handle = server.await.expect("server");
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    // The catalog was migrated and both shards registered at their client
    // Services, with the Secret's password.
    let calls = catalog.calls.lock().clone();
    assert_eq!(calls.len(), 1);
    let cfg: tokio_postgres::Config = calls[0].0.parse().expect("dsn");
    assert_eq!(cfg.get_password(), Some(&b"s3'cret"[..]));
    assert!(
        calls[0].0.starts_with("host=shop-catalog.db.svc port=5432"),
        "{}",
        calls[0].0
    );
    let hosts: Vec<(&str, &str, u16)> = calls[0]
        .1
        .iter()
        .map(|s| (s.name.as_str(), s.host.as_str(), s.port))
        .collect();
    assert_eq!(
        hosts,
        [
            ("shard0", "shop-shard0.db.svc", 5432),
            ("shard1", "shop-shard1.db.svc", 5432)
        ]
    );
    // Nothing more was asked.
    drop(handle.next_request());
}

#[tokio::test]
async fn a_ready_cluster_applies_without_a_status_patch() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let mut pc = cluster(TWO_SHARDS);
    let expected = cluster_objects(&pc).expect("objects");
    // The status a previous reconcile left, with every instance ready.
    let observed = super::status::Observed {
        shards: vec![("shard0".into(), 2, 2), ("shard1".into(), 2, 2)],
        catalog_ready: 1,
        router_ready: 3,
        invalid: None,
        catalog: Some(Ok(generations())),
    };
    pc.status = Some(super::status::cluster_status(
        None, &observed, None, "earlier",
    ));
    let server = tokio::spawn(async move {
        serve_applies(&mut handle, &expected, |o| match o["kind"].as_str() {
            Some("StatefulSet") => o["spec"]["replicas"].as_u64().unwrap_or(0),
            Some("Deployment") => 3,
            _ => 0,
        })
        .await;
        serve_secret(&mut handle, Some("pw")).await;
        handle
    });
    let action = reconcile(Arc::new(pc), ctx(Client::new(svc, "db"), fake()))
        .await
        .expect("reconcile");
    let _handle = server.await.expect("server");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
}

#[tokio::test]
async fn an_invalid_spec_applies_nothing_and_is_degraded() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let mut pc: PostgresCluster = cluster(TWO_SHARDS);
    pc.spec.router.min_replicas = 9;
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("status patch");
        assert!(req.uri().path().ends_with("/postgresclusters/shop/status"));
        let patch = body_json(req).await;
        assert_eq!(patch["status"]["phase"], "Degraded");
        assert_eq!(patch["status"]["conditions"][2]["reason"], "InvalidSpec");
        assert!(patch["status"]["conditions"][2]["message"]
            .as_str()
            .is_some_and(|m| m.contains("minReplicas")));
        respond(
            send,
            200,
            &serde_json::to_value(cluster(TWO_SHARDS)).expect("json"),
        );
        serve_event(&mut handle, "Warning", "Degraded", "minReplicas").await;
    });
    let action = reconcile(Arc::new(pc), ctx(Client::new(svc, "db"), fake()))
        .await
        .expect("reconcile");
    server.await.expect("server");
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn a_refused_apply_is_an_error() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let pc = cluster(TWO_SHARDS);
    let server = tokio::spawn(async move {
        let (_req, send) = handle.next_request().await.expect("first apply");
        respond(
            send,
            403,
            &serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "configmaps is forbidden", "reason": "Forbidden", "code": 403}),
        );
    });
    let e = reconcile(Arc::new(pc), ctx(Client::new(svc, "db"), fake()))
        .await
        .expect_err("forbidden");
    server.await.expect("server");
    assert!(
        e.to_string()
            .contains("applying ConfigMap shop-postgres-config"),
        "{e}"
    );
}

#[tokio::test]
async fn a_missing_password_or_catalog_error_keeps_the_cluster_provisioning() {
    for (password, answer, message) in [
        (
            None,
            Ok(generations()),
            "catalog: Secret shop-postgres has no key \"password\"",
        ),
        (
            Some("pw"),
            Err("connecting to the catalog: refused".to_string()),
            "catalog: connecting to the catalog: refused",
        ),
    ] {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let pc = cluster(TWO_SHARDS);
        let expected = cluster_objects(&pc).expect("objects");
        let server = tokio::spawn(async move {
            serve_applies(&mut handle, &expected, |o| match o["kind"].as_str() {
                Some("StatefulSet") => o["spec"]["replicas"].as_u64().unwrap_or(0),
                Some("Deployment") => 1,
                _ => 0,
            })
            .await;
            serve_secret(&mut handle, password).await;
            let (req, send) = handle.next_request().await.expect("status patch");
            let patch = body_json(req).await;
            assert_eq!(patch["status"]["phase"], "Provisioning");
            assert_eq!(patch["status"]["conditions"][1]["message"], message);
            respond(
                send,
                200,
                &serde_json::to_value(cluster(TWO_SHARDS)).expect("json"),
            );
            serve_event(&mut handle, "Normal", "Provisioning", message).await;
        });
        let catalog = fake_with(answer, Ok((1, false)));
        let action = reconcile(Arc::new(pc), ctx(Client::new(svc, "db"), catalog.clone()))
            .await
            .expect("reconcile");
        server.await.expect("server");
        assert_eq!(action, Action::requeue(Duration::from_secs(15)));
        assert_eq!(catalog.calls.lock().len(), usize::from(password.is_some()));
    }
}
