//! One client connection after startup: the message loop (PostgreSQL
//! protocol docs §55.2), the client's prepared statements and portals, the
//! pending extended-protocol batch, and the checks made while waiting for
//! the client (drain, idle in transaction, PAUSE). Statements are planned
//! here and handed to the executors ([`crate::exec`]) with the session's
//! [`ExecCtx`].

mod batch;
mod extended;
mod insert_select_ext;
mod simple;
mod statements;
mod subqueries;
mod subqueries_ext;

use std::sync::Arc;
use std::time::Instant;

use foldhash::{HashMap, HashMapExt};

use crate::exec::context::REQUEST_LOG_TARGET;
use crate::exec::message::Route;
use crate::exec::statement::ClientStmt;
use crate::exec::{End, ExecCtx};
use crate::metrics::RouteKind;
use crate::protocol::client_io::{ClientOut, ClientRead};
use crate::protocol::error::codes;
use crate::protocol::{synth, Frame, FrameReader, PgError, ProtocolError};
use crate::state::clients::{self, CancelKey, CancelSlot};
use crate::state::{Phase, RouterState};

/// Client messages waiting for Sync or Flush.
#[derive(Default)]
struct Batch {
    /// Raw frames in arrival order.
    frames: Vec<Frame>,
}

/// Per-client session state.
pub struct Session {
    /// What the executors use and change: held backends, the client
    /// writer, the transaction block, settings.
    ctx: ExecCtx,
    reader: FrameReader<ClientRead>,
    statements: HashMap<String, Arc<ClientStmt>>,
    /// Some statement the session prepared is a COPY (set when one is
    /// kept, never cleared): until then no Execute needs the check for
    /// a COPY that must run before Sync.
    copy_statements: bool,
    batch: Batch,
    /// Routes of the portals bound in the current transaction.
    portals: HashMap<String, Route>,
    /// After an error in an extended-protocol batch, messages are skipped
    /// until Sync (PostgreSQL docs §55.2.3).
    skip_until_sync: bool,
    /// An extended-protocol batch ended without Sync (Flush, COPY): a held
    /// connection may be waiting for Sync, so the next Sync goes to all.
    unsynced: bool,
    /// The client's cancel key registration (removed when the session ends).
    _cancel_key: CancelKey,
    /// When the current request's first message arrived.
    req_start: Option<Instant>,
}

impl Session {
    /// A session for an authenticated client; `cancel` is its cancel slot
    /// and key from [`crate::state::clients::CancelRegistry::register`].
    pub fn new(
        state: Arc<RouterState>,
        worker: usize,
        reader: FrameReader<ClientRead>,
        out: ClientOut,
        settings: Vec<(String, String)>,
        cancel: (Arc<CancelSlot>, CancelKey),
    ) -> Session {
        let (slot, key) = cancel;
        Session {
            ctx: ExecCtx::new(state, worker, out, settings, slot),
            reader,
            statements: HashMap::new(),
            copy_statements: false,
            batch: Batch::default(),
            portals: HashMap::new(),
            skip_until_sync: false,
            unsynced: false,
            _cancel_key: key,
            req_start: None,
        }
    }

    /// Runs the message loop until the client leaves.
    pub async fn run(mut self) -> End {
        let end = match self.run_inner().await {
            Ok(()) => End::Closed,
            Err(e) => e,
        };
        self.ctx.held.clear();
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
            let phase = self.ctx.state.phase();
            let between = self.ctx.block.is_none()
                && self.ctx.held.is_empty()
                && self.batch.frames.is_empty();
            if phase == Phase::Closing || (phase == Phase::Draining && between) {
                return Err(self.terminate(PgError::admin_shutdown()).await);
            }
            let idle_limit = match self.ctx.block {
                Some(_) => self.ctx.state.limits().idle_in_transaction_timeout_ms,
                None => 0,
            };
            let idle = async move {
                if idle_limit == 0 {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(std::time::Duration::from_millis(idle_limit)).await;
            };
            // Biased: the client's message first, and no random branch
            // order to draw on every request.
            tokio::select! {
                biased;
                r = self.reader.next() => return Ok(r),
                // RouterState::set_phase wakes every waiting session.
                _ = self.ctx.cancel.wake.wait() => continue,
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
        self.ctx.send_error(&e);
        let _ = self.ctx.out.flush().await;
        End::Closed
    }

    async fn run_inner(&mut self) -> Result<(), End> {
        loop {
            if self.reader.buffered() == 0 && !self.ctx.out.buf.is_empty() {
                self.ctx.out.flush().await?;
            }
            let f = match self.next_frame().await? {
                Ok(f) => f,
                Err(ProtocolError::Eof) => return Err(End::Closed),
                Err(e @ ProtocolError::TooLarge { .. }) | Err(e @ ProtocolError::Malformed(_)) => {
                    synth::error(
                        &mut self.ctx.out.buf,
                        &PgError::fatal(codes::PROTOCOL_VIOLATION, e.to_string()),
                    );
                    let _ = self.ctx.out.flush().await;
                    return Err(End::Failed(e));
                }
                Err(e) => return Err(e.into()),
            };
            if self.req_start.is_none() {
                if self.ctx.state.is_paused()
                    && self.ctx.block.is_none()
                    && self.ctx.held.is_empty()
                {
                    self.wait_resumed().await?;
                }
                self.req_start = Some(Instant::now());
                self.set_activity(clients::ACTIVITY_ACTIVE);
            }
            match f.tag {
                b'Q' => {
                    self.skip_until_sync = false;
                    self.on_query(f).await?;
                    self.ctx.leave_gate();
                    self.finish_request();
                    let st = self.ctx.client_status();
                    synth::ready(&mut self.ctx.out.buf, st);
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
                            self.ctx.leave_gate();
                        }
                    }
                }
                b'H' => {
                    if !self.skip_until_sync {
                        self.batch.frames.push(f);
                        self.run_batch(false).await?;
                        self.ctx.leave_gate();
                    }
                    self.ctx.out.flush().await?;
                }
                b'S' => {
                    self.batch.frames.push(f);
                    self.run_batch(true).await?;
                    self.ctx.leave_gate();
                    if self.ctx.block.as_ref().is_some_and(|b| b.implicit) {
                        // The implicit distributed transaction of a
                        // multi-shard write ends at Sync, like PostgreSQL's
                        // implicit transaction of an extended-protocol batch.
                        self.ctx.end_block(true).await?;
                    }
                    self.skip_until_sync = false;
                    self.finish_request();
                    let st = self.ctx.client_status();
                    synth::ready(&mut self.ctx.out.buf, st);
                    self.record_request();
                }
                b'X' => {
                    // Replies to pipelined messages before Terminate are
                    // still owed to the client.
                    let _ = self.ctx.out.flush().await;
                    return Err(End::Closed);
                }
                // CopyData/CopyDone/CopyFail outside COPY are ignored, as PostgreSQL does.
                b'd' | b'c' | b'f' => {}
                other => {
                    let e = PgError::fatal(
                        codes::PROTOCOL_VIOLATION,
                        format!("invalid frontend message type {}", other),
                    );
                    synth::error(&mut self.ctx.out.buf, &e);
                    let _ = self.ctx.out.flush().await;
                    return Err(End::Failed(ProtocolError::Malformed(e.message)));
                }
            }
        }
    }

    /// Holds a new transaction while the admin console's PAUSE is in force
    /// (ends the session if the router drains meanwhile).
    async fn wait_resumed(&mut self) -> Result<(), End> {
        let state = self.ctx.state.clone();
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
                _ = self.ctx.cancel.wake.wait() => {}
            }
        }
    }

    fn set_activity(&self, a: u8) {
        self.ctx
            .cancel
            .activity
            .store(a, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records the request that just got its ReadyForQuery in the metrics:
    /// route kind by the shards it used, latency from its first message.
    fn record_request(&mut self) {
        let kind = RouteKind::for_shards(self.ctx.touched.count_ones());
        let elapsed = self
            .req_start
            .take()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        self.ctx
            .state
            .metrics
            .record(self.ctx.worker, kind, elapsed);
        self.ctx.touched = 0;
        self.set_activity(match self.ctx.client_status() {
            b'T' => clients::ACTIVITY_IN_TRANSACTION,
            b'E' => clients::ACTIVITY_FAILED_TRANSACTION,
            _ => clients::ACTIVITY_IDLE,
        });
        if tracing::enabled!(target: REQUEST_LOG_TARGET, tracing::Level::DEBUG) {
            // Inside the client's span (client id, address, user).
            tracing::debug!(
                target: REQUEST_LOG_TARGET,
                route = kind.label(),
                shards = %self.ctx.traced_shards.join(","),
                elapsed_us = elapsed.as_micros() as u64,
                "request"
            );
            self.ctx.traced_shards.clear();
        }
    }

    /// True when the last Bind of the pending batch binds a COPY statement.
    fn batch_executes_copy(&self) -> bool {
        if !self.copy_statements {
            return false;
        }
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

    /// Releases backends at the end of a request when no block is open.
    fn finish_request(&mut self) {
        if self.ctx.block.is_none() {
            self.ctx.held.clear();
            self.portals.clear();
        }
    }
}
