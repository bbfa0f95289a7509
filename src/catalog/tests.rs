//! Catalog tests against a real throwaway PostgreSQL server.

use std::time::{Duration, Instant};

use clap::Parser;
use tokio::sync::mpsc;

use super::test_pg::TestPg;
use super::*;
use crate::topology::KeyRange;
use crate::vindex::{KeyType, VindexKind};

fn shard(name: &str, port: u16) -> ShardInfo {
    ShardInfo {
        name: name.to_string(),
        host: "127.0.0.1".to_string(),
        port,
        dbname: "postgres".to_string(),
        user: None,
    }
}

fn two_shards() -> Vec<ShardInfo> {
    vec![shard("shard0", 5433), shard("shard1", 5434)]
}

/// Waits up to `within` for a catalog satisfying `pred`; returns it and the
/// time it took.
async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<Catalog>,
    within: Duration,
    pred: impl Fn(&Catalog) -> bool,
) -> Option<(Catalog, Duration)> {
    let t0 = Instant::now();
    loop {
        let left = within.checked_sub(t0.elapsed())?;
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(c)) if pred(&c) => return Some((c, t0.elapsed())),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_and_serialized() {
    let pg = TestPg::start();
    let (a, b) = (pg.connect().await, pg.connect().await);
    // Two concurrent migrators: the advisory lock lets exactly one apply
    // every version.
    let (ra, rb) = tokio::join!(migrate(&a), migrate(&b));
    let mut applied = [ra.expect("migrate a"), rb.expect("migrate b")];
    applied.sort();
    let all: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(applied, [vec![], all]);
    assert_eq!(migrate(&a).await.expect("third migrate"), Vec::<i32>::new());
    let n: i64 = a
        .query_one("select count(*) from pgrouter.schema_migrations", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, MIGRATIONS.len() as i64);
    // An empty, migrated catalog loads.
    let c = load(&a).await.expect("load empty");
    assert!(c.keyspaces.is_empty() && c.tables.is_empty() && c.shards.is_empty());
    assert!(c.reference_tables.is_empty() && c.lookup_vindexes.is_empty());
}

/// The real migration `version` (panics if the binary lacks it).
fn real_migration(version: i32) -> Migration {
    *MIGRATIONS
        .iter()
        .find(|m| m.version == version)
        .expect("embedded migration")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_tolerate_a_gap_and_apply_a_late_lower_version() {
    let pg = TestPg::start();
    let c = pg.connect().await;
    let (v1, v3) = (real_migration(1), real_migration(3));
    // A binary without version 2 (this one): 1 and 3, in order.
    assert_eq!(
        migrate::migrate_with(&c, &[v1, v3]).await.expect("1 and 3"),
        vec![1, 3]
    );
    // A later binary adds version 2: applied although 3 already is.
    let v2 = Migration {
        version: 2,
        name: "late",
        sql: "create table pgrouter.late_v2 (x int)",
    };
    assert_eq!(
        migrate::migrate_with(&c, &[v1, v2, v3])
            .await
            .expect("late 2"),
        vec![2]
    );
    assert_eq!(
        migrate::migrate_with(&c, &[v1, v2, v3])
            .await
            .expect("again"),
        Vec::<i32>::new()
    );
    let versions: Vec<i32> = c
        .query(
            "select version from pgrouter.schema_migrations order by version",
            &[],
        )
        .await
        .expect("versions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2, 3]);
    c.batch_execute("select * from pgrouter.late_v2")
        .await
        .expect("version 2 ran");
    // The binary's own list against that catalog: only its versions above 3.
    let above_3: Vec<i32> = MIGRATIONS
        .iter()
        .map(|m| m.version)
        .filter(|v| *v > 3)
        .collect();
    assert_eq!(migrate(&c).await.expect("migrate"), above_3);
    assert_eq!(migrate(&c).await.expect("migrate"), Vec::<i32>::new());
    // A failing migration commits nothing, not even the ones before it.
    let pg2 = TestPg::start();
    let d = pg2.connect().await;
    let bad = Migration {
        version: 2,
        name: "bad",
        sql: "create table pgrouter.nope (",
    };
    let e = migrate::migrate_with(&d, &[v1, bad, v3])
        .await
        .expect_err("bad");
    assert!(
        matches!(e, CatalogError::Migration { version: 2, .. }),
        "{e}"
    );
    let all: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(migrate(&d).await.expect("real"), all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_tables_add_drop_load_and_conflicts() {
    let pg = TestPg::start();
    let c = pg.connect().await;
    seed_default(&c, &two_shards()).await.expect("seed");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watcher = spawn_watcher(pg.dsn(), move |cat| {
        let _ = tx.send(cat);
    });
    wait_for(&mut rx, Duration::from_secs(5), |cat| cat.tables.len() == 4)
        .await
        .expect("initial load");

    assert_eq!(
        add_reference_table(&c, "Public.Countries")
            .await
            .expect("add"),
        "countries"
    );
    assert_eq!(
        add_reference_table(&c, "countries")
            .await
            .expect("idempotent"),
        "countries"
    );
    // The NOTIFY trigger makes running routers reload.
    let (cat, _) = wait_for(&mut rx, Duration::from_secs(2), |cat| {
        cat.is_reference("countries")
    })
    .await
    .expect("watcher must deliver the reference table");
    assert_eq!(cat.reference_tables.len(), 1);
    assert!(cat.table("countries").is_none());
    let cat = load(&c).await.expect("load");
    assert!(cat.is_reference("countries") && !cat.is_reference("pgbench_accounts"));
    assert!(
        show_routing(&cat).contains("reference tables:\n  countries\nlookup vindexes:"),
        "{}",
        show_routing(&cat)
    );

    // One name cannot be both kinds, whichever is declared first.
    let e = add_reference_table(&c, "PGBENCH_ACCOUNTS")
        .await
        .expect_err("sharded");
    assert!(
        matches!(&e, CatalogError::ShardedAndReference { table } if table == "pgbench_accounts"),
        "{e}"
    );
    let e = add_table(&c, "countries", "code", "main", None, KeyType::Text)
        .await
        .expect_err("reference");
    assert!(
        matches!(&e, CatalogError::ShardedAndReference { table } if table == "countries"),
        "{e}"
    );
    assert!(e
        .to_string()
        .contains("both a sharded table and a reference table"));
    let e = add_reference_table(&c, " ").await.expect_err("empty");
    assert!(matches!(e, CatalogError::InvalidArgument(_)), "{e}");

    // Rows written by hand are validated at load, and the router keeps its
    // previous catalog.
    c.batch_execute("insert into pgrouter.reference_tables values ('pgbench_tellers')")
        .await
        .expect("hand insert");
    let e = load(&c).await.expect_err("both kinds");
    assert!(
        matches!(&e, CatalogError::ShardedAndReference { table } if table == "pgbench_tellers"),
        "{e}"
    );
    assert!(
        wait_for(&mut rx, Duration::from_millis(500), |_| true)
            .await
            .is_none(),
        "an invalid catalog must not be applied"
    );
    assert!(drop_reference_table(&c, "pgbench_tellers")
        .await
        .expect("drop"));
    load(&c).await.expect("valid again");

    assert!(drop_reference_table(&c, "public.COUNTRIES")
        .await
        .expect("drop"));
    assert!(!drop_reference_table(&c, "countries")
        .await
        .expect("drop again"));
    wait_for(&mut rx, Duration::from_secs(2), |cat| {
        cat.reference_tables.is_empty()
    })
    .await
    .expect("watcher must deliver the drop");
    // Once dropped as a reference table, the name can be sharded.
    add_table(&c, "countries", "code", "main", None, KeyType::Text)
        .await
        .expect("now sharded");

    // Keyspace rules: loaded and shown; a table they declare keeps any
    // declaration it has; reference tables are not declared.
    let e = add_table_rule(&c, "id", "nope")
        .await
        .expect_err("keyspace");
    assert!(matches!(e, CatalogError::UnknownKeyspace { .. }), "{e}");
    add_table_rule(&c, " ID ", "main").await.expect("rule");
    let (cat, _) = wait_for(&mut rx, Duration::from_secs(2), |cat| {
        !cat.table_rules.is_empty()
    })
    .await
    .expect("watcher must deliver the rule");
    assert_eq!(
        cat.table_rules,
        vec![("id".to_string(), "main".to_string())]
    );
    assert!(
        show_routing(&cat).contains("new tables with column id -> sharded by it in keyspace main")
    );
    let t = declare_by_rule(&c, "Orders", "id", KeyType::Int)
        .await
        .expect("declare")
        .expect("declared");
    assert_eq!((t.name.as_str(), t.key_column.as_str()), ("orders", "id"));
    declare_by_rule(&c, "countries", "id", KeyType::Int)
        .await
        .expect("declare");
    let cat = load(&c).await.expect("load");
    assert_eq!(
        cat.table("countries").map(|t| t.key_column.as_str()),
        Some("code")
    );
    add_reference_table(&c, "currencies")
        .await
        .expect("reference");
    assert!(declare_by_rule(&c, "currencies", "id", KeyType::Int)
        .await
        .expect("declare")
        .is_none());
    assert!(declare_by_rule(&c, "t2", "k", KeyType::Int)
        .await
        .expect("no rule")
        .is_none());
    assert!(drop_table_rule(&c, "id").await.expect("drop"));
    assert!(!drop_table_rule(&c, "id").await.expect("drop again"));
    assert!(declare_by_rule(&c, "t3", "id", KeyType::Int)
        .await
        .expect("rule gone")
        .is_none());
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_without_migration_3_loads_without_reference_tables() {
    let pg = TestPg::start();
    let c = pg.connect().await;
    assert_eq!(
        migrate::migrate_with(&c, &[real_migration(1)])
            .await
            .expect("v1 only"),
        vec![1]
    );
    add_keyspace(&c, "main", VindexKind::HashMurmur3)
        .await
        .expect("ks");
    add_shard(&c, "s0", "127.0.0.1", 5433, "postgres", None)
        .await
        .expect("shard");
    add_ranges(&c, "main", &["s0".into()], RangeLayout::Equal)
        .await
        .expect("ranges");
    add_table(&c, "orders", "id", "main", None, KeyType::Int)
        .await
        .expect("add_table works without reference_tables");
    let cat = load(&c).await.expect("load a version-1 catalog");
    assert!(cat.table("orders").is_some() && cat.reference_tables.is_empty());
    let e = add_reference_table(&c, "countries")
        .await
        .expect_err("not migrated");
    assert!(e.to_string().contains("meta init"), "{e}");
    let later: Vec<i32> = MIGRATIONS
        .iter()
        .map(|m| m.version)
        .filter(|v| *v > 1)
        .collect();
    assert_eq!(migrate(&c).await.expect("upgrade"), later);
    add_reference_table(&c, "countries").await.expect("now");
    assert!(load(&c).await.expect("load").is_reference("countries"));
}

/// Catalog with the default seed plus sharded table `users` (key `id`, int).
async fn seeded_with_users(pg: &TestPg) -> tokio_postgres::Client {
    let c = pg.connect().await;
    seed_default(&c, &two_shards()).await.expect("seed");
    add_table(&c, "users", "id", "main", None, KeyType::Int)
        .await
        .expect("users");
    c
}

/// The `sharded_tables` names, sorted.
async fn sharded_names(c: &tokio_postgres::Client) -> Vec<String> {
    c.query(
        "select table_name from pgrouter.sharded_tables order by table_name",
        &[],
    )
    .await
    .expect("names")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_vindexes_add_load_redefine_drop() {
    let pg = TestPg::start();
    let c = seeded_with_users(&pg).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watcher = spawn_watcher(pg.dsn(), move |cat| {
        let _ = tx.send(cat);
    });
    wait_for(&mut rx, Duration::from_secs(5), |cat| cat.tables.len() == 5)
        .await
        .expect("initial load");

    // Defaults: name <table>_<column>, lookup table <table>_<column>_lookup.
    let (v, ddl) = add_lookup_vindex(
        &c,
        None,
        "Public.Users",
        " Email ",
        KeyType::Text,
        None,
        false,
    )
    .await
    .expect("add");
    let expected = LookupVindex {
        name: "users_email".into(),
        table: "users".into(),
        column: "email".into(),
        key_type: KeyType::Text,
        lookup_table: "users_email_lookup".into(),
        unique: false,
    };
    assert_eq!(v, expected);
    assert_eq!(
        ddl,
        "CREATE TABLE users_email_lookup (email text NOT NULL, keyspace_id bigint NOT NULL, PRIMARY KEY (email, keyspace_id))"
    );
    // Idempotent.
    let again = add_lookup_vindex(&c, None, "users", "email", KeyType::Text, None, false)
        .await
        .expect("again");
    assert_eq!(again, (expected.clone(), ddl));
    // The NOTIFY trigger makes running routers reload.
    let (cat, _) = wait_for(&mut rx, Duration::from_secs(2), |cat| {
        !cat.lookups_of("users").is_empty()
    })
    .await
    .expect("watcher must deliver the lookup vindex");
    assert_eq!(cat.lookups_of("users"), std::slice::from_ref(&expected));
    let lt = cat
        .table("users_email_lookup")
        .expect("lookup table declared");
    assert_eq!(
        (
            lt.keyspace.as_str(),
            lt.key_column.as_str(),
            lt.key_type,
            lt.vindex
        ),
        ("main", "email", KeyType::Text, VindexKind::HashMurmur3)
    );

    // Explicit name and lookup table, unique, int.
    let (v, ddl) = add_lookup_vindex(
        &c,
        Some(" By_Age "),
        "users",
        "AGE",
        KeyType::Int,
        Some("public.Age_Idx"),
        true,
    )
    .await
    .expect("unique");
    assert_eq!(
        (v.name.as_str(), v.lookup_table.as_str(), v.unique),
        ("by_age", "age_idx", true)
    );
    assert_eq!(
        ddl,
        "CREATE TABLE age_idx (age bigint NOT NULL, keyspace_id bigint NOT NULL, PRIMARY KEY (age))"
    );
    let cat = load(&c).await.expect("load");
    let names: Vec<&str> = cat
        .lookups_of("users")
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(names, ["by_age", "users_email"]);
    let text = show_routing(&cat);
    assert!(
        text.ends_with(
            "lookup vindexes:\n  by_age       users.age -> age_idx  unique  key_type int\n  \
             users_email  users.email -> users_email_lookup  non-unique  key_type text\n"
        ),
        "{text}"
    );

    // Redefining a vindex: the row is updated; a lookup table it no longer
    // uses loses its declaration.
    let (v, _) = add_lookup_vindex(
        &c,
        Some("by_age"),
        "users",
        "age",
        KeyType::Text,
        Some("ages"),
        false,
    )
    .await
    .expect("redefine");
    let cat = load(&c).await.expect("load redefined");
    assert!(cat.lookups_of("users").contains(&v) && !v.unique);
    assert!(cat.table("age_idx").is_none());
    assert_eq!(cat.table("ages").map(|t| t.key_type), Some(KeyType::Text));
    // Same lookup table, other key type: the lookup table follows.
    add_lookup_vindex(
        &c,
        Some("by_age"),
        "users",
        "age",
        KeyType::Uuid,
        Some("ages"),
        false,
    )
    .await
    .expect("redefine key type");
    let cat = load(&c).await.expect("load");
    assert_eq!(cat.table("ages").map(|t| t.key_type), Some(KeyType::Uuid));

    // Dropping removes the vindex and its lookup table's declaration only.
    assert!(drop_lookup_vindex(&c, " BY_AGE ").await.expect("drop"));
    assert!(!drop_lookup_vindex(&c, "by_age").await.expect("drop again"));
    let cat = load(&c).await.expect("load after drop");
    assert_eq!(cat.lookups_of("users"), std::slice::from_ref(&expected));
    assert!(cat.table("ages").is_none() && cat.table("users").is_some());
    wait_for(&mut rx, Duration::from_secs(2), |cat| {
        cat.lookups_of("users").len() == 1 && cat.table("ages").is_none()
    })
    .await
    .expect("watcher must deliver the drop");

    // Deleting the owner's declaration cascades to its vindexes; the lookup
    // table stays declared as a plain sharded table.
    c.batch_execute("delete from pgrouter.sharded_tables where table_name = 'users'")
        .await
        .expect("delete owner");
    let n: i64 = c
        .query_one("select count(*) from pgrouter.lookup_vindexes", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
    let cat = load(&c).await.expect("load after cascade");
    assert!(cat.lookup_vindexes.is_empty() && cat.table("users_email_lookup").is_some());
    // Deleting a lookup table's declaration cascades too.
    add_table(&c, "users", "id", "main", None, KeyType::Int)
        .await
        .expect("users again");
    add_lookup_vindex(&c, None, "users", "email", KeyType::Text, None, true)
        .await
        .expect("adopts the existing lookup table");
    c.batch_execute("delete from pgrouter.sharded_tables where table_name = 'users_email_lookup'")
        .await
        .expect("delete lookup table");
    assert!(load(&c).await.expect("load").lookup_vindexes.is_empty());
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_vindex_errors() {
    let pg = TestPg::start();
    let c = seeded_with_users(&pg).await;
    add_lookup_vindex(&c, None, "users", "email", KeyType::Text, None, true)
        .await
        .expect("add");
    let before = sharded_names(&c).await;
    let add = |name: Option<&'static str>,
               table: &'static str,
               column: &'static str,
               lookup: Option<&'static str>| {
        let c = &c;
        async move { add_lookup_vindex(c, name, table, column, KeyType::Text, lookup, false).await }
    };

    let e = add(None, "nope", "email", None)
        .await
        .expect_err("unknown owner");
    assert!(
        matches!(&e, CatalogError::UnknownTable { table, .. } if table == "nope"),
        "{e}"
    );
    assert!(
        e.to_string() == "lookup vindex 'nope_email': table 'nope' is not a declared sharded table",
        "{e}"
    );
    let e = add(None, "users", "ID", None)
        .await
        .expect_err("key column");
    assert!(matches!(e, CatalogError::BadLookupVindex { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("column 'id' is the sharding key of table 'users'"),
        "{e}"
    );
    let e = add(None, "users", "name", Some("users"))
        .await
        .expect_err("itself");
    assert!(
        e.to_string()
            .contains("must not be the owner table 'users'"),
        "{e}"
    );
    add_reference_table(&c, "countries")
        .await
        .expect("reference");
    let e = add(None, "users", "country", Some("Countries"))
        .await
        .expect_err("reference lookup table");
    assert!(
        matches!(&e, CatalogError::ShardedAndReference { table } if table == "countries"),
        "{e}"
    );
    let e = add(Some("email2"), "users", "EMAIL", Some("email2_lookup"))
        .await
        .expect_err("conflicting vindex");
    assert!(
        matches!(&e, CatalogError::LookupVindexConflict { existing, requested, .. }
            if existing == "users_email" && requested == "email2"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("table 'users' column 'email' already has lookup vindex 'users_email'"),
        "{e}"
    );
    let e = add(None, "users", "phone", Some("users_email_lookup"))
        .await
        .expect_err("shared lookup table");
    assert!(
        e.to_string().contains(
            "lookup table 'users_email_lookup' is already the lookup table of vindex 'users_email'"
        ),
        "{e}"
    );
    let e = add(None, "users", "phone", Some("pgbench_tellers"))
        .await
        .expect_err("unrelated sharded table");
    assert!(
        e.to_string()
            .contains("'pgbench_tellers' is already declared as a sharded table"),
        "{e}"
    );
    // A lookup table cannot own a lookup vindex: refused before commit.
    let e = add(None, "users_email_lookup", "phone", None)
        .await
        .expect_err("chained");
    assert!(
        e.to_string().contains(
            "owner table 'users_email_lookup' is the lookup table of vindex 'users_email'"
        ),
        "{e}"
    );
    let e = add(Some(" "), "users", "phone", None)
        .await
        .expect_err("empty name");
    assert!(matches!(e, CatalogError::InvalidArgument(_)), "{e}");
    let e = add(None, "users", " ", None)
        .await
        .expect_err("empty column");
    assert!(matches!(e, CatalogError::InvalidArgument(_)), "{e}");
    // add_table refuses to break a lookup vindex.
    let e = add_table(&c, "users", "email", "main", None, KeyType::Text)
        .await
        .expect_err("owner keyed by the looked-up column");
    assert!(
        e.to_string().contains("sharding key of table 'users'"),
        "{e}"
    );
    let e = add_table(
        &c,
        "users_email_lookup",
        "email",
        "main",
        None,
        KeyType::Int,
    )
    .await
    .expect_err("lookup table re-typed");
    assert!(
        e.to_string().contains("lookup vindex 'users_email'")
            && e.to_string().contains("key_type int"),
        "{e}"
    );
    // Nothing of the failed calls was committed.
    assert_eq!(sharded_names(&c).await, before);
    let cat = load(&c).await.expect("still valid");
    assert_eq!(cat.lookup_vindexes.len(), 1);
    assert_eq!(
        cat.table("users").map(|t| t.key_column.as_str()),
        Some("id")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_rejects_hand_broken_lookup_vindexes() {
    let pg = TestPg::start();
    let c = seeded_with_users(&pg).await;
    add_keyspace(&c, "other", VindexKind::HashCrc32)
        .await
        .expect("ks");
    add_ranges(&c, "other", &["shard0".into()], RangeLayout::Equal)
        .await
        .expect("ranges");
    add_table(&c, "elsewhere", "email", "other", None, KeyType::Text)
        .await
        .expect("elsewhere");
    add_table(&c, "email_idx", "email", "main", None, KeyType::Int)
        .await
        .expect("email_idx");
    load(&c).await.expect("valid");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watcher = spawn_watcher(pg.dsn(), move |cat| {
        let _ = tx.send(cat);
    });
    wait_for(&mut rx, Duration::from_secs(5), |cat| cat.tables.len() == 7)
        .await
        .expect("initial load");

    let cases = [
        (
            "('bad', 'users', 'email', 'text', 'elsewhere', true)",
            "lookup table 'elsewhere' is in keyspace 'other' but owner table 'users' is in keyspace 'main'",
        ),
        (
            "('bad', 'users', 'email', 'text', 'email_idx', true)",
            "lookup table 'email_idx' has key_type int but the vindex has key_type text",
        ),
        (
            "('bad', 'users', 'id', 'int', 'pgbench_accounts', false)",
            "column 'id' is the sharding key of table 'users'",
        ),
        (
            "('bad', 'users', 'email', 'float', 'email_idx', false)",
            "unknown key type 'float'",
        ),
    ];
    for (row, problem) in cases {
        c.batch_execute(&format!(
            "insert into pgrouter.lookup_vindexes values {row}"
        ))
        .await
        .expect("hand insert");
        let e = load(&c).await.expect_err("invalid").to_string();
        assert!(
            e.starts_with("lookup vindex 'bad': ") && e.contains(problem),
            "{e}"
        );
        c.batch_execute("delete from pgrouter.lookup_vindexes")
            .await
            .expect("delete");
    }
    // The watcher never applied any of them.
    let mut got = Vec::new();
    while let Some((cat, _)) = wait_for(&mut rx, Duration::from_millis(500), |_| true).await {
        got.push(cat);
    }
    assert!(
        got.iter().all(|cat| cat.lookup_vindexes.is_empty()),
        "an invalid catalog must not be applied"
    );
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_without_migration_4_loads_without_lookup_vindexes() {
    let pg = TestPg::start();
    let c = pg.connect().await;
    let v123: Vec<Migration> = (1..=3).map(real_migration).collect();
    assert_eq!(
        migrate::migrate_with(&c, &v123).await.expect("1 to 3"),
        vec![1, 2, 3]
    );
    add_keyspace(&c, "main", VindexKind::HashMurmur3)
        .await
        .expect("ks");
    add_shard(&c, "s0", "127.0.0.1", 5433, "postgres", None)
        .await
        .expect("shard");
    add_ranges(&c, "main", &["s0".into()], RangeLayout::Equal)
        .await
        .expect("ranges");
    add_table(&c, "users", "id", "main", None, KeyType::Int)
        .await
        .expect("add_table works without lookup_vindexes");
    let cat = load(&c).await.expect("load a version-3 catalog");
    assert!(cat.table("users").is_some() && cat.lookup_vindexes.is_empty());
    let e = add_lookup_vindex(&c, None, "users", "email", KeyType::Text, None, true)
        .await
        .expect_err("not migrated");
    assert!(
        matches!(&e, CatalogError::InvalidArgument(m) if m.contains("meta init")),
        "{e}"
    );
    let e = drop_lookup_vindex(&c, "users_email")
        .await
        .expect_err("not migrated");
    assert!(e.to_string().contains("meta init"), "{e}");
    let above_3: Vec<i32> = MIGRATIONS
        .iter()
        .map(|m| m.version)
        .filter(|v| *v > 3)
        .collect();
    assert_eq!(migrate(&c).await.expect("upgrade"), above_3);
    add_lookup_vindex(&c, None, "users", "email", KeyType::Text, None, true)
        .await
        .expect("now");
    assert_eq!(load(&c).await.expect("load").lookups_of("users").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_default_twice_then_load() {
    let pg = TestPg::start();
    let c = pg.connect().await;
    seed_default(&c, &two_shards()).await.expect("seed 1");
    seed_default(&c, &two_shards())
        .await
        .expect("seed 2 (idempotent)");
    let cat = load(&c).await.expect("load");
    let ks = &cat.keyspaces[DEFAULT_KEYSPACE];
    assert_eq!(ks.vindex, VindexKind::HashMurmur3);
    assert_eq!(ks.generation, 1);
    let ranges: Vec<(KeyRange, &str)> = ks
        .routing
        .ranges()
        .iter()
        .map(|r| (r.range, r.shard.as_str()))
        .collect();
    assert_eq!(
        ranges,
        vec![
            (
                KeyRange {
                    start: 0,
                    end: Some(1 << 63)
                },
                "shard0"
            ),
            (
                KeyRange {
                    start: 1 << 63,
                    end: None
                },
                "shard1"
            ),
        ]
    );
    assert_eq!(cat.tables.len(), 4);
    let t = cat.table("pgbench_tellers").expect("tellers");
    assert_eq!(
        (t.key_column.as_str(), t.key_type, t.vindex),
        ("tid", KeyType::Int, VindexKind::HashMurmur3)
    );
    assert_eq!(cat.keyspace_of(t).map(|k| k.name.as_str()), Some("main"));
    assert_eq!(cat.shard_names(), vec!["shard0", "shard1"]);
    assert_eq!(cat.shards["shard1"].port, 5434);
    let rows: i64 = c
        .query_one("select count(*) from pgrouter.shard_ranges", &[])
        .await
        .expect("n")
        .get(0);
    assert_eq!(rows, 2, "re-seeding must not duplicate ranges");
    let text = show_routing(&cat);
    assert!(
        text.contains("[0x0000000000000000, 0x8000000000000000) -> shard0"),
        "{text}"
    );
    assert!(text.contains("shard1  127.0.0.1:5434/postgres"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_rejects_bad_catalogs_naming_the_row() {
    let pg = TestPg::start();
    let c = pg.connect().await;
    seed_default(&c, &two_shards()).await.expect("seed");

    // A gap [2^63, 2^63 + 16) inserted by hand.
    c.batch_execute("update pgrouter.shard_ranges set start_id = 9223372036854775824 where start_id = 9223372036854775808")
        .await
        .expect("make gap");
    let e = load(&c).await.expect_err("gap must fail");
    assert!(
        matches!(&e, CatalogError::Routing { keyspace, generation: 1, .. } if keyspace == "main"),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("keyspace 'main'") && msg.contains("generation 1"),
        "{msg}"
    );
    assert!(
        msg.contains("gap [0x8000000000000000, 0x8000000000000010)"),
        "{msg}"
    );
    c.batch_execute("update pgrouter.shard_ranges set start_id = 9223372036854775808 where start_id = 9223372036854775824")
        .await
        .expect("fix gap");
    load(&c).await.expect("fixed");

    // An unknown key type.
    c.batch_execute(
        "insert into pgrouter.sharded_tables values ('floaty', 'main', 'x', 'hash', 'float')",
    )
    .await
    .expect("insert");
    let msg = load(&c).await.expect_err("key type").to_string();
    assert!(
        msg.contains("table 'floaty'") && msg.contains("'float'"),
        "{msg}"
    );
    c.batch_execute("delete from pgrouter.sharded_tables where table_name = 'floaty'")
        .await
        .expect("del");

    // An unknown vindex on the keyspace.
    c.batch_execute("update pgrouter.keyspaces set vindex = 'md5' where name = 'main'")
        .await
        .expect("upd");
    let msg = load(&c).await.expect_err("vindex").to_string();
    assert!(
        msg.contains("keyspace 'main'") && msg.contains("'md5'"),
        "{msg}"
    );
    c.batch_execute("update pgrouter.keyspaces set vindex = 'hash' where name = 'main'")
        .await
        .expect("upd");

    // Flipping to a generation that has no ranges.
    c.batch_execute("update pgrouter.keyspaces set generation = 2 where name = 'main'")
        .await
        .expect("flip");
    let e = load(&c).await.expect_err("no ranges");
    assert!(
        matches!(&e, CatalogError::NoRanges { keyspace, generation: 2 } if keyspace == "main"),
        "{e}"
    );
    c.batch_execute("update pgrouter.keyspaces set generation = 1 where name = 'main'")
        .await
        .expect("flip back");

    // The schema itself refuses out-of-range ids.
    let err = c
        .batch_execute("insert into pgrouter.shard_ranges values ('main', 18446744073709551616, null, 'shard0', 9)")
        .await
        .expect_err("start 2^64 must violate the check");
    assert!(
        format!("{err:?}").contains("shard_ranges_start_in_range"),
        "{err:?}"
    );
    load(&c).await.expect("still valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_applies_changes_within_a_second_and_skips_invalid_ones() {
    let pg = TestPg::start();
    let c = pg.connect().await;
    seed_default(&c, &two_shards()).await.expect("seed");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watcher = spawn_watcher(pg.dsn(), move |cat| {
        let _ = tx.send(cat);
    });
    wait_for(&mut rx, Duration::from_secs(5), |cat| cat.tables.len() == 4)
        .await
        .expect("initial load");

    add_table(
        &c,
        "Public.Orders",
        "Customer_ID",
        "main",
        None,
        KeyType::Text,
    )
    .await
    .expect("add_table");
    let (cat, took) = wait_for(&mut rx, Duration::from_secs(1), |cat| {
        cat.table("orders").is_some()
    })
    .await
    .expect("watcher must deliver the new table within 1 s");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    eprintln!("watcher delivered the new table after {took:?}");
    let t = cat.table("orders").expect("orders");
    assert_eq!(
        (t.key_column.as_str(), t.key_type),
        ("customer_id", KeyType::Text)
    );

    // An invalid change (a gap) is not delivered...
    c.batch_execute("update pgrouter.shard_ranges set end_id = 42 where start_id = 0")
        .await
        .expect("gap");
    assert!(
        wait_for(&mut rx, Duration::from_millis(500), |_| true)
            .await
            .is_none(),
        "an invalid catalog must not be applied"
    );
    // ...and the fix is.
    c.batch_execute(
        "update pgrouter.shard_ranges set end_id = 9223372036854775808 where start_id = 0",
    )
    .await
    .expect("fix");
    wait_for(&mut rx, Duration::from_secs(1), |cat| {
        cat.table("orders").is_some()
    })
    .await
    .expect("fixed catalog");

    // Kill the watcher's session: it reconnects, reloads, and sees changes made meanwhile.
    let killed: i64 = c
        .query_one(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity where application_name = $1",
            &[&WATCHER_APPLICATION_NAME],
        )
        .await
        .expect("terminate")
        .get(0);
    assert_eq!(killed, 1);
    add_table(
        &c,
        "payments",
        "order_id",
        "main",
        Some(VindexKind::HashCrc32),
        KeyType::Int,
    )
    .await
    .expect("add");
    let (cat, _) = wait_for(&mut rx, Duration::from_secs(3), |cat| {
        cat.table("payments").is_some()
    })
    .await
    .expect("watcher must recover after losing its connection");
    assert_eq!(
        cat.table("payments").map(|t| t.vindex),
        Some(VindexKind::HashCrc32)
    );
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_layout_loads_and_routes_to_every_shard() {
    let pg = TestPg::start();
    let c = pg.connect().await;
    migrate(&c).await.expect("migrate");
    assert!(add_keyspace(&c, "ring", VindexKind::ConsistentHash)
        .await
        .expect("ks"));
    assert!(!add_keyspace(&c, "ring", VindexKind::ConsistentHash)
        .await
        .expect("ks again"));
    let e = add_keyspace(&c, "ring", VindexKind::HashCrc32)
        .await
        .expect_err("conflict");
    assert!(matches!(e, CatalogError::VindexConflict { .. }), "{e}");
    let names: Vec<String> = (0..3).map(|i| format!("s{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        add_shard(&c, n, "127.0.0.1", 6000 + i as u16, "postgres", Some("app"))
            .await
            .expect("shard");
    }
    let e = add_ranges(
        &c,
        "ring",
        &["s0".into(), "nope".into()],
        RangeLayout::Equal,
    )
    .await
    .expect_err("unknown shard");
    assert!(e.to_string().contains("'nope'"), "{e}");
    let e = add_ranges(&c, "nokeyspace", &names, RangeLayout::Equal)
        .await
        .expect_err("unknown keyspace");
    assert!(e.to_string().contains("'nokeyspace'"), "{e}");

    let written = add_ranges(&c, "ring", &names, RangeLayout::Ring { vnodes: 16 })
        .await
        .expect("ring");
    let cat = load(&c).await.expect("ring layout validates");
    let ks = &cat.keyspaces["ring"];
    assert_eq!(ks.routing.ranges().len(), written.len());
    assert!(written.len() > 3);
    let owners: std::collections::BTreeSet<&str> = ks
        .routing
        .ranges()
        .iter()
        .map(|r| r.shard.as_str())
        .collect();
    assert_eq!(
        owners.into_iter().collect::<Vec<_>>(),
        vec!["s0", "s1", "s2"]
    );
    assert_eq!(cat.shards["s2"].user.as_deref(), Some("app"));

    // Replacing with an equal layout (same generation) leaves no ring rows behind.
    add_ranges(&c, "ring", &names, RangeLayout::Equal)
        .await
        .expect("equal");
    let cat = load(&c).await.expect("equal validates");
    assert_eq!(cat.keyspaces["ring"].routing.ranges().len(), 3);
}

/// `pg-router meta ...` as a top-level parser, for the CLI test.
#[derive(clap::Parser, Debug)]
struct Top {
    #[command(subcommand)]
    cmd: TopCmd,
}

#[derive(clap::Subcommand, Debug)]
enum TopCmd {
    Meta(MetaArgs),
}

fn parse(dsn: &str, args: &[&str]) -> MetaArgs {
    let argv: Vec<&str> = ["pg-router", "meta", "--catalog", dsn]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    match Top::try_parse_from(argv).expect("parse").cmd {
        TopCmd::Meta(m) => m,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_cli_end_to_end() {
    let pg = TestPg::start();
    let dsn = pg.dsn();
    let c = pg.connect().await;
    let run = |args: &'static [&'static str]| {
        let m = parse(&dsn, args);
        let c = &c;
        async move { cli::execute(c, &m.command).await }
    };
    assert!(run(&["init"]).await.expect("init").contains("migrated"));
    assert!(run(&["init"]).await.expect("init 2").contains("up to date"));
    let e = run(&["add-table", "--table", "t", "--column", "id"])
        .await
        .expect_err("no keyspace");
    assert!(e.to_string().contains("no keyspace"), "{e}");
    assert!(run(&["add-keyspace", "--name", "app"])
        .await
        .expect("ks")
        .contains("created"));
    run(&[
        "add-shard",
        "--name",
        "a",
        "--host",
        "10.0.0.1",
        "--port",
        "5432",
    ])
    .await
    .expect("shard a");
    run(&[
        "add-shard",
        "--name",
        "b",
        "--host",
        "10.0.0.2",
        "--port",
        "5432",
        "--user",
        "u",
    ])
    .await
    .expect("b");
    let out = run(&["add-ranges", "--keyspace", "app", "--shards", "a,b"])
        .await
        .expect("ranges");
    assert!(out.contains("2 ranges") && out.contains("-> b"), "{out}");
    let out = run(&[
        "add-table",
        "--table",
        "Users",
        "--column",
        "id",
        "--key-type",
        "uuid",
    ])
    .await
    .expect("table");
    assert!(
        out.contains("table users: keyspace app, key id, vindex hash_murmur3, key_type uuid"),
        "{out}"
    );
    let out = run(&["add-reference-table", "--table", "public.Countries"])
        .await
        .expect("reference table");
    assert_eq!(out, "reference table countries: declared\n");
    let e = run(&["add-reference-table", "--table", "USERS"])
        .await
        .expect_err("sharded already");
    assert!(e.to_string().contains("'users'"), "{e}");
    let out = run(&["show"]).await.expect("show");
    assert!(
        out.contains("[0x8000000000000000, 0xffffffffffffffff] -> b"),
        "{out}"
    );
    assert!(out.contains("reference tables:\n  countries\n"), "{out}");
    assert!(out.contains("b  10.0.0.2:5432/postgres  user u"), "{out}");
    let out = run(&["add-lookup-vindex", "--table", "Users", "--column", "Email"])
        .await
        .expect("lookup vindex");
    assert_eq!(
        out,
        "lookup vindex users_email: users.email -> users_email_lookup (non-unique, key_type text)\n\
         create the lookup table through the router: CREATE TABLE users_email_lookup \
         (email text NOT NULL, keyspace_id bigint NOT NULL, PRIMARY KEY (email, keyspace_id));\n"
    );
    let out = run(&[
        "add-lookup-vindex",
        "--table",
        "users",
        "--column",
        "age",
        "--key-type",
        "int",
        "--unique",
        "--lookup-table",
        "age_idx",
        "--name",
        "by_age",
    ])
    .await
    .expect("unique lookup vindex");
    assert!(
        out.starts_with("lookup vindex by_age: users.age -> age_idx (unique, key_type int)\n")
            && out.ends_with(
                ": CREATE TABLE age_idx (age bigint NOT NULL, keyspace_id bigint NOT NULL, PRIMARY KEY (age));\n"
            ),
        "{out}"
    );
    let e = run(&["add-lookup-vindex", "--table", "users", "--column", "id"])
        .await
        .expect_err("key column");
    assert!(e.to_string().contains("sharding key"), "{e}");
    let out = run(&["show"]).await.expect("show");
    assert!(
        out.contains(
            "lookup vindexes:\n  by_age       users.age -> age_idx  unique  key_type int\n"
        ),
        "{out}"
    );
    let out = run(&["drop-lookup-vindex", "--name", "BY_AGE"])
        .await
        .expect("drop lookup vindex");
    assert!(out.starts_with("lookup vindex by_age: dropped"), "{out}");
    let out = run(&["drop-lookup-vindex", "--name", "by_age"])
        .await
        .expect("drop lookup vindex again");
    assert_eq!(out, "lookup vindex by_age: not declared; nothing dropped\n");
    let out = run(&["drop-reference-table", "--table", "countries"])
        .await
        .expect("drop");
    assert!(
        out.starts_with("reference table countries: dropped"),
        "{out}"
    );
    let out = run(&["drop-reference-table", "--table", "countries"])
        .await
        .expect("drop again");
    assert!(out.contains("not declared"), "{out}");
    run(&["add-keyspace", "--name", "other", "--vindex", "crc32"])
        .await
        .expect("ks 2");
    let e = run(&["add-table", "--table", "t", "--column", "id"])
        .await
        .expect_err("ambiguous");
    assert!(
        e.to_string().contains("several keyspaces (app, other)"),
        "{e}"
    );
    let out = run(&[
        "add-ranges",
        "--keyspace",
        "other",
        "--shards",
        "a,b",
        "--layout",
        "ring",
        "--vnodes",
        "4",
    ])
    .await
    .expect("ring");
    assert!(out.contains("keyspace other generation 1"), "{out}");

    // Bad arguments are rejected by the parser.
    let bad = |args: &[&str]| {
        let argv = ["pg-router", "meta", "--catalog", "x"]
            .iter()
            .chain(args.iter())
            .copied()
            .collect::<Vec<_>>();
        Top::try_parse_from(argv).is_err()
    };
    assert!(bad(&["add-keyspace", "--name", "k", "--vindex", "md5"]));
    assert!(bad(&[
        "add-shard",
        "--name",
        "s",
        "--host",
        "h",
        "--port",
        "0"
    ]));
    assert!(bad(&[
        "add-table",
        "--table",
        "t",
        "--column",
        "c",
        "--key-type",
        "float"
    ]));
    assert!(bad(&["add-ranges", "--keyspace", "k"]));
    assert!(bad(&["add-reference-table"]));
    assert!(bad(&["drop-reference-table", "--name", "x"]));
    assert!(bad(&["add-lookup-vindex", "--table", "t"]));
    assert!(bad(&[
        "add-lookup-vindex",
        "--table",
        "t",
        "--column",
        "c",
        "--key-type",
        "float"
    ]));
    assert!(bad(&[
        "add-lookup-vindex",
        "--table",
        "t",
        "--column",
        "c",
        "--unique",
        "yes"
    ]));
    assert!(bad(&["drop-lookup-vindex"]));

    // run_meta itself (prints to stdout).
    run_meta(parse(&dsn, &["show"]))
        .await
        .expect("run_meta show");
    let e = run_meta(parse(
        "host=127.0.0.1 port=1 user=postgres connect_timeout=2",
        &["show"],
    ))
    .await
    .expect_err("unreachable");
    assert!(matches!(e, CatalogError::Connect(_)), "{e}");
}
