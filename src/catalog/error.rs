//! [`CatalogError`]: everything that can go wrong reading or writing the catalog.

use crate::topology::TopologyError;

/// An error of a catalog operation. Every message names the row, key or
/// argument at fault (`keyspace 'main'`, `table 'orders'`, ...).
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Could not connect to the catalog database (the DSN is not repeated
    /// because it may hold a password).
    #[error("cannot connect to the catalog database: {}", pg_error_text(.0))]
    Connect(#[source] tokio_postgres::Error),

    /// A statement against the catalog database failed; `context` says which
    /// step (e.g. `"reading pgrouter.keyspaces"`).
    #[error("{context}: {}", pg_error_text(source))]
    Db {
        /// The step that failed.
        context: String,
        /// The driver / server error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// An embedded migration failed to apply; nothing of it was committed.
    #[error("migration {version:04}_{name}: {}", pg_error_text(source))]
    Migration {
        /// Migration version (the file's number).
        version: i32,
        /// Migration name (the file's name without number and extension).
        name: &'static str,
        /// The server error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// A vindex name the router does not know.
    #[error("{row}: unknown vindex '{name}'")]
    UnknownVindex {
        /// The row or argument holding it, e.g. `keyspace 'main'`.
        row: String,
        /// The unknown name.
        name: String,
    },

    /// A key type name the router does not know.
    #[error("{row}: unknown key type '{name}' (expected int, text or uuid)")]
    UnknownKeyType {
        /// The row or argument holding it, e.g. `table 'orders'`.
        row: String,
        /// The unknown name.
        name: String,
    },

    /// A reference to a keyspace that does not exist.
    #[error("{row}: unknown keyspace '{keyspace}'")]
    UnknownKeyspace {
        /// The row or argument holding the reference, e.g. `table 'orders'`.
        row: String,
        /// The missing keyspace.
        keyspace: String,
    },

    /// A reference to a shard that does not exist.
    #[error("{row}: unknown shard '{shard}'")]
    UnknownShard {
        /// The row or argument holding the reference.
        row: String,
        /// The missing shard.
        shard: String,
    },

    /// A keyspace whose active generation has no `shard_ranges` rows.
    #[error("keyspace '{keyspace}': no shard_ranges rows at its active generation {generation}")]
    NoRanges {
        /// Keyspace name.
        keyspace: String,
        /// Its active generation (`keyspaces.generation`).
        generation: i64,
    },

    /// The ranges of a keyspace's active generation leave a gap, overlap, or
    /// do not cover the whole keyspace id space.
    /// The message reads `shard_ranges at generation G: keyspace 'K': key range gap [..)`.
    #[error("shard_ranges at generation {generation}: {source}")]
    Routing {
        /// Keyspace name.
        keyspace: String,
        /// Generation whose ranges are invalid.
        generation: i64,
        /// What is wrong (names the gap or overlap); boxed to keep
        /// `Result<_, CatalogError>` small.
        #[source]
        source: Box<TopologyError>,
    },

    /// A malformed value in a catalog row (a key id outside `[0, 2^64]`, a
    /// port outside `1..=65535`, ...).
    #[error("{row}: {problem}")]
    BadRow {
        /// The row, e.g. `shard_ranges (main, gen 1, start 42)`.
        row: String,
        /// What is wrong with it.
        problem: String,
    },

    /// A table name declared both as a sharded table and as a reference
    /// table (refused by the admin operations, and by `load` when the rows
    /// were written by hand).
    #[error("table '{table}' cannot be both a sharded table and a reference table")]
    ShardedAndReference {
        /// The table name (normalized).
        table: String,
    },

    /// A reference to a table that is not a declared sharded table (the
    /// owner or the lookup table of a lookup vindex).
    #[error("{row}: table '{table}' is not a declared sharded table")]
    UnknownTable {
        /// The row or argument holding the reference, e.g.
        /// `lookup vindex 'users_email'`.
        row: String,
        /// The missing table (normalized).
        table: String,
    },

    /// A lookup vindex that does not fit its tables: the looked-up column is
    /// the owner's sharding key, the lookup table is the owner, is in another
    /// keyspace, is keyed by another column or key type, is shared by two
    /// vindexes or owns a lookup vindex itself, ...
    #[error("lookup vindex '{name}': {problem}")]
    BadLookupVindex {
        /// Vindex name.
        name: String,
        /// What is wrong, naming the tables and columns involved.
        problem: String,
    },

    /// A column that already has a lookup vindex of another name.
    #[error("table '{table}' column '{column}' already has lookup vindex '{existing}' (asked for '{requested}')")]
    LookupVindexConflict {
        /// Owner table (normalized).
        table: String,
        /// The looked-up column (lower case).
        column: String,
        /// Name of the vindex already on it.
        existing: String,
        /// Name of the vindex asked for.
        requested: String,
    },

    /// A keyspace already exists with a different vindex.
    #[error(
        "keyspace '{keyspace}' already exists with vindex '{existing}' (asked for '{requested}')"
    )]
    VindexConflict {
        /// Keyspace name.
        keyspace: String,
        /// The stored vindex name.
        existing: String,
        /// The requested vindex name.
        requested: String,
    },

    /// The keyspace's routing is being changed by something else: a split
    /// job is active, or its ranges changed since the caller read them.
    #[error("keyspace '{keyspace}': {reason}")]
    Busy {
        /// Keyspace name.
        keyspace: String,
        /// What holds it (names the split job or the generations).
        reason: String,
    },

    /// An argument of an operation is invalid (no shards given, zero vnodes,
    /// ambiguous default keyspace, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Attaches a step description to a `tokio_postgres::Error`.
pub(crate) trait DbContext<T> {
    /// Maps the error to [`CatalogError::Db`] with `context`.
    fn ctx(self, context: impl Into<String>) -> Result<T, CatalogError>;
}

impl<T> DbContext<T> for Result<T, tokio_postgres::Error> {
    fn ctx(self, context: impl Into<String>) -> Result<T, CatalogError> {
        self.map_err(|source| CatalogError::Db {
            context: context.into(),
            source,
        })
    }
}

/// A driver error as one line: for a server error its severity, SQLSTATE,
/// message and detail (`ERROR 23505: duplicate key value violates unique
/// constraint "t_pkey" (Key (id)=(1) already exists.)`), which
/// `tokio_postgres::Error`'s own `Display` leaves to its source ("db
/// error"); otherwise the driver's message.
pub fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            text
        }
        None => e.to_string(),
    }
}
