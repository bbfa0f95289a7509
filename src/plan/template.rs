//! The shards' statement text of a gather as [`SqlPiece`]s: verbatim SQL,
//! the client's literals (simple protocol: copied from the client's text at
//! each execution) and the row count the shards return (`LIMIT l + o`).

use super::analyze::ParamMode;
use super::types::{RowCount, SqlPiece};

/// Placeholder written as the shards' LIMIT while rewriting; replaced by
/// [`SqlPiece::Limit`].
pub(crate) const LIMIT_MARKER: &str = "$__pgr_limit";

/// Splits the rendered shard statement into pieces. In
/// [`ParamMode::Literals`] texts `$n` is literal `n-1` of the client's
/// text; in the extended protocol `$n` stays a parameter and the LIMIT is
/// rendered here (`($a::int8 + $b::int8)` when parameters are involved;
/// for a `grouped` statement the shards return every group, `ALL`, with
/// the parameters still referenced).
pub(crate) fn template(
    sql: &str,
    mode: ParamMode,
    limit: Option<RowCount>,
    offset: Option<RowCount>,
    grouped: bool,
) -> Vec<SqlPiece> {
    let mut pieces = Vec::new();
    let mut text = String::with_capacity(sql.len());
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\'' || c == b'"' {
            // Copy a quoted string or identifier ('' and "" are escapes; an
            // E'..' string's \' is skipped too).
            let start = i;
            let escaped = c == b'\'' && i > 0 && (b[i - 1] == b'E' || b[i - 1] == b'e');
            i += 1;
            while i < b.len() {
                if escaped && b[i] == b'\\' {
                    i += 2;
                    continue;
                }
                if b[i] == c {
                    if b.get(i + 1) == Some(&c) {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
            text.push_str(&sql[start..i.min(b.len())]);
            continue;
        }
        if c == b'$' {
            if sql[i..].starts_with(LIMIT_MARKER) {
                match mode {
                    ParamMode::Literals | ParamMode::Ignore => {
                        flush(&mut pieces, &mut text);
                        pieces.push(SqlPiece::Limit)
                    }
                    ParamMode::Keys if grouped => text.push_str(&all_rows(limit, offset)),
                    ParamMode::Keys => text.push_str(&extended_limit(limit, offset)),
                }
                i += LIMIT_MARKER.len();
                continue;
            }
            let digits = b[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
            if digits > 0 && mode == ParamMode::Literals {
                if let Ok(n) = sql[i + 1..i + 1 + digits].parse::<usize>() {
                    if n > 0 {
                        flush(&mut pieces, &mut text);
                        pieces.push(SqlPiece::Literal(n - 1));
                        i += 1 + digits;
                        continue;
                    }
                }
            }
        }
        // Copy one UTF-8 character.
        let len = utf8_len(c);
        text.push_str(&sql[i..(i + len).min(b.len())]);
        i += len;
    }
    flush(&mut pieces, &mut text);
    pieces
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

fn flush(pieces: &mut Vec<SqlPiece>, text: &mut String) {
    if !text.is_empty() {
        pieces.push(SqlPiece::Text(std::mem::take(text)));
    }
}

fn count_sql(c: RowCount) -> String {
    match c {
        RowCount::Const(v) => v.to_string(),
        RowCount::Param(i) => format!("${}::int8", i + 1),
    }
}

/// The shards' LIMIT for an extended-protocol statement (parameters stay
/// parameters; an OFFSET parameter is still referenced so that the shards
/// can infer its type).
fn extended_limit(limit: Option<RowCount>, offset: Option<RowCount>) -> String {
    match (limit, offset) {
        (Some(RowCount::Const(l)), None) => l.to_string(),
        (Some(RowCount::Const(l)), Some(RowCount::Const(o))) => {
            l.saturating_add(o.max(0)).to_string()
        }
        (Some(l), None) => format!("({})", count_sql(l)),
        (Some(l), Some(o)) => format!("({} + {})", count_sql(l), count_sql(o)),
        (None, Some(RowCount::Param(i))) => format!("ALL OFFSET (0 * ${}::int8)", i + 1),
        (None, _) => "ALL".into(),
    }
}

/// `ALL`, referencing the LIMIT/OFFSET parameters (`0 * $n` is 0, or NULL,
/// which OFFSET treats as 0).
fn all_rows(limit: Option<RowCount>, offset: Option<RowCount>) -> String {
    let refs: Vec<String> = [limit, offset]
        .into_iter()
        .flatten()
        .filter_map(|c| match c {
            RowCount::Param(i) => Some(format!(" * ${}::int8", i + 1)),
            RowCount::Const(_) => None,
        })
        .collect();
    if refs.is_empty() {
        "ALL".into()
    } else {
        format!("ALL OFFSET (0{})", refs.concat())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces() {
        let t = template(
            "SELECT a, 'x$1' FROM t WHERE b = $2 LIMIT $__pgr_limit",
            ParamMode::Literals,
            None,
            None,
            false,
        );
        assert_eq!(
            t,
            vec![
                SqlPiece::Text("SELECT a, 'x$1' FROM t WHERE b = ".into()),
                SqlPiece::Literal(1),
                SqlPiece::Text(" LIMIT ".into()),
                SqlPiece::Limit,
            ]
        );
        let t = template(
            "SELECT a FROM t WHERE b = $2 LIMIT $__pgr_limit",
            ParamMode::Keys,
            Some(RowCount::Param(0)),
            Some(RowCount::Const(5)),
            false,
        );
        assert_eq!(
            t,
            vec![SqlPiece::Text(
                "SELECT a FROM t WHERE b = $2 LIMIT ($1::int8 + 5)".into()
            )]
        );
        let t = template(
            "SELECT é FROM t LIMIT $__pgr_limit",
            ParamMode::Keys,
            None,
            Some(RowCount::Param(1)),
            false,
        );
        assert_eq!(
            t,
            vec![SqlPiece::Text(
                "SELECT é FROM t LIMIT ALL OFFSET (0 * $2::int8)".into()
            )]
        );
    }
}
