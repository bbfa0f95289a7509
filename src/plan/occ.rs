//! What the analyzer finds: the sharded table occurrences of a statement
//! ([`Occ`]) and how they can be reached ([`Routing`]).

use std::sync::Arc;

use super::types::{KeyExpr, KeyRef, KeySet, LookupKey, Plan};

/// One occurrence of a sharded table in a statement.
#[derive(Debug, Clone)]
pub(crate) struct Occ {
    pub table: Arc<str>,
    pub key_col: String,
    /// Name the statement refers to it by (alias, or table name).
    pub qualifier: String,
    pub key: Option<KeyExpr>,
    /// Key values from `key IN (...)` / `key = ANY(...)`.
    pub prune: Option<KeySet>,
    /// In the FROM clause of the outermost SELECT (or the target of an
    /// UPDATE/DELETE), as opposed to a subquery, CTE or set operation.
    pub top: bool,
    /// The table's lookup vindexes: (looked-up column, lookup table).
    pub lookup_cols: Vec<(String, Arc<str>)>,
    /// The first `lookup column = value` condition found.
    pub lookup: Option<Arc<LookupKey>>,
}

/// How the sharded tables of a statement can be reached.
#[derive(Debug)]
pub(crate) enum Routing {
    /// No sharded table at all (only system catalogs, or no table).
    NoTables,
    /// Every sharded table occurrence has a key.
    Keyed(Vec<KeyRef>),
    /// Exactly one sharded table occurrence, without a key.
    Single {
        table: Arc<str>,
        key_col: String,
        top: bool,
        prune: Option<KeySet>,
        lookup: Option<Arc<LookupKey>>,
    },
    /// Refused (undeclared table, unsupported construct, unkeyed join...).
    Error(Plan),
    /// Refused as one statement (the [`Plan::Error`]) with sharded tables in
    /// subqueries, CTEs or set operations that neither have a key nor are
    /// co-located with the outer query: may run after its subqueries
    /// ([`Plan::Subqueries`]).
    Nested(Plan),
}

/// The names a query uses and defines, as the analyzer saw them: enough to
/// tell whether a subquery's text can run on its own (`plan/subquery.rs`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeenNames {
    /// Qualifiers of column references (`q.col`, `q.*`), folded as
    /// PostgreSQL folds identifiers.
    pub used: Vec<String>,
    /// Names (alias, else table name) of every FROM item, at any level.
    pub defined: Vec<String>,
    /// Names of the CTEs defined, at any level.
    pub ctes: Vec<String>,
    /// Single-part table names read that no CTE in scope defines.
    pub tables: Vec<String>,
}
