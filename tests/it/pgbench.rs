//! Acceptance: pgbench initializes a scale-10 database through the router
//! (1,000,000 accounts split by COPY), every row sits on the shard its
//! vindex names (checked with an independent MurmurHash3 implementation),
//! and `pgbench -S` / `-N` run in simple, extended and prepared modes with no
//! failed transaction.

use std::io::Cursor;

use crate::common;

/// Keyspace id of an int key per docs/vindexes.md, computed with the
/// `murmur3` crate (not the router's own hash): MurmurHash3 x64_128, seed 0,
/// over the i64 little-endian bytes; the keyspace id is h1 (the low 64 bits
/// of the crate's u128).
fn expected_ksid(v: i64) -> u64 {
    let h = murmur3::murmur3_x64_128(&mut Cursor::new(v.to_le_bytes()), 0).expect("hash");
    h as u64
}

/// Shard index for 2 equal key ranges: [0, 2^63) → shard0, [2^63, 2^64) → shard1.
fn expected_shard(v: i64) -> usize {
    (expected_ksid(v) >> 63) as usize
}

fn pgbench(dev: &pg_router::dev::DevCluster, extra: &[&str]) -> String {
    let mut args: Vec<String> = common::conn_args(dev);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("postgres".into());
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let (ok, out, err) = common::run_pg_tool(dev, "pgbench", &a);
    assert!(ok, "pgbench {extra:?} failed:\n{out}\n{err}");
    out + &err
}

fn processed(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("number of transactions actually processed"))
        .unwrap_or_else(|| panic!("no summary in pgbench output:\n{out}"));
    let nums = line.rsplit(':').next().unwrap_or("").trim();
    let (a, b) = nums.split_once('/').unwrap_or((nums, nums));
    (a.trim().parse().unwrap_or(0), b.trim().parse().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_init_placement_and_all_protocol_modes() {
    let dev = common::start(2, 10).await;

    pgbench(&dev, &["-i", "-s", "10", "-q"]);

    // 1,000,000 accounts in total, counted through the router (scatter count).
    let c = common::connect(&dev).await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM pgbench_accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1_000_000);
    let n: i64 = c
        .query_one("SELECT count(*) FROM pgbench_branches", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 10);

    // Placement, checked shard by shard against the independent hash.
    let tables = [
        ("pgbench_accounts", "aid"),
        ("pgbench_tellers", "tid"),
        ("pgbench_branches", "bid"),
    ];
    for (idx, s) in dev.cluster.shards.iter().enumerate() {
        let d = common::connect_direct(s).await;
        for (table, col) in tables {
            let rows = d
                .query(&format!("SELECT {col}::int8 FROM {table}"), &[])
                .await
                .unwrap();
            assert!(!rows.is_empty(), "{table} empty on {}", s.name);
            for r in rows {
                let v: i64 = r.get(0);
                assert_eq!(
                    expected_shard(v),
                    idx,
                    "{table}.{col}={v} found on {}",
                    s.name
                );
            }
        }
    }

    // Read-only and simple-update workloads in every protocol mode.
    for mode in ["simple", "extended", "prepared"] {
        for workload in ["-S", "-N"] {
            let out = pgbench(
                &dev,
                &[
                    workload, "-M", mode, "-c", "8", "-j", "2", "-t", "200", "-n",
                ],
            );
            let (done, want) = processed(&out);
            assert_eq!((done, want), (1600, 1600), "{workload} -M {mode}:\n{out}");
            if let Some(l) = out
                .lines()
                .find(|l| l.starts_with("number of failed transactions"))
            {
                assert!(l.contains(": 0 "), "{workload} -M {mode}: {l}");
            }
        }
    }

    // -N wrote 3 × 1600 history rows, each on the shard of its aid.
    let n: i64 = c
        .query_one("SELECT count(*) FROM pgbench_history", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4800);
    for (idx, s) in dev.cluster.shards.iter().enumerate() {
        let d = common::connect_direct(s).await;
        for r in d
            .query("SELECT aid::int8 FROM pgbench_history", &[])
            .await
            .unwrap()
        {
            assert_eq!(expected_shard(r.get(0)), idx);
        }
    }
    dev.stop().await;
}
