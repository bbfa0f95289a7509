//! The text of an INSERT whose omitted sharding key the router fills in
//! ([`super::Plan::GenerateKey`]): the key column named, each row given its
//! drawn value, so the statement routes like any keyed INSERT.

use super::lex::significant;
use super::names::quote_ident;
use super::spans::insert_values_spans;
use super::types::{GeneratedInsert, InsertForm};

/// `sql` rewritten to give key column `g.key` the value `values[i]` in row
/// `i`: for [`InsertForm::ColumnList`] the key is appended to the column
/// list and to each row, for [`InsertForm::Columns`] a column list (those
/// columns, then the key) is added before `VALUES`, and `DEFAULT VALUES`
/// becomes `(key) VALUES (value)`. A GENERATED ALWAYS identity key also
/// gets `OVERRIDING SYSTEM VALUE`. Everything else (comments, literals,
/// ON CONFLICT, RETURNING) is kept byte for byte.
///
/// None if the text does not have the shape the plan was made from (rows
/// count differs, no VALUES list) or says `OVERRIDING USER VALUE` (the
/// shards would discard the generated values).
pub fn with_generated_keys(sql: &str, g: &GeneratedInsert, values: &[i64]) -> Option<String> {
    let mut toks = significant(sql).peekable();
    if !toks.next()?.is_word(sql, "insert") || !toks.next()?.is_word(sql, "into") {
        return None;
    }
    let key = quote_ident(&g.key);
    // (position, text inserted there) and one optional replaced range.
    let mut edits: Vec<(usize, String)> = Vec::new();
    let mut replace: Option<(std::ops::Range<usize>, String)> = None;
    let mut depth = 0usize;
    let mut overriding = false;
    let mut list_done = false;
    let values_at = loop {
        let t = toks.next()?;
        if t.is_punct(sql, b'(') {
            depth += 1;
        } else if t.is_punct(sql, b')') {
            depth = depth.checked_sub(1)?;
            if depth == 0 && !list_done && g.form == InsertForm::ColumnList {
                edits.push((t.start, format!(", {key}")));
                list_done = true;
            }
        } else if depth > 0 {
            continue;
        } else if t.is_word(sql, "overriding") {
            if toks.peek().is_some_and(|n| n.is_word(sql, "user")) {
                return None;
            }
            overriding = true;
            if let InsertForm::Columns(cols) = &g.form {
                edits.push((t.start, column_list(cols, &key)));
            }
        } else if t.is_word(sql, "default") {
            let v = toks.next()?;
            if g.form != InsertForm::DefaultValues || !v.is_word(sql, "values") {
                return None;
            }
            let value = *values.first()?;
            let over = if g.generator.always {
                "OVERRIDING SYSTEM VALUE "
            } else {
                ""
            };
            replace = Some((t.start..v.end, format!("({key}) {over}VALUES ({value})")));
            break None;
        } else if t.is_word(sql, "values") {
            break Some(t.start);
        } else if t.is_word(sql, "select") {
            return None;
        }
    };
    if let Some(at) = values_at {
        match &g.form {
            InsertForm::DefaultValues => return None,
            InsertForm::ColumnList if !list_done => return None,
            InsertForm::Columns(cols) if !overriding => edits.push((at, column_list(cols, &key))),
            _ => {}
        }
        if g.generator.always && !overriding {
            edits.push((at, "OVERRIDING SYSTEM VALUE ".into()));
        }
        let spans = insert_values_spans(sql)?;
        if spans.rows.len() != values.len() {
            return None;
        }
        let mut replaced = Vec::new();
        for (r, v) in spans.rows.iter().zip(values) {
            match g.form {
                InsertForm::DefaultAt(n) => {
                    let item = row_item(sql, r.clone(), n)?;
                    replaced.push((item, v.to_string()));
                }
                // Before the row's closing parenthesis.
                _ => edits.push((r.end - 1, format!(", {v}"))),
            }
        }
        if !replaced.is_empty() {
            return splice(sql, edits, replaced);
        }
    }
    splice(sql, edits, replace.into_iter().collect())
}

/// `sql` with `inserts` (position, text) and `replaces` (range, text)
/// applied; None if they overlap or fall outside the text.
fn splice(
    sql: &str,
    inserts: Vec<(usize, String)>,
    replaces: Vec<(std::ops::Range<usize>, String)>,
) -> Option<String> {
    let mut edits: Vec<(std::ops::Range<usize>, String)> = inserts
        .into_iter()
        .map(|(p, t)| (p..p, t))
        .chain(replaces)
        .collect();
    edits.sort_by_key(|e| (e.0.start, e.0.end));
    let mut out = String::with_capacity(sql.len() + 16 * edits.len());
    let mut at = 0;
    for (r, text) in edits {
        out.push_str(sql.get(at..r.start)?);
        out.push_str(&text);
        at = r.end;
    }
    out.push_str(sql.get(at..)?);
    Some(out)
}

/// The byte range of item `n` (0-based, trimmed) of the row group `row`
/// (`( a, b, ... )` including its parentheses); None if the row has fewer
/// items or the item is not the keyword DEFAULT.
fn row_item(sql: &str, row: std::ops::Range<usize>, n: usize) -> Option<std::ops::Range<usize>> {
    let inner = row.start + 1..row.end - 1;
    let mut depth = 0usize;
    let mut index = 0usize;
    for t in significant(sql.get(inner.clone())?) {
        let (start, end) = (inner.start + t.start, inner.start + t.end);
        if t.is_punct(&sql[inner.clone()], b'(') {
            depth += 1;
        } else if t.is_punct(&sql[inner.clone()], b')') {
            depth = depth.checked_sub(1)?;
        } else if depth == 0 && t.is_punct(&sql[inner.clone()], b',') {
            index += 1;
        } else if index == n && depth == 0 {
            return t
                .is_word(&sql[inner.clone()], "default")
                .then_some(start..end);
        }
    }
    None
}

/// `(a, b, key) ` for a statement without a column list.
fn column_list(cols: &[String], key: &str) -> String {
    let mut s = String::from("(");
    for c in cols {
        s.push_str(&quote_ident(c));
        s.push_str(", ");
    }
    s.push_str(key);
    s.push_str(") ");
    s
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::plan::schema::KeyGenerator;

    fn gen(form: InsertForm, rows: usize, always: bool) -> GeneratedInsert {
        GeneratedInsert {
            table: Arc::from("t"),
            key: "id".into(),
            generator: KeyGenerator {
                min: 1,
                max: i32::MAX as i64,
                always,
                sequence: None,
            },
            rows,
            form,
        }
    }

    #[test]
    fn column_list_gets_the_key() {
        let g = gen(InsertForm::ColumnList, 2, false);
        let sql = "INSERT INTO sbtest1(k, c) VALUES (1, ')'), (2, f(3)) RETURNING id";
        assert_eq!(
            with_generated_keys(sql, &g, &[10, 11]).as_deref(),
            Some(
                "INSERT INTO sbtest1(k, c, \"id\") VALUES (1, ')', 10), (2, f(3), 11) RETURNING id"
            )
        );
        assert_eq!(with_generated_keys(sql, &g, &[10]), None, "row count");
    }

    #[test]
    fn no_column_list_names_the_columns() {
        let g = gen(
            InsertForm::Columns(vec!["k".into(), "Mixed".into()]),
            1,
            true,
        );
        assert_eq!(
            with_generated_keys("insert into t values (1, 'a')", &g, &[5]).as_deref(),
            Some("insert into t (\"k\", \"Mixed\", \"id\") OVERRIDING SYSTEM VALUE values (1, 'a', 5)")
        );
        assert_eq!(
            with_generated_keys("insert into t overriding system value values (1, 'a')", &g, &[5])
                .as_deref(),
            Some("insert into t (\"k\", \"Mixed\", \"id\") overriding system value values (1, 'a', 5)")
        );
        assert_eq!(
            with_generated_keys(
                "insert into t overriding user value values (1, 'a')",
                &g,
                &[5]
            ),
            None
        );
    }

    #[test]
    fn default_items_are_replaced() {
        let g = gen(InsertForm::DefaultAt(1), 2, false);
        let sql = "INSERT INTO t (c, id) VALUES (f(1, 2), DEFAULT), ('x', default) RETURNING id";
        assert_eq!(
            with_generated_keys(sql, &g, &[3, 4]).as_deref(),
            Some("INSERT INTO t (c, id) VALUES (f(1, 2), 3), ('x', 4) RETURNING id")
        );
        let g = gen(InsertForm::DefaultAt(0), 1, false);
        assert_eq!(
            with_generated_keys("INSERT INTO t (id) VALUES (1)", &g, &[3]),
            None
        );
    }

    #[test]
    fn default_values() {
        let g = gen(InsertForm::DefaultValues, 1, false);
        assert_eq!(
            with_generated_keys("INSERT INTO t DEFAULT VALUES RETURNING *", &g, &[7]).as_deref(),
            Some("INSERT INTO t (\"id\") VALUES (7) RETURNING *")
        );
        assert_eq!(
            with_generated_keys("INSERT INTO t SELECT 1", &g, &[7]),
            None
        );
    }
}
