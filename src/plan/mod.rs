//! Statement planning: classify each SQL statement and decide how to route
//! it across the shards ([`Plan`]), with a plan cache keyed by the
//! statement's shape.
//!
//! # Pipeline
//!
//! * **Simple protocol** ([`Planner::plan_simple`]): one pass over the text
//!   replaces every literal by a placeholder `$1..$n` and records the
//!   literal spans ([`Literals`]); the normalized text is looked up in the
//!   plan cache. On a miss, the statement is pre-classified by its leading
//!   keyword(s) (transaction control, SET, utility and DDL statements, COPY,
//!   statements sqlparser cannot parse), or parsed with sqlparser
//!   (PostgreSQL dialect) and planned; the plan is cached. Keys in the plan
//!   are `KeyExpr::Param { index }` = literal `index` of the text.
//! * **Extended protocol** ([`Planner::plan_extended`]): the Parse message's
//!   text is planned the same way, cached by exact text; `$n` is
//!   `KeyExpr::Param { index: n - 1 }`, literals are `KeyExpr::Const`.
//!
//! If a normalized text does not parse (a literal where sqlparser wants a
//! constant, e.g. `numeric($1, $2)`), the original text is parsed and
//! planned with `KeyExpr::Const` keys. Such a plan is cached under the
//! normalized text when it has no constant key (it is then valid for every
//! text of that shape); otherwise only the fact that the original text must
//! be parsed is cached, and the plan is rebuilt each time. The same holds for
//! a merged multi-shard SELECT whose merge depends on a literal's value
//! (`ORDER BY 2`, `GROUP BY 1`: [`Merge::NeedsText`]) — it is planned from
//! the original text at each execution.
//!
//! # Cache bounds
//!
//! Each of the two caches (simple, extended) holds at most `capacity`
//! entries; inserting into a full cache first clears it (cheap, no
//! per-entry bookkeeping on the hit path; hot statements are re-planned
//! once). Texts longer than [`MAX_CACHED_TEXT`] bytes are never cached.
//! [`Planner::clear`] forgets everything (catalog change).
//!
//! # Naming rules
//!
//! Table names: a `public.` schema is stripped, unquoted identifiers are
//! folded to lower case, quoted ones keep their case. Tables in
//! `pg_catalog`, `information_schema` or any `pg_*` schema, and tables named
//! `pg_*`, are system catalogs (present and identical on every shard). Any
//! other table must be known to the [`SchemaView`], as a sharded table or a
//! reference table.
//!
//! # Reference tables
//!
//! A reference table has a full, identical copy on every shard, so reading
//! it adds no routing constraint: a statement reading only reference tables
//! (and system catalogs) goes to any one shard ([`Plan::AnyShard`]), and one
//! that joins sharded tables with reference tables is routed by the sharded
//! tables alone (keyed or scattered). A scattered SELECT is refused (0A000)
//! when an outer join keeps rows that come from no sharded table (e.g.
//! `countries LEFT JOIN orders` without a key condition): every shard would
//! return them. `SELECT ... FOR UPDATE/SHARE` of reference tables only locks
//! the rows on the one shard it runs on; this does not serialize against
//! writers going through other shards' copies first.
//!
//! INSERT, UPDATE and DELETE of a reference table plan to
//! [`Plan::Broadcast`] (no sharding key needed); they may read only
//! reference tables and system catalogs (a sharded table in a subquery,
//! `FROM` or `USING` is refused with 0A000, since each shard would see a
//! different part of it). COPY FROM STDIN into a reference table is refused
//! (use INSERT); COPY TO STDOUT reads one shard.
//!
//! # Refusals
//!
//! Planning never fails; refused statements get a [`Plan::Error`]:
//! `0A000` for unsupported statements and constructs (the message names
//! them), `42601` for text sqlparser cannot parse and for a text holding
//! several statements, `54001` for statements with more than 4096 binary
//! operators (deeper syntax trees could overflow a 2 MiB thread stack while
//! parsing), `22023` for an unknown COPY format.
//!
//! # Known limits
//!
//! User-defined aggregates are not recognized as aggregates (a scattered
//! `SELECT my_agg(x) FROM t` is concatenated). A simple-protocol text that
//! contains `$n` (which PostgreSQL rejects there) or a `U&'..'` string is
//! planned as written, uncached, and its `$n` are not used as keys.

pub mod types;

mod aggregates;
mod analyze;
mod auto_prepare;
mod classify;
mod colocate;
mod copy;
mod create_table;
mod final_step;
mod fingerprint;
mod gather;
mod gather_builder;
mod generated;
mod having;
mod insert_select;
mod lex;
mod merge;
mod names;
mod occ;
mod parse;
mod prepare_verdict;
mod rewrite;
pub mod schema;
mod sequence_fn;
mod spans;
mod split;
mod star;
mod statements;
mod subquery;
mod template;
mod walk;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};
use parking_lot::RwLock;

pub use auto_prepare::{
    literal_type, preparable_text, same_number, statement_id, types_hash, AutoParams, AutoStmt,
};
pub use create_table::{created_table, CreatedTable};
pub use fingerprint::Literals;
pub use generated::with_generated_keys;
pub use names::quote_ident;
pub use prepare_verdict::PrepareVerdict;
pub use sequence_fn::{SequenceCall, SequenceFn, SequenceOwner};
pub use spans::{
    changes_columns, has_word, insert_part, insert_values_spans, InsertPart, InsertSpans,
};
pub use split::{single_statement, split_statements};
pub use subquery::{
    cte_like_names, escape_literal, limit_one, param_spans, query_groups, standalone, values_query,
    QueryGroup,
};
pub use types::*;

use analyze::ParamMode;
use classify::pre_classify;
use fingerprint::{normalize, Normalized};
use parse::{parse_and_plan, syntax_error};

/// What the planner needs to know about sharded and reference tables.
pub trait SchemaView: Sync {
    /// Sharding key column (lower case) of a sharded table given its catalog
    /// name (lower case, no schema), None if the table is not
    /// sharded/declared.
    fn key_column(&self, table: &str) -> Option<&str>;

    /// True if `table` (catalog name: lower case, no schema) is a reference
    /// table: a full copy on every shard. Only asked about names that
    /// [`SchemaView::key_column`] does not know. Default: no reference
    /// tables.
    fn is_reference(&self, table: &str) -> bool {
        let _ = table;
        false
    }

    /// The lookup vindexes owned by sharded table `table` (catalog name),
    /// as `(looked-up column, lookup table)` pairs, lower case. Default:
    /// none.
    fn lookups(&self, table: &str) -> Vec<(String, Arc<str>)> {
        let _ = table;
        Vec::new()
    }

    /// The columns of `table` (catalog name) if they were read from the
    /// shards; None = not known yet (a statement that needs them plans to
    /// [`Plan::NeedSchema`]). Default: never known.
    fn table_schema(&self, table: &str) -> Option<schema::SharedSchema> {
        let _ = table;
        None
    }

    /// The keyspace and sharding key type of sharded table `table`, if
    /// known (co-located INSERT ... SELECT). Default: not known.
    fn key_info(&self, table: &str) -> Option<(&str, crate::vindex::KeyType)> {
        let _ = table;
        None
    }

    /// The table whose generated sharding key sequence `sequence` (name
    /// without schema) is. Default: none.
    fn sequence_owner(&self, sequence: &str) -> SequenceOwner {
        let _ = sequence;
        SequenceOwner::None
    }
}

/// Longest statement text (normalized text for the simple protocol) that is
/// cached, in bytes.
pub const MAX_CACHED_TEXT: usize = 16 * 1024;

/// A simple-protocol cache entry.
#[derive(Clone)]
enum Entry {
    /// The plan of every statement with this normalized text, and the text
    /// as a statement to prepare on shards (if it may be).
    Plan(Arc<Plan>, Option<Arc<AutoStmt>>),
    /// The normalized text does not parse: plan the original text.
    Original,
}

thread_local! {
    /// Reused buffer for the normalized text (no allocation on a cache hit).
    static NORMALIZED: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The statement planner and its plan caches; shared by all client
/// sessions (`Send + Sync`).
pub struct Planner {
    capacity: usize,
    auto_prepare: bool,
    simple: RwLock<HashMap<Box<str>, Entry>>,
    extended: RwLock<HashMap<Box<str>, Arc<Plan>>>,
}

impl std::fmt::Debug for Planner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planner")
            .field("capacity", &self.capacity)
            .field("simple_entries", &self.simple.read().len())
            .field("extended_entries", &self.extended.read().len())
            .finish()
    }
}

fn insert_bounded<V>(map: &RwLock<HashMap<Box<str>, V>>, capacity: usize, key: &str, value: V) {
    if capacity == 0 || key.len() > MAX_CACHED_TEXT {
        return;
    }
    let mut m = map.write();
    if m.len() >= capacity && !m.contains_key(key) {
        m.clear();
    }
    m.insert(Box::from(key), value);
}

/// True if the plan holds a key read from the text itself.
fn has_const(plan: &Plan) -> bool {
    match plan {
        Plan::Keyed { keys, .. } => keys.iter().any(|k| matches!(k.key, KeyExpr::Const(_))),
        Plan::Insert { rows, .. } => rows.iter().any(|k| matches!(k, KeyExpr::Const(_))),
        // A gather plan of an original text has its constants in the
        // shards' statement text.
        Plan::Scatter {
            merge: Merge::Gather(_),
            ..
        } => true,
        Plan::Scatter {
            lookup: Some(l), ..
        } => matches!(l.value, KeyExpr::Const(_)),
        // Lookup values and the pre-select text come from the text.
        Plan::Owned { .. } => true,
        Plan::RouterExplain(inner) => has_const(inner),
        _ => false,
    }
}

/// The refusal of a text holding several statements.
fn several_statements() -> Plan {
    Plan::Error {
        sqlstate: "42601",
        message: "cannot plan several statements at once; split the query string first".to_string(),
        hint: None,
    }
}

/// Plan a text as written (no normalization).
fn plan_text(sql: &str, schema: &dyn SchemaView, mode: ParamMode) -> Plan {
    if split_statements(sql).len() > 1 {
        return several_statements();
    }
    if let Some(c) = pre_classify(sql, schema) {
        return c.plan;
    }
    parse_and_plan(sql, schema, mode).unwrap_or_else(|msg| syntax_error(&msg))
}

/// Plan a simple-protocol text as written: keys are constants read from
/// the text.
fn plan_original(sql: &str, schema: &dyn SchemaView) -> Plan {
    plan_text(sql, schema, ParamMode::Ignore)
}

impl Planner {
    /// A planner whose simple-protocol and extended-protocol caches each
    /// hold at most `capacity` plans (0 disables caching).
    pub fn new(capacity: usize) -> Planner {
        Planner {
            capacity,
            auto_prepare: false,
            simple: RwLock::new(HashMap::new()),
            extended: RwLock::new(HashMap::new()),
        }
    }

    /// Also cache, for a simple-protocol statement that runs on one shard,
    /// its normalized text as an [`AutoStmt`] (given by
    /// [`Planner::plan_simple_shaped`]) when `on`.
    pub fn with_auto_prepare(mut self, on: bool) -> Planner {
        self.auto_prepare = on;
        self
    }

    /// Forget all cached plans (called when the catalog changes).
    pub fn clear(&self) {
        self.simple.write().clear();
        self.extended.write().clear();
    }

    /// Number of cached plans (simple-protocol shapes + extended-protocol
    /// texts).
    pub fn cached(&self) -> usize {
        self.simple.read().len() + self.extended.read().len()
    }

    /// Simple protocol: plan ONE statement's text (as returned by
    /// [`split_statements`]; a trailing `;` is accepted). Returns the plan
    /// for the statement's shape and the literals found in this text:
    /// `KeyExpr::Param { index: i, .. }` in the plan is literal `i`.
    ///
    /// Never fails: refused or malformed statements get a
    /// [`Plan::Error`] (0A000 for unsupported constructs, 42601 for syntax
    /// errors, 54001 for statements too complex to parse safely). Several
    /// statements in one text are refused with 42601.
    pub fn plan_simple(&self, sql: &str, schema: &dyn SchemaView) -> (Arc<Plan>, Literals) {
        let (p, lits, _) = self.plan_simple_shaped(sql, schema);
        (p, lits)
    }

    /// [`Planner::plan_simple`], and the statement's normalized text as an
    /// [`AutoStmt`] if it may run as a prepared statement on its shard
    /// (only with [`Planner::with_auto_prepare`], for plans whose text is
    /// valid for every statement of the shape).
    pub fn plan_simple_shaped(
        &self,
        sql: &str,
        schema: &dyn SchemaView,
    ) -> (Arc<Plan>, Literals, Option<Arc<AutoStmt>>) {
        NORMALIZED.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                let r = self.plan_simple_with(sql, schema, &mut buf);
                if buf.capacity() > 4 * MAX_CACHED_TEXT {
                    *buf = String::new();
                }
                r
            }
            Err(_) => self.plan_simple_with(sql, schema, &mut String::new()),
        })
    }

    fn plan_simple_with(
        &self,
        sql: &str,
        schema: &dyn SchemaView,
        buf: &mut String,
    ) -> (Arc<Plan>, Literals, Option<Arc<AutoStmt>>) {
        let mut lits = Literals::default();
        if normalize(sql, buf, &mut lits) == Normalized::Unfit {
            return (Arc::new(plan_original(sql, schema)), lits, None);
        }
        let cached = self.simple.read().get(buf.as_str()).cloned();
        match cached {
            Some(Entry::Plan(p, auto)) => return (p, lits, auto),
            Some(Entry::Original) => return (Arc::new(plan_original(sql, schema)), lits, None),
            None => {}
        }
        let (plan, entry) = Self::simple_miss(sql, buf, &lits, schema, self.auto_prepare);
        let auto = match &entry {
            Some(Entry::Plan(_, a)) => a.clone(),
            _ => None,
        };
        if let Some(e) = entry {
            insert_bounded(&self.simple, self.capacity, buf, e);
        }
        (plan, lits, auto)
    }

    /// Plan a statement whose shape is not cached; also returns what to
    /// cache under its normalized text.
    fn simple_miss(
        sql: &str,
        normalized: &str,
        lits: &Literals,
        schema: &dyn SchemaView,
        auto_prepare: bool,
    ) -> (Arc<Plan>, Option<Entry>) {
        if split_statements(sql).len() > 1 {
            // Valid for the whole shape: literals never hold a `;`.
            let p = Arc::new(several_statements());
            return (p.clone(), Some(Entry::Plan(p, None)));
        }
        if let Some(c) = pre_classify(sql, schema) {
            let p = Arc::new(c.plan);
            // A plan built from the text (BEGIN's replay text, COPY options)
            // is valid for this exact text only.
            let cache = !c.text_derived || lits.is_empty();
            return (p.clone(), cache.then_some(Entry::Plan(p, None)));
        }
        match parse_and_plan(normalized, schema, ParamMode::Literals) {
            Ok(Plan::Scatter {
                merge: Merge::NeedsText,
                ..
            }) => (Arc::new(plan_original(sql, schema)), Some(Entry::Original)),
            Ok(plan @ Plan::NeedSchema { .. }) => (Arc::new(plan), None),
            Ok(plan) => {
                // Only a text that parsed with its placeholders may be
                // prepared as it is.
                let auto = auto_prepare
                    .then(|| auto_prepare::auto_stmt(normalized, &plan).map(Arc::new))
                    .flatten();
                let p = Arc::new(plan);
                (p.clone(), Some(Entry::Plan(p, auto)))
            }
            Err(_) => {
                let plan = plan_original(sql, schema);
                let syntax = matches!(
                    &plan,
                    Plan::Error {
                        sqlstate: "42601",
                        ..
                    }
                );
                if matches!(plan, Plan::NeedSchema { .. }) {
                    (Arc::new(plan), None)
                } else if has_const(&plan) || syntax {
                    (Arc::new(plan), Some(Entry::Original))
                } else {
                    let p = Arc::new(plan);
                    (p.clone(), Some(Entry::Plan(p, None)))
                }
            }
        }
    }

    /// Extended protocol: plan a Parse message's query text (which may
    /// contain `$n` parameters: `KeyExpr::Param { index: n - 1 }`; literals
    /// give `KeyExpr::Const`). Cached by exact text. Never fails (see
    /// [`Planner::plan_simple`] for the error plans).
    pub fn plan_extended(&self, sql: &str, schema: &dyn SchemaView) -> Arc<Plan> {
        if let Some(p) = self.extended.read().get(sql) {
            return p.clone();
        }
        let p = Arc::new(plan_text(sql, schema, ParamMode::Keys));
        if !matches!(*p, Plan::NeedSchema { .. }) {
            insert_bounded(&self.extended, self.capacity, sql, p.clone());
        }
        p
    }

    /// [`Planner::plan_extended`] without the cache: for a text made once
    /// (an INSERT given generated key values).
    pub fn plan_extended_once(&self, sql: &str, schema: &dyn SchemaView) -> Plan {
        plan_text(sql, schema, ParamMode::Keys)
    }
}
