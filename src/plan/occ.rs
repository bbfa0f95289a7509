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
}
