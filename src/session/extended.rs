//! Extended query protocol (PostgreSQL docs §55.2.3): messages are buffered
//! until Sync or Flush, then routed as a batch.
//!
//! Client statement names are mapped to router-wide backend names
//! (`pgr_<hash of query and parameter types>`) so prepared statements work in
//! transaction pooling: a statement is (re-)prepared on whichever backend
//! connection serves a Bind, and ParseComplete is answered by the router when
//! the backend already has it.
//!
//! Fast path: when every Bind/Execute of the batch routes to the same shard,
//! the batch goes to that shard in one write and the responses are
//! forwarded byte for byte. Otherwise each message is sent to its own route
//! followed by Flush, and Sync is sent to every pinned backend at the end.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::exec::concat::MergeMode;
use crate::exec::message::{
    scatter_route, Item, OwnedRoute, PendingGenerated, PendingInsertSelect, PendingRoute,
    PendingSequence, Route, ShardName,
};
use crate::exec::owned::keyed_shard;
use crate::exec::owned_ext::{needs_lookup, owned_block};
use crate::exec::route::{key_shard, null_key, rows_by_shard, scatter_shards, Values};
use crate::exec::split_insert::split_insert;
use crate::exec::statement::ClientStmt;
use crate::exec::txn_control::ends_failed_block;
use crate::exec::{Block, End};
use crate::plan::Plan;
use crate::protocol::error::codes;
use crate::protocol::frontend::{Bind, Execute, Parse, Target};
use crate::protocol::{Frame, PgError};
use crate::state::Routing;

use super::statements::rename_frame;
use super::subqueries_ext::SubqueryBinds;
use super::Session;

impl Session {
    /// Processes the buffered batch; `sync` is true when it ends with Sync.
    pub(super) async fn run_batch(&mut self, _sync: bool) -> Result<(), End> {
        let frames = std::mem::take(&mut self.batch.frames);
        let mut routing = self.ctx.state.routing();
        let mut items = Vec::with_capacity(frames.len());
        let mut failed = false;
        // In the gate before routing (a block installed after this waits
        // for the batch); a batch that writes nothing leaves at once.
        self.ctx.enter_gate();
        if self.ctx.state.gate.maybe_closed() && self.batch_writes(&routing, &frames) {
            match self.ctx.admit_write().await {
                Ok(false) => {}
                // Held across a routing change: route with the new one.
                Ok(true) => routing = self.ctx.state.routing(),
                Err(e) => {
                    items.push(Item::Fail(e));
                    failed = true;
                }
            }
        }
        // Table columns the batch's statements need are read first.
        let mut read_schema = false;
        if !failed {
            match self.read_schemas(&routing, &frames).await? {
                None => {}
                Some(ok) => {
                    read_schema = true;
                    failed = !ok;
                }
            }
        }
        // A CREATE TABLE that a keyspace rule shards is declared first.
        if !failed && !routing.catalog.table_rules.is_empty() {
            match self.declare_by_rules(&routing, &frames).await {
                None => {}
                Some(ok) => {
                    routing = self.ctx.state.routing();
                    read_schema = true;
                    failed = !ok;
                }
            }
        }
        // Binds of statements whose subqueries run first are resolved
        // before routing (`session/subqueries_ext.rs`).
        let mut frames = frames;
        let mut subqueries = SubqueryBinds::default();
        if !failed {
            subqueries = self.bind_subqueries(&routing, &mut frames).await?;
        }
        for (i, f) in frames.iter().enumerate() {
            if failed && f.tag != b'S' {
                continue;
            }
            let failed_bind = subqueries.failed.iter().find(|(at, _)| *at == i);
            let item = match failed_bind {
                Some((_, frame)) => Item::FailFrame(frame.clone()),
                None => match self.decode_item(&routing, f) {
                    Ok(i) => i,
                    Err(e) => Item::Fail(e),
                },
            };
            if matches!(item, Item::Fail(_) | Item::FailFrame(_)) {
                failed = true;
            }
            items.push(item);
        }
        // Connections used by a batch that writes are 2PC participants.
        self.ctx.cur_write = items
            .iter()
            .any(|it| matches!(it, Item::Bind { stmt, .. } if stmt.plan.writes()));
        if !self.ctx.cur_write {
            self.ctx.leave_gate();
        }
        let syncs = items.iter().any(|it| matches!(it, Item::Sync));
        if failed && read_schema && !syncs {
            // The schema read failed (error sent): skip to the Sync.
            self.skip_until_sync = true;
        }
        for it in &items {
            if let Item::Bind {
                stmt,
                route: Route::Multi(..),
                ..
            } = it
            {
                if matches!(*stmt.plan, Plan::AllShards) {
                    self.ctx.note_ddl(&routing, &stmt.query);
                }
            }
        }
        self.open_batch_block(&mut items, syncs, routing.catalog.shards.len());
        let mut target: Option<&ShardName> = None;
        // Reading columns (or running subqueries) left messages on shards
        // that only the slow path's Sync reaches.
        let mut fast = !read_schema && !subqueries.ran;
        for it in &items {
            match it.route() {
                Some(Route::Shard(s)) => {
                    if target.is_some_and(|t| t != s) {
                        fast = false;
                    }
                    target = Some(s);
                }
                Some(_) => fast = false,
                None => {
                    if matches!(
                        it,
                        Item::Fail(_)
                            | Item::DescribePortal { route: None, .. }
                            | Item::Execute { route: None, .. }
                    ) {
                        fast = false;
                    }
                    // A gather's description hides its extra columns.
                    if let Item::DescribeStmt { stmt, .. } = it {
                        if stmt.gather().is_some() {
                            fast = false;
                        }
                    }
                }
            }
        }
        // Sync must reach every connection that got messages since the
        // last Sync (a Flush-terminated batch may have used another shard).
        if fast
            && syncs
            && self.unsynced
            && self
                .ctx
                .held
                .iter()
                .any(|h| target.is_none_or(|t| *h.conn.shard != **t))
        {
            fast = false;
        }
        self.unsynced = !syncs;
        let target = target.cloned();
        let r = self
            .route_batch(fast, target.as_deref(), &routing, items)
            .await;
        if subqueries.ran {
            self.forget_subquery_statements();
        }
        r
    }

    /// Runs the routed batch: on `target` in one write (`fast`), or
    /// message by message.
    async fn route_batch(
        &mut self,
        fast: bool,
        target: Option<&str>,
        routing: &Routing,
        items: Vec<Item>,
    ) -> Result<(), End> {
        if fast {
            let any;
            let shard = match target {
                Some(s) => s,
                None => match self.ctx.any_shard() {
                    Ok(s) => {
                        any = s;
                        &any
                    }
                    Err(e) => {
                        self.ctx.send_error(&e);
                        return Ok(());
                    }
                },
            };
            if !self.ctx.batch_fast(shard, items).await? {
                self.skip_until_sync = true;
            }
            Ok(())
        } else {
            self.ctx.in_extended = true;
            let r = self.batch_slow(routing, items).await;
            self.ctx.in_extended = false;
            r
        }
    }

    /// Reads the columns of the tables the batch's Parse messages, and the
    /// statements its Bind messages plan again, need
    /// ([`Plan::NeedSchema`]), inside the session's transaction. None if
    /// none was needed; Some(false) if a read failed (the error was sent).
    async fn read_schemas(
        &mut self,
        routing: &Routing,
        frames: &[Frame],
    ) -> Result<Option<bool>, End> {
        let mut read = None;
        for f in frames {
            let stale =
                |s: &ClientStmt| !s.current(routing) || matches!(*s.plan, Plan::NeedSchema { .. });
            let query: Cow<'_, str> = match f.tag {
                b'P' => match Parse::name_and_query(f.body()) {
                    // The unnamed statement parsed again with the same
                    // text (what drivers do for every query) is planned.
                    Ok((name, query)) => match self.statements.get(name) {
                        Some(s) if s.query == query && !stale(s) => continue,
                        _ => Cow::Borrowed(query),
                    },
                    Err(_) => continue,
                },
                b'B' => match Bind::statement_name(f.body())
                    .ok()
                    .and_then(|name| self.statements.get(name))
                {
                    Some(s) if stale(s) => Cow::Owned(s.query.clone()),
                    _ => continue,
                },
                _ => continue,
            };
            // A join may need several tables' columns, one after another.
            let mut last: Option<String> = None;
            loop {
                let plan = routing.planner.plan_extended(&query, routing);
                let Plan::NeedSchema { table } = &*plan else {
                    break;
                };
                if last.as_deref() == Some(&**table) {
                    break;
                }
                self.ctx.in_extended = true;
                let ok = self.ctx.load_schema(routing, table).await;
                self.ctx.in_extended = false;
                if !ok? {
                    return Ok(Some(false));
                }
                read = Some(true);
                last = Some(table.to_string());
            }
        }
        Ok(read)
    }

    /// Declares the tables that the batch's `CREATE TABLE` Parse messages
    /// create and keyspace rules shard ([`crate::exec::ExecCtx::declare_by_rule`]).
    /// None if there were none; Some(false) if a declaration failed (the
    /// error was sent).
    async fn declare_by_rules(&mut self, routing: &Routing, frames: &[Frame]) -> Option<bool> {
        let mut declared = None;
        for f in frames.iter().filter(|f| f.tag == b'P') {
            let Ok((_, query)) = Parse::name_and_query(f.body()) else {
                continue;
            };
            let Some(created) = crate::exec::ExecCtx::rule_candidate(routing, query) else {
                continue;
            };
            self.ctx.in_extended = true;
            let ok = self.ctx.declare_by_rule(routing, &created).await;
            self.ctx.in_extended = false;
            declared = Some(ok);
            if !ok {
                break;
            }
        }
        declared
    }

    /// Whether the batch may write: a Parse of a statement that writes, or
    /// a Bind of a prepared one (checked before routing, for the write
    /// gate).
    fn batch_writes(&self, routing: &Routing, frames: &[Frame]) -> bool {
        frames.iter().any(|f| match f.tag {
            b'P' => Parse::decode(f.body())
                .is_ok_and(|p| routing.planner.plan_extended(p.query, routing).writes()),
            b'B' => Bind::statement_name(f.body())
                .is_ok_and(|name| self.statements.get(name).is_some_and(|s| s.plan.writes())),
            _ => false,
        })
    }

    /// Opens the implicit block a batch outside a transaction block needs
    /// (PostgreSQL's implicit transaction of an extended-protocol batch,
    /// committed at Sync): for a write on several shards (with
    /// `transaction_mode = single` that item becomes a 0A000 failure
    /// instead), a write to a table owning lookup vindexes (REPEATABLE READ
    /// for UPDATE/DELETE: pre-select and write see the same rows), or a
    /// write in a batch not ended by Sync (later batches may write on other
    /// shards). Utility statements sent to every shard (DDL, VACUUM) are
    /// never wrapped. `catalog_shards`: the number of shards a COPY spans.
    fn open_batch_block(&mut self, items: &mut [Item], syncs: bool, catalog_shards: usize) {
        if self.ctx.block.is_some() {
            return;
        }
        let wraps = |plan: &Plan| plan.writes() && !matches!(plan, Plan::AllShards);
        for it in items.iter_mut() {
            let n = match it {
                Item::Bind {
                    stmt,
                    route: Route::Multi(shards, _),
                    ..
                } if wraps(&stmt.plan) => shards.len(),
                Item::Bind {
                    stmt,
                    route: Route::Copy(..),
                    ..
                } if wraps(&stmt.plan) => catalog_shards,
                Item::Bind {
                    route: Route::SplitInsert(p),
                    ..
                } => p.parts.len(),
                // Rows may land on several shards.
                Item::Bind {
                    route: Route::Generated(p),
                    ..
                } => p.plan.rows,
                _ => continue,
            };
            if n > 1 {
                if self.ctx.state.txn.mode == crate::txn::TransactionMode::Single {
                    *it = Item::Fail(PgError::unsupported(format!(
                        "transaction_mode = single: this statement writes on {n} shards"
                    )));
                } else {
                    self.ctx.block = Some(Block::new("BEGIN", true));
                    return;
                }
                break;
            }
        }
        let owned = items
            .iter()
            .filter_map(|it| match it {
                Item::Bind { stmt, .. } => owned_block(&stmt.plan),
                _ => None,
            })
            .reduce(|a, b| a || b);
        let begin = match owned {
            Some(repeatable) => crate::exec::lookup::owned_begin(repeatable),
            None if !syncs
                && items
                    .iter()
                    .any(|it| matches!(it, Item::Bind { stmt, .. } if wraps(&stmt.plan))) =>
            {
                "BEGIN"
            }
            None => return,
        };
        self.ctx.block = Some(Block::new(begin, true));
    }

    fn decode_item(&mut self, routing: &Routing, f: &Frame) -> Result<Item, PgError> {
        let proto = |e: crate::protocol::ProtocolError| {
            PgError::new(codes::PROTOCOL_VIOLATION, e.to_string())
        };
        match f.tag {
            b'P' => {
                let p = Parse::decode(f.body()).map_err(proto)?;
                let stmt = self.register_statement(routing, &p)?;
                if let Plan::Error {
                    sqlstate,
                    message,
                    hint,
                } = &*stmt.plan
                {
                    self.statements.remove(p.name);
                    let mut e = PgError::new(sqlstate, message.clone());
                    e.hint = hint.clone();
                    return Err(e);
                }
                Ok(Item::Parse(stmt))
            }
            b'B' => {
                let b = Bind::decode(f.body()).map_err(proto)?;
                let stmt = self.lookup_statement(routing, b.statement)?;
                let route = self.route_bind(routing, &stmt, &b, &f.data)?;
                let frame = rename_frame(
                    b'B',
                    &f.body()[..b.portal.len() + 1],
                    &stmt.backend_name,
                    &f.body()[b.after_names..],
                );
                self.portals.insert(b.portal.to_string(), route.clone());
                Ok(Item::Bind { stmt, frame, route })
            }
            b'D' | b'C' => {
                let t = Target::decode(f.body()).map_err(proto)?;
                if t.kind == b'S' {
                    if f.tag == b'C' {
                        self.statements.remove(t.name);
                        return Ok(Item::CloseStmt);
                    }
                    let stmt = self.lookup_statement(routing, t.name)?;
                    let frame = rename_frame(b'D', b"S", &stmt.backend_name, &[]);
                    Ok(Item::DescribeStmt { stmt, frame })
                } else {
                    let route = self.portals.get(t.name).cloned();
                    if f.tag == b'C' {
                        self.portals.remove(t.name);
                        Ok(Item::ClosePortal {
                            frame: f.data.clone(),
                            route,
                        })
                    } else {
                        Ok(Item::DescribePortal {
                            frame: f.data.clone(),
                            route,
                        })
                    }
                }
            }
            b'E' => {
                let e = Execute::decode(f.body()).map_err(proto)?;
                let route = self.portals.get(e.portal).cloned();
                if route.is_none() {
                    return Err(PgError::new(
                        codes::INVALID_CURSOR_NAME,
                        format!("portal \"{}\" does not exist", e.portal),
                    ));
                }
                Ok(Item::Execute {
                    frame: f.data.clone(),
                    route,
                })
            }
            b'S' => Ok(Item::Sync),
            _ => Ok(Item::Flush),
        }
    }

    /// The route of a Bind (`frame`) of `stmt`. Errors: 25P02 in a failed
    /// block, the plan's refusal, key errors (see [`key_shard`]).
    fn route_bind(
        &mut self,
        routing: &Routing,
        stmt: &Arc<ClientStmt>,
        b: &Bind<'_>,
        frame: &Bytes,
    ) -> Result<Route, PgError> {
        if self.ctx.block.as_ref().is_some_and(|bl| bl.failed)
            && !ends_failed_block(&stmt.plan, &stmt.query)
        {
            return Err(PgError::new(
                codes::IN_FAILED_SQL_TRANSACTION,
                "current transaction is aborted, commands ignored until end of transaction block",
            ));
        }
        if needs_lookup(&stmt.plan) {
            return Ok(Route::Lookup(Arc::new(PendingRoute {
                stmt: stmt.clone(),
                bind: frame.clone(),
                resolved: OnceLock::new(),
            })));
        }
        let plan = match &*stmt.plan {
            Plan::Owned { inner, .. } => &**inner,
            p => p,
        };
        let route = self.route_plan(routing, stmt, plan, b, frame)?;
        if !matches!(*stmt.plan, Plan::Owned { .. }) {
            return Ok(route);
        }
        let shards = match route {
            Route::Shard(s) => vec![s.to_string()],
            Route::Multi(shards, _) => shards.to_vec(),
            Route::SplitInsert(_) => {
                return Err(PgError::unsupported(
                    "a multi-row INSERT spanning shards into a table owning lookup vindexes is not supported with the extended protocol yet",
                ))
            }
            _ => {
                return Err(PgError::new(
                    codes::INTERNAL_ERROR,
                    "unexpected route for a write to a table owning lookup vindexes",
                ))
            }
        };
        Ok(Route::Owned(Arc::new(OwnedRoute {
            shards,
            stmt: stmt.clone(),
            bind: frame.clone(),
        })))
    }

    fn route_plan(
        &mut self,
        routing: &Routing,
        stmt: &Arc<ClientStmt>,
        plan: &Plan,
        b: &Bind<'_>,
        frame: &Bytes,
    ) -> Result<Route, PgError> {
        let cat = &routing.catalog;
        let values = Values::Bind(b);
        Ok(match plan {
            Plan::Error {
                sqlstate,
                message,
                hint,
            } => {
                let mut e = PgError::new(sqlstate, message.clone());
                e.hint = hint.clone();
                return Err(e);
            }
            Plan::Subqueries { message, hint, .. } => {
                return Err(subqueries_refusal(message, hint))
            }
            Plan::Transaction(t) => Route::Txn(t.clone(), stmt.query.clone()),
            Plan::Set { local, reset_all } => Route::Set {
                sql: stmt.query.clone(),
                local: *local,
                reset_all: *reset_all,
            },
            Plan::AnyShard => Route::Shard(self.ctx.any_shard()?.into()),
            Plan::AllShards | Plan::Broadcast { .. } => Route::Multi(
                cat.shard_names().iter().map(|s| s.to_string()).collect(),
                MergeMode::FirstOnly,
            ),
            Plan::Keyed { keys, .. } => match keyed_shard(cat, keys, &values)? {
                Some(s) => Route::Shard(s.into()),
                None => Route::Shard(self.ctx.any_shard()?.into()),
            },
            Plan::Insert { table, rows } => {
                // One shard without allocating (the fast path); rows on
                // several shards are grouped and split.
                let mut target: Option<&str> = None;
                for k in rows {
                    let s =
                        key_shard(cat, table, k, &values)?.ok_or_else(|| null_key(cat, table))?;
                    if target.is_some_and(|t| t != s) {
                        let by_shard = rows_by_shard(cat, table, rows, &values)?;
                        let split = split_insert(stmt, b, by_shard, rows.len())?;
                        return Ok(Route::SplitInsert(Arc::new(split)));
                    }
                    target = Some(s);
                }
                Route::Shard(
                    target
                        .ok_or_else(|| PgError::unsupported("INSERT without rows"))?
                        .into(),
                )
            }
            Plan::Scatter {
                table,
                prune,
                merge,
                ..
            } => scatter_route(
                scatter_shards(cat, table, prune.as_ref(), &values)?,
                merge,
                stmt,
                frame,
            ),
            Plan::Copy(c) => Route::Copy(c.clone(), stmt.query.clone()),
            Plan::Owned { .. } => {
                return Err(PgError::new(
                    codes::INTERNAL_ERROR,
                    "nested write to a table owning lookup vindexes",
                ))
            }
            Plan::RouterExplain(_) => {
                return Err(PgError::unsupported(
                    "EXPLAIN (ROUTER) is answered in the simple query protocol only",
                ))
            }
            Plan::GenerateKey(g) => Route::Generated(Arc::new(PendingGenerated {
                stmt: stmt.clone(),
                plan: g.clone(),
                bind: frame.clone(),
                resolved: OnceLock::new(),
            })),
            Plan::CopyQuery(c) => Route::CopyQuery(c.clone(), stmt.query.clone()),
            Plan::InsertSelect(_) => Route::InsertSelect(Arc::new(PendingInsertSelect {
                stmt: stmt.clone(),
                bind: frame.clone(),
                result_formats: b.result_formats.to_vec(),
            })),
            Plan::SequenceFn(call) => Route::Sequence(Arc::new(PendingSequence {
                call: call.clone(),
                format: b.result_formats.first().copied().unwrap_or(0),
                resolved: OnceLock::new(),
            })),
            Plan::NeedSchema { table } => {
                return Err(PgError::new(
                    codes::INTERNAL_ERROR,
                    format!("the columns of \"{table}\" were not read before Bind"),
                ))
            }
        })
    }
}

/// The 0A000 of [`Plan::Subqueries`] in the extended protocol.
fn subqueries_refusal(message: &str, hint: &Option<String>) -> PgError {
    let mut e = PgError::unsupported(message.to_string())
        .with_detail(super::subqueries::NO_RUNNABLE_SUBQUERY);
    e.hint = hint.clone();
    e
}
