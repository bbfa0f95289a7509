//! Table and column naming rules: identifier case folding, system catalogs,
//! the `public` schema, and the "not declared" error.

use std::sync::Arc;

use sqlparser::ast::{Expr, Ident, ObjectName, ObjectNamePart};

use super::types::Plan;
use super::SchemaView;

/// `name` as a double-quoted SQL identifier, embedded quotes doubled
/// (PostgreSQL docs §4.1.1 "Identifiers and Key Words").
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// How a table reference resolves against the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TableClass {
    /// `pg_catalog.*`, `information_schema.*`, `pg_*` schemas or tables.
    System,
    /// A declared sharded table: catalog name and key column.
    Sharded { table: Arc<str>, key: String },
    /// A declared reference table (a full copy on every shard): catalog name.
    Reference(Arc<str>),
    /// A user table the catalog does not know (name as written, folded).
    Unknown(String),
}

/// An identifier as PostgreSQL sees it: unquoted identifiers are folded to
/// lower case (ASCII only, like PostgreSQL in UTF-8), quoted ones kept.
pub(crate) fn norm_ident(id: &Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_ascii_lowercase()
    }
}

/// The folded parts of an object name; None if a part is not a plain
/// identifier.
pub(crate) fn object_parts(name: &ObjectName) -> Option<Vec<String>> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(id) => Some(norm_ident(id)),
            _ => None,
        })
        .collect()
}

/// The last folded part of an object name (a column or table name).
pub(crate) fn last_part(name: &ObjectName) -> Option<String> {
    match name.0.last()? {
        ObjectNamePart::Identifier(id) => Some(norm_ident(id)),
        _ => None,
    }
}

/// Resolve a (folded) possibly schema-qualified table name.
///
/// `public.t` is `t`; any name in `pg_catalog`, `information_schema` or a
/// `pg_*` schema, or named `pg_*`, is a system catalog; other schemas are
/// kept as `schema.t` (and so must be declared under that name).
pub(crate) fn classify_table(parts: &[String], schema: &dyn SchemaView) -> TableClass {
    let (ns, table) = match parts {
        [] => return TableClass::Unknown(String::new()),
        [t] => (None, t.as_str()),
        [.., s, t] => (Some(s.as_str()), t.as_str()),
    };
    if table.starts_with("pg_") {
        return TableClass::System;
    }
    if let Some(s) = ns {
        if s == "pg_catalog" || s == "information_schema" || s.starts_with("pg_") {
            return TableClass::System;
        }
    }
    let name = match ns {
        None | Some("public") => table.to_string(),
        Some(s) => format!("{s}.{table}"),
    };
    match schema.key_column(&name) {
        Some(key) => TableClass::Sharded {
            table: Arc::from(name.as_str()),
            key: key.to_string(),
        },
        None if schema.is_reference(&name) => TableClass::Reference(Arc::from(name.as_str())),
        None => TableClass::Unknown(name),
    }
}

/// Resolve a sqlparser object name (None-parts resolve as unknown).
pub(crate) fn classify_object(name: &ObjectName, schema: &dyn SchemaView) -> TableClass {
    match object_parts(name) {
        Some(parts) => classify_table(&parts, schema),
        None => TableClass::Unknown(name.to_string()),
    }
}

/// The error for a user table missing from the pg-router catalog.
pub(crate) fn undeclared(table: &str) -> Plan {
    Plan::Error {
        sqlstate: "0A000",
        message: format!("table \"{table}\" is not declared in the pg-router catalog"),
        hint: Some(format!(
            "declare it with: pg-router meta add-table --table {table} --column <sharding key column>, or as a table copied to every shard with: pg-router meta add-reference-table --table {table}"
        )),
    }
}

/// The error for writes into system catalogs.
pub(crate) fn system_write() -> Plan {
    Plan::Error {
        sqlstate: "0A000",
        message: "writing to system catalogs through pg-router is not supported".to_string(),
        hint: None,
    }
}

/// `col`, `t.col` or `schema.t.col` -> (qualifier, column), folded.
pub(crate) fn column_ref(mut e: &Expr) -> Option<(Option<String>, String)> {
    while let Expr::Nested(x) = e {
        e = x;
    }
    match e {
        Expr::Identifier(id) => Some((None, norm_ident(id))),
        Expr::CompoundIdentifier(ids) if ids.len() >= 2 => {
            let col = norm_ident(ids.last()?);
            let qual = norm_ident(ids.get(ids.len() - 2)?);
            Some((Some(qual), col))
        }
        _ => None,
    }
}
