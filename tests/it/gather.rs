//! Scatter-gather behaviour beyond result equality (which
//! tests/it/scatter_diff.rs checks): shard pruning, `EXPLAIN (ROUTER)`,
//! descriptions without the hidden columns, and shard errors in the middle
//! of a merge leaving the connection usable.

use tokio_postgres::error::SqlState;
use tokio_postgres::SimpleQueryMessage;

use crate::common;

fn lines(m: &[SimpleQueryMessage]) -> Vec<String> {
    m.iter()
        .filter_map(|x| match x {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_explain_describe_and_errors() {
    let dev = common::start(3, 4).await;
    let c = common::connect(&dev).await;
    c.batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, g int, v int)")
        .await
        .unwrap();
    common::add_table(&dev, "t", "id", "bigint").await;
    let values: Vec<String> = (1..=60)
        .map(|i| format!("({i}, {}, {})", i % 4, i * 10))
        .collect();
    c.batch_execute(&format!(
        "INSERT INTO t (id, g, v) VALUES {}",
        values.join(", ")
    ))
    .await
    .unwrap();

    // DISTINCT over grouped rows: g % 2 of four groups, each value once,
    // ordered; an ORDER BY outside the select list (PostgreSQL: 42P10) is
    // refused, not sorted by.
    let rows = c
        .query(
            "SELECT DISTINCT g % 2 AS p, count(*) FROM t GROUP BY g ORDER BY p",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(i32, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![(0, 15), (1, 15)]);
    let e = c
        .simple_query("SELECT DISTINCT g % 2 FROM t GROUP BY g ORDER BY g")
        .await
        .expect_err("ORDER BY not in the select list");
    assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{e:?}");

    // EXPLAIN (ROUTER): every shard without a key condition, only the
    // owners of the listed keys with IN / ANY.
    let all = lines(
        &c.simple_query("EXPLAIN (ROUTER) SELECT id FROM t ORDER BY v DESC LIMIT 5")
            .await
            .unwrap(),
    );
    assert!(all[0].contains("3 of 3 shard(s)"), "{all:?}");
    assert!(
        all.iter()
            .any(|l| l.contains("Shard SQL:") && l.contains("LIMIT 5")),
        "{all:?}"
    );
    let one = lines(
        &c.simple_query("EXPLAIN (ROUTER) SELECT id FROM t WHERE id IN (7, 7) ORDER BY id")
            .await
            .unwrap(),
    );
    assert!(one[0].contains("1 of 3 shard(s)"), "{one:?}");
    let ids: Vec<i64> = (1..=60).collect();
    let explain_any = c
        .simple_query("EXPLAIN (ROUTER) SELECT count(*) FROM t WHERE id = ANY('{1,2}')")
        .await
        .unwrap();
    assert!(lines(&explain_any)[0].contains("of 3 shard(s)"));
    // Pruned statements give the same answers, both protocols.
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM t WHERE id = ANY($1)",
            &[&ids[..10].to_vec()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 10);
    let r = c
        .query(
            "SELECT id FROM t WHERE id IN ($1, $2, $3) ORDER BY id DESC",
            &[&5i64, &50i64, &500i64],
        )
        .await
        .unwrap();
    assert_eq!(
        r.iter().map(|x| x.get::<_, i64>(0)).collect::<Vec<_>>(),
        vec![50, 5]
    );
    let none = c
        .query(
            "SELECT g, count(*) FROM t WHERE id = ANY($1) GROUP BY g",
            &[&Vec::<i64>::new()],
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    let zero: i64 = c
        .query_one(
            "SELECT count(*) FROM t WHERE id = ANY($1)",
            &[&Vec::<i64>::new()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(zero, 0);

    // Prepared gather statements describe only the client's columns.
    let st = c
        .prepare("SELECT g, avg(v) AS a FROM t GROUP BY g ORDER BY count(*) DESC, g LIMIT $1")
        .await
        .unwrap();
    assert_eq!(
        st.columns().iter().map(|c| c.name()).collect::<Vec<_>>(),
        vec!["g", "a"]
    );
    assert_eq!(st.params().len(), 1);
    let rows = c.query(&st, &[&2i64]).await.unwrap();
    assert_eq!(rows.len(), 2);

    // A shard error in the middle of a merge: forwarded with the shard
    // named, the connection stays usable (simple and extended).
    let e = c
        .simple_query("SELECT id, 100 / (id - 30) FROM t ORDER BY id")
        .await
        .unwrap_err();
    let db = e.as_db_error().expect("db error");
    assert_eq!(db.code(), &SqlState::DIVISION_BY_ZERO);
    assert!(db.detail().is_some_and(|d| d.contains("shard")), "{db:?}");
    let e = c
        .query(
            "SELECT g, sum(100 / (v - $1)) FROM t GROUP BY g",
            &[&300i32],
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.as_db_error().map(|d| d.code()),
        Some(&SqlState::DIVISION_BY_ZERO)
    );
    // Invalid LIMIT values are refused like PostgreSQL refuses them.
    let e = c
        .query("SELECT id FROM t ORDER BY id LIMIT $1", &[&-1i64])
        .await
        .unwrap_err();
    assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("2201W"));
    let n: i64 = c
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 60);
    // Inside a transaction block the merge sees the block's own writes.
    c.batch_execute("BEGIN; DELETE FROM t WHERE id > 50")
        .await
        .unwrap();
    let top = c
        .query("SELECT id FROM t ORDER BY id DESC LIMIT 1", &[])
        .await
        .unwrap();
    assert_eq!(top[0].get::<_, i64>(0), 50);
    c.batch_execute("ROLLBACK").await.unwrap();
    let top = c.query("SELECT max(id) FROM t", &[]).await.unwrap();
    assert_eq!(top[0].get::<_, i64>(0), 60);
}
