//! Distributed transactions through the router against real shards:
//! atomic multi-shard statements (simple, extended, COPY), two-phase commit
//! only when two or more participants wrote (xid check for readers),
//! savepoints across late participants, failed blocks, COMMIT AND CHAIN,
//! errors raised at PREPARE, the `single` and `best_effort` modes, and
//! pgbench TPC-B with its balance invariant.

use pg_router::dev::DevCluster;
use pg_router::txn::TransactionMode;
use tokio_postgres::Client;

use crate::common;

async fn setup(dev: &DevCluster, c: &Client) -> (Vec<i32>, Vec<i32>) {
    common::acct_on_two_shards(dev, c, "check (bal >= 0)").await
}

/// Balances by id read on the shards directly.
async fn balances(dev: &DevCluster) -> Vec<(i32, i32)> {
    let mut all = Vec::new();
    for s in &dev.cluster.shards {
        let d = common::connect_direct(s).await;
        for r in d.query("SELECT id, bal FROM acct", &[]).await.unwrap() {
            all.push((r.get(0), r.get(1)));
        }
    }
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_commit_and_transaction_blocks() {
    let dev = common::start_with(2, 4, common::quiet_recovery(TransactionMode::Twopc)).await;
    let c = common::connect(&dev).await;
    let (s0, s1) = setup(&dev, &c).await;
    let before = balances(&dev).await;

    // A multi-shard UPDATE failing on one shard changes nothing anywhere.
    c.batch_execute(&format!("UPDATE acct SET bal = 0 WHERE id = {}", s0[0]))
        .await
        .unwrap();
    let e = c
        .batch_execute("UPDATE acct SET bal = bal - 5")
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "23514", "{e:?}");
    let mut expect = before.clone();
    for (id, bal) in expect.iter_mut() {
        if *id == s0[0] {
            *bal = 0;
        }
    }
    assert_eq!(balances(&dev).await, expect);
    // The same through the extended protocol, then a successful one.
    let e = c
        .execute("UPDATE acct SET bal = bal - $1", &[&5i32])
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "23514");
    assert_eq!(balances(&dev).await, expect);
    let d0 = common::commit_decisions(&dev).await;
    let n = c
        .execute("UPDATE acct SET bal = bal + $1", &[&1i32])
        .await
        .unwrap();
    assert_eq!(n, 20);
    assert_eq!(
        common::commit_decisions(&dev).await,
        d0 + 1,
        "multi-shard write used 2PC"
    );
    c.batch_execute("UPDATE acct SET bal = bal - 1")
        .await
        .unwrap();
    assert_eq!(common::commit_decisions(&dev).await, d0 + 2);
    assert_eq!(balances(&dev).await, expect);

    // COPY spanning shards: one bad row rolls back every shard's rows.
    let sink = c.copy_in("COPY acct (id, bal) FROM STDIN").await.unwrap();
    let data = (100..110)
        .map(|i| format!("{i}\t{}\n", if i == 107 { -1 } else { 5 }))
        .collect::<String>();
    futures_util_send(sink, data).await.unwrap_err();
    assert_eq!(balances(&dev).await, expect);

    // A block writing on two shards: 2PC, both committed, nothing left prepared.
    let d0 = common::commit_decisions(&dev).await;
    c.batch_execute(&format!(
        "BEGIN; UPDATE acct SET bal = 50 WHERE id = {}; UPDATE acct SET bal = 60 WHERE id = {}; COMMIT",
        s0[1], s1[0]
    ))
    .await
    .unwrap();
    assert_eq!(common::commit_decisions(&dev).await, d0 + 1);
    assert_eq!(common::prepared_xacts(&dev).await, 0);
    let b = balances(&dev).await;
    assert!(
        b.contains(&(s0[1], 50)) && b.contains(&(s1[0], 60)),
        "{b:?}"
    );

    // Reading on one shard, writing on another: one-phase commit.
    c.batch_execute(&format!(
        "BEGIN; SELECT bal FROM acct WHERE id = {}; UPDATE acct SET bal = 61 WHERE id = {}; COMMIT",
        s0[1], s1[0]
    ))
    .await
    .unwrap();
    assert_eq!(
        common::commit_decisions(&dev).await,
        d0 + 1,
        "no 2PC for a read-only participant"
    );

    // A SELECT that writes through a function is caught by the xid check.
    c.batch_execute(
        "CREATE FUNCTION bump(i int) RETURNS int LANGUAGE sql AS \
         'UPDATE acct SET bal = bal + 1 WHERE id = i RETURNING bal'",
    )
    .await
    .unwrap();
    c.batch_execute(&format!(
        "BEGIN; UPDATE acct SET bal = 70 WHERE id = {a}; SELECT bump({b}) FROM acct WHERE id = {b}; COMMIT",
        a = s0[1],
        b = s1[0]
    ))
    .await
    .unwrap();
    assert_eq!(
        common::commit_decisions(&dev).await,
        d0 + 2,
        "the writing SELECT made it 2PC"
    );
    let b = balances(&dev).await;
    assert!(
        b.contains(&(s0[1], 70)) && b.contains(&(s1[0], 62)),
        "{b:?}"
    );

    // Savepoints: shard1 joins after the savepoint, ROLLBACK TO undoes it there.
    c.batch_execute(&format!(
        "BEGIN; UPDATE acct SET bal = 1 WHERE id = {a}; SAVEPOINT s; \
         UPDATE acct SET bal = 2 WHERE id = {b}; UPDATE acct SET bal = 3 WHERE id = {a2}; \
         ROLLBACK TO SAVEPOINT s; UPDATE acct SET bal = 4 WHERE id = {b2}; RELEASE s; COMMIT",
        a = s0[0],
        a2 = s0[1],
        b = s1[0],
        b2 = s1[1]
    ))
    .await
    .unwrap();
    let b = balances(&dev).await;
    for want in [(s0[0], 1), (s0[1], 70), (s1[0], 62), (s1[1], 4)] {
        assert!(b.contains(&want), "{want:?} in {b:?}");
    }
    let e = c
        .batch_execute("BEGIN; ROLLBACK TO SAVEPOINT nope")
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "3B001");
    c.batch_execute("ROLLBACK").await.unwrap();

    // A failed block: 25P02 until ROLLBACK; nothing of it is committed.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!("UPDATE acct SET bal = 99 WHERE id = {}", s1[1]))
        .await
        .unwrap();
    let e = c
        .batch_execute(&format!("UPDATE acct SET bal = -1 WHERE id = {}", s0[0]))
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "23514");
    let e = c.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "25P02");
    c.batch_execute("COMMIT").await.unwrap(); // reported as ROLLBACK
    assert!(balances(&dev).await.contains(&(s1[1], 4)));

    // COMMIT AND CHAIN keeps the isolation level.
    let rows = c
        .simple_query("BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT 1; COMMIT AND CHAIN; SHOW transaction_isolation")
        .await
        .unwrap();
    let iso = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                r.get(0).map(str::to_string).filter(|v| v != "1")
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(iso, "serializable");
    c.batch_execute("COMMIT").await.unwrap();

    // An error raised at PREPARE (deferred unique check) rolls back every shard.
    c.batch_execute(
        "CREATE TABLE d (id int primary key, ref int, CONSTRAINT d_ref UNIQUE (ref) DEFERRABLE INITIALLY DEFERRED)",
    )
    .await
    .unwrap();
    common::add_table(&dev, "d", "id", "int").await;
    let e = c
        .batch_execute(&format!(
            "BEGIN; INSERT INTO d (id, ref) VALUES ({}, 1); INSERT INTO d (id, ref) VALUES ({}, 7), ({}, 7); COMMIT",
            s0[0], s1[0], s1[1]
        ))
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "23505", "{e:?}");
    let n: i64 = c
        .query_one("SELECT count(*) FROM d", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    assert_eq!(common::prepared_xacts(&dev).await, 0);

    // The session is still usable and out of any block.
    let n: i64 = c
        .query_one("SELECT count(*) FROM acct", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 20);
    dev.stop().await;
}

async fn futures_util_send(
    sink: tokio_postgres::CopyInSink<bytes::Bytes>,
    data: String,
) -> Result<u64, tokio_postgres::Error> {
    use futures_util::SinkExt;
    let mut sink = Box::pin(sink);
    sink.send(bytes::Bytes::from(data)).await?;
    sink.as_mut().finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_and_best_effort_modes() {
    let dev = common::start_with(2, 4, common::quiet_recovery(TransactionMode::Single)).await;
    let c = common::connect(&dev).await;
    let (s0, s1) = setup(&dev, &c).await;
    let e = c
        .batch_execute("UPDATE acct SET bal = 1")
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "0A000", "{e:?}");
    let e = c
        .execute("DELETE FROM acct WHERE bal > $1", &[&0i32])
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "0A000", "{e:?}");
    c.batch_execute(&format!(
        "BEGIN; UPDATE acct SET bal = 5 WHERE id = {}",
        s0[0]
    ))
    .await
    .unwrap();
    // Reading another shard is fine, writing there is not.
    c.batch_execute(&format!("SELECT bal FROM acct WHERE id = {}", s1[0]))
        .await
        .unwrap();
    let e = c
        .batch_execute(&format!("UPDATE acct SET bal = 5 WHERE id = {}", s1[0]))
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "0A000");
    c.batch_execute("ROLLBACK").await.unwrap();
    assert!(balances(&dev).await.iter().all(|(_, b)| *b == 10));
    dev.stop().await;

    // best_effort: a commit failing on the second shard leaves the first
    // committed and says so in a WARNING.
    let dev = common::start_with(2, 4, common::quiet_recovery(TransactionMode::BestEffort)).await;
    let c = common::connect(&dev).await;
    let (s0, s1) = setup(&dev, &c).await;
    c.batch_execute(
        "CREATE TABLE d (id int primary key, ref int, CONSTRAINT d_ref UNIQUE (ref) DEFERRABLE INITIALLY DEFERRED)",
    )
    .await
    .unwrap();
    common::add_table(&dev, "d", "id", "int").await;
    let mut args = common::conn_args(&dev);
    args.extend([
        "-X".to_string(),
        "-v".into(),
        "ON_ERROR_STOP=0".into(),
        "-c".into(),
        format!(
            "BEGIN; INSERT INTO d (id, ref) VALUES ({}, 1); INSERT INTO d (id, ref) VALUES ({}, 7), ({}, 7); COMMIT",
            s0[0], s1[0], s1[1]
        ),
        "postgres".into(),
    ]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_, _, err) = common::run_pg_tool(&dev, "psql", &a);
    assert!(
        err.contains("partially committed: committed on shards shard0"),
        "{err}"
    );
    assert!(err.contains("duplicate key"), "{err}");
    let n: i64 = c
        .query_one("SELECT count(*) FROM d", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "best_effort kept the first shard's commit");
    assert_eq!(common::commit_decisions(&dev).await, 0);
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_tpcb_keeps_the_balance_invariant() {
    let dev = common::start(2, 10).await;
    let run = |extra: &[&str]| {
        let mut args = common::conn_args(&dev);
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push("postgres".into());
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = common::run_pg_tool(&dev, "pgbench", &a);
        assert!(ok, "pgbench {extra:?}:\n{out}\n{err}");
        out
    };
    run(&["-i", "-s", "2", "-q"]);
    for mode in ["simple", "extended", "prepared"] {
        let out = run(&["-M", mode, "-c", "8", "-j", "2", "-t", "150", "-n"]);
        assert!(
            out.contains("number of transactions actually processed: 1200/1200"),
            "{mode}:\n{out}"
        );
        assert!(
            out.contains("number of failed transactions: 0 "),
            "{mode}:\n{out}"
        );
    }
    let c = common::connect(&dev).await;
    let mut sums = Vec::new();
    for q in [
        "SELECT sum(abalance) FROM pgbench_accounts",
        "SELECT sum(tbalance) FROM pgbench_tellers",
        "SELECT sum(bbalance) FROM pgbench_branches",
        "SELECT sum(delta) FROM pgbench_history",
    ] {
        sums.push(
            c.query_one(q, &[])
                .await
                .unwrap()
                .get::<_, Option<i64>>(0)
                .unwrap_or(0),
        );
    }
    assert!(
        sums.iter().all(|s| *s == sums[0]),
        "TPC-B invariant: {sums:?}"
    );
    let n: i64 = c
        .query_one("SELECT count(*) FROM pgbench_history", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3600);
    assert_eq!(common::prepared_xacts(&dev).await, 0);
    dev.stop().await;
}
