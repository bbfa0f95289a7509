//! The scatter-gather executor for merged SELECTs ([`GatherPlan`]): sends
//! the rewritten statement to every shard of the keyspace with the extended
//! protocol (visible columns in the client's formats, hidden columns in
//! binary), then streams the merge to the client: a k-way merge of the
//! shards' sorted streams, or concatenation, with DISTINCT ON and
//! OFFSET/LIMIT; or a hash aggregation finished at the router.
//!
//! Memory: one row per shard for ordered and plain merges; one state per
//! group for GROUP BY, DISTINCT and aggregates. Once LIMIT rows were sent
//! the remaining rows (at most LIMIT + OFFSET per shard) are drained.
//!
//! A shard error is forwarded with the shard named in DETAIL; the other
//! shards are drained so their connections stay usable.

mod final_step;
mod merge;
mod params;
mod run;
mod shard_io;
mod stream;

pub use final_step::explain_final_sql;
pub use params::{render_pieces, simple_shard_sql};

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::frontend as fe;

use crate::plan::{statement_id, GatherPlan, Literals};
use crate::protocol::backend::row_description;
use crate::protocol::error::codes;
use crate::protocol::frontend::Bind;
use crate::protocol::{synth, PgError};

use self::params::{having_params, prepared_shard_sql, shard_formats, shard_sql, window_bounds};
use self::run::{Describe, Gathered, Request};
use self::shard_io::Capture;
use crate::exec::context::{End, ExecCtx};
use crate::exec::exchange::{self};
use crate::exec::route::Values;
use crate::exec::statement::{BackendName, ClientStmt};

/// How an extended-protocol gather ends its exchange with the shards and
/// the client ([`ExecCtx::gather_extended`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct GatherEnds {
    /// Send the portal's RowDescription before the rows.
    pub describe: bool,
    /// End the shards' messages with Sync.
    pub sync: bool,
}

impl ExecCtx {
    /// Runs a gather for a simple-protocol statement. Returns false if it
    /// failed (the error was sent).
    pub async fn gather_simple(
        &mut self,
        shards: &[String],
        plan: &Arc<GatherPlan>,
        sql: &str,
        lits: &Literals,
    ) -> Result<bool, End> {
        self.gather_simple_as(shards, plan, sql, lits, false).await
    }

    /// [`ExecCtx::gather_simple`] with the rows' values in binary format
    /// when `binary` (a merged binary `COPY (query) TO STDOUT`).
    ///
    /// The client's literals become parameters of a statement the shards
    /// keep prepared when they can (`params::prepared_shard_sql`): numbers
    /// always; strings, whose types the shards infer, outside a
    /// transaction block (a failure there is undone: below) or once their
    /// parameter types prepared without error (`GatherPlan::verdict`). If
    /// the prepared form fails on every shard before running (at Parse or
    /// Bind) with an error of its text or values (SQLSTATE class 42, 22 or
    /// 0A), the statement runs again with the literals written into the
    /// text, so the client gets PostgreSQL's answer to that; if that one
    /// succeeds, the shape is not prepared again.
    pub async fn gather_simple_as(
        &mut self,
        shards: &[String],
        plan: &Arc<GatherPlan>,
        sql: &str,
        lits: &Literals,
        binary: bool,
    ) -> Result<bool, End> {
        let formats = if binary { vec![1] } else { Vec::new() };
        let undoable = self.block.is_none();
        let mut inline = !self.state.prepare_simple_queries() || plan.verdict.refused();
        let mut retried = false;
        loop {
            let prepared = simple_request(plan, sql, lits, &formats, inline, undoable);
            let SimpleRun {
                offset,
                limit,
                req,
                having,
                types,
            } = match prepared {
                Ok(x) => x,
                Err(e) => {
                    self.send_error(&e);
                    return Ok(false);
                }
            };
            match self
                .run_gather(shards, plan, req, offset, limit, having)
                .await?
            {
                Gathered::Ran(ok) => {
                    if ok && retried {
                        // The literals ran where their parameters failed.
                        plan.verdict.refuse();
                    } else if let (true, Some((strings, hash))) = (ok, types) {
                        plan.verdict.verify(strings, hash);
                    }
                    return Ok(ok);
                }
                Gathered::BeforeRun(_) if !inline => {
                    inline = true;
                    retried = true;
                }
                Gathered::BeforeRun(e) => {
                    self.forward_error_frame(&e);
                    return Ok(false);
                }
            }
        }
    }

    /// Runs a gather at an extended-protocol Execute of a portal bound to
    /// `stmt` by the client's Bind `bind` (a whole frame). Returns false if
    /// it failed (the error was sent).
    ///
    /// `ends`: what the Execute answers besides its rows. `describe`: the
    /// portal's RowDescription first (a Describe of the portal right
    /// before it, answered here instead of by a round trip of its own).
    /// `sync`: the shards' messages end with Sync (the Execute is the
    /// batch's last before Sync, outside a transaction block); the shards
    /// synced are then in [`ExecCtx::gather_synced`].
    pub async fn gather_extended(
        &mut self,
        shards: &[String],
        plan: &Arc<GatherPlan>,
        stmt: &Arc<ClientStmt>,
        bind: &Bytes,
        max_rows: i32,
        ends: GatherEnds,
    ) -> Result<bool, End> {
        let prepared = (|| {
            let b = Bind::decode(bind.get(5..).unwrap_or_default())
                .map_err(|e| PgError::new(codes::PROTOCOL_VIOLATION, e.to_string()))?;
            let args = Values::Bind(&b);
            let (offset, limit) = window_bounds(plan, &args)?;
            let having = having_params(plan, &args)?;
            // The shards' statement may use only some of the parameters.
            let (param_formats, params) = match &plan.shard_params {
                Some(idx) => final_step::param_subset(&b, idx)?,
                None => (
                    b.param_formats.to_vec(),
                    b.params.iter().map(|p| p.map(|x| x.to_vec())).collect(),
                ),
            };
            let final_ctx = match &plan.finish {
                Some(f) => Some(final_step::extended_ctx(f, stmt, &b)?),
                None => None,
            };
            let req = Request {
                statement: stmt.backend_name.clone(),
                retry_before_run: false,
                prepared: Some((stmt.id, stmt.parse_frame.clone())),
                parse_always: None,
                param_formats,
                params,
                client_formats: b.result_formats.to_vec(),
                sync: ends.sync,
                describe: if ends.describe {
                    Describe::Portal
                } else {
                    Describe::No
                },
                max_rows: u64::try_from(max_rows).ok().filter(|&m| m > 0),
                final_ctx,
            };
            Ok::<_, PgError>((offset, limit, having, req))
        })();
        let (offset, limit, having, req) = match prepared {
            Ok(x) => x,
            Err(e) => {
                // The Describe left to this Execute is answered first, as
                // PostgreSQL answers it before Execute fails.
                let formats = Bind::decode(bind.get(5..).unwrap_or_default())
                    .map(|b| b.result_formats.to_vec());
                if let (true, Ok(formats), Some(shard)) = (ends.describe, formats, shards.first()) {
                    let shard = shard.clone();
                    if !self
                        .describe_as_portal(&shard, plan.hidden, stmt, Some(formats))
                        .await?
                    {
                        return Ok(false);
                    }
                }
                self.send_error(&e);
                return Ok(false);
            }
        };
        match self
            .run_gather(shards, plan, req, offset, limit, having)
            .await?
        {
            Gathered::Ran(ok) => Ok(ok),
            Gathered::BeforeRun(e) => {
                self.forward_error_frame(&e);
                Ok(false)
            }
        }
    }

    /// Describe of statement `stmt` (`portal_formats` None) or of a portal
    /// the router binds itself (the Bind's result format codes), answered
    /// from the statement's description on `shard` without its last
    /// `hidden` columns (a gather's hidden columns; 0 for a split INSERT).
    pub async fn describe_as_portal(
        &mut self,
        shard: &str,
        hidden: usize,
        stmt: &Arc<ClientStmt>,
        portal_formats: Option<Vec<i16>>,
    ) -> Result<bool, End> {
        let idx = match self.acquire(shard).await {
            Ok(i) => i,
            Err(e) => {
                self.send_error(&e);
                return Ok(false);
            }
        };
        let mut slots = std::collections::VecDeque::new();
        self.prelude(idx, &mut slots);
        let conn = &mut self.held[idx].conn;
        // A statement finished by a final step is described as the client
        // wrote it (the shards' statement has none of its columns).
        let as_written = stmt.gather().is_some_and(|g| g.finish.is_some());
        let hidden = if as_written { 0 } else { hidden };
        let sent_parse = !as_written && !conn.prepared.contains(&stmt.id);
        if as_written {
            let _ = fe::parse(
                "",
                &stmt.query,
                stmt.param_types.iter().copied(),
                &mut conn.out,
            );
            let _ = fe::describe(b'S', "", &mut conn.out);
        } else {
            if sent_parse {
                conn.out.extend_from_slice(&stmt.parse_frame);
            }
            let _ = fe::describe(b'S', &stmt.backend_name, &mut conn.out);
        }
        fe::flush(&mut conn.out);
        let mut cap = Capture::default();
        let r = match conn.flush().await {
            Ok(()) => exchange::run(conn, &mut slots, &mut self.out, &mut cap).await,
            Err(e) => Err(exchange::ExchangeError::Backend(e)),
        };
        if !self.after_exchange(idx, r)? {
            return Ok(false);
        }
        if let Some(e) = cap.0 {
            self.forward_error(&e, shard);
            return Ok(false);
        }
        let mut params_desc = None;
        loop {
            let f = match self.held[idx].conn.recv().await {
                Ok(f) => f,
                Err(e) => return self.lost(idx, e),
            };
            match f.tag {
                b'1' if sent_parse => {
                    self.held[idx].conn.prepared.insert(stmt.id);
                }
                b't' => params_desc = Some(f),
                b'T' => {
                    if portal_formats.is_none() {
                        if let Some(p) = &params_desc {
                            self.out.buf.extend_from_slice(&p.data);
                        }
                    }
                    let cols = row_description(f.body()).map(|c| c.len()).unwrap_or(0);
                    let visible = cols.saturating_sub(hidden);
                    let formats = match &portal_formats {
                        Some(c) => match shard_formats(c, visible, 0) {
                            Ok(v) => v,
                            Err(e) => {
                                self.send_error(&e);
                                return Ok(false);
                            }
                        },
                        None => vec![0; visible],
                    };
                    let fmt = |i: usize| formats.get(i).copied().unwrap_or(0);
                    if let Err(e) =
                        synth::row_description_prefix(&mut self.out.buf, f.body(), visible, &fmt)
                    {
                        self.send_error(&PgError::new(codes::INTERNAL_ERROR, e.to_string()));
                        return Ok(false);
                    }
                    return Ok(true);
                }
                b'n' => {
                    if portal_formats.is_none() {
                        if let Some(p) = &params_desc {
                            self.out.buf.extend_from_slice(&p.data);
                        }
                    }
                    self.out.buf.extend_from_slice(&f.data);
                    return Ok(true);
                }
                b'E' => {
                    if !as_written {
                        self.held[idx].conn.prepared.remove(&stmt.id);
                    }
                    self.forward_error(&f.data, shard);
                    return Ok(false);
                }
                _ => {}
            }
        }
    }
}

/// One simple-protocol gather execution, ready to run.
struct SimpleRun {
    offset: u64,
    limit: Option<u64>,
    req: Request,
    /// The values HAVING reads.
    having: Vec<(usize, Option<String>)>,
    /// When the literals are parameters: whether one is a string, and the
    /// hash of their types (`plan::PrepareVerdict`).
    types: Option<(bool, u64)>,
}

/// The request of one simple-protocol gather execution. `inline`: the
/// literals are written into the text. `undoable`: outside a transaction
/// block (a failure before running may be retried as written).
///
/// Errors: the client's LIMIT/OFFSET or HAVING values are invalid, or a
/// final step cannot be set up.
fn simple_request(
    plan: &GatherPlan,
    sql: &str,
    lits: &Literals,
    formats: &[i16],
    inline: bool,
    undoable: bool,
) -> Result<SimpleRun, PgError> {
    let args = Values::Simple { sql, lits };
    let (offset, limit) = window_bounds(plan, &args)?;
    // Strings only where a failure can be retried as written (the
    // statement's column count known without a Describe first), or once
    // their types prepared.
    let retry = undoable && plan.visible.is_some();
    let params = (!inline)
        .then(|| prepared_shard_sql(plan, sql, lits, offset, limit))
        .flatten()
        .filter(|p| retry || plan.verdict.trusted(p.strings, p.types_hash));
    let (statement, prepared, parse_always, params, types) = match params {
        Some(p) => {
            let id = statement_id(&p.text, &p.types);
            let name = BackendName::new(id).as_str().to_string();
            let mut parse = BytesMut::with_capacity(p.text.len() + 64);
            let _ = fe::parse(&name, &p.text, p.types.iter().copied(), &mut parse);
            let types = Some((p.strings, p.types_hash));
            (name, Some((id, parse.freeze())), None, p.values, types)
        }
        None => {
            let text = shard_sql(plan, sql, lits, offset, limit)?;
            let mut parse = BytesMut::with_capacity(text.len() + 16);
            let _ = fe::parse("", &text, std::iter::empty(), &mut parse);
            (String::new(), None, Some(parse.freeze()), Vec::new(), None)
        }
    };
    let having = having_params(plan, &args)?;
    let final_ctx = match &plan.finish {
        Some(f) => Some(final_step::simple_ctx(f, sql, lits, formats)?),
        None => None,
    };
    let req = Request {
        statement,
        retry_before_run: retry && prepared.is_some(),
        prepared,
        parse_always,
        param_formats: Vec::new(),
        params,
        client_formats: formats.to_vec(),
        sync: true,
        describe: Describe::WithRows,
        max_rows: None,
        final_ctx,
    };
    Ok(SimpleRun {
        offset,
        limit,
        req,
        having,
        types,
    })
}
