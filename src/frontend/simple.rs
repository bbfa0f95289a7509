//! Simple query protocol ('Q'): split into statements, plan each through the
//! fingerprint cache, route, and run (PostgreSQL docs §55.2.2).

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::frontend as fe;

use crate::plan::{self, Literals, Plan, TxnStmt};
use crate::protocol::error::codes;
use crate::protocol::frontend::query_text;
use crate::protocol::{synth, Frame, PgError};
use crate::state::Routing;

use super::exchange::{Expect, Slot};
use super::merge::MergeMode;
use super::route::{key_shard, scatter_shards, Values};
use super::session::{Block, End, Session};

impl Session {
    /// Handles one Query message (without the final ReadyForQuery).
    pub(crate) async fn on_query(&mut self, frame: Frame) -> Result<(), End> {
        let sql = match query_text(frame.body()) {
            Ok(s) => s,
            Err(e) => {
                self.send_error(&PgError::new(codes::PROTOCOL_VIOLATION, e.to_string()));
                return Ok(());
            }
        };
        let stmts = plan::split_statements(sql);
        if stmts.is_empty() {
            synth::empty_query(&mut self.out.buf);
            return Ok(());
        }
        let routing = self.state.routing();
        if stmts.len() == 1 {
            let (p, lits) = routing.planner.plan_simple(stmts[0], &*routing.catalog);
            let raw = if stmts[0].len() + 2 >= sql.trim().len() {
                Some(&frame)
            } else {
                None
            };
            self.exec_simple(&routing, stmts[0], &p, &lits, raw).await?;
            return Ok(());
        }
        let planned: Vec<_> = stmts
            .iter()
            .map(|s| (*s, routing.planner.plan_simple(s, &*routing.catalog)))
            .collect();
        let has_txn = planned
            .iter()
            .any(|(_, (p, _))| matches!(**p, Plan::Transaction(_)));
        let implicit = self.block.is_none() && !has_txn;
        if implicit {
            self.block = Some(Block {
                begin_sql: "BEGIN".into(),
                failed: false,
                implicit: true,
            });
        }
        for (s, (p, lits)) in &planned {
            if !self.exec_simple(&routing, s, p, lits, None).await? {
                break;
            }
        }
        if implicit {
            let commit = !self.block.as_ref().is_some_and(|b| b.failed);
            self.end_block(commit).await?;
        }
        Ok(())
    }

    /// Runs one planned statement; returns false if it failed (error sent).
    async fn exec_simple(
        &mut self,
        routing: &Routing,
        sql: &str,
        p: &Plan,
        lits: &Literals,
        raw: Option<&Frame>,
    ) -> Result<bool, End> {
        if self.block.as_ref().is_some_and(|b| b.failed) && !ends_failed_block(p, sql) {
            self.send_error(&PgError::new(
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
        match p {
            Plan::Error {
                sqlstate,
                message,
                hint,
            } => {
                let mut e = PgError::new(sqlstate, message.clone());
                e.hint = hint.clone();
                self.send_error(&e);
                Ok(false)
            }
            Plan::Transaction(t) => self.txn_command(t, sql).await,
            Plan::Set { local, reset_all } => {
                let shard = match self.any_shard() {
                    Ok(s) => s,
                    Err(e) => {
                        self.send_error(&e);
                        return Ok(false);
                    }
                };
                let ok = self.exchange_one(&shard, &query_msg(), q()).await?;
                if ok && !local {
                    self.record_setting(sql, *reset_all);
                    // The connection already has the new setting.
                    if let Some(h) = self.held.iter_mut().find(|h| *h.conn.shard == *shard) {
                        h.conn.settings_hash = self.settings_hash;
                    }
                }
                Ok(ok)
            }
            Plan::AnyShard => match self.any_shard() {
                Ok(s) => self.exchange_one(&s, &query_msg(), q()).await,
                Err(e) => {
                    self.send_error(&e);
                    Ok(false)
                }
            },
            Plan::AllShards | Plan::Broadcast { .. } => {
                let msg = query_msg();
                let parts = routing
                    .catalog
                    .shard_names()
                    .into_iter()
                    .map(|s| (s.to_string(), msg.clone(), q()))
                    .collect();
                self.exchange_many(parts, MergeMode::FirstOnly).await
            }
            Plan::Keyed { keys, .. } => {
                let values = Values::Simple { sql, lits };
                let mut target: Option<&str> = None;
                for k in keys {
                    match key_shard(&routing.catalog, &k.table, &k.key, &values) {
                        Ok(Some(s)) => {
                            if target.is_some_and(|t| t != s) {
                                self.send_error(&PgError::unsupported(
                                    "statement references rows on different shards; joins across shards are not supported yet",
                                ));
                                return Ok(false);
                            }
                            target = Some(s);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            self.send_error(&e);
                            return Ok(false);
                        }
                    }
                }
                let any;
                let shard = match target {
                    Some(s) => s,
                    None => match self.any_shard() {
                        Ok(s) => {
                            any = s;
                            any.as_str()
                        }
                        Err(e) => {
                            self.send_error(&e);
                            return Ok(false);
                        }
                    },
                };
                self.exchange_one(shard, &query_msg(), q()).await
            }
            Plan::Insert { table, rows } => {
                let values = Values::Simple { sql, lits };
                let mut by_shard: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
                for (i, k) in rows.iter().enumerate() {
                    match key_shard(&routing.catalog, table, k, &values) {
                        Ok(Some(s)) => by_shard.entry(s).or_default().push(i),
                        Ok(None) => {
                            let col = routing
                                .catalog
                                .table(table)
                                .map(|t| t.key_column.clone())
                                .unwrap_or_default();
                            self.send_error(&PgError::new(
                                "23502",
                                format!("null value in sharding key column \"{col}\" of relation \"{table}\""),
                            ));
                            return Ok(false);
                        }
                        Err(e) => {
                            self.send_error(&e);
                            return Ok(false);
                        }
                    }
                }
                if by_shard.len() <= 1 {
                    let shard = match by_shard.keys().next() {
                        Some(s) => *s,
                        None => {
                            self.send_error(&PgError::unsupported("INSERT without rows"));
                            return Ok(false);
                        }
                    };
                    return self.exchange_one(shard, &query_msg(), q()).await;
                }
                let Some(spans) = plan::insert_values_spans(sql) else {
                    self.send_error(&PgError::unsupported(
                        "could not split this multi-row INSERT by shard",
                    ));
                    return Ok(false);
                };
                let mut parts = Vec::new();
                for (shard, idxs) in by_shard {
                    let mut text = String::with_capacity(sql.len());
                    text.push_str(&sql[..spans.prefix_end]);
                    for (n, i) in idxs.iter().enumerate() {
                        if n > 0 {
                            text.push_str(", ");
                        }
                        if let Some(r) = spans.rows.get(*i) {
                            text.push_str(&sql[r.clone()]);
                        }
                    }
                    text.push_str(&sql[spans.suffix_start..]);
                    let mut b = BytesMut::new();
                    let _ = fe::query(&text, &mut b);
                    parts.push((shard.to_string(), b.freeze(), q()));
                }
                self.exchange_many(parts, MergeMode::Concat).await
            }
            Plan::Scatter {
                table,
                prune,
                merge,
                ..
            } => {
                let shards = match scatter_shards(
                    &routing.catalog,
                    table,
                    prune.as_ref(),
                    &Values::Simple { sql, lits },
                ) {
                    Ok(s) => s,
                    Err(e) => {
                        self.send_error(&e);
                        return Ok(false);
                    }
                };
                match merge {
                    plan::Merge::Concat => {
                        let msg = query_msg();
                        let parts = shards.into_iter().map(|s| (s, msg.clone(), q())).collect();
                        self.exchange_many(parts, MergeMode::Concat).await
                    }
                    plan::Merge::Gather(g) => self.gather_simple(&shards, g, sql, lits).await,
                    plan::Merge::NeedsText => {
                        self.send_error(&PgError::new(
                            codes::INTERNAL_ERROR,
                            "statement was planned from its normalized text only",
                        ));
                        Ok(false)
                    }
                }
            }
            Plan::Copy(c) => self.copy(routing, sql, c).await,
            Plan::RouterExplain(inner) => {
                match super::explain::explain_lines(routing, inner, sql, lits) {
                    Ok(lines) => {
                        synth::text_row_description(&mut self.out.buf, &["QUERY PLAN"]);
                        for l in &lines {
                            synth::data_row(&mut self.out.buf, &[Some(l.as_bytes())]);
                        }
                        synth::command_complete(&mut self.out.buf, "EXPLAIN");
                        Ok(true)
                    }
                    Err(e) => {
                        self.send_error(&e);
                        Ok(false)
                    }
                }
            }
        }
    }

    pub(crate) async fn txn_command(&mut self, t: &TxnStmt, sql: &str) -> Result<bool, End> {
        match t {
            TxnStmt::Begin { sql } => {
                if self.block.is_some() {
                    synth::notice(
                        &mut self.out.buf,
                        &PgError {
                            severity: "WARNING",
                            ..PgError::new("25001", "there is already a transaction in progress")
                        },
                    );
                } else {
                    self.block = Some(Block {
                        begin_sql: sql.clone(),
                        failed: false,
                        implicit: false,
                    });
                }
                synth::command_complete(&mut self.out.buf, "BEGIN");
                Ok(true)
            }
            TxnStmt::Commit | TxnStmt::Rollback => {
                let commit = matches!(t, TxnStmt::Commit);
                if self.block.is_none() {
                    synth::notice(
                        &mut self.out.buf,
                        &PgError {
                            severity: "WARNING",
                            ..PgError::new("25P01", "there is no transaction in progress")
                        },
                    );
                    synth::command_complete(
                        &mut self.out.buf,
                        if commit { "COMMIT" } else { "ROLLBACK" },
                    );
                    return Ok(true);
                }
                match self.end_block(commit).await? {
                    Some(tag) => {
                        synth::command_complete(&mut self.out.buf, tag);
                        Ok(true)
                    }
                    None => Ok(false),
                }
            }
            TxnStmt::Savepoint => {
                if self.block.is_none() {
                    self.send_error(&PgError::new(
                        "25P01",
                        format!(
                            "{} can only be used in transaction blocks",
                            first_word(sql).to_ascii_uppercase()
                        ),
                    ));
                    return Ok(false);
                }
                if self.held.iter().all(|h| !h.began) {
                    let shard = match self.any_shard() {
                        Ok(s) => s,
                        Err(e) => {
                            self.send_error(&e);
                            return Ok(false);
                        }
                    };
                    if let Err(e) = self.acquire(&shard).await {
                        self.send_error(&e);
                        return Ok(false);
                    }
                }
                let mut b = BytesMut::new();
                let _ = fe::query(sql, &mut b);
                let msg = b.freeze();
                let parts = self
                    .held
                    .iter()
                    .map(|h| {
                        (
                            h.conn.shard.to_string(),
                            msg.clone(),
                            VecDeque::from([Slot::Forward(Expect::Query)]),
                        )
                    })
                    .collect();
                let ok = self.exchange_many(parts, MergeMode::FirstOnly).await?;
                if ok {
                    if let Some(b) = &mut self.block {
                        b.failed = false;
                    }
                }
                Ok(ok)
            }
        }
    }
}

/// Statements allowed in a failed block: COMMIT/ROLLBACK, ROLLBACK TO.
pub(crate) fn ends_failed_block(p: &Plan, sql: &str) -> bool {
    match p {
        Plan::Transaction(TxnStmt::Commit | TxnStmt::Rollback) => true,
        Plan::Transaction(TxnStmt::Savepoint) => first_word(sql).eq_ignore_ascii_case("rollback"),
        _ => false,
    }
}

fn first_word(s: &str) -> &str {
    s.split_whitespace().next().unwrap_or("")
}
