//! Simple-protocol statements run on their shard as prepared statements of
//! their normalized text (`backend.prepare_simple_queries`): the client
//! must get exactly what PostgreSQL answers to the text it sent.

use bytes::BytesMut;
use pg_router::protocol::backend::error_fields;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common;

/// Statements keyed to the one shard, literals of every kind, texts where a
/// parameter cannot replace a literal, and errors before and at execution.
const STATEMENTS: &[&str] = &[
    "SELECT k, i, n, s FROM t WHERE k = 1",
    "SELECT k, 1, 2147483647, 2147483648, 9223372036854775807, 9223372036854775808, 1.50, 1e3, .5 FROM t WHERE k = 1",
    "SELECT k, -2147483648, -9223372036854775808, - 7 FROM t WHERE k = 1",
    "SELECT pg_typeof(2147483648), pg_typeof(1.5), pg_typeof(7), pg_typeof('x') FROM t WHERE k = 1",
    "SELECT k, 'x', $$y$$ FROM t WHERE k = 1",
    "SELECT k FROM t WHERE k = 1 AND s = 'one'",
    "SELECT k FROM t WHERE k = 1 AND s = 'it''s'",
    "SELECT k, d + 1 FROM t WHERE k = 1 AND d = '2020-01-01'",
    "SELECT k, i::numeric(10,2) FROM t WHERE k = 2",
    "SELECT k, interval '1 day', date '2020-01-02' FROM t WHERE k = 2",
    "SELECT k FROM t WHERE k = 2 ORDER BY 1",
    "SELECT k, count(*) FROM t WHERE k = 2 GROUP BY 1",
    "SELECT k, s FROM t WHERE k = 2 AND i = '20'",
    "SELECT k FROM t WHERE k = 2 AND nosuch = 1",
    "  /* lead é */ SELECT k FROM t WHERE k = 123456 AND i = 1 AND nosuch = 1",
    "SELECT k, s FROM t WHERE k = 2 AND i = 'abc'",
    "SELECT k FROM t WHERE k = 2 AND i = 1/0",
    "SELECT k FROM t WHERE k = 2 AND i = 5000000000",
    "SELECT k FROM t WHERE k = 2 LIMIT 1",
    "SELECT i % 10, count(*) FROM t WHERE k = 1 GROUP BY i % 10 ORDER BY i % 10",
    "SELECT i % 010, count(*) FROM t WHERE k = 1 GROUP BY i % 10",
    "SELECT i % 10 FROM t WHERE k = 1 GROUP BY i % 5",
    "UPDATE t SET i = 30 WHERE k = 3",
    "INSERT INTO t (k, i, s) VALUES (100, 5, 'new') ON CONFLICT (k) DO UPDATE SET i = excluded.i RETURNING k, i, s",
    "INSERT INTO t (k, i) VALUES (1, 1)",
    "DELETE FROM t WHERE k = 999",
    "SELECT 1",
    "SELECT 'a' || 'b'",
];

/// Statements first run inside a block (their shape never ran outside
/// one): equal literals must stay equal expressions where GROUP BY matches
/// the select list.
const IN_BLOCK_FIRST: &[&str] = &[
    "SELECT i % 7, count(*) FROM t WHERE k = 2 AND i > 0 GROUP BY i % 7 ORDER BY i % 7",
    "SELECT i % 07 FROM t WHERE k = 2 GROUP BY i % 7",
    "SELECT i % 7 FROM t WHERE k = 2 GROUP BY i % 6",
];

/// Sends one Query and returns its response frames, ReadyForQuery last.
async fn query(s: &mut TcpStream, buf: &mut BytesMut, sql: &str) -> Vec<BytesMut> {
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::query(sql, &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    common::read_frames(s, buf, b'Z').await
}

/// The fields a client shows of an ErrorResponse (severity, SQLSTATE,
/// message, detail, hint, position, context); file, line and routine name
/// the server's code and differ between a literal's and a parameter's
/// error.
fn shown(frame: &[u8]) -> Vec<(u8, String)> {
    let mut f: Vec<(u8, String)> = error_fields(&frame[5..])
        .unwrap()
        .into_iter()
        .filter(|(c, _)| b"SVCMDHPW".contains(c))
        .map(|(c, v)| (c, v.to_string()))
        .collect();
    f.sort();
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_queries_answer_as_postgresql_does() {
    let dev = common::start(1, 1).await;
    let c = common::connect(&dev).await;
    c.batch_execute("CREATE TABLE t (k int PRIMARY KEY, i int, n numeric, s text, d date)")
        .await
        .unwrap();
    common::add_table(&dev, "t", "k", "int").await;
    c.batch_execute(
        "INSERT INTO t VALUES (1, 10, 1.5, 'one', '2020-01-01'), (2, 20, 2.5, 'it''s', '2020-01-02'),
                              (3, 30, 3.5, 'three', NULL)",
    )
    .await
    .unwrap();
    let shard = &dev.cluster.shards[0];
    let direct_addr = format!("{}:{}", shard.host, shard.port).parse().unwrap();
    let (mut r, mut rbuf, _) = common::raw_session(dev.router.addr).await;
    let (mut d, mut dbuf, _) = common::raw_session(direct_addr).await;

    // Outside a block every answer is PostgreSQL's, byte for byte (errors
    // before execution come from the text run as written). Twice, the
    // second time over statements already prepared, and a third time past
    // the five custom plans after which a generic plan may be used.
    for round in 0..7 {
        for sql in STATEMENTS {
            if round > 1 && !sql.contains("k = 1 AND s") {
                continue;
            }
            let want = query(&mut d, &mut dbuf, sql).await;
            let got = query(&mut r, &mut rbuf, sql).await;
            assert_eq!(got, want, "round {round}: {sql}");
        }
    }

    // Inside a block: rows and command tags byte for byte, errors as a
    // client shows them (position in the client's text, no parameter
    // context).
    for sql in IN_BLOCK_FIRST.iter().chain(STATEMENTS) {
        // One after the other: both may lock the same row.
        let mut answers = Vec::new();
        for (s, b) in [(&mut d, &mut dbuf), (&mut r, &mut rbuf)] {
            query(s, b, "BEGIN").await;
            answers.push(query(s, b, sql).await);
            query(s, b, "ROLLBACK").await;
        }
        let (want, got) = (&answers[0], &answers[1]);
        let tags = |f: &[BytesMut]| f.iter().map(|f| f[0]).collect::<Vec<u8>>();
        assert_eq!(tags(got), tags(want), "in a block: {sql}");
        for (g, w) in got.iter().zip(want) {
            if w[0] == b'E' {
                assert_eq!(shown(g), shown(w), "in a block: {sql}");
            } else {
                assert_eq!(g, w, "in a block: {sql}");
            }
        }
    }

    // The statements did reach the shard as prepared statements.
    let direct = common::connect_direct(shard).await;
    let prepared_seen = |rows: Vec<tokio_postgres::Row>, text: &str| {
        rows.iter()
            .any(|r| r.get::<_, Option<String>>(0).as_deref() == Some(text))
    };
    let last = "SELECT k FROM t WHERE k = $1 AND i = $2";
    query(&mut r, &mut rbuf, "SELECT k FROM t WHERE k = 3 AND i = 4").await;
    let activity = "SELECT query FROM pg_stat_activity WHERE backend_type = 'client backend'";
    let rows = direct.query(activity, &[]).await.unwrap();
    assert!(prepared_seen(rows, last), "the shard ran no `{last}`");

    // DISCARD ALL deallocated them on that connection: prepared again.
    query(&mut r, &mut rbuf, "DISCARD ALL").await;
    let again = query(&mut r, &mut rbuf, "SELECT k FROM t WHERE k = 3 AND i = 6").await;
    let tags: Vec<u8> = again.iter().map(|f| f[0]).collect();
    assert_eq!(tags, b"TCZ", "after DISCARD ALL");

    // Turned off (SIGHUP reload): sent as written.
    let cfg = pg_router::config::RouterConfig::parse(&format!(
        "catalog = \"{}\"\n[auth]\nmethod = \"trust\"\n[backend]\npool_size = 1\nprepare_simple_queries = false\n",
        dev.catalog_dsn()
    ))
    .unwrap();
    dev.router.state.reload(&cfg, &cfg).unwrap();
    let written = "SELECT k FROM t WHERE k = 3 AND i = 5";
    query(&mut r, &mut rbuf, written).await;
    let rows = direct.query(activity, &[]).await.unwrap();
    assert!(prepared_seen(rows, written), "the shard ran no `{written}`");
    dev.stop().await;
}

/// The rows of a simple-protocol query as text cells.
async fn text_rows(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let msgs = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    msgs.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

/// The last statement text of every client backend of `shard` (the
/// router's connections there).
async fn shard_statements(shard: &tokio_postgres::Client) -> Vec<String> {
    shard
        .query(
            "SELECT query FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r.get::<_, Option<String>>(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_scatter_strings_are_parameters_where_they_can_be() {
    let dev = common::start(2, 1).await;
    let c = common::connect(&dev).await;
    c.batch_execute("CREATE TABLE t (k int PRIMARY KEY, i int, s text)")
        .await
        .unwrap();
    common::add_table(&dev, "t", "k", "int").await;
    c.batch_execute(
        "INSERT INTO t VALUES (1, 10, 'apple'), (2, 20, 'banana'), (3, 30, 'cherry'), (4, 40, 'date'), (5, 50, 'banana')",
    )
    .await
    .unwrap();
    let shard0 = common::connect_direct(&dev.cluster.shards[0]).await;
    let rows = |v: &[&[&str]]| -> Vec<Vec<Option<String>>> {
        v.iter()
            .map(|r| r.iter().map(|c| Some(c.to_string())).collect())
            .collect()
    };

    // A string the shards can infer (text): a parameter of a statement the
    // shards keep prepared.
    let sql = "SELECT k, s FROM t WHERE s > 'b' ORDER BY k";
    let want = rows(&[
        &["2", "banana"],
        &["3", "cherry"],
        &["4", "date"],
        &["5", "banana"],
    ]);
    assert_eq!(text_rows(&c, sql).await, want);
    let ran = shard_statements(&shard0).await;
    assert!(
        ran.iter().any(|q| q.contains("s > $1")),
        "shard0 ran no prepared form: {ran:?}"
    );
    // In a block, once verified: prepared again, the block intact.
    c.batch_execute("BEGIN").await.unwrap();
    assert_eq!(text_rows(&c, sql).await, want);
    c.batch_execute("COMMIT").await.unwrap();

    // A parameter whose type cannot be inferred (`$1 IS NULL`: 42P18 at
    // Parse) and
    // equal strings that are two parameters (42803: GROUP BY no longer
    // matches the select list): run as written, then never prepared.
    for _ in 0..2 {
        let tagged = text_rows(&c, "SELECT k, 'x' IS NULL FROM t WHERE k < 3 ORDER BY k").await;
        assert_eq!(tagged, rows(&[&["1", "f"], &["2", "f"]]));
        let ran = shard_statements(&shard0).await;
        assert!(
            ran.iter().any(|q| q.contains("'x' IS NULL")),
            "shard0 did not run the text as written: {ran:?}"
        );
        let grouped = text_rows(
            &c,
            "SELECT s || '!' AS e, count(*) FROM t GROUP BY s || '!' ORDER BY e",
        )
        .await;
        assert_eq!(
            grouped,
            rows(&[
                &["apple!", "1"],
                &["banana!", "2"],
                &["cherry!", "1"],
                &["date!", "1"]
            ])
        );
        let ran = shard_statements(&shard0).await;
        assert!(
            ran.iter().any(|q| q.contains("s || '!'")),
            "shard0 did not run the text as written: {ran:?}"
        );
    }

    // A value that does not fit the inferred type fails at Bind; the text
    // runs as written so the client gets PostgreSQL's own error, with its
    // position.
    let err = c
        .simple_query("SELECT k FROM t WHERE i = 'abc' ORDER BY k")
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "22P02", "{db:?}");
    assert_eq!(
        db.message(),
        "invalid input syntax for type integer: \"abc\""
    );
    assert!(db.position().is_some(), "no position: {db:?}");

    // First run inside a block: not prepared (a failure would abort the
    // block), so the block stays usable.
    c.batch_execute("BEGIN").await.unwrap();
    let first = text_rows(
        &c,
        "SELECT k FROM t WHERE 'y' IS NOT NULL AND i < 20 ORDER BY k",
    )
    .await;
    assert_eq!(first, rows(&[&["1"]]));
    assert_eq!(
        text_rows(&c, "SELECT count(*) FROM t").await,
        rows(&[&["5"]])
    );
    c.batch_execute("COMMIT").await.unwrap();
    dev.stop().await;
}
