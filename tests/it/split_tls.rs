//! The split job over TLS to the shards (`pg-router split --tls
//! verify-full --tls-ca-file`): every shard refuses the job's role without
//! encryption (`hostnossl … reject`), so a job that completes proves each
//! of its connections — SQL sessions, the replication stream, `pg_dump`,
//! `psql`, 2PC recovery — used TLS; a plaintext start and a wrong CA fail
//! with clear errors and keep the job resumable.

use crate::common;
use crate::split::{capture_state, pgbench_with_spare_pool};
use crate::split_online::assert_placement;
use crate::tls::{enable_shard_tls, make_certs};

/// Role the job connects as; only TLS connections may use it.
const ROLE: &str = "splitter";

/// Makes shard `idx` refuse `ROLE` without TLS (SQL and replication):
/// reject lines before initdb's trust lines, then a reload.
async fn require_tls_for_role(dev: &pg_router::dev::DevCluster, idx: usize) {
    let d = common::connect_direct(&dev.cluster.shards[idx]).await;
    d.batch_execute(&format!("CREATE ROLE {ROLE} LOGIN SUPERUSER"))
        .await
        .unwrap();
    let hba = dev.cluster.shards[idx].data_dir.join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    let rules = format!(
        "hostnossl all {ROLE} 0.0.0.0/0 reject\nhostnossl replication {ROLE} 0.0.0.0/0 reject\n"
    );
    std::fs::write(&hba, rules + &old).unwrap();
    d.query_one("SELECT pg_reload_conf()", &[]).await.unwrap();
}

/// Runs `pg-router split --catalog <dsn> --user splitter <args>`;
/// (success, stdout + stderr).
fn split_cli(dev: &pg_router::dev::DevCluster, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pg-router"))
        .args(["split", "--catalog", &dev.catalog_dsn(), "--user", ROLE])
        .args(args)
        .env("PG_BIN_DIR", dev.cluster.bin("pg_dump").parent().unwrap())
        .output()
        .expect("run pg-router split");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_job_over_tls_to_the_shards() {
    let dev = pgbench_with_spare_pool(4).await;
    let router = common::connect(&dev).await;
    router
        .batch_execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs();
    let (other_ca, _, _) = make_certs();
    let ca_file = dir.path().join("ca.pem");
    let other_ca_file = dir.path().join("other.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    std::fs::write(&other_ca_file, &other_ca).unwrap();
    for i in 0..dev.cluster.shards.len() {
        enable_shard_tls(&dev, i, &cert, &key).await;
        require_tls_for_role(&dev, i).await;
    }
    let s0 = dev.cluster.shards[0].name.clone();
    let spare = dev.cluster.shards[2].name.clone();
    let start = [
        "start",
        "--keyspace",
        "main",
        "--source",
        &s0,
        "--target",
        &spare,
    ];

    // Plaintext: the shard's refusal is reported, the job is kept.
    let (ok, out) = split_cli(&dev, &start);
    assert!(!ok, "{out}");
    assert!(
        out.contains("no encryption") && out.contains("split resume --job"),
        "{out}"
    );
    let (ok, out) = split_cli(&dev, &["status", "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let id = v["id"].to_string();
    assert_eq!(v["phase"], "created", "{v}");

    // A CA that did not sign the shards' certificates: the handshake fails.
    let ca_arg = |f: &std::path::Path| f.display().to_string();
    let other = ca_arg(&other_ca_file);
    let (ok, out) = split_cli(
        &dev,
        &[
            "--tls",
            "verify-full",
            "--tls-ca-file",
            &other,
            "resume",
            "--job",
            &id,
        ],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("TLS handshake"), "{out}");
    // verify-full without a CA file is refused before anything runs.
    let (ok, out) = split_cli(&dev, &["--tls", "verify-full", "resume", "--job", &id]);
    assert!(!ok && out.contains("--tls-ca-file"), "{out}");

    // The right CA: the job runs to the end over TLS.
    let good = ca_arg(&ca_file);
    let (ok, out) = split_cli(
        &dev,
        &[
            "--tls",
            "verify-full",
            "--tls-ca-file",
            &good,
            "resume",
            "--job",
            &id,
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("phase completed"), "{out}");
    let (ok, out) = split_cli(&dev, &["status", "--json", "--job", &id]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["verification"]["ok"], true, "{v}");
    let copied = v["progress"]["copy"]["pgbench_accounts"]["rows_copied"]
        .as_u64()
        .unwrap_or(0);
    assert!(copied > 10_000, "{v}");

    // Routed reads see every row; rows sit where the new routing says;
    // nothing of the job is left on the source.
    let n: i64 = router
        .query_one("SELECT count(*) FROM pgbench_accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 100_000);
    assert!(assert_placement(&dev).await >= 100_000);
    let direct0 = common::connect_direct(&dev.cluster.shards[0]).await;
    assert_eq!(
        capture_state(&direct0).await.0,
        0,
        "slot left on the source"
    );
    // The refusal rule was in force all along: plaintext for the role is
    // still refused.
    let e = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user={ROLE} dbname=postgres sslmode=disable",
            dev.cluster.shards[0].port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("plaintext refused for the job's role");
    assert_eq!(common::sqlstate(&e), "28000", "{e:?}");
    dev.stop().await;
}
