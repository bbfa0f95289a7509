//! Simple query protocol ('Q'): split into statements, plan each through the
//! fingerprint cache, route, and run (PostgreSQL docs §55.2.2).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::frontend as fe;

use crate::plan::{self, AutoStmt, Literals, Plan};
use crate::protocol::error::codes;
use crate::protocol::frontend::query_text;
use crate::protocol::{synth, Frame, PgError};
use crate::state::Routing;

use crate::exec::auto_prepared::{AutoRun, ClientText};
use crate::exec::concat::MergeMode;
use crate::exec::exchange::{Expect, Slot, QUERY_SLOTS};
use crate::exec::generated::SequenceAnswer;
use crate::exec::owned::{keyed_shard, InsertTargets};
use crate::exec::route::Values;
use crate::exec::txn_control::ends_failed_block;
use crate::exec::{Block, End, ExecCtx};

use super::Session;

impl Session {
    /// Handles one Query message (without the final ReadyForQuery).
    pub(super) async fn on_query(&mut self, frame: Frame) -> Result<(), End> {
        let sql = match query_text(frame.body()) {
            Ok(s) => s,
            Err(e) => {
                self.ctx
                    .send_error(&PgError::new(codes::PROTOCOL_VIOLATION, e.to_string()));
                return Ok(());
            }
        };
        // The common one-statement text without the lexer or a Vec.
        let several;
        let one = match plan::single_statement(sql) {
            Some(one) => one,
            None => {
                several = plan::split_statements(sql);
                match several.as_slice() {
                    [] => {
                        synth::empty_query(&mut self.ctx.out.buf);
                        return Ok(());
                    }
                    [one] => one,
                    stmts => return self.on_statements(stmts).await,
                }
            }
        };
        let mut routing = self.ctx.state.routing();
        let (mut p, mut lits, mut auto) = routing.planner.plan_simple_shaped(one, &*routing);
        if p.writes() {
            match self.ctx.admit_write().await {
                Ok(false) => {}
                Ok(true) => {
                    // Held across a routing change: plan again.
                    routing = self.ctx.state.routing();
                    (p, lits, auto) = routing.planner.plan_simple_shaped(one, &*routing);
                }
                Err(e) => {
                    self.ctx.send_error(&e);
                    return Ok(());
                }
            }
        }
        let raw = if one.len() + 2 >= sql.trim_ascii().len() {
            Some(&frame)
        } else {
            None
        };
        // Error positions count from the start of the Query's text.
        let before = (one.as_ptr() as usize)
            .checked_sub(sql.as_ptr() as usize)
            .and_then(|n| sql.get(..n))
            .unwrap_or("");
        let auto = auto
            .as_deref()
            .filter(|_| self.ctx.state.prepare_simple_queries())
            .map(|a| (a, before));
        self.exec_simple(&routing, one, &p, &lits, raw, auto)
            .await?;
        Ok(())
    }

    /// Handles a Query message of several statements: planned together,
    /// run in order inside one implicit transaction unless they control
    /// transactions themselves.
    async fn on_statements(&mut self, stmts: &[&str]) -> Result<(), End> {
        let mut routing = self.ctx.state.routing();
        let mut planned: Vec<_> = stmts
            .iter()
            .map(|s| (*s, routing.planner.plan_simple(s, &*routing)))
            .collect();
        if planned.iter().any(|(_, (p, _))| p.writes()) {
            match self.ctx.admit_write().await {
                Ok(false) => {}
                Ok(true) => {
                    routing = self.ctx.state.routing();
                    planned = stmts
                        .iter()
                        .map(|s| (*s, routing.planner.plan_simple(s, &*routing)))
                        .collect();
                }
                Err(e) => {
                    self.ctx.send_error(&e);
                    return Ok(());
                }
            }
        }
        let has_txn = planned
            .iter()
            .any(|(_, (p, _))| matches!(**p, Plan::Transaction(_)));
        let implicit = self.ctx.block.is_none() && !has_txn;
        if implicit {
            self.ctx.block = Some(Block::new("BEGIN", true));
        }
        let mut i = 0;
        while let Some((s, (p, lits))) = planned.get(i) {
            if !self.exec_simple(&routing, s, p, lits, None, None).await? {
                break;
            }
            // DDL changed columns: later statements are planned with the
            // table's new columns.
            if plan::changes_columns(s) {
                for (s, plan) in planned.iter_mut().skip(i + 1) {
                    *plan = routing.planner.plan_simple(s, &*routing);
                }
            }
            i += 1;
        }
        if implicit {
            let commit = !self.ctx.block.as_ref().is_some_and(|b| b.failed);
            self.ctx.end_block(commit).await?;
        }
        Ok(())
    }

    /// Runs one planned statement; returns false if it failed (error sent).
    /// `auto`: the statement's text as a prepared statement for its shard,
    /// and the Query's text before the statement.
    pub(super) async fn exec_simple(
        &mut self,
        routing: &Routing,
        sql: &str,
        p: &Plan,
        lits: &Literals,
        raw: Option<&Frame>,
        auto: Option<(&AutoStmt, &str)>,
    ) -> Result<bool, End> {
        if self.ctx.block.as_ref().is_some_and(|b| b.failed) && !ends_failed_block(p, sql) {
            self.ctx.send_error(&PgError::new(
                codes::IN_FAILED_SQL_TRANSACTION,
                "current transaction is aborted, commands ignored until end of transaction block",
            ));
            return Ok(false);
        }
        let query_msg = || -> Bytes {
            match raw {
                Some(f) => f.data.clone(),
                None => {
                    let mut b = BytesMut::new();
                    let _ = fe::query(sql, &mut b);
                    b.freeze()
                }
            }
        };
        let q = || VecDeque::from([Slot::Forward(Expect::Query)]);
        self.ctx.cur_write = p.writes();
        match p {
            Plan::Error {
                sqlstate,
                message,
                hint,
            } => {
                let mut e = PgError::new(sqlstate, message.clone());
                e.hint = hint.clone();
                self.ctx.send_error(&e);
                Ok(false)
            }
            Plan::Transaction(t) => self.ctx.txn_command(t, sql).await,
            Plan::Set { local, reset_all } => self.ctx.set_command(sql, *local, *reset_all).await,
            Plan::AnyShard => match self.ctx.any_shard() {
                Ok(s) => self.run_one(&s, auto, sql, lits, query_msg).await,
                Err(e) => {
                    self.ctx.send_error(&e);
                    Ok(false)
                }
            },
            Plan::CopyQuery(c) => self.ctx.copy_query(routing, sql, c).await,
            Plan::InsertSelect(p) => self.ctx.insert_select(routing, sql, lits, p).await,
            Plan::SequenceFn(call) => match self.ctx.sequence_fn(routing, call).await {
                SequenceAnswer::Value(v) => {
                    self.ctx.write_sequence_value(call, v, 0, true);
                    Ok(true)
                }
                SequenceAnswer::Failed => Ok(false),
                SequenceAnswer::Forward => match self.ctx.any_shard() {
                    Ok(s) => self.ctx.exchange_one(&s, &query_msg(), QUERY_SLOTS).await,
                    Err(e) => {
                        self.ctx.send_error(&e);
                        Ok(false)
                    }
                },
            },
            Plan::AllShards | Plan::Broadcast { .. } => {
                let msg = query_msg();
                let parts: Vec<_> = routing
                    .catalog
                    .shard_names()
                    .into_iter()
                    .map(|s| (s.to_string(), msg.clone(), q()))
                    .collect();
                // A reference-table write commits on every copy or none.
                // Utility statements (DDL, VACUUM, CREATE INDEX
                // CONCURRENTLY) run outside a transaction block.
                let n = if matches!(p, Plan::Broadcast { .. }) {
                    parts.len()
                } else {
                    1
                };
                if let Some(created) = ExecCtx::rule_candidate(routing, sql) {
                    if !self.ctx.declare_by_rule(routing, &created).await {
                        return Ok(false);
                    }
                }
                let Some(implicit) = self.ctx.open_write_block(n) else {
                    return Ok(false);
                };
                let ok = self.ctx.exchange_many(parts, MergeMode::FirstOnly).await?;
                self.ctx.note_ddl(routing, sql);
                self.ctx.close_write_block(implicit, ok).await
            }
            Plan::Keyed { keys, .. } => {
                let target =
                    match keyed_shard(&routing.catalog, keys, &Values::Simple { sql, lits }) {
                        Ok(t) => t,
                        Err(e) => {
                            self.ctx.send_error(&e);
                            return Ok(false);
                        }
                    };
                let any;
                let shard = match target {
                    Some(s) => s,
                    None => match self.ctx.any_shard() {
                        Ok(s) => {
                            any = s;
                            any.as_str()
                        }
                        Err(e) => {
                            self.ctx.send_error(&e);
                            return Ok(false);
                        }
                    },
                };
                self.run_one(shard, auto, sql, lits, query_msg).await
            }
            Plan::Insert { table, rows } => {
                let (parts, order) =
                    match self
                        .ctx
                        .insert_parts(&routing.catalog, table, rows, sql, lits)
                    {
                        Some(InsertTargets::One(shard)) => {
                            return self.run_one(shard, auto, sql, lits, query_msg).await
                        }
                        Some(InsertTargets::Split(parts, order)) => (parts, order),
                        None => return Ok(false),
                    };
                let parts: Vec<_> = parts.into_iter().map(|(s, m)| (s, m, q())).collect();
                let Some(implicit) = self.ctx.open_write_block(parts.len()) else {
                    return Ok(false);
                };
                let ok = self
                    .ctx
                    .exchange_many(parts, MergeMode::Interleave(order))
                    .await?;
                self.ctx.close_write_block(implicit, ok).await
            }
            Plan::Owned { inner, write } => {
                self.ctx
                    .owned_simple(routing, sql, lits, inner, write, query_msg())
                    .await
            }
            Plan::Scatter {
                table,
                prune,
                lookup,
                merge,
                ..
            } => {
                let Some(shards) = self
                    .ctx
                    .scatter_targets(
                        &routing.catalog,
                        table,
                        prune.as_ref(),
                        lookup.as_deref(),
                        &Values::Simple { sql, lits },
                    )
                    .await?
                else {
                    return Ok(false);
                };
                match merge {
                    plan::Merge::Concat => {
                        let msg = query_msg();
                        let parts: Vec<_> = shards
                            .iter()
                            .map(|s| (s.clone(), msg.clone(), q()))
                            .collect();
                        let Some(implicit) =
                            self.ctx
                                .open_write_block(if p.writes() { parts.len() } else { 1 })
                        else {
                            return Ok(false);
                        };
                        let ok = self.ctx.exchange_many(parts, MergeMode::Concat).await?;
                        self.ctx.close_write_block(implicit, ok).await
                    }
                    plan::Merge::Gather(g) => self.ctx.gather_simple(&shards, g, sql, lits).await,
                    plan::Merge::NeedsText => {
                        self.ctx.send_error(&PgError::new(
                            codes::INTERNAL_ERROR,
                            "statement was planned from its normalized text only",
                        ));
                        Ok(false)
                    }
                }
            }
            Plan::Copy(c) => {
                let n = if c.from_stdin {
                    routing.catalog.shards.len()
                } else {
                    1
                };
                let Some(implicit) = self.ctx.open_write_block(n) else {
                    return Ok(false);
                };
                let ok = self.ctx.copy(&mut self.reader, routing, sql, c).await?;
                self.ctx.close_write_block(implicit, ok).await
            }
            Plan::NeedSchema { table } => {
                if !self.ctx.load_schema(routing, table).await? {
                    return Ok(false);
                }
                let (p, lits) = routing.planner.plan_simple(sql, routing);
                // A join may need the columns of the next table.
                if matches!(&*p, Plan::NeedSchema { table: t } if t == table) {
                    return self.internal("the table's columns were read but not used");
                }
                Box::pin(self.exec_simple(routing, sql, &p, &lits, raw, None)).await
            }
            Plan::GenerateKey(g) => {
                let Some(text) = self.ctx.generate_keys(sql, g).await else {
                    return Ok(false);
                };
                let (p, lits) = routing.planner.plan_simple(&text, routing);
                if matches!(*p, Plan::NeedSchema { .. } | Plan::GenerateKey(_)) {
                    return self.internal("an INSERT given generated keys still lacks them");
                }
                Box::pin(self.exec_simple(routing, &text, &p, &lits, None, None)).await
            }
            Plan::Subqueries { message, hint, .. } => {
                let Some(text) = self.run_subqueries(routing, sql, message, hint).await? else {
                    return Ok(false);
                };
                let (p, lits) = routing.planner.plan_simple(&text, routing);
                Box::pin(self.exec_simple(routing, &text, &p, &lits, None, None)).await
            }
            Plan::RouterExplain(inner) => {
                match crate::exec::explain::explain_lines(routing, inner, sql, lits) {
                    Ok(lines) => {
                        synth::text_row_description(&mut self.ctx.out.buf, &["QUERY PLAN"]);
                        for l in &lines {
                            synth::data_row(&mut self.ctx.out.buf, &[Some(l.as_bytes())]);
                        }
                        synth::command_complete(&mut self.ctx.out.buf, "EXPLAIN");
                        Ok(true)
                    }
                    Err(e) => {
                        self.ctx.send_error(&e);
                        Ok(false)
                    }
                }
            }
        }
    }
}

impl Session {
    /// Runs a statement on `shard`: as a prepared statement of its
    /// normalized text when `auto` allows, else as the Query `msg()`.
    async fn run_one(
        &mut self,
        shard: &str,
        auto: Option<(&AutoStmt, &str)>,
        sql: &str,
        lits: &Literals,
        msg: impl Fn() -> Bytes,
    ) -> Result<bool, End> {
        if let Some((stmt, before)) = auto {
            let text = ClientText { sql, before };
            match self.ctx.exchange_auto(shard, stmt, text, lits).await? {
                AutoRun::Done(ok) => return Ok(ok),
                AutoRun::Declined => {}
                AutoRun::Original => {
                    let ok = self.ctx.exchange_one(shard, &msg(), QUERY_SLOTS).await?;
                    if ok {
                        // The literal worked where the parameter did not.
                        stmt.refuse();
                    }
                    return Ok(ok);
                }
            }
        }
        self.ctx.exchange_one(shard, &msg(), QUERY_SLOTS).await
    }

    /// Sends XX000 `message` (a planner invariant broken); the statement
    /// failed.
    fn internal(&mut self, message: &str) -> Result<bool, End> {
        self.ctx
            .send_error(&PgError::new(codes::INTERNAL_ERROR, message.to_string()));
        Ok(false)
    }
}
