//! The plan of one SQL statement: what the executors need to route and run it.
//!
//! A plan depends only on the statement's *shape* (its text with literals
//! replaced by placeholders) and on the catalog, never on literal or parameter
//! values, so one plan serves every execution of the shape. Values are
//! referenced by [`KeyExpr`] and resolved at execution time.

use std::sync::Arc;

use super::prepare_verdict::PrepareVerdict;

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

/// Routing through a lookup vindex: the statement has `column = value` on
/// an owner table without a sharding-key equality; the shards are those
/// owning the keyspace ids the lookup table lists for the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupKey {
    /// The lookup table (a sharded table keyed by `column`).
    pub lookup_table: Arc<str>,
    /// The looked-up column (lower case), also the lookup table's key.
    pub column: String,
    /// The value compared with.
    pub value: KeyExpr,
}

/// A lookup vindex whose lookup table a write to its owner table must
/// change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedLookup {
    /// The lookup table.
    pub lookup_table: Arc<str>,
    /// The looked-up column of the owner table (lower case).
    pub column: String,
}

/// Lookup maintenance of one INSERT / UPDATE / DELETE of an owner table,
/// run by the router in the same (distributed) transaction as the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedWrite {
    /// The owner table.
    pub table: Arc<str>,
    /// The lookup vindexes to maintain.
    pub lookups: Vec<OwnedLookup>,
    /// What the write does to them.
    pub kind: OwnedKind,
}

/// The lookup rows a write adds and removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedKind {
    /// INSERT ... VALUES: `values[l][r]` is lookup `l`'s value in VALUES
    /// row `r` (None: NULL or column not listed → no lookup row). Lookup
    /// rows are inserted before the owner rows.
    Insert {
        /// Per lookup, per row.
        values: Vec<Vec<Option<KeyExpr>>>,
    },
    /// UPDATE / DELETE: `select` (`SELECT <key>, <col>... FROM <table>
    /// WHERE <the statement's WHERE> FOR UPDATE`, same placeholders as the
    /// statement) finds the rows first; their lookup rows are deleted; for
    /// an UPDATE, `new[l]` is the value assigned to lookup `l`'s column
    /// (`Some(None)`: NULL), whose lookup rows are then inserted.
    Rows {
        /// The pre-select, in the statement's placeholders.
        select: Vec<SqlPiece>,
        /// UPDATE: new value per lookup; None for DELETE.
        new: Option<Vec<Option<KeyExpr>>>,
    },
}

/// How the rows of a multi-shard statement are combined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// Concatenate rows; command tags' row counts are added.
    Concat,
    /// Merged at the router by the gather executor: the shards run a
    /// rewritten statement ([`GatherPlan::sql`]) and the router sorts,
    /// groups, aggregates, de-duplicates and limits.
    Gather(Arc<GatherPlan>),
    /// The merge depends on literal values of the text (a positional
    /// `ORDER BY 2` / `GROUP BY 1` in a normalized simple-protocol text):
    /// plan the original text instead. Never executed.
    NeedsText,
}

/// One piece of the statement text sent to the shards by a gather.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlPiece {
    /// Verbatim SQL.
    Text(String),
    /// Literal `i` (0-based) of the client's simple-protocol text, copied
    /// as written (quotes and escapes included).
    Literal(usize),
    /// The row count the shards must return: `limit + offset`, or `ALL`.
    Limit,
}

/// A LIMIT or OFFSET value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowCount {
    /// Written in the text.
    Const(i64),
    /// Literal `i` of a simple-protocol text or Bind parameter `$i+1`.
    Param(usize),
}

/// Aggregate functions the gather can combine across shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    /// `count(*)`, `count(x)`: int8.
    Count,
    /// `sum(x)`: PostgreSQL's sum result type of the input.
    Sum,
    /// `min(x)`.
    Min,
    /// `max(x)`.
    Max,
    /// `avg(x)`: computed as sum / count (numeric for integer and numeric
    /// input, float8 for float input).
    Avg,
    /// `bool_and(x)` / `every(x)`.
    BoolAnd,
    /// `bool_or(x)`.
    BoolOr,
}

/// One aggregate computed by the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggSlot {
    /// The function.
    pub func: AggFunc,
    /// `f(DISTINCT x)`: the shards also group by `x` and the router keeps
    /// the set of distinct values of `x` per group.
    pub distinct: bool,
    /// Hidden columns (0-based among the hidden ones, binary format) with
    /// the shards' partial results: `[count]`, `[sum]`, `[min]`, `[max]`,
    /// `[sum, count]` for avg, `[bool_and]`, `[bool_or]`; `[x]` when
    /// `distinct`.
    pub partials: Vec<usize>,
}

/// A value a HAVING condition reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// Group key value `i`.
    Key(usize),
    /// Result of aggregate slot `i`.
    Agg(usize),
    /// Literal `i` of a simple-protocol text or Bind parameter `$i+1`.
    Param(usize),
    /// A constant written in the text (unquoted).
    Const(String),
    /// SQL NULL.
    Null,
    /// `-$n`: literal/parameter `i`, negated.
    NegParam(usize),
}

/// Comparison operators of a HAVING condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>`, `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A HAVING condition evaluated by the router after the merge, with SQL
/// three-valued logic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// `a op b`.
    Cmp(CmpOp, Operand, Operand),
    /// `a IS NULL` (`true`) / `a IS NOT NULL` (`false`).
    IsNull(Operand, bool),
    /// `a AND b`.
    And(Box<Cond>, Box<Cond>),
    /// `a OR b`.
    Or(Box<Cond>, Box<Cond>),
    /// `NOT a`.
    Not(Box<Cond>),
    /// A boolean aggregate or key used as a condition (`HAVING bool_or(b)`).
    Truth(Operand),
}

/// GROUP BY / aggregate / DISTINCT merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    /// Hidden columns holding the group key (binary format).
    pub keys: Vec<usize>,
    /// Aggregates computed per group.
    pub aggs: Vec<AggSlot>,
    /// For each visible column: `Some(slot)` when it is aggregate `slot`,
    /// `None` when it is copied from the group's first row.
    pub outputs: Vec<Option<usize>>,
    /// HAVING, evaluated per group after the merge.
    pub having: Option<Cond>,
    /// Aggregates without GROUP BY: one output row even without input.
    pub single: bool,
    /// `SELECT DISTINCT` over grouped rows (with GROUP BY or aggregates):
    /// the groups' output rows are de-duplicated by their values.
    pub distinct: bool,
}

/// Where a sort key's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortSource {
    /// Hidden column `i` (binary format) of each shard row.
    Hidden(usize),
    /// Visible column `i` in the client's format (`SELECT * ... ORDER BY
    /// 2`; text values are parsed, ISO DateStyle for dates and times).
    Visible(usize),
    /// Group key value `i`.
    Key(usize),
    /// Result of aggregate slot `i`.
    Agg(usize),
}

/// One ORDER BY key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    /// Value source.
    pub source: SortSource,
    /// DESC.
    pub desc: bool,
    /// NULLS FIRST (PostgreSQL's default: NULLS FIRST for DESC only).
    pub nulls_first: bool,
}

/// How a multi-shard SELECT is merged at the router (scatter-gather).
///
/// The shards run [`GatherPlan::sql`]: the client's SELECT with `hidden`
/// extra columns appended to the select list (sort keys, group keys and
/// partial aggregates, always fetched in binary format), aggregates
/// rewritten into partials, HAVING/OFFSET removed and LIMIT replaced by
/// `limit + offset`. The router merges the shard rows and strips the
/// hidden columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatherPlan {
    /// The shards' statement text.
    pub sql: Vec<SqlPiece>,
    /// Number of hidden columns at the end of each shard row.
    pub hidden: usize,
    /// Number of visible columns, None when the select list has a `*`
    /// (known once the statement is described).
    pub visible: Option<usize>,
    /// Grouping and aggregation, if any.
    pub grouping: Option<Grouping>,
    /// ORDER BY keys (empty: shard order, concatenated).
    pub order: Vec<SortKey>,
    /// LIMIT, None for no limit.
    pub limit: Option<RowCount>,
    /// OFFSET, None for none.
    pub offset: Option<RowCount>,
    /// DISTINCT ON: the number of leading sort keys forming the key (0 =
    /// no DISTINCT ON).
    pub distinct_on: usize,
    /// Steps for `EXPLAIN`-style descriptions, e.g. `"merge sort (2 keys)"`.
    pub steps: Vec<String>,
    /// Extended protocol: the client parameters (0-based) the shards'
    /// statement uses, in its `$1, $2, ...` order; None = all, unchanged.
    pub shard_params: Option<Vec<usize>>,
    /// Finished by PostgreSQL over the shards' rows instead of merged at
    /// the router (every shard column is then hidden; `visible` is 0).
    pub finish: Option<Arc<FinalStep>>,
    /// Simple protocol: whether the client's literals may be parameters of
    /// a statement the shards keep prepared (`exec/gather/params.rs`).
    pub verdict: PrepareVerdict,
}

/// The final step of a grouped SELECT (`plan/final_step.rs`): the shards'
/// rows are passed to one shard as arrays (`unnest($1, ..., $m)`), where
/// PostgreSQL runs the client's select list, HAVING, ORDER BY, DISTINCT
/// and LIMIT over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalStep {
    /// The final query: `$__pgr_rows` stands for the array parameters,
    /// `$__pgr_agg_<i>_` for combine `i` (rendered once the partials'
    /// types are known); simple protocol: the client's literals as
    /// [`SqlPiece::Literal`].
    pub sql: Vec<SqlPiece>,
    /// Partial mode: how each combine reads the partial columns (hidden
    /// column indexes), e.g. `sum(count)` or `sum(sum) / sum(count)`.
    pub combines: Vec<AggSlot>,
    /// Raw rows: the shards do not aggregate.
    pub raw: bool,
    /// Extended protocol: the client parameters (0-based) the final query
    /// uses, numbered after the arrays (`$m+1, ...`).
    pub params: Vec<usize>,
}

/// Key values that restrict a scattered statement to the shards owning them
/// (shard pruning): `key IN (a, b, ...)` or `key = ANY($n)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySet {
    /// The listed values.
    List(Vec<KeyExpr>),
    /// The elements of an array value (`= ANY($1)`, `= ANY('{1,2}')`).
    Array(KeyExpr),
    /// Inclusive bounds (`BETWEEN`, `<`, `<=`, `>`, `>=`; strict bounds
    /// are widened to inclusive, a superset of shards): prunes only with an
    /// order-preserving (range) vindex.
    Range {
        /// Lower bound, None for unbounded.
        lo: Option<KeyExpr>,
        /// Upper bound, None for unbounded.
        hi: Option<KeyExpr>,
    },
}

impl Plan {
    /// True for statements classified as writes, whose shards become
    /// two-phase commit participants: INSERT, UPDATE, DELETE, SELECT ...
    /// FOR UPDATE/SHARE (row locks), COPY FROM, and utility statements run
    /// on every shard. SELECT, SHOW, SET and transaction control are not (a
    /// SELECT calling a writing function is caught at commit by an xid
    /// check on the participants not classified as writers).
    pub fn writes(&self) -> bool {
        match self {
            Plan::Keyed { read_only, .. }
            | Plan::Scatter { read_only, .. }
            | Plan::Subqueries { read_only, .. } => !read_only,
            Plan::Insert { .. }
            | Plan::AllShards
            | Plan::Broadcast { .. }
            | Plan::Owned { .. }
            | Plan::NeedSchema { .. }
            | Plan::InsertSelect(_)
            | Plan::GenerateKey(_) => true,
            Plan::Copy(c) => c.from_stdin,
            Plan::Transaction(_)
            | Plan::Set { .. }
            | Plan::AnyShard
            | Plan::RouterExplain(_)
            | Plan::SequenceFn(_)
            | Plan::CopyQuery(_)
            | Plan::Error { .. } => false,
        }
    }
}

/// The refusal of an unsupported statement or construct: [`Plan::Error`]
/// with SQLSTATE 0A000 (feature_not_supported), `message` and `hint`.
pub(crate) fn unsupported(message: impl Into<String>, hint: Option<&str>) -> Plan {
    Plan::Error {
        sqlstate: "0A000",
        message: message.into(),
        hint: hint.map(str::to_string),
    }
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

/// `COPY (query) TO STDOUT` whose query spans several shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyQuery {
    /// The query's sharded table (its keyspace's shards run it).
    pub table: Arc<str>,
    /// Shard pruning of the query.
    pub prune: Option<KeySet>,
    /// How the query's rows combine: concatenated (each shard runs the
    /// COPY) or merged (the router runs the SELECT and encodes its rows).
    pub merge: Merge,
    /// Byte range of the query in the statement text.
    pub query: std::ops::Range<usize>,
    /// The output format and options (for a merged query).
    pub out: crate::protocol::copy_out::CopyOutOptions,
    /// An option the router passes on but does not apply itself (e.g.
    /// `encoding`): a merged query with one is refused.
    pub unapplied: Option<String>,
}

/// `INSERT INTO sharded_table ... SELECT ...` whose rows the router routes
/// by key (`exec/insert_select.rs`): the SELECT runs like any SELECT
/// (merged where needed), its rows are grouped by the shard their key
/// names and inserted there from arrays, in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertSelect {
    /// Catalog name of the target table.
    pub table: Arc<str>,
    /// Where the SELECT runs: [`Plan::Keyed`], [`Plan::AnyShard`] or
    /// [`Plan::Scatter`].
    pub source: Arc<Plan>,
    /// How the SELECT's rows are fetched (merged, or a plain run).
    pub gather: Arc<GatherPlan>,
    /// The sharding key among the SELECT's columns; None when the router
    /// generates it.
    pub key_index: Option<usize>,
    /// The generated key: the key column's generator.
    pub generator: Option<super::schema::KeyGenerator>,
    /// The INSERT each shard runs: `$__pgr_rows` stands for the arrays
    /// (the SELECT's columns, then a generated key).
    pub insert_sql: Vec<SqlPiece>,
    /// The INSERT has RETURNING.
    pub returning: bool,
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
    /// A write to every shard: DML (INSERT, UPDATE, DELETE) on a reference
    /// table; the frontend runs it on every shard of the catalog as one
    /// distributed transaction; the first shard's response is returned (the
    /// copies are identical, so are the responses). Until the frontend's
    /// two-phase commit covers it, it is executed like [`Plan::AllShards`]:
    /// outside a transaction block each shard commits on its own.
    Broadcast {
        /// Catalog name of the reference table written.
        table: Arc<str>,
    },
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
    /// No single routable key: run on every shard of the table's keyspace
    /// (or only those owning the `prune` values, or those the `lookup`
    /// vindex lists) and merge.
    Scatter {
        /// Catalog name of the (first) sharded table.
        table: Arc<str>,
        /// Key values the rows must have, if the WHERE clause says so.
        prune: Option<KeySet>,
        /// A lookup vindex equality that narrows the shards, if any.
        lookup: Option<Arc<LookupKey>>,
        /// How to combine results.
        merge: Merge,
        /// `true` for SELECT.
        read_only: bool,
    },
    /// INSERT / UPDATE / DELETE of a table owning lookup vindexes: `inner`
    /// ([`Plan::Insert`], [`Plan::Keyed`] or [`Plan::Scatter`]) runs after
    /// the lookup maintenance `write`, all in one transaction.
    Owned {
        /// The write itself.
        inner: Arc<Plan>,
        /// The lookup maintenance.
        write: Arc<OwnedWrite>,
    },
    /// COPY FROM STDIN / TO STDOUT on a sharded table.
    Copy(CopyPlan),
    /// `EXPLAIN (ROUTER) statement`: answered by the router with the route
    /// of the statement's plan (shards targeted, merge steps, shard SQL).
    RouterExplain(Arc<Plan>),
    /// The statement (an INSERT without a column list, or without its
    /// sharding key) needs the columns of `table`: the executor reads them
    /// from the shards (`exec/schema.rs`) and plans the statement again.
    /// Never cached.
    NeedSchema {
        /// Catalog name of the table.
        table: Arc<str>,
    },
    /// An INSERT ... VALUES that omits the sharding key of a table whose
    /// key the shards would take from a sequence: the executor draws one
    /// value per row from the table's distributed sequence, writes them
    /// into the text ([`super::spans::with_generated_keys`]) and plans it
    /// again.
    GenerateKey(Arc<GeneratedInsert>),
    /// `SELECT currval/nextval/lastval(...)` of a generated sharding key's
    /// sequence: answered by the router (`exec/generated.rs`).
    SequenceFn(Arc<super::SequenceCall>),
    /// `INSERT ... SELECT` into a sharded table, rows routed by the router.
    InsertSelect(Arc<InsertSelect>),
    /// `COPY (query) TO STDOUT` over several shards (`exec/copy_query.rs`).
    CopyQuery(Arc<CopyQuery>),
    /// Not runnable as one statement: subqueries over sharded tables need
    /// rows of other shards than the outer query's. The session runs
    /// first the subqueries that can run on their own, substitutes their
    /// rows and plans the text again (`plan/subquery.rs`,
    /// `session/subqueries.rs`; for an extended-protocol Bind,
    /// `session/subqueries_ext.rs`); when none can, the client gets 0A000
    /// with `message` and `hint`.
    Subqueries {
        /// The refusal's primary message.
        message: String,
        /// The refusal's hint.
        hint: Option<String>,
        /// `false` for a write (UPDATE/DELETE/INSERT ... SELECT).
        read_only: bool,
    },
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

/// What [`Plan::GenerateKey`] fills in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedInsert {
    /// Catalog name of the table (also the distributed sequence's name).
    pub table: Arc<str>,
    /// The sharding key column (lower case).
    pub key: String,
    /// Its type's range and identity kind.
    pub generator: super::schema::KeyGenerator,
    /// Number of VALUES rows (one value drawn per row).
    pub rows: usize,
    /// Where the key goes in the text.
    pub form: InsertForm,
}

/// The shape of an INSERT whose omitted key the router fills in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertForm {
    /// `INSERT INTO t (a, b) VALUES ...`: the key is appended to the
    /// column list and to every row.
    ColumnList,
    /// `INSERT INTO t VALUES ...` (no column list): these leading columns
    /// of the table, then the key, are named.
    Columns(Vec<String>),
    /// `INSERT INTO t DEFAULT VALUES`.
    DefaultValues,
    /// Every VALUES row gives the key (item `n`, 0-based) as `DEFAULT`:
    /// the values replace those items.
    DefaultAt(usize),
}
