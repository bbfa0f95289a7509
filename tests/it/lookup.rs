//! Lookup vindexes end to end: declared with `pg-router meta
//! add-lookup-vindex`, lookup tables created through the router, kept in
//! step with INSERT / UPDATE / DELETE of the owner table (autocommit and
//! blocks, rollback, unique violations, a race on one unique value), and
//! statements with `column = value` routed to the owning shard only.
//! After every step the lookup tables are checked row by row against the
//! owner rows on the shards.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pg_router::dev::DevCluster;
use pg_router::txn::TransactionMode;
use pg_router::vindex::KeyValue;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::common;

async fn run(c: &Client, sql: &str) {
    c.batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

/// First column of every row of a simple query, as text.
async fn col(c: &Client, sql: &str) -> Vec<Option<String>> {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
            _ => None,
        })
        .collect()
}

/// Checks both lookup tables against the `users` rows on the shards:
/// exactly one `(value, keyspace id of the row)` entry per non-NULL value,
/// each on the shard owning the value, and nothing else.
async fn assert_consistent(dev: &DevCluster, what: &str) {
    let routing = dev.router.state.routing();
    let cat = &routing.catalog;
    let users = cat.table("users").expect("users declared");
    let ks = cat.keyspace_of(users).expect("keyspace");
    for (column, lookup) in [
        ("email", "users_email_lookup"),
        ("name", "users_name_lookup"),
    ] {
        let lt = cat.table(lookup).expect("lookup table declared");
        let mut want = BTreeSet::new();
        let mut got = BTreeSet::new();
        for shard in &dev.cluster.shards {
            let d = common::connect_direct(shard).await;
            for r in d
                .query(&format!("SELECT id, {column} FROM users"), &[])
                .await
                .unwrap()
            {
                let id: i32 = r.get(0);
                let v: Option<String> = r.get(1);
                if let Some(v) = v {
                    let ksid = users.vindex.keyspace_id(&KeyValue::Int(i64::from(id)));
                    let home = ks
                        .routing
                        .shard_for(lt.vindex.keyspace_id(&KeyValue::Text(&v)));
                    want.insert((v, ksid as i64, home.to_string()));
                }
            }
            for r in d
                .query(&format!("SELECT {column}, keyspace_id FROM {lookup}"), &[])
                .await
                .unwrap()
            {
                got.insert((
                    r.get::<_, String>(0),
                    r.get::<_, i64>(1),
                    shard.name.clone(),
                ));
            }
        }
        assert_eq!(got, want, "{what}: {lookup} vs users.{column}");
    }
}

async fn wait_lookups(dev: &DevCluster, n: usize) {
    let t0 = Instant::now();
    while dev.router.state.routing().catalog.lookups_of("users").len() != n {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "router did not pick up {n} lookup vindexes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The shard (index) holding user `id`, read from the shards directly.
async fn shard_of_user(dev: &DevCluster, id: i32) -> Option<usize> {
    for (i, shard) in dev.cluster.shards.iter().enumerate() {
        let d = common::connect_direct(shard).await;
        let n: i64 = d
            .query_one("SELECT count(*) FROM users WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            return Some(i);
        }
    }
    None
}

/// Writes to the owner table in the extended protocol (tokio-postgres:
/// parameter types inferred by the server, binary parameters): INSERT,
/// UPDATE by key and through the lookup, DELETE through the non-unique
/// lookup, a duplicate (23505, nothing kept), a rolled-back and a
/// committed block, and pipelined statements.
async fn extended_writes(dev: &DevCluster, c: &Client) {
    let ins = c
        .prepare("INSERT INTO users (id, email, name) VALUES ($1, $2, $3)")
        .await
        .unwrap();
    for id in 400..408i32 {
        let email = format!("e{id}@x.org");
        let n = c.execute(&ins, &[&id, &email, &"x1"]).await.unwrap();
        assert_eq!(n, 1);
    }
    assert_consistent(dev, "after extended INSERTs").await;
    let e = c
        .execute(&ins, &[&408i32, &"e400@x.org", &"x1"])
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "23505", "{e:?}");
    assert_eq!(shard_of_user(dev, 408).await, None);
    // UPDATE: the new value is a parameter, the WHERE another one (the
    // pre-select binds only the parameters it references).
    let n = c
        .execute(
            "UPDATE users SET email = $1 WHERE id = $2",
            &[&"f401@x.org", &401i32],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let n = c
        .execute(
            "UPDATE users SET email = $1, name = 'x2' WHERE email = $2",
            &[&"f402@x.org", &"e402@x.org"],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let e = c
        .execute(
            "UPDATE users SET email = $1 WHERE id = $2",
            &[&"e403@x.org", &404i32],
        )
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "23505", "{e:?}");
    assert_consistent(dev, "after extended UPDATEs").await;
    let ids: Vec<i32> = c
        .query("SELECT id FROM users WHERE email = $1", &[&"f402@x.org"])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![402]);
    // DELETE through the non-unique lookup: rows on several shards.
    let n = c
        .execute("DELETE FROM users WHERE name = $1", &[&"x1"])
        .await
        .unwrap();
    assert_eq!(n, 7, "400, 401, 403..407");
    assert_consistent(dev, "after an extended DELETE").await;
    // Blocks: rolled back, then committed; pipelined statements.
    let mut c2 = common::connect(dev).await;
    let tx = c2.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO users (id, email) VALUES ($1, $2)",
        &[&410i32, &"t@x.org"],
    )
    .await
    .unwrap();
    let got: i32 = tx
        .query_one("SELECT id FROM users WHERE email = $1", &[&"t@x.org"])
        .await
        .unwrap()
        .get(0);
    assert_eq!(got, 410, "the block reads its own lookup row");
    tx.rollback().await.unwrap();
    assert_consistent(dev, "after an extended ROLLBACK").await;
    let tx = c2.transaction().await.unwrap();
    let ins = tx
        .prepare("INSERT INTO users (id, email, name) VALUES ($1, $2, 'p')")
        .await
        .unwrap();
    let ids: Vec<i32> = (420..430).collect();
    let emails: Vec<String> = ids.iter().map(|i| format!("p{i}@x.org")).collect();
    let args: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 2]> = ids
        .iter()
        .zip(&emails)
        .map(|(id, e)| [id as _, e as _])
        .collect();
    let writes = args.iter().map(|a| tx.execute(&ins, a));
    for r in futures_util::future::join_all(writes).await {
        assert_eq!(r.unwrap(), 1);
    }
    let n = tx
        .execute(
            "UPDATE users SET email = NULL WHERE email = $1",
            &[&"p425@x.org"],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    tx.commit().await.unwrap();
    assert_consistent(dev, "after a pipelined extended block").await;
    assert_eq!(common::prepared_xacts(dev).await, 0);
}

/// The shard name owning `users.id = id`, from the router's catalog.
fn home_shard(dev: &DevCluster, id: i64) -> String {
    let routing = dev.router.state.routing();
    let t = routing.catalog.table("users").expect("users declared");
    let ks = routing.catalog.keyspace_of(t).expect("keyspace");
    ks.routing
        .shard_for(t.vindex.keyspace_id(&KeyValue::Int(id)))
        .to_string()
}

/// The 40001 row-count guard: in a READ COMMITTED block, a row that starts
/// matching a DELETE's WHERE between the router's pre-select and the
/// DELETE makes the DELETE change more rows than the pre-select locked
/// (and whose lookup rows it removed). Deterministic interleaving: client
/// `b` holds a row lock the pre-select waits for, inserts the new row and
/// commits; the pre-select's snapshot predates that commit, the DELETE's
/// does not.
async fn row_count_guard(dev: &DevCluster, a: &Arc<Client>, b: &Arc<Client>) {
    let r1 = 800i64;
    let home = home_shard(dev, r1);
    let r3 = (801..900)
        .find(|&i| home_shard(dev, i) == home)
        .expect("a second id on the same shard");
    run(
        a,
        &format!("INSERT INTO users (id, name) VALUES ({r1}, 'q')"),
    )
    .await;
    run(b, "BEGIN").await;
    run(
        b,
        &format!("SELECT id FROM users WHERE id = {r1} FOR UPDATE"),
    )
    .await;
    let deleter = {
        let a = a.clone();
        tokio::spawn(async move {
            a.batch_execute("BEGIN").await.unwrap();
            let r = a
                .batch_execute("DELETE FROM users WHERE name = 'q'")
                .await
                .map_err(|e| common::sqlstate(&e));
            a.batch_execute("ROLLBACK").await.unwrap();
            r
        })
    };
    let inst = dev
        .cluster
        .shards
        .iter()
        .find(|s| s.name == home)
        .expect("home shard");
    let d = common::connect_direct(inst).await;
    let t0 = Instant::now();
    loop {
        let waiting: i64 = d
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the pre-select never waited for the row lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    run(
        b,
        &format!("INSERT INTO users (id, name) VALUES ({r3}, 'q')"),
    )
    .await;
    run(b, "COMMIT").await;
    let r = deleter.await.unwrap();
    assert_eq!(r.err().as_deref(), Some("40001"));
    assert!(shard_of_user(dev, r1 as i32).await.is_some());
    assert!(shard_of_user(dev, r3 as i32).await.is_some());
    assert_consistent(dev, "after the row-count guard").await;
    run(a, "DELETE FROM users WHERE name = 'q'").await;
    assert_consistent(dev, "after deleting both rows").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_lookup_vindexes() {
    let dev = common::start_with(2, 4, common::quiet_recovery(TransactionMode::Twopc)).await;
    let c = common::connect(&dev).await;
    run(
        &c,
        "CREATE TABLE users (id int PRIMARY KEY, email text, name text)",
    )
    .await;
    common::add_table(&dev, "users", "id", "int").await;
    let out = common::meta(
        &dev,
        &[
            "add-lookup-vindex",
            "--table",
            "users",
            "--column",
            "email",
            "--unique",
        ],
    );
    let ddl = "CREATE TABLE users_email_lookup (email text NOT NULL, keyspace_id bigint NOT NULL, PRIMARY KEY (email))";
    assert!(
        out.contains(ddl),
        "CLI prints the lookup table's DDL: {out}"
    );
    run(&c, ddl).await;
    let out = common::meta(
        &dev,
        &["add-lookup-vindex", "--table", "users", "--column", "name"],
    );
    let ddl = "CREATE TABLE users_name_lookup (name text NOT NULL, keyspace_id bigint NOT NULL, PRIMARY KEY (name, keyspace_id))";
    assert!(out.contains(ddl), "non-unique DDL: {out}");
    run(&c, ddl).await;
    wait_lookups(&dev, 2).await;

    // INSERT: single rows (autocommit), one multi-row INSERT across shards,
    // a NULL email and a row without the column.
    for i in 1..=12 {
        run(
            &c,
            &format!(
                "INSERT INTO users (id, email, name) VALUES ({i}, 'u{i}@x.org', 'n{}')",
                i % 3
            ),
        )
        .await;
    }
    run(
        &c,
        "INSERT INTO users (id, email, name) VALUES (13, 'u13@x.org', 'n1'), (14, 'O''Brien@x.org', 'n2'), (15, NULL, 'n0')",
    )
    .await;
    run(&c, "INSERT INTO users (id, name) VALUES (16, 'n1')").await;
    assert_consistent(&dev, "after INSERTs").await;
    assert_eq!(common::prepared_xacts(&dev).await, 0);

    // Routing by the lookup vindex: one shard. A stray row with the same
    // email planted directly on every shard other than the owner's would
    // be returned by a scatter; the lookup route does not see it.
    let owner = shard_of_user(&dev, 7).await.expect("user 7");
    for (i, shard) in dev.cluster.shards.iter().enumerate() {
        if i != owner {
            let d = common::connect_direct(shard).await;
            d.batch_execute("INSERT INTO users (id, email) VALUES (-7, 'u7@x.org')")
                .await
                .unwrap();
        }
    }
    assert_eq!(
        col(&c, "SELECT id FROM users WHERE email = 'u7@x.org'").await,
        vec![Some("7".to_string())]
    );
    let plan = col(
        &c,
        "EXPLAIN (ROUTER) SELECT id FROM users WHERE email = 'u7@x.org'",
    )
    .await;
    assert!(
        plan.iter()
            .flatten()
            .any(|l| l.contains("Lookup vindex: users.email")),
        "{plan:?}"
    );
    // Extended protocol: routed by the lookup with the Bind's (binary)
    // parameter, a merged aggregate and plain rows; one prepared statement
    // bound with several values.
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM users WHERE email = $1",
            &[&"u7@x.org"],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n, 1,
        "extended protocol: routed by the lookup, stray row unseen"
    );
    let by_email = c
        .prepare("SELECT id FROM users WHERE email = $1")
        .await
        .unwrap();
    for (email, want) in [
        ("u7@x.org", vec![7]),
        ("u8@x.org", vec![8]),
        ("none@x.org", vec![]),
    ] {
        let got: Vec<i32> = c
            .query(&by_email, &[&email])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(got, want, "{email}");
    }
    let none: Option<&str> = None;
    assert!(c.query(&by_email, &[&none]).await.unwrap().is_empty());
    for (i, shard) in dev.cluster.shards.iter().enumerate() {
        if i != owner {
            let d = common::connect_direct(shard).await;
            d.batch_execute("DELETE FROM users WHERE id = -7")
                .await
                .unwrap();
        }
    }
    // Non-unique lookup: several shards; unknown value and NULL: no rows.
    let mut ids = col(&c, "SELECT id FROM users WHERE name = 'n1' ORDER BY id").await;
    ids.sort();
    assert_eq!(ids.len(), 6, "{ids:?}");
    assert!(col(&c, "SELECT id FROM users WHERE email = 'nobody@x.org'")
        .await
        .is_empty());
    assert!(col(&c, "SELECT id FROM users WHERE email = NULL")
        .await
        .is_empty());

    // Unique lookup: a duplicate email fails the whole INSERT (23505) and
    // leaves nothing behind, on whichever shard the new row would go.
    for id in [100, 101, 102, 103] {
        let e = c
            .batch_execute(&format!(
                "INSERT INTO users (id, email) VALUES ({id}, 'u1@x.org')"
            ))
            .await
            .unwrap_err();
        assert_eq!(common::sqlstate(&e), "23505", "{e:?}");
        assert_eq!(shard_of_user(&dev, id).await, None);
    }
    assert_consistent(&dev, "after duplicate INSERTs").await;

    // UPDATE of a lookup column: by key, through the lookup, to NULL, and
    // one that does not touch lookup columns; a duplicate value fails.
    run(&c, "UPDATE users SET email = 'new3@x.org' WHERE id = 3").await;
    run(
        &c,
        "UPDATE users SET email = 'new4@x.org', name = 'n9' WHERE email = 'u4@x.org'",
    )
    .await;
    run(&c, "UPDATE users SET email = NULL WHERE id = 5").await;
    run(&c, "UPDATE users SET email = 'u15@x.org' WHERE id = 15").await;
    assert_eq!(
        c.simple_query("UPDATE users SET email = 'u15@x.org' WHERE id = 6")
            .await
            .map_err(|e| common::sqlstate(&e))
            .err()
            .as_deref(),
        Some("23505")
    );
    assert_eq!(
        col(&c, "SELECT id FROM users WHERE email = 'new4@x.org'").await,
        vec![Some("4".to_string())]
    );
    assert!(col(&c, "SELECT id FROM users WHERE email = 'u4@x.org'")
        .await
        .is_empty());
    assert_consistent(&dev, "after UPDATEs").await;

    // DELETE by key, through the non-unique lookup (several shards), and
    // a scatter DELETE without any key.
    run(&c, "DELETE FROM users WHERE id = 2").await;
    let tags = c
        .simple_query("DELETE FROM users WHERE name = 'n1'")
        .await
        .unwrap();
    let deleted = tags.iter().find_map(|m| match m {
        SimpleQueryMessage::CommandComplete(n) => Some(*n),
        _ => None,
    });
    assert_eq!(deleted, Some(5), "ids 1, 7, 10, 13, 16");
    assert_consistent(&dev, "after DELETEs").await;
    run(&c, "DELETE FROM users WHERE id > 11").await;
    assert_consistent(&dev, "after a scatter DELETE").await;

    // Blocks: the block's own lookup rows route its reads; ROLLBACK (and
    // ROLLBACK TO SAVEPOINT) removes them with the rows.
    run(&c, "BEGIN").await;
    run(&c, "INSERT INTO users (id, email) VALUES (200, 'b@x.org')").await;
    assert_eq!(
        col(&c, "SELECT id FROM users WHERE email = 'b@x.org'").await,
        vec![Some("200".to_string())]
    );
    run(&c, "SAVEPOINT s; INSERT INTO users (id, email) VALUES (201, 'c@x.org'); ROLLBACK TO SAVEPOINT s").await;
    run(&c, "ROLLBACK").await;
    assert!(col(&c, "SELECT id FROM users WHERE email = 'b@x.org'")
        .await
        .is_empty());
    assert_consistent(&dev, "after ROLLBACK").await;
    run(
        &c,
        "BEGIN; INSERT INTO users (id, email, name) VALUES (300, 'd@x.org', 'n5'); UPDATE users SET name = 'n6' WHERE id = 300; COMMIT",
    )
    .await;
    assert_consistent(&dev, "after a committed block").await;

    extended_writes(&dev, &c).await;

    // Statements whose lookup values the router cannot read are refused.
    for sql in [
        "INSERT INTO users (id, email) VALUES (401, lower('X@x.org'))",
        "UPDATE users SET email = email || 'x' WHERE id = 1",
        "INSERT INTO users (id, email) VALUES (402, 'f@x.org') ON CONFLICT DO NOTHING",
    ] {
        let e = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(common::sqlstate(&e), "0A000", "{sql}: {e:?}");
    }
    assert_consistent(&dev, "after refused statements").await;

    // Two clients race for one unique email from rows on different
    // shards: exactly one wins, the other gets 23505.
    let c2 = common::connect(&dev).await;
    let (a, b) = (Arc::new(c), Arc::new(c2));
    let mut ids = Vec::new();
    for id in 500..600 {
        let s = dev
            .router
            .state
            .routing()
            .catalog
            .table("users")
            .map(|t| {
                let ks = dev
                    .router
                    .state
                    .routing()
                    .catalog
                    .keyspace_of(t)
                    .unwrap()
                    .routing
                    .shard_for(t.vindex.keyspace_id(&KeyValue::Int(id)))
                    .to_string();
                ks
            })
            .unwrap();
        if ids.iter().all(|(_, s2): &(i64, String)| *s2 != s) {
            ids.push((id, s));
        }
        if ids.len() == 2 {
            break;
        }
    }
    let (x, y) = (ids[0].0, ids[1].0);
    let ha = {
        let a = a.clone();
        tokio::spawn(async move {
            a.batch_execute(&format!(
                "INSERT INTO users (id, email) VALUES ({x}, 'race@x.org')"
            ))
            .await
            .map_err(|e| common::sqlstate(&e))
        })
    };
    let hb = {
        let b = b.clone();
        tokio::spawn(async move {
            b.batch_execute(&format!(
                "INSERT INTO users (id, email) VALUES ({y}, 'race@x.org')"
            ))
            .await
            .map_err(|e| common::sqlstate(&e))
        })
    };
    let (ra, rb) = (ha.await.unwrap(), hb.await.unwrap());
    let oks = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
    assert_eq!(oks, 1, "{ra:?} {rb:?}");
    assert!(
        [&ra, &rb]
            .iter()
            .any(|r| r.as_ref().err().map(String::as_str) == Some("23505")),
        "{ra:?} {rb:?}"
    );
    assert_consistent(&dev, "after the race").await;
    assert_eq!(common::prepared_xacts(&dev).await, 0);

    row_count_guard(&dev, &a, &b).await;

    // drop-lookup-vindex: the router stops maintaining and routing by it.
    common::meta(&dev, &["drop-lookup-vindex", "--name", "users_name"]);
    wait_lookups(&dev, 1).await;
    run(
        &a,
        "INSERT INTO users (id, email, name) VALUES (700, 'g@x.org', 'n7')",
    )
    .await;
    assert_eq!(
        col(&a, "SELECT id FROM users WHERE name = 'n7'").await,
        vec![Some("700".to_string())]
    );
    dev.stop().await;
}
