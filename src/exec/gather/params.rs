//! The gather's parameters and shard statement text: literal and parameter
//! values as text, LIMIT/OFFSET bounds, the statement each shard runs
//! (the client's literals kept), result formats of visible and hidden
//! columns, and the values HAVING reads.

use crate::plan::{
    literal_type, preparable_text, same_number, types_hash, GatherPlan, Literals, RowCount,
    SqlPiece,
};
use crate::protocol::error::codes;
use crate::protocol::PgError;

use crate::exec::route::{Raw, Values};

/// Literal/parameter `i` as text (None = NULL); binary integer parameters
/// (int8/int4/int2, as LIMIT/OFFSET/HAVING constants) are rendered in
/// decimal.
pub(super) fn param_text(values: &Values<'_, '_>, i: usize) -> Result<Option<String>, PgError> {
    match values.raw(i)? {
        None => Ok(None),
        Some(Raw::Text(t)) => Ok(Some(t.into_owned())),
        Some(Raw::Binary(b)) => Ok(Some(binary_int(b)?.to_string())),
    }
}

/// A binary int8/int4/int2 parameter's value. Errors: 0A000 for another
/// length (another type).
fn binary_int(b: &[u8]) -> Result<i64, PgError> {
    Ok(match *b {
        [a, b2, c, d, e, f, g, h] => i64::from_be_bytes([a, b2, c, d, e, f, g, h]),
        [a, b2, c, d] => i32::from_be_bytes([a, b2, c, d]) as i64,
        [a, b2] => i16::from_be_bytes([a, b2]) as i64,
        _ => {
            return Err(PgError::unsupported(
                "binary parameters of this type in LIMIT/OFFSET/HAVING across shards",
            ))
        }
    })
}

/// A LIMIT/OFFSET value; None for NULL.
pub(super) fn row_count(
    values: &Values<'_, '_>,
    c: RowCount,
    what: &str,
) -> Result<Option<i64>, PgError> {
    let i = match c {
        RowCount::Const(v) => return Ok(Some(v)),
        RowCount::Param(i) => i,
    };
    // A text value is read where it is (no copy).
    let t = match values.raw(i)? {
        None => return Ok(None),
        Some(Raw::Text(t)) => t,
        Some(Raw::Binary(b)) => return binary_int(b).map(Some),
    };
    let t = t.trim();
    if let Ok(v) = t.parse::<i64>() {
        return Ok(Some(v));
    }
    match t.parse::<f64>() {
        Ok(f) if f.is_finite() && f.abs() < 9.2e18 => Ok(Some(f.round() as i64)),
        _ => Err(PgError::new(
            codes::INVALID_TEXT_REPRESENTATION,
            format!("invalid input syntax for type bigint: \"{t}\" ({what})"),
        )),
    }
}

/// (offset, limit) of one execution, validated like PostgreSQL.
pub(super) fn window_bounds(
    plan: &GatherPlan,
    values: &Values<'_, '_>,
) -> Result<(u64, Option<u64>), PgError> {
    let limit = match plan.limit {
        Some(c) => row_count(values, c, "LIMIT")?,
        None => None,
    };
    let offset = match plan.offset {
        Some(c) => row_count(values, c, "OFFSET")?,
        None => None,
    };
    if limit.is_some_and(|l| l < 0) {
        return Err(PgError::new("2201W", "LIMIT must not be negative"));
    }
    if offset.is_some_and(|o| o < 0) {
        return Err(PgError::new("2201X", "OFFSET must not be negative"));
    }
    Ok((offset.unwrap_or(0) as u64, limit.map(|l| l as u64)))
}

/// The shards' statement text for a simple-protocol execution.
pub(super) fn shard_sql(
    plan: &GatherPlan,
    sql: &str,
    lits: &Literals,
    offset: u64,
    limit: Option<u64>,
) -> Result<String, PgError> {
    let rows = match limit {
        Some(l) => l.saturating_add(offset).to_string(),
        None => "ALL".to_string(),
    };
    render_pieces(&plan.sql, sql, lits, &rows)
}

/// The shards' statement of a simple-protocol execution as a statement to
/// prepare: the client's literals as typed parameters.
pub(super) struct PreparedShardSql {
    /// The text, `$k` where the literals were.
    pub text: String,
    /// Parameter type OIDs.
    pub types: Vec<u32>,
    /// Parameter values as text.
    pub values: Vec<Option<Vec<u8>>>,
    /// Some parameter is a string's (its type is inferred): see
    /// `plan::PrepareVerdict`.
    pub strings: bool,
    /// `plan::types_hash` of `types`.
    pub types_hash: u64,
}

/// [`shard_sql`] with the client's literals as parameters, so the shards
/// can keep the statement prepared: numbers typed as PostgreSQL types the
/// literal, strings untyped (inferred by the server, as for the literal;
/// see `plan::literal_type`). None when a literal has no parameter form or
/// the text may not be prepared as it is (`plan::preparable_text`): then
/// the literals are written into the text.
pub(super) fn prepared_shard_sql(
    plan: &GatherPlan,
    sql: &str,
    lits: &Literals,
    offset: u64,
    limit: Option<u64>,
) -> Option<PreparedShardSql> {
    let mut text = String::with_capacity(sql.len() + 64);
    let mut types = Vec::new();
    let mut values = Vec::new();
    // (literal, its type, its parameter) of the numbers used: numbers of
    // equal type and value share a parameter, numbered in order of first
    // use.
    let mut numbers: Vec<(usize, u32, usize)> = Vec::new();
    for p in &plan.sql {
        match p {
            SqlPiece::Text(t) => text.push_str(t),
            SqlPiece::Literal(i) => {
                let ty = literal_type(sql, lits, *i)?;
                let same = (ty != 0)
                    .then(|| {
                        numbers.iter().find(|&&(l, t, _)| {
                            t == ty && (l == *i || same_number(sql, lits, l, *i))
                        })
                    })
                    .flatten();
                let k = match same {
                    Some(&(_, _, k)) => k,
                    None => {
                        types.push(ty);
                        values.push(Some(lits.value(sql, *i)?.as_bytes().to_vec()));
                        if ty != 0 {
                            numbers.push((*i, ty, values.len()));
                        }
                        values.len()
                    }
                };
                text.push('$');
                text.push_str(itoa::Buffer::new().format(k));
            }
            SqlPiece::Limit => match limit {
                Some(l) => text.push_str(itoa::Buffer::new().format(l.saturating_add(offset))),
                None => text.push_str("ALL"),
            },
        }
    }
    let strings = types.contains(&0);
    preparable_text(&text).then(|| PreparedShardSql {
        types_hash: types_hash(&types),
        strings,
        text,
        types,
        values,
    })
}

/// Renders statement pieces for a simple-protocol execution: verbatim
/// text, the client's literals copied from `sql` as written, and `limit`
/// for [`SqlPiece::Limit`].
///
/// Errors: XX000 when a literal is not in the text.
pub fn render_pieces(
    pieces: &[SqlPiece],
    sql: &str,
    lits: &Literals,
    limit: &str,
) -> Result<String, PgError> {
    let mut s = String::with_capacity(sql.len() + 64);
    for p in pieces {
        match p {
            SqlPiece::Text(t) => s.push_str(t),
            SqlPiece::Literal(i) => {
                let r = lits.span(*i).and_then(|r| sql.get(r)).ok_or_else(|| {
                    PgError::new(
                        codes::INTERNAL_ERROR,
                        format!("literal {i} not found in statement"),
                    )
                })?;
                s.push_str(r);
            }
            SqlPiece::Limit => s.push_str(limit),
        }
    }
    Ok(s)
}

/// The shards' statement text of a gather for a simple-protocol text, as
/// it would be sent (for `EXPLAIN (ROUTER)`).
pub fn simple_shard_sql(plan: &GatherPlan, sql: &str, lits: &Literals) -> Result<String, PgError> {
    let (offset, limit) = window_bounds(plan, &Values::Simple { sql, lits })?;
    shard_sql(plan, sql, lits, offset, limit)
}

/// Result formats for the shards: the client's codes for the visible
/// columns, binary for the hidden ones.
pub(super) fn shard_formats(
    client: &[i16],
    visible: usize,
    hidden: usize,
) -> Result<Vec<i16>, PgError> {
    let mut v = Vec::with_capacity(visible + hidden);
    match client.len() {
        0 => v.resize(visible, 0),
        1 => v.resize(visible, client[0]),
        n if n == visible => v.extend_from_slice(client),
        n => {
            return Err(PgError::new(
                codes::PROTOCOL_VIOLATION,
                format!("bind message has {n} result formats but query has {visible} columns"),
            ))
        }
    };
    v.extend(std::iter::repeat_n(1, hidden));
    Ok(v)
}

/// The values of the literals/parameters HAVING reads, as text.
pub(super) fn having_params(
    plan: &GatherPlan,
    args: &Values<'_, '_>,
) -> Result<Vec<(usize, Option<String>)>, PgError> {
    let mut out = Vec::new();
    if let Some(c) = plan.grouping.as_ref().and_then(|g| g.having.as_ref()) {
        let mut idx = Vec::new();
        collect_params(c, &mut idx);
        for i in idx {
            out.push((i, param_text(args, i)?));
        }
    }
    Ok(out)
}

pub(super) fn collect_params(c: &crate::plan::Cond, out: &mut Vec<usize>) {
    use crate::plan::{Cond, Operand};
    let op = |o: &Operand, out: &mut Vec<usize>| {
        if let Operand::Param(i) | Operand::NegParam(i) = o {
            out.push(*i);
        }
    };
    match c {
        Cond::Cmp(_, a, b) => {
            op(a, out);
            op(b, out);
        }
        Cond::IsNull(a, _) | Cond::Truth(a) => op(a, out),
        Cond::And(a, b) | Cond::Or(a, b) => {
            collect_params(a, out);
            collect_params(b, out);
        }
        Cond::Not(a) => collect_params(a, out),
    }
}
