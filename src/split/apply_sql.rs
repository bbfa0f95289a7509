//! The statements the CDC apply runs on the target, built from a table's
//! columns (pure functions). Values travel as text parameters cast to the
//! column's type (`$1::text::integer`): the text pgoutput decoded is the
//! type's output format, which its input function reads back exactly.

use crate::plan::quote_ident;

/// A column and its type name (`format_type(atttypid, NULL)`).
pub type Column<'a> = (&'a str, &'a str);

fn param(n: usize, ty: &str) -> String {
    format!("${n}::text::{ty}")
}

/// `INSERT INTO t (a, b) VALUES ($1::text::ta, $2::text::tb)`.
pub fn insert(table: &str, cols: &[Column]) -> String {
    let names: Vec<String> = cols.iter().map(|(c, _)| quote_ident(c)).collect();
    let vals: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, (_, t))| param(i + 1, t))
        .collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({})",
        quote_ident(table),
        names.join(", "),
        vals.join(", ")
    )
}

/// The row condition for an identity, parameters from `first` on: `k =
/// $n::text::tk AND …` for a key (an index can serve it), or, for a whole-row
/// identity (`REPLICA IDENTITY FULL` without a key), `ctid = (SELECT ctid
/// FROM t WHERE c::text IS NOT DISTINCT FROM $n … LIMIT 1)` — one row, as
/// PostgreSQL's own apply does, compared as text so types without an
/// equality operator (json, point) work too.
pub fn identity_condition(table: &str, ident: &[Column], full: bool, first: usize) -> String {
    if full {
        let conds: Vec<String> = ident
            .iter()
            .enumerate()
            .map(|(i, (c, _))| {
                format!(
                    "{}::text IS NOT DISTINCT FROM ${}::text",
                    quote_ident(c),
                    first + i
                )
            })
            .collect();
        let conds = if conds.is_empty() {
            "true".to_string()
        } else {
            conds.join(" AND ")
        };
        format!(
            "ctid = (SELECT ctid FROM {} WHERE {conds} LIMIT 1)",
            quote_ident(table)
        )
    } else {
        let conds: Vec<String> = ident
            .iter()
            .enumerate()
            .map(|(i, (c, t))| format!("{} = {}", quote_ident(c), param(first + i, t)))
            .collect();
        conds.join(" AND ")
    }
}

/// `UPDATE t SET a = $1::text::ta, … WHERE <identity>`.
pub fn update(table: &str, set: &[Column], ident: &[Column], full: bool) -> String {
    let sets: Vec<String> = set
        .iter()
        .enumerate()
        .map(|(i, (c, t))| format!("{} = {}", quote_ident(c), param(i + 1, t)))
        .collect();
    format!(
        "UPDATE {} SET {} WHERE {}",
        quote_ident(table),
        sets.join(", "),
        identity_condition(table, ident, full, set.len() + 1)
    )
}

/// `DELETE FROM t WHERE <identity>`.
pub fn delete(table: &str, ident: &[Column], full: bool) -> String {
    format!(
        "DELETE FROM {} WHERE {}",
        quote_ident(table),
        identity_condition(table, ident, full, 1)
    )
}

/// `SELECT a::text, … FROM t WHERE <identity>` (reading the source's
/// current values of columns an UPDATE left out).
pub fn select(table: &str, cols: &[&str], ident: &[Column], full: bool) -> String {
    let list: Vec<String> = cols
        .iter()
        .map(|c| format!("{}::text", quote_ident(c)))
        .collect();
    format!(
        "SELECT {} FROM {} WHERE {}",
        list.join(", "),
        quote_ident(table),
        identity_condition(table, ident, full, 1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements() {
        let cols = [("aid", "integer"), ("filler", "bpchar")];
        assert_eq!(
            insert("pgbench_accounts", &cols),
            "INSERT INTO \"pgbench_accounts\" (\"aid\", \"filler\") VALUES ($1::text::integer, $2::text::bpchar)"
        );
        assert_eq!(
            update("t", &[("b", "text")], &[("id", "bigint")], false),
            "UPDATE \"t\" SET \"b\" = $1::text::text WHERE \"id\" = $2::text::bigint"
        );
        assert_eq!(
            delete("t", &[("a", "int"), ("b", "json")], true),
            "DELETE FROM \"t\" WHERE ctid = (SELECT ctid FROM \"t\" WHERE \"a\"::text IS NOT DISTINCT FROM $1::text AND \"b\"::text IS NOT DISTINCT FROM $2::text LIMIT 1)"
        );
        assert_eq!(
            select("t", &["c"], &[("id", "uuid")], false),
            "SELECT \"c\"::text FROM \"t\" WHERE \"id\" = $1::text::uuid"
        );
    }
}
