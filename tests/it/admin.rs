//! The admin console (database `pgrouter`, `auth.admin_users`) against real
//! shards: every SHOW command, PAUSE/RESUME holding new transactions,
//! RELOAD without a configuration file, refusals (non-admin user, unknown
//! command, extended protocol) that leave the console usable.

use std::time::Duration;

use pg_router::dev::DevCluster;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::common;

/// Connects to the router as `user` to `dbname` (trust).
async fn connect_db(
    dev: &DevCluster,
    user: &str,
    dbname: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(dev.router.addr.port())
        .user(user)
        .dbname(dbname)
        .application_name("admin-test");
    let (c, conn) = cfg.connect(NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

/// Runs an admin command: (column names, rows as text).
async fn show(admin: &tokio_postgres::Client, cmd: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let msgs = admin
        .simple_query(cmd)
        .await
        .unwrap_or_else(|e| panic!("{cmd}: {e:?}"));
    let mut cols = Vec::new();
    let mut rows = Vec::new();
    for m in msgs {
        match m {
            SimpleQueryMessage::RowDescription(d) => {
                cols = d.iter().map(|c| c.name().to_string()).collect();
            }
            SimpleQueryMessage::Row(r) => rows.push(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_string())
                    .collect(),
            ),
            _ => {}
        }
    }
    (cols, rows)
}

/// The row whose column `col` is `value`.
fn row<'a>(
    t: &'a (Vec<String>, Vec<Vec<String>>),
    col: &str,
    value: &str,
) -> Option<&'a Vec<String>> {
    let i = t.0.iter().position(|c| c == col)?;
    t.1.iter().find(|r| r[i] == value)
}

fn cell(t: &(Vec<String>, Vec<Vec<String>>), r: &[String], col: &str) -> String {
    let i = t.0.iter().position(|c| c == col).expect("column");
    r[i].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_console() {
    let dev = common::start_config(2, 4, |c| c.limits.shutdown_timeout_ms = 3000).await;
    let s0 = dev.cluster.shards[0].name.clone();
    let s1 = dev.cluster.shards[1].name.clone();

    // Only admin users get in (the dev config names `postgres`).
    let e = connect_db(&dev, "app", "pgrouter").await.err().unwrap();
    assert_eq!(common::sqlstate(&e), "28000", "{e:?}");
    let admin = connect_db(&dev, "postgres", "pgrouter").await.unwrap();

    let c = common::connect(&dev).await;
    c.batch_execute("CREATE TABLE a (id int PRIMARY KEY, v int)")
        .await
        .unwrap();
    common::add_table(&dev, "a", "id", "int").await;
    for id in 0..20 {
        c.execute("INSERT INTO a (id, v) VALUES ($1, 0)", &[&id])
            .await
            .unwrap();
    }
    // tokio-postgres closes each `execute`'s statement with a Close + Sync
    // it does not wait for, and the router runs that Sync on a pooled
    // connection: one more round trip on `c` has the router done with them
    // before SHOW POOLS counts connections in use.
    c.batch_execute("SELECT 1").await.unwrap();

    let help = show(&admin, "SHOW HELP").await;
    assert!(row(&help, "command", "PAUSE").is_some());

    let shards = show(&admin, "show shards;").await;
    assert_eq!(shards.1.len(), 2, "{shards:?}");
    let r = row(&shards, "shard", &s0).expect("shard row");
    assert_eq!(cell(&shards, r, "state"), "up");
    assert_eq!(
        cell(&shards, r, "port"),
        dev.cluster.shards[0].port.to_string()
    );

    let pools = show(&admin, "SHOW POOLS").await;
    for s in [&s0, &s1] {
        let r = row(&pools, "shard", s).expect("pool row");
        assert_eq!(cell(&pools, r, "size"), "4");
        assert_eq!(cell(&pools, r, "in_use"), "0");
    }

    let stats = show(&admin, "SHOW STATS").await;
    let fast = row(&stats, "route", "fast_path").expect("fast_path row");
    assert!(cell(&stats, fast, "requests").parse::<u64>().unwrap() >= 20);
    assert!(!cell(&stats, fast, "p99_ms").is_empty());

    let routing = show(&admin, "SHOW ROUTING").await;
    assert!(routing.1.len() >= 2, "{routing:?}");
    assert!(routing.1.iter().all(|r| r[0] == "main"));
    assert!(row(&routing, "shard", &s0).is_some() && row(&routing, "shard", &s1).is_some());

    // SHOW CLIENTS: state follows the client's transaction.
    let bench = connect_db(&dev, "postgres", "postgres").await.unwrap();
    bench
        .batch_execute("BEGIN; SELECT v FROM a WHERE id = 1")
        .await
        .unwrap();
    let clients = show(&admin, "SHOW CLIENTS").await;
    let states: Vec<String> = clients
        .1
        .iter()
        .map(|r| cell(&clients, r, "state"))
        .collect();
    assert!(
        states.contains(&"idle in transaction".to_string()),
        "{clients:?}"
    );
    assert!(states.contains(&"idle".to_string()), "{clients:?}");
    assert!(states.contains(&"admin".to_string()), "{clients:?}");
    assert!(clients
        .1
        .iter()
        .any(|r| cell(&clients, r, "application_name") == "admin-test"
            && cell(&clients, r, "database") == "postgres"));
    let pools = show(&admin, "SHOW POOLS").await;
    let in_use: u64 = pools
        .1
        .iter()
        .map(|r| cell(&pools, r, "in_use").parse::<u64>().unwrap())
        .sum();
    assert_eq!(in_use, 1);

    // PAUSE waits for the open transaction; new transactions wait for
    // RESUME; the open one may finish.
    let admin2 = connect_db(&dev, "postgres", "pgrouter").await.unwrap();
    let pause = tokio::spawn(async move { admin2.simple_query("PAUSE").await.map(|_| admin2) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !pause.is_finished(),
        "PAUSE returned while a transaction runs"
    );
    let blocked = tokio::spawn(async move {
        c.query_one("SELECT v FROM a WHERE id = 2", &[])
            .await
            .map(|_| c)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!blocked.is_finished(), "a new transaction ran while paused");
    bench
        .batch_execute("UPDATE a SET v = 1 WHERE id = 1; COMMIT")
        .await
        .unwrap();
    let admin2 = tokio::time::timeout(Duration::from_secs(10), pause)
        .await
        .expect("PAUSE returns once no connection is in use")
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!blocked.is_finished(), "a new transaction ran while paused");
    show(&admin, "RESUME").await;
    let c = tokio::time::timeout(Duration::from_secs(10), blocked)
        .await
        .expect("RESUME releases the held transaction")
        .unwrap()
        .unwrap();
    // PAUSE that cannot drain in time: 57014, still paused until RESUME.
    bench
        .batch_execute("BEGIN; SELECT v FROM a WHERE id = 1")
        .await
        .unwrap();
    let e = admin2.simple_query("PAUSE").await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "57014", "{e:?}");
    show(&admin2, "RESUME").await;
    bench.batch_execute("COMMIT").await.unwrap();
    c.query_one("SELECT v FROM a WHERE id = 3", &[])
        .await
        .unwrap();

    // SHOW TRANSACTIONS: a prepared pg-router transaction on a shard.
    let d = common::connect_direct(&dev.cluster.shards[1]).await;
    d.batch_execute("BEGIN; UPDATE a SET v = v WHERE false; PREPARE TRANSACTION 'pgr_admintest_1'")
        .await
        .unwrap();
    let txs = show(&admin, "SHOW TRANSACTIONS").await;
    let r = row(&txs, "gid", "pgr_admintest_1").unwrap_or_else(|| panic!("{txs:?}"));
    assert_eq!(cell(&txs, r, "shard"), s1);
    assert_eq!(cell(&txs, r, "database"), "postgres");
    let _ = d.batch_execute("ROLLBACK PREPARED 'pgr_admintest_1'").await;

    // Refusals leave the console usable.
    let e = admin.simple_query("DROP TABLE a").await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "42601");
    let e = admin.query("SHOW POOLS", &[]).await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "0A000", "{e:?}");
    let e = admin.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "55000", "{e:?}");
    assert_eq!(show(&admin, "SHOW SHARDS").await.1.len(), 2);
    dev.stop().await;
}
