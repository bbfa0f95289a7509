//! What an executor gets of the client's session ([`ExecCtx`]): the backend
//! connections the transaction holds, the client writer, the transaction
//! block and session settings it may change, and the router's shared state.
//! Executors never see the session's message loop, its prepared statements
//! or its portals.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;
use postgres_protocol::message::frontend as fe;

use crate::backend::{PoolError, PooledConn};
use crate::protocol::client_io::ClientOut;
use crate::protocol::error::codes;
use crate::protocol::{synth, PgError, ProtocolError};
use crate::state::clients::{CancelGuard, CancelSlot};
use crate::state::RouterState;

use super::block::Block;
use super::exchange::{self, ExchangeError, Expect, Slot};

/// The `tracing` target of the per-request debug event (`request`: route
/// kind, shards, elapsed_us) the session logs; the shards a request uses are
/// collected only while it is enabled.
pub const REQUEST_LOG_TARGET: &str = "pg_router::session";

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

/// The part of a client session executors use and change.
pub struct ExecCtx {
    /// Router-wide shared state.
    pub state: Arc<RouterState>,
    /// Session worker this client runs on (selects the backend pools).
    pub worker: usize,
    /// Buffered writer to the client.
    pub out: ClientOut,
    /// Backend connections pinned to this client (transaction pooling:
    /// released at the end of a request outside a block).
    pub held: Vec<Held>,
    /// The open transaction block, if any.
    pub block: Option<Block>,
    /// `SET` statements to replay on backends, in order, by lower-case name.
    pub settings: Vec<(String, String)>,
    /// Hash of `settings`; a backend whose hash differs gets them replayed.
    pub settings_hash: u64,
    /// The statement being run is classified as a write: connections it
    /// acquires become two-phase commit participants.
    pub cur_write: bool,
    /// While set, merged multi-shard results' final CommandComplete (or
    /// error) is written here instead of to the client: an implicit
    /// distributed transaction releases it after its commit.
    pub deferred: Option<BytesMut>,
    /// Row count of the last multi-shard exchange's merged command tag.
    pub last_count: Option<u64>,
    /// The last gather Execute with a row limit returned that many rows
    /// and answered PortalSuspended (the rest of its result is not kept).
    pub portal_suspended: bool,
    /// The fast path's slot queue, kept between queries for its capacity
    /// (empty between uses).
    pub slot_buf: VecDeque<Slot>,
    /// Shards whose connections the last gather ended with Sync and whose
    /// ReadyForQuery it read: the batch's Sync need not reach them.
    pub gather_synced: Vec<Arc<str>>,
    /// An extended-protocol batch is running: router-injected queries use
    /// the extended protocol without Sync (see `inject.rs`).
    pub in_extended: bool,
    /// Result formats (Bind's encoding: empty = all text) of the RETURNING
    /// rows of an INSERT ... SELECT the router routes: the client's, when
    /// an extended-protocol Execute runs it (`session/insert_select_ext.rs`).
    pub returning_formats: Vec<i16>,
    /// The write gate's grace period this request entered (see `admit.rs`).
    pub gate_period: Option<usize>,
    /// The client's cancel slot: the backends it holds.
    pub cancel: Arc<CancelSlot>,
    /// `held` indices (capped at 63) the current request used: its shards.
    pub touched: u64,
    /// Shards the current request used, kept only while debug logging is
    /// on (for the request's log event).
    pub traced_shards: Vec<Arc<str>>,
    /// Generated sharding key values given to this session's INSERTs.
    pub generated: super::sequence_values::GeneratedValues,
    /// The pools this session checks connections out of.
    pub pools: super::pool_cache::PoolCache,
}

impl ExecCtx {
    /// The context of a new session: nothing held, no block, `settings`
    /// from the startup packet's options.
    pub fn new(
        state: Arc<RouterState>,
        worker: usize,
        out: ClientOut,
        settings: Vec<(String, String)>,
        cancel: Arc<CancelSlot>,
    ) -> ExecCtx {
        let mut c = ExecCtx {
            state,
            worker,
            out,
            held: Vec::new(),
            block: None,
            settings,
            settings_hash: 0,
            cur_write: false,
            deferred: None,
            last_count: None,
            portal_suspended: false,
            slot_buf: VecDeque::new(),
            gather_synced: Vec::new(),
            in_extended: false,
            returning_formats: Vec::new(),
            gate_period: None,
            cancel,
            touched: 0,
            traced_shards: Vec::new(),
            generated: Default::default(),
            pools: Default::default(),
        };
        c.rehash_settings();
        c
    }

    /// Client-visible transaction status for ReadyForQuery.
    pub fn client_status(&self) -> u8 {
        match &self.block {
            None => b'I',
            Some(b) if b.failed => b'E',
            Some(_) => b'T',
        }
    }

    /// Marks the open block failed after an error.
    pub fn note_error(&mut self) {
        if let Some(b) = &mut self.block {
            b.failed = true;
        }
    }

    /// Forwards a shard's ErrorResponse frame (already given its shard
    /// DETAIL) to the client, counting it and failing the open block.
    pub fn forward_error_frame(&mut self, frame: &[u8]) {
        crate::metrics::note_error_body(frame.get(5..).unwrap_or_default());
        self.out.buf.extend_from_slice(frame);
        self.note_error();
    }

    /// Sends an error generated by the router.
    pub fn send_error(&mut self, e: &PgError) {
        crate::metrics::note_error(e.code.as_bytes());
        synth::error(&mut self.out.buf, e);
        self.note_error();
    }

    /// Index into `held` of a connection to `shard`, checking one out of the
    /// shard's pool if needed.
    /// When the current statement writes inside a block, the connection
    /// becomes a writing participant; with `transaction_mode = single` a
    /// second writing shard is refused (0A000). A write is refused (25006)
    /// when the router's catalog lease ran out since the write was admitted
    /// (a checkout can wait): a split job that passed this router once its
    /// lease expired ends its sessions on the source, and this check keeps
    /// a new one from writing there afterwards.
    pub async fn acquire(&mut self, shard: &str) -> Result<usize, PgError> {
        if self.cur_write && self.block.is_some() {
            self.check_single_writer(shard)?;
        }
        let i = self.acquire_conn(shard).await?;
        if self.cur_write && !self.state.gate.lease_valid() {
            return Err(no_lease());
        }
        self.touched |= 1 << i.min(63);
        if tracing::enabled!(target: REQUEST_LOG_TARGET, tracing::Level::DEBUG) {
            let name = &self.held[i].conn.shard;
            if !self.traced_shards.contains(name) {
                self.traced_shards.push(name.clone());
            }
        }
        if self.cur_write && !self.held[i].wrote {
            self.held[i].wrote = true;
            self.held[i].cancel.mark_wrote();
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
        let pool = self
            .pools
            .get(&self.state, shard, self.worker)
            .cloned()
            .ok_or_else(|| {
                PgError::new(
                    codes::CONNECTION_FAILURE,
                    format!("shard \"{shard}\" is not configured"),
                )
            })?;
        let mut conn = pool.get().await.map_err(|e| match e {
            // A statement that waited too long, like statement_timeout; the
            // client's connection stays usable.
            PoolError::Timeout { .. } => PgError::new(codes::QUERY_CANCELED, e.to_string())
                .with_hint("raise backend.pool_size or backend.checkout_timeout_ms"),
            PoolError::Down { .. } => PgError::new(codes::CONNECTION_FAILURE, e.to_string())
                .with_hint("the router reconnects by itself when the shard is back; queries that do not need this shard keep working"),
            PoolError::Backend(_) => PgError::new(codes::CONNECTION_FAILURE, e.to_string()),
        })?;
        if conn.prepared.len() > MAX_PREPARED_PER_BACKEND {
            // The statement cache is reset here, before any message of
            // the request is decided or queued: later, a statement may
            // already be counted as prepared, or a Bind wait for its
            // Execute (the reset would drop both).
            let failure = match conn.simple_rows("DEALLOCATE ALL").await {
                Ok(Ok(_)) => None,
                Ok(Err((code, msg))) => Some(format!("{code}: {msg}")),
                Err(e) => Some(e.to_string()),
            };
            if let Some(why) = failure {
                conn.broken = true;
                return Err(PgError::new(
                    codes::CONNECTION_FAILURE,
                    format!("resetting the statement cache on shard \"{shard}\" failed: {why}"),
                ));
            }
            conn.prepared.clear();
        }
        let cancel = self.cancel.hold(&pool, conn.pid, conn.secret);
        self.held.push(Held {
            conn,
            began: false,
            wrote: false,
            cancel,
        });
        Ok(self.held.len() - 1)
    }

    /// Queues what a held connection needs before the client's messages:
    /// session settings replay, lazy BEGIN.
    pub fn prelude(&mut self, idx: usize, slots: &mut VecDeque<Slot>) {
        let h = &mut self.held[idx];
        let conn = &mut *h.conn;
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
    pub fn any_shard(&self) -> Result<String, PgError> {
        if let Some(h) = self.held.first() {
            return Ok(h.conn.shard.to_string());
        }
        self.state
            .any_shard()
            .ok_or_else(|| PgError::new(codes::CONNECTION_FAILURE, "no shards are configured"))
    }

    /// Common handling of an exchange's result on held connection `idx`.
    pub fn after_exchange(
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
    pub fn backend_lost(&mut self, idx: usize, e: &ProtocolError) {
        let shard = self.held[idx].conn.shard.clone();
        self.held[idx].conn.broken = true;
        self.held.remove(idx);
        self.send_error(&lost_connection(&shard, e));
    }
}

/// 08006 for a lost connection to `shard` (named in DETAIL too).
/// The error a client gets when a held backend connection failed: 08006,
/// or the shard's own 57P01/57P02/57P03 when it closed the connection
/// because it is shutting down or restarting. Severity ERROR: the client's
/// connection to the router stays usable.
pub(crate) fn lost_connection(shard: &str, e: &ProtocolError) -> PgError {
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

/// 25006: the router's catalog lease is not valid, so it writes nothing.
pub(super) fn no_lease() -> PgError {
    PgError::new(
        codes::READ_ONLY_SQL_TRANSACTION,
        "pg-router holds no catalog lease: writes are refused until the catalog is reachable",
    )
    .with_hint("a router that cannot renew its lease in pgrouter.routers cannot know whether a key range has moved; check the catalog database")
}
