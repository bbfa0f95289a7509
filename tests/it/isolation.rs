//! Isolation through the router (see docs/isolation.md): a transaction
//! that stays on one shard gets exactly PostgreSQL's guarantees at its
//! level; a multi-shard transaction writes atomically (2PC) but has no
//! global snapshot (each shard's snapshot is taken when the block first
//! touches it), no global SSI (write skew across shards commits) and no
//! distributed deadlock detection (lock_timeout bounds the wait). The
//! anomalies are asserted as the expected behaviour.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pg_router::dev::DevCluster;
use pg_router::txn::TransactionMode;
use tokio_postgres::Client;

use crate::common;

/// How long any single step may take before the test fails instead of
/// hanging (a blocked session, a lost reply).
const STEP: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Creates `acct(id int primary key, bal int)` sharded by id with rows
/// 1..=20 (bal 10, one single-shard INSERT each); returns (ids on shard0,
/// ids on shard1).
async fn setup(dev: &DevCluster, c: &Client) -> (Vec<i32>, Vec<i32>) {
    common::acct_on_two_shards(dev, c, "not null").await
}

/// `acct.bal` of `id` as `c` sees it (through the router).
async fn bal(c: &Client, id: i32) -> i32 {
    within(
        "read a balance",
        c.query_one(&format!("SELECT bal FROM acct WHERE id = {id}"), &[]),
    )
    .await
    .unwrap()
    .get(0)
}

/// `sum(bal)` over `ids` as `c` sees it (a multi-shard gather when the ids
/// are on several shards).
async fn sum(c: &Client, ids: &[i32]) -> i64 {
    let list = ids
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    within(
        "read a sum",
        c.query_one(
            &format!("SELECT sum(bal) FROM acct WHERE id IN ({list})"),
            &[],
        ),
    )
    .await
    .unwrap()
    .get(0)
}

async fn run(c: &Client, sql: &str) {
    within(sql, c.batch_execute(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

/// Levels reach every shard; per-shard snapshots: repeatable reads on one
/// shard, read skew across shards (in REPEATABLE READ / SERIALIZABLE
/// blocks and in a scatter SELECT outside a block), none on one shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_per_shard() {
    let dev = common::start_with(2, 4, common::quiet_recovery(TransactionMode::Twopc)).await;
    let a = common::connect(&dev).await;
    let b = common::connect(&dev).await;
    let (s0, s1) = setup(&dev, &a).await;
    let (x, x2, y) = (s0[0], s0[1], s1[0]);

    // The block's isolation level and access mode (the client's BEGIN
    // text, replayed by the lazy BEGIN) hold on every shard it touches.
    let setting = |id: i32| {
        format!(
            "SELECT current_setting('transaction_isolation') || '/' || \
             current_setting('transaction_read_only') FROM acct WHERE id = {id}"
        )
    };
    for (begin, want) in [
        ("BEGIN", "read committed/off"),
        (
            "BEGIN ISOLATION LEVEL REPEATABLE READ",
            "repeatable read/off",
        ),
        (
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY",
            "serializable/on",
        ),
    ] {
        run(&a, begin).await;
        for id in [x, y] {
            let got: String = within("setting", a.query_one(&setting(id), &[]))
                .await
                .unwrap()
                .get(0);
            assert_eq!(got, want, "{begin}: shard of id {id}");
        }
        if want.ends_with("/on") {
            let e = within(
                "write in READ ONLY",
                a.batch_execute(&format!("UPDATE acct SET bal = 0 WHERE id = {y}")),
            )
            .await
            .unwrap_err();
            assert_eq!(common::sqlstate(&e), "25006", "{e:?}");
        }
        run(&a, "ROLLBACK").await;
    }
    // A session default is replayed on every backend before the lazy BEGIN.
    run(&a, "SET default_transaction_isolation = 'repeatable read'").await;
    run(&a, "BEGIN").await;
    for id in [x, y] {
        let got: String = within("setting", a.query_one(&setting(id), &[]))
            .await
            .unwrap()
            .get(0);
        assert_eq!(got, "repeatable read/off", "default level, id {id}");
    }
    run(&a, "ROLLBACK").await;
    run(&a, "RESET default_transaction_isolation").await;

    // SET TRANSACTION / SET LOCAL inside a block reach every participant:
    // those already in the block at once, later ones replayed after their
    // BEGIN (with the savepoints, in order), in both query protocols.
    run(
        &a,
        "BEGIN; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY",
    )
    .await;
    for id in [x, y] {
        let got: String = within("setting", a.query_one(&setting(id), &[]))
            .await
            .unwrap()
            .get(0);
        assert_eq!(got, "serializable/on", "SET TRANSACTION, id {id}");
    }
    // COMMIT AND CHAIN keeps the characteristics set in the block.
    run(&a, "COMMIT AND CHAIN").await;
    for id in [y, x] {
        let got: String = within("setting", a.query_one(&setting(id), &[]))
            .await
            .unwrap()
            .get(0);
        assert_eq!(got, "serializable/on", "after AND CHAIN, id {id}");
    }
    run(&a, "ROLLBACK").await;
    let lock_timeout =
        |id: i32| format!("SELECT current_setting('lock_timeout') FROM acct WHERE id = {id}");
    let get = |sql: String| {
        let a = &a;
        async move {
            let v: String = within(&sql, a.query_one(&sql, &[])).await.unwrap().get(0);
            v
        }
    };
    run(&a, "BEGIN").await;
    assert_eq!(get(lock_timeout(x)).await, "0");
    run(&a, "SET LOCAL lock_timeout = '1234ms'; SAVEPOINT s").await;
    // Extended protocol (tokio-postgres `execute`), inside the savepoint.
    within(
        "extended SET LOCAL",
        a.execute("SET LOCAL lock_timeout = '77ms'", &[]),
    )
    .await
    .unwrap();
    assert_eq!(get(lock_timeout(x)).await, "77ms");
    run(&a, "ROLLBACK TO SAVEPOINT s").await;
    // y's shard joins now: BEGIN; SET LOCAL 1234ms; SAVEPOINT s.
    assert_eq!(get(lock_timeout(y)).await, "1234ms", "late participant");
    assert_eq!(get(lock_timeout(x)).await, "1234ms", "rolled back to s");
    run(&a, "SET LOCAL lock_timeout = '99ms'").await;
    assert_eq!(get(lock_timeout(x)).await, "99ms");
    assert_eq!(
        get(lock_timeout(y)).await,
        "99ms",
        "sent to every participant"
    );
    run(&a, "ROLLBACK TO SAVEPOINT s").await;
    assert_eq!(get(lock_timeout(y)).await, "1234ms");
    run(&a, "COMMIT").await;
    for id in [x, y] {
        assert_eq!(
            get(lock_timeout(id)).await,
            "0",
            "SET LOCAL ends with the block"
        );
    }
    // A session-level SET in a block holds after COMMIT on every shard and
    // is undone by ROLLBACK, as in PostgreSQL.
    run(&a, "BEGIN; SET lock_timeout = '4321ms'; ROLLBACK").await;
    for id in [x, y] {
        assert_eq!(get(lock_timeout(id)).await, "0", "rolled back SET, id {id}");
    }
    run(&a, "BEGIN").await;
    assert_eq!(get(lock_timeout(y)).await, "0");
    run(&a, "SET lock_timeout = '4321ms'; COMMIT").await;
    for id in [x, y] {
        assert_eq!(
            get(lock_timeout(id)).await,
            "4321ms",
            "committed SET, id {id}"
        );
    }
    run(&a, "RESET lock_timeout").await;
    for id in [x, y] {
        assert_eq!(get(lock_timeout(id)).await, "0", "RESET, id {id}");
    }

    // One shard: READ COMMITTED sees a concurrent commit at the next
    // statement and updates the latest row version; REPEATABLE READ and
    // SERIALIZABLE keep the snapshot of the block's first statement there
    // and refuse to update a row changed since (40001, forwarded).
    for (begin, repeatable) in [
        ("BEGIN ISOLATION LEVEL READ COMMITTED", false),
        ("BEGIN ISOLATION LEVEL REPEATABLE READ", true),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE", true),
    ] {
        let before = bal(&b, x).await;
        run(&a, begin).await;
        assert_eq!(bal(&a, x).await, before, "{begin}");
        run(&b, &format!("UPDATE acct SET bal = bal + 1 WHERE id = {x}")).await;
        let again = bal(&a, x).await;
        let bump = format!("UPDATE acct SET bal = bal + 1 WHERE id = {x}");
        if repeatable {
            assert_eq!(again, before, "{begin}: re-read within the block");
            let e = within(&bump, a.batch_execute(&bump)).await.unwrap_err();
            assert_eq!(
                common::sqlstate(&e),
                "40001",
                "{begin}: concurrent update: {e:?}"
            );
            run(&a, "ROLLBACK").await;
            assert_eq!(bal(&a, x).await, before + 1, "{begin}: after ROLLBACK");
        } else {
            assert_eq!(again, before + 1, "{begin}: re-read within the block");
            run(&a, &bump).await;
            run(&a, "COMMIT").await;
            assert_eq!(bal(&a, x).await, before + 2, "{begin}: after COMMIT");
        }
    }

    // No global snapshot: a REPEATABLE READ / SERIALIZABLE block that read
    // shard0 before a distributed transfer committed, and shard1 after,
    // sees the transfer's shard1 half only (read skew across shards).
    // On one shard the same interleaving is consistent.
    for level in ["REPEATABLE READ", "SERIALIZABLE"] {
        let (x0, y0) = (bal(&b, x).await, bal(&b, y).await);
        let d0 = common::commit_decisions(&dev).await;
        run(&a, &format!("BEGIN ISOLATION LEVEL {level}")).await;
        assert_eq!(bal(&a, x).await, x0); // shard0's snapshot is taken here
        run(
            &b,
            &format!(
                "BEGIN; UPDATE acct SET bal = bal - 5 WHERE id = {x}; \
                 UPDATE acct SET bal = bal + 5 WHERE id = {y}; COMMIT"
            ),
        )
        .await;
        assert_eq!(
            common::commit_decisions(&dev).await,
            d0 + 1,
            "the transfer used 2PC"
        );
        // shard1's snapshot is taken now, after the transfer committed.
        assert_eq!(bal(&a, y).await, y0 + 5, "{level}: transfer seen on shard1");
        assert_eq!(bal(&a, x).await, x0, "{level}: and not on shard0");
        assert_eq!(
            sum(&a, &[x, y]).await,
            i64::from(x0 + y0 + 5),
            "{level}: read skew: the sum is off by the half-seen transfer"
        );
        run(&a, "COMMIT").await;
        assert_eq!(
            common::commit_decisions(&dev).await,
            d0 + 1,
            "{level}: a read-only multi-shard block commits in one phase"
        );
        assert_eq!(sum(&a, &[x, y]).await, i64::from(x0 + y0));

        // The same interleaving with both rows on shard0.
        let (x0, x20) = (bal(&b, x).await, bal(&b, x2).await);
        run(&a, &format!("BEGIN ISOLATION LEVEL {level}")).await;
        assert_eq!(bal(&a, x).await, x0);
        run(
            &b,
            &format!(
                "BEGIN; UPDATE acct SET bal = bal - 5 WHERE id = {x}; \
                 UPDATE acct SET bal = bal + 5 WHERE id = {x2}; COMMIT"
            ),
        )
        .await;
        assert_eq!(
            common::commit_decisions(&dev).await,
            d0 + 1,
            "a transaction writing on one shard commits there directly"
        );
        assert_eq!(bal(&a, x2).await, x20, "{level}: one snapshot on shard0");
        assert_eq!(sum(&a, &[x, x2]).await, i64::from(x0 + x20));
        run(&a, "COMMIT").await;
        assert_eq!(bal(&a, x2).await, x20 + 5);
    }

    // Outside a block, a scatter SELECT runs one statement per shard, each
    // with its own snapshot: between the COMMIT PREPAREDs of a distributed
    // transaction (the router's phase 2 sends them to the shards
    // independently) it sees one shard's half. The window is held open
    // here by preparing the two halves directly on the shards.
    let all: Vec<i32> = (1..=20).collect();
    let total = sum(&b, &all).await;
    let d0 = common::connect_direct(&dev.cluster.shards[0]).await;
    let d1 = common::connect_direct(&dev.cluster.shards[1]).await;
    run(
        &d0,
        &format!(
            "BEGIN; UPDATE acct SET bal = bal - 5 WHERE id = {x}; PREPARE TRANSACTION 'iso_skew'"
        ),
    )
    .await;
    run(
        &d1,
        &format!(
            "BEGIN; UPDATE acct SET bal = bal + 5 WHERE id = {y}; PREPARE TRANSACTION 'iso_skew'"
        ),
    )
    .await;
    assert_eq!(sum(&a, &all).await, total, "nothing committed yet");
    run(&d0, "COMMIT PREPARED 'iso_skew'").await;
    assert_eq!(
        sum(&a, &all).await,
        total - 5,
        "scatter SELECT between the shards' commits sees half the transfer"
    );
    run(&d1, "COMMIT PREPARED 'iso_skew'").await;
    assert_eq!(sum(&a, &all).await, total);
    assert_eq!(common::prepared_xacts(&dev).await, 0);
    dev.stop().await;
}

/// The on-call doctors: each of `a` and `b` checks that doctors `d1` and
/// `d2` are both on call, then takes a different one off call, under
/// SERIALIZABLE. With `extra`, session `i` also sets row `extra[i]` on call
/// before COMMIT (a second written shard makes its commit 2PC). Returns
/// the SQLSTATE each session got (None: committed), how many of the two
/// doctors are on call afterwards, and the `extra` rows' flags.
async fn doctors(
    a: &Client,
    b: &Client,
    d1: i32,
    d2: i32,
    extra: Option<[i32; 2]>,
) -> ([Option<String>; 2], i64, Vec<bool>) {
    run(
        a,
        &format!("UPDATE oncall SET on_call = true WHERE id IN ({d1}, {d2})"),
    )
    .await;
    let count = format!("SELECT count(*) FROM oncall WHERE on_call AND id IN ({d1}, {d2})");
    let mut steps: Vec<(usize, String)> = vec![
        (0, "BEGIN ISOLATION LEVEL SERIALIZABLE".into()),
        (1, "BEGIN ISOLATION LEVEL SERIALIZABLE".into()),
        (0, count.clone()),
        (1, count.clone()),
        (
            0,
            format!("UPDATE oncall SET on_call = false WHERE id = {d1}"),
        ),
        (
            1,
            format!("UPDATE oncall SET on_call = false WHERE id = {d2}"),
        ),
    ];
    if let Some(e) = extra {
        run(
            a,
            &format!(
                "UPDATE oncall SET on_call = false WHERE id IN ({}, {})",
                e[0], e[1]
            ),
        )
        .await;
        for (who, id) in e.into_iter().enumerate() {
            steps.push((
                who,
                format!("UPDATE oncall SET on_call = true WHERE id = {id}"),
            ));
        }
    }
    steps.push((0, "COMMIT".into()));
    steps.push((1, "COMMIT".into()));
    let sessions = [a, b];
    let mut failed: [Option<String>; 2] = [None, None];
    for (who, sql) in steps {
        if failed[who].is_some() {
            continue;
        }
        let c = sessions[who];
        let r = if sql == count {
            within(&sql, c.query_one(&sql, &[])).await.map(|r| {
                assert_eq!(r.get::<_, i64>(0), 2, "session {who} sees both on call");
            })
        } else {
            within(&sql, c.batch_execute(&sql)).await
        };
        if let Err(e) = r {
            failed[who] = Some(common::sqlstate(&e));
            // Ends a failed block (or warns when COMMIT itself failed).
            run(c, "ROLLBACK").await;
        }
    }
    let on: i64 = within("count on call", a.query_one(&count, &[]))
        .await
        .unwrap()
        .get(0);
    let mut flags = Vec::new();
    for id in extra.into_iter().flatten() {
        let f: bool = within(
            "extra row",
            a.query_one(&format!("SELECT on_call FROM oncall WHERE id = {id}"), &[]),
        )
        .await
        .unwrap()
        .get(0);
        flags.push(f);
    }
    (failed, on, flags)
}

/// Index of the session that got 40001 when exactly one did and the other
/// committed.
fn one_serialization_failure(failed: &[Option<String>; 2]) -> usize {
    match failed {
        [Some(c), None] if c == "40001" => 0,
        [None, Some(c)] if c == "40001" => 1,
        _ => panic!("expected one 40001 and one commit: {failed:?}"),
    }
}

/// SERIALIZABLE: on one shard PostgreSQL's SSI rejects write skew (40001
/// forwarded); across shards each shard sees one rw-dependency only, so
/// both commit and the invariant "someone is on call" breaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_write_skew_across_shards() {
    let dev = common::start_with(2, 4, common::quiet_recovery(TransactionMode::Twopc)).await;
    let a = common::connect(&dev).await;
    let b = common::connect(&dev).await;
    run(
        &a,
        "CREATE TABLE oncall (id int primary key, on_call bool not null)",
    )
    .await;
    common::add_table(&dev, "oncall", "id", "int").await;
    for i in 1..=20 {
        run(
            &a,
            &format!("INSERT INTO oncall (id, on_call) VALUES ({i}, false)"),
        )
        .await;
    }
    let per = common::ids_per_shard(&dev, "oncall").await;

    // Both doctors on shard0: PostgreSQL's SSI sees the whole cycle and
    // one COMMIT gets 40001 (forwarded with the shard named in DETAIL).
    let (failed, on, _) = doctors(&a, &b, per[0][0], per[0][1], None).await;
    one_serialization_failure(&failed);
    assert_eq!(on, 1, "one shard: a doctor stays on call");

    // The same with each session also writing a row on shard1: the
    // failure on shard0 (at PREPARE TRANSACTION) rolls back the loser's
    // shard1 write too; the winner commits on both shards with 2PC.
    let d0 = common::commit_decisions(&dev).await;
    let extra = [per[1][0], per[1][1]];
    let (failed, on, flags) = doctors(&a, &b, per[0][0], per[0][1], Some(extra)).await;
    let loser = one_serialization_failure(&failed);
    assert_eq!(on, 1, "one shard + 2PC: a doctor stays on call");
    let mut want = vec![true, true];
    want[loser] = false;
    assert_eq!(flags, want, "the loser's shard1 write was rolled back");
    assert_eq!(
        common::commit_decisions(&dev).await,
        d0 + 1,
        "only the winner used 2PC"
    );
    assert_eq!(common::prepared_xacts(&dev).await, 0);

    // One doctor per shard: both commit (no global SSI), nobody is on call.
    let d0 = common::commit_decisions(&dev).await;
    let (failed, on, _) = doctors(&a, &b, per[0][0], per[1][0], None).await;
    // The UPDATE setting both on call (two shards) is the only 2PC.
    assert_eq!(
        common::commit_decisions(&dev).await,
        d0 + 1,
        "blocks writing one shard and reading another commit in one phase"
    );
    assert_eq!(failed, [None, None], "two shards: both sessions commit");
    assert_eq!(on, 0, "two shards: write skew, nobody is on call");
    assert_eq!(common::prepared_xacts(&dev).await, 0);
    dev.stop().await;
}

/// Spawns `sql` on `c`; the task yields the row count or the SQLSTATE.
fn spawn_exec(c: &Arc<Client>, sql: String) -> tokio::task::JoinHandle<Result<u64, String>> {
    let c = c.clone();
    tokio::spawn(async move { c.execute(&sql, &[]).await.map_err(|e| common::sqlstate(&e)) })
}

async fn join(what: &str, h: tokio::task::JoinHandle<Result<u64, String>>) -> Result<u64, String> {
    within(what, h).await.expect("task panicked")
}

/// Deadlocks: on one shard PostgreSQL detects them (40P01); across shards
/// each shard only sees a lock wait, so only lock_timeout (SET through the
/// router, replayed on every shard) ends one (55P03).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_deadlock_needs_lock_timeout() {
    let dev = common::start_with(2, 4, common::quiet_recovery(TransactionMode::Twopc)).await;
    let a = Arc::new(common::connect(&dev).await);
    let b = Arc::new(common::connect(&dev).await);
    let (s0, s1) = setup(&dev, &a).await;
    // A deadlock PostgreSQL can see is reported after 100ms.
    for c in [&a, &b] {
        run(c, "SET deadlock_timeout = '100ms'").await;
        run(c, "SET lock_timeout = '10s'").await;
    }
    let upd = |id: i32, v: i32| format!("UPDATE acct SET bal = {v} WHERE id = {id}");

    // Both rows on shard0: PostgreSQL's detector picks a victim.
    let (x, x2) = (s0[0], s0[1]);
    run(&a, &format!("BEGIN; {}", upd(x, 1))).await;
    run(&b, &format!("BEGIN; {}", upd(x2, 2))).await;
    let t0 = Instant::now();
    let ha = spawn_exec(&a, upd(x2, 1));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let hb = spawn_exec(&b, upd(x, 2));
    let ra = join("a's second UPDATE (one shard)", ha).await;
    let rb = join("b's second UPDATE (one shard)", hb).await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "detected well before lock_timeout"
    );
    let (victim, winner, v) = match (&ra, &rb) {
        (Err(e), Ok(1)) if e == "40P01" => (&a, &b, 2),
        (Ok(1), Err(e)) if e == "40P01" => (&b, &a, 1),
        _ => panic!("one shard: expected one 40P01 and one success: {ra:?} {rb:?}"),
    };
    run(victim, "ROLLBACK").await;
    run(winner, "COMMIT").await;
    assert_eq!((bal(&a, x).await, bal(&a, x2).await), (v, v));

    // x on shard0, y on shard1, locked in opposite orders: a waits on
    // shard1 for b, b waits on shard0 for a. No shard sees a cycle, so
    // nothing happens at deadlock_timeout; a's lock_timeout (500ms) ends
    // its wait, b's (10s) keeps b waiting until a rolls back.
    let y = s1[0];
    run(&a, "SET lock_timeout = '500ms'").await;
    run(&a, &format!("BEGIN; {}", upd(x, 5))).await;
    run(&b, &format!("BEGIN; {}", upd(y, 6))).await;
    let t0 = Instant::now();
    let ha = spawn_exec(&a, upd(y, 5));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let hb = spawn_exec(&b, upd(x, 6));
    let ra = join("a's second UPDATE (two shards)", ha).await;
    let waited = t0.elapsed();
    assert_eq!(ra, Err("55P03".to_string()), "a's lock_timeout on shard1");
    assert!(
        waited >= Duration::from_millis(450),
        "a waited its lock_timeout, not deadlock_timeout: {waited:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !hb.is_finished(),
        "b still waits on shard0 for a's open transaction (no deadlock detected)"
    );
    // a's block failed; ROLLBACK releases its lock on shard0.
    run(&a, "ROLLBACK").await;
    assert_eq!(
        join("b's second UPDATE after a's rollback", hb).await,
        Ok(1)
    );
    run(&b, "COMMIT").await;
    assert_eq!((bal(&a, x).await, bal(&a, y).await), (6, 6));
    assert_eq!(common::prepared_xacts(&dev).await, 0);
    dev.stop().await;
}
