//! The final step of a gather ([`FinalStep`], `plan/final_step.rs`): the
//! shards' rows (partial aggregates per group, or raw rows) are collected
//! into one binary array per column, bounded by
//! `limits.intermediate_result_bytes`, and handed to PostgreSQL on the
//! first shard, which runs the client's select list, HAVING, ORDER BY,
//! DISTINCT and LIMIT over them (`FROM unnest($1, ..., $m)`). Its rows are
//! forwarded to the client as they come, in the client's formats.
//!
//! The client's statement is parsed on the same connection first,
//! pipelined with the final query (PostgreSQL's checks and errors, e.g. a
//! column that is not grouped); in the simple protocol it is also
//! described, so the client's RowDescription is PostgreSQL's own for its
//! statement.

use bytes::BytesMut;
use postgres_protocol::message::frontend as fe;

use crate::plan::{AggFunc, AggSlot, FinalStep, Literals};
use crate::protocol::client_io::CLIENT_FLUSH_BYTES;
use crate::protocol::error::codes;
use crate::protocol::frontend::Bind;
use crate::protocol::{synth, PgError};
use crate::value::array::{array_type, ArrayBuilder};
use crate::value::oid;

use super::merge::Layout;
use super::params::render_pieces;
use super::shard_io::{next_event, row_or_end, row_values, Merged, Phase};
use crate::exec::concat::with_shard_detail;
use crate::exec::context::{End, ExecCtx};
use crate::exec::statement::ClientStmt;

/// `$__pgr_rows` in the final query's text.
const ROWS_MARKER: &str = "$__pgr_rows";

/// What the final step sends besides the shards' rows.
pub(super) struct FinalCtx {
    /// The final query's text (client literals in place; combine and row
    /// markers still in).
    pub(super) sql: String,
    /// The client's statement and its parameter types: parsed first on
    /// the same connection (PostgreSQL checks it: an invalid GROUP BY is
    /// PostgreSQL's error, not a different grouping), and in the simple
    /// protocol described for the client's RowDescription.
    pub(super) check: (String, Vec<u32>),
    /// Simple protocol: send the client the description of `check`.
    pub(super) describe: bool,
    /// The client's parameters the final query uses: types, formats,
    /// values.
    pub(super) param_types: Vec<u32>,
    pub(super) param_formats: Vec<i16>,
    pub(super) params: Vec<Option<Vec<u8>>>,
    /// The client's result format codes.
    pub(super) result_formats: Vec<i16>,
}

/// The final step's context of a simple-protocol execution of `sql`
/// (results in `result_formats`: empty for text).
///
/// Errors: XX000 when a literal is not in the text.
pub(super) fn simple_ctx(
    f: &FinalStep,
    sql: &str,
    lits: &Literals,
    result_formats: &[i16],
) -> Result<FinalCtx, PgError> {
    Ok(FinalCtx {
        sql: render_pieces(&f.sql, sql, lits, "ALL")?,
        check: (sql.to_string(), Vec::new()),
        describe: true,
        param_types: Vec::new(),
        param_formats: Vec::new(),
        params: Vec::new(),
        result_formats: result_formats.to_vec(),
    })
}

/// The final step's context of an Execute of `stmt` bound by `b`.
///
/// Errors: 08P01 for a Bind with fewer parameters than the statement
/// uses.
pub(super) fn extended_ctx(
    f: &FinalStep,
    stmt: &ClientStmt,
    b: &Bind<'_>,
) -> Result<FinalCtx, PgError> {
    let (param_formats, params) = param_subset(b, &f.params)?;
    Ok(FinalCtx {
        sql: render_pieces(&f.sql, "", &Literals::default(), "ALL")?,
        check: (stmt.query.clone(), stmt.param_types.clone()),
        describe: false,
        param_types: f
            .params
            .iter()
            .map(|&i| stmt.param_types.get(i).copied().unwrap_or(0))
            .collect(),
        param_formats,
        params,
        result_formats: b.result_formats.to_vec(),
    })
}

/// The formats and values of Bind parameters `idx` (0-based), in order.
///
/// Errors: 08P01 when the Bind has fewer parameters.
pub(super) fn param_subset(
    b: &Bind<'_>,
    idx: &[usize],
) -> Result<(Vec<i16>, Vec<Option<Vec<u8>>>), PgError> {
    let mut formats = Vec::with_capacity(idx.len());
    let mut values = Vec::with_capacity(idx.len());
    for &i in idx {
        let Some(v) = b.params.get(i) else {
            return Err(PgError::new(
                codes::PROTOCOL_VIOLATION,
                format!(
                    "bind message supplies {} parameters, but prepared statement requires at least {}",
                    b.params.len(),
                    i + 1
                ),
            ));
        };
        formats.push(match b.param_formats.len() {
            0 => 0,
            1 => b.param_formats[0],
            _ => b.param_formats.get(i).copied().unwrap_or(0),
        });
        values.push(v.map(|x| x.to_vec()));
    }
    Ok((formats, values))
}

/// The final query with its markers replaced: the array parameters
/// `$1, ..., $m`, and each combine as PostgreSQL's own aggregate would
/// compute it from the partials (types from `types`, the shards' column
/// types): `count` = `coalesce(sum(counts), 0)::int8`, `sum` of int8
/// partials (sums of
/// int2/int4) cast back to int8, `avg` = `sum(sums) / sum(counts)` in
/// numeric (integer and numeric input, PostgreSQL's `numeric_div`) or
/// float8, DISTINCT aggregates over the distinct values.
///
/// Errors: 0A000 for an `avg` over a type whose division is not known
/// here.
fn render(sql: &str, f: &FinalStep, types: &[u32]) -> Result<String, PgError> {
    let m = types.len();
    let rows: Vec<String> = (1..=m).map(|i| format!("${i}")).collect();
    let mut out = sql.replacen(ROWS_MARKER, &rows.join(", "), 1);
    for (i, c) in f.combines.iter().enumerate().rev() {
        let text = combine(c, types)?;
        out = out.replace(&format!("$__pgr_agg_{i}_"), &text);
    }
    Ok(out)
}

/// The final query of `f` for `EXPLAIN (ROUTER)` of the simple-protocol
/// text `sql`: literals in place, the `m` array parameters, combines with
/// the partials' types not yet known (an avg as `sum / sum`).
///
/// Errors: XX000 when a literal is not in the text.
pub fn explain_final_sql(
    f: &FinalStep,
    m: usize,
    sql: &str,
    lits: &Literals,
) -> Result<String, PgError> {
    let text = render_pieces(&f.sql, sql, lits, "ALL")?;
    render(&text, f, &vec![0; m])
}

/// The SQL of combine `c` over the partials' columns of types `types`
/// (0: not known yet, for EXPLAIN).
fn combine(c: &AggSlot, types: &[u32]) -> Result<String, PgError> {
    let col = |k: usize| format!("_pgr.c{}", c.partials.get(k).copied().unwrap_or(0));
    let ty = |k: usize| {
        c.partials
            .get(k)
            .and_then(|&p| types.get(p))
            .copied()
            .unwrap_or(0)
    };
    let p = col(0);
    if c.distinct {
        let name = match c.func {
            AggFunc::Count => "count",
            AggFunc::Sum => "sum",
            AggFunc::Avg => "avg",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
            AggFunc::BoolAnd => "bool_and",
            AggFunc::BoolOr => "bool_or",
        };
        return Ok(format!("({name}(DISTINCT {p}))"));
    }
    Ok(match c.func {
        // No partial row at all (an ungrouped count whose shards grouped
        // by a DISTINCT argument and matched nothing) is a count of 0.
        AggFunc::Count => format!("(coalesce(sum({p}), 0)::int8)"),
        AggFunc::Sum if ty(0) == oid::INT8 => format!("(sum({p})::int8)"),
        AggFunc::Sum => format!("(sum({p}))"),
        AggFunc::Min => format!("(min({p}))"),
        AggFunc::Max => format!("(max({p}))"),
        AggFunc::BoolAnd => format!("(bool_and({p}))"),
        AggFunc::BoolOr => format!("(bool_or({p}))"),
        AggFunc::Avg => {
            let n = col(1);
            match ty(0) {
                oid::INT8 | oid::NUMERIC => {
                    format!("(sum({p})::numeric / nullif(sum({n}), 0)::numeric)")
                }
                oid::FLOAT4 | oid::FLOAT8 => {
                    format!("(sum({p})::float8 / nullif(sum({n}), 0)::float8)")
                }
                1186 => format!("(sum({p}) / nullif(sum({n}), 0)::float8)"),
                0 => format!("(sum({p}) / nullif(sum({n}), 0))"),
                t => {
                    return Err(PgError::unsupported(format!(
                        "avg() over values of type oid {t} with expressions over aggregates across shards"
                    )))
                }
            }
        }
    })
}

impl ExecCtx {
    /// Reads every shard's rows (all columns hidden, binary) into one
    /// array per column. Errors (as [`Merged::Failed`]): 54000 past
    /// `limits.intermediate_result_bytes`.
    pub(super) async fn collect_rows(
        &mut self,
        idxs: &[usize],
        shards: &[String],
        layout: &Layout,
        phase: &mut [Phase],
        arrays: &mut Vec<ArrayBuilder>,
    ) -> Result<Merged, End> {
        let limit = self.state.limits().intermediate_result_bytes;
        *arrays = layout.types.iter().map(|&t| ArrayBuilder::new(t)).collect();
        let mut size = 0u64;
        for n in 0..idxs.len() {
            while phase[n] == Phase::Open {
                let ev = next_event!(self, idxs[n]);
                let f = match row_or_end(ev, &mut phase[n], idxs[n], &shards[n]) {
                    Ok(Some(f)) => f,
                    Ok(None) => continue,
                    Err(m) => return Ok(m),
                };
                let vals = match row_values(&f) {
                    Ok(v) => v,
                    Err(m) => return Ok(m),
                };
                for (a, v) in arrays.iter_mut().zip(vals.iter()) {
                    a.push(*v);
                }
                size += f.data.len() as u64;
                if size > limit {
                    return Ok(Merged::Failed(
                        PgError::new(
                            codes::PROGRAM_LIMIT_EXCEEDED,
                            format!(
                                "the shards' intermediate result for this statement exceeds limits.intermediate_result_bytes ({limit} bytes)"
                            ),
                        )
                        .with_hint("restrict the rows (a sharding key condition), or raise limits.intermediate_result_bytes"),
                    ));
                }
            }
        }
        Ok(Merged::Ok)
    }

    /// Runs the final query on held connection `idx` (shard `shard`) over
    /// `arrays` and forwards its rows (at most `max_rows`, then
    /// PortalSuspended; extended protocol). Returns false after sending an
    /// error: the final query's own (shard named in DETAIL), 0A000 for a
    /// column type without a known array type.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_final(
        &mut self,
        idx: usize,
        shard: &str,
        f: &FinalStep,
        ctx: FinalCtx,
        layout: &Layout,
        arrays: &[ArrayBuilder],
        max_rows: Option<u64>,
    ) -> Result<bool, End> {
        let mut types = Vec::with_capacity(arrays.len() + ctx.param_types.len());
        for &t in &layout.types {
            match array_type(t) {
                Some(a) => types.push(a),
                None => {
                    self.send_error(&PgError::unsupported(format!(
                        "passing values of type oid {t} to the final step of a multi-shard SELECT is not supported"
                    )));
                    return Ok(false);
                }
            }
        }
        let sql = match render(&ctx.sql, f, &layout.types) {
            Ok(s) => s,
            Err(e) => {
                self.send_error(&e);
                return Ok(false);
            }
        };
        types.extend(&ctx.param_types);
        let values: Vec<Vec<u8>> = arrays.iter().map(ArrayBuilder::finish).collect();
        let mut params: Vec<Option<&[u8]>> = values.iter().map(|v| Some(v.as_slice())).collect();
        params.extend(ctx.params.iter().map(|p| p.as_deref()));
        let mut formats = vec![1i16; values.len()];
        formats.extend(&ctx.param_formats);
        let simple = ctx.describe;
        let mut out = BytesMut::new();
        let encoded = (|| {
            let (text, check_types) = &ctx.check;
            fe::parse("", text, check_types.iter().copied(), &mut out)?;
            if simple {
                fe::describe(b'S', "", &mut out)?;
            }
            fe::parse("", &sql, types.iter().copied(), &mut out)?;
            synth::bind(&mut out, "", "", &formats, &params, &ctx.result_formats);
            let limit = max_rows.and_then(|m| i32::try_from(m).ok()).unwrap_or(0);
            fe::execute("", limit, &mut out)?;
            if simple {
                fe::sync(&mut out);
            } else {
                fe::flush(&mut out);
            }
            Ok::<_, std::io::Error>(())
        })();
        if let Err(e) = encoded {
            self.send_error(&PgError::new(codes::PROGRAM_LIMIT_EXCEEDED, e.to_string()));
            return Ok(false);
        }
        let conn = &mut self.held[idx].conn;
        conn.out.extend_from_slice(&out);
        if let Err(e) = conn.flush().await {
            return self.lost(idx, e);
        }
        let mut ok = true;
        loop {
            let fr = match self.held[idx].conn.recv().await {
                Ok(fr) => fr,
                Err(e) => return self.lost(idx, e),
            };
            match fr.tag {
                b'T' if simple => self.out.buf.extend_from_slice(&fr.data),
                b'D' => {
                    self.out.buf.extend_from_slice(&fr.data);
                    if self.out.buf.len() >= CLIENT_FLUSH_BYTES {
                        self.out.flush().await?;
                    }
                }
                b'C' => {
                    self.out.buf.extend_from_slice(&fr.data);
                    if !simple {
                        break;
                    }
                }
                b's' => {
                    self.out.buf.extend_from_slice(&fr.data);
                    self.portal_suspended = true;
                    break;
                }
                b'E' => {
                    self.forward_error_frame(&with_shard_detail(&fr, Some(shard)));
                    ok = false;
                    if !simple {
                        break;
                    }
                }
                b'Z' => {
                    self.held[idx].conn.status = fr.body().first().copied().unwrap_or(b'I');
                    break;
                }
                _ => {}
            }
        }
        Ok(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combines_follow_the_partial_types() {
        let f = FinalStep {
            sql: Vec::new(),
            combines: vec![
                AggSlot {
                    func: AggFunc::Count,
                    distinct: false,
                    partials: vec![1],
                },
                AggSlot {
                    func: AggFunc::Avg,
                    distinct: false,
                    partials: vec![2, 1],
                },
                AggSlot {
                    func: AggFunc::Sum,
                    distinct: false,
                    partials: vec![2],
                },
            ],
            raw: false,
            params: Vec::new(),
        };
        let sql = "SELECT $__pgr_agg_0_ + $__pgr_agg_1_ / $__pgr_agg_2_ FROM unnest($__pgr_rows)";
        assert_eq!(
            render(sql, &f, &[oid::INT4, oid::INT8, oid::INT8]).expect("rendered"),
            "SELECT (coalesce(sum(_pgr.c1), 0)::int8) + (sum(_pgr.c2)::numeric / nullif(sum(_pgr.c1), 0)::numeric) / (sum(_pgr.c2)::int8) FROM unnest($1, $2, $3)"
        );
        assert!(
            render(sql, &f, &[oid::INT4, oid::INT8, oid::TEXT]).is_err(),
            "avg of text"
        );
    }
}
