//! Desired objects of representative PostgresCluster specs.

use super::*;
use crate::reconciler::crd::{PostgresClusterSpec, TlsSpec};

/// A stored PostgresCluster (name, namespace, uid set) from YAML spec text.
pub(crate) fn cluster(spec_yaml: &str) -> PostgresCluster {
    let spec: PostgresClusterSpec = serde_norway::from_str(spec_yaml).expect("spec");
    let mut pc = PostgresCluster::new("shop", spec);
    pc.metadata.namespace = Some("db".into());
    pc.metadata.uid = Some("0b3c5e9a-1111-2222-3333-444455556666".into());
    pc
}

pub(crate) const TWO_SHARDS: &str = "
shards:
  count: 2
  replicas: 2
  storage: { size: 20Gi, storageClass: fast }
  resources: { requests: { cpu: 500m, memory: 1Gi } }
  parameters: { shared_buffers: 256MB }
router:
  minReplicas: 2
  maxReplicas: 6
  targetConnectionsPerPod: 500
  resources: { requests: { cpu: 250m } }
  config: |
    [limits]
    max_client_connections = 5000
";

fn names(objs: &[Object]) -> Vec<String> {
    objs.iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn find<'a>(objs: &'a [Object], kind: &str, name: &str) -> &'a Object {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in {:?}", names(objs)))
}

#[test]
fn every_object_of_a_two_shard_cluster() {
    let objs = cluster_objects(&cluster(TWO_SHARDS)).expect("objects");
    assert_eq!(
        names(&objs),
        [
            "ConfigMap/shop-postgres-config",
            "Service/shop-shard0-hl",
            "Service/shop-shard0",
            "StatefulSet/shop-shard0",
            "PodDisruptionBudget/shop-shard0",
            "Service/shop-shard1-hl",
            "Service/shop-shard1",
            "StatefulSet/shop-shard1",
            "PodDisruptionBudget/shop-shard1",
            "Service/shop-catalog-hl",
            "Service/shop-catalog",
            "StatefulSet/shop-catalog",
            "PodDisruptionBudget/shop-catalog",
            "ConfigMap/shop-router",
            "Service/shop-router",
            "Deployment/shop-router",
            "HorizontalPodAutoscaler/shop-router",
            "PodDisruptionBudget/shop-router",
        ]
    );
    for o in &objs {
        assert_eq!(o["metadata"]["namespace"], "db");
        let owner = &o["metadata"]["ownerReferences"][0];
        assert_eq!(
            (&owner["kind"], &owner["name"], &owner["controller"]),
            (&"PostgresCluster".into(), &"shop".into(), &true.into()),
            "{}",
            o["metadata"]["name"]
        );
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/instance"],
            "shop"
        );
    }
    // Shards: replicas, volume, settings the reconciler owns, primary-only
    // client Service.
    let sts = find(&objs, "StatefulSet", "shop-shard1");
    assert_eq!(sts["spec"]["replicas"], 2);
    assert_eq!(sts["spec"]["serviceName"], "shop-shard1-hl");
    let claim = &sts["spec"]["volumeClaimTemplates"][0]["spec"];
    assert_eq!(claim["resources"]["requests"]["storage"], "20Gi");
    assert_eq!(claim["storageClassName"], "fast");
    let pod = &sts["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["resources"]["requests"]["cpu"], "500m");
    assert_eq!(pod["initContainers"][0]["name"], "clone-standby");
    let conf = find(&objs, "ConfigMap", "shop-postgres-config")["data"]["postgresql.conf"]
        .as_str()
        .expect("conf")
        .to_string();
    for line in [
        "wal_level = logical",
        "max_prepared_transactions = 100",
        "shared_buffers = '256MB'",
    ] {
        assert!(conf.contains(line), "{line} in {conf}");
    }
    let client = find(&objs, "Service", "shop-shard1");
    assert_eq!(
        client["spec"]["selector"]["statefulset.kubernetes.io/pod-name"],
        "shop-shard1-0"
    );
    assert_eq!(
        find(&objs, "StatefulSet", "shop-catalog")["spec"]["replicas"],
        1
    );
    // Router: the HPA owns replicas; SIGTERM drains within the grace period.
    let d = find(&objs, "Deployment", "shop-router");
    assert!(d["spec"].get("replicas").is_none(), "{}", d["spec"]);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 5 + 30 + 10);
    assert_eq!(
        pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"],
        5
    );
    let env: Vec<&str> = pod["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(
        env,
        ["PGROUTER_BACKEND_PASSWORD", "PGROUTER_CATALOG_PASSWORD"]
    );
    let hpa = find(&objs, "HorizontalPodAutoscaler", "shop-router");
    assert_eq!(
        (&hpa["spec"]["minReplicas"], &hpa["spec"]["maxReplicas"]),
        (&2.into(), &6.into())
    );
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        70
    );
    assert_eq!(
        hpa["spec"]["metrics"][1]["pods"]["metric"]["name"],
        "pgrouter_client_connections"
    );
    assert_eq!(
        hpa["spec"]["metrics"][1]["pods"]["target"]["averageValue"],
        "500"
    );
    // router.toml: generated keys, the spec's config merged in, parsed by
    // the router's own config loader.
    let toml_text = find(&objs, "ConfigMap", "shop-router")["data"]["router.toml"]
        .as_str()
        .expect("toml")
        .to_string();
    let cfg = crate::config::RouterConfig::parse(&toml_text).expect("router.toml loads");
    assert_eq!(cfg.listen, "0.0.0.0:6432");
    assert!(
        cfg.catalog
            .starts_with("host=shop-catalog.db.svc port=5432"),
        "{}",
        cfg.catalog
    );
    assert_eq!(cfg.limits.max_client_connections, 5000);
    assert_eq!(cfg.limits.shutdown_timeout_ms, 30_000);
    // The pod template changes with router.toml (pods roll).
    let mut other = cluster(TWO_SHARDS);
    other.spec.router.drain_timeout_seconds = 40;
    let objs2 = cluster_objects(&other).expect("objects");
    let sum = |o: &[Object]| {
        find(o, "Deployment", "shop-router")["spec"]["template"]["metadata"]["annotations"]
            ["pgrouter.io/config-checksum"]
            .clone()
    };
    assert_ne!(sum(&objs), sum(&objs2));
}

#[test]
fn tls_service_monitor_and_errors() {
    let mut pc = cluster(TWO_SHARDS);
    pc.spec.tls = Some(TlsSpec {
        router_secret: Some("router-tls".into()),
        shards_secret: Some("pg-tls".into()),
    });
    pc.spec.router.service_monitor = true;
    pc.spec.router.target_connections_per_pod = None;
    let objs = cluster_objects(&pc).expect("objects");
    let toml_text = find(&objs, "ConfigMap", "shop-router")["data"]["router.toml"]
        .as_str()
        .expect("toml")
        .to_string();
    assert!(toml_text.contains("tls = \"verify-full\""), "{toml_text}");
    assert!(
        toml_text.contains("cert_file = \"/etc/pg-router/tls/tls.crt\""),
        "{toml_text}"
    );
    let vols = &find(&objs, "Deployment", "shop-router")["spec"]["template"]["spec"]["volumes"];
    assert_eq!(vols[2]["secret"]["secretName"], "router-tls");
    assert_eq!(vols[3]["secret"]["secretName"], "pg-tls");
    assert_eq!(
        find(&objs, "ServiceMonitor", "shop-router")["spec"]["endpoints"][0]["port"],
        "metrics"
    );
    let hpa = find(&objs, "HorizontalPodAutoscaler", "shop-router");
    assert_eq!(hpa["spec"]["metrics"].as_array().map(Vec::len), Some(1));

    let mut bad = cluster(TWO_SHARDS);
    bad.spec.router.min_replicas = 7;
    assert!(matches!(
        cluster_objects(&bad),
        Err(SpecError::Invalid {
            field: "router.minReplicas",
            ..
        })
    ));
    let mut bad = cluster(TWO_SHARDS);
    bad.spec
        .shards
        .parameters
        .insert("WAL_LEVEL".into(), "replica".into());
    assert!(matches!(
        cluster_objects(&bad),
        Err(SpecError::Invalid {
            field: "shards.parameters",
            ..
        })
    ));
    for config in [
        "listen = \"0.0.0.0:1\"",
        "[auth]\nusers_file = \"x\"",
        "not toml [",
    ] {
        let mut bad = cluster(TWO_SHARDS);
        bad.spec.router.config = Some(config.into());
        assert!(
            matches!(
                cluster_objects(&bad),
                Err(SpecError::Invalid {
                    field: "router.config",
                    ..
                })
            ),
            "{config}"
        );
    }
    let mut unstored = cluster(TWO_SHARDS);
    unstored.metadata.uid = None;
    assert!(matches!(
        cluster_objects(&unstored),
        Err(SpecError::Missing(_))
    ));
}
