//! What an operator relies on, against real shards: cancel requests
//! (fast path, scatter-gather, extended protocol, a wrong key).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pg_router::dev::DevCluster;
use postgres_protocol::message::frontend as fe;
use tokio::io::AsyncWriteExt;
use tokio_postgres::NoTls;

/// Number of backends on all shards running a statement containing
/// `pg_sleep` (other than the probe itself).
async fn sleeping(dev: &DevCluster) -> i64 {
    let mut n = 0;
    for shard in &dev.cluster.shards {
        let d = common::connect_direct(shard).await;
        n += d
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                 AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
    }
    n
}

/// Waits until `n` backends run pg_sleep (10 s at most).
async fn wait_sleeping(dev: &DevCluster, n: i64) {
    let t0 = Instant::now();
    while sleeping(dev).await != n {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "expected {n} sleeping backends, have {}",
            sleeping(dev).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw CancelRequest (PostgreSQL docs §55.2.8) to the router.
async fn send_cancel(dev: &DevCluster, pid: i32, secret: i32) {
    let mut s = tokio::net::TcpStream::connect(dev.router.addr)
        .await
        .unwrap();
    let mut b = BytesMut::new();
    fe::cancel_request(pid, secret, &mut b);
    s.write_all(&b).await.unwrap();
    let _ = s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests() {
    let dev = common::start(2, 4).await;
    let c = Arc::new(common::connect(&dev).await);
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    common::add_table(&dev, "t", "id", "int").await;
    c.batch_execute("INSERT INTO t (id) VALUES (1), (2), (3), (4), (5), (6)")
        .await
        .unwrap();
    let per_shard = common::ids_per_shard(&dev, "t").await;
    assert!(per_shard.iter().all(|ids| !ids.is_empty()), "{per_shard:?}");

    // Fast path (one shard), scatter-gather (every shard), extended
    // protocol: each is cancelled within seconds with 57014, and the
    // connection keeps working.
    let cases: [(&str, i64); 3] = [
        ("SELECT pg_sleep(60) FROM t WHERE id = 1", 1),
        ("SELECT count(*) FROM t WHERE pg_sleep(60) IS NOT NULL", 2),
        ("extended", 1),
    ];
    for (sql, backends) in cases {
        let token = c.cancel_token();
        let t0 = Instant::now();
        let run = {
            let c = c.clone();
            tokio::spawn(async move {
                if sql == "extended" {
                    c.query("SELECT pg_sleep($1)", &[&60f64]).await.map(|_| ())
                } else {
                    c.simple_query(sql).await.map(|_| ())
                }
            })
        };
        wait_sleeping(&dev, backends).await;
        token.cancel_query(NoTls).await.unwrap();
        let e = run.await.unwrap().unwrap_err();
        assert_eq!(common::sqlstate(&e), "57014", "{sql}: {e:?}");
        assert!(t0.elapsed() < Duration::from_secs(20), "{sql}");
        wait_sleeping(&dev, 0).await;
        let n: i64 = c
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 6, "the connection still works after cancelling {sql}");
    }

    // Inside a transaction block the cancel fails the block (25P02 until
    // ROLLBACK), exactly as on PostgreSQL.
    c.batch_execute("BEGIN").await.unwrap();
    let token = c.cancel_token();
    let run = {
        let c = c.clone();
        tokio::spawn(async move { c.simple_query("SELECT pg_sleep(60)").await })
    };
    wait_sleeping(&dev, 1).await;
    token.cancel_query(NoTls).await.unwrap();
    let e = run.await.unwrap().unwrap_err();
    assert_eq!(common::sqlstate(&e), "57014");
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "25P02");
    c.batch_execute("ROLLBACK").await.unwrap();

    // A CancelRequest with the right process id but a wrong secret key, or
    // an unknown process id, cancels nothing.
    let mut s = tokio::net::TcpStream::connect(dev.router.addr)
        .await
        .unwrap();
    let mut out = BytesMut::new();
    fe::startup_message([("user", "postgres"), ("database", "postgres")], &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let frames = common::read_frames(&mut s, &mut buf, b'Z').await;
    let key = frames
        .iter()
        .find(|f| f[0] == b'K')
        .expect("BackendKeyData");
    let pid = i32::from_be_bytes([key[5], key[6], key[7], key[8]]);
    let secret = i32::from_be_bytes([key[9], key[10], key[11], key[12]]);
    out.clear();
    fe::query("SELECT pg_sleep(1.5)", &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    wait_sleeping(&dev, 1).await;
    send_cancel(&dev, pid, secret.wrapping_add(1)).await;
    send_cancel(&dev, pid.wrapping_add(1), secret).await;
    assert_eq!(common::read_until(&mut s, &mut buf, b'Z').await, b"TDCZ");
    // The right key cancels.
    out.clear();
    fe::query("SELECT pg_sleep(60)", &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    wait_sleeping(&dev, 1).await;
    send_cancel(&dev, pid, secret).await;
    assert_eq!(common::read_until(&mut s, &mut buf, b'Z').await, b"TEZ");
    dev.stop().await;
}
