//! Byte spans of the row groups of `INSERT ... VALUES (..), (..)`, so the
//! executor can build a per-shard INSERT holding a subset of the rows.

use std::ops::Range;

use super::lex::{significant, Tok};

/// Where the VALUES rows of an INSERT statement are.
///
/// For a text `sql`, the INSERT with only rows `k..` is
/// `sql[..prefix_end] + rows[k..].join(", ") + sql[suffix_start..]`
/// (each row slice includes its parentheses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertSpans {
    /// End of the text before the first row (just after `VALUES` and any
    /// whitespace/comments following it).
    pub prefix_end: usize,
    /// Byte range of each `( ... )` row group, in order.
    pub rows: Vec<Range<usize>>,
    /// Start of the text after the last row (`ON CONFLICT ...`,
    /// `RETURNING ...`, `;`, or the end of the text).
    pub suffix_start: usize,
}

/// For `INSERT ... VALUES (..), (..) ...`: the byte spans of each VALUES row
/// group in `sql` (including its parentheses), the prefix end and the suffix
/// start. None if `sql` is not an INSERT (first keyword) with a top-level
/// VALUES list of parenthesized rows, or if a row's parentheses are not
/// balanced.
pub fn insert_values_spans(sql: &str) -> Option<InsertSpans> {
    let mut toks = significant(sql).peekable();
    if !toks.next()?.is_word(sql, "insert") {
        return None;
    }
    // Find VALUES outside any parentheses (the column list is inside).
    let mut depth = 0usize;
    loop {
        let t = toks.next()?;
        if t.is_punct(sql, b'(') {
            depth += 1;
        } else if t.is_punct(sql, b')') {
            depth = depth.checked_sub(1)?;
        } else if depth == 0 && t.kind == Tok::Semicolon {
            return None;
        } else if depth == 0 && t.is_word(sql, "values") {
            break;
        } else if depth == 0 && (t.is_word(sql, "select") || t.is_word(sql, "default")) {
            return None;
        }
    }
    let mut rows = Vec::new();
    loop {
        let open = toks.next()?;
        if !open.is_punct(sql, b'(') {
            return None;
        }
        let mut depth = 1usize;
        let close = loop {
            let t = toks.next()?;
            if t.is_punct(sql, b'(') {
                depth += 1;
            } else if t.is_punct(sql, b')') {
                depth -= 1;
                if depth == 0 {
                    break t;
                }
            }
        };
        rows.push(open.start..close.end);
        match toks.peek() {
            Some(t) if t.is_punct(sql, b',') => {
                toks.next();
            }
            _ => break,
        }
    }
    let prefix_end = rows.first()?.start;
    let suffix_start = rows.last()?.end;
    Some(InsertSpans {
        prefix_end,
        rows,
        suffix_start,
    })
}

/// True if `sql` has the keyword or identifier `kw` (ASCII lower case)
/// outside strings, quoted identifiers and comments.
pub fn has_word(sql: &str, kw: &str) -> bool {
    significant(sql).any(|t| t.is_word(sql, kw))
}

/// True if `sql` is DDL that may change a table's columns (its first
/// keyword is ALTER, DROP or CREATE): the router forgets the columns it
/// read.
pub fn changes_columns(sql: &str) -> bool {
    significant(sql).next().is_some_and(|t| {
        t.is_word(sql, "alter") || t.is_word(sql, "drop") || t.is_word(sql, "create")
    })
}

/// One shard's part of a multi-row INSERT with `$n` parameters: the
/// statement holding only some of the VALUES rows, with its placeholders
/// renumbered `$1, $2, ...` in order of first use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertPart {
    /// The part's statement text.
    pub sql: String,
    /// For each of the part's parameters, the client's parameter it is
    /// (0-based index into the client's Bind).
    pub params: Vec<usize>,
}

/// The INSERT holding rows `pick` (indexes into `spans.rows`, in the order
/// given) of `sql`, whose spans are `spans`: prefix, the picked rows joined
/// by `, `, suffix (its `ON CONFLICT`/`RETURNING` parameters included),
/// every `$n` renumbered. None if a placeholder is not `$` + a number from
/// 1 to 65535 (PostgreSQL's limit) or `pick` names a row that is not there.
pub fn insert_part(sql: &str, spans: &InsertSpans, pick: &[usize]) -> Option<InsertPart> {
    let params: Vec<Range<usize>> = super::lex::Lexer::new(sql)
        .filter(|t| t.kind == Tok::Param)
        .map(|t| t.start..t.end)
        .collect();
    let mut out = InsertPart {
        sql: String::with_capacity(sql.len()),
        params: Vec::new(),
    };
    let copy = |out: &mut InsertPart, r: Range<usize>| -> Option<()> {
        let mut at = r.start;
        let first = params.partition_point(|p| p.start < r.start);
        for p in params[first..].iter().take_while(|p| p.end <= r.end) {
            out.sql.push_str(sql.get(at..p.start)?);
            let n: usize = sql.get(p.start + 1..p.end)?.parse().ok()?;
            let old = n.checked_sub(1).filter(|&i| i < 65535)?;
            let new = match out.params.iter().position(|&q| q == old) {
                Some(i) => i,
                None => {
                    out.params.push(old);
                    out.params.len() - 1
                }
            };
            out.sql.push('$');
            out.sql.push_str(&(new + 1).to_string());
            at = p.end;
        }
        out.sql.push_str(sql.get(at..r.end)?);
        Some(())
    };
    copy(&mut out, 0..spans.prefix_end)?;
    for (k, &i) in pick.iter().enumerate() {
        if k > 0 {
            out.sql.push_str(", ");
        }
        copy(&mut out, spans.rows.get(i)?.clone())?;
    }
    copy(&mut out, spans.suffix_start..sql.len())?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rebuild(sql: &str, s: &InsertSpans, pick: &[usize]) -> String {
        let rows: Vec<&str> = pick.iter().map(|&i| &sql[s.rows[i].clone()]).collect();
        format!(
            "{}{}{}",
            &sql[..s.prefix_end],
            rows.join(", "),
            &sql[s.suffix_start..]
        )
    }

    #[test]
    fn multi_row_insert() {
        let sql = "INSERT INTO t (a, b) VALUES (1, '(x'), (2, f(3, 4)),(3,')') ON CONFLICT (a) DO NOTHING RETURNING a;";
        let s = insert_values_spans(sql).expect("spans");
        assert_eq!(s.rows.len(), 3);
        assert_eq!(&sql[s.rows[0].clone()], "(1, '(x')");
        assert_eq!(&sql[s.rows[1].clone()], "(2, f(3, 4))");
        assert_eq!(&sql[s.rows[2].clone()], "(3,')')");
        assert_eq!(
            rebuild(sql, &s, &[0, 2]),
            "INSERT INTO t (a, b) VALUES (1, '(x'), (3,')') ON CONFLICT (a) DO NOTHING RETURNING a;"
        );
    }

    #[test]
    fn parts_renumber_parameters() {
        let sql = "INSERT INTO t (a, b) VALUES ($1, $2), ($3, '$9' || $4), ($5, $2) \
                   ON CONFLICT (a) DO UPDATE SET b = $6 RETURNING a, $7::int";
        let s = insert_values_spans(sql).expect("spans");
        let p = insert_part(sql, &s, &[1, 2]).expect("part");
        assert_eq!(
            p.sql,
            "INSERT INTO t (a, b) VALUES ($1, '$9' || $2), ($3, $4) \
             ON CONFLICT (a) DO UPDATE SET b = $5 RETURNING a, $6::int"
        );
        assert_eq!(p.params, vec![2, 3, 4, 1, 5, 6]);
        let p = insert_part(sql, &s, &[0]).expect("part");
        assert_eq!(p.params, vec![0, 1, 5, 6]);
        assert!(
            p.sql.starts_with("INSERT INTO t (a, b) VALUES ($1, $2) ON"),
            "{}",
            p.sql
        );
        assert_eq!(insert_part(sql, &s, &[3]), None);
        let bad = "INSERT INTO t (a) VALUES ($0), ($1)";
        let s = insert_values_spans(bad).expect("spans");
        assert_eq!(insert_part(bad, &s, &[0]), None);
        assert!(insert_part(bad, &s, &[1]).is_some());
    }

    #[test]
    fn not_values_inserts() {
        assert_eq!(insert_values_spans("INSERT INTO t SELECT 1"), None);
        assert_eq!(insert_values_spans("INSERT INTO t DEFAULT VALUES"), None);
        assert_eq!(insert_values_spans("SELECT 1"), None);
        assert_eq!(insert_values_spans("INSERT INTO t (a) VALUES (1"), None);
        assert_eq!(insert_values_spans("INSERT INTO t (a)) VALUES (1)"), None);
        assert_eq!(insert_values_spans(""), None);
    }

    #[test]
    fn single_row_with_comments() {
        let sql = "insert into pgbench_history (tid, bid, aid, delta, mtime) values /* c */ (3, 1, 5, -4321, CURRENT_TIMESTAMP)";
        let s = insert_values_spans(sql).expect("spans");
        assert_eq!(s.rows, vec![73..108]);
        assert_eq!(s.suffix_start, sql.len());
        assert_eq!(
            &sql[s.rows[0].clone()],
            "(3, 1, 5, -4321, CURRENT_TIMESTAMP)"
        );
    }
}
