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

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::message::frontend as fe;

use crate::plan::{GatherPlan, Merge, Plan, SqlPiece, TxnStmt};
use crate::protocol::error::codes;
use crate::protocol::frontend::{Bind, Execute, Parse, Target};
use crate::protocol::{synth, Frame, PgError};
use crate::state::Routing;

use super::exchange::{self, Direct, ExchangeError, Expect, Slot};
use super::merge::{MergeMode, MergeState};
use super::owned::keyed_shard;
use super::owned_ext::{effective, needs_lookup, owned_block, OwnedRoute, PendingRoute};
use super::route::{key_shard, scatter_shards, Values};
use super::session::{End, Session};
use super::simple::ends_failed_block;

/// A client's prepared statement.
#[derive(Debug)]
pub struct ClientStmt {
    /// Hash of query text and parameter types; the backend name is `pgr_<id>`.
    pub id: u64,
    /// Query text.
    pub query: String,
    /// Parameter type OIDs from Parse.
    pub param_types: Vec<u32>,
    /// Routing plan.
    pub plan: Arc<Plan>,
    /// Routing version the plan was made with.
    pub version: u64,
    /// Encoded Parse message with the backend name, injected on demand.
    pub parse_frame: Bytes,
    /// Backend statement name.
    pub backend_name: String,
    /// Parameter types the shards inferred (ParameterDescription), fetched
    /// when a write to an owner table needs them for its pre-select.
    pub shard_param_types: OnceLock<Vec<u32>>,
}

/// Client messages waiting for Sync or Flush.
#[derive(Default)]
pub struct Batch {
    /// Raw frames in arrival order.
    pub frames: Vec<Frame>,
}

/// Where one message of a batch goes.
#[derive(Debug, Clone)]
pub enum Route {
    /// One shard.
    Shard(String),
    /// Several shards, merged.
    Multi(Vec<String>, MergeMode),
    /// Answered by the router (transaction control).
    Txn(TxnStmt, String),
    /// SET / RESET / DISCARD, run by the router at Execute (recorded for
    /// replay, or kept with the transaction block).
    Set {
        /// The statement.
        sql: String,
        /// SET LOCAL / TRANSACTION / CONSTRAINTS.
        local: bool,
        /// RESET ALL / DISCARD ALL.
        reset_all: bool,
    },
    /// COPY run by the router's COPY path at Execute.
    Copy(crate::plan::CopyPlan, String),
    /// A merged multi-shard SELECT: bound and run by the gather executor
    /// at Execute (`bind` is the client's Bind frame).
    Gather {
        /// Shards of the keyspace.
        shards: Vec<String>,
        /// The merge.
        plan: Arc<GatherPlan>,
        /// The client's statement.
        stmt: Arc<ClientStmt>,
        /// The client's Bind frame.
        bind: Bytes,
    },
    /// Routed through a lookup table when the Bind runs.
    Lookup(Arc<PendingRoute>),
    /// A write to a table owning lookup vindexes: lookup maintenance and
    /// the write run at Execute.
    Owned(Arc<OwnedRoute>),
}

/// The route of a scatter on `shards` with `merge` (the client's Bind
/// frame `bind` is kept for a gather).
pub(crate) fn scatter_route(
    shards: Vec<String>,
    merge: &Merge,
    stmt: &Arc<ClientStmt>,
    bind: &Bytes,
) -> Route {
    match merge {
        Merge::Gather(plan) => Route::Gather {
            shards,
            plan: plan.clone(),
            stmt: stmt.clone(),
            bind: bind.clone(),
        },
        _ => Route::Multi(shards, MergeMode::Concat),
    }
}

enum Item {
    Parse(Arc<ClientStmt>),
    Bind {
        stmt: Arc<ClientStmt>,
        frame: Bytes,
        route: Route,
    },
    DescribeStmt {
        stmt: Arc<ClientStmt>,
        frame: Bytes,
    },
    DescribePortal {
        frame: Bytes,
        route: Option<Route>,
    },
    Execute {
        frame: Bytes,
        route: Option<Route>,
    },
    ClosePortal {
        frame: Bytes,
        route: Option<Route>,
    },
    CloseStmt,
    Sync,
    Flush,
    Fail(PgError),
}

impl Item {
    fn route(&self) -> Option<&Route> {
        match self {
            Item::Bind { route, .. } => Some(route),
            Item::DescribePortal { route, .. }
            | Item::Execute { route, .. }
            | Item::ClosePortal { route, .. } => route.as_ref(),
            _ => None,
        }
    }
}

fn stmt_id(query: &str, types: &[u32]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    query.hash(&mut h);
    types.hash(&mut h);
    h.finish()
}

/// Rebuilds a Bind or Describe/Close-statement frame with another statement
/// name. `prefix` is the bytes before the name inside the body.
fn rename_frame(tag: u8, prefix: &[u8], name: &str, rest: &[u8]) -> Bytes {
    let len = 4 + prefix.len() + name.len() + 1 + rest.len();
    let mut b = BytesMut::with_capacity(len + 1);
    b.put_u8(tag);
    b.put_i32(len as i32);
    b.extend_from_slice(prefix);
    b.extend_from_slice(name.as_bytes());
    b.put_u8(0);
    b.extend_from_slice(rest);
    b.freeze()
}

impl Session {
    /// Processes the buffered batch; `sync` is true when it ends with Sync.
    pub(crate) async fn run_batch(&mut self, _sync: bool) -> Result<(), End> {
        let frames = std::mem::take(&mut self.batch.frames);
        let routing = self.state.routing();
        let mut items = Vec::with_capacity(frames.len());
        let mut failed = false;
        for f in &frames {
            if failed && f.tag != b'S' {
                continue;
            }
            let item = match self.decode_item(&routing, f) {
                Ok(i) => i,
                Err(e) => Item::Fail(e),
            };
            if matches!(item, Item::Fail(_)) {
                failed = true;
            }
            items.push(item);
        }
        // Connections used by a batch that writes are 2PC participants.
        self.cur_write = items
            .iter()
            .any(|it| matches!(it, Item::Bind { stmt, .. } if stmt.plan.writes()));
        let syncs = items.iter().any(|it| matches!(it, Item::Sync));
        self.open_batch_block(&mut items, syncs, routing.catalog.shards.len());
        let mut target: Option<&str> = None;
        let mut fast = true;
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
                        if stmt_gather(stmt).is_some() {
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
                .held
                .iter()
                .any(|h| target.is_none_or(|t| *h.conn.shard != *t))
        {
            fast = false;
        }
        self.unsynced = !syncs;
        if fast {
            let shard = match target {
                Some(s) => s.to_string(),
                None => match self.any_shard() {
                    Ok(s) => s,
                    Err(e) => {
                        self.send_error(&e);
                        return Ok(());
                    }
                },
            };
            self.batch_fast(&shard, items).await
        } else {
            self.in_extended = true;
            let r = self.batch_slow(&routing, items).await;
            self.in_extended = false;
            r
        }
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
        if self.block.is_some() {
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
                _ => continue,
            };
            if n > 1 {
                if self.state.txn.mode == crate::txn::TransactionMode::Single {
                    *it = Item::Fail(PgError::unsupported(format!(
                        "transaction_mode = single: this statement writes on {n} shards"
                    )));
                } else {
                    self.block = Some(super::session::Block::new("BEGIN", true));
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
            Some(repeatable) => super::lookup::owned_begin(repeatable),
            None if !syncs
                && items
                    .iter()
                    .any(|it| matches!(it, Item::Bind { stmt, .. } if wraps(&stmt.plan))) =>
            {
                "BEGIN"
            }
            None => return,
        };
        self.block = Some(super::session::Block::new(begin, true));
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

    fn register_statement(
        &mut self,
        routing: &Routing,
        p: &Parse<'_>,
    ) -> Result<Arc<ClientStmt>, PgError> {
        if let Some(old) = self.statements.get(p.name) {
            if !p.name.is_empty() {
                return Err(PgError::new(
                    codes::DUPLICATE_PREPARED_STATEMENT,
                    format!("prepared statement \"{}\" already exists", p.name),
                ));
            }
            if old.query == p.query
                && old.param_types == p.param_types
                && old.version == routing.version
            {
                return Ok(old.clone());
            }
        }
        let stmt = Arc::new(self.new_statement(routing, p.query, &p.param_types));
        self.statements.insert(p.name.to_string(), stmt.clone());
        Ok(stmt)
    }

    fn new_statement(&self, routing: &Routing, query: &str, types: &[u32]) -> ClientStmt {
        let plan = routing.planner.plan_extended(query, &*routing.catalog);
        // A gather prepares its rewritten statement on the shards.
        let shard_text: Option<String> = match &*plan {
            Plan::Scatter {
                merge: Merge::Gather(g),
                ..
            } => Some(
                g.sql
                    .iter()
                    .map(|p| match p {
                        SqlPiece::Text(t) => t.as_str(),
                        _ => "",
                    })
                    .collect(),
            ),
            _ => None,
        };
        let text = shard_text.as_deref().unwrap_or(query);
        let id = stmt_id(text, types);
        let backend_name = format!("pgr_{id:016x}");
        let mut pf = BytesMut::new();
        let _ = fe::parse(&backend_name, text, types.iter().copied(), &mut pf);
        ClientStmt {
            id,
            query: query.to_string(),
            param_types: types.to_vec(),
            plan,
            version: routing.version,
            parse_frame: pf.freeze(),
            backend_name,
            shard_param_types: OnceLock::new(),
        }
    }

    fn lookup_statement(
        &mut self,
        routing: &Routing,
        name: &str,
    ) -> Result<Arc<ClientStmt>, PgError> {
        let Some(s) = self.statements.get(name) else {
            return Err(PgError::new(
                codes::INVALID_SQL_STATEMENT_NAME,
                if name.is_empty() {
                    "unnamed prepared statement does not exist".to_string()
                } else {
                    format!("prepared statement \"{name}\" does not exist")
                },
            ));
        };
        if s.version == routing.version {
            return Ok(s.clone());
        }
        // The catalog changed since Parse: plan again.
        let fresh = Arc::new(self.new_statement(routing, &s.query.clone(), &s.param_types.clone()));
        self.statements.insert(name.to_string(), fresh.clone());
        Ok(fresh)
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
        if self.block.as_ref().is_some_and(|bl| bl.failed)
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
            Route::Shard(s) => vec![s],
            Route::Multi(shards, _) => shards,
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
            Plan::Transaction(t) => Route::Txn(t.clone(), stmt.query.clone()),
            Plan::Set { local, reset_all } => Route::Set {
                sql: stmt.query.clone(),
                local: *local,
                reset_all: *reset_all,
            },
            Plan::AnyShard => Route::Shard(self.any_shard()?),
            Plan::AllShards | Plan::Broadcast { .. } => Route::Multi(
                cat.shard_names().iter().map(|s| s.to_string()).collect(),
                MergeMode::FirstOnly,
            ),
            Plan::Keyed { keys, .. } => match keyed_shard(cat, keys, &values)? {
                Some(s) => Route::Shard(s.to_string()),
                None => Route::Shard(self.any_shard()?),
            },
            Plan::Insert { table, rows } => {
                let mut target: Option<&str> = None;
                for k in rows {
                    let s = key_shard(cat, table, k, &values)?.ok_or_else(|| {
                        PgError::new(
                            "23502",
                            format!("null value in sharding key column of relation \"{table}\""),
                        )
                    })?;
                    if target.is_some_and(|t| t != s) {
                        return Err(PgError::unsupported(
                            "a multi-row INSERT spanning shards is not supported with the extended protocol yet",
                        ));
                    }
                    target = Some(s);
                }
                Route::Shard(
                    target
                        .map(str::to_string)
                        .ok_or_else(|| PgError::unsupported("INSERT without rows"))?,
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
        })
    }

    /// Queues `stmt`'s Parse on held connection `idx` unless it is there.
    fn ensure_prepared(&mut self, idx: usize, stmt: &ClientStmt, slots: &mut VecDeque<Slot>) {
        let conn = &mut self.held[idx].conn;
        if !conn.prepared.contains(&stmt.id) {
            conn.out.extend_from_slice(&stmt.parse_frame);
            slots.push_back(Slot::Swallow(Expect::Parse(Some(stmt.id))));
            // Counted as prepared for the rest of this batch; an error skips
            // to Sync and is reconciled below.
            conn.prepared.insert(stmt.id);
        }
    }

    async fn batch_fast(&mut self, shard: &str, items: Vec<Item>) -> Result<(), End> {
        let idx = match self.acquire(shard).await {
            Ok(i) => i,
            Err(e) => {
                self.send_error(&e);
                self.skip_until_sync = true;
                return Ok(());
            }
        };
        let mut slots = VecDeque::with_capacity(items.len() + 2);
        self.prelude(idx, &mut slots);
        let mut injected = Vec::new();
        for it in items {
            match it {
                Item::Parse(stmt) => {
                    let conn = &mut self.held[idx].conn;
                    if conn.prepared.contains(&stmt.id) {
                        slots.push_back(Slot::Synth(Bytes::from_static(synth::PARSE_COMPLETE)));
                    } else {
                        conn.out.extend_from_slice(&stmt.parse_frame);
                        conn.prepared.insert(stmt.id);
                        injected.push(stmt.id);
                        slots.push_back(Slot::Forward(Expect::Parse(Some(stmt.id))));
                    }
                }
                Item::Bind { stmt, frame, .. } => {
                    if !self.held[idx].conn.prepared.contains(&stmt.id) {
                        injected.push(stmt.id);
                    }
                    self.ensure_prepared(idx, &stmt, &mut slots);
                    self.held[idx].conn.out.extend_from_slice(&frame);
                    slots.push_back(Slot::Forward(Expect::Bind));
                }
                Item::DescribeStmt { stmt, frame } => {
                    if !self.held[idx].conn.prepared.contains(&stmt.id) {
                        injected.push(stmt.id);
                    }
                    self.ensure_prepared(idx, &stmt, &mut slots);
                    self.held[idx].conn.out.extend_from_slice(&frame);
                    slots.push_back(Slot::Forward(Expect::DescribeStatement));
                }
                Item::DescribePortal { frame, .. } => {
                    self.held[idx].conn.out.extend_from_slice(&frame);
                    slots.push_back(Slot::Forward(Expect::DescribePortal));
                }
                Item::Execute { frame, .. } => {
                    self.held[idx].conn.out.extend_from_slice(&frame);
                    slots.push_back(Slot::Forward(Expect::Execute));
                }
                Item::ClosePortal { frame, .. } => {
                    self.held[idx].conn.out.extend_from_slice(&frame);
                    slots.push_back(Slot::Forward(Expect::Close));
                }
                Item::CloseStmt => {
                    slots.push_back(Slot::Synth(Bytes::from_static(synth::CLOSE_COMPLETE)))
                }
                Item::Sync => {
                    fe::sync(&mut self.held[idx].conn.out);
                    slots.push_back(Slot::Forward(Expect::Sync));
                }
                Item::Flush => fe::flush(&mut self.held[idx].conn.out),
                Item::Fail(_) => {}
            }
        }
        let conn = &mut self.held[idx].conn;
        let r = match conn.flush().await {
            Ok(()) => exchange::run(conn, &mut slots, &mut self.out, &mut Direct).await,
            Err(e) => Err(ExchangeError::Backend(e)),
        };
        if matches!(r, Ok(o) if o.error) {
            // Statements whose Parse was skipped or failed are not prepared.
            if let Some(h) = self.held.get_mut(idx) {
                for id in injected {
                    h.conn.prepared.remove(&id);
                }
            }
            self.skip_until_sync = true;
        }
        if !self.after_exchange(idx, r)? {
            self.skip_until_sync = true;
        }
        Ok(())
    }

    async fn batch_slow(&mut self, routing: &Routing, items: Vec<Item>) -> Result<(), End> {
        let mut failed = false;
        let n = items.len();
        let items: Vec<Item> = items;
        for i in 0..n {
            let it = &items[i];
            if failed && !matches!(it, Item::Sync) {
                continue;
            }
            let ok = match it {
                Item::Fail(e) => {
                    self.send_error(e);
                    false
                }
                Item::Parse(_) => {
                    synth_frame(&mut self.out.buf, synth::PARSE_COMPLETE);
                    true
                }
                Item::CloseStmt => {
                    synth_frame(&mut self.out.buf, synth::CLOSE_COMPLETE);
                    true
                }
                Item::Flush => {
                    self.out.flush().await?;
                    true
                }
                Item::DescribeStmt { stmt, frame } => {
                    // Route like the next routed message, else any shard.
                    let next = items[i + 1..].iter().find_map(|x| x.route()).cloned();
                    let next = match next {
                        Some(Route::Owned(o)) => o.shards.first().cloned().map(Route::Shard),
                        other => other,
                    };
                    match next {
                        Some(Route::Txn(..)) | Some(Route::Copy(..)) | Some(Route::Set { .. }) => {
                            // No parameters, no rows.
                            let mut b = BytesMut::new();
                            b.put_u8(b't');
                            b.put_i32(6);
                            b.put_i16(0);
                            self.out.buf.extend_from_slice(&b);
                            synth_frame(&mut self.out.buf, synth::NO_DATA);
                            true
                        }
                        other => {
                            let shard = match other {
                                Some(Route::Shard(s)) => s,
                                Some(Route::Multi(v, _)) if !v.is_empty() => v[0].clone(),
                                Some(Route::Gather { shards, .. }) if !shards.is_empty() => {
                                    shards[0].clone()
                                }
                                _ => match self.any_shard() {
                                    Ok(s) => s,
                                    Err(e) => {
                                        self.send_error(&e);
                                        failed = true;
                                        continue;
                                    }
                                },
                            };
                            let stmt = stmt.clone();
                            match stmt_gather(&stmt) {
                                // A gather's description hides its extra columns.
                                Some(plan) => {
                                    self.gather_describe(&shard, &plan, &stmt, None).await?
                                }
                                None => {
                                    let frame = frame.clone();
                                    self.one_message(
                                        &shard,
                                        Some(&stmt),
                                        &frame,
                                        Expect::DescribeStatement,
                                    )
                                    .await?
                                }
                            }
                        }
                    }
                }
                Item::Bind { stmt, frame, route } => match self.bind_route(routing, route).await? {
                    None => false,
                    Some(Route::Txn(..))
                    | Some(Route::Copy(..))
                    | Some(Route::Set { .. })
                    | Some(Route::Gather { .. }) => {
                        synth_frame(&mut self.out.buf, synth::BIND_COMPLETE);
                        true
                    }
                    Some(Route::Shard(s)) => {
                        let (stmt, frame) = (stmt.clone(), frame.clone());
                        self.one_message(&s, Some(&stmt), &frame, Expect::Bind)
                            .await?
                    }
                    Some(Route::Lookup(_)) => {
                        self.send_error(&PgError::new(
                            codes::INTERNAL_ERROR,
                            "unresolved lookup route",
                        ));
                        false
                    }
                    Some(Route::Multi(shards, _)) => {
                        let (stmt, frame) = (stmt.clone(), frame.clone());
                        self.many_message(
                            &shards,
                            Some(&stmt),
                            &frame,
                            Expect::Bind,
                            MergeMode::FirstOnly,
                        )
                        .await?
                    }
                    Some(Route::Owned(o)) => {
                        let (stmt, frame) = (stmt.clone(), frame.clone());
                        self.many_message(
                            &o.shards,
                            Some(&stmt),
                            &frame,
                            Expect::Bind,
                            MergeMode::FirstOnly,
                        )
                        .await?
                    }
                },
                Item::DescribePortal { frame, route } | Item::ClosePortal { frame, route } => {
                    let expect = if matches!(it, Item::ClosePortal { .. }) {
                        Expect::Close
                    } else {
                        Expect::DescribePortal
                    };
                    match effective(route.as_ref()) {
                        Some(Route::Gather {
                            shards,
                            plan,
                            stmt,
                            bind,
                        }) if expect == Expect::DescribePortal => {
                            let formats = Bind::decode(bind.get(5..).unwrap_or_default())
                                .map(|b| b.result_formats)
                                .unwrap_or_default();
                            let (shard, plan, stmt) = (
                                shards.first().cloned().unwrap_or_default(),
                                plan.clone(),
                                stmt.clone(),
                            );
                            self.gather_describe(&shard, &plan, &stmt, Some(formats))
                                .await?
                        }
                        Some(Route::Shard(s)) => {
                            let frame = frame.clone();
                            self.one_message(&s, None, &frame, expect).await?
                        }
                        Some(Route::Multi(shards, _)) => {
                            let frame = frame.clone();
                            self.many_message(&shards, None, &frame, expect, MergeMode::FirstOnly)
                                .await?
                        }
                        Some(Route::Owned(o)) => {
                            let frame = frame.clone();
                            self.many_message(&o.shards, None, &frame, expect, MergeMode::FirstOnly)
                                .await?
                        }
                        _ => {
                            let b = if expect == Expect::Close {
                                synth::CLOSE_COMPLETE
                            } else {
                                synth::NO_DATA
                            };
                            synth_frame(&mut self.out.buf, b);
                            true
                        }
                    }
                }
                Item::Execute { frame, route } => match effective(route.as_ref()) {
                    Some(Route::Shard(s)) => {
                        let frame = frame.clone();
                        self.one_message(&s, None, &frame, Expect::Execute).await?
                    }
                    Some(Route::Multi(shards, mode)) => {
                        let frame = frame.clone();
                        self.many_message(&shards, None, &frame, Expect::Execute, mode)
                            .await?
                    }
                    Some(Route::Owned(o)) => {
                        let frame = frame.clone();
                        self.owned_execute(routing, &o, &frame).await?
                    }
                    Some(Route::Gather {
                        shards,
                        plan,
                        stmt,
                        bind,
                    }) => {
                        let max_rows = Execute::decode(frame.get(5..).unwrap_or_default())
                            .map(|e| e.max_rows)
                            .unwrap_or(0);
                        self.gather_extended(&shards, &plan, &stmt, &bind, max_rows)
                            .await?
                    }
                    Some(Route::Txn(t, sql)) => self.txn_command(&t, &sql).await?,
                    Some(Route::Copy(c, sql)) => {
                        let routing = self.state.routing();
                        self.copy(&routing, &sql, &c).await?
                    }
                    Some(Route::Set {
                        sql,
                        local,
                        reset_all,
                    }) => self.set_command(&sql, local, reset_all).await?,
                    Some(Route::Lookup(_)) | None => {
                        // A pending route whose Bind failed.
                        self.send_error(&PgError::new(
                            codes::INVALID_CURSOR_NAME,
                            "portal was not bound",
                        ));
                        false
                    }
                },
                Item::Sync => {
                    let parts: Vec<_> = self
                        .held
                        .iter()
                        .map(|h| {
                            let mut b = BytesMut::new();
                            fe::sync(&mut b);
                            (
                                h.conn.shard.to_string(),
                                b.freeze(),
                                VecDeque::from([Slot::Swallow(Expect::Sync)]),
                            )
                        })
                        .collect();
                    if !parts.is_empty() {
                        self.exchange_many(parts, MergeMode::FirstOnly).await?;
                    }
                    true
                }
            };
            if !ok {
                failed = true;
                self.skip_until_sync = true;
            }
        }
        Ok(())
    }

    /// The route a Bind runs with: a pending lookup route is resolved now
    /// (the lookup table is read in batch order, after the batch's earlier
    /// statements). None if that failed (error sent).
    async fn bind_route(&mut self, routing: &Routing, route: &Route) -> Result<Option<Route>, End> {
        match route {
            Route::Lookup(p) => {
                let p = p.clone();
                self.resolve_lookup(routing, &p).await
            }
            r => Ok(Some(r.clone())),
        }
    }

    /// Sends one message (plus Flush) to `shard`, preparing `stmt` first if
    /// needed, and forwards its response.
    async fn one_message(
        &mut self,
        shard: &str,
        stmt: Option<&ClientStmt>,
        frame: &[u8],
        expect: Expect,
    ) -> Result<bool, End> {
        let idx = match self.acquire(shard).await {
            Ok(i) => i,
            Err(e) => {
                self.send_error(&e);
                return Ok(false);
            }
        };
        let mut slots = VecDeque::new();
        self.prelude(idx, &mut slots);
        if let Some(s) = stmt {
            self.ensure_prepared(idx, s, &mut slots);
        }
        let conn = &mut self.held[idx].conn;
        conn.out.extend_from_slice(frame);
        fe::flush(&mut conn.out);
        slots.push_back(Slot::Forward(expect));
        let r = match conn.flush().await {
            Ok(()) => exchange::run(conn, &mut slots, &mut self.out, &mut Direct).await,
            Err(e) => Err(ExchangeError::Backend(e)),
        };
        if let (Some(s), Ok(o)) = (stmt, &r) {
            if o.error {
                if let Some(h) = self.held.get_mut(idx) {
                    h.conn.prepared.remove(&s.id);
                }
            }
        }
        self.after_exchange(idx, r)
    }

    /// Sends one message (plus Flush) to several shards and merges.
    pub(crate) async fn many_message(
        &mut self,
        shards: &[String],
        stmt: Option<&ClientStmt>,
        frame: &[u8],
        expect: Expect,
        mode: MergeMode,
    ) -> Result<bool, End> {
        let mut parts = Vec::with_capacity(shards.len());
        for s in shards {
            let idx = match self.acquire(s).await {
                Ok(i) => i,
                Err(e) => {
                    self.send_error(&e);
                    return Ok(false);
                }
            };
            let mut slots = VecDeque::new();
            let mut b = BytesMut::new();
            if let Some(st) = stmt {
                let conn = &mut self.held[idx].conn;
                if !conn.prepared.contains(&st.id) {
                    b.extend_from_slice(&st.parse_frame);
                    slots.push_back(Slot::Swallow(Expect::Parse(Some(st.id))));
                }
            }
            b.extend_from_slice(frame);
            fe::flush(&mut b);
            slots.push_back(Slot::Forward(expect));
            parts.push((s.clone(), b.freeze(), slots));
        }
        self.exchange_many_with(parts, MergeState::new(mode)).await
    }
}

fn synth_frame(out: &mut BytesMut, b: &[u8]) {
    out.extend_from_slice(b);
}

/// The gather plan of a statement, if it is a merged multi-shard SELECT.
fn stmt_gather(stmt: &ClientStmt) -> Option<Arc<GatherPlan>> {
    match &*stmt.plan {
        Plan::Scatter {
            merge: Merge::Gather(g),
            ..
        } => Some(g.clone()),
        _ => None,
    }
}
