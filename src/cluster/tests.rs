//! Tests that start real PostgreSQL servers.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::data_dir;
use super::os_user::RunAs;
use super::ports;
use super::template::Template;
use super::*;

/// Runs `sql` through psql against `inst`; Ok(trimmed output) or Err(stderr).
fn psql(cluster_bin: &Path, inst: &PgInstance, sql: &str) -> Result<String, String> {
    let out = Command::new(cluster_bin.join("psql"))
        .arg(inst.dsn())
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Pids of processes whose working directory is under `root` (every
/// postmaster and backend of an instance in `root` has its data dir as cwd).
fn processes_under(root: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) {
            if cwd.starts_with(root) && super::process::pid_alive(pid) {
                pids.push(pid);
            }
        }
    }
    pids
}

fn bin_dir() -> PathBuf {
    find_pg_bin_dir().unwrap()
}

#[test]
fn two_shards_start_query_stop() {
    let t0 = Instant::now();
    let mut cluster = LocalCluster::start(&ClusterOptions::default()).unwrap();
    let started = t0.elapsed();
    let bin = bin_dir();

    assert_eq!(cluster.shards.len(), 2);
    let names: Vec<&str> = cluster.instances().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["shard0", "shard1", "catalog"]);
    let mut ports: Vec<u16> = cluster.instances().map(|i| i.port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3, "distinct ports");

    for inst in cluster.instances() {
        assert!(inst.is_running(), "{} running", inst.name);
        assert_eq!(
            inst.dsn(),
            format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                inst.port
            )
        );
        assert_eq!(psql(&bin, inst, "select 1").unwrap(), "1", "{}", inst.name);
    }
    let shard = &cluster.shards[0];
    for (setting, want) in [
        ("max_prepared_transactions", "150"),
        ("wal_level", "logical"),
        ("max_connections", "300"),
        ("max_wal_senders", "10"),
        ("max_replication_slots", "10"),
        ("shared_buffers", "128MB"),
        ("fsync", "off"),
        ("synchronous_commit", "off"),
        ("full_page_writes", "off"),
        ("lc_collate", "C"),
        ("server_encoding", "UTF8"),
        ("listen_addresses", "127.0.0.1"),
    ] {
        assert_eq!(
            psql(&bin, shard, &format!("show {setting}")).unwrap(),
            want,
            "{setting}"
        );
    }
    assert!(shard.log_file().exists());
    assert!(cluster.bin("pgbench").exists());

    let root = cluster.data_root().to_path_buf();
    assert!(!processes_under(&root).is_empty());
    let t1 = Instant::now();
    cluster.stop().unwrap();
    let stopped = t1.elapsed();
    eprintln!("2 shards + catalog: start {started:.2?}, stop {stopped:.2?}");

    assert!(
        processes_under(&root).is_empty(),
        "left: {:?}",
        processes_under(&root)
    );
    assert!(!root.exists(), "temp root removed");
    assert!(cluster.instances().all(|i| !i.is_running()));
    cluster.stop().unwrap(); // idempotent
}

#[test]
fn stop_and_restart_one_instance() {
    let opts = ClusterOptions {
        shards: 1,
        ..Default::default()
    };
    let mut cluster = LocalCluster::start(&opts).unwrap();
    let bin = bin_dir();
    let port = cluster.shards[0].port;
    psql(
        &bin,
        &cluster.shards[0],
        "create table t (x int); insert into t values (7)",
    )
    .unwrap();

    cluster.shards[0].stop(StopMode::Fast).unwrap();
    assert!(!cluster.shards[0].is_running());
    assert!(psql(&bin, &cluster.shards[0], "select 1").is_err());
    assert!(!cluster.shards[0].data_dir.join("postmaster.pid").exists());
    assert!(cluster.catalog.is_running(), "catalog unaffected");
    cluster.shards[0].stop(StopMode::Fast).unwrap(); // no-op when stopped

    // Restarting needs the same port: taken, it fails with the log tail.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let err = cluster.shards[0].start().unwrap_err().to_string();
    assert!(err.contains("already in use"), "{err}");
    assert!(
        err.contains("Address already in use"),
        "log tail quoted: {err}"
    );
    drop(squatter);

    cluster.shards[0].start().unwrap();
    assert_eq!(cluster.shards[0].port, port, "same port");
    assert_eq!(
        psql(&bin, &cluster.shards[0], "select x from t").unwrap(),
        "7"
    );

    // Immediate stop, then crash recovery on start.
    cluster.shards[0].stop(StopMode::Immediate).unwrap();
    assert!(!cluster.shards[0].is_running());
    cluster.shards[0].start().unwrap();
    cluster.shards[0].start().unwrap(); // no-op when running
    assert_eq!(
        psql(&bin, &cluster.shards[0], "select x from t").unwrap(),
        "7"
    );

    let root = cluster.data_root().to_path_buf();
    drop(cluster);
    assert!(processes_under(&root).is_empty());
    assert!(!root.exists());
}

#[test]
fn panic_in_test_still_tears_down() {
    let root = std::sync::Mutex::new(None::<PathBuf>);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cluster = LocalCluster::start(&ClusterOptions {
            shards: 1,
            ..Default::default()
        })
        .unwrap();
        *root.lock().unwrap() = Some(cluster.data_root().to_path_buf());
        panic!("test failure while the cluster is up");
    }));
    assert!(result.is_err());
    let root = root.into_inner().unwrap().expect("cluster had started");
    assert!(processes_under(&root).is_empty());
    assert!(!root.exists());
}

#[test]
fn user_data_dir_is_reused_and_kept() {
    let holder = tempfile::tempdir().unwrap();
    // As root, a 0700 parent keeps PostgreSQL's user out: reported up front.
    std::fs::set_permissions(holder.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let root = holder.path().join("data");
    std::fs::create_dir(&root).unwrap();
    if nix::unistd::Uid::effective().is_root() {
        let opts = ClusterOptions {
            shards: 1,
            data_dir: Some(root.clone()),
            ..Default::default()
        };
        let err = LocalCluster::start(&opts).unwrap_err();
        assert!(matches!(err, ClusterError::InvalidOption(_)), "{err}");
        assert!(err.to_string().contains("cannot enter"), "{err}");
    }
    std::fs::set_permissions(holder.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    let bin = bin_dir();
    let opts = ClusterOptions {
        shards: 1,
        data_dir: Some(root.clone()),
        durable: true,
        ..Default::default()
    };
    let mut cluster = LocalCluster::start(&opts).unwrap();
    assert_eq!(psql(&bin, &cluster.shards[0], "show fsync").unwrap(), "on");
    psql(
        &bin,
        &cluster.shards[0],
        "create table kept (v text); insert into kept values ('here')",
    )
    .unwrap();
    cluster.stop().unwrap();
    assert!(
        root.join("shard0/PG_VERSION").exists(),
        "user data dir kept"
    );
    assert!(processes_under(&root).is_empty());

    let opts = ClusterOptions {
        durable: false,
        ..opts
    };
    let cluster = LocalCluster::start(&opts).unwrap();
    assert_eq!(
        psql(&bin, &cluster.shards[0], "select v from kept").unwrap(),
        "here"
    );
    assert_eq!(psql(&bin, &cluster.shards[0], "show fsync").unwrap(), "off");
    drop(cluster);
    assert!(processes_under(&root).is_empty());
}

#[test]
fn start_failure_includes_log_tail_and_cleans_up() {
    let opts = ClusterOptions {
        shards: 1,
        extra_settings: vec![("shared_buffers".into(), "lots".into())],
        ..Default::default()
    };
    let err = LocalCluster::start(&opts).unwrap_err();
    let text = err.to_string();
    let ClusterError::StartFailed {
        data_dir, log_tail, ..
    } = &err
    else {
        panic!("{text}")
    };
    assert!(log_tail.contains("shared_buffers"), "{text}");
    assert!(text.contains("invalid value for parameter"), "{text}");
    let root = data_dir.parent().unwrap();
    assert!(processes_under(root).is_empty());
    assert!(!root.exists(), "temp root removed after failed start");
}

#[test]
fn bad_extra_setting_is_rejected_up_front() {
    let opts = ClusterOptions {
        extra_settings: vec![("port = 1\nfoo".into(), "1".into())],
        ..Default::default()
    };
    assert!(matches!(
        LocalCluster::start(&opts),
        Err(ClusterError::InvalidOption(_))
    ));
}

/// A temp dir the PostgreSQL user can enter.
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A prepared, not yet started instance named `name` under `root`.
fn bare_instance(root: &Path, name: &str) -> PgInstance {
    let bin = bin_dir();
    let run_as = RunAs::resolve().unwrap();
    let root = std::fs::canonicalize(root).unwrap();
    let inst = PgInstance::new(name, root.join(name), &bin, &run_as).unwrap();
    let template =
        Template::ensure(&bin, &run_as, &super::tmp_base::temp_base(&run_as).unwrap()).unwrap();
    data_dir::prepare(&inst.data_dir, &bin, &run_as, template.as_ref()).unwrap();
    inst
}

#[test]
fn taken_port_is_retried_with_another() {
    let root = open_tempdir();
    let mut inst = bare_instance(root.path(), "shard0");
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = blocker.local_addr().unwrap().port();
    let mut offered = vec![taken];
    let mut next = || match offered.pop() {
        Some(p) => Ok(p),
        None => ports::pick_free_port(),
    };
    inst.start_on_free_port(false, &[], &mut next).unwrap();
    assert_ne!(inst.port, taken);
    assert_eq!(psql(&bin_dir(), &inst, "select 1").unwrap(), "1");
    let log = std::fs::read_to_string(inst.log_file()).unwrap();
    assert!(
        log.contains("Address already in use"),
        "first attempt clashed"
    );
    inst.stop(StopMode::Fast).unwrap();
    assert!(processes_under(root.path()).is_empty());
}

#[test]
fn leftovers_of_dead_processes_are_reaped() {
    let base = open_tempdir();
    // A pid that is certainly dead: a child we started and waited for.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let own = super::reap::own_prefix();
    let dead_prefix = own.replace(&format!("-{}-", std::process::id()), &format!("-{dead}-"));
    let stale = base.path().join(format!("{dead_prefix}abc"));
    std::fs::create_dir(&stale).unwrap();
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut inst = bare_instance(&stale, "shard0");
    inst.start_on_free_port(false, &[], &mut ports::pick_free_port)
        .unwrap();
    assert!(inst.is_running());
    // A root of a live process (ours) must be left alone.
    let live = base.path().join(format!("{own}xyz"));
    std::fs::create_dir(&live).unwrap();

    super::reap::reap_stale(base.path());
    assert!(!inst.is_running());
    assert!(processes_under(&stale).is_empty());
    assert!(!stale.exists());
    assert!(live.exists());
}

#[test]
fn cluster_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<LocalCluster>();
    send_sync::<PgInstance>();
    send_sync::<ClusterError>();
}

#[test]
fn busy_data_dir_is_refused_and_left_alone() {
    let holder = open_tempdir();
    let opts = ClusterOptions {
        shards: 1,
        data_dir: Some(holder.path().join("d")),
        ..Default::default()
    };
    let first = LocalCluster::start(&opts).unwrap();
    let err = LocalCluster::start(&opts).unwrap_err();
    assert!(err.to_string().contains("already running"), "{err}");
    assert!(
        first.instances().all(PgInstance::is_running),
        "first cluster untouched"
    );
    assert_eq!(psql(&bin_dir(), &first.shards[0], "select 1").unwrap(), "1");
    drop(first);
    assert!(processes_under(holder.path()).is_empty());
}
