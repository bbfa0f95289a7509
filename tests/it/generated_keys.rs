//! Generated sharding keys and schema awareness: INSERTs that omit a
//! serial/identity sharding key get values from the catalog's distributed
//! sequence (unique across shards, routed by them, returned by RETURNING),
//! INSERT without a column list and DEFAULT VALUES use the columns read
//! from the shards, DDL through the router refreshes them, and a table
//! whose columns differ between shards is named in a clear error. Then
//! sysbench (if installed) runs its OLTP workloads with default options.

use std::collections::HashSet;

use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_keys_and_schema_awareness() {
    let dev = common::start(2, 2).await;
    let c = common::connect(&dev).await;
    c.batch_execute(
        "CREATE TABLE g (id serial PRIMARY KEY, k int NOT NULL DEFAULT 0, c text);
         CREATE TABLE gi (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
         CREATE TABLE small (id smallserial PRIMARY KEY, v text);
         CREATE TABLE plain (id int PRIMARY KEY, v text)",
    )
    .await
    .unwrap();
    for t in ["g", "gi", "small", "plain"] {
        common::add_table(&dev, t, "id", "int").await;
    }

    // Multi-row, key omitted, RETURNING the generated keys in VALUES order.
    let rows = c
        .simple_query("INSERT INTO g (k, c) VALUES (1, 'a'), (2, 'b'), (3, 'c') RETURNING id, k")
        .await
        .expect("generated keys");
    let got: Vec<(String, String)> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((r.get(0).unwrap().to_string(), r.get(1).unwrap().to_string()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("1".into(), "1".into()),
            ("2".into(), "2".into()),
            ("3".into(), "3".into())
        ]
    );
    // No column list (key given), DEFAULT as the key, DEFAULT VALUES.
    c.batch_execute(
        "INSERT INTO g VALUES (100000, 4, 'explicit');
         INSERT INTO g VALUES (DEFAULT, 5, 'default item'), (DEFAULT, 6, 'second');
         INSERT INTO g DEFAULT VALUES;
         INSERT INTO gi (v) VALUES ('x'), ('y');
         INSERT INTO gi VALUES (DEFAULT, 'z')",
    )
    .await
    .expect("no column list, DEFAULT, DEFAULT VALUES, identity ALWAYS");
    // Many rows in one statement: one block reserved, keys unique.
    let values: Vec<String> = (0..500).map(|i| format!("({i}, 'bulk')")).collect();
    c.batch_execute(&format!(
        "INSERT INTO g (k, c) VALUES {}",
        values.join(", ")
    ))
    .await
    .expect("bulk with generated keys");

    // Every row on the shard its key names, keys unique over the shards.
    let per_shard = common::ids_per_shard(&dev, "g").await;
    let all: Vec<i32> = per_shard.iter().flatten().copied().collect();
    let unique: HashSet<i32> = all.iter().copied().collect();
    assert_eq!(all.len(), 3 + 1 + 2 + 1 + 500);
    assert_eq!(unique.len(), all.len(), "generated keys are unique");
    assert!(per_shard.iter().all(|s| !s.is_empty()), "{per_shard:?}");
    let through: i64 = c
        .query_one("SELECT count(*) FROM g WHERE id = 100000", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(through, 1);
    for (shard, ids) in per_shard.iter().enumerate() {
        for id in ids {
            let n: i64 = c
                .query_one(&format!("SELECT count(*) FROM g WHERE id = {id}"), &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 1, "row {id} of shard {shard} is found by its key");
        }
    }
    let gi = common::sum_on_shards(&dev, "SELECT count(DISTINCT id) FROM gi").await;
    assert_eq!(gi, 3);

    // A key without a sequence default must be given.
    let e = c
        .batch_execute("INSERT INTO plain (v) VALUES ('no key')")
        .await
        .expect_err("no generator");
    assert_eq!(common::sqlstate(&e), "0A000");
    assert!(
        common::db_message_detail(&e).contains("sharding key"),
        "{e}"
    );
    // The type's range bounds the values (smallserial: 32767).
    let cat = common::connect_dsn(&dev.catalog_dsn()).await;
    cat.execute(
        "INSERT INTO pgrouter.sequences (table_name, next_value) VALUES ('small', 32767)",
        &[],
    )
    .await
    .unwrap();
    let e = c
        .batch_execute("INSERT INTO small (v) VALUES ('a'), ('b')")
        .await
        .expect_err("past smallint");
    assert_eq!(common::sqlstate(&e), "2200H", "{e}");
    assert!(
        common::db_message_detail(&e).contains("small_id_seq"),
        "{e}"
    );
    assert_eq!(
        common::sum_on_shards(&dev, "SELECT count(*) FROM small").await,
        0
    );

    // DDL through the router: the new column list is used at once.
    c.batch_execute(
        "ALTER TABLE g ADD COLUMN extra int;
         INSERT INTO g VALUES (DEFAULT, 7, 'after alter', 42)",
    )
    .await
    .expect("insert after ALTER TABLE");
    let extra = common::sum_on_shards(&dev, "SELECT coalesce(sum(extra), 0) FROM g").await;
    assert_eq!(extra, 42);
    // A merged `SELECT *` (written out from the columns the router read)
    // sees the new column too, in both protocols.
    for sql in [
        "SELECT * FROM g WHERE extra IS NOT NULL ORDER BY id DESC LIMIT 1",
        "SELECT DISTINCT * FROM g WHERE extra = 42",
    ] {
        let r = c.query_one(sql, &[]).await.expect(sql);
        let names: Vec<&str> = r.columns().iter().map(|c| c.name()).collect();
        assert_eq!(names, ["id", "k", "c", "extra"], "{sql}");
        assert_eq!(r.get::<_, Option<i32>>(3), Some(42), "{sql}");
        let rows = c.simple_query(sql).await.expect(sql);
        let tokio_postgres::SimpleQueryMessage::Row(r) = &rows[1] else {
            panic!("{sql}: no row: {rows:?}");
        };
        assert_eq!((r.len(), r.get(3)), (4, Some("42")), "{sql}");
    }

    // The extended protocol (drivers' parameters): one row, several rows
    // over both shards, DEFAULT as the key, no column list; a prepared
    // statement used again after DDL through the router.
    let id: i32 = c
        .query_one(
            "INSERT INTO g (k, c) VALUES ($1, $2) RETURNING id",
            &[&8i32, &"ext"],
        )
        .await
        .expect("extended, key omitted")
        .get(0);
    let ids: Vec<i32> = c
        .query(
            "INSERT INTO g (k, c) VALUES ($1, 'm1'), ($2, 'm2'), ($3, 'm3'), ($4, 'm4') RETURNING id",
            &[&1i32, &2i32, &3i32, &4i32],
        )
        .await
        .expect("extended multi-row, keys omitted")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, (id + 1..id + 5).collect::<Vec<_>>(), "VALUES order");
    let stmt = c
        .prepare("INSERT INTO g VALUES (DEFAULT, $1, $2) RETURNING id, c")
        .await
        .expect("prepare without column list");
    let r = c
        .query_one(&stmt, &[&9i32, &"no list"])
        .await
        .expect("bound");
    assert_eq!(
        (r.get::<_, i32>(0), r.get::<_, &str>(1)),
        (id + 5, "no list")
    );
    c.batch_execute(
        "ALTER TABLE g DROP COLUMN extra; ALTER TABLE g ADD COLUMN extra2 text DEFAULT 'd'",
    )
    .await
    .unwrap();
    let r = c
        .query_one(&stmt, &[&10i32, &"after ddl"])
        .await
        .expect("after DDL");
    assert_eq!(r.get::<_, &str>(1), "after ddl");
    let per_shard = common::ids_per_shard(&dev, "g").await;
    let all: Vec<i32> = per_shard.iter().flatten().copied().collect();
    assert_eq!(all.iter().copied().collect::<HashSet<_>>().len(), all.len());
    assert_eq!(all.len(), 507 + 1 + 1 + 4 + 1 + 1);

    // currval / lastval / nextval of the key's sequence, as PostgreSQL
    // answers them for this session, in both protocols.
    let last = id + 6;
    let one = |rows: Vec<tokio_postgres::SimpleQueryMessage>| -> (String, String) {
        rows.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some((
                    r.columns()[0].name().to_string(),
                    r.get(0).unwrap_or_default().to_string(),
                )),
                _ => None,
            })
            .expect("one row")
    };
    assert_eq!(
        one(c.simple_query("SELECT currval('g_id_seq')").await.unwrap()),
        ("currval".into(), last.to_string())
    );
    assert_eq!(
        one(c.simple_query("select lastval() AS l").await.unwrap()),
        ("l".into(), last.to_string())
    );
    let cur: i64 = c
        .query_one(
            "SELECT pg_catalog.currval('public.g_id_seq'::regclass)",
            &[],
        )
        .await
        .expect("extended currval")
        .get(0);
    assert_eq!(cur, last as i64);
    let next: i64 = c
        .query_one("SELECT nextval('g_id_seq')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        next,
        last as i64 + 1,
        "nextval from the distributed sequence"
    );
    let lastval: i64 = c.query_one("SELECT lastval()", &[]).await.unwrap().get(0);
    assert_eq!(lastval, next);
    // A fresh session has none yet: PostgreSQL's 55000.
    let c2 = common::connect(&dev).await;
    let e = c2
        .simple_query("SELECT currval('g_id_seq')")
        .await
        .expect_err("not yet defined");
    assert_eq!(common::sqlstate(&e), "55000", "{e}");

    // A declared table that does not exist, and one whose columns differ
    // between the shards.
    common::add_table(&dev, "missing", "id", "int").await;
    let e = c
        .batch_execute("INSERT INTO missing (v) VALUES (1)")
        .await
        .expect_err("no such table");
    assert_eq!(common::sqlstate(&e), "42P01", "{e}");
    for (i, s) in dev.cluster.shards.iter().enumerate() {
        let ty = if i == 0 { "text" } else { "int" };
        common::connect_direct(s)
            .await
            .batch_execute(&format!("CREATE TABLE d (id serial PRIMARY KEY, v {ty})"))
            .await
            .unwrap();
    }
    common::add_table(&dev, "d", "id", "int").await;
    let e = c
        .batch_execute("INSERT INTO d (v) VALUES ('1')")
        .await
        .expect_err("schemas differ");
    assert_eq!(common::sqlstate(&e), "55000", "{e}");
    let msg = common::db_message_detail(&e);
    assert!(msg.contains("\"d\"") && msg.contains("shard1"), "{msg}");
    // The session is still usable.
    c.simple_query("SELECT 1").await.expect("healthy");
    dev.stop().await;
}

/// Runs sysbench `args` against the router; returns its output.
fn sysbench(dev: &pg_router::dev::DevCluster, args: &[&str]) -> String {
    let out = std::process::Command::new("sysbench")
        .args([
            "--db-driver=pgsql",
            "--pgsql-host=127.0.0.1",
            &format!("--pgsql-port={}", dev.router.addr.port()),
            "--pgsql-user=postgres",
            "--pgsql-db=postgres",
            "--tables=4",
            "--table-size=2000",
        ])
        .args(args)
        .output()
        .expect("sysbench is installed (.ci/run: apt-get install sysbench)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sysbench {args:?} failed:\n{text}");
    assert!(!text.contains("FATAL"), "sysbench {args:?}:\n{text}");
    text
}

/// The count after `label:` in sysbench's summary.
fn summary_count(text: &str, label: &str) -> u64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysbench_oltp_with_default_options() {
    let dev = common::start(2, 4).await;
    // The one step sysbench needs: a keyspace rule that shards new tables
    // with an `id` column by it.
    common::meta(&dev, &["add-table-rule", "--column", "id"]);
    let t0 = std::time::Instant::now();
    while dev.router.state.routing().catalog.table_rules.is_empty() {
        assert!(t0.elapsed().as_secs() < 5, "rule not loaded");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The rule in the extended protocol (tokio-postgres), and tables it
    // does not apply to.
    let c = common::connect(&dev).await;
    c.execute("CREATE TABLE ruled (v text, id bigint PRIMARY KEY)", &[])
        .await
        .expect("CREATE TABLE, extended");
    let t = dev.router.state.routing().catalog.table("ruled").cloned();
    assert_eq!(
        t.map(|t| (t.key_column, t.key_type.as_str())),
        Some(("id".to_string(), "int")),
        "declared before the CREATE TABLE completed"
    );
    for id in 0..200i64 {
        c.execute("INSERT INTO ruled (id, v) VALUES ($1, 'x')", &[&id])
            .await
            .expect("insert by key");
    }
    let per_shard = common::sum_on_shards(&dev, "SELECT count(*) FROM ruled").await;
    assert_eq!(per_shard, 200);
    let n: i64 = c
        .query_one("SELECT count(*) FROM ruled WHERE id = 7", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    for sql in [
        "CREATE TABLE unruled (x int)",
        "CREATE TEMP TABLE tmp_ruled (id int)",
    ] {
        c.batch_execute(sql).await.expect(sql);
    }
    assert!(dev
        .router
        .state
        .routing()
        .catalog
        .table("unruled")
        .is_none());
    assert!(dev
        .router
        .state
        .routing()
        .catalog
        .table("tmp_ruled")
        .is_none());
    sysbench(&dev, &["oltp_read_write", "prepare"]);
    for i in 1..=4 {
        let name = format!("sbtest{i}");
        let t = dev.router.state.routing().catalog.table(&name).cloned();
        assert_eq!(t.map(|t| t.key_column), Some("id".into()), "{name}");
    }
    let ids = common::ids_per_shard(&dev, "sbtest1").await;
    assert_eq!(ids.iter().map(Vec::len).sum::<usize>(), 2000);
    assert!(
        ids.iter().all(|s| s.len() > 700),
        "rows spread over the shards"
    );
    for test in [
        "oltp_read_write",
        "oltp_read_only",
        "oltp_write_only",
        "oltp_point_select",
        "oltp_insert",
    ] {
        let out = sysbench(&dev, &["--time=2", test, "run"]);
        assert!(summary_count(&out, "transactions:") > 0, "{test}:\n{out}");
        // One thread: not even a deadlock to retry.
        assert_eq!(summary_count(&out, "ignored errors:"), 0, "{test}:\n{out}");
    }
    let ids = common::ids_per_shard(&dev, "sbtest2").await;
    let all: HashSet<i32> = ids.iter().flatten().copied().collect();
    assert_eq!(
        all.len(),
        ids.iter().map(Vec::len).sum::<usize>(),
        "ids unique"
    );
    sysbench(&dev, &["oltp_read_write", "cleanup"]);
    let out = common::meta(&dev, &["drop-table-rule", "--column", "id"]);
    assert!(out.contains("dropped"), "{out}");
    assert_eq!(
        common::sum_on_shards(
            &dev,
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'sbtest%'"
        )
        .await,
        0
    );
    dev.stop().await;
}
