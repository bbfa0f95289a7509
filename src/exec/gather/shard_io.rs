//! The gather's per-shard I/O: one shard's events, the captured error of a
//! router-injected exchange, forwarding a shard error with the shard in
//! DETAIL, cancelling or abandoning shards whose rows are not needed, and
//! writing a row's visible columns to the client.

use bytes::{Bytes, BytesMut};

use crate::protocol::backend::{data_row, data_row_prefix, RowValues};
use crate::protocol::client_io::CLIENT_FLUSH_BYTES;
use crate::protocol::error::codes;
use crate::protocol::{Frame, PgError, ProtocolError};

use crate::backend::conn::BackendConn;
use crate::exec::concat::with_shard_detail;
use crate::exec::context::{End, ExecCtx};
use crate::exec::exchange::{Expect, Sink};

/// Records the first error of router-injected exchanges, and whether it
/// answered a Parse (not a settings replay or a BEGIN).
#[derive(Default)]
pub(super) struct Capture(pub(super) Option<Bytes>, pub(super) bool);

impl Sink for Capture {
    fn frame(&mut self, _out: &mut BytesMut, f: &Frame) {
        if f.tag == b'E' && self.0.is_none() {
            self.0 = Some(f.data.clone());
        }
    }
    fn synth(&mut self, _out: &mut BytesMut, _b: &[u8]) {}
    /// Captured, not sent: the caller reports it.
    fn error(&mut self, out: &mut BytesMut, f: &Frame) {
        self.frame(out, f);
    }
    fn error_at(&mut self, out: &mut BytesMut, f: &Frame, at: Expect) {
        if self.0.is_none() {
            self.1 = matches!(at, Expect::Parse(_));
        }
        self.error(out, f);
    }
}

/// One backend event of a gather.
pub(super) enum Ev {
    Desc(Frame),
    Row(Frame),
    Done,
    Error(Frame),
    Ready,
}

/// Per-shard progress.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for rows / CommandComplete.
    Open,
    /// CommandComplete or ErrorResponse seen.
    Ended,
    /// Nothing more to read.
    Finished,
}

/// The next event of held connection `$idx` of ExecCtx `$ctx`: taken
/// from the buffered frames without the async path when there is one
/// ([`ExecCtx::ready_ev`]), else awaited ([`ExecCtx::next_ev`]).
macro_rules! next_event {
    ($ctx:expr, $idx:expr) => {
        match $ctx.ready_ev($idx) {
            Some(ev) => ev,
            None => $ctx.next_ev($idx).await,
        }
    };
}
pub(super) use next_event;

impl ExecCtx {
    pub(super) fn forward_error(&mut self, frame: &Bytes, shard: &str) {
        let f = Frame {
            tag: b'E',
            data: frame.clone(),
        };
        self.forward_error_frame(&with_shard_detail(&f, Some(shard)));
    }

    /// A backend connection failed mid-gather: drop it and report.
    pub(super) fn lost(&mut self, idx: usize, e: ProtocolError) -> Result<bool, End> {
        self.backend_lost(idx, &e);
        Ok(false)
    }

    /// The next event of held connection `idx`, reading from the shard
    /// when none is buffered.
    pub(super) async fn next_ev(&mut self, idx: usize) -> Result<Ev, ProtocolError> {
        loop {
            if let Some(ev) = self.ready_ev(idx) {
                return ev;
            }
            let conn = &mut self.held[idx].conn;
            let f = conn.recv().await?;
            if let Some(ev) = classify(conn, f) {
                return ev;
            }
        }
    }

    /// The next event of held connection `idx` if its frames are already
    /// buffered (no I/O; None if not): the merge reads rows that arrived
    /// together without the async path.
    pub(super) fn ready_ev(&mut self, idx: usize) -> Option<Result<Ev, ProtocolError>> {
        let conn = &mut self.held[idx].conn;
        loop {
            match conn.try_recv() {
                Ok(Some(f)) => {
                    if let Some(ev) = classify(conn, f) {
                        return Some(ev);
                    }
                }
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Sends a CancelRequest for every shard whose result is still open and
    /// marks those connections not reusable.
    pub(super) async fn cancel_open(&mut self, idxs: &[usize], shards: &[String], phase: &[Phase]) {
        for (n, &i) in idxs.iter().enumerate() {
            if phase[n] != Phase::Open {
                continue;
            }
            let Some(pool) = self.state.pool(&shards[n], self.worker) else {
                continue;
            };
            let (pid, secret) = (self.held[i].conn.pid, self.held[i].conn.secret);
            if let Err(e) = crate::backend::conn::cancel_request(&pool.target, pid, secret).await {
                tracing::debug!(shard = %shards[n], error = %e, "cancel request failed");
            }
            self.held[i].conn.broken = true;
        }
    }

    /// Marks the gather's connections broken (their protocol state is
    /// unknown); they are dropped when the request ends.
    pub(super) fn abandon(&mut self, idxs: &[usize]) {
        for &i in idxs {
            if let Some(h) = self.held.get_mut(i) {
                h.conn.broken = true;
                h.conn.out.clear();
            }
        }
    }

    pub(super) async fn emit_visible(
        &mut self,
        f: &Frame,
        visible: usize,
        hidden: usize,
    ) -> Result<(), End> {
        if hidden == 0 {
            self.out.buf.extend_from_slice(&f.data);
        } else if let Ok(end) = data_row_prefix(f.body(), visible) {
            // The same DataRow cut after the visible columns (no decode).
            let cols = f.body().get(2..end).unwrap_or_default();
            self.out.buf.extend_from_slice(b"D");
            self.out
                .buf
                .extend_from_slice(&((4 + 2 + cols.len()) as i32).to_be_bytes());
            self.out
                .buf
                .extend_from_slice(&(visible as i16).to_be_bytes());
            self.out.buf.extend_from_slice(cols);
        }
        if self.out.buf.len() >= CLIENT_FLUSH_BYTES {
            self.out.flush().await?;
        }
        Ok(())
    }
}

/// The event frame `f` of `conn` makes during a gather; None for frames
/// the gather skips (ParseComplete, BindComplete, descriptions of
/// parameters, notices, ParameterStatus, notifications).
fn classify(conn: &mut BackendConn, f: Frame) -> Option<Result<Ev, ProtocolError>> {
    Some(Ok(match f.tag {
        b'D' => Ev::Row(f),
        b'T' => Ev::Desc(f),
        b'C' | b'I' => Ev::Done,
        b'E' => Ev::Error(f),
        b'Z' => {
            conn.status = f.body().first().copied().unwrap_or(b'I');
            Ev::Ready
        }
        b'1' | b'2' | b't' | b'n' | b'N' | b'S' | b'A' => return None,
        t => {
            conn.broken = true;
            return Some(Err(ProtocolError::Malformed(format!(
                "unexpected backend message '{}' during a gather",
                t as char
            ))));
        }
    }))
}

/// Handles a shard event while merging: a row is returned; CommandComplete,
/// ReadyForQuery and descriptions update the shard's phase (None); an
/// error or a lost connection ends the merge (Err).
pub(super) fn row_or_end(
    ev: Result<Ev, ProtocolError>,
    phase: &mut Phase,
    idx: usize,
    shard: &str,
) -> Result<Option<Frame>, Merged> {
    match ev {
        Ok(Ev::Row(f)) => return Ok(Some(f)),
        Ok(Ev::Done) => *phase = Phase::Ended,
        Ok(Ev::Error(f)) => {
            *phase = Phase::Ended;
            return Err(Merged::ShardError(with_shard_detail(&f, Some(shard))));
        }
        Ok(Ev::Ready) => *phase = Phase::Finished,
        Ok(Ev::Desc(_)) => {}
        Err(e) => return Err(Merged::Lost(idx, e)),
    }
    Ok(None)
}

/// The column values of shard row `f` (DataRow); a malformed row ends the
/// merge (XX000).
pub(super) fn row_values(f: &Frame) -> Result<RowValues<'_>, Merged> {
    data_row(f.body())
        .map_err(|e| Merged::Failed(PgError::new(codes::INTERNAL_ERROR, e.to_string())))
}

/// Outcome of a merge phase.
pub(super) enum Merged {
    Ok,
    /// A shard's ErrorResponse (with the shard in DETAIL).
    ShardError(Bytes),
    /// An error found by the router (e.g. an unsupported type).
    Failed(PgError),
    /// Backend I/O failed on held connection `usize`.
    Lost(usize, ProtocolError),
}
