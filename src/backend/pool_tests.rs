//! The pool against a real PostgreSQL server: barging, waiting, timeouts
//! and slot accounting.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use super::{PoolError, ShardHealth, ShardPool, ShardTarget};
use crate::catalog::test_pg::TestPg;

fn target(port: u16) -> ShardTarget {
    ShardTarget {
        name: "shard0".into(),
        host: "127.0.0.1".into(),
        port,
        dbname: "postgres".into(),
        user: "postgres".into(),
        password: None,
        connect_timeout: Duration::from_secs(5),
        tls: None,
        application_name: "pg-router pool test".into(),
    }
}

fn pool(port: u16, size: usize, timeout: Duration) -> Arc<ShardPool> {
    ShardPool::new(target(port), size, timeout, ShardHealth::new())
}

#[tokio::test(flavor = "current_thread")]
async fn a_running_checkout_takes_an_idle_connection_before_a_waiter() {
    let pg = TestPg::start();
    let p = pool(pg.port, 1, Duration::from_secs(5));
    let first = p.get().await.expect("first checkout");
    let waiter = tokio::spawn({
        let p = p.clone();
        async move { p.get().await.map(|_| ()) }
    });
    // Let the waiter run up to its wait.
    while p.waiting() == 0 {
        tokio::task::yield_now().await;
    }
    drop(first);
    // The waiter was woken but has not run: the running checkout takes
    // the idle connection at once instead of queueing behind it.
    let barged = p
        .get()
        .now_or_never()
        .expect("no wait for an idle connection")
        .expect("checkout");
    assert_eq!(p.in_use(), 1);
    tokio::task::yield_now().await;
    assert!(
        !waiter.is_finished(),
        "the waiter lost the race and waits again"
    );
    assert_eq!(p.waiting(), 1);
    drop(barged);
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter gets the next release")
        .expect("task")
        .expect("checkout");
    assert_eq!(p.connections_opened(), 1, "one connection served all three");
    assert_eq!((p.in_use(), p.idle_count(), p.waiting()), (0, 1, 0));
}

#[tokio::test(flavor = "current_thread")]
async fn a_checkout_times_out_while_every_connection_is_in_use() {
    let pg = TestPg::start();
    let p = pool(pg.port, 1, Duration::from_millis(100));
    let _held = p.get().await.expect("checkout");
    let e = p.get().await.err().expect("pool exhausted");
    assert!(
        matches!(
            &e,
            PoolError::Timeout {
                ms: 100,
                size: 1,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(p.waiting(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_broken_connection_frees_its_slot_for_a_new_one() {
    let pg = TestPg::start();
    let p = pool(pg.port, 1, Duration::from_secs(5));
    let mut c = p.get().await.expect("checkout");
    c.broken = true;
    drop(c);
    assert_eq!((p.in_use(), p.idle_count()), (0, 0));
    let _c = tokio::time::timeout(Duration::from_secs(5), p.get())
        .await
        .expect("no wait: the slot is free")
        .expect("new connection");
    assert_eq!(p.connections_opened(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn an_abandoned_connect_gives_its_slot_back() {
    // A listener that accepts (in its backlog) and never answers: the
    // startup hangs until the checkout is dropped.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let p = pool(port, 1, Duration::from_secs(5));
    assert!(tokio::time::timeout(Duration::from_millis(100), p.get())
        .await
        .is_err());
    assert_eq!(p.in_use(), 0, "the slot of the dropped connect is free");
    assert_eq!(p.connections_opened(), 1);
}
