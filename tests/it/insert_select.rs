//! INSERT ... SELECT into sharded tables: rows routed by the router land
//! on the shard their key names (checked on the shards), generated keys in
//! the SELECT's order, the co-located form run by the shards themselves,
//! one transaction (a failing shard leaves nothing anywhere), the extended
//! protocol (parameters, a rolled-back block), and clear errors: a key of
//! another type, a NULL key, an intermediate result past
//! `limits.intermediate_result_bytes`.

use pg_router::vindex::KeyValue;

use crate::common;

/// Every row of `table` (bigint `id`) on each shard, checked to be on the
/// shard its key names; returns the ids.
async fn placed_ids(dev: &pg_router::dev::DevCluster, table: &str) -> Vec<i64> {
    let cat = common::connect_direct(&dev.cluster.catalog).await;
    let catalog = pg_router::catalog::load(&cat).await.unwrap();
    let t = catalog.table(table).expect("declared");
    let routing = &catalog.keyspace_of(t).expect("keyspace").routing;
    let mut all = Vec::new();
    for s in &dev.cluster.shards {
        let d = common::connect_direct(s).await;
        for r in d
            .query(&format!("SELECT id FROM {table}"), &[])
            .await
            .unwrap()
        {
            let id: i64 = r.get(0);
            let owner = routing.shard_for(t.vindex.keyspace_id(&KeyValue::Int(id)));
            assert_eq!(owner, s.name, "{table} id {id} on the wrong shard");
            all.push(id);
        }
    }
    all.sort_unstable();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_select_routes_rows_in_one_transaction() {
    let dev = common::start_config(3, 4, |cfg| cfg.limits.intermediate_result_bytes = 16_384).await;
    let c = common::connect(&dev).await;
    c.batch_execute(
        "CREATE TABLE src (id bigint PRIMARY KEY, g int, h text);
         CREATE TABLE dst (id bigint PRIMARY KEY, g int, h text);
         CREATE TABLE gen (id bigserial PRIMARY KEY, src bigint, h text)",
    )
    .await
    .unwrap();
    for t in ["src", "dst", "gen"] {
        common::add_table(&dev, t, "id", "bigint").await;
    }
    // From a function (no table): rows routed by key.
    c.batch_execute("INSERT INTO src SELECT i, i % 6, 'h' || i FROM generate_series(1, 120) i")
        .await
        .expect("INSERT ... SELECT generate_series");
    assert_eq!(placed_ids(&dev, "src").await, (1..=120).collect::<Vec<_>>());

    // New keys computed by the SELECT (through the router), merged SELECT.
    // The extended protocol: values written in, run at Execute; a
    // rolled-back block leaves nothing.
    c.batch_execute("BEGIN").await.unwrap();
    let n = c
        .execute(
            "INSERT INTO dst SELECT id * 11, g, h FROM src WHERE g = $1 ORDER BY id LIMIT $2",
            &[&5i32, &7i64],
        )
        .await
        .expect("extended INSERT ... SELECT");
    assert_eq!(n, 7);
    c.batch_execute("ROLLBACK").await.unwrap();
    let left = c
        .query_one("SELECT count(*) FROM dst", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(left, 0);
    // RETURNING in the client's (binary) formats.
    let rows = c
        .query(
            "INSERT INTO dst SELECT id * 13, g, h FROM src WHERE g = $1 RETURNING id, h",
            &[&4i32],
        )
        .await
        .expect("extended INSERT ... SELECT ... RETURNING");
    let mut got: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    got.sort();
    let want: Vec<(i64, String)> = (1..=120i64)
        .filter(|i| i % 6 == 4)
        .map(|i| (i * 13, format!("h{i}")))
        .collect();
    assert_eq!(got, want);
    c.batch_execute("DELETE FROM dst").await.unwrap();
    let r = c
        .simple_query(
            "INSERT INTO dst SELECT id * 7, g, upper(h) FROM src WHERE g < 3 ORDER BY id LIMIT 50",
        )
        .await
        .expect("INSERT ... SELECT through the router");
    assert!(matches!(
        r.last(),
        Some(tokio_postgres::SimpleQueryMessage::CommandComplete(50))
    ));
    let want: Vec<i64> = (1..=120)
        .filter(|i| i % 6 < 3)
        .take(50)
        .map(|i| i * 7)
        .collect();
    let mut want = want;
    want.sort_unstable();
    assert_eq!(placed_ids(&dev, "dst").await, want);

    // Generated keys, in the SELECT's order, returned.
    let r = c
        .simple_query("INSERT INTO gen (src, h) SELECT id, h FROM src ORDER BY id DESC LIMIT 10 RETURNING id, src")
        .await
        .expect("generated keys");
    let mut got: Vec<(i64, i64)> = r
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some((
                r.get(0).unwrap().parse().unwrap(),
                r.get(1).unwrap().parse().unwrap(),
            )),
            _ => None,
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, (1..=10).map(|i| (i, 121 - i)).collect::<Vec<_>>());
    assert_eq!(placed_ids(&dev, "gen").await, (1..=10).collect::<Vec<_>>());

    // Co-located: the target's key is the source's key; the shards run it.
    let plan: Vec<String> = c
        .simple_query("EXPLAIN (ROUTER) INSERT INTO dst SELECT id, g, h FROM src WHERE g = 5")
        .await
        .unwrap()
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert!(!plan.join("\n").contains("kept by the router"), "{plan:?}");
    c.batch_execute("INSERT INTO dst SELECT id, g, h FROM src WHERE g = 5")
        .await
        .expect("co-located");
    assert_eq!(placed_ids(&dev, "dst").await.len(), 50 + 20);

    // One transaction: a duplicate on one shard leaves nothing anywhere
    // (id 7 is in dst already; the other rows go to every shard).
    let before = placed_ids(&dev, "dst").await;
    let e = c
        .simple_query("INSERT INTO dst SELECT CASE WHEN id = 100 THEN 7 ELSE id * 7 + 40000 END, g, h FROM src ORDER BY id")
        .await
        .expect_err("duplicate key 7 on one shard");
    assert_eq!(common::sqlstate(&e), "23505", "{e:?}");
    assert_eq!(
        placed_ids(&dev, "dst").await,
        before,
        "nothing of the failed statement stays"
    );
    let e = c
        .simple_query("INSERT INTO dst SELECT id + 9000, g, h FROM src UNION ALL SELECT 1, 0, 'x'")
        .await
        .expect_err("set operation");
    assert_eq!(common::sqlstate(&e), "0A000", "{e:?}");

    // Clear errors.
    let e = c
        .simple_query("INSERT INTO dst (id, g) SELECT id::numeric, g FROM src WHERE id < 4")
        .await
        .expect_err("key of another type");
    assert_eq!(common::sqlstate(&e), "0A000", "{e:?}");
    let e = c
        .simple_query("INSERT INTO dst (id, g) SELECT NULL::bigint, 1")
        .await
        .expect_err("NULL key");
    assert_eq!(common::sqlstate(&e), "23502", "{e:?}");
    let e = c
        .simple_query("INSERT INTO dst SELECT id + 500000, g, repeat('x', 400) FROM src")
        .await
        .expect_err("past the intermediate bound");
    assert_eq!(common::sqlstate(&e), "54000", "{e:?}");
    assert!(placed_ids(&dev, "dst").await.iter().all(|&i| i < 500_000));
    c.simple_query("SELECT 1").await.expect("usable");
    dev.stop().await;
}
