//! What an operator relies on, against real shards: cancel requests
//! (fast path, scatter-gather, extended protocol, a wrong key), client
//! authentication (SCRAM-SHA-256, MD5, trust; users file; psql and
//! tokio-postgres; malformed exchanges) and limits (max client
//! connections, pool checkout timeout, statement timeout passthrough,
//! authentication timeout).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pg_router::auth::{AuthConfig, AuthMethod, UserConfig, UserDb};
use pg_router::dev::DevCluster;
use pg_router::protocol::backend::error_code;
use postgres_protocol::message::frontend as fe;
use tokio::io::AsyncWriteExt;
use tokio_postgres::NoTls;

use crate::common;

/// Number of backends on all shards running a statement containing
/// `pg_sleep` (other than the probe itself).
async fn sleeping(dev: &DevCluster) -> i64 {
    let mut n = 0;
    for shard in &dev.cluster.shards {
        let d = common::connect_direct(shard).await;
        n += d
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                 AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
    }
    n
}

/// Waits until `n` backends run pg_sleep (10 s at most).
async fn wait_sleeping(dev: &DevCluster, n: i64) {
    let t0 = Instant::now();
    while sleeping(dev).await != n {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "expected {n} sleeping backends, have {}",
            sleeping(dev).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw CancelRequest (PostgreSQL docs §55.2.8) to the router.
async fn send_cancel(dev: &DevCluster, pid: i32, secret: i32) {
    let mut s = tokio::net::TcpStream::connect(dev.router.addr)
        .await
        .unwrap();
    let mut b = BytesMut::new();
    fe::cancel_request(pid, secret, &mut b);
    s.write_all(&b).await.unwrap();
    let _ = s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests() {
    let dev = common::start(2, 4).await;
    let c = Arc::new(common::connect(&dev).await);
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    common::add_table(&dev, "t", "id", "int").await;
    c.batch_execute("INSERT INTO t (id) VALUES (1), (2), (3), (4), (5), (6)")
        .await
        .unwrap();
    let per_shard = common::ids_per_shard(&dev, "t").await;
    assert!(per_shard.iter().all(|ids| !ids.is_empty()), "{per_shard:?}");

    // Fast path (one shard), scatter-gather (every shard), extended
    // protocol: each is cancelled within seconds with 57014, and the
    // connection keeps working.
    let cases: [(&str, i64); 3] = [
        ("SELECT pg_sleep(60) FROM t WHERE id = 1", 1),
        ("SELECT count(*) FROM t WHERE pg_sleep(60) IS NOT NULL", 2),
        ("extended", 1),
    ];
    for (sql, backends) in cases {
        let token = c.cancel_token();
        let t0 = Instant::now();
        let run = {
            let c = c.clone();
            tokio::spawn(async move {
                if sql == "extended" {
                    c.query("SELECT pg_sleep($1)", &[&60f64]).await.map(|_| ())
                } else {
                    c.simple_query(sql).await.map(|_| ())
                }
            })
        };
        wait_sleeping(&dev, backends).await;
        token.cancel_query(NoTls).await.unwrap();
        let e = run.await.unwrap().unwrap_err();
        assert_eq!(common::sqlstate(&e), "57014", "{sql}: {e:?}");
        assert!(t0.elapsed() < Duration::from_secs(20), "{sql}");
        wait_sleeping(&dev, 0).await;
        let n: i64 = c
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 6, "the connection still works after cancelling {sql}");
    }

    // Inside a transaction block the cancel fails the block (25P02 until
    // ROLLBACK), exactly as on PostgreSQL.
    c.batch_execute("BEGIN").await.unwrap();
    let token = c.cancel_token();
    let run = {
        let c = c.clone();
        tokio::spawn(async move { c.simple_query("SELECT pg_sleep(60)").await })
    };
    wait_sleeping(&dev, 1).await;
    token.cancel_query(NoTls).await.unwrap();
    let e = run.await.unwrap().unwrap_err();
    assert_eq!(common::sqlstate(&e), "57014");
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "25P02");
    c.batch_execute("ROLLBACK").await.unwrap();

    // A CancelRequest with the right process id but a wrong secret key, or
    // an unknown process id, cancels nothing.
    let (mut s, mut buf, frames) = common::raw_session(dev.router.addr).await;
    let mut out = BytesMut::new();
    let key = frames
        .iter()
        .find(|f| f[0] == b'K')
        .expect("BackendKeyData");
    let pid = i32::from_be_bytes([key[5], key[6], key[7], key[8]]);
    let secret = i32::from_be_bytes([key[9], key[10], key[11], key[12]]);
    out.clear();
    fe::query("SELECT pg_sleep(1.5)", &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    wait_sleeping(&dev, 1).await;
    send_cancel(&dev, pid, secret.wrapping_add(1)).await;
    send_cancel(&dev, pid.wrapping_add(1), secret).await;
    assert_eq!(common::read_until(&mut s, &mut buf, b'Z').await, b"TDCZ");
    // The right key cancels.
    out.clear();
    fe::query("SELECT pg_sleep(60)", &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    wait_sleeping(&dev, 1).await;
    send_cancel(&dev, pid, secret).await;
    assert_eq!(common::read_until(&mut s, &mut buf, b'Z').await, b"TEZ");
    dev.stop().await;
}

/// Connects to the router as `user` with `password`.
async fn connect_as(
    dev: &DevCluster,
    user: &str,
    password: Option<&str>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    connect_port(dev.router.addr.port(), user, password)
        .await
        .map(|(c, _)| c)
}

/// The connection task's outcome (how the server ended the connection).
type ConnEnd = tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>;

/// Client settings for 127.0.0.1:`port` as `user`.
fn client_config(port: u16, user: &str, password: Option<&str>) -> tokio_postgres::Config {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user(user)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(10));
    if let Some(p) = password {
        cfg.password(p);
    }
    cfg
}

/// Connects to 127.0.0.1:`port` as `user`; also returns the connection task.
async fn connect_port(
    port: u16,
    user: &str,
    password: Option<&str>,
) -> Result<(tokio_postgres::Client, ConnEnd), tokio_postgres::Error> {
    let (client, conn) = client_config(port, user, password).connect(NoTls).await?;
    Ok((client, tokio::spawn(conn)))
}

/// Connects with `cfg`, retrying for up to 10 s (a place or a reload
/// pending).
async fn connect_config_retry(cfg: &tokio_postgres::Config) -> (tokio_postgres::Client, ConnEnd) {
    let t0 = Instant::now();
    loop {
        match cfg.connect(NoTls).await {
            Ok((c, conn)) => return (c, tokio::spawn(conn)),
            Err(e) => {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "cannot connect: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// [`connect_config_retry`] as `user` on `port`.
async fn connect_retry(
    port: u16,
    user: &str,
    password: Option<&str>,
) -> (tokio_postgres::Client, ConnEnd) {
    connect_config_retry(&client_config(port, user, password)).await
}

/// SQLSTATE with which the server ended a connection (10 s at most).
async fn end_code(end: ConnEnd) -> String {
    let r = tokio::time::timeout(Duration::from_secs(10), end)
        .await
        .expect("connection still open")
        .unwrap();
    match r {
        // Not a server error: say what it was (a known rare flake).
        Err(e) if common::sqlstate(&e).is_empty() => format!("not a server error: {e:?}"),
        Err(e) => common::sqlstate(&e),
        Ok(()) => "closed without error".into(),
    }
}

/// Backend connections the router's pools have opened, all shards.
fn pool_connections_opened(dev: &DevCluster) -> u64 {
    let state = &dev.router.state;
    let routing = state.routing();
    let mut n = 0;
    for shard in routing.catalog.shard_names() {
        for w in 0..state.workers() {
            n += state
                .pool(shard, w)
                .map(|p| p.connections_opened())
                .unwrap_or(0);
        }
    }
    n
}

/// Sends a raw StartupMessage with `params`; returns the socket.
async fn raw_startup(dev: &DevCluster, params: &[(&str, &str)]) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(dev.router.addr)
        .await
        .unwrap();
    let mut out = BytesMut::new();
    fe::startup_message(params.iter().copied(), &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    s
}

/// Reads up to an ErrorResponse and returns its SQLSTATE and message.
async fn read_error(s: &mut tokio::net::TcpStream, buf: &mut BytesMut) -> (String, String) {
    let frames = common::read_frames(s, buf, b'E').await;
    let e = frames.last().unwrap();
    let body = &e[5..];
    let fields = pg_router::protocol::backend::error_fields(body).unwrap();
    let message = fields
        .iter()
        .find(|(t, _)| *t == b'M')
        .map(|(_, m)| m.to_string())
        .unwrap_or_default();
    (error_code(body).unwrap_or_default(), message)
}

/// Reads until the router closes `s` (10 s at most); returns the bytes.
async fn read_to_close(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(matches!(r, Ok(Ok(_))), "connection not closed: {r:?}");
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_auth() {
    let dir = tempfile::tempdir().unwrap();
    let users_file = dir.path().join("users.txt");
    let filed = postgres_protocol::password::scram_sha_256(b"file-pw");
    std::fs::write(
        &users_file,
        format!("; router users\n\"filed\" \"{filed}\"\n"),
    )
    .unwrap();
    let auth = AuthConfig {
        method: AuthMethod::ScramSha256,
        users_file: Some(users_file.clone()),
        admin_users: Vec::new(),
        users: vec![
            UserConfig {
                name: "app".into(),
                password: Some("app-pw".into()),
                method: None,
            },
            UserConfig {
                name: "legacy".into(),
                password: Some(postgres_protocol::password::md5(b"old-pw", "legacy")),
                method: Some(AuthMethod::Md5),
            },
            UserConfig {
                name: "ops".into(),
                password: None,
                method: Some(AuthMethod::Trust),
            },
        ],
    };
    let a = auth.clone();
    let dev = common::start_config(2, 4, move |c| c.auth = a).await;

    // Refusals first: 28P01 for a wrong password and for an unknown user
    // (same message, after a full exchange), and no shard connection opened.
    for (user, pw, method) in [
        ("app", "wrong", "SCRAM"),
        ("nobody", "x", "SCRAM"),
        ("legacy", "wrong", "MD5"),
        ("filed", "app-pw", "SCRAM"),
    ] {
        let e = connect_as(&dev, user, Some(pw))
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} got in"));
        assert_eq!(common::sqlstate(&e), "28P01", "{user} ({method}): {e}");
        assert_eq!(
            common::db_message(&e),
            format!("password authentication failed for user \"{user}\"")
        );
    }
    let e = connect_as(&dev, "app", None)
        .await
        .expect_err("no password");
    assert!(format!("{e:?}").contains("password missing"), "{e:?}");
    assert_eq!(
        pool_connections_opened(&dev),
        0,
        "a shard was contacted before authentication"
    );

    // The right secrets: SCRAM (config plaintext and users-file verifier),
    // MD5, trust.
    for (user, pw) in [
        ("app", Some("app-pw")),
        ("filed", Some("file-pw")),
        ("legacy", Some("old-pw")),
        ("ops", None),
    ] {
        let c = connect_as(&dev, user, pw)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        let n: i32 = c.query_one("SELECT 41 + 1", &[]).await.unwrap().get(0);
        assert_eq!(n, 42);
    }

    // psql (libpq) with PGPASSWORD, right and wrong.
    let psql = |pw: &str| {
        let out = std::process::Command::new(dev.cluster.bin("psql"))
            .args(["-h", "127.0.0.1", "-p", &dev.router.addr.port().to_string()])
            .args(["-U", "app", "-d", "postgres", "-XAtc", "SELECT 6 * 7"])
            .env("PGPASSWORD", pw)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = psql("app-pw");
    assert!(ok && stdout == "42", "{stdout} {stderr}");
    let (ok, _, stderr) = psql("nope");
    assert!(
        !ok && stderr.contains("password authentication failed for user \"app\""),
        "{stderr}"
    );

    // Secrets as PostgreSQL stores them (pg_authid.rolpassword), SCRAM and
    // MD5, work unchanged from the users file (reloaded in place; connected
    // clients are not affected).
    let keep = connect_as(&dev, "app", Some("app-pw")).await.unwrap();
    let shard = common::connect_direct(&dev.cluster.shards[0]).await;
    let mut lines = format!("\"filed\" \"{filed}\"\n");
    for (role, enc) in [("role_scram", "scram-sha-256"), ("role_md5", "md5")] {
        shard
            .batch_execute(&format!(
                "SET password_encryption = '{enc}'; CREATE ROLE {role} LOGIN PASSWORD '{role}-pw'"
            ))
            .await
            .unwrap();
        let secret: String = shard
            .query_one(
                "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                &[&role],
            )
            .await
            .unwrap()
            .get(0);
        lines.push_str(&format!("\"{role}\" \"{secret}\"\n"));
    }
    std::fs::write(&users_file, lines).unwrap();
    let mut md5_auth = auth.clone();
    md5_auth.method = AuthMethod::Md5;
    dev.router.state.set_users(UserDb::load(&md5_auth).unwrap());
    for role in ["role_scram", "role_md5"] {
        let c = connect_as(&dev, role, Some(&format!("{role}-pw")))
            .await
            .unwrap_or_else(|e| panic!("{role}: {e}"));
        c.query_one("SELECT 1", &[]).await.unwrap();
        let e = connect_as(&dev, role, Some("x")).await.err().unwrap();
        assert_eq!(common::sqlstate(&e), "28P01", "{role}: {e}");
    }
    keep.query_one("SELECT 1", &[]).await.unwrap();

    // Malformed exchanges: 08P01, the connection is closed, the router
    // keeps serving.
    dev.router.state.set_users(UserDb::load(&auth).unwrap());
    let mut buf = BytesMut::new();
    let mut s = raw_startup(&dev, &[("database", "postgres")]).await;
    let (code, msg) = read_error(&mut s, &mut buf).await;
    assert_eq!(code, "28000", "{msg}");
    let mut out = BytesMut::new();
    for case in ["mechanism", "huge", "query", "scram-p"] {
        let mut s = raw_startup(&dev, &[("user", "app")]).await;
        buf.clear();
        let frames = common::read_frames(&mut s, &mut buf, b'R').await;
        // AuthenticationSASL (code 10) offering SCRAM-SHA-256.
        assert_eq!(&frames[0][5..9], &10i32.to_be_bytes());
        assert!(frames[0].ends_with(b"SCRAM-SHA-256\0\0"));
        out.clear();
        match case {
            "mechanism" => fe::sasl_initial_response("PLAIN", b"\0app\0app-pw", &mut out).unwrap(),
            "huge" => {
                // A PasswordMessage announcing ~2 GiB: refused from its header.
                out.extend_from_slice(&[b'p', 0x7f, 0xff, 0xff, 0xff]);
            }
            "query" => fe::query("SELECT 1", &mut out).unwrap(),
            _ => fe::sasl_initial_response(
                "SCRAM-SHA-256",
                b"p=tls-server-end-point,,n=,r=abcdef",
                &mut out,
            )
            .unwrap(),
        }
        s.write_all(&out).await.unwrap();
        let (code, msg) = read_error(&mut s, &mut buf).await;
        assert_eq!(code, "08P01", "{case}: {msg}");
        read_to_close(&mut s).await;
    }
    keep.query_one("SELECT 1", &[]).await.unwrap();
    connect_as(&dev, "app", Some("app-pw")).await.unwrap();
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits() {
    let dev = common::start_config(2, 1, |c| {
        c.limits.max_client_connections = 3;
        c.limits.auth_timeout_ms = 500;
        c.limits.idle_in_transaction_timeout_ms = 1500;
        c.backend.checkout_timeout_ms = 300;
    })
    .await;
    let c1 = common::connect(&dev).await;
    c1.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    common::add_table(&dev, "t", "id", "int").await;
    c1.batch_execute("INSERT INTO t (id) VALUES (1), (2), (3), (4)")
        .await
        .unwrap();

    // max_client_connections = 3: the fourth is refused with 53300, and
    // admitted once a place is free.
    let c2 = common::connect(&dev).await;
    let c3 = common::connect(&dev).await;
    let e = tokio_postgres::connect(&common::router_dsn(&dev), NoTls)
        .await
        .err()
        .expect("fourth client admitted");
    assert_eq!(common::sqlstate(&e), "53300", "{e}");
    assert_eq!(common::db_message(&e), "sorry, too many clients already");
    drop(c3);
    let port = dev.router.addr.port();
    let (c3, _) = connect_retry(port, "postgres", None).await;

    // Pool of 1 per shard: a block holding shard X's connection makes
    // another client's statement on X wait for checkout_timeout_ms, then
    // fail with 57014 naming the shard; the client stays usable and other
    // shards keep serving.
    let per_shard = common::ids_per_shard(&dev, "t").await;
    let (on_x, on_y) = (per_shard[0][0], per_shard[1][0]);
    c1.batch_execute(&format!("BEGIN; SELECT * FROM t WHERE id = {on_x}"))
        .await
        .unwrap();
    let t0 = Instant::now();
    let e = c2
        .query("SELECT * FROM t WHERE id = $1", &[&on_x])
        .await
        .expect_err("checkout should time out");
    assert_eq!(common::sqlstate(&e), "57014", "{e}");
    let shard_x = &dev.cluster.shards[0].name;
    assert!(
        common::db_message(&e).contains(&format!("connection to shard \"{shard_x}\"")),
        "{e:?}"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    let rows = c2
        .query("SELECT * FROM t WHERE id = $1", &[&on_y])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    c1.batch_execute("COMMIT").await.unwrap();
    let rows = c2
        .query("SELECT * FROM t WHERE id = $1", &[&on_x])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);

    // statement_timeout from the startup options (PGOPTIONS) and from SET
    // reaches the shards.
    drop(c3);
    let mut cfg = client_config(port, "postgres", None);
    cfg.options("-c statement_timeout=200");
    let (c4, _) = connect_config_retry(&cfg).await;
    let st: String = c4
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(st, "200ms");
    let e = c4
        .batch_execute(&format!("SELECT pg_sleep(5) FROM t WHERE id = {on_x}"))
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "57014", "{e}");
    c2.batch_execute("SET statement_timeout = 150")
        .await
        .unwrap();
    let e = c2
        .batch_execute("SELECT count(*) FROM t WHERE pg_sleep(5) IS NOT NULL")
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "57014", "{e}");

    // A connection that never finishes startup is closed after
    // auth_timeout_ms with 57014.
    let mut s = tokio::net::TcpStream::connect(dev.router.addr)
        .await
        .unwrap();
    let mut out = BytesMut::new();
    fe::startup_message([("user", "postgres")], &mut out).unwrap();
    // Half a StartupMessage, then silence.
    s.write_all(&out[..out.len() / 2]).await.unwrap();
    let t0 = Instant::now();
    let rest = read_to_close(&mut s).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        String::from_utf8_lossy(&rest).contains("canceling authentication due to timeout"),
        "{rest:?}"
    );

    // idle_in_transaction_timeout_ms: a client idle inside a block is
    // closed with 25P03 and its write rolled back; idle outside a block is
    // fine.
    drop(c4);
    let (c5, end) = connect_retry(port, "postgres", None).await;
    c5.batch_execute("BEGIN; INSERT INTO t (id) VALUES (100)")
        .await
        .unwrap();
    assert_eq!(end_code(end).await, "25P03");
    let n: i64 = c1
        .query_one("SELECT count(*) FROM t WHERE id = 100", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the idle transaction's write was kept");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    c1.query_one("SELECT 1", &[]).await.unwrap();
    drop((c1, c2, c5));
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_and_sigterm_drain() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    let dev = common::start(2, 4).await;
    let admin = common::connect(&dev).await;
    admin
        .batch_execute("CREATE TABLE d (id int PRIMARY KEY)")
        .await
        .unwrap();
    common::add_table(&dev, "d", "id", "int").await;

    // A second router, the `pg-router serve` binary, on the same catalog.
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.txt");
    let line = |u: &str, pw: &str| {
        format!(
            "\"{u}\" \"{}\"\n",
            postgres_protocol::password::scram_sha_256(pw.as_bytes())
        )
    };
    std::fs::write(&users, line("app", "app-pw")).unwrap();
    let port = common::free_port();
    let config = dir.path().join("router.toml");
    let config_text = format!(
        "listen = \"127.0.0.1:{port}\"\ncatalog = \"{}\"\nworkers = 1\n\
         [limits]\nshutdown_timeout_ms = 3000\n[auth]\nusers_file = \"users.txt\"\n\
         admin_users = [\"app\"]\n",
        dev.catalog_dsn()
    );
    std::fs::write(&config, &config_text).unwrap();
    let log = dir.path().join("router.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pg-router"))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&config)
        .env(
            "PGROUTER_LOG",
            "info,pg_router::client=debug,pg_router::session=debug",
        )
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    let (idle, idle_end) = connect_retry(port, "app", Some("app-pw")).await;
    let (tx, tx_end) = connect_port(port, "app", Some("app-pw")).await.unwrap();
    let (stuck, stuck_end) = connect_port(port, "app", Some("app-pw")).await.unwrap();
    tx.batch_execute("BEGIN; INSERT INTO d (id) VALUES (1)")
        .await
        .unwrap();
    stuck
        .batch_execute("BEGIN; INSERT INTO d (id) VALUES (2)")
        .await
        .unwrap();

    // SIGHUP with an invalid file: an error naming the key, the running
    // configuration stays (users unchanged), clients unaffected.
    std::fs::write(&config, format!("{config_text}bogus_key = 1\n")).unwrap();
    std::fs::write(
        &users,
        format!("{}{}", line("app", "app-pw"), line("newbie", "n-pw")),
    )
    .unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    let t0 = Instant::now();
    while !std::fs::read_to_string(&log).unwrap().contains("bogus_key") {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no reload error logged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = connect_port(port, "newbie", Some("n-pw"))
        .await
        .err()
        .unwrap();
    assert_eq!(common::sqlstate(&e), "28P01");
    idle.query_one("SELECT 1", &[]).await.unwrap();
    // A valid file: the new user gets in; connected clients stay.
    std::fs::write(&config, &config_text).unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    let (newbie, newbie_end) = connect_retry(port, "newbie", Some("n-pw")).await;
    // The admin console's RELOAD does what SIGHUP does.
    let mut admin_cfg = client_config(port, "app", Some("app-pw"));
    admin_cfg.dbname("pgrouter");
    let (admin_console, _) = connect_config_retry(&admin_cfg).await;
    std::fs::write(&config, format!("{config_text}bogus_key = 1\n")).unwrap();
    let e = admin_console.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "22023", "{e:?}");
    assert!(format!("{e:?}").contains("bogus_key"), "{e:?}");
    std::fs::write(&config, &config_text).unwrap();
    admin_console.simple_query("RELOAD").await.unwrap();
    // JSON logs (--log-format json): one object per line; at debug level
    // each request is logged with its route kind and shards inside the
    // client's span.
    let logged = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = logged
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert!(lines.iter().any(|v| v["level"] == "ERROR"
        && v["fields"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("bogus_key")));
    let shard0 = &dev.cluster.shards[0].name;
    let shard1 = &dev.cluster.shards[1].name;
    let req = lines
        .iter()
        .find(|v| v["fields"]["message"] == "request" && v["fields"]["route"] == "fast_path")
        .unwrap_or_else(|| panic!("no fast_path request logged:\n{logged}"));
    let shards = req["fields"]["shards"].as_str().unwrap();
    assert!(shards == shard0 || shards == shard1, "{req}");
    let span = &req["spans"][0];
    assert_eq!(span["name"], "client", "{req}");
    assert_eq!(span["user"], "app", "{req}");
    assert!(span["id"].as_i64().is_some_and(|id| id > 0), "{req}");
    newbie.query_one("SELECT 1", &[]).await.unwrap();
    idle.query_one("SELECT 1", &[]).await.unwrap();

    // SIGTERM: no new clients; clients between transactions are closed
    // with 57P01; an open transaction may finish (and is closed after
    // COMMIT); one still open at the deadline is closed and rolled back;
    // the process exits 0.
    kill(pid, Signal::SIGTERM).unwrap();
    let t0 = Instant::now();
    assert_eq!(end_code(idle_end).await, "57P01");
    assert_eq!(end_code(newbie_end).await, "57P01");
    assert!(connect_port(port, "app", Some("app-pw")).await.is_err());
    tx.batch_execute("INSERT INTO d (id) VALUES (3); COMMIT")
        .await
        .unwrap();
    assert_eq!(end_code(tx_end).await, "57P01");
    assert_eq!(end_code(stuck_end).await, "57P01");
    let status = child.wait().unwrap();
    let took = t0.elapsed();
    assert!(
        status.success(),
        "exit status {status}: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let ids: Vec<i32> = admin
        .query("SELECT id FROM d ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![1, 3]);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("config reloaded"), "{log}");
    drop(stuck);
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_probes() {
    let mut dev =
        common::start_config(2, 4, |c| c.metrics_listen = Some("127.0.0.1:0".into())).await;
    let http = dev.router.http_addr.expect("metrics endpoint");
    assert_eq!(
        common::http_get(http, "/healthz").await,
        (200, "ok\n".into())
    );
    assert_eq!(
        common::http_get(http, "/readyz").await,
        (200, "ready\n".into())
    );
    assert_eq!(common::http_get(http, "/nope").await.0, 404);

    let c = common::connect(&dev).await;
    c.batch_execute("CREATE TABLE m (id int PRIMARY KEY, v int)")
        .await
        .unwrap();
    common::add_table(&dev, "m", "id", "int").await;
    let per_shard = {
        c.batch_execute(
            "INSERT INTO m (id, v) VALUES (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6)",
        )
        .await
        .unwrap();
        common::ids_per_shard(&dev, "m").await
    };
    let before = common::scrape(http).await;
    let fast = |s: &prometheus_parse::Scrape| {
        common::sample(s, "pgrouter_requests_total", &[("route", "fast_path")]).unwrap()
    };
    for id in 1..=20 {
        c.query("SELECT v FROM m WHERE id = $1", &[&(id % 6 + 1)])
            .await
            .unwrap();
    }
    c.query_one("SELECT count(*) FROM m", &[]).await.unwrap();
    let e = c
        .batch_execute("INSERT INTO m (id, v) VALUES (1, 0)")
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "23505");
    let (a, b) = (per_shard[0][0], per_shard[1][0]);
    c.batch_execute(&format!(
        "BEGIN; UPDATE m SET v = v + 1 WHERE id = {a}; UPDATE m SET v = v + 1 WHERE id = {b}; COMMIT"
    ))
    .await
    .unwrap();
    c.batch_execute(&format!(
        "BEGIN; UPDATE m SET v = 0 WHERE id = {a}; ROLLBACK"
    ))
    .await
    .unwrap();

    let after = common::scrape(http).await;
    // The extended-protocol SELECTs are one request each (Parse/Bind/.../Sync).
    assert!(
        fast(&after) - fast(&before) >= 20.0,
        "{} -> {}",
        fast(&before),
        fast(&after)
    );
    let scatter = |s: &prometheus_parse::Scrape| {
        common::sample(s, "pgrouter_requests_total", &[("route", "scatter_gather")]).unwrap_or(0.0)
    };
    assert!(scatter(&after) - scatter(&before) >= 1.0);
    for route in ["router", "fast_path", "scatter_gather"] {
        for q in ["0.5", "0.9", "0.99", "0.999"] {
            let v = common::sample(
                &after,
                "pgrouter_request_latency_seconds",
                &[("route", route), ("quantile", q)],
            );
            assert!(v.is_some_and(|v| v >= 0.0), "{route} {q}: {v:?}");
        }
    }
    let p50 = common::sample(
        &after,
        "pgrouter_request_latency_seconds",
        &[("route", "fast_path"), ("quantile", "0.5")],
    )
    .unwrap();
    let p999 = common::sample(
        &after,
        "pgrouter_request_latency_seconds",
        &[("route", "fast_path"), ("quantile", "0.999")],
    )
    .unwrap();
    assert!(p50 > 0.0 && p50 < 1.0 && p999 >= p50, "{p50} {p999}");
    assert!(common::sample(&after, "pgrouter_errors_total", &[("class", "23")]).unwrap() >= 1.0);
    for (kind, min) in [("two_phase", 1.0), ("rollback", 1.0)] {
        let v = common::sample(&after, "pgrouter_transactions_total", &[("kind", kind)]).unwrap();
        assert!(v >= min, "{kind}: {v}");
    }
    assert!(common::sample(&after, "pgrouter_client_connections", &[]).unwrap() >= 1.0);
    assert!(common::sample(&after, "pgrouter_catalog_version", &[]).unwrap() >= 1.0);
    assert!(common::sample(
        &after,
        "pgrouter_catalog_generation",
        &[("keyspace", "main")]
    )
    .is_some());
    assert_eq!(
        common::sample(&after, "pgrouter_in_doubt_transactions", &[]),
        Some(0.0)
    );
    for shard in &dev.cluster.shards {
        let l = [("shard", shard.name.as_str())];
        assert_eq!(common::sample(&after, "pgrouter_pool_size", &l), Some(4.0));
        assert_eq!(
            common::sample(&after, "pgrouter_pool_in_use", &l),
            Some(0.0)
        );
        assert_eq!(
            common::sample(&after, "pgrouter_pool_waiting", &l),
            Some(0.0)
        );
        assert!(common::sample(&after, "pgrouter_pool_idle", &l).unwrap() >= 1.0);
    }
    // A client holding a connection shows as in use.
    c.batch_execute(&format!("BEGIN; SELECT v FROM m WHERE id = {a}"))
        .await
        .unwrap();
    let held = common::scrape(http).await;
    let shard0 = dev.cluster.shards[0].name.clone();
    assert_eq!(
        common::sample(&held, "pgrouter_pool_in_use", &[("shard", &shard0)]),
        Some(1.0)
    );
    c.batch_execute("COMMIT").await.unwrap();

    // /readyz: 503 naming the shard while one is down, 200 once it is back.
    let name = dev.cluster.shards[1].name.clone();
    dev.cluster.shards[1]
        .stop(pg_router::cluster::StopMode::Fast)
        .unwrap();
    let (status, body) = common::http_get(http, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&format!("shard \"{name}\"")), "{body}");
    assert_eq!(common::http_get(http, "/healthz").await.0, 200);
    dev.cluster.shards[1].start().unwrap();
    assert_eq!(common::http_get(http, "/readyz").await.0, 200);
    dev.stop().await;
}
