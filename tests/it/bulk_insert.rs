//! Multi-row INSERTs with parameters whose rows belong to several shards
//! (the extended protocol; drivers' bulk inserts): rows where their vindex
//! says, the command tag's count, RETURNING rows in the client's VALUES
//! order, parameters in ON CONFLICT and RETURNING, all or nothing across
//! the shards, inside and outside a transaction block.

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::common;

/// Rows of `kv` on each shard, directly.
async fn per_shard(dev: &pg_router::dev::DevCluster) -> Vec<i64> {
    let mut out = Vec::new();
    for s in &dev.cluster.shards {
        let d = common::connect_direct(s).await;
        out.push(
            d.query_one("SELECT count(*) FROM kv", &[])
                .await
                .unwrap()
                .get(0),
        );
    }
    out
}

/// `INSERT INTO kv (k, v) VALUES ($1, $2), ... ` for keys `keys`.
fn insert_sql(n: usize, suffix: &str) -> String {
    let rows: Vec<String> = (0..n)
        .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
        .collect();
    format!("INSERT INTO kv (k, v) VALUES {}{suffix}", rows.join(", "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_row_inserts_with_parameters_span_shards() {
    let dev = common::start(2, 2).await;
    let c = common::connect(&dev).await;
    c.batch_execute("CREATE TABLE kv (k int PRIMARY KEY, v text)")
        .await
        .unwrap();
    common::add_table(&dev, "kv", "k", "int").await;

    // Twelve rows over both shards, RETURNING in the client's order (keys
    // descending, so shard order and VALUES order differ).
    let keys: Vec<i32> = (1..=12).rev().collect();
    let vals: Vec<String> = keys.iter().map(|k| format!("v{k}")).collect();
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    for (k, v) in keys.iter().zip(&vals) {
        params.push(k);
        params.push(v);
    }
    let rows = c
        .query(&insert_sql(12, " RETURNING k, v || '!'"), &params)
        .await
        .expect("split insert");
    let got: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let want: Vec<(i32, String)> = keys.iter().map(|k| (*k, format!("v{k}!"))).collect();
    assert_eq!(got, want, "RETURNING in VALUES order");
    let counts = per_shard(&dev).await;
    assert_eq!(counts.iter().sum::<i64>(), 12);
    assert!(
        counts.iter().all(|&n| n > 0),
        "rows on both shards: {counts:?}"
    );
    // Every row is where its key routes (a keyed read is single-shard).
    for k in &keys {
        let v: String = c
            .query_one("SELECT v FROM kv WHERE k = $1", &[k])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, format!("v{k}"));
    }

    // The command tag counts every shard's rows; parameters in ON CONFLICT
    // (after the rows) reach every part.
    let keys2: Vec<i32> = vec![1, 2, 3, 4, 5, 6, 100, 101];
    let new = "new".to_string();
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    for k in &keys2 {
        params.push(k);
        params.push(&new);
    }
    let suffix = " ON CONFLICT (k) DO UPDATE SET v = excluded.v || $17";
    let tail = "+".to_string();
    params.push(&tail);
    let n = c
        .execute(&insert_sql(8, suffix), &params)
        .await
        .expect("upsert");
    assert_eq!(n, 8);
    let v: String = c
        .query_one("SELECT v FROM kv WHERE k = 3", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "new+");
    assert_eq!(per_shard(&dev).await.iter().sum::<i64>(), 14);

    // All or nothing: a duplicate key on one shard rolls back the other
    // shard's rows too (the implicit transaction spans both).
    let before = per_shard(&dev).await;
    let keys3: Vec<i32> = vec![200, 201, 202, 203, 204, 205, 7];
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    for k in &keys3 {
        params.push(k);
        params.push(&new);
    }
    let e = c
        .execute(&insert_sql(7, ""), &params)
        .await
        .expect_err("duplicate key");
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION), "{e:?}");
    assert_eq!(per_shard(&dev).await, before, "nothing of it stayed");
    // The connection goes on.
    let n: i64 = c
        .query_one("SELECT count(*) FROM kv", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 14);

    // Inside a transaction block: rolled back with it.
    c.batch_execute("BEGIN").await.unwrap();
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    let keys4: Vec<i32> = (300..310).collect();
    for k in &keys4 {
        params.push(k);
        params.push(&new);
    }
    assert_eq!(c.execute(&insert_sql(10, ""), &params).await.unwrap(), 10);
    let n: i64 = c
        .query_one("SELECT count(*) FROM kv", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 24, "visible in the block");
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(per_shard(&dev).await, before);

    // A NULL key is refused before anything runs.
    let none: Option<i32> = None;
    let e = c
        .execute(&insert_sql(2, ""), &[&400i32, &new, &none, &new])
        .await
        .expect_err("NULL key");
    assert_eq!(e.code(), Some(&SqlState::NOT_NULL_VIOLATION), "{e:?}");

    // A prepared statement reused with other values.
    let st = c.prepare(&insert_sql(4, " RETURNING k")).await.unwrap();
    for base in [500, 600] {
        let ks: Vec<i32> = (base..base + 4).collect();
        let rows = c
            .query(
                &st,
                &[&ks[0], &new, &ks[1], &new, &ks[2], &new, &ks[3], &new],
            )
            .await
            .unwrap();
        let got: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(got, ks);
    }
    assert_eq!(per_shard(&dev).await.iter().sum::<i64>(), 22);

    // A merged result fetched with an Execute row limit (asyncpg's
    // fetchrow, JDBC's fetch size): the first rows in order, then
    // PortalSuspended; a further Execute of that portal is refused, the
    // block goes on after a rollback.
    let mut c = c;
    let tx = c.transaction().await.unwrap();
    let st = tx
        .prepare("SELECT k FROM kv ORDER BY k DESC")
        .await
        .unwrap();
    let portal = tx.bind(&st, &[]).await.unwrap();
    let first: Vec<i32> = tx
        .query_portal(&portal, 3)
        .await
        .expect("first rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(first, vec![603, 602, 601]);
    let e = tx
        .query_portal(&portal, 3)
        .await
        .expect_err("no more rows kept");
    assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{e:?}");
    tx.rollback().await.unwrap();
    // A limit above the row count: every row and the command's end.
    let tx = c.transaction().await.unwrap();
    let st = tx.prepare("SELECT count(*) FROM kv").await.unwrap();
    let portal = tx.bind(&st, &[]).await.unwrap();
    let rows = tx.query_portal(&portal, 5).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(0), 22);
    tx.commit().await.unwrap();

    // Binary COPY FROM STDIN is split by key; malformed data or a NULL key
    // is refused (nothing stays) and the connection goes on.
    let tuple = |k: Option<i32>, v: &[u8]| {
        let mut t = 2i16.to_be_bytes().to_vec();
        match k {
            Some(k) => {
                t.extend_from_slice(&4i32.to_be_bytes());
                t.extend_from_slice(&k.to_be_bytes());
            }
            None => t.extend_from_slice(&(-1i32).to_be_bytes()),
        }
        t.extend_from_slice(&(v.len() as i32).to_be_bytes());
        t.extend_from_slice(v);
        t
    };
    let mut good = b"PGCOPY\n\xff\r\n\0".to_vec();
    good.extend_from_slice(&[0; 8]);
    for k in 700..720 {
        good.extend(tuple(Some(k), b"bin"));
    }
    let mut null_key = good.clone();
    null_key.extend(tuple(None, b"x"));
    null_key.extend_from_slice(&(-1i16).to_be_bytes());
    let mut cut = good.clone();
    cut.truncate(cut.len() - 3);
    good.extend_from_slice(&(-1i16).to_be_bytes());
    async fn copy_bin(
        c: &tokio_postgres::Client,
        data: Vec<u8>,
    ) -> Result<u64, tokio_postgres::Error> {
        use futures_util::SinkExt;
        let sink = c
            .copy_in("COPY kv (k, v) FROM STDIN (FORMAT binary)")
            .await?;
        futures_util::pin_mut!(sink);
        sink.send(bytes::Bytes::from(data)).await?;
        sink.finish().await
    }
    let e = copy_bin(&c, cut).await.expect_err("truncated");
    assert_eq!(e.code(), Some(&SqlState::BAD_COPY_FILE_FORMAT), "{e:?}");
    let e = copy_bin(&c, null_key).await.expect_err("NULL key");
    assert_eq!(e.code(), Some(&SqlState::NOT_NULL_VIOLATION), "{e:?}");
    assert_eq!(per_shard(&dev).await.iter().sum::<i64>(), 22);
    assert_eq!(copy_bin(&c, good).await.expect("binary COPY"), 20);
    let counts = per_shard(&dev).await;
    assert_eq!(counts.iter().sum::<i64>(), 42);
    let v: String = c
        .query_one("SELECT v FROM kv WHERE k = 719", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "bin");
}
