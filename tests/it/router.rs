//! End-to-end behaviour of the router against real PostgreSQL shards:
//! fidelity (types, formats, tags, NULLs), SQLSTATE passthrough, DDL
//! fan-out, live catalog reload, transactions, prepared statements across
//! pooled connections, pipelining, COPY split, and refusals.

use std::collections::HashMap;

use futures_util::future::join_all;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::SimpleQueryMessage;

use crate::common;

fn tags(msgs: &[SimpleQueryMessage]) -> Vec<u64> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect()
}

fn rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

const ITEMS_DDL: &str =
    "CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(10,2), qty int, \
     created timestamptz, flag bool, data bytea, u uuid)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fidelity_errors_ddl_and_transactions() {
    let dev = common::start(2, 4).await;
    let c = common::connect(&dev).await;

    // DDL fans out to every shard.
    c.batch_execute(ITEMS_DDL).await.expect("create table");
    for s in &dev.cluster.shards {
        let d = common::connect_direct(s).await;
        let n: i64 = d
            .query_one("SELECT count(*) FROM pg_class WHERE relname = 'items'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "table missing on {}", s.name);
    }

    // DML on a table the catalog does not know: 0A000 with a hint.
    let e = c
        .execute("INSERT INTO items (id, name) VALUES (1, 'a')", &[])
        .await
        .unwrap_err();
    let db = e.as_db_error().expect("db error");
    assert_eq!(db.code(), &SqlState::FEATURE_NOT_SUPPORTED);
    assert!(
        db.hint().unwrap_or("").contains("pg-router meta add-table"),
        "{db:?}"
    );

    // Live add-table: picked up within 1 s, same connection keeps working.
    let took = common::add_table_cli(&dev, "items", "id", "int").await;
    assert!(took.as_millis() < 1000, "catalog reload took {took:?}");

    // Multi-row INSERT split across shards: real command tag.
    let msgs = c
        .simple_query(
            "INSERT INTO items (id, name, price, qty, flag) VALUES \
             (1,'a',1.50,1,true),(2,'b',2.25,2,false),(3,'c',NULL,3,NULL),(4,'it''s',4.00,4,true),\
             (5,'e',5.10,5,true),(6,'f',6.00,6,false),(7,'g',7.70,7,true),(8,'h',8.00,8,true)",
        )
        .await
        .expect("multi-row insert");
    assert_eq!(tags(&msgs), vec![8]);

    // Extended protocol insert with binary parameters.
    let when = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let n = c
        .execute(
            "INSERT INTO items (id, name, qty, created, data) VALUES ($1, $2, $3, $4, $5)",
            &[
                &9i64,
                &Option::<String>::None,
                &9i32,
                &when,
                &vec![0u8, 1, 2, 255],
            ],
        )
        .await
        .expect("insert 9");
    assert_eq!(n, 1);

    // Binary results with the real type OIDs, NULLs preserved.
    let stmt = c
        .prepare("SELECT id, name, price, qty, created, flag, data, u FROM items WHERE id = $1")
        .await
        .unwrap();
    let types: Vec<Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(
        types,
        vec![
            Type::INT8,
            Type::TEXT,
            Type::NUMERIC,
            Type::INT4,
            Type::TIMESTAMPTZ,
            Type::BOOL,
            Type::BYTEA,
            Type::UUID
        ]
    );
    let r = c.query_one(&stmt, &[&9i64]).await.unwrap();
    assert_eq!(r.get::<_, i64>(0), 9);
    assert_eq!(r.get::<_, Option<String>>(1), None);
    assert_eq!(r.get::<_, std::time::SystemTime>(4), when);
    assert_eq!(r.get::<_, Vec<u8>>(6), vec![0u8, 1, 2, 255]);
    let r = c.query_one(&stmt, &[&4i64]).await.unwrap();
    assert_eq!(r.get::<_, &str>(1), "it's");

    // Text results exactly as PostgreSQL renders them.
    let m = c
        .simple_query("SELECT id, name, price, flag FROM items WHERE id = 3")
        .await
        .unwrap();
    assert_eq!(
        rows(&m),
        vec![vec![Some("3".into()), Some("c".into()), None, None]]
    );
    let m = c
        .simple_query("SELECT price FROM items WHERE id = 2")
        .await
        .unwrap();
    assert_eq!(rows(&m), vec![vec![Some("2.25".into())]]);

    // Command tags of UPDATE/DELETE on the fast path and across shards.
    assert_eq!(
        tags(
            &c.simple_query("UPDATE items SET qty = qty + 1 WHERE id = 1")
                .await
                .unwrap()
        ),
        vec![1]
    );
    assert_eq!(
        tags(
            &c.simple_query("UPDATE items SET flag = true WHERE qty > 0")
                .await
                .unwrap()
        ),
        vec![9]
    );
    assert_eq!(
        c.execute("DELETE FROM items WHERE id = $1", &[&8i64])
            .await
            .unwrap(),
        1
    );

    // Scatter-gather aggregates without GROUP BY.
    let m = c
        .simple_query("SELECT count(*), sum(qty), min(id), max(name), sum(price) FROM items")
        .await
        .unwrap();
    assert_eq!(
        rows(&m),
        vec![vec![
            Some("8".into()),
            Some("38".into()),
            Some("1".into()),
            Some("it's".into()),
            Some("26.55".into())
        ]]
    );
    let r = c
        .query_one("SELECT count(*) FROM items WHERE qty > $1", &[&2i32])
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 6);
    // Plain multi-shard rows are concatenated.
    assert_eq!(
        rows(
            &c.simple_query("SELECT id FROM items WHERE qty < 5")
                .await
                .unwrap()
        )
        .len(),
        4
    );

    // Merged at the router: ORDER BY (k-way merge), LIMIT/OFFSET, avg,
    // GROUP BY; both protocols.
    let ids = rows(
        &c.simple_query("SELECT id FROM items ORDER BY id DESC LIMIT 3 OFFSET 1")
            .await
            .unwrap(),
    );
    assert_eq!(
        ids,
        vec![
            vec![Some("7".into())],
            vec![Some("6".into())],
            vec![Some("5".into())]
        ]
    );
    let r = c
        .query(
            "SELECT id FROM items ORDER BY id LIMIT $1 OFFSET $2",
            &[&2i64, &1i64],
        )
        .await
        .unwrap();
    assert_eq!(
        r.iter().map(|x| x.get::<_, i64>(0)).collect::<Vec<_>>(),
        vec![2, 3]
    );
    let avg = rows(&c.simple_query("SELECT avg(qty) FROM items").await.unwrap());
    let direct_avg = rows(
        &c.simple_query("SELECT avg(q) FROM (VALUES (38::numeric / 8)) v(q)")
            .await
            .unwrap(),
    );
    assert_eq!(avg, direct_avg);
    let r = c
        .query(
            "SELECT qty, count(*) FROM items GROUP BY qty HAVING count(*) >= $1 ORDER BY 2 DESC, 1",
            &[&1i64],
        )
        .await
        .unwrap();
    assert_eq!(r.iter().map(|x| x.get::<_, i64>(1)).sum::<i64>(), 8);
    // Expressions over aggregates: finished by PostgreSQL.
    let r = c
        .query_one("SELECT sum(qty) + 1 FROM items", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 39);
    // Still refused, never answered wrongly.
    for q in ["SELECT id, row_number() OVER () FROM items"] {
        let e = c.simple_query(q).await.unwrap_err();
        assert_eq!(
            e.as_db_error().map(|d| d.code()),
            Some(&SqlState::FEATURE_NOT_SUPPORTED),
            "{q}: {e}"
        );
    }

    // SQLSTATE, message and detail of shard errors pass through unchanged.
    let e = c
        .execute("INSERT INTO items (id, name) VALUES (5, 'dup')", &[])
        .await
        .unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code(), &SqlState::UNIQUE_VIOLATION);
    assert_eq!(db.detail(), Some("Key (id)=(5) already exists."));
    // Unparseable statement: 42601, connection stays usable.
    let e = c.simple_query("SELEC 1").await.unwrap_err();
    assert_eq!(
        e.as_db_error().map(|d| d.code()),
        Some(&SqlState::SYNTAX_ERROR)
    );
    let e = c
        .simple_query("SELECT * FROM items WHERE id = 'abc'")
        .await
        .unwrap_err();
    assert_eq!(
        e.as_db_error().map(|d| d.code()),
        Some(&SqlState::INVALID_TEXT_REPRESENTATION)
    );
    assert_eq!(
        rows(&c.simple_query("SELECT 1").await.unwrap()),
        vec![vec![Some("1".into())]]
    );

    // Catalog queries go to one shard; version() works.
    let v: String = c.query_one("SELECT version()", &[]).await.unwrap().get(0);
    assert!(v.starts_with("PostgreSQL"));

    // Transactions: rollback across shards, commit across shards, failed block.
    c.batch_execute("BEGIN").await.unwrap();
    c.execute("INSERT INTO items (id, name) VALUES (100, 'x')", &[])
        .await
        .unwrap();
    c.execute("INSERT INTO items (id, name) VALUES (101, 'y')", &[])
        .await
        .unwrap();
    c.batch_execute("ROLLBACK").await.unwrap();
    let r = c
        .query_one("SELECT count(*) FROM items WHERE id >= 100", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 0);
    c.batch_execute(
        "BEGIN; INSERT INTO items (id) VALUES (100); INSERT INTO items (id) VALUES (101); COMMIT",
    )
    .await
    .unwrap();
    let r = c
        .query_one("SELECT count(*) FROM items WHERE id >= 100", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 2);
    c.batch_execute("BEGIN").await.unwrap();
    assert!(c.simple_query("SELECT 1/0").await.is_err());
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(
        e.as_db_error().map(|d| d.code()),
        Some(&SqlState::IN_FAILED_SQL_TRANSACTION)
    );
    c.batch_execute("COMMIT").await.unwrap();
    // An implicit transaction (multi-statement query) is atomic on failure.
    assert!(c
        .batch_execute("INSERT INTO items (id) VALUES (200); INSERT INTO items (id) VALUES (1)")
        .await
        .is_err());
    let r = c
        .query_one("SELECT count(*) FROM items WHERE id = 200", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 0);

    // Every row sits on the shard its vindex names.
    let routing = dev.router.state.routing();
    let t = routing.catalog.table("items").unwrap();
    let ks = routing.catalog.keyspace_of(t).unwrap();
    let mut total = 0;
    for s in &dev.cluster.shards {
        let d = common::connect_direct(s).await;
        for row in d.query("SELECT id FROM items", &[]).await.unwrap() {
            let id: i64 = row.get(0);
            let ksid = t.vindex.keyspace_id(&pg_router::vindex::KeyValue::Int(id));
            assert_eq!(
                ks.routing.shard_for(ksid),
                s.name,
                "row {id} on the wrong shard"
            );
            total += 1;
        }
    }
    assert_eq!(total, 10);
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_pipelining_copy_and_settings() {
    let dev = common::start(2, 2).await;
    let c = common::connect(&dev).await;
    c.batch_execute("CREATE TABLE kv (k int PRIMARY KEY, v text)")
        .await
        .unwrap();
    common::add_table(&dev, "kv", "k", "int").await;

    // COPY FROM STDIN split by key; COPY TO STDOUT concatenates.
    let mut data = String::new();
    for k in 1..=1000 {
        data.push_str(&format!("{k}\tvalue {k}\n"));
    }
    let sink = c.copy_in("COPY kv (k, v) FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    use futures_util::SinkExt;
    sink.send(bytes::Bytes::from(data.into_bytes()))
        .await
        .unwrap();
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 1000);
    let mut per_shard = HashMap::new();
    for s in &dev.cluster.shards {
        let d = common::connect_direct(s).await;
        let n: i64 = d
            .query_one("SELECT count(*) FROM kv", &[])
            .await
            .unwrap()
            .get(0);
        per_shard.insert(s.name.clone(), n);
    }
    assert_eq!(per_shard.values().sum::<i64>(), 1000);
    assert!(per_shard.values().all(|&n| n > 300), "{per_shard:?}");
    let m = c.simple_query("SELECT count(*) FROM kv").await.unwrap();
    assert_eq!(rows(&m), vec![vec![Some("1000".into())]]);
    let out = c
        .copy_out("COPY kv TO STDOUT WITH (FORMAT csv, HEADER)")
        .await
        .unwrap();
    futures_util::pin_mut!(out);
    use futures_util::StreamExt;
    let mut text = Vec::new();
    while let Some(chunk) = out.next().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(text).unwrap();
    assert_eq!(text.lines().count(), 1001);
    assert_eq!(text.lines().filter(|l| *l == "k,v").count(), 1);

    // CSV COPY with quoted fields, and a row whose key is bad → error, no rows.
    let sink = c
        .copy_in("COPY kv (v, k) FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"\"a,\"\"b\",2001\nplain,2002\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    let r = c
        .query_one("SELECT v FROM kv WHERE k = 2001", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, &str>(0), "a,\"b");

    // Prepared statements across pooled connections: 8 clients share 2
    // connections per shard; each prepares once and executes many times.
    let mut tasks = Vec::new();
    for client_no in 0..8i32 {
        let dsn = common::router_dsn(&dev);
        tasks.push(tokio::spawn(async move {
            let c = common::connect_dsn(&dsn).await;
            let st = c.prepare("SELECT v FROM kv WHERE k = $1").await.unwrap();
            let up = c
                .prepare("UPDATE kv SET v = $2 WHERE k = $1")
                .await
                .unwrap();
            for i in 0..50 {
                let k = 1 + (client_no * 100 + i) % 1000;
                let r = c.query_one(&st, &[&k]).await.unwrap();
                assert!(
                    r.get::<_, &str>(0).starts_with("value")
                        || r.get::<_, &str>(0).starts_with("c")
                );
                assert_eq!(
                    c.execute(&up, &[&k, &format!("c{client_no}")])
                        .await
                        .unwrap(),
                    1
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    // Pipelining: many queries in flight on one connection.
    let st = c.prepare("SELECT k, v FROM kv WHERE k = $1").await.unwrap();
    let keys: Vec<i32> = (1..=40).collect();
    let params: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 1]> =
        keys.iter().map(|k| [k as _]).collect();
    let futs = params.iter().map(|p| c.query_one(&st, p));
    let results = join_all(futs).await;
    for (k, r) in keys.iter().zip(results) {
        assert_eq!(r.unwrap().get::<_, i32>(0), *k);
    }

    // Session settings follow the client across pooled connections.
    c.batch_execute("SET application_name = 'router-test'")
        .await
        .unwrap();
    for _ in 0..6 {
        let r = c.query_one("SHOW application_name", &[]).await.unwrap();
        assert_eq!(r.get::<_, &str>(0), "router-test");
        let _ = c
            .query_one("SELECT v FROM kv WHERE k = 7", &[])
            .await
            .unwrap();
    }

    flush_batches_then_sync(&dev, &c).await;
    dev.stop().await;
}

/// Bind of statement `stmt` to the unnamed portal with text parameters,
/// then Execute.
fn bind_execute(out: &mut bytes::BytesMut, stmt: &str, params: &[String]) {
    use postgres_protocol::message::frontend as fe;
    fe::bind(
        "",
        stmt,
        Some(0),
        params,
        |v, o| {
            o.extend_from_slice(v.as_bytes());
            Ok(postgres_protocol::IsNull::No)
        },
        Some(0),
        out,
    )
    .map_err(|_| ())
    .unwrap();
    fe::execute("", 0, out).unwrap();
}

/// An extended-protocol pipeline split by Flush across two shards, then
/// one Sync (a raw client: tokio-postgres always ends with Sync): the Sync
/// must reach both shards' connections, so both INSERTs commit and the
/// connections go back to the pool clean.
async fn flush_batches_then_sync(dev: &pg_router::dev::DevCluster, c: &tokio_postgres::Client) {
    use postgres_protocol::message::frontend as fe;
    use tokio::io::AsyncWriteExt;
    let routing = dev.router.state.routing();
    let t = routing.catalog.table("kv").unwrap();
    let ks = routing.catalog.keyspace_of(t).unwrap();
    let shard_of = |k: i64| {
        ks.routing
            .shard_for(t.vindex.keyspace_id(&pg_router::vindex::KeyValue::Int(k)))
            .to_string()
    };
    let a = 5001i64;
    let b = (5002..6000).find(|&k| shard_of(k) != shard_of(a)).unwrap();
    let (mut s, mut buf, _) = common::raw_session(dev.router.addr).await;
    let mut out = bytes::BytesMut::new();
    let bind = |k: i64, out: &mut bytes::BytesMut| {
        bind_execute(out, "ins", &[k.to_string()]);
        fe::flush(out);
    };
    out.clear();
    fe::parse(
        "ins",
        "INSERT INTO kv (k, v) VALUES ($1::int, 'flush')",
        [],
        &mut out,
    )
    .unwrap();
    bind(a, &mut out);
    s.write_all(&out).await.unwrap();
    assert_eq!(common::read_until(&mut s, &mut buf, b'C').await, b"12C");
    out.clear();
    bind(b, &mut out);
    s.write_all(&out).await.unwrap();
    assert_eq!(common::read_until(&mut s, &mut buf, b'C').await, b"2C");
    out.clear();
    fe::sync(&mut out);
    s.write_all(&out).await.unwrap();
    assert_eq!(common::read_until(&mut s, &mut buf, b'Z').await, b"Z");
    // Both rows are committed on their shards (visible to another client).
    for k in [a, b] {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM kv WHERE k = $1 AND v = 'flush'",
                &[&(k as i32)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "key {k} on {} committed at Sync", shard_of(k));
    }
    // Everything up to Sync is one transaction: an error in the second
    // Flush batch (duplicate key on the other shard) undoes the first.
    let a2 = (6000..7000).find(|&k| shard_of(k) == shard_of(a)).unwrap();
    out.clear();
    bind(a2, &mut out);
    s.write_all(&out).await.unwrap();
    assert_eq!(common::read_until(&mut s, &mut buf, b'C').await, b"2C");
    out.clear();
    bind(b, &mut out);
    fe::sync(&mut out);
    s.write_all(&out).await.unwrap();
    assert_eq!(common::read_until(&mut s, &mut buf, b'Z').await, b"2EZ");
    assert_eq!(buf.len(), 0);
    let count = |k: i64| async move {
        c.query_one("SELECT count(*) FROM kv WHERE k = $1", &[&(k as i32)])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(count(a2).await, 0, "rolled back with the failed batch");
    // BEGIN after a Flush batch's write turns the implicit transaction
    // into a block (no warning); COMMIT in the same pipeline commits both.
    let b2 = (7000..8000).find(|&k| shard_of(k) != shard_of(a)).unwrap();
    out.clear();
    bind(a2, &mut out);
    s.write_all(&out).await.unwrap();
    assert_eq!(common::read_until(&mut s, &mut buf, b'C').await, b"2C");
    out.clear();
    for (name, sql) in [("b", "BEGIN"), ("c", "COMMIT")] {
        fe::parse(name, sql, [], &mut out).unwrap();
    }
    let stmt = |name: &str, out: &mut bytes::BytesMut| bind_execute(out, name, &[]);
    stmt("b", &mut out);
    bind(b2, &mut out);
    stmt("c", &mut out);
    fe::sync(&mut out);
    s.write_all(&out).await.unwrap();
    let tags = common::read_until(&mut s, &mut buf, b'Z').await;
    assert_eq!(tags, b"112C2C2CZ", "no notice, every step completes");
    assert_eq!(count(a2).await + count(b2).await, 2);
    out.clear();
    fe::query("SELECT 1", &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    assert_eq!(common::read_until(&mut s, &mut buf, b'Z').await, b"TDCZ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_works_through_the_router() {
    let dev = common::start(2, 4).await;
    let mut args: Vec<String> = common::conn_args(&dev);
    args.extend(
        ["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c"]
            .iter()
            .map(|s| s.to_string()),
    );
    let run = |sql: &str| {
        let mut a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        a.push(sql);
        a.push("postgres");
        common::run_pg_tool(&dev, "psql", &a)
    };
    let (ok, out, err) = run("SELECT 1 AS a, NULL AS b, 'x'::text AS c");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1||x");
    let (ok, _, err) = run("CREATE TABLE pt (id int PRIMARY KEY, note text)");
    assert!(ok, "{err}");
    let (ok, out, err) = run("\\d pt");
    assert!(ok, "{err}");
    assert!(out.contains("note"), "{out}");
    let (ok, _, err) = run("SELECT * FROM pt WHERE id = 1");
    assert!(!ok);
    assert!(err.contains("not declared"), "{err}");
    dev.stop().await;
}
