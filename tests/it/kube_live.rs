//! Live-cluster test (feature `operator`), skipped unless `PGR_KUBE_LIVE=1`:
//! against the cluster of the current kubeconfig (kind or any), it installs
//! the chart (`helm install`, image `PGR_KUBE_IMAGE`, e.g. a `docker build`
//! of this repository loaded into kind), creates the example PostgresCluster
//! in a fresh namespace, waits for `Ready`, applies a ShardRange (expects
//! `Applied`), runs a ShardSplitJob to a new shard2 (expects `Completed`),
//! and deletes the namespace and the release. No API server runs on the CI
//! machine, so CI never runs it; `docs/kubernetes.md` says how to.
//!
//! Environment: `PGR_KUBE_LIVE=1`; `PGR_KUBE_IMAGE=repo:tag` (required);
//! `PGR_KUBE_TIMEOUT_SECONDS` per wait (default 900); `PGR_HELM` (helm
//! binary).

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use pg_router::reconciler::crd::{PostgresCluster, ShardRange, ShardSplitJob};

fn timeout() -> Duration {
    Duration::from_secs(
        std::env::var("PGR_KUBE_TIMEOUT_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(900),
    )
}

/// Polls `probe` every 5 s until it returns Some, or panics after the
/// timeout naming `what` and the last state seen.
async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (Option<T>, String)>,
{
    let t0 = Instant::now();
    loop {
        let (done, seen) = probe().await;
        if let Some(v) = done {
            return v;
        }
        assert!(
            t0.elapsed() < timeout(),
            "{what}: not within {:?}; last seen: {seen}",
            timeout()
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

fn helm(args: &[&str]) {
    let helm = std::env::var("PGR_HELM").unwrap_or_else(|_| "helm".into());
    let out = Command::new(&helm)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {helm}: {e}"));
    assert!(
        out.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_norway::from_str(text).expect("YAML")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_cluster_create_lay_out_and_split() {
    if std::env::var("PGR_KUBE_LIVE").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set PGR_KUBE_LIVE=1 (and PGR_KUBE_IMAGE) to run against a live cluster"
        );
        return;
    }
    let image = std::env::var("PGR_KUBE_IMAGE").expect("PGR_KUBE_IMAGE=repo:tag");
    let (repo, tag) = image.rsplit_once(':').expect("PGR_KUBE_IMAGE is repo:tag");
    let client = Client::try_default().await.expect("kubeconfig");
    let ns = format!("pgr-live-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &yaml(&format!("metadata: {{ name: {ns} }}")),
        )
        .await
        .expect("namespace");
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/pg-router");
    let release = format!("pgr-{}", std::process::id());
    helm(&[
        "install",
        &release,
        chart,
        "--namespace",
        &ns,
        "--set",
        &format!("image.repository={repo}"),
        "--set",
        &format!("image.tag={tag}"),
        "--set",
        &format!("watchNamespace={ns}"),
        "--set",
        "replicaCount=1",
    ]);
    // Secrets: the postgres password and one router user (md5).
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let users = format!(
        "\"app\" \"{}\"\n",
        postgres_protocol::password::md5(b"app-pw", "app")
    );
    for (name, key, value) in [
        ("shop-postgres", "password", "live-pw".to_string()),
        ("shop-users", "users.txt", users),
    ] {
        let s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}, "stringData": {key: value}
        }))
        .expect("secret");
        secrets
            .create(&PostParams::default(), &s)
            .await
            .expect("secret");
    }
    // The cluster: two small shards, one router.
    let clusters: Api<PostgresCluster> = Api::namespaced(client.clone(), &ns);
    let pc: PostgresCluster = yaml(&format!(
        "apiVersion: pgrouter.io/v1alpha1\nkind: PostgresCluster\nmetadata: {{ name: shop, namespace: {ns} }}\n\
         spec:\n  shards: {{ count: 2, replicas: 1, storage: {{ size: 1Gi }} }}\n  catalog: {{ storage: {{ size: 1Gi }} }}\n\
         \x20 router: {{ minReplicas: 1, maxReplicas: 2, image: '{image}' }}\n"
    ));
    clusters
        .create(&PostParams::default(), &pc)
        .await
        .expect("cluster");
    wait_for("PostgresCluster Ready", || async {
        let pc = clusters.get("shop").await.expect("get");
        let phase = pc.status.as_ref().and_then(|s| s.phase.clone());
        (
            (phase.as_deref() == Some("Ready")).then_some(()),
            format!("{:?}", pc.status),
        )
    })
    .await;
    // The layout.
    let ranges: Api<ShardRange> = Api::namespaced(client.clone(), &ns);
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/pg-router/examples/shardrange.yaml"
    ))
    .expect("example");
    let mut sr: ShardRange = yaml(&text);
    sr.metadata.namespace = Some(ns.clone());
    ranges
        .create(&PostParams::default(), &sr)
        .await
        .expect("ShardRange");
    wait_for("ShardRange Applied", || async {
        let sr = ranges.get("main").await.expect("get");
        let applied = sr.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Applied" && c.status == "True")
        });
        (applied.then_some(()), format!("{:?}", sr.status))
    })
    .await;
    // A split to a new shard2, cut over automatically.
    let jobs: Api<ShardSplitJob> = Api::namespaced(client.clone(), &ns);
    let sj: ShardSplitJob = yaml(&format!(
        "apiVersion: pgrouter.io/v1alpha1\nkind: ShardSplitJob\nmetadata: {{ name: split1, namespace: {ns} }}\n\
         spec: {{ cluster: shop, keyspace: main, source: shard1, target: shard2 }}\n"
    ));
    jobs.create(&PostParams::default(), &sj).await.expect("job");
    let status = wait_for("ShardSplitJob Completed", || async {
        let sj = jobs.get("split1").await.expect("get");
        let phase = sj.status.as_ref().and_then(|s| s.phase.clone());
        let done = matches!(phase.as_deref(), Some("Completed" | "Failed"));
        (done.then(|| sj.status.clone()), format!("{:?}", sj.status))
    })
    .await;
    assert_eq!(
        status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Completed"),
        "{status:?}"
    );
    // Once completed, shard2 joins the cluster's spec.
    clusters
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"shards": {"count": 3}}})),
        )
        .await
        .expect("count");
    jobs.delete("split1", &DeleteParams::default())
        .await
        .expect("delete job");
    helm(&["uninstall", &release, "--namespace", &ns]);
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("delete namespace");
    eprintln!("live cluster test passed in namespace {}", pc.name_any());
}
