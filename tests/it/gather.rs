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
    // PostgreSQL's own error (the final step checks the statement).
    let e = c
        .simple_query("SELECT DISTINCT g % 2 FROM t GROUP BY g ORDER BY g")
        .await
        .expect_err("ORDER BY not in the select list");
    assert_eq!(e.code().map(|c| c.code()), Some("42P10"), "{e:?}");

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

/// Grouped SELECTs finished by PostgreSQL over the shards' rows (the
/// final step): PostgreSQL's errors (division by zero, overflow) with the
/// shard named, the intermediate result bounded by
/// `limits.intermediate_result_bytes` (54000), descriptions with the
/// client's exact column types, EXPLAIN (ROUTER), and the session (and a
/// transaction block's rules) intact after each error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_step_errors_limits_and_descriptions() {
    let dev = common::start_config(3, 4, |cfg| cfg.limits.intermediate_result_bytes = 8192).await;
    let c = common::connect(&dev).await;
    c.batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, g int, v int, h text)")
        .await
        .unwrap();
    common::add_table(&dev, "t", "id", "bigint").await;
    let values: Vec<String> = (1..=200)
        .map(|i| format!("({i}, {}, {}, repeat('x', 100))", i % 4, i * 10))
        .collect();
    c.batch_execute(&format!("INSERT INTO t VALUES {}", values.join(", ")))
        .await
        .unwrap();

    let rows = c
        .simple_query(
            "SELECT g, sum(v) / count(*) AS a, count(*)::int FROM t GROUP BY g ORDER BY a DESC",
        )
        .await
        .expect("expressions over aggregates");
    assert_eq!(
        lines(&rows),
        // avg(v) per g: 1020 (g = 0: ids 4..200), 1010, 1000, 990.
        vec!["0".to_string(), "3".into(), "2".into(), "1".into()]
    );
    // Exact result types in the extended protocol's description.
    let st = c
        .prepare("SELECT g, count(*)::int, round(avg(v), 2), string_agg(id::text, ',' ORDER BY id) FROM t WHERE id < $1 GROUP BY g")
        .await
        .expect("described");
    let types: Vec<_> = st.columns().iter().map(|c| c.type_().clone()).collect();
    use tokio_postgres::types::Type;
    assert_eq!(
        types,
        vec![Type::INT4, Type::INT4, Type::NUMERIC, Type::TEXT]
    );
    let r = c
        .query("SELECT g, count(*)::int, string_agg(id::text, ',' ORDER BY id) FROM t WHERE id < $1 GROUP BY g ORDER BY g", &[&9i64])
        .await
        .expect("bound");
    assert_eq!(r[1].get::<_, &str>(2), "1,5");

    // PostgreSQL's own errors, the shard named.
    let e = c
        .simple_query("SELECT 1 / (count(*) - 200) FROM t")
        .await
        .expect_err("division by zero");
    assert_eq!(e.code(), Some(&SqlState::DIVISION_BY_ZERO), "{e:?}");
    assert!(common::db_message_detail(&e).contains("shard"), "{e:?}");
    let e = c
        .simple_query("SELECT (sum(v) * 1000)::smallint FROM t")
        .await
        .expect_err("overflow");
    assert_eq!(
        e.code(),
        Some(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE),
        "{e:?}"
    );
    // A column neither grouped nor aggregated: PostgreSQL's 42803.
    let e = c
        .simple_query("SELECT v, count(*) + 1 FROM t GROUP BY g")
        .await
        .expect_err("ungrouped column");
    assert_eq!(e.code(), Some(&SqlState::GROUPING_ERROR), "{e:?}");
    // Raw rows past the bound: 54000, nothing else sent.
    let e = c
        .simple_query("SELECT g, string_agg(h, ',') FROM t GROUP BY g")
        .await
        .expect_err("intermediate result too large");
    assert_eq!(e.code(), Some(&SqlState::PROGRAM_LIMIT_EXCEEDED), "{e:?}");
    assert!(
        common::db_message(&e).contains("limits.intermediate_result_bytes"),
        "{e:?}"
    );
    // In a transaction block the error fails the block, as in PostgreSQL.
    c.batch_execute("BEGIN").await.unwrap();
    assert!(c
        .simple_query("SELECT 1 / (count(*) - 200) FROM t")
        .await
        .is_err());
    let e = c.simple_query("SELECT 1").await.expect_err("block failed");
    assert_eq!(e.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    c.batch_execute("ROLLBACK").await.unwrap();

    let plan = lines(
        &c.simple_query("EXPLAIN (ROUTER) SELECT g, max(v) - min(v) FROM t GROUP BY g")
            .await
            .unwrap(),
    )
    .join("\n");
    assert!(plan.contains("partial aggregates per group"), "{plan}");
    assert!(plan.contains("final step by PostgreSQL"), "{plan}");
    assert_eq!(
        lines(
            &c.simple_query("SELECT max(v) - min(v) FROM t")
                .await
                .unwrap()
        ),
        vec!["1990".to_string()]
    );

    // Co-located joins run on every shard; a join on other columns is
    // refused with the tables and the missing condition named.
    assert_eq!(
        lines(
            &c.simple_query("SELECT count(*) FROM t a JOIN t b ON a.id = b.id WHERE a.g = 1")
                .await
                .unwrap()
        ),
        vec!["50".to_string()]
    );
    let e = c
        .simple_query("SELECT count(*) FROM t a JOIN t b ON a.g = b.g")
        .await
        .expect_err("join on non-key columns");
    assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{e:?}");
    let db = e.as_db_error().expect("db error");
    assert!(db.message().contains("\"t\""), "{}", db.message());
    assert!(
        db.hint().unwrap_or_default().contains("a.id = b.id"),
        "{:?}",
        db.hint()
    );
    dev.stop().await;
}

/// A raw client's Bind, Describe (portal), Execute and Sync of a gather
/// (what libpq's PQexecParams sends): the Describe is answered by the
/// Execute with the RowDescription the shards sent (visible columns only,
/// the Bind's formats), before an error too, and the shards get the Sync
/// with the Execute. Checked against PostgreSQL's answers: the same
/// messages in the same order, and no shard connection left inside a
/// transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_and_sync_answered_with_the_execute() {
    use postgres_protocol::message::frontend as fe;
    use tokio::io::AsyncWriteExt;
    let dev = common::start(2, 1).await;
    let c = common::connect(&dev).await;
    c.batch_execute("CREATE TABLE g (k int PRIMARY KEY, v text)")
        .await
        .unwrap();
    common::add_table(&dev, "g", "k", "int").await;
    let values: Vec<String> = (1..=20).map(|i| format!("({i}, 'v{i}')")).collect();
    c.batch_execute(&format!("INSERT INTO g VALUES {}", values.join(", ")))
        .await
        .unwrap();

    let (mut s, mut buf, _) = common::raw_session(dev.router.addr).await;
    let mut out = bytes::BytesMut::new();
    // Ordered by v: a hidden sort column the client must not see.
    fe::parse(
        "q",
        "SELECT k, v FROM g ORDER BY v DESC LIMIT $1",
        [],
        &mut out,
    )
    .unwrap();
    s.write_all(&out).await.unwrap();
    // One batch: Bind (k in binary, v in text), Describe, Execute, Sync.
    let batch = |limit: &str, describe: bool, execute: bool| {
        let mut out = bytes::BytesMut::new();
        fe::bind(
            "",
            "q",
            Some(0),
            [limit],
            |v, o| {
                o.extend_from_slice(v.as_bytes());
                Ok(postgres_protocol::IsNull::No)
            },
            [1, 0],
            &mut out,
        )
        .map_err(|_| ())
        .unwrap();
        if describe {
            fe::describe(b'P', "", &mut out).unwrap();
        }
        if execute {
            fe::execute("", 0, &mut out).unwrap();
        }
        fe::sync(&mut out);
        out
    };
    let tags = |frames: &[bytes::BytesMut]| frames.iter().map(|f| f[0]).collect::<Vec<u8>>();
    for round in 0..3 {
        s.write_all(&batch("3", true, true)).await.unwrap();
        let frames = common::read_frames(&mut s, &mut buf, b'Z').await;
        let want: &[u8] = if round == 0 { b"12TDDDCZ" } else { b"2TDDDCZ" };
        assert_eq!(tags(&frames), want, "round {round}");
        let t = &frames[want.len() - 6];
        let cols = pg_router::protocol::backend::row_description(&t[5..]).unwrap();
        let seen: Vec<_> = cols.iter().map(|c| (c.name.as_str(), c.format)).collect();
        assert_eq!(
            seen,
            vec![("k", 1), ("v", 0)],
            "visible columns, Bind's formats"
        );
        let first = pg_router::protocol::backend::data_row(&frames[want.len() - 5][5..]).unwrap();
        assert_eq!(first[0], Some(&9i32.to_be_bytes()[..]), "v9 sorts last");
        assert_eq!(first[1], Some(&b"v9"[..]));
        assert_eq!(&frames[want.len() - 2][5..], b"SELECT 3\0");
        assert_eq!(frames[want.len() - 1][5], b'I');
    }
    // Describe without Execute: answered on its own.
    s.write_all(&batch("3", true, false)).await.unwrap();
    assert_eq!(
        tags(&common::read_frames(&mut s, &mut buf, b'Z').await),
        b"2TZ"
    );
    // A refused LIMIT: the Describe is still answered first (PostgreSQL:
    // 2TEZ), then the error.
    s.write_all(&batch("-1", true, true)).await.unwrap();
    let frames = common::read_frames(&mut s, &mut buf, b'Z').await;
    assert_eq!(tags(&frames), b"2TEZ");
    let e = pg_router::protocol::backend::error_fields(&frames[2][5..]).unwrap();
    assert!(e.contains(&(b'C', "2201W")), "{e:?}");
    // In a transaction block the shards get no Sync of their own: the
    // block goes on, and its rows are seen by the gather.
    out.clear();
    fe::query("BEGIN; INSERT INTO g VALUES (0, 'zz')", &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    common::read_until(&mut s, &mut buf, b'Z').await;
    s.write_all(&batch("1", true, true)).await.unwrap();
    let frames = common::read_frames(&mut s, &mut buf, b'Z').await;
    assert_eq!(tags(&frames), b"2TDCZ");
    assert!(frames[2][5..].ends_with(b"zz"), "the block's own row");
    assert_eq!(frames[4][5], b'T', "still in the block");
    out.clear();
    fe::query("ROLLBACK", &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    assert_eq!(common::read_until(&mut s, &mut buf, b'Z').await, b"CZ");
    // A simple-protocol gather (it syncs its shards itself), then a batch
    // whose gather is not its last message: the INSERT after it must still
    // get the batch's Sync, and commit.
    out.clear();
    fe::query("SELECT k FROM g ORDER BY v LIMIT 1", &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    assert_eq!(common::read_until(&mut s, &mut buf, b'Z').await, b"TDCZ");
    let mut out = batch("2", true, true);
    out.truncate(out.len() - 5); // without its Sync
    fe::parse("ins", "INSERT INTO g VALUES ($1::int, 'new')", [], &mut out).unwrap();
    fe::bind(
        "",
        "ins",
        Some(0),
        ["100"],
        |v, o| {
            o.extend_from_slice(v.as_bytes());
            Ok(postgres_protocol::IsNull::No)
        },
        Some(0),
        &mut out,
    )
    .map_err(|_| ())
    .unwrap();
    fe::execute("", 0, &mut out).unwrap();
    fe::sync(&mut out);
    s.write_all(&out).await.unwrap();
    assert_eq!(
        tags(&common::read_frames(&mut s, &mut buf, b'Z').await),
        b"2TDDC12CZ"
    );
    let n: i64 = c
        .query_one("SELECT count(*) FROM g WHERE k = 100", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "committed at the batch's Sync");
    // Every shard connection is idle, none inside a transaction (a Sync
    // skipped without the gather's own would leave one open).
    s.write_all(&batch("2", true, true)).await.unwrap();
    assert_eq!(
        tags(&common::read_frames(&mut s, &mut buf, b'Z').await),
        b"2TDDCZ"
    );
    for shard in &dev.cluster.shards {
        let d = common::connect_direct(shard).await;
        let open: i64 = d
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(open, 0, "no shard connection left in a transaction");
    }
    assert_eq!(buf.len(), 0, "nothing more was sent");
    dev.stop().await;
}

/// The per-connection statement cache is reset (DEALLOCATE ALL past 2,000
/// statements) only when a connection is checked out: a reset queued
/// between a scattered Bind and its Execute would drop the portal (34000)
/// and the statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_cache_reset_never_splits_a_bind_from_its_execute() {
    let dev = common::start(2, 1).await;
    let c = common::connect(&dev).await;
    c.batch_execute("CREATE TABLE t (k int PRIMARY KEY, i int)")
        .await
        .unwrap();
    common::add_table(&dev, "t", "k", "int").await;
    c.batch_execute("INSERT INTO t SELECT g, g FROM generate_series(1, 10) g")
        .await
        .unwrap();
    // Each statement is new, so each one is prepared on both shards: the
    // cache of each connection passes its limit during one of them.
    for n in 0..2010 {
        let sql = format!("SELECT k FROM t WHERE i >= $1 AND {n} >= 0");
        let rows = c
            .query(sql.as_str(), &[&5i32])
            .await
            .unwrap_or_else(|e| panic!("statement {n}: {:?}", e.as_db_error()));
        assert_eq!(rows.len(), 6, "statement {n}");
    }
    dev.stop().await;
}
