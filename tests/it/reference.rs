//! Reference tables end to end: declared with the `pg-router meta` CLI,
//! written through the router on every shard (both protocols, inside and
//! outside transaction blocks), read from one shard, and joined with a
//! sharded table on the shards, keyed and scattered.

use std::time::{Duration, Instant};

use pg_router::dev::DevCluster;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::common;

/// Waits until the router's catalog says `is_reference(table) == want`.
async fn wait_reference(dev: &DevCluster, table: &str, want: bool) {
    let t0 = Instant::now();
    while dev.router.state.routing().catalog.is_reference(table) != want {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "router did not pick up reference table {table} = {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `countries` rows, ordered by code.
async fn countries(c: &Client) -> Vec<(String, Option<String>)> {
    c.query("SELECT code, name FROM countries ORDER BY code", &[])
        .await
        .expect("read countries")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Asserts that every shard holds exactly `want`.
async fn assert_every_shard(dev: &DevCluster, want: &[(&str, &str)]) {
    let want: Vec<(String, Option<String>)> = want
        .iter()
        .map(|(c, n)| (c.to_string(), Some(n.to_string())))
        .collect();
    for shard in &dev.cluster.shards {
        let d = common::connect_direct(shard).await;
        assert_eq!(countries(&d).await, want, "shard {}", shard.name);
    }
}

/// The SQLSTATE of a failed statement.
fn code(e: &tokio_postgres::Error) -> SqlState {
    e.code()
        .cloned()
        .unwrap_or_else(|| panic!("no SQLSTATE: {e}"))
}

fn rows_affected(m: &[SimpleQueryMessage]) -> Vec<u64> {
    m.iter()
        .filter_map(|x| match x {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect()
}

fn text_rows(m: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    m.iter()
        .filter_map(|x| match x {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_table_writes_reach_every_shard_and_join_locally() {
    let dev = common::start(2, 4).await;
    let c = common::connect(&dev).await;
    // DDL goes to every shard.
    c.batch_execute("CREATE TABLE countries (code text PRIMARY KEY, name text)")
        .await
        .expect("create countries");
    let e = c
        .simple_query("SELECT * FROM countries")
        .await
        .expect_err("undeclared");
    assert_eq!(code(&e), SqlState::FEATURE_NOT_SUPPORTED);
    let hint = e.as_db_error().and_then(|d| d.hint()).unwrap_or_default();
    assert!(
        hint.contains("add-reference-table --table countries"),
        "{hint}"
    );

    let out = common::meta(&dev, &["add-reference-table", "--table", "countries"]);
    assert_eq!(out, "reference table countries: declared\n");
    wait_reference(&dev, "countries", true).await;
    let shown = common::meta(&dev, &["show"]);
    assert!(
        shown.contains("reference tables:\n  countries\n"),
        "{shown}"
    );

    // Writes: simple protocol, extended protocol, RETURNING; the command
    // tag is one shard's (not the sum over shards).
    let m = c
        .simple_query(
            "INSERT INTO countries (code, name) VALUES ('fr', 'France'), ('de', 'Germany'), ('jp', 'Japan')",
        )
        .await
        .expect("insert");
    assert_eq!(rows_affected(&m), [3]);
    let n = c
        .execute("INSERT INTO countries VALUES ($1, $2)", &[&"it", &"Italy"])
        .await
        .expect("insert, extended");
    assert_eq!(n, 1);
    let n = c
        .execute(
            "UPDATE countries SET name = upper(name) WHERE code <> $1",
            &[&"jp"],
        )
        .await
        .expect("update");
    assert_eq!(n, 3);
    let m = c
        .simple_query("DELETE FROM countries WHERE code = 'de'")
        .await
        .expect("delete");
    assert_eq!(rows_affected(&m), [1]);
    let r = c
        .query(
            "UPDATE countries SET name = name || '!' WHERE code = 'fr' RETURNING name",
            &[],
        )
        .await
        .expect("update returning");
    let names: Vec<String> = r.iter().map(|r| r.get(0)).collect();
    assert_eq!(names, ["FRANCE!"]);
    // Transaction blocks: a rollback undoes the write on every shard, a
    // commit keeps it on every shard.
    c.batch_execute("BEGIN; INSERT INTO countries VALUES ('es', 'Spain'); ROLLBACK")
        .await
        .expect("rolled back");
    c.batch_execute("BEGIN").await.expect("begin");
    c.execute(
        "INSERT INTO countries (code, name) VALUES ($1, $2)",
        &[&"nl", &"Netherlands"],
    )
    .await
    .expect("insert in a block");
    c.batch_execute("COMMIT").await.expect("commit");
    let want = [
        ("fr", "FRANCE!"),
        ("it", "ITALY"),
        ("jp", "Japan"),
        ("nl", "Netherlands"),
    ];
    assert_every_shard(&dev, &want).await;
    // A constraint violation fails the statement and changes no copy.
    let e = c
        .simple_query("INSERT INTO countries VALUES ('zz', 'Z'), ('fr', 'again')")
        .await
        .expect_err("duplicate key");
    assert_eq!(code(&e), SqlState::UNIQUE_VIOLATION);
    assert_every_shard(&dev, &want).await;

    // Reads go to one shard, both protocols.
    assert_eq!(countries(&c).await.len(), 4);
    let m = c
        .simple_query("SELECT count(*) FROM countries")
        .await
        .expect("count");
    assert_eq!(text_rows(&m), [[Some("4".to_string())]]);
    let explain = text_rows(
        &c.simple_query("EXPLAIN (ROUTER) UPDATE countries SET name = 'x'")
            .await
            .expect("explain"),
    );
    assert!(
        explain[0][0].as_deref().is_some_and(
            |l| l.contains("Broadcast write to reference table countries: all 2 shard(s)")
        ),
        "{explain:?}"
    );

    // A sharded table joined with the reference table.
    c.batch_execute("CREATE TABLE users (id bigint PRIMARY KEY, country text, name text)")
        .await
        .expect("create users");
    common::add_table(&dev, "users", "id", "int").await;
    let codes = ["fr", "it", "jp", "nl", "xx"];
    let values: Vec<String> = (1..=20)
        .map(|i| format!("({i}, '{}', 'u{i}')", codes[i % 5]))
        .collect();
    c.batch_execute(&format!(
        "INSERT INTO users (id, country, name) VALUES {}",
        values.join(", ")
    ))
    .await
    .expect("insert users");
    for shard in &dev.cluster.shards {
        let d = common::connect_direct(shard).await;
        let n: i64 = d
            .query_one("SELECT count(*) FROM users", &[])
            .await
            .expect("count users")
            .get(0);
        assert!(n > 0 && n < 20, "shard {} has {n} users", shard.name);
    }
    let name_of = |code: &str| want.iter().find(|w| w.0 == code).map(|w| w.1.to_string());

    // Keyed: one shard, joined with that shard's copy.
    for id in [1i64, 7, 10, 18] {
        let r = c
            .query(
                "SELECT u.name, c.name FROM users u LEFT JOIN countries c ON c.code = u.country WHERE u.id = $1",
                &[&id],
            )
            .await
            .expect("keyed join");
        let got: Vec<(String, Option<String>)> = r.iter().map(|r| (r.get(0), r.get(1))).collect();
        let want_row = (format!("u{id}"), name_of(codes[id as usize % 5]));
        assert_eq!(got, vec![want_row], "id {id}");
    }
    let m = c
        .simple_query(
            "SELECT c.name FROM users u JOIN countries c ON c.code = u.country WHERE u.id = 3",
        )
        .await
        .expect("keyed join, simple");
    assert_eq!(text_rows(&m), [[name_of(codes[3])]]);

    // Scattered: every shard joins its users with its copy; merged.
    let r = c
        .query(
            "SELECT u.id, c.name FROM users u JOIN countries c ON c.code = u.country ORDER BY u.id",
            &[],
        )
        .await
        .expect("scattered join");
    let got: Vec<(i64, String)> = r.iter().map(|r| (r.get(0), r.get(1))).collect();
    let expected: Vec<(i64, String)> = (1..=20i64)
        .filter_map(|i| name_of(codes[i as usize % 5]).map(|n| (i, n)))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(got.len(), 16);
    let m = c
        .simple_query(
            "SELECT c.name, count(*) FROM users u JOIN countries c ON c.code = u.country GROUP BY c.name ORDER BY c.name",
        )
        .await
        .expect("scattered aggregate");
    let mut by_name: Vec<(String, String)> = want
        .iter()
        .map(|(_, n)| (n.to_string(), "4".to_string()))
        .collect();
    by_name.sort();
    let got: Vec<(String, String)> = text_rows(&m)
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap_or_default(),
                r[1].clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(got, by_name);
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM users u LEFT JOIN countries c ON c.code = u.country",
            &[],
        )
        .await
        .expect("left join keeping users")
        .get(0);
    assert_eq!(n, 20);
    // Refused instead of wrong: unmatched countries would come from every
    // shard; a reference write cannot read a sharded table.
    let e = c
        .simple_query("SELECT * FROM countries c LEFT JOIN users u ON u.country = c.code")
        .await
        .expect_err("outer join keeping countries");
    assert_eq!(code(&e), SqlState::FEATURE_NOT_SUPPORTED);
    let e = c
        .simple_query("INSERT INTO countries (code) SELECT country FROM users")
        .await
        .expect_err("reference write reading a sharded table");
    assert_eq!(code(&e), SqlState::FEATURE_NOT_SUPPORTED);
    assert_every_shard(&dev, &want).await;

    // A write failing on one copy changes no copy (one distributed
    // transaction), in both protocols.
    let last = dev.cluster.shards.last().expect("shards");
    common::connect_direct(last)
        .await
        .batch_execute("ALTER TABLE countries ADD CONSTRAINT no_zz CHECK (code <> 'zz')")
        .await
        .unwrap();
    let e = c
        .simple_query("INSERT INTO countries (code, name) VALUES ('zz', 'Nowhere')")
        .await
        .expect_err("check fails on the last shard");
    assert_eq!(code(&e), SqlState::CHECK_VIOLATION);
    let e = c
        .execute(
            "INSERT INTO countries (code, name) VALUES ($1, $2)",
            &[&"zz", &"Nowhere"],
        )
        .await
        .expect_err("check fails on the last shard");
    assert_eq!(code(&e), SqlState::CHECK_VIOLATION);
    assert_every_shard(&dev, &want).await;

    // Undeclared again: refused; the copies stay.
    let out = common::meta(&dev, &["drop-reference-table", "--table", "countries"]);
    assert!(out.contains("dropped"), "{out}");
    wait_reference(&dev, "countries", false).await;
    let e = c
        .simple_query("SELECT * FROM countries")
        .await
        .expect_err("undeclared again");
    assert_eq!(code(&e), SqlState::FEATURE_NOT_SUPPORTED);
    assert_every_shard(&dev, &want).await;
    dev.stop().await;
}
