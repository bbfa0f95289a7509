//! Real drivers' bulk-insert paths through the router (scripts in
//! `tests/drivers/`): psycopg 3 `executemany` (pipelined) and a multi-row
//! INSERT with server-side parameters, asyncpg `executemany` and
//! `copy_records_to_table` (binary COPY), pgjdbc batches with
//! `reWriteBatchedInserts=true` (multi-row INSERTs with parameters); and
//! the same drivers inserting rows whose generated sharding key they omit
//! (`RETURNING`, `fetchval`, `getGeneratedKeys`, `currval`/`lastval`);
//! pgjdbc also runs a prepared SELECT whose subquery over another sharded
//! table runs first, with its parameters, seven times, and an INSERT ...
//! SELECT with parameters whose new keys the router routes, rolled back
//! and then committed. Each
//! script checks what it inserted through the router; this test then
//! checks on the shards themselves that every row is on the shard its
//! vindex names and that both shards got rows.
//!
//! Needs `python3` with `psycopg` and `asyncpg`, `javac`/`java` and the
//! pgjdbc jar (`/usr/share/java/postgresql.jar`): `.ci/run` installs them.

use std::path::{Path, PathBuf};
use std::process::Command;

use pg_router::vindex::KeyValue;

use crate::common;

fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers")
}

/// Runs `cmd`, panicking with its output unless it succeeds and prints
/// `expect`.
fn run(cmd: &mut Command, expect: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (.ci/run installs the drivers)"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(expect),
        "{cmd:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_bulk_inserts_land_on_their_shards() {
    let dev = common::start(2, 4).await;
    let c = common::connect(&dev).await;
    c.batch_execute(
        "CREATE TABLE kv (k int PRIMARY KEY, v text);
         CREATE TABLE gk (id bigserial PRIMARY KEY, v text)",
    )
    .await
    .unwrap();
    common::add_table(&dev, "kv", "k", "int").await;
    common::add_table(&dev, "gk", "id", "int").await;
    let port = dev.router.addr.port().to_string();
    let dir = drivers_dir();

    run(
        Command::new("python3")
            .arg(dir.join("bulk_psycopg.py"))
            .arg(common::router_dsn(&dev))
            .arg("1000000"),
        "psycopg ok",
    );
    run(
        Command::new("python3")
            .arg(dir.join("bulk_asyncpg.py"))
            .args(["127.0.0.1", &port, "postgres", "postgres", "2000000"]),
        "asyncpg ok",
    );
    let classes = tempfile::tempdir().unwrap();
    let jar = "/usr/share/java/postgresql.jar";
    run(
        Command::new("javac")
            .args(["-d", &classes.path().to_string_lossy(), "-cp", jar])
            .arg(dir.join("BulkJdbc.java"))
            .arg("-Xlint:none"),
        "",
    );
    run(
        Command::new("java")
            .arg("-cp")
            .arg(format!("{jar}:{}", classes.path().display()))
            .arg("BulkJdbc")
            .arg(format!(
                "jdbc:postgresql://127.0.0.1:{port}/postgres?user=postgres&reWriteBatchedInserts=true"
            ))
            .arg("3000000"),
        "pgjdbc ok",
    );

    // On the shards: 290 (psycopg) + 630 (asyncpg) + 500 + 10 (pgjdbc,
    // the last by INSERT ... SELECT) rows, each where its vindex says.
    let cat = common::connect_direct(&dev.cluster.catalog).await;
    let catalog = pg_router::catalog::load(&cat).await.unwrap();
    let t = catalog.table("kv").expect("kv declared");
    let routing = &catalog.keyspace_of(t).expect("keyspace").routing;
    let mut total = 0;
    for s in &dev.cluster.shards {
        let d = common::connect_direct(s).await;
        let rows = d.query("SELECT k FROM kv", &[]).await.unwrap();
        assert!(!rows.is_empty(), "no rows on {}", s.name);
        for r in &rows {
            let k: i32 = r.get(0);
            let owner = routing.shard_for(t.vindex.keyspace_id(&KeyValue::Int(k as i64)));
            assert_eq!(owner, s.name, "key {k} on the wrong shard");
        }
        total += rows.len();
    }
    assert_eq!(total, 290 + 630 + 500 + 10);
    // Generated keys: unique over the shards, each row where its key says.
    let mut ids = std::collections::HashSet::new();
    let gk = catalog.table("gk").expect("gk declared");
    for s in &dev.cluster.shards {
        let d = common::connect_direct(s).await;
        for r in d.query("SELECT id FROM gk", &[]).await.unwrap() {
            let id: i64 = r.get(0);
            let owner = routing.shard_for(gk.vindex.keyspace_id(&KeyValue::Int(id)));
            assert_eq!(owner, s.name, "generated key {id} on the wrong shard");
            assert!(ids.insert(id), "generated key {id} twice");
        }
    }
    assert_eq!(ids.len(), 5 + 4 + 10);
}
