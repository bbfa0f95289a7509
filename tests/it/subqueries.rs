//! Subqueries over sharded tables that run first (recursive planning,
//! simple protocol): results equal to one PostgreSQL database's (the same
//! rows loaded into a plain database on the catalog instance), column names
//! and types (`char(4)` semantics) kept through the substitution, values
//! with quotes, backslashes, non-ASCII text and NULLs, UPDATE/DELETE/INSERT
//! ... SELECT with subqueries, a transaction block seeing its own writes,
//! the extended protocol (parameters inside and outside the subqueries,
//! a statement prepared once and run twice), and the errors: 54000 past
//! `limits.intermediate_result_bytes`, 0A000 for a subquery that refers to
//! the outer query (qualified or not), a subquery's own error in both
//! protocols; the session stays usable.

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::common;

const DDL: &str =
    "CREATE TABLE items (id bigint PRIMARY KEY, g int, t text, c char(4), n numeric(8,2));
     CREATE TABLE events (k bigint, v int)";
const LOAD: &str = "INSERT INTO items SELECT i, i % 7, CASE WHEN i % 10 = 0 THEN NULL ELSE 'it''s \\ ' || i || ' é' END, 'c' || (i % 3), i / 4.0 FROM generate_series(1, 300) i;
     INSERT INTO events SELECT (i * 37) % 300 + 1, i % 50 FROM generate_series(1, 600) i";

/// The rows of a simple-protocol answer, cells as text ("NULL" for NULL).
async fn rows(c: &Client, sql: &str) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(c.simple_query(sql)
        .await?
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect())
}

/// Column names of a simple-protocol answer.
async fn names(c: &Client, sql: &str) -> Vec<String> {
    for m in c.simple_query(sql).await.expect(sql) {
        if let SimpleQueryMessage::RowDescription(d) = m {
            return d.iter().map(|c| c.name().to_string()).collect();
        }
    }
    Vec::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subqueries_run_first_with_exact_results() {
    let dev =
        common::start_config(3, 4, |cfg| cfg.limits.intermediate_result_bytes = 262_144).await;
    let c = common::connect(&dev).await;
    c.batch_execute(DDL).await.unwrap();
    common::add_table(&dev, "items", "id", "bigint").await;
    common::add_table(&dev, "events", "k", "bigint").await;
    c.batch_execute(LOAD).await.unwrap();
    // The same rows in one plain database.
    let admin = common::connect_direct(&dev.cluster.catalog).await;
    admin.batch_execute("CREATE DATABASE plain").await.unwrap();
    let plain = common::connect_dsn(&format!(
        "host=127.0.0.1 port={} user=postgres dbname=plain",
        dev.cluster.catalog.port
    ))
    .await;
    plain.batch_execute(DDL).await.unwrap();
    plain.batch_execute(LOAD).await.unwrap();

    for sql in [
        // char(4) keeps its semantics (trailing blanks ignored by ||).
        "SELECT id, c || '|', n, t FROM (SELECT id, c, n, t FROM items WHERE g = 3 ORDER BY id DESC LIMIT 9) x ORDER BY id",
        "SELECT id, t FROM items WHERE t IN (SELECT t FROM items WHERE id % 9 = 1) ORDER BY id",
        "SELECT count(*), sum(n) FROM items WHERE id IN (SELECT k FROM events WHERE v = 7)",
        "SELECT count(*) FROM items WHERE id NOT IN (SELECT k FROM events)",
        "SELECT g, (SELECT max(v) FROM events), (SELECT count(*) FROM items WHERE t IS NULL) AS nulls FROM items GROUP BY g ORDER BY g",
        "SELECT count(*) FROM items WHERE EXISTS (SELECT FROM events WHERE v > 48)",
        "SELECT count(*) FROM items WHERE NOT EXISTS (SELECT 1 FROM events WHERE v > 1000)",
        "WITH hot AS (SELECT k, count(*) AS n FROM events GROUP BY k HAVING count(*) > 2) SELECT i.id, hot.n FROM items i JOIN hot ON hot.k = i.id ORDER BY i.id",
        "SELECT * FROM (SELECT g, string_agg(id::text, ',' ORDER BY id) FROM items WHERE id < 40 GROUP BY g) s ORDER BY g",
        "(SELECT id FROM items WHERE g = 2 ORDER BY id LIMIT 3) UNION ALL (SELECT k FROM events WHERE v = 3 ORDER BY k LIMIT 3)",
        "SELECT count(*) FROM items WHERE n > (SELECT avg(n) FROM items) AND id IN (SELECT k FROM events WHERE v IN (SELECT g FROM items WHERE id < 5))",
        "SELECT id FROM items WHERE id = (SELECT min(k) FROM events WHERE v = 999)",
        // Array-typed columns; thousands of rows (a few casts in the text).
        "SELECT * FROM (SELECT id, ARRAY[g, id::int] AS a, ARRAY[t] AS ta FROM items WHERE g = 2) x ORDER BY id",
        "SELECT count(*), sum(id) FROM items WHERE (id, g) IN (SELECT e.k, s.i FROM events e, generate_series(0, 9) s(i))",
    ] {
        let want = rows(&plain, sql).await.expect(sql);
        let got = rows(&c, sql).await.unwrap_or_else(|e| panic!("{sql}: {}", common::db_message_detail(&e)));
        assert_eq!(got, want, "{sql}");
    }
    // Column names as PostgreSQL gives them.
    let sql = "SELECT (SELECT max(v) FROM events), (SELECT count(*) AS n FROM items), x.* FROM (SELECT id AS \"Id\", c FROM items WHERE g = 1 LIMIT 1) x";
    assert_eq!(names(&c, sql).await, names(&plain, sql).await);

    // Writes with subqueries, in both databases.
    for sql in [
        "UPDATE items SET g = g + 100 WHERE id IN (SELECT k FROM events WHERE v = 11)",
        "DELETE FROM events WHERE k IN (SELECT id FROM items WHERE g = 5)",
        "INSERT INTO events SELECT id, 77 FROM items WHERE g = (SELECT max(g) FROM items)",
    ] {
        let want = plain.execute(sql, &[]).await.expect(sql);
        let got = c.simple_query(sql).await.expect(sql);
        let n = got.iter().find_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        });
        assert_eq!(n, Some(want), "{sql}");
    }
    for sql in [
        "SELECT id, g FROM items ORDER BY id",
        "SELECT k, v FROM events ORDER BY k, v",
    ] {
        assert_eq!(
            rows(&c, sql).await.unwrap(),
            rows(&plain, sql).await.unwrap(),
            "{sql}"
        );
    }

    // A block sees its own writes; they go away with it.
    let sql = "SELECT count(*) FROM items WHERE id IN (SELECT k FROM events WHERE v = 4242)";
    c.batch_execute("BEGIN; INSERT INTO events VALUES (5, 4242), (6, 4242)")
        .await
        .unwrap();
    assert_eq!(rows(&c, sql).await.unwrap(), vec!["2"]);
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(rows(&c, sql).await.unwrap(), vec!["0"]);

    // Past the bound: 54000 naming the setting.
    let e = c
        .simple_query("SELECT count(*) FROM items WHERE t IN (SELECT repeat(t, 400) FROM items)")
        .await
        .expect_err("past the bound");
    assert_eq!(e.code().map(|c| c.code()), Some("54000"));
    assert!(
        common::db_message(&e).contains("limits.intermediate_result_bytes"),
        "{e:?}"
    );
    // Refers to the outer query without a sharding-key join: 0A000.
    let e = c
        .simple_query(
            "SELECT count(*) FROM items i WHERE EXISTS (SELECT 1 FROM events e WHERE e.v = i.g)",
        )
        .await
        .expect_err("correlated, qualified");
    assert_eq!(e.code().map(|c| c.code()), Some("0A000"));
    assert!(
        common::db_message_detail(&e).contains("inner.key = outer.key"),
        "{e:?}"
    );
    let e = c
        .simple_query(
            "SELECT count(*) FROM items i WHERE EXISTS (SELECT 1 FROM events e WHERE e.v = g)",
        )
        .await
        .expect_err("correlated, unqualified");
    assert_eq!(e.code().map(|c| c.code()), Some("0A000"));
    assert!(
        common::db_message(&e).contains("column \"g\" does not exist"),
        "{e:?}"
    );
    // A subquery's own error, as PostgreSQL gives it.
    let e = c
        .simple_query("SELECT count(*) FROM items WHERE id IN (SELECT k / (v - v) FROM events)")
        .await
        .expect_err("division by zero");
    assert_eq!(e.code().map(|c| c.code()), Some("22012"));
    // The extended protocol: parameters (binary here) inside and outside
    // the subqueries, a prepared statement run twice, types described.
    let sql = "SELECT i.id, i.c, i.n, $3::text AS tag FROM items i WHERE i.g = $1 AND i.id IN (SELECT k FROM events WHERE v > $2) ORDER BY i.id";
    let st = c.prepare(sql).await.unwrap();
    let ps = plain.prepare(sql).await.unwrap();
    assert_eq!(
        st.columns()
            .iter()
            .map(|c| c.type_().clone())
            .collect::<Vec<_>>(),
        ps.columns()
            .iter()
            .map(|c| c.type_().clone())
            .collect::<Vec<_>>()
    );
    let text = |rows: Vec<tokio_postgres::Row>| -> Vec<String> {
        rows.iter()
            .map(|r| {
                let id: i64 = r.get(0);
                let c: String = r.get(1);
                let tag: String = r.get(3);
                format!("{id}|{c}|{tag}")
            })
            .collect()
    };
    for (g, v) in [(3, 40), (2, 10)] {
        let got = c.query(&st, &[&g, &v, &"t"]).await.expect("extended");
        let want = plain.query(&ps, &[&g, &v, &"t"]).await.unwrap();
        assert!(!want.is_empty());
        assert_eq!(text(got), text(want));
    }
    // A subquery's error at its Bind, in the extended protocol too.
    let e = c
        .query(
            "SELECT count(*) FROM items WHERE id IN (SELECT k / (v - $1) FROM events)",
            &[&0i32],
        )
        .await
        .expect_err("division by zero");
    assert_eq!(e.code().map(|c| c.code()), Some("22012"));
    // The session is still fine.
    assert_eq!(
        rows(
            &c,
            "SELECT count(*) FROM items WHERE id IN (SELECT k FROM events WHERE v = 1)"
        )
        .await
        .unwrap(),
        rows(
            &plain,
            "SELECT count(*) FROM items WHERE id IN (SELECT k FROM events WHERE v = 1)"
        )
        .await
        .unwrap()
    );
    // EXPLAIN (ROUTER) lists the subqueries.
    let plan = rows(&c, "EXPLAIN (ROUTER) SELECT count(*) FROM items WHERE id IN (SELECT k FROM events WHERE v = 1)").await.unwrap();
    assert!(plan[0].starts_with("Subqueries first"), "{plan:?}");
    assert_eq!(plan[1].trim(), "Subquery: SELECT k FROM events WHERE v = 1");
    dev.stop().await;
}
