//! Shared harness for integration tests: an embedded cluster (N real
//! PostgreSQL shards + a catalog on free loopback ports) with a router in
//! front — the same code `pg-router dev` runs. Dropping it stops every
//! instance, also when a test panics.

use std::time::{Duration, Instant};

use pg_router::cluster::{ClusterOptions, PgInstance};
use pg_router::dev::DevCluster;
use tokio_postgres::{Client, NoTls};

/// Starts `shards` shards + catalog + router (pool of `pool_size` per shard).
/// Router logs go to the test output when `PGROUTER_LOG` is set.
pub async fn start(shards: usize, pool_size: usize) -> DevCluster {
    start_spare(shards, 0, pool_size).await
}

/// [`start`] with distributed-transaction settings.
pub async fn start_with(
    shards: usize,
    pool_size: usize,
    txn: pg_router::txn::TxnConfig,
) -> DevCluster {
    let opts = ClusterOptions {
        shards,
        ..ClusterOptions::default()
    };
    DevCluster::start_with(
        opts,
        "127.0.0.1:0".parse().expect("addr"),
        pool_size,
        0,
        txn,
    )
    .await
    .unwrap_or_else(|e| panic!("cannot start the dev cluster: {e}"))
}

/// [`start`] with `spare` extra shards registered without key ranges
/// (`dev --spare-shards`): targets for online resharding.
pub async fn start_spare(shards: usize, spare: usize, pool_size: usize) -> DevCluster {
    if let Ok(filter) = std::env::var("PGROUTER_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let opts = ClusterOptions {
        shards,
        spare_shards: spare,
        ..ClusterOptions::default()
    };
    DevCluster::start(opts, "127.0.0.1:0".parse().expect("addr"), pool_size, 0)
        .await
        .unwrap_or_else(|e| panic!("cannot start the dev cluster: {e}"))
}

/// A loopback TCP port that was free a moment ago (for a `pg-router serve`
/// child process to listen on).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// libpq-style DSN of the router.
pub fn router_dsn(dev: &DevCluster) -> String {
    format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        dev.router.addr.port()
    )
}

/// A tokio-postgres client connected to `dsn`.
pub async fn connect_dsn(dsn: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(dsn, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {dsn}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A client connected through the router.
pub async fn connect(dev: &DevCluster) -> Client {
    connect_dsn(&router_dsn(dev)).await
}

/// A client connected directly to one PostgreSQL instance.
pub async fn connect_direct(inst: &PgInstance) -> Client {
    connect_dsn(&inst.dsn()).await
}

/// Declares a sharded table in the catalog and waits until the router has
/// loaded it; returns how long that took.
pub async fn add_table(dev: &DevCluster, table: &str, column: &str, key_type: &str) -> Duration {
    let cat = connect_dsn(&dev.catalog_dsn()).await;
    let kt = key_type.parse().expect("key type");
    let t0 = Instant::now();
    pg_router::catalog::add_table(&cat, table, column, "main", None, kt)
        .await
        .expect("add_table");
    loop {
        if dev.router.state.routing().catalog.table(table).is_some() {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "router did not pick up table {table}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Declares a sharded table by running the `pg-router meta add-table` CLI
/// binary against the cluster's catalog; returns how long the running
/// router took to pick it up (after the command finished).
pub async fn add_table_cli(
    dev: &DevCluster,
    table: &str,
    column: &str,
    key_type: &str,
) -> Duration {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pg-router"))
        .args([
            "meta",
            "--catalog",
            &dev.catalog_dsn(),
            "add-table",
            "--table",
            table,
            "--column",
            column,
        ])
        .args(["--key-type", key_type])
        .output()
        .expect("run pg-router meta add-table");
    assert!(
        out.status.success(),
        "pg-router meta add-table failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t0 = Instant::now();
    loop {
        if dev.router.state.routing().catalog.table(table).is_some() {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "router did not pick up table {table}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs a client program from the PostgreSQL bin dir (psql, pgbench) and
/// returns (exit success, stdout, stderr).
pub fn run_pg_tool(dev: &DevCluster, tool: &str, args: &[&str]) -> (bool, String, String) {
    let bin = dev.cluster.bin(tool);
    let out = std::process::Command::new(&bin)
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `-h 127.0.0.1 -p PORT -U postgres` for client tools.
pub fn conn_args(dev: &DevCluster) -> Vec<String> {
    vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        dev.router.addr.port().to_string(),
        "-U".into(),
        "postgres".into(),
    ]
}

/// SQLSTATE of a failed statement ("" when it is not a server error).
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

/// Distributed-transaction settings with no recovery pass after the first,
/// so the catalog's decision rows stay countable.
pub fn quiet_recovery(mode: pg_router::txn::TransactionMode) -> pg_router::txn::TxnConfig {
    pg_router::txn::TxnConfig {
        mode,
        recovery_interval_ms: 600_000,
        ..pg_router::txn::TxnConfig::default()
    }
}

/// The server's message of a failed call ("" for a client-side error).
pub fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default()
}

/// [`db_message`] followed by the DETAIL, if any, in parentheses.
pub fn db_message_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error().and_then(|d| d.detail()) {
        Some(detail) => format!("{} ({detail})", db_message(e)),
        None => db_message(e),
    }
}

/// Sum over the shards of `sql` (a `count(*)`-like query returning one
/// int8), each run directly on the shard.
pub async fn sum_on_shards(dev: &DevCluster, sql: &str) -> i64 {
    let mut n = 0;
    for s in &dev.cluster.shards {
        let d = connect_direct(s).await;
        n += d.query_one(sql, &[]).await.unwrap().get::<_, i64>(0);
    }
    n
}

/// Prepared (in-doubt or committing) transactions on all shards.
pub async fn prepared_xacts(dev: &DevCluster) -> i64 {
    sum_on_shards(dev, "SELECT count(*) FROM pg_prepared_xacts").await
}

/// COMMIT decisions in the catalog's 2PC decision log.
pub async fn commit_decisions(dev: &DevCluster) -> i64 {
    let cat = connect_dsn(&dev.catalog_dsn()).await;
    cat.query_one(
        "SELECT count(*) FROM pgrouter.twopc_decisions WHERE decision = 'c'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// Ids (int column `id`) of `table` on each shard, read on the shards directly.
pub async fn ids_per_shard(dev: &DevCluster, table: &str) -> Vec<Vec<i32>> {
    let mut per = Vec::new();
    for s in &dev.cluster.shards {
        let d = connect_direct(s).await;
        let ids: Vec<i32> = d
            .query(&format!("SELECT id FROM {table} ORDER BY id"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        per.push(ids);
    }
    per
}

/// Creates `acct(id int primary key, bal int <bal_constraint>)` sharded by
/// id with rows 1..=20 (bal 10, one single-shard INSERT each) on a 2-shard
/// cluster; returns (ids on shard0, ids on shard1), each with ≥ 2 ids.
pub async fn acct_on_two_shards(
    dev: &DevCluster,
    c: &Client,
    bal_constraint: &str,
) -> (Vec<i32>, Vec<i32>) {
    c.batch_execute(&format!(
        "CREATE TABLE acct (id int primary key, bal int {bal_constraint})"
    ))
    .await
    .unwrap();
    add_table(dev, "acct", "id", "int").await;
    for i in 1..=20 {
        c.batch_execute(&format!("INSERT INTO acct (id, bal) VALUES ({i}, 10)"))
            .await
            .unwrap();
    }
    let per = ids_per_shard(dev, "acct").await;
    assert!(
        per.len() == 2 && per[0].len() >= 2 && per[1].len() >= 2,
        "{per:?}"
    );
    (per[0].clone(), per[1].clone())
}

/// Runs `pg-router meta --catalog <catalog> ARGS` and returns its stdout.
pub fn meta(dev: &DevCluster, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pg-router"))
        .args(["meta", "--catalog", &dev.catalog_dsn()])
        .args(args)
        .output()
        .expect("run pg-router meta");
    assert!(
        out.status.success(),
        "pg-router meta {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A raw protocol connection to `addr` past startup (user and database
/// `postgres`): the stream, its read buffer, and the frames the router
/// answered the startup with (up to ReadyForQuery).
pub async fn raw_session(
    addr: std::net::SocketAddr,
) -> (tokio::net::TcpStream, bytes::BytesMut, Vec<bytes::BytesMut>) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::startup_message(
        [("user", "postgres"), ("database", "postgres")],
        &mut out,
    )
    .unwrap();
    s.write_all(&out).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    let frames = read_frames(&mut s, &mut buf, b'Z').await;
    (s, buf, frames)
}

/// Reads backend messages from a raw connection until one tagged `until`;
/// returns the tags read.
pub async fn read_until(
    s: &mut tokio::net::TcpStream,
    buf: &mut bytes::BytesMut,
    until: u8,
) -> Vec<u8> {
    read_frames(s, buf, until)
        .await
        .iter()
        .map(|f| f[0])
        .collect()
}

/// Reads backend messages (whole frames, tag first) from a raw connection
/// until one tagged `until` (10 s timeout per read).
pub async fn read_frames(
    s: &mut tokio::net::TcpStream,
    buf: &mut bytes::BytesMut,
    until: u8,
) -> Vec<bytes::BytesMut> {
    use tokio::io::AsyncReadExt;
    let mut frames = Vec::new();
    loop {
        while buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() < 1 + len {
                break;
            }
            let frame = buf.split_to(1 + len);
            let done = frame[0] == until;
            frames.push(frame);
            if done {
                return frames;
            }
        }
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_buf(buf))
            .await
            .expect("router answers")
            .unwrap();
        let tags: Vec<u8> = frames.iter().map(|f| f[0]).collect();
        assert!(n > 0, "router closed the connection; read {tags:?}");
    }
}

/// A cluster whose router configuration is changed by `configure`.
pub async fn start_config(
    shards: usize,
    pool_size: usize,
    configure: impl FnOnce(&mut pg_router::config::RouterConfig),
) -> DevCluster {
    let opts = ClusterOptions {
        shards,
        ..ClusterOptions::default()
    };
    DevCluster::start_config(
        opts,
        "127.0.0.1:0".parse().expect("addr"),
        pool_size,
        1,
        configure,
    )
    .await
    .unwrap_or_else(|e| panic!("cannot start the dev cluster: {e}"))
}

/// A plain HTTP/1.1 GET; returns (status code, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: router\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut resp))
        .await
        .expect("HTTP answer")
        .unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Value of the sample `name` whose labels include `labels`.
pub fn sample(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// `/metrics` from the router's HTTP endpoint, parsed.
pub async fn scrape(addr: std::net::SocketAddr) -> prometheus_parse::Scrape {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap()
}
