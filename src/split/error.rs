//! [`SplitError`]: everything that can stop a resharding job.

use crate::catalog::pg_error_text;

use super::job::Phase;

/// An error of a resharding job or of one of its steps. Every message
/// names the job, shard, table or catalog row at fault.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// A statement failed; `context` says which step and where (e.g.
    /// `"recording split job 3"`, `"creating the publication on shard
    /// 'shard0'"`).
    #[error("{context}: {}", pg_error_text(source))]
    Db {
        /// The step that failed.
        context: String,
        /// The driver / server error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// Another job of the keyspace has not ended (one active job per
    /// keyspace); `running` describes it.
    #[error(
        "{running} has not ended; one job per keyspace at a time (wait for it, or roll it back)"
    )]
    JobRunning {
        /// The running job, described (see [`super::Job::describe`]).
        running: String,
    },

    /// Another process runs the job (its catalog session holds the job's
    /// advisory lock, [`super::run::claim`]).
    #[error("split job {0} is being run by another process (pg-router split or the reconciler); stop it first")]
    RunElsewhere(i64),

    /// The job's routing update has committed: it can only go forward.
    #[error("{0} is past its routing update (the point of no return): it can only be completed, not rolled back")]
    PastPointOfNoReturn(String),

    /// The job has ended (completed, failed or rolled back).
    #[error("{0} has ended")]
    Ended(String),

    /// No job with this id.
    #[error("split job {0} does not exist")]
    NoSuchJob(i64),

    /// The job is not in the phase the step expected: another process
    /// advanced it, or it ended.
    #[error("split job {id} is in phase {found}, expected {expected}")]
    PhaseChanged {
        /// Job id.
        id: i64,
        /// The phase the step started from.
        expected: Phase,
        /// The phase found.
        found: Phase,
    },

    /// The keyspace's routing changed since the move was planned (its
    /// generation is no longer the plan's).
    #[error("keyspace '{keyspace}' is at generation {found}, the move was planned at {planned}: plan it again")]
    StalePlan {
        /// Keyspace.
        keyspace: String,
        /// Generation the plan was made from.
        planned: i64,
        /// The keyspace's generation now (None: the keyspace is gone).
        found: String,
    },

    /// The replication protocol on a shard failed (connect, slot creation,
    /// streaming).
    #[error("shard '{shard}': {message}")]
    Wal {
        /// Shard name.
        shard: String,
        /// What failed, with the server's or the library's message.
        message: String,
    },

    /// A connection to a shard could not be set up (TCP, TLS handshake,
    /// certificate verification, timeout).
    #[error("shard '{shard}': connecting: {message}")]
    Connect {
        /// Shard name.
        shard: String,
        /// What failed.
        message: String,
    },

    /// A statement on a shard failed; `context` names the step.
    #[error("shard '{shard}': {context}: {}", pg_error_text(source))]
    Shard {
        /// Shard name.
        shard: String,
        /// The step that failed.
        context: String,
        /// The driver / server error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// Tables of the keyspace that cannot move, each with the reason (no
    /// primary key or replica identity, missing on the source).
    #[error("shard '{shard}': these tables cannot move: {}", tables.join("; "))]
    TablesRefused {
        /// Source shard.
        shard: String,
        /// One entry per table: `'name': reason`.
        tables: Vec<String>,
    },

    /// The target shard cannot take the keyspace's tables, each with the
    /// reason (rows on a shard owning no key range, different columns).
    #[error("target shard '{shard}' is refused: {}", tables.join("; "))]
    TargetRefused {
        /// Target shard.
        shard: String,
        /// One entry per table: `'name': reason`.
        tables: Vec<String>,
    },

    /// `pg_dump` or `psql` failed.
    #[error("shard '{shard}': {tool}: {message}")]
    Tool {
        /// The shard it ran against.
        shard: String,
        /// The program.
        tool: String,
        /// Its error output and exit status.
        message: String,
    },

    /// Creating the replication slot waited longer than allowed for
    /// transactions running on the source; `blockers` names them.
    #[error("shard '{shard}': creating replication slot '{slot}' waited {waited_ms} ms for transactions still running on the shard ({}); finish or roll them back and start again", blockers.join(", "))]
    SlotTimeout {
        /// Source shard.
        shard: String,
        /// Slot name.
        slot: String,
        /// How long it waited, ms.
        waited_ms: u128,
        /// The transactions it waited for (pid, state, age; prepared gids).
        blockers: Vec<String>,
    },

    /// The initial copy of a table failed in the router (a sharding key it
    /// cannot read, malformed COPY data, a row count that does not add up).
    #[error("copying table '{table}': {message}")]
    Copy {
        /// Table.
        table: String,
        /// What went wrong.
        message: String,
    },

    /// A change from the source's WAL cannot be applied to the target.
    #[error("applying the source's change to '{table}' on the target: {message}")]
    Apply {
        /// Table.
        table: String,
        /// What went wrong.
        message: String,
    },

    /// Verification found tables whose rows differ between source and
    /// target.
    #[error("verification failed: {}", tables.join("; "))]
    Verification {
        /// One entry per mismatching table.
        tables: Vec<String>,
    },

    /// Every cutover attempt was abandoned (routers did not acknowledge or
    /// the target did not catch up within the window).
    #[error("{attempts} cutover attempts were abandoned; see the log for why, and raise the maximum window or lower the load")]
    CutoverFailed {
        /// Attempts made.
        attempts: usize,
    },

    /// Sessions of the job (e.g. left by a killed job process) were still
    /// running on a shard after being terminated and waited for.
    #[error("shard '{shard}': {count} session(s) of split job {job} are still running after being terminated ({waited_s} s); end them (pg_stat_activity, application_name 'pg-router split {job}') and run the command again")]
    SessionsLeft {
        /// Shard.
        shard: String,
        /// Job id.
        job: i64,
        /// Sessions left.
        count: i64,
        /// How long it waited, s.
        waited_s: u64,
    },

    /// A shard named by the job is not registered in the catalog.
    #[error("shard '{0}' is not registered in the catalog (pg-router meta add-shard)")]
    UnknownShard(String),

    /// A `split_jobs` row the router cannot read (hand-edited).
    #[error("split job {id}: {what}")]
    BadRow {
        /// Job id.
        id: i64,
        /// What is wrong.
        what: String,
    },
}

/// [`SplitError::Shard`]: `source` failed on shard `shard` while `context`.
pub(crate) fn shard_error(
    shard: &str,
    context: String,
    source: tokio_postgres::Error,
) -> SplitError {
    SplitError::Shard {
        shard: shard.to_string(),
        context,
        source,
    }
}

/// Attaches a context to a driver error.
pub(crate) trait Context<T> {
    /// `SplitError::Db` with `context` on error.
    fn context(self, context: impl FnOnce() -> String) -> Result<T, SplitError>;
}

impl<T> Context<T> for Result<T, tokio_postgres::Error> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, SplitError> {
        self.map_err(|source| SplitError::Db {
            context: context(),
            source,
        })
    }
}
