//! One local PostgreSQL server: start, stop, restart, status.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::conf;
use super::error::ClusterError;
use super::os_user::RunAs;
use super::process;

/// Seconds `pg_ctl start -w` waits for the server to accept connections.
const START_TIMEOUT_SECS: u32 = 60;

/// Start attempts with freshly picked ports before giving up on port clashes.
const PORT_ATTEMPTS: usize = 8;

/// Lines of the server log quoted in a start error.
const LOG_TAIL_LINES: usize = 30;

/// The longest unix socket path (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// How to shut a server down (`pg_ctl stop -m <mode>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Wait for clients to disconnect (waits up to 30 s, then falls back).
    Smart,
    /// Roll back open transactions, disconnect clients, checkpoint, exit.
    Fast,
    /// Exit at once without a checkpoint; crash recovery runs on next start.
    Immediate,
}

impl StopMode {
    fn as_arg(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }

    /// Seconds `pg_ctl stop -w` waits in this mode before we escalate.
    fn timeout_secs(self) -> u32 {
        match self {
            StopMode::Smart | StopMode::Fast => 30,
            StopMode::Immediate => 10,
        }
    }
}

/// A local PostgreSQL server owned by a [`LocalCluster`](super::LocalCluster).
///
/// It listens on `host:port` over TCP and on a unix socket in `data_dir`;
/// the superuser `user` connects to `dbname` without a password (trust auth).
/// Its server log is [`PgInstance::log_file`].
#[derive(Debug)]
pub struct PgInstance {
    /// "shard0", "shard1", ..., or "catalog".
    pub name: String,
    /// TCP listen address: always "127.0.0.1".
    pub host: String,
    /// TCP port (changes only across [`LocalCluster::start`](super::LocalCluster::start) calls).
    pub port: u16,
    /// Superuser to connect as: "postgres".
    pub user: String,
    /// Database to connect to: "postgres".
    pub dbname: String,
    /// The data directory (absolute); also holds the unix socket and log.
    pub data_dir: PathBuf,
    bin_dir: PathBuf,
    run_as: RunAs,
}

impl PgInstance {
    /// A not-yet-started instance; `port` 0 until first started.
    pub(crate) fn new(
        name: &str,
        data_dir: PathBuf,
        bin_dir: &Path,
        run_as: &RunAs,
    ) -> Result<Self, ClusterError> {
        // "<data_dir>/.s.PGSQL.65535" must fit in a unix socket address.
        let socket_len = data_dir.as_os_str().len() + "/.s.PGSQL.65535".len();
        if socket_len > MAX_SOCKET_PATH {
            return Err(ClusterError::InvalidOption(format!(
                "data dir {} is too long for a unix socket path ({socket_len} > {MAX_SOCKET_PATH} bytes); \
                 use a shorter data dir",
                data_dir.display()
            )));
        }
        Ok(PgInstance {
            name: name.to_string(),
            host: "127.0.0.1".to_string(),
            port: 0,
            user: "postgres".to_string(),
            dbname: "postgres".to_string(),
            data_dir,
            bin_dir: bin_dir.to_path_buf(),
            run_as: run_as.clone(),
        })
    }

    /// libpq keyword/value connection string, e.g.
    /// `host=127.0.0.1 port=54321 user=postgres dbname=postgres`
    /// (accepted by psql, pgbench and tokio-postgres).
    pub fn dsn(&self) -> String {
        format!(
            "host={} port={} user={} dbname={}",
            self.host, self.port, self.user, self.dbname
        )
    }

    /// The server log, `<data_dir>/postgres.log`.
    pub fn log_file(&self) -> PathBuf {
        self.data_dir.join("postgres.log")
    }

    /// True if this instance's postmaster process is alive (checked through
    /// `postmaster.pid` and `/proc`; costs no subprocess).
    pub fn is_running(&self) -> bool {
        process::running_postmaster(&self.data_dir).is_some()
    }

    /// Starts a stopped instance again on the same port; a no-op if it is
    /// running. Blocks until it accepts connections (at most 60 s).
    ///
    /// # Errors
    /// [`ClusterError::StartFailed`] with the tail of the server log, e.g.
    /// when the port has been taken meanwhile.
    pub fn start(&mut self) -> Result<(), ClusterError> {
        if self.is_running() {
            return Ok(());
        }
        self.pg_ctl_start()
            .map_err(|failure| self.start_error(failure))?;
        tracing::info!("started {} on {}:{}", self.name, self.host, self.port);
        Ok(())
    }

    /// Writes the settings for a freshly picked port and starts, retrying
    /// with another port (up to 8 attempts) while the port turns out taken.
    /// `next_port` supplies the ports.
    pub(crate) fn start_on_free_port(
        &mut self,
        durable: bool,
        extra: &[(String, String)],
        next_port: &mut dyn FnMut() -> std::io::Result<u16>,
    ) -> Result<(), ClusterError> {
        if let Some(pid) = process::running_postmaster(&self.data_dir) {
            return Err(self.start_error(Failure::Other(format!(
                "a server (pid {pid}) is already running on this data dir; stop it with \
                 `pg_ctl -D {} stop`",
                self.data_dir.display()
            ))));
        }
        let mut last = String::new();
        for attempt in 1..=PORT_ATTEMPTS {
            self.port = next_port().map_err(|e| ClusterError::io("picking a free port", e))?;
            let text = conf::render(self.port, &self.data_dir, durable, extra)?;
            conf::install(&self.data_dir, &self.run_as, &text)?;
            match self.pg_ctl_start() {
                Ok(()) => {
                    tracing::info!("started {} on {}:{}", self.name, self.host, self.port);
                    return Ok(());
                }
                Err(Failure::PortInUse(why)) => {
                    tracing::debug!(
                        "{}: port {} taken (attempt {attempt}): {why}",
                        self.name,
                        self.port
                    );
                    last = why;
                }
                Err(other) => return Err(self.start_error(other)),
            }
        }
        Err(self.start_error(Failure::Other(format!(
            "each of {PORT_ATTEMPTS} ports tried was already in use; last attempt: {last}"
        ))))
    }

    /// Runs `pg_ctl start -w` once.
    fn pg_ctl_start(&self) -> Result<(), Failure> {
        let log = self.log_file();
        let log_start = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let mut cmd = self.run_as.command(&self.bin_dir.join("pg_ctl"));
        cmd.arg("-D").arg(&self.data_dir).arg("-l").arg(&log);
        cmd.args(["-w", "-t", &START_TIMEOUT_SECS.to_string(), "start"])
            .current_dir(&self.data_dir);
        let result = process::run(&mut cmd);
        let Err(err) = result else { return Ok(()) };

        // pg_ctl may give up while the server still comes up: don't leak it.
        if let Some(pid) = process::running_postmaster(&self.data_dir) {
            let _ = process::kill_group(pid);
            process::wait_until(Duration::from_secs(5), || !process::group_alive(pid));
        }
        let new_log = read_from(&log, log_start);
        if new_log.contains("Address already in use")
            || new_log.contains("could not create any TCP/IP sockets")
        {
            Err(Failure::PortInUse(err.to_string()))
        } else {
            Err(Failure::Other(err.to_string()))
        }
    }

    fn start_error(&self, failure: Failure) -> ClusterError {
        let reason = match failure {
            Failure::PortInUse(why) => format!("port {} is already in use: {why}", self.port),
            Failure::Other(why) => why,
        };
        ClusterError::StartFailed {
            name: self.name.clone(),
            port: self.port,
            data_dir: self.data_dir.clone(),
            log_file: self.log_file(),
            reason,
            log_tail: log_tail(&self.log_file(), LOG_TAIL_LINES),
        }
    }

    /// Stops the server; a no-op if it is not running. Escalates when `mode`
    /// does not work in time: then `immediate`, then SIGKILL of the
    /// postmaster's process group. On `Ok` no process of this instance is
    /// left. The data dir is kept (see [`LocalCluster::stop`](super::LocalCluster::stop)).
    ///
    /// # Errors
    /// [`ClusterError::StopFailed`] if even SIGKILL left processes behind.
    pub fn stop(&mut self, mode: StopMode) -> Result<(), ClusterError> {
        let Some(pid) = process::running_postmaster(&self.data_dir) else {
            return Ok(());
        };
        let gone = || !process::pid_alive(pid) && !process::group_alive(pid);
        let mut modes = vec![mode];
        if mode != StopMode::Immediate {
            modes.push(StopMode::Immediate);
        }
        for m in modes {
            let mut cmd = self.run_as.command(&self.bin_dir.join("pg_ctl"));
            cmd.arg("-D")
                .arg(&self.data_dir)
                .args(["-m", m.as_arg(), "-w", "-t"]);
            cmd.arg(m.timeout_secs().to_string())
                .arg("stop")
                .current_dir(&self.data_dir);
            match process::run(&mut cmd) {
                Ok(_) if process::wait_until(Duration::from_secs(5), gone) => {
                    tracing::info!("stopped {} ({} mode)", self.name, m.as_arg());
                    return Ok(());
                }
                Ok(_) => tracing::warn!(
                    "{}: pg_ctl stop -m {} returned but processes remain",
                    self.name,
                    m.as_arg()
                ),
                Err(e) => tracing::warn!("{}: {e}", self.name),
            }
        }
        tracing::warn!("{}: killing postmaster process group {pid}", self.name);
        process::kill_group(pid)
            .map_err(|e| self.stop_error(format!("SIGKILL of process group {pid}: {e}")))?;
        if !process::wait_until(Duration::from_secs(10), gone) {
            return Err(self.stop_error(format!(
                "process group {pid} still alive 10 s after SIGKILL"
            )));
        }
        // The killed postmaster could not remove its pid file.
        let _ = std::fs::remove_file(self.data_dir.join("postmaster.pid"));
        tracing::info!("stopped {} (SIGKILL)", self.name);
        Ok(())
    }

    fn stop_error(&self, reason: String) -> ClusterError {
        ClusterError::StopFailed {
            name: self.name.clone(),
            data_dir: self.data_dir.clone(),
            reason,
        }
    }
}

/// Why one `pg_ctl start` failed.
enum Failure {
    /// The port was taken: worth retrying with another.
    PortInUse(String),
    /// Anything else.
    Other(String),
}

/// The text of `path` from byte `offset` on (lossy; empty on error).
fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.read_to_end(&mut bytes);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last `lines` lines of the file at `path` (reads at most its last 64 KiB).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let text = read_from(path, len.saturating_sub(64 * 1024));
    if text.is_empty() {
        return format!("(no log at {})", path.display());
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
