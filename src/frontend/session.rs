//! One client connection after startup: the message loop, backend
//! acquisition in transaction pooling mode, the router-level transaction
//! block, and the exchange helpers shared by the simple and extended query
//! paths.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use foldhash::{HashMap, HashMapExt};
use postgres_protocol::message::frontend as fe;

use crate::backend::{PoolError, PooledConn};
use crate::metrics::RouteKind;
use crate::protocol::error::codes;
use crate::protocol::{synth, Frame, FrameReader, PgError, ProtocolError};
use crate::state::{Phase, RouterState};

use super::cancel::{CancelGuard, CancelKey, CancelSlot};
use super::client::ClientOut;
use super::exchange::{self, Direct, ExchangeError, Expect, Slot};
use super::extended::{Batch, ClientStmt, Route};
use super::merge::{MergeMode, MergeState};

/// Prepared statements kept per backend connection before it is reset.
const MAX_PREPARED_PER_BACKEND: usize = 2000;

/// How a client request ended.
#[derive(Debug)]
pub enum End {
    /// The client disconnected or sent Terminate.
    Closed,
    /// The client connection failed (I/O or fatal protocol error).
    Failed(ProtocolError),
}

impl From<ProtocolError> for End {
    fn from(e: ProtocolError) -> Self {
        match e {
            ProtocolError::Eof => End::Closed,
            e => End::Failed(e),
        }
    }
}

/// A backend connection pinned to this client.
pub struct Held {
    /// The connection.
    pub conn: PooledConn,
    /// BEGIN was sent on it for the current transaction block.
    pub began: bool,
    /// A statement classified as a write ran on it in the current block
    /// (a two-phase commit participant).
    pub wrote: bool,
    /// Keeps the backend in the client's cancel slot while held.
    pub cancel: CancelGuard,
}

/// The router-level transaction block (BEGIN is sent lazily to each shard
/// the block touches).
pub struct Block {
    /// Statement that opened the block, replayed on each participant.
    pub begin_sql: String,
    /// An error happened in the block (client status `E`).
    pub failed: bool,
    /// Opened by the router: a multi-statement simple query, or one
    /// statement writing on several shards outside a transaction block.
    pub implicit: bool,
    /// Savepoints and settings in effect, in the order they ran; replayed
    /// after BEGIN on participants that join the block later, so every
    /// participant has the same savepoint stack and settings.
    pub ops: Vec<BlockOp>,
}

/// A statement whose effect lasts inside the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockOp {
    /// `SAVEPOINT name` (the name as written).
    Savepoint(String),
    /// A SET / RESET run in the block (`SET LOCAL`, `SET TRANSACTION`,
    /// `SET CONSTRAINTS` or a session-level change). `session` changes
    /// outlive the block: they are recorded in the session's settings when
    /// it commits (PostgreSQL reverts them on rollback).
    Set {
        /// The statement as the client wrote it.
        sql: String,
        /// Session-level (not LOCAL / TRANSACTION / CONSTRAINTS).
        session: bool,
        /// RESET ALL.
        reset_all: bool,
    },
}

impl Block {
    /// A block opened by `begin_sql`.
    pub fn new(begin_sql: impl Into<String>, implicit: bool) -> Block {
        Block {
            begin_sql: begin_sql.into(),
            failed: false,
            implicit,
            ops: Vec::new(),
        }
    }

    /// The block that `COMMIT AND CHAIN` / `ROLLBACK AND CHAIN` opens: the
    /// same BEGIN and the same `SET TRANSACTION` characteristics
    /// (isolation level, access mode, deferrable), as PostgreSQL.
    pub fn chained(&self) -> Block {
        let mut b = Block::new(self.begin_sql.clone(), false);
        b.ops = self
            .ops
            .iter()
            .filter(|op| match op {
                BlockOp::Set { sql, .. } => is_transaction_characteristics(sql),
                BlockOp::Savepoint(_) => false,
            })
            .cloned()
            .collect();
        b
    }

    /// What a participant joining the block runs: BEGIN, then the open
    /// savepoints and the settings, in order (one simple query).
    pub fn begin_replay(&self) -> String {
        let mut sql = self.begin_sql.clone();
        for op in &self.ops {
            match op {
                BlockOp::Savepoint(name) => {
                    sql.push_str("; SAVEPOINT ");
                    sql.push_str(name);
                }
                BlockOp::Set { sql: s, .. } => {
                    sql.push_str("; ");
                    sql.push_str(s.trim().trim_end_matches(';'));
                }
            }
        }
        sql
    }

    /// Index in `ops` of the innermost savepoint whose name compares equal
    /// to `key` (PostgreSQL allows duplicate names).
    pub fn savepoint_pos(&self, key: &str, name_key: impl Fn(&str) -> String) -> Option<usize> {
        self.ops
            .iter()
            .rposition(|op| matches!(op, BlockOp::Savepoint(n) if name_key(n) == key))
    }

    /// RELEASE of the savepoint at `i`: it and the savepoints opened after
    /// it are gone; settings made after it stay in effect.
    pub fn release(&mut self, i: usize) {
        let mut k = 0;
        self.ops.retain(|op| {
            let keep = k < i || !matches!(op, BlockOp::Savepoint(_));
            k += 1;
            keep
        });
    }

    /// ROLLBACK TO the savepoint at `i`: everything after it is undone; the
    /// savepoint stays.
    pub fn rollback_to(&mut self, i: usize) {
        self.ops.truncate(i + 1);
        self.failed = false;
    }
}

/// `SET TRANSACTION ISOLATION LEVEL / READ ONLY / READ WRITE /
/// [NOT] DEFERRABLE` (not `SET TRANSACTION SNAPSHOT`).
fn is_transaction_characteristics(sql: &str) -> bool {
    let mut w = sql.split_whitespace().map(|w| w.to_ascii_lowercase());
    w.next().as_deref() == Some("set")
        && w.next().as_deref() == Some("transaction")
        && w.next().is_some_and(|x| !x.starts_with("snapshot"))
}

/// Per-client session state.
pub struct Session {
    pub(crate) state: Arc<RouterState>,
    /// Session worker this client runs on (selects the backend pools).
    pub(crate) worker: usize,
    pub(crate) reader: FrameReader<super::client::ClientRead>,
    pub(crate) out: ClientOut,
    pub(crate) held: Vec<Held>,
    pub(crate) block: Option<Block>,
    /// `SET` statements to replay on backends, in order, by lower-case name.
    pub(crate) settings: Vec<(String, String)>,
    pub(crate) settings_hash: u64,
    pub(crate) statements: HashMap<String, Arc<ClientStmt>>,
    pub(crate) batch: Batch,
    /// Routes of the portals bound in the current transaction.
    pub(crate) portals: HashMap<String, Route>,
    /// After an error in an extended-protocol batch, messages are skipped
    /// until Sync (PostgreSQL docs §55.2.3).
    pub(crate) skip_until_sync: bool,
    /// The statement being run is classified as a write: connections it
    /// acquires become two-phase commit participants.
    pub(crate) cur_write: bool,
    /// While set, merged multi-shard results' final CommandComplete (or
    /// error) is written here instead of to the client: an implicit
    /// distributed transaction releases it after its commit.
    pub(crate) deferred: Option<BytesMut>,
    /// Row count of the last multi-shard exchange's merged command tag.
    pub(crate) last_count: Option<u64>,
    /// An extended-protocol batch is running: router-injected queries use
    /// the extended protocol without Sync (see `inject.rs`).
    pub(crate) in_extended: bool,
    /// An extended-protocol batch ended without Sync (Flush, COPY): a held
    /// connection may be waiting for Sync, so the next Sync goes to all.
    pub(crate) unsynced: bool,
    /// The client's cancel slot (backends held) and key registration.
    pub(crate) cancel: (Arc<CancelSlot>, CancelKey),
    /// When the current request's first message arrived.
    req_start: Option<Instant>,
    /// `held` indices (capped at 63) the current request used: its shards.
    pub(crate) touched: u64,
    /// Shards the current request used, kept only while debug logging is
    /// on (for the request's log event).
    traced_shards: Vec<Arc<str>>,
}

impl Session {
    /// A session for an authenticated client; `cancel` is its cancel slot
    /// and key from [`super::cancel::CancelRegistry::register`].
    pub fn new(
        state: Arc<RouterState>,
        worker: usize,
        reader: FrameReader<super::client::ClientRead>,
        out: ClientOut,
        settings: Vec<(String, String)>,
        cancel: (Arc<CancelSlot>, CancelKey),
    ) -> Session {
        let mut s = Session {
            state,
            worker,
            reader,
            out,
            held: Vec::new(),
            block: None,
            settings,
            settings_hash: 0,
            statements: HashMap::new(),
            batch: Batch::default(),
            portals: HashMap::new(),
            skip_until_sync: false,
            cur_write: false,
            deferred: None,
            last_count: None,
            in_extended: false,
            unsynced: false,
            cancel,
            req_start: None,
            touched: 0,
            traced_shards: Vec::new(),
        };
        s.rehash_settings();
        s
    }

    /// Runs the message loop until the client leaves.
    pub async fn run(mut self) -> End {
        let end = match self.run_inner().await {
            Ok(()) => End::Closed,
            Err(e) => e,
        };
        self.held.clear();
        end
    }

    /// Waits for the client's next message. While waiting, ends the
    /// session (FATAL, then `End::Closed`) when the router drains and the
    /// client is between transactions, when the drain deadline passed, or
    /// when the client stays idle in a transaction longer than
    /// `limits.idle_in_transaction_timeout_ms` (25P03; its backends are
    /// dropped, which rolls the transaction back).
    async fn next_frame(&mut self) -> Result<Result<Frame, ProtocolError>, End> {
        if self.reader.buffered() > 0 {
            return Ok(self.reader.next().await);
        }
        loop {
            let phase = self.state.phase();
            let between =
                self.block.is_none() && self.held.is_empty() && self.batch.frames.is_empty();
            if phase == Phase::Closing || (phase == Phase::Draining && between) {
                return Err(self.terminate(PgError::admin_shutdown()).await);
            }
            let idle_limit = match self.block {
                Some(_) => self.state.limits().idle_in_transaction_timeout_ms,
                None => 0,
            };
            let idle = async move {
                if idle_limit == 0 {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(std::time::Duration::from_millis(idle_limit)).await;
            };
            tokio::select! {
                r = self.reader.next() => return Ok(r),
                // RouterState::set_phase wakes every waiting session.
                _ = self.cancel.0.wake.notified() => continue,
                _ = idle => {
                    return Err(self
                        .terminate(PgError::fatal(
                            codes::IDLE_IN_TRANSACTION_TIMEOUT,
                            "terminating connection due to idle-in-transaction timeout",
                        ))
                        .await)
                }
            }
        }
    }

    /// Sends a FATAL error and ends the session.
    async fn terminate(&mut self, e: PgError) -> End {
        tracing::debug!(code = e.code, "closing client session: {}", e.message);
        self.send_error(&e);
        let _ = self.out.flush().await;
        End::Closed
    }

    async fn run_inner(&mut self) -> Result<(), End> {
        loop {
            if self.reader.buffered() == 0 && !self.out.buf.is_empty() {
                self.out.flush().await?;
            }
            let f = match self.next_frame().await? {
                Ok(f) => f,
                Err(ProtocolError::Eof) => return Err(End::Closed),
                Err(e @ ProtocolError::TooLarge { .. }) | Err(e @ ProtocolError::Malformed(_)) => {
                    synth::error(
                        &mut self.out.buf,
                        &PgError::fatal(codes::PROTOCOL_VIOLATION, e.to_string()),
                    );
                    let _ = self.out.flush().await;
                    return Err(End::Failed(e));
                }
                Err(e) => return Err(e.into()),
            };
            if self.req_start.is_none() {
                if self.state.is_paused() && self.block.is_none() && self.held.is_empty() {
                    self.wait_resumed().await?;
                }
                self.req_start = Some(Instant::now());
                self.set_activity(super::cancel::ACTIVITY_ACTIVE);
            }
            match f.tag {
                b'Q' => {
                    self.skip_until_sync = false;
                    self.on_query(f).await?;
                    self.finish_request();
                    let st = self.client_status();
                    synth::ready(&mut self.out.buf, st);
                    self.record_request();
                }
                b'P' | b'B' | b'D' | b'C' => {
                    if !self.skip_until_sync {
                        self.batch.frames.push(f);
                    }
                }
                b'E' => {
                    if !self.skip_until_sync {
                        self.batch.frames.push(f);
                        // COPY needs its response before the client sends
                        // Sync (it waits for CopyInResponse): run now.
                        if self.batch_executes_copy() {
                            self.run_batch(false).await?;
                        }
                    }
                }
                b'H' => {
                    if !self.skip_until_sync {
                        self.batch.frames.push(f);
                        self.run_batch(false).await?;
                    }
                    self.out.flush().await?;
                }
                b'S' => {
                    self.batch.frames.push(f);
                    self.run_batch(true).await?;
                    if self.block.as_ref().is_some_and(|b| b.implicit) {
                        // The implicit distributed transaction of a
                        // multi-shard write ends at Sync, like PostgreSQL's
                        // implicit transaction of an extended-protocol batch.
                        self.end_block(true).await?;
                    }
                    self.skip_until_sync = false;
                    self.finish_request();
                    let st = self.client_status();
                    synth::ready(&mut self.out.buf, st);
                    self.record_request();
                }
                b'X' => {
                    // Replies to pipelined messages before Terminate are
                    // still owed to the client.
                    let _ = self.out.flush().await;
                    return Err(End::Closed);
                }
                // CopyData/CopyDone/CopyFail outside COPY are ignored, as PostgreSQL does.
                b'd' | b'c' | b'f' => {}
                other => {
                    let e = PgError::fatal(
                        codes::PROTOCOL_VIOLATION,
                        format!("invalid frontend message type {}", other),
                    );
                    synth::error(&mut self.out.buf, &e);
                    let _ = self.out.flush().await;
                    return Err(End::Failed(ProtocolError::Malformed(e.message)));
                }
            }
        }
    }

    /// Holds a new transaction while the admin console's PAUSE is in force
    /// (ends the session if the router drains meanwhile).
    async fn wait_resumed(&mut self) -> Result<(), End> {
        let state = self.state.clone();
        loop {
            let resumed = state.resumed();
            if !state.is_paused() {
                return Ok(());
            }
            if state.phase() != Phase::Running {
                return Err(self.terminate(PgError::admin_shutdown()).await);
            }
            tokio::select! {
                _ = resumed => {}
                _ = self.cancel.0.wake.notified() => {}
            }
        }
    }

    fn set_activity(&self, a: u8) {
        self.cancel
            .0
            .activity
            .store(a, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records the request that just got its ReadyForQuery in the metrics:
    /// route kind by the shards it used, latency from its first message.
    fn record_request(&mut self) {
        let kind = RouteKind::for_shards(self.touched.count_ones());
        let elapsed = self
            .req_start
            .take()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        self.state.metrics.record(self.worker, kind, elapsed);
        self.touched = 0;
        self.set_activity(match self.client_status() {
            b'T' => super::cancel::ACTIVITY_IN_TRANSACTION,
            b'E' => super::cancel::ACTIVITY_FAILED_TRANSACTION,
            _ => super::cancel::ACTIVITY_IDLE,
        });
        if tracing::enabled!(tracing::Level::DEBUG) {
            // Inside the client's span (client id, address, user).
            tracing::debug!(
                route = kind.label(),
                shards = %self.traced_shards.join(","),
                elapsed_us = elapsed.as_micros() as u64,
                "request"
            );
            self.traced_shards.clear();
        }
    }

    /// True when the last Bind of the pending batch binds a COPY statement.
    fn batch_executes_copy(&self) -> bool {
        let Some(b) = self.batch.frames.iter().rev().find(|f| f.tag == b'B') else {
            return false;
        };
        let Ok(name) = crate::protocol::frontend::Bind::statement_name(b.body()) else {
            return false;
        };
        self.statements
            .get(name)
            .is_some_and(|s| matches!(*s.plan, crate::plan::Plan::Copy(_)))
    }

    /// Client-visible transaction status for ReadyForQuery.
    pub(crate) fn client_status(&self) -> u8 {
        match &self.block {
            None => b'I',
            Some(b) if b.failed => b'E',
            Some(_) => b'T',
        }
    }

    /// Releases backends at the end of a request when no block is open.
    pub(crate) fn finish_request(&mut self) {
        if self.block.is_none() {
            self.held.clear();
            self.portals.clear();
        }
    }

    /// Marks the open block failed after an error.
    pub(crate) fn note_error(&mut self) {
        if let Some(b) = &mut self.block {
            b.failed = true;
        }
    }

    /// Forwards a shard's ErrorResponse frame (already given its shard
    /// DETAIL) to the client, counting it and failing the open block.
    pub(crate) fn forward_error_frame(&mut self, frame: &[u8]) {
        crate::metrics::note_error_body(frame.get(5..).unwrap_or_default());
        self.out.buf.extend_from_slice(frame);
        self.note_error();
    }

    /// Sends an error generated by the router.
    pub(crate) fn send_error(&mut self, e: &PgError) {
        crate::metrics::note_error(e.code.as_bytes());
        synth::error(&mut self.out.buf, e);
        self.note_error();
    }

    /// Index into `held` of a connection to `shard`, checking one out of the
    /// shard's pool if needed.
    /// When the current statement writes inside a block, the connection
    /// becomes a writing participant; with `transaction_mode = single` a
    /// second writing shard is refused (0A000).
    pub(crate) async fn acquire(&mut self, shard: &str) -> Result<usize, PgError> {
        if self.cur_write && self.block.is_some() {
            self.check_single_writer(shard)?;
        }
        let i = self.acquire_conn(shard).await?;
        self.touched |= 1 << i.min(63);
        if tracing::enabled!(tracing::Level::DEBUG) {
            let name = &self.held[i].conn.shard;
            if !self.traced_shards.contains(name) {
                self.traced_shards.push(name.clone());
            }
        }
        if self.cur_write {
            self.held[i].wrote = true;
        }
        Ok(i)
    }

    fn check_single_writer(&self, shard: &str) -> Result<(), PgError> {
        if self.state.txn.mode != crate::txn::TransactionMode::Single {
            return Ok(());
        }
        if let Some(h) = self
            .held
            .iter()
            .find(|h| h.wrote && &*h.conn.shard != shard)
        {
            return Err(PgError::unsupported(format!(
                "transaction_mode = single: this transaction already wrote on shard \"{}\" and cannot write on shard \"{shard}\"",
                h.conn.shard
            ))
            .with_hint("commit first, or set transactions.mode = \"twopc\" in the router config"));
        }
        Ok(())
    }

    async fn acquire_conn(&mut self, shard: &str) -> Result<usize, PgError> {
        if let Some(i) = self.held.iter().position(|h| &*h.conn.shard == shard) {
            return Ok(i);
        }
        let pool = self.state.pool(shard, self.worker).ok_or_else(|| {
            PgError::new(
                codes::CONNECTION_FAILURE,
                format!("shard \"{shard}\" is not configured"),
            )
        })?;
        let conn = pool.get().await.map_err(|e| match e {
            // A statement that waited too long, like statement_timeout; the
            // client's connection stays usable.
            PoolError::Timeout { .. } => PgError::new(codes::QUERY_CANCELED, e.to_string())
                .with_hint("raise backend.pool_size or backend.checkout_timeout_ms"),
            PoolError::Down { .. } => PgError::new(codes::CONNECTION_FAILURE, e.to_string())
                .with_hint("the router reconnects by itself when the shard is back; queries that do not need this shard keep working"),
            PoolError::Backend(_) => PgError::new(codes::CONNECTION_FAILURE, e.to_string()),
        })?;
        let cancel = self.cancel.0.hold(&pool, conn.pid, conn.secret);
        self.held.push(Held {
            conn,
            began: false,
            wrote: false,
            cancel,
        });
        Ok(self.held.len() - 1)
    }

    /// Queues what a held connection needs before the client's messages:
    /// session settings replay, statement-cache reset, lazy BEGIN.
    pub(crate) fn prelude(&mut self, idx: usize, slots: &mut VecDeque<Slot>) {
        let h = &mut self.held[idx];
        let conn = &mut *h.conn;
        if conn.prepared.len() > MAX_PREPARED_PER_BACKEND {
            let _ = fe::query("DEALLOCATE ALL", &mut conn.out);
            conn.prepared.clear();
            slots.push_back(Slot::Swallow(Expect::Query));
        }
        if conn.settings_hash != self.settings_hash {
            let mut sql = String::from("RESET ALL;");
            for (_, s) in &self.settings {
                sql.push_str(s);
                sql.push(';');
            }
            let _ = fe::query(&sql, &mut conn.out);
            conn.settings_hash = self.settings_hash;
            slots.push_back(Slot::Swallow(Expect::Query));
        }
        if let Some(b) = &self.block {
            if !h.began {
                // A late participant gets the open savepoints and the
                // block's settings too, so ROLLBACK TO / RELEASE and
                // SET LOCAL hold on every participant.
                let sql = if b.ops.is_empty() {
                    std::borrow::Cow::Borrowed(b.begin_sql.as_str())
                } else {
                    std::borrow::Cow::Owned(b.begin_replay())
                };
                let _ = fe::query(&sql, &mut conn.out);
                h.began = true;
                slots.push_back(Slot::Swallow(Expect::Query));
            }
        }
    }

    /// Picks the shard for a statement any shard can answer: a pinned one if
    /// any, else round-robin.
    pub(crate) fn any_shard(&self) -> Result<String, PgError> {
        if let Some(h) = self.held.first() {
            return Ok(h.conn.shard.to_string());
        }
        self.state
            .any_shard()
            .ok_or_else(|| PgError::new(codes::CONNECTION_FAILURE, "no shards are configured"))
    }

    /// Sends `msgs` (already encoded client messages, with their `slots`) to
    /// `shard` and forwards the responses. Returns false if the statement
    /// failed (error already sent to the client).
    pub(crate) async fn exchange_one(
        &mut self,
        shard: &str,
        msgs: &[u8],
        user_slots: VecDeque<Slot>,
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
        if slots.is_empty() {
            slots = user_slots;
        } else {
            slots.extend(user_slots);
        }
        let conn = &mut self.held[idx].conn;
        conn.out.extend_from_slice(msgs);
        let r = match conn.flush().await {
            Ok(()) => exchange::run(conn, &mut slots, &mut self.out, &mut Direct).await,
            Err(e) => Err(ExchangeError::Backend(e)),
        };
        self.after_exchange(idx, r)
    }

    /// Common handling of an exchange's result on held connection `idx`.
    pub(crate) fn after_exchange(
        &mut self,
        idx: usize,
        r: Result<exchange::Outcome, ExchangeError>,
    ) -> Result<bool, End> {
        match r {
            Ok(o) => {
                if o.error {
                    self.note_error();
                }
                Ok(!o.error)
            }
            Err(ExchangeError::Client(e)) => Err(e.into()),
            Err(ExchangeError::Backend(e)) => {
                self.backend_lost(idx, &e);
                Ok(false)
            }
        }
    }

    /// Held connection `idx` failed: it is marked broken (never pooled
    /// again), dropped, and the client gets 08006 naming the shard.
    pub(crate) fn backend_lost(&mut self, idx: usize, e: &ProtocolError) {
        let shard = self.held[idx].conn.shard.clone();
        self.held[idx].conn.broken = true;
        self.held.remove(idx);
        self.send_error(&lost_connection(&shard, e));
    }

    /// Sends per-shard messages to several shards at once and merges the
    /// responses. `parts` = (shard, encoded messages, slots). Returns false
    /// if any shard failed (the error was sent).
    pub(crate) async fn exchange_many(
        &mut self,
        parts: Vec<(String, Bytes, VecDeque<Slot>)>,
        mode: MergeMode,
    ) -> Result<bool, End> {
        self.exchange_many_with(parts, MergeState::new(mode)).await
    }

    /// [`Session::exchange_many`] with a prepared merge state.
    pub(crate) async fn exchange_many_with(
        &mut self,
        parts: Vec<(String, Bytes, VecDeque<Slot>)>,
        mut merge: MergeState,
    ) -> Result<bool, End> {
        let mut idxs: Vec<usize> = Vec::with_capacity(parts.len());
        let mut all_slots = Vec::with_capacity(parts.len());
        for (shard, msgs, user_slots) in parts {
            let idx = match self.acquire(&shard).await {
                Ok(i) => i,
                Err(e) => {
                    // Nothing was sent yet on shards acquired so far except
                    // preludes queued below; send the error and stop.
                    for &i in &idxs {
                        let c = &mut self.held[i].conn;
                        c.out.clear();
                        c.broken = true;
                    }
                    self.send_error(&e);
                    return Ok(false);
                }
            };
            let mut slots = VecDeque::with_capacity(user_slots.len() + 2);
            self.prelude(idx, &mut slots);
            slots.extend(user_slots);
            self.held[idx].conn.out.extend_from_slice(&msgs);
            merge.shard_names.push(shard);
            idxs.push(idx);
            all_slots.push(slots);
        }
        let mut lost: Option<(usize, ProtocolError)> = None;
        for &i in &idxs {
            if let Err(e) = self.held[i].conn.flush().await {
                lost.get_or_insert((i, e));
            }
        }
        for (n, (&i, slots)) in idxs.iter().zip(all_slots.iter_mut()).enumerate() {
            if lost.as_ref().is_some_and(|(j, _)| *j == i) {
                continue;
            }
            let conn = &mut self.held[i].conn;
            let mut sink = merge.sink(n);
            match exchange::run(conn, slots, &mut self.out, &mut sink).await {
                Ok(_) => {}
                Err(ExchangeError::Client(e)) => return Err(e.into()),
                Err(ExchangeError::Backend(e)) => {
                    lost.get_or_insert((i, e));
                }
            }
        }
        if let Some((i, e)) = lost {
            let shard = self.held[i].conn.shard.clone();
            self.held.retain(|h| !h.conn.broken);
            self.send_error(&lost_connection(&shard, &e));
            return Ok(false);
        }
        Ok(self.finish_merge(merge))
    }

    /// Writes a merge's final CommandComplete or error (to the held-back
    /// buffer while an implicit distributed transaction runs); false if a
    /// shard failed.
    pub(crate) fn finish_merge(&mut self, mut merge: MergeState) -> bool {
        self.last_count = merge.row_count();
        let ok = match &mut self.deferred {
            Some(d) => merge.finish(d),
            None => merge.finish(&mut self.out.buf),
        };
        if !ok {
            self.note_error();
        }
        ok
    }
}

/// 08006 for a lost connection to `shard` (named in DETAIL too).
/// The error a client gets when a held backend connection failed: 08006,
/// or the shard's own 57P01/57P02/57P03 when it closed the connection
/// because it is shutting down or restarting. Severity ERROR: the client's
/// connection to the router stays usable.
fn lost_connection(shard: &str, e: &ProtocolError) -> PgError {
    let code = match e {
        ProtocolError::ServerClosed { code, .. } => match code.as_str() {
            "57P01" => codes::ADMIN_SHUTDOWN,
            "57P02" => codes::CRASH_SHUTDOWN,
            "57P03" => codes::CANNOT_CONNECT_NOW,
            _ => codes::CONNECTION_FAILURE,
        },
        _ => codes::CONNECTION_FAILURE,
    };
    PgError::new(code, format!("lost connection to shard \"{shard}\": {e}"))
        .with_detail(format!("shard: {shard}"))
}
