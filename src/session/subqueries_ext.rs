//! Subqueries that run first ([`Plan::Subqueries`]) in the extended query
//! protocol. Before a batch is routed, each Bind of such a statement is
//! resolved: the parameter values are read back as text by PostgreSQL
//! (`SELECT $1::text, ...` with the client's own parameter section, so
//! binary values decode exactly) and written into the statement as typed
//! literals, the subqueries run as in the simple protocol
//! (`session/subqueries.rs`), and the Bind is pointed at a statement of
//! the resulting text that declares every parameter's type (the client's
//! values are bound and go unused). Describe, Execute and result formats
//! then work as for any statement. Errors are reported at the Bind's place
//! in the batch.
//!
//! The subqueries may send simple Query messages on connections an earlier
//! Flush-terminated batch left inside PostgreSQL's implicit transaction of
//! the extended protocol (e.g. asyncpg's Parse/Describe/Flush before the
//! Bind): such a Query runs in that transaction and commits it. Client
//! statements are named on the shards, so no unnamed statement is lost.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::exec::inject::Params;
use crate::exec::End;
use crate::plan::{self, Plan};
use crate::protocol::backend::frames as frames_of;
use crate::protocol::frontend::{Bind, Parse};
use crate::protocol::Frame;
use crate::state::Routing;

use super::Session;

/// Prefix of the statement names given to rewritten Binds (a name no
/// driver uses: it starts with a control character).
const SYNTHETIC: &str = "\u{1}pgr_subqueries_";

/// Rounds of subqueries run for one Bind before giving up.
const MAX_ROUNDS: usize = 16;

/// What [`Session::bind_subqueries`] did to a batch.
#[derive(Default)]
pub(super) struct SubqueryBinds {
    /// Some Bind was resolved (messages may await the slow path's Sync).
    pub ran: bool,
    /// Frames (by index) that failed, with their ErrorResponse frame.
    pub failed: Vec<(usize, bytes::Bytes)>,
}

/// One parameter's value written into the text.
struct Literal {
    /// `E'v'::type` or `NULL::type`.
    typed: String,
    /// The value when it is an integer (or NULL): written bare after LIMIT
    /// and OFFSET, where the router's merge wants a constant.
    bare: Option<String>,
}

/// `sql` with each `$n` replaced by `(literals[n - 1].typed)`, or by the
/// bare integer right after LIMIT or OFFSET.
fn with_literals(sql: &str, literals: &[Literal]) -> String {
    let mut out = String::with_capacity(sql.len() + literals.len() * 16);
    let mut at = 0;
    for (t, after_limit) in plan::param_spans(sql) {
        let n: Option<usize> = sql
            .get(t.start + 1..t.end)
            .and_then(|d| d.parse().ok())
            .and_then(|n: usize| n.checked_sub(1));
        if let Some(lit) = n.and_then(|n| literals.get(n)) {
            out.push_str(sql.get(at..t.start).unwrap_or_default());
            match (&lit.bare, after_limit) {
                (Some(b), true) => out.push_str(b),
                _ => {
                    out.push('(');
                    out.push_str(&lit.typed);
                    out.push(')');
                }
            }
            at = t.end;
        }
    }
    out.push_str(sql.get(at..).unwrap_or_default());
    out
}

impl Session {
    /// Resolves the Binds of [`Plan::Subqueries`] statements in `frames`
    /// (see the module docs), rewriting them in place.
    pub(super) async fn bind_subqueries(
        &mut self,
        routing: &Routing,
        frames: &mut [Frame],
    ) -> Result<SubqueryBinds, End> {
        let mut done = SubqueryBinds::default();
        // Cheap on the common path: a Bind's statement name, a look at its
        // plan; texts without a parenthesis cannot have a subquery to run.
        let may_have = |q: &str| q.contains('(');
        let mut parse_at: Vec<usize> = Vec::new();
        for i in 0..frames.len() {
            let f = &frames[i];
            match f.tag {
                b'P' => {
                    parse_at.push(i);
                    continue;
                }
                b'B' => {}
                _ => continue,
            }
            let Ok(name) = Bind::statement_name(f.body()) else {
                continue;
            };
            // A Parse of this batch, else a registered statement.
            let parsed = parse_at.iter().rev().find_map(|&k| {
                let body = frames[k].body();
                let (n, q) = Parse::name_and_query(body).ok()?;
                (n == name).then_some((body, q))
            });
            let stmt = match parsed {
                Some((body, q)) => (may_have(q)
                    && matches!(
                        *routing.planner.plan_extended(q, routing),
                        Plan::Subqueries { .. }
                    ))
                .then(|| Parse::decode(body).ok())
                .flatten()
                .map(|p| (p.query.to_string(), p.param_types)),
                None => self
                    .statements
                    .get(name)
                    .filter(|s| matches!(*s.plan, Plan::Subqueries { .. }))
                    .map(|s| (s.query.clone(), s.param_types.clone())),
            };
            let Some((query, types)) = stmt else {
                continue;
            };
            let Ok(b) = Bind::decode(f.body()) else {
                continue;
            };
            done.ran = true;
            let section = f
                .body()
                .get(b.after_names..b.params_end)
                .unwrap_or_default()
                .to_vec();
            let n = b.params.len();
            self.ctx.out.begin_capture(usize::MAX);
            let r = self
                .resolve_bind(routing, &query, &types, n, &section)
                .await;
            let captured = self.ctx.out.end_capture();
            let resolved = r?;
            let captured = captured.unwrap_or_default();
            let Some((text, all_types)) = resolved else {
                let err = match frames_of(&captured).find(|f| f.first() == Some(&b'E')) {
                    Some(e) => bytes::Bytes::copy_from_slice(e),
                    None => {
                        let mut b = BytesMut::new();
                        crate::protocol::synth::error(
                            &mut b,
                            &crate::protocol::PgError::new(
                                crate::protocol::error::codes::INTERNAL_ERROR,
                                "the subqueries of the statement failed without an error",
                            ),
                        );
                        b.freeze()
                    }
                };
                done.failed.push((i, err));
                continue;
            };
            // Notices of the subqueries go to the client now.
            for f in frames_of(&captured).filter(|f| f.first() == Some(&b'N')) {
                self.ctx.out.buf.extend_from_slice(f);
            }
            let name = format!("{SYNTHETIC}{i}");
            let stmt = Arc::new(self.new_statement_once(routing, &text, &all_types));
            self.keep_statement(name.clone(), stmt);
            // The Bind, naming that statement.
            let body = f.body();
            let rest = body.get(b.after_names..).unwrap_or_default();
            let mut nb = BytesMut::with_capacity(body.len() + name.len() + 5);
            nb.put_u8(b'B');
            nb.put_i32((4 + b.portal.len() + 1 + name.len() + 1 + rest.len()) as i32);
            nb.extend_from_slice(b.portal.as_bytes());
            nb.put_u8(0);
            nb.extend_from_slice(name.as_bytes());
            nb.put_u8(0);
            nb.extend_from_slice(rest);
            drop(b);
            frames[i] = Frame {
                tag: b'B',
                data: nb.freeze(),
            };
        }
        Ok(done)
    }

    /// Forgets the statements [`Session::bind_subqueries`] made.
    pub(super) fn forget_subquery_statements(&mut self) {
        self.statements
            .retain(|name, _| !name.starts_with(SYNTHETIC));
    }

    /// The text of `query` (`n` parameters of declared types `types`, 0 =
    /// unspecified; values in Bind `section`) with its parameters written
    /// in and its subqueries run, and the type of every parameter. None
    /// after sending an error.
    async fn resolve_bind(
        &mut self,
        routing: &Routing,
        query: &str,
        types: &[u32],
        n: usize,
        section: &[u8],
    ) -> Result<Option<(String, Vec<u32>)>, End> {
        let was = std::mem::replace(&mut self.ctx.in_extended, true);
        let r = self.bind_text(routing, query, types, n, section).await;
        self.ctx.in_extended = was;
        let Some((mut text, all_types)) = r? else {
            return Ok(None);
        };
        for _ in 0..MAX_ROUNDS {
            let (p, _) = routing.planner.plan_simple(&text, routing);
            let Plan::Subqueries { message, hint, .. } = &*p else {
                return Ok(Some((text, all_types)));
            };
            let Some(next) = self.run_subqueries(routing, &text, message, hint).await? else {
                return Ok(None);
            };
            text = next;
        }
        self.ctx.send_error(&crate::protocol::PgError::new(
            crate::protocol::error::codes::PROGRAM_LIMIT_EXCEEDED,
            format!("subqueries nested more than {MAX_ROUNDS} levels deep"),
        ));
        Ok(None)
    }

    /// `query` with the Bind's values (see [`Session::resolve_bind`])
    /// written in as typed literals, and the type of every parameter.
    /// Inside an extended-protocol batch. None after sending an error.
    pub(super) async fn bind_text(
        &mut self,
        routing: &Routing,
        query: &str,
        types: &[u32],
        n: usize,
        section: &[u8],
    ) -> Result<Option<(String, Vec<u32>)>, End> {
        let shard = match self.ctx.any_shard() {
            Ok(s) => s,
            Err(e) => {
                self.ctx.send_error(&e);
                return Ok(None);
            }
        };
        let Some((all_types, values)) = self
            .read_params(routing, &shard, query, types, n, section)
            .await?
        else {
            return Ok(None);
        };
        let mods: Vec<(u32, i32)> = all_types.iter().map(|&t| (t, -1)).collect();
        let Some(names) = self.type_names(&mods).await? else {
            return Ok(None);
        };
        let literals: Vec<Literal> = values
            .iter()
            .zip(&names)
            .map(|(v, ty)| match v {
                Some(v) => Literal {
                    typed: format!("{}::{ty}", plan::escape_literal(v)),
                    bare: v.parse::<i64>().ok().map(|n| n.to_string()),
                },
                None => Literal {
                    typed: format!("NULL::{ty}"),
                    bare: Some("NULL".into()),
                },
            })
            .collect();
        Ok(Some((with_literals(query, &literals), all_types)))
    }

    /// Every parameter's type (the shard's inference where `types` leaves
    /// it open) and its value as text (None = NULL), read by PostgreSQL
    /// from the client's parameter section. None after sending an error.
    async fn read_params(
        &mut self,
        routing: &Routing,
        shard: &str,
        query: &str,
        types: &[u32],
        n: usize,
        section: &[u8],
    ) -> Result<Option<(Vec<u32>, Vec<Option<String>>)>, End> {
        if n == 0 {
            return Ok(Some((Vec::new(), Vec::new())));
        }
        let all_types = if types.len() >= n && types[..n].iter().all(|&t| t != 0) {
            types[..n].to_vec()
        } else {
            let tmp = self.new_statement_once(routing, query, types);
            match self.ctx.statement_param_types(shard, &tmp).await? {
                Some(t) => t,
                None => return Ok(None),
            }
        };
        let casts: Vec<String> = (1..=n).map(|i| format!("${i}::text")).collect();
        let q = format!("SELECT {}", casts.join(", "));
        let params = Params {
            types: &all_types,
            section,
        };
        let Some(rows) = self.ctx.injected_with(shard, &q, params).await? else {
            return Ok(None);
        };
        let values = rows.into_iter().next().unwrap_or_default();
        Ok(Some((all_types, values)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_literals() {
        let lits = vec![
            Literal {
                typed: "E'5'::integer".into(),
                bare: Some("5".into()),
            },
            Literal {
                typed: "NULL::text".into(),
                bare: Some("NULL".into()),
            },
        ];
        assert_eq!(
            with_literals(
                "SELECT '$1', $1 FROM t WHERE a = $2 AND b = $3 LIMIT $1 OFFSET $1 -- $1",
                &lits
            ),
            "SELECT '$1', (E'5'::integer) FROM t WHERE a = (NULL::text) AND b = $3 LIMIT 5 OFFSET 5 -- $1"
        );
    }
}
