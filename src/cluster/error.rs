//! The error type of the `cluster` module.

use std::path::PathBuf;

/// Why a local PostgreSQL instance or cluster could not be found, set up,
/// started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`) were
    /// not found. The message says where we looked, what was missing and how
    /// to install them.
    #[error("PostgreSQL server binaries not found: {0}")]
    BinariesNotFound(String),

    /// We run as root, PostgreSQL refuses to, and no unprivileged OS user to
    /// run it as could be found or created.
    #[error("no unprivileged OS user to run PostgreSQL as: {0}")]
    NoServiceUser(String),

    /// A setting or option is unusable (bad setting name, value with a
    /// newline, data directory path too long for a unix socket, ...).
    #[error("invalid option: {0}")]
    InvalidOption(String),

    /// A filesystem or process-spawn operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing, including the path involved.
        context: String,
        /// The underlying OS error.
        #[source]
        source: std::io::Error,
    },

    /// An external tool (e.g. `initdb`) exited unsuccessfully.
    #[error("`{command}` failed ({status}):\n{output}")]
    CommandFailed {
        /// The command line that was run.
        command: String,
        /// Its exit status, as text.
        status: String,
        /// Its combined stdout and stderr (trimmed).
        output: String,
    },

    /// An instance did not start. `log_tail` holds the last lines of its
    /// server log (`<data_dir>/postgres.log`).
    #[error("could not start {name} (port {port}, data dir {}): {reason}\n--- last lines of {} ---\n{log_tail}", .data_dir.display(), .log_file.display())]
    StartFailed {
        /// Instance name ("shard0", ..., "catalog").
        name: String,
        /// The TCP port of the last attempt.
        port: u16,
        /// The instance's data directory.
        data_dir: PathBuf,
        /// The server log file.
        log_file: PathBuf,
        /// Why, e.g. pg_ctl's output.
        reason: String,
        /// The last lines of the server log.
        log_tail: String,
    },

    /// A bug in this module (e.g. a worker thread panicked).
    #[error("internal error: {0}")]
    Internal(String),

    /// An instance could not be stopped even with SIGKILL.
    #[error("could not stop {name} (data dir {}): {reason}", .data_dir.display())]
    StopFailed {
        /// Instance name.
        name: String,
        /// The instance's data directory.
        data_dir: PathBuf,
        /// Why.
        reason: String,
    },
}

impl ClusterError {
    /// Wraps an I/O error with a description of what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ClusterError::Io {
            context: context.into(),
            source,
        }
    }
}
