//! The plan of one SQL statement: what the executors need to route and run it.
//!
//! A plan depends only on the statement's *shape* (its text with literals
//! replaced by placeholders) and on the catalog, never on literal or parameter
//! values, so one plan serves every execution of the shape. Values are
//! referenced by [`KeyExpr`] and resolved at execution time.

use std::sync::Arc;

/// Where the value of a sharding key comes from.
///
/// For the simple protocol, the planner replaces every literal of the query
/// text by a placeholder `$1..$n` (in text order) before parsing, so
/// `Param(i)` is the i-th (0-based) literal of the original text. For the
/// extended protocol, `Param(i)` is the Bind parameter `$i+1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyExpr {
    /// 0-based placeholder index; `negate` is true for `-$n` (a negative
    /// number literal is tokenized as `-` followed by a literal).
    Param {
        /// 0-based index.
        index: usize,
        /// Apply unary minus to the (integer) value.
        negate: bool,
    },
    /// A constant the planner could read from the text itself (used when the
    /// statement could not be fingerprinted), already unquoted.
    Const(String),
}

/// One sharded table referenced with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    /// Catalog name of the sharded table (lower case, no schema).
    pub table: Arc<str>,
    /// The key value source.
    pub key: KeyExpr,
}

/// Aggregate kinds the scatter-gather merge can combine across shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    /// `count(*)` / `count(x)`: sum of per-shard counts (int8).
    Count,
    /// `sum(x)`: sum of per-shard sums (NULL when every shard's is NULL).
    Sum,
    /// `min(x)`: smallest non-NULL per-shard value.
    Min,
    /// `max(x)`: largest non-NULL per-shard value.
    Max,
}

/// How the rows of a multi-shard statement are combined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// Concatenate rows; command tags' row counts are added.
    Concat,
    /// One output row; column i is combined by `aggs[i]`.
    Aggregate(Vec<AggKind>),
}

/// Transaction-control statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnStmt {
    /// BEGIN / START TRANSACTION; `sql` is the statement text to replay on
    /// each shard the transaction touches (keeps isolation level, READ ONLY).
    Begin {
        /// Text to send to each participant.
        sql: String,
    },
    /// COMMIT / END.
    Commit,
    /// ROLLBACK / ABORT.
    Rollback,
    /// SAVEPOINT / RELEASE / ROLLBACK TO: forwarded to every participant.
    Savepoint,
}

/// `COPY` details needed to split or gather the data stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPlan {
    /// Catalog name of the sharded table.
    pub table: Arc<str>,
    /// Explicit column list, lower case, if the statement has one.
    pub columns: Option<Vec<String>>,
    /// `true` for `COPY ... FROM STDIN`, `false` for `COPY ... TO STDOUT`.
    pub from_stdin: bool,
    /// Data format.
    pub format: CopyFormat,
    /// Field delimiter (default tab for text, comma for CSV).
    pub delimiter: u8,
    /// CSV HEADER option.
    pub header: bool,
    /// CSV quote character (default `"`).
    pub quote: u8,
    /// CSV escape character (default = quote).
    pub escape: u8,
}

/// COPY data formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// PostgreSQL text format.
    Text,
    /// CSV.
    Csv,
    /// Binary (only gathered, never split, in this version).
    Binary,
}

/// The routing plan of one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Transaction control.
    Transaction(TxnStmt),
    /// SET / RESET / DISCARD: a session setting. `local` for SET LOCAL;
    /// `reset_all` for RESET ALL / DISCARD ALL.
    Set {
        /// SET LOCAL (transaction-scoped).
        local: bool,
        /// RESET ALL or DISCARD ALL.
        reset_all: bool,
    },
    /// Any one shard gives the right answer (catalog queries, SHOW,
    /// `SELECT version()`, SELECT without tables).
    AnyShard,
    /// Run on every shard (DDL, TRUNCATE, VACUUM, ANALYZE, ...); shards'
    /// responses are identical in shape, the first one is returned.
    AllShards,
    /// Single-shard statement: every listed key must map to the same shard
    /// (checked at execution; otherwise it is a multi-shard statement).
    Keyed {
        /// The keys found (at least one).
        keys: Vec<KeyRef>,
        /// `true` for SELECT (read-only).
        read_only: bool,
    },
    /// INSERT ... VALUES with one key per row (`rows[i]` = key of row i).
    Insert {
        /// Catalog name of the table.
        table: Arc<str>,
        /// Key of each VALUES row, in order.
        rows: Vec<KeyExpr>,
    },
    /// No routable key: run on every shard of the table's keyspace and merge.
    Scatter {
        /// Catalog name of the (first) sharded table.
        table: Arc<str>,
        /// How to combine results.
        merge: Merge,
        /// `true` for SELECT.
        read_only: bool,
    },
    /// COPY FROM STDIN / TO STDOUT on a sharded table.
    Copy(CopyPlan),
    /// Refused: returned to the client as an ErrorResponse.
    Error {
        /// SQLSTATE, e.g. "0A000", "42601".
        sqlstate: &'static str,
        /// Primary message.
        message: String,
        /// Optional hint.
        hint: Option<String>,
    },
}
