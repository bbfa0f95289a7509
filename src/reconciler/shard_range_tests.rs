//! The ShardRange reconcile against kube's mock API server: the cluster
//! and Secret reads, the catalog request (faked at the library boundary),
//! the status patch and the Event, in order.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::Client;

use super::catalog_sync::RangesError;
use super::cluster_tests::{
    body_json, ctx, fake_with, respond, serve_event_on, serve_secret, Handle,
};
use super::crd::{ShardRange, ShardRangeSpec};
use super::desired::tests::{cluster, TWO_SHARDS};
use super::shard_range::{reconcile, shard_range_status, RangeResult};

fn shard_range() -> ShardRange {
    let spec: ShardRangeSpec = serde_norway::from_str(
        "
cluster: shop
keyspace: main
ranges:
  - { start: '0x0', end: '0x8000000000000000', shard: shard0 }
  - { start: '0x8000000000000000', shard: shard1 }
",
    )
    .expect("spec");
    let mut sr = ShardRange::new("main", spec);
    sr.metadata.namespace = Some("db".into());
    sr.metadata.generation = Some(4);
    sr
}

/// Answers the read of PostgresCluster `shop` (or 404).
async fn serve_cluster(handle: &mut Handle, exists: bool) {
    let (req, send) = handle.next_request().await.expect("cluster read");
    assert_eq!(req.method(), Method::GET);
    assert_eq!(
        req.uri().path(),
        "/apis/pgrouter.io/v1alpha1/namespaces/db/postgresclusters/shop"
    );
    if exists {
        respond(
            send,
            200,
            &serde_json::to_value(cluster(TWO_SHARDS)).expect("json"),
        );
    } else {
        respond(
            send,
            404,
            &serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "NotFound", "code": 404}),
        );
    }
}

/// Answers the status patch, returning its body.
async fn serve_status(handle: &mut Handle) -> serde_json::Value {
    let (req, send) = handle.next_request().await.expect("status patch");
    assert_eq!(req.method(), Method::PATCH);
    assert_eq!(
        req.uri().path(),
        "/apis/pgrouter.io/v1alpha1/namespaces/db/shardranges/main/status"
    );
    assert_eq!(
        req.headers()["content-type"],
        "application/merge-patch+json"
    );
    let patch = body_json(req).await;
    respond(
        send,
        200,
        &serde_json::to_value(shard_range()).expect("json"),
    );
    patch
}

#[tokio::test]
async fn a_layout_is_written_then_reported() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        serve_cluster(&mut handle, true).await;
        serve_secret(&mut handle, Some("pw")).await;
        let patch = serve_status(&mut handle).await;
        let st = &patch["status"];
        assert_eq!(st["catalogGeneration"], 2);
        assert_eq!(st["observedGeneration"], 4);
        assert_eq!(st["conditions"][0]["type"], "Applied");
        assert_eq!(st["conditions"][0]["status"], "True");
        assert_eq!(st["conditions"][0]["reason"], "Written");
        serve_event_on(
            &mut handle,
            "ShardRange",
            "main",
            "Normal",
            "Written",
            "generation 2",
        )
        .await;
    });
    let catalog = fake_with(Ok(Default::default()), Ok((2, true)));
    let action = reconcile(
        Arc::new(shard_range()),
        ctx(Client::new(svc, "db"), catalog.clone()),
    )
    .await
    .expect("reconcile");
    server.await.expect("server");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let calls = catalog.range_calls.lock().clone();
    assert_eq!(calls.len(), 1);
    let (dsn, password, req) = &calls[0];
    assert!(dsn.starts_with("host=shop-catalog.db.svc"), "{dsn}");
    assert_eq!(password, "pw");
    assert_eq!(req.keyspace, "main");
    assert_eq!(req.layout[1].1, "shard1");
    assert_eq!(req.layout[1].0.start, 1 << 63);
    assert_eq!(req.applied_at, None, "a new spec");
}

#[tokio::test]
async fn an_unchanged_layout_patches_nothing() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let mut sr = shard_range();
    let in_sync = RangeResult::Applied {
        generation: 2,
        written: false,
    };
    sr.status = Some(shard_range_status(None, &in_sync, Some(4), "earlier"));
    let server = tokio::spawn(async move {
        serve_cluster(&mut handle, true).await;
        serve_secret(&mut handle, Some("pw")).await;
        handle
    });
    let catalog = fake_with(Ok(Default::default()), Ok((2, false)));
    let action = reconcile(Arc::new(sr), ctx(Client::new(svc, "db"), catalog.clone()))
        .await
        .expect("reconcile");
    let _handle = server.await.expect("server");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    // Applied before at generation 2: a split job's later change is kept.
    assert_eq!(catalog.range_calls.lock()[0].2.applied_at, Some(2));
}

#[tokio::test]
async fn a_populated_reassignment_is_refused_with_a_condition() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let mut sr = shard_range();
    let applied = RangeResult::Applied {
        generation: 2,
        written: false,
    };
    sr.status = Some(shard_range_status(None, &applied, Some(3), "earlier"));
    let why = "key range [0x8000000000000000, 0xffffffffffffffff] has rows on shard 'shard1'";
    let server = tokio::spawn(async move {
        serve_cluster(&mut handle, true).await;
        serve_secret(&mut handle, Some("pw")).await;
        let patch = serve_status(&mut handle).await;
        let c = &patch["status"]["conditions"][0];
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("False"), Some("Refused"))
        );
        assert!(c["message"]
            .as_str()
            .is_some_and(|m| m.contains("has rows")));
        assert_eq!(
            patch["status"]["catalogGeneration"], 2,
            "the catalog kept it"
        );
        serve_event_on(
            &mut handle,
            "ShardRange",
            "main",
            "Warning",
            "Refused",
            "has rows",
        )
        .await;
    });
    let catalog = fake_with(
        Ok(Default::default()),
        Err(RangesError::Refused(why.to_string())),
    );
    let action = reconcile(Arc::new(sr), ctx(Client::new(svc, "db"), catalog))
        .await
        .expect("reconcile");
    server.await.expect("server");
    assert_eq!(action, Action::requeue(Duration::from_secs(120)));
}

#[tokio::test]
async fn a_missing_cluster_or_bad_spec_waits_without_the_catalog() {
    // No cluster: Waiting, the catalog is not asked.
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        serve_cluster(&mut handle, false).await;
        let patch = serve_status(&mut handle).await;
        assert_eq!(patch["status"]["conditions"][0]["reason"], "Waiting");
        serve_event_on(
            &mut handle,
            "ShardRange",
            "main",
            "Warning",
            "Waiting",
            "does not exist",
        )
        .await;
    });
    let catalog = fake_with(Ok(Default::default()), Ok((2, true)));
    let action = reconcile(
        Arc::new(shard_range()),
        ctx(Client::new(svc, "db"), catalog.clone()),
    )
    .await
    .expect("reconcile");
    server.await.expect("server");
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    assert!(catalog.range_calls.lock().is_empty());
    // A bad range: InvalidSpec, nothing read.
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let mut sr = shard_range();
    sr.spec.ranges[1].start = "8000".into();
    let server = tokio::spawn(async move {
        let patch = serve_status(&mut handle).await;
        assert_eq!(patch["status"]["conditions"][0]["reason"], "InvalidSpec");
        serve_event_on(
            &mut handle,
            "ShardRange",
            "main",
            "Warning",
            "InvalidSpec",
            "spec.ranges[1].start",
        )
        .await;
    });
    let action = reconcile(Arc::new(sr), ctx(Client::new(svc, "db"), catalog.clone()))
        .await
        .expect("reconcile");
    server.await.expect("server");
    assert_eq!(action, Action::await_change());
    assert!(catalog.range_calls.lock().is_empty());
}
