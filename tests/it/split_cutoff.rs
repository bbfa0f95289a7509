//! A router cut off from the catalog during a split. Its catalog
//! connections go through a TCP relay that the test turns into a black
//! hole (connections stay open, nothing passes, like a network partition);
//! meanwhile a client keeps updating accounts of the moving range through
//! it, and the split job runs. Checked: the job passes the router only
//! after its lease expired; the cut-off router then refuses writes
//! (25006) instead of writing to the source with its stale routing; every
//! update it reported done is on the target after the move (none went to
//! the source after the copy); once reconnected it serves the new routing
//! and writes to the target.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pg_router::split::progress::Quiet;
use pg_router::split::run::{drive, JobContext, RunSettings};
use pg_router::split::{self, store, Phase, RangeChoice};
use pg_router::vindex::{KeyValue, VindexKind};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::common;
use crate::split::{dev_access, pgbench_with_spare_pool};

/// A TCP relay to `target` that can be made a black hole.
struct Relay {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(false);
        let tx = cut.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let mut rx = tx.subscribe();
                tokio::spawn(async move {
                    let mut client = client;
                    if !*rx.borrow() {
                        let Ok(mut server) = TcpStream::connect(target).await else {
                            return;
                        };
                        let relayed = tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => true,
                            _ = rx.wait_for(|c| *c) => false,
                        };
                        if relayed {
                            return;
                        }
                        // Cut: hold both ends silently until the link is back.
                        let _ = rx.wait_for(|c| !*c).await;
                        drop(server);
                        return;
                    }
                    let _ = rx.wait_for(|c| !*c).await;
                    drop(client);
                });
            }
        });
        Relay { addr, cut, task }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.set_cut(false);
        self.task.abort();
    }
}

/// Sum of the balances of `aids` (through a router or on one shard).
async fn sum(c: &tokio_postgres::Client, aids: &[i32]) -> i64 {
    c.query_one(
        "SELECT sum(abalance) FROM pgbench_accounts WHERE aid = any($1)",
        &[&aids],
    )
    .await
    .unwrap()
    .get::<_, Option<i64>>(0)
    .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_cut_off_from_the_catalog_writes_nothing_to_the_moved_range() {
    let dev = pgbench_with_spare_pool(4).await;
    let router = common::connect(&dev).await;
    router
        .batch_execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
        .await
        .unwrap();
    let cat_port = dev.cluster.catalog.port;
    let relay = Relay::start(SocketAddr::from(([127, 0, 0, 1], cat_port))).await;
    let mut cfg = dev.router.config.clone();
    cfg.listen = "127.0.0.1:0".into();
    cfg.catalog = dev.catalog_dsn().replace(
        &format!("port={cat_port}"),
        &format!("port={}", relay.addr.port()),
    );
    assert!(
        cfg.catalog.contains(&relay.addr.port().to_string()),
        "{}",
        cfg.catalog
    );
    cfg.resharding.lease_ttl_ms = 1500;
    cfg.resharding.lease_renew_ms = 200;
    cfg.resharding.write_wait_ms = 500;
    let r2 = pg_router::dev::start_router(&cfg)
        .await
        .expect("second router");
    let c2 = common::connect_dsn(&format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        r2.addr.port()
    ))
    .await;

    // The accounts that will move.
    let cat = common::connect_direct(&dev.cluster.catalog).await;
    let catalog = pg_router::catalog::load(&cat).await.unwrap();
    let s0 = dev.cluster.shards[0].name.clone();
    let spare = dev.cluster.shards[2].name.clone();
    let spec = split::plan(
        &catalog.keyspaces["main"].routing,
        &s0,
        &spare,
        RangeChoice::UpperHalf,
    )
    .unwrap();
    let moving: Vec<i32> = (1..=100_000)
        .filter(|aid| {
            spec.range
                .contains(VindexKind::HashMurmur3.keyspace_id(&KeyValue::Int(*aid as i64)))
        })
        .take(50)
        .collect();
    assert_eq!(moving.len(), 50);
    let update = c2
        .prepare("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = $1")
        .await
        .unwrap();
    assert_eq!(c2.execute(&update, &[&moving[0]]).await.unwrap(), 1);
    let first_done: i64 = 1;
    // The job runs to its catch-up (the cutover waits for a request).
    let job = store::create(&cat, &spec).await.unwrap();
    let pg_bin = dev.cluster.bin("pg_dump").parent().unwrap().to_path_buf();
    let ctx = JobContext::open(
        common::connect_direct(&dev.cluster.catalog).await,
        dev_access(),
        &job,
    )
    .await
    .unwrap();
    let settings = RunSettings {
        capture: Default::default(),
        parallel_tables: 2,
        pg_bin,
        catchup: Default::default(),
        cutover: Default::default(),
        // The verification's temporary slot would wait for the open
        // transaction below (slot creation waits for running writers).
        verify: false,
        manual_cutover: true,
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The job runs in this task (its replication stream is not Send);
    // the test steers it alongside.
    let steer = async {
        let t0 = std::time::Instant::now();
        while store::load(&cat, job.id).await.unwrap().unwrap().phase != Phase::CatchUp {
            assert!(t0.elapsed() < Duration::from_secs(60), "no catch-up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // A transaction of the second router that wrote on the source after
        // the snapshot, before the cut, and is still open: were it to commit
        // after the cutover, its row would land on the source, in the moved
        // range, and be lost to the routed view.
        let c3 = common::connect_dsn(&format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            r2.addr.port()
        ))
        .await;
        c3.batch_execute(&format!(
            "BEGIN; INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
             VALUES (1, 1, {}, 424242, now())",
            moving[2]
        ))
        .await
        .unwrap();

        // Cut the second router off, then let the job cut over while it is
        // asked to write to the moving range.
        relay.set_cut(true);
        let writer = tokio::spawn({
            let stop = stop.clone();
            let moving = moving.clone();
            let update = update.clone();
            async move {
                let (mut done, mut refused, mut i) = (0i64, 0usize, 0usize);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let aid = moving[i % moving.len()];
                    i += 1;
                    match c2.execute(&update, &[&aid]).await {
                        Ok(1) => done += 1,
                        Ok(n) => panic!("aid {aid}: {n} rows"),
                        Err(e) => {
                            assert_eq!(common::sqlstate(&e), "25006", "{e:?}");
                            refused += 1;
                        }
                    }
                }
                (c2, done, refused)
            }
        });
        store::record_progress(&cat, job.id, "cutover_requested", &true.into())
            .await
            .unwrap();
        (c3, writer)
    };
    let (phase, (c3, writer)) = tokio::join!(
        tokio::time::timeout(
            Duration::from_secs(120),
            drive(&ctx, job.id, &settings, &Quiet)
        ),
        steer
    );
    let phase = phase
        .expect("the job ends within 2 minutes")
        .expect("the job completes");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (c2, during, refused) = writer.await.unwrap();
    let mut done = first_done + during;
    assert_eq!(phase, Phase::Completed);
    eprintln!("cut-off router: {done} updates done, {refused} refused during the job");
    assert!(
        refused > 0,
        "the cut-off router refused writes once its lease expired"
    );

    // The open transaction's source session was ended before the fence:
    // its COMMIT fails and its row is nowhere.
    let e = c3.batch_execute("COMMIT").await;
    assert!(
        e.is_err(),
        "a transaction of the passed router committed after the cutover"
    );
    let ended: Option<i64> = cat
        .query_one(
            "select (progress #>> '{cutover,passed_routers,sessions_ended}')::int8 \
               from pgrouter.split_jobs where id = $1",
            &[&job.id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ended.is_some_and(|n| n >= 1), "sessions ended: {ended:?}");
    for inst in &dev.cluster.shards {
        let d = common::connect_direct(inst).await;
        let n: i64 = d
            .query_one(
                "select count(*) from pgbench_history where delta = 424242",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "the open transaction's row on {}", inst.name);
    }

    // Still cut off: writes to the moved range are refused, nothing
    // reaches the source.
    for aid in &moving[..5] {
        let e = c2.execute(&update, &[aid]).await.unwrap_err();
        assert_eq!(common::sqlstate(&e), "25006", "{e:?}");
    }
    let direct0 = common::connect_direct(&dev.cluster.shards[0]).await;
    let left: i64 = direct0
        .query_one(
            "select count(*) from pgbench_accounts where aid = any($1)",
            &[&moving],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "moved accounts still on the source");
    assert_eq!(
        sum(&router, &moving).await,
        done,
        "every update the cut-off router did is on the target"
    );

    // Reconnected: the new routing, writes to the target.
    relay.set_cut(false);
    let mut ok = false;
    for _ in 0..100 {
        match c2.execute(&update, &[&moving[1]]).await {
            Ok(1) => {
                ok = true;
                break;
            }
            Ok(n) => panic!("{n} rows"),
            Err(e) => assert_eq!(common::sqlstate(&e), "25006", "{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the reconnected router writes again");
    done += 1;
    let spare_direct = common::connect_direct(&dev.cluster.shards[2]).await;
    assert_eq!(sum(&spare_direct, &moving).await, done, "on the target");
    assert_eq!(sum(&router, &moving).await, done);
    r2.stop().await;
}
