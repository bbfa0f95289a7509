//! Recursive planning of subqueries ([`Plan::Subqueries`]; Citus's
//! recursive planning; the extended protocol's Binds come here through
//! `subqueries_ext.rs`): the subqueries of the statement
//! that can run on their own (`plan/subquery.rs`), outermost first, each
//! run like a statement of the client's (planned, routed, merged, its own
//! subqueries run first in turn) with its response kept by the router
//! (`limits.intermediate_result_bytes` for all of them together, 54000
//! beyond), then written into the text as a VALUES query of its rows with
//! the same column names and types; the new text is planned again.
//!
//! Each subquery runs as its own statement, in the client's transaction
//! block when there is one: like a multi-shard statement it does not share
//! one snapshot with the rest of the statement.

use crate::plan::{self, Plan};
use crate::protocol::backend::{captured_rows, error_code, error_fields};
use crate::protocol::error::codes;
use crate::protocol::PgError;
use crate::state::Routing;

use crate::exec::End;

use super::Session;

/// DETAIL of the 0A000 for a statement none of whose subqueries over
/// sharded tables can run first.
pub(super) const NO_RUNNABLE_SUBQUERY: &str = "no parenthesized subquery over sharded tables could run before the statement on its own: a subquery that refers to the outer query runs with it only when joined with it on the sharding key (inner.key = outer.key); the parts of a set operation run first when parenthesized ((SELECT ...) UNION (SELECT ...))";

/// A subquery's response as the router kept it.
struct SubqueryRows {
    /// (name, type OID, type modifier) of each column.
    columns: Vec<(String, u32, i32)>,
    /// Rows as text (None = NULL).
    rows: Vec<Vec<Option<String>>>,
}

/// The name `format_type` gives a built-in type without modifier, so the
/// common case needs no round trip.
fn builtin_type_name(oid: u32, typmod: i32) -> Option<&'static str> {
    if typmod != -1 {
        return None;
    }
    Some(match oid {
        16 => "boolean",
        17 => "bytea",
        20 => "bigint",
        21 => "smallint",
        23 => "integer",
        25 => "text",
        114 => "json",
        700 => "real",
        701 => "double precision",
        1043 => "character varying",
        1082 => "date",
        1114 => "timestamp without time zone",
        1184 => "timestamp with time zone",
        1186 => "interval",
        1700 => "numeric",
        2950 => "uuid",
        3802 => "jsonb",
        _ => return None,
    })
}

impl Session {
    /// One round of recursive planning of `sql` (planned as
    /// [`Plan::Subqueries`] with `message` and `hint`): the text with its
    /// runnable subqueries replaced by their rows. None after sending an
    /// error: a subquery's own, 54000 past the intermediate bound, 0A000
    /// when no subquery could run on its own or one refers to the outer
    /// query by an unqualified column (42703 running alone).
    pub(super) async fn run_subqueries(
        &mut self,
        routing: &Routing,
        sql: &str,
        message: &str,
        hint: &Option<String>,
    ) -> Result<Option<String>, End> {
        let outer_ctes = plan::cte_like_names(sql);
        let limit = usize::try_from(self.ctx.state.limits().intermediate_result_bytes)
            .unwrap_or(usize::MAX);
        let mut used = 0usize;
        let mut ran_any = false;
        let mut out = String::with_capacity(sql.len());
        let mut copied = 0usize;
        for g in plan::query_groups(sql) {
            // Inside a subquery already run (or one without sharded
            // tables): done with it.
            if g.range.start < copied {
                continue;
            }
            let Some(text) = sql.get(g.range.clone()) else {
                continue;
            };
            if !plan::standalone(text, &outer_ctes, routing) {
                continue;
            }
            let (p, lits) = routing.planner.plan_simple(text, routing);
            if !matches!(
                *p,
                Plan::Keyed { .. } | Plan::Scatter { .. } | Plan::Subqueries { .. }
            ) {
                // No sharded table inside (or refused alone: the statement
                // stays refused): left as it is.
                if !matches!(*p, Plan::Error { .. }) {
                    out.push_str(sql.get(copied..g.range.end).unwrap_or_default());
                    copied = g.range.end;
                }
                continue;
            }
            // EXISTS needs one row at most.
            let limited = if g.exists {
                plan::limit_one(text)
            } else {
                None
            };
            let (run, p, lits) = match limited {
                Some(t) => {
                    let (p, lits) = routing.planner.plan_simple(&t, routing);
                    (t, p, lits)
                }
                None => (text.to_string(), p, lits),
            };
            let Some(rows) = self
                .subquery_rows(routing, &run, &p, &lits, limit.saturating_sub(used))
                .await?
            else {
                return Ok(None);
            };
            let Some(values) = self.values_text(rows).await? else {
                return Ok(None);
            };
            used = used.saturating_add(values.len());
            ran_any = true;
            out.push_str(sql.get(copied..g.range.start).unwrap_or_default());
            out.push_str(&values);
            copied = g.range.end;
        }
        if !ran_any {
            let mut e = PgError::unsupported(message.to_string()).with_detail(NO_RUNNABLE_SUBQUERY);
            e.hint = hint.clone();
            self.ctx.send_error(&e);
            return Ok(None);
        }
        out.push_str(sql.get(copied..).unwrap_or_default());
        Ok(Some(out))
    }

    /// Runs subquery `sql` (planned as `p`) with its response kept, at
    /// most `limit` bytes. None after sending an error.
    async fn subquery_rows(
        &mut self,
        routing: &Routing,
        sql: &str,
        p: &Plan,
        lits: &plan::Literals,
        limit: usize,
    ) -> Result<Option<SubqueryRows>, End> {
        self.ctx.out.begin_capture(limit);
        let ran = Box::pin(self.exec_simple(routing, sql, p, lits, None, None)).await;
        let captured = self.ctx.out.end_capture();
        let ok = ran?;
        let frames = match captured {
            Ok(f) => f,
            Err(n) => {
                let total = self.ctx.state.limits().intermediate_result_bytes;
                self.ctx.send_error(
                    &PgError::new(
                        codes::PROGRAM_LIMIT_EXCEEDED,
                        format!("the rows of the subqueries run before the statement exceed limits.intermediate_result_bytes ({total} bytes; this subquery: {n} bytes)"),
                    )
                    .with_detail(format!("subquery: {sql}"))
                    .with_hint("restrict the subquery (a sharding key condition, or join it with the outer query on the sharding key so it runs on each shard), or raise limits.intermediate_result_bytes"),
                );
                return Ok(None);
            }
        };
        let got = captured_rows(&frames);
        for m in &got.messages {
            let body = m.get(5..).unwrap_or_default();
            if m.first() != Some(&b'E')
                || error_code(body).as_deref() != Some(codes::UNDEFINED_COLUMN)
            {
                // Its error or notice, as it is.
                self.ctx.out.buf.extend_from_slice(m);
                continue;
            }
            let orig = error_fields(body)
                .ok()
                .and_then(|f| f.into_iter().find(|(c, _)| *c == b'M'))
                .map(|(_, m)| m.to_string())
                .unwrap_or_default();
            // Already counted and the block failed when it was written:
            // only its text changes.
            let mut e = PgError::unsupported(format!(
                "a subquery over sharded tables could not run before the statement on its own: {orig}"
            ))
            .with_detail(format!("subquery: {sql}"));
            e.hint = Some("a subquery that refers to the outer query runs with it only when joined with it on the sharding key (inner.key = outer.key)".into());
            crate::protocol::synth::error(&mut self.ctx.out.buf, &e);
        }
        let res = SubqueryRows {
            columns: got
                .columns
                .into_iter()
                .map(|c| (c.name, c.type_oid, c.typmod))
                .collect(),
            rows: got
                .rows
                .into_iter()
                .map(|r| {
                    r.into_iter()
                        .map(|v| {
                            v.map(|b| {
                                String::from_utf8(b).unwrap_or_else(|e| {
                                    String::from_utf8_lossy(e.as_bytes()).into_owned()
                                })
                            })
                        })
                        .collect()
                })
                .collect(),
        };
        Ok(ok.then_some(res))
    }

    /// The names `format_type` gives the (type OID, modifier) pairs, read
    /// from a shard unless built in. None after sending an error.
    pub(super) async fn type_names(
        &mut self,
        types: &[(u32, i32)],
    ) -> Result<Option<Vec<String>>, End> {
        let mut names: Vec<Option<String>> = types
            .iter()
            .map(|&(oid, m)| builtin_type_name(oid, m).map(str::to_string))
            .collect();
        let missing: Vec<usize> = (0..names.len()).filter(|&i| names[i].is_none()).collect();
        if !missing.is_empty() {
            let calls: Vec<String> = missing
                .iter()
                .map(|&i| {
                    let (oid, m) = types[i];
                    format!("pg_catalog.format_type({oid}, {m})")
                })
                .collect();
            let shard = match self.ctx.any_shard() {
                Ok(s) => s,
                Err(e) => {
                    self.ctx.send_error(&e);
                    return Ok(None);
                }
            };
            let q = format!("SELECT {}", calls.join(", "));
            let Some(found) = self.ctx.injected(&shard, &q).await? else {
                return Ok(None);
            };
            let row = found.into_iter().next().unwrap_or_default();
            for (k, &i) in missing.iter().enumerate() {
                names[i] = row.get(k).cloned().flatten();
            }
        }
        let mut out = Vec::with_capacity(names.len());
        for (&(oid, _), name) in types.iter().zip(names) {
            let Some(name) = name else {
                self.ctx.send_error(&PgError::new(
                    codes::INTERNAL_ERROR,
                    format!("no name for the type with oid {oid}"),
                ));
                return Ok(None);
            };
            out.push(name);
        }
        Ok(Some(out))
    }

    /// The VALUES query of `rows` ([`plan::values_query`]). None after
    /// sending an error.
    async fn values_text(&mut self, rows: SubqueryRows) -> Result<Option<String>, End> {
        let types: Vec<(u32, i32)> = rows.columns.iter().map(|&(_, o, m)| (o, m)).collect();
        let Some(names) = self.type_names(&types).await? else {
            return Ok(None);
        };
        let columns: Vec<(String, String)> = rows
            .columns
            .into_iter()
            .zip(names)
            .map(|((name, _, _), ty)| (name, ty))
            .collect();
        Ok(Some(plan::values_query(&columns, &rows.rows)))
    }
}
