//! Recursive planning of subqueries over sharded tables (the way Citus
//! plans subqueries it cannot push down): a subquery that needs no row of
//! the outer query — in the select list, WHERE (`IN`, `= (SELECT ...)`,
//! `EXISTS`), FROM (a derived table) or WITH (a CTE) — runs first as a
//! statement of its own (merged across shards like any SELECT), and its
//! rows replace it in the text as a VALUES list with the same column names
//! and types; the statement is then planned again.
//!
//! This module holds the text work: finding the parenthesized queries of a
//! statement ([`query_groups`]), telling whether one can run on its own
//! ([`standalone`]) and writing its rows back as a query
//! ([`values_query`]). The session runs them (`session/subqueries.rs`).

use std::ops::Range;

use sqlparser::ast::{SetExpr, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::analyze::{Analyzer, ParamMode, SeenNames};
use super::lex::{significant, Tok, Token};
use super::names::quote_ident;
use super::SchemaView;

/// A parenthesized query in a statement's text: `(SELECT ...)` or
/// `(WITH ...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryGroup {
    /// Byte range of the query inside the parentheses.
    pub range: Range<usize>,
    /// Preceded by `EXISTS`: only whether it returns a row matters.
    pub exists: bool,
}

/// The parenthesized queries of `sql`, in text order (an enclosing query
/// before the queries inside it). Unbalanced parentheses end the search.
pub fn query_groups(sql: &str) -> Vec<QueryGroup> {
    let toks: Vec<Token> = significant(sql).collect();
    let mut open: Vec<usize> = Vec::new();
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        if t.is_punct(sql, b'(') {
            open.push(i);
        } else if t.is_punct(sql, b')') {
            let Some(o) = open.pop() else {
                break;
            };
            let first = toks.get(o + 1).filter(|f| f.start < t.start);
            if first.is_some_and(|f| f.is_word(sql, "select") || f.is_word(sql, "with")) {
                let exists = o
                    .checked_sub(1)
                    .and_then(|p| toks.get(p))
                    .is_some_and(|p| p.is_word(sql, "exists"));
                out.push(QueryGroup {
                    range: toks[o].end..t.start,
                    exists,
                });
            }
        }
    }
    out.sort_by_key(|g| g.range.start);
    out
}

/// Byte ranges of the `$n` parameter tokens of `sql` (outside strings,
/// quoted identifiers and comments), each with whether it comes right
/// after `LIMIT` or `OFFSET`.
pub fn param_spans(sql: &str) -> Vec<(Range<usize>, bool)> {
    let mut out = Vec::new();
    let mut prev: Option<Token> = None;
    for t in significant(sql) {
        if t.kind == Tok::Param {
            let after_limit =
                prev.is_some_and(|p| p.is_word(sql, "limit") || p.is_word(sql, "offset"));
            out.push((t.start..t.end, after_limit));
        }
        prev = Some(t);
    }
    out
}

/// Names that look like CTE names in `sql` (`name AS (`, `name AS
/// [NOT] MATERIALIZED (`, `name (cols) AS (`): a lexical over-estimate,
/// which only makes [`standalone`] more cautious.
pub fn cte_like_names(sql: &str) -> Vec<String> {
    let toks: Vec<Token> = significant(sql).collect();
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        if !t.is_word(sql, "as") {
            continue;
        }
        let mut j = i + 1;
        while toks
            .get(j)
            .is_some_and(|x| x.is_word(sql, "not") || x.is_word(sql, "materialized"))
        {
            j += 1;
        }
        if !toks.get(j).is_some_and(|x| x.is_punct(sql, b'(')) {
            continue;
        }
        // The name before AS, or before its column list.
        let mut k = i;
        if k > 0 && toks[k - 1].is_punct(sql, b')') {
            while k > 0 && !toks[k - 1].is_punct(sql, b'(') {
                k -= 1;
            }
            k = k.saturating_sub(1);
        }
        if let Some(name) = k.checked_sub(1).and_then(|n| toks.get(n)) {
            out.extend(ident_text(sql, name));
        }
    }
    out
}

fn ident_text(sql: &str, t: &Token) -> Option<String> {
    match t.kind {
        Tok::Ident => Some(t.text(sql).to_ascii_lowercase()),
        Tok::QuotedIdent => {
            let s = t.text(sql);
            Some(s.get(1..s.len().saturating_sub(1))?.replace("\"\"", "\""))
        }
        _ => None,
    }
}

/// The names query `sql` uses and defines; None if it does not parse as
/// one query.
fn names(sql: &str, schema: &dyn SchemaView) -> Option<SeenNames> {
    let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let [Statement::Query(q)] = stmts.as_slice() else {
        return None;
    };
    let mut an = Analyzer::new(schema, ParamMode::Ignore);
    an.query(q, true);
    Some(an.into_names())
}

/// Whether query `sql` (a [`QueryGroup`]'s text) can run as a statement of
/// its own: it parses, every qualifier of a column reference names one of
/// its own FROM items, and it reads no CTE of the enclosing statement
/// (`outer_ctes`, see [`cte_like_names`]) that it does not define itself.
/// A subquery referring to the outer query by an unqualified column name
/// passes; running it then fails with PostgreSQL's 42703.
pub fn standalone(sql: &str, outer_ctes: &[String], schema: &dyn SchemaView) -> bool {
    let Some(n) = names(sql, schema) else {
        return false;
    };
    n.used.iter().all(|q| n.defined.contains(q))
        && !n
            .tables
            .iter()
            .any(|t| outer_ctes.contains(t) && !n.ctes.contains(t))
}

/// `sql` with `LIMIT 1` appended (for an `EXISTS` subquery, which needs
/// one row at most), if it is one query without LIMIT, OFFSET, FETCH or
/// FOR UPDATE/SHARE; else None.
pub fn limit_one(sql: &str) -> Option<String> {
    let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let [Statement::Query(q)] = stmts.as_slice() else {
        return None;
    };
    let plain = q.limit_clause.is_none()
        && q.fetch.is_none()
        && q.locks.is_empty()
        && !matches!(
            *q.body,
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_)
        );
    // A newline: the text may end in a `--` comment.
    plain.then(|| format!("{sql}\nLIMIT 1"))
}

/// `value` as an escape string constant (`E'...'`, PostgreSQL docs
/// §4.1.2.2): valid whatever `standard_conforming_strings` is.
pub fn escape_literal(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 3);
    s.push_str("E'");
    for c in value.chars() {
        match c {
            '\'' => s.push_str("''"),
            '\\' => s.push_str("\\\\"),
            c => s.push(c),
        }
    }
    s.push('\'');
    s
}

/// One value of a PostgreSQL array literal: double-quoted, `"` and `\`
/// backslash-escaped, or `NULL` (PostgreSQL docs §8.15.6).
fn array_element(v: &Option<String>, out: &mut String) {
    match v {
        None => out.push_str("NULL"),
        Some(v) => {
            out.push('"');
            for c in v.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
    }
}

/// A query returning `rows` (text values, None = NULL) with columns named
/// and typed as `columns` (name, type as `format_type` writes it, modifier
/// included), each value PostgreSQL's text output read back by the type's
/// input function in the same session:
///
/// * one array per column, so the text has a few casts whatever the row
///   count: `SELECT _pgr_sq.c1::bigint AS "a", ... FROM
///   unnest(E'{"1","2"}'::bigint[], ...) AS _pgr_sq(c1, ...)` (rows in
///   array order; the outer cast keeps the type modifier);
/// * when a column's type is an array itself (unnest would flatten it) or
///   `box` (`;`-delimited arrays), a VALUES list cast per value;
/// * no rows: `SELECT * FROM (VALUES (NULL::bigint, ...)) AS
///   _pgr_sq("a", ...) WHERE false`; no columns: `SELECT FROM
///   generate_series(1, n)`.
pub fn values_query(columns: &[(String, String)], rows: &[Vec<Option<String>>]) -> String {
    if columns.is_empty() {
        return format!("SELECT FROM pg_catalog.generate_series(1, {})", rows.len());
    }
    let names: Vec<String> = columns.iter().map(|(n, _)| quote_ident(n)).collect();
    let arrays = !rows.is_empty()
        && columns
            .iter()
            .all(|(_, ty)| !ty.ends_with(']') && ty != "box");
    if arrays {
        let mut outs = Vec::with_capacity(columns.len());
        let mut ins = Vec::with_capacity(columns.len());
        for (i, (_, ty)) in columns.iter().enumerate() {
            let mut lit = String::from("{");
            for (k, r) in rows.iter().enumerate() {
                if k > 0 {
                    lit.push(',');
                }
                array_element(&r.get(i).cloned().flatten(), &mut lit);
            }
            lit.push('}');
            ins.push(format!("{}::{ty}[]", escape_literal(&lit)));
            outs.push(format!("_pgr_sq.c{}::{ty} AS {}", i + 1, names[i]));
        }
        let cols: Vec<String> = (1..=columns.len()).map(|i| format!("c{i}")).collect();
        return format!(
            "SELECT {} FROM unnest({}) AS _pgr_sq({})",
            outs.join(", "),
            ins.join(", "),
            cols.join(", ")
        );
    }
    let row = |r: Option<&Vec<Option<String>>>| {
        let cells: Vec<String> = columns
            .iter()
            .enumerate()
            .map(
                |(i, (_, ty))| match r.and_then(|r| r.get(i)).cloned().flatten() {
                    Some(v) => format!("{}::{ty}", escape_literal(&v)),
                    None => format!("NULL::{ty}"),
                },
            )
            .collect();
        format!("({})", cells.join(", "))
    };
    let (list, filter) = if rows.is_empty() {
        (row(None), " WHERE false")
    } else {
        let all: Vec<String> = rows.iter().map(|r| row(Some(r))).collect();
        (all.join(", "), "")
    };
    format!(
        "SELECT * FROM (VALUES {list}) AS _pgr_sq({}){filter}",
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Items;
    impl SchemaView for Items {
        fn key_column(&self, table: &str) -> Option<&str> {
            matches!(table, "items" | "events").then_some("id")
        }
    }

    fn groups(sql: &str) -> Vec<(&str, bool)> {
        query_groups(sql)
            .into_iter()
            .map(|g| (&sql[g.range], g.exists))
            .collect()
    }

    #[test]
    fn finds_parenthesized_queries_outer_first() {
        let sql = "SELECT (SELECT max(v) FROM events), x FROM items WHERE EXISTS ( SELECT 1 FROM events e WHERE e.v IN (SELECT v FROM events) ) AND f(1, (2)) AND s = ')' -- (SELECT\n";
        assert_eq!(
            groups(sql),
            vec![
                ("SELECT max(v) FROM events", false),
                (
                    " SELECT 1 FROM events e WHERE e.v IN (SELECT v FROM events) ",
                    true
                ),
                ("SELECT v FROM events", false),
            ]
        );
        assert_eq!(
            groups("WITH c AS (WITH d AS (SELECT 1) SELECT * FROM d) SELECT * FROM c"),
            vec![
                ("WITH d AS (SELECT 1) SELECT * FROM d", false),
                ("SELECT 1", false)
            ]
        );
        assert!(groups("SELECT (1 + 2) FROM t WHERE x IN (1, 2)").is_empty());
        // Unbalanced: what was found before stays.
        assert_eq!(
            groups("SELECT (SELECT 1)) (SELECT 2)"),
            vec![("SELECT 1", false)]
        );
    }

    #[test]
    fn cte_names_are_over_estimated() {
        assert_eq!(
            cte_like_names("WITH a AS (SELECT 1), \"B\" (x) AS MATERIALIZED (SELECT 2), c AS NOT MATERIALIZED (SELECT 3) SELECT CAST(1 AS int)"),
            vec!["a", "B", "c"]
        );
    }

    #[test]
    fn standalone_subqueries() {
        let outer = vec!["c".to_string()];
        let yes = |s: &str| assert!(standalone(s, &outer, &Items), "{s}");
        let no = |s: &str| assert!(!standalone(s, &outer, &Items), "{s}");
        yes("SELECT v FROM events");
        yes("SELECT e.v FROM events e JOIN items i ON i.id = e.id WHERE i.g > 1");
        yes("SELECT x.v FROM (SELECT v FROM events) x");
        yes("WITH c AS (SELECT 1 AS v) SELECT c.v FROM c");
        yes("SELECT events.v FROM public.events");
        // Refers to the outer query or to one of its CTEs.
        no("SELECT v FROM events e WHERE e.id = i.id");
        no("SELECT i.* FROM events");
        no("SELECT v FROM c");
        no("SELECT v FROM events WHERE v IN (SELECT v FROM c)");
        no("SELECT FROM (");
    }

    #[test]
    fn limit_one_only_when_free() {
        assert_eq!(
            limit_one("SELECT 1 FROM events -- x").as_deref(),
            Some("SELECT 1 FROM events -- x\nLIMIT 1")
        );
        assert_eq!(limit_one("SELECT 1 FROM events LIMIT 5"), None);
        assert_eq!(limit_one("SELECT 1 FROM events OFFSET 5"), None);
        assert_eq!(limit_one("SELECT 1 FROM events FOR UPDATE"), None);
    }

    #[test]
    fn values_keep_names_types_and_nulls() {
        let cols = vec![
            ("id".to_string(), "bigint".to_string()),
            ("we\"ird".to_string(), "numeric(12,2)".to_string()),
        ];
        let rows = vec![
            vec![Some("1".to_string()), Some("it's \\ \"1.50".to_string())],
            vec![Some("2".to_string()), None],
        ];
        assert_eq!(
            values_query(&cols, &rows),
            "SELECT _pgr_sq.c1::bigint AS \"id\", _pgr_sq.c2::numeric(12,2) AS \"we\"\"ird\" FROM unnest(E'{\"1\",\"2\"}'::bigint[], E'{\"it''s \\\\\\\\ \\\\\"1.50\",NULL}'::numeric(12,2)[]) AS _pgr_sq(c1, c2)"
        );
        // Array-typed columns: a VALUES list.
        let arr = vec![("a".to_string(), "integer[]".to_string())];
        assert_eq!(
            values_query(&arr, &[vec![Some("{1,2}".to_string())], vec![None]]),
            "SELECT * FROM (VALUES (E'{1,2}'::integer[]), (NULL::integer[])) AS _pgr_sq(\"a\")"
        );
        assert_eq!(
            values_query(&cols[..1], &[]),
            "SELECT * FROM (VALUES (NULL::bigint)) AS _pgr_sq(\"id\") WHERE false"
        );
        assert_eq!(
            values_query(&[], &[vec![], vec![]]),
            "SELECT FROM pg_catalog.generate_series(1, 2)"
        );
    }
}
