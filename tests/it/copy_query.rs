//! `COPY (query) TO STDOUT` through the router compared byte for byte with
//! the same COPY on a plain PostgreSQL database holding the same rows:
//! text, CSV (HEADER, DELIMITER, NULL, FORCE_QUOTE) and binary, for a query
//! on one shard, queries whose shards' streams are concatenated (compared
//! as sets of lines or tuples, as their order is the shards'), and merged
//! queries (ORDER BY/LIMIT, aggregates with a final step), in the simple
//! protocol (psql) and the extended protocol (tokio-postgres `copy_out`).

use futures_util::{pin_mut, TryStreamExt};

use crate::common;

/// Runs psql with `-c sql` against `port`/`db`; returns stdout's bytes.
fn psql(dev: &pg_router::dev::DevCluster, port: u16, db: &str, sql: &str) -> Vec<u8> {
    let out = std::process::Command::new(dev.cluster.bin("psql"))
        .args([
            "-X",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
        ])
        .args(["-c", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The data lines of a text/CSV COPY output, sorted (`skip` header lines
/// kept in place first).
fn sorted_lines(b: &[u8], skip: usize) -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = b.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect();
    let mut rest = lines.split_off(skip.min(lines.len()));
    rest.sort();
    lines.extend(rest);
    lines
}

/// The tuples of a binary COPY output, sorted, after checking its 19-byte
/// header and 2-byte trailer.
fn binary_tuples(b: &[u8]) -> Vec<Vec<u8>> {
    assert!(b.starts_with(b"PGCOPY\n\xff\r\n\0"), "binary header");
    assert!(b.ends_with(&[0xff, 0xff]), "binary trailer");
    let mut pos = 19;
    let mut out = Vec::new();
    while pos + 2 <= b.len() - 2 {
        let start = pos;
        let n = i16::from_be_bytes([b[pos], b[pos + 1]]);
        pos += 2;
        for _ in 0..n {
            let len = i32::from_be_bytes([b[pos], b[pos + 1], b[pos + 2], b[pos + 3]]);
            pos += 4 + len.max(0) as usize;
        }
        out.push(b[start..pos].to_vec());
    }
    assert_eq!(pos, b.len() - 2, "tuples end at the trailer");
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_query_matches_postgres() {
    let dev = common::start(3, 4).await;
    let router = common::connect(&dev).await;
    let admin = common::connect_direct(&dev.cluster.catalog).await;
    admin
        .batch_execute("CREATE DATABASE reference")
        .await
        .unwrap();
    let cat = &dev.cluster.catalog;
    let reference = common::connect_dsn(&format!(
        "host={} port={} user={} dbname=reference",
        cat.host, cat.port, cat.user
    ))
    .await;
    let ddl = "CREATE TABLE t (id bigint PRIMARY KEY, g int, h text, n numeric(8,2), b bool)";
    router.batch_execute(ddl).await.unwrap();
    reference.batch_execute(ddl).await.unwrap();
    common::add_table(&dev, "t", "id", "bigint").await;
    let words = [
        "plain",
        "tab\there",
        "comma,here",
        "quote\"d",
        "back\\slash",
        "new\nline",
        "",
        "\\.",
    ];
    let rows: Vec<String> = (1..=300)
        .map(|i: i64| {
            let h = match i % 11 {
                10 => "NULL".to_string(),
                k => {
                    let w = words[k as usize % words.len()];
                    format!("E'{}'", w.replace('\\', "\\\\").replace('\'', "''"))
                }
            };
            format!("({i}, {}, {h}, {}, {})", i % 7, i as f64 * 1.25, i % 2 == 0)
        })
        .collect();
    let insert = format!("INSERT INTO t VALUES {}", rows.join(", "));
    router.batch_execute(&insert).await.unwrap();
    reference.batch_execute(&insert).await.unwrap();
    let rport = dev.router.addr.port();
    let cport = cat.port;

    // Ordered results: byte for byte, both protocols.
    for sql in [
        "COPY (SELECT id, g, h FROM t WHERE id = 7) TO STDOUT",
        "COPY (SELECT id, h, n FROM t ORDER BY id) TO STDOUT",
        "COPY (SELECT id, h, b FROM t ORDER BY id DESC LIMIT 50 OFFSET 5) TO STDOUT (FORMAT csv, HEADER, FORCE_QUOTE (h), NULL 'NULL')",
        "COPY (SELECT g, count(*), string_agg(h, ';' ORDER BY id), round(avg(n), 1) FROM t GROUP BY g ORDER BY g) TO STDOUT WITH (FORMAT csv, DELIMITER '|')",
        "COPY (SELECT h FROM t WHERE id < 40 ORDER BY id) TO STDOUT WITH CSV HEADER",
        "COPY (SELECT id, n, h, b FROM t ORDER BY id LIMIT 30) TO STDOUT (FORMAT binary)",
        "COPY (SELECT g, sum(id) / count(*) FROM t GROUP BY g ORDER BY 2) TO STDOUT (FORMAT binary)",
        "COPY (SELECT DISTINCT g FROM t ORDER BY g) TO STDOUT (FORMAT text, HEADER)",
    ] {
        let want = psql(&dev, cport, "reference", sql);
        let got = psql(&dev, rport, "postgres", sql);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "simple protocol: {sql}"
        );
        assert_eq!(got, want, "simple protocol: {sql}");
        let stream = router.copy_out(sql).await.expect("extended COPY");
        pin_mut!(stream);
        let mut ext = Vec::new();
        while let Some(chunk) = stream.try_next().await.expect("COPY data") {
            ext.extend_from_slice(&chunk);
        }
        assert_eq!(ext, want, "extended protocol: {sql}");
    }
    // Concatenated shard streams: the same lines or tuples, one header.
    for (sql, header) in [
        (
            "COPY (SELECT id, h FROM t WHERE g = 3) TO STDOUT (FORMAT csv, HEADER)",
            1,
        ),
        ("COPY (SELECT * FROM t) TO STDOUT", 0),
        (
            "COPY (SELECT id, h, n FROM t WHERE b) TO STDOUT (FORMAT text, HEADER, NULL '-')",
            1,
        ),
    ] {
        let want = psql(&dev, cport, "reference", sql);
        let got = psql(&dev, rport, "postgres", sql);
        assert_eq!(
            sorted_lines(&got, header),
            sorted_lines(&want, header),
            "{sql}"
        );
    }
    let sql = "COPY (SELECT id, h, n FROM t WHERE g <> 1) TO STDOUT (FORMAT binary)";
    assert_eq!(
        binary_tuples(&psql(&dev, rport, "postgres", sql)),
        binary_tuples(&psql(&dev, cport, "reference", sql))
    );
    let sql = "COPY t TO STDOUT (FORMAT binary)";
    assert_eq!(
        binary_tuples(&psql(&dev, rport, "postgres", sql)),
        binary_tuples(&psql(&dev, cport, "reference", sql)),
        "COPY table TO binary across shards"
    );
    // The session is still usable; an option the router does not apply
    // itself with a merged query is refused, not ignored.
    let e = router
        .simple_query("COPY (SELECT id FROM t ORDER BY id) TO STDOUT (ENCODING 'LATIN1')")
        .await
        .expect_err("refused");
    assert_eq!(common::sqlstate(&e), "0A000", "{e:?}");
    router.simple_query("SELECT 1").await.expect("usable");
    dev.stop().await;
}
