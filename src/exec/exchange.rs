//! Response tracking for one backend connection: which backend responses
//! belong to which request, which are forwarded to the client, which are
//! swallowed (messages the router injected) and where the router inserts
//! responses it answers itself (PostgreSQL docs §55.2.3 extended query
//! message flow).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::backend::BackendConn;
use crate::protocol::{Frame, ProtocolError};

use crate::protocol::client_io::{ClientOut, CLIENT_FLUSH_BYTES};

/// Failure of an exchange.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The backend connection failed (it is marked broken).
    #[error("{0}")]
    Backend(ProtocolError),
    /// Writing to the client failed.
    #[error("client: {0}")]
    Client(ProtocolError),
}

/// The response a request message produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Parse → ParseComplete; `Some(id)` marks statement `pgr_<id>` as
    /// prepared on the connection once it succeeds.
    Parse(Option<u64>),
    /// Bind → BindComplete.
    Bind,
    /// Describe statement → ParameterDescription + RowDescription/NoData.
    DescribeStatement,
    /// Describe portal → RowDescription/NoData.
    DescribePortal,
    /// Execute → DataRow* + CommandComplete/EmptyQueryResponse/PortalSuspended.
    Execute,
    /// Close → CloseComplete.
    Close,
    /// Sync → ReadyForQuery.
    Sync,
    /// Simple Query → everything up to ReadyForQuery.
    Query,
}

/// The slots of one simple Query whose responses are forwarded.
pub const QUERY_SLOTS: &[Slot] = &[Slot::Forward(Expect::Query)];

/// One expected response and what to do with it.
#[derive(Debug, Clone)]
pub enum Slot {
    /// Forward the response to the client (through the sink).
    Forward(Expect),
    /// Consume the response silently (router-injected request). Errors are
    /// still forwarded: the router never hides a shard's error.
    Swallow(Expect),
    /// A response the router produced itself; emitted in order.
    Synth(Bytes),
}

/// Where forwarded frames go.
pub trait Sink {
    /// A frame to forward (never ReadyForQuery: the session writes its own).
    fn frame(&mut self, out: &mut BytesMut, f: &Frame);
    /// A synthesized response reaching the head of the queue.
    fn synth(&mut self, out: &mut BytesMut, b: &[u8]) {
        out.extend_from_slice(b);
    }
    /// A backend ErrorResponse: forwarded (and counted in the metrics) by
    /// default; sinks that hold errors back override it and count where
    /// they write one.
    fn error(&mut self, out: &mut BytesMut, f: &Frame) {
        crate::metrics::note_error_body(f.body());
        self.frame(out, f);
    }
    /// A backend ErrorResponse that came in place of the response to
    /// `at`: [`Sink::error`] by default.
    fn error_at(&mut self, out: &mut BytesMut, f: &Frame, at: Expect) {
        let _ = at;
        self.error(out, f);
    }
}

/// Sink that forwards everything to the client unchanged (the fast path).
pub struct Direct;

impl Sink for Direct {
    #[inline]
    fn frame(&mut self, out: &mut BytesMut, f: &Frame) {
        out.extend_from_slice(&f.data);
    }
}

/// What an exchange ended with.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// The backend reported an ErrorResponse.
    pub error: bool,
    /// Status of the last ReadyForQuery seen, if any.
    pub status: Option<u8>,
}

/// Reads backend frames until every slot in `slots` is satisfied, feeding
/// forwarded frames to `sink` (into the client's output buffer), which is
/// flushed whenever it grows beyond [`CLIENT_FLUSH_BYTES`] so large results
/// stream with bounded memory.
///
/// Errors: [`ExchangeError::Backend`] on backend I/O or protocol desync (the
/// connection is marked broken), [`ExchangeError::Client`] when writing to
/// the client fails.
pub async fn run<S: Sink>(
    conn: &mut BackendConn,
    slots: &mut VecDeque<Slot>,
    client: &mut ClientOut,
    sink: &mut S,
) -> Result<Outcome, ExchangeError> {
    let mut outcome = Outcome::default();
    loop {
        while let Some(Slot::Synth(_)) = slots.front() {
            if let Some(Slot::Synth(b)) = slots.pop_front() {
                sink.synth(&mut client.buf, &b);
            }
        }
        let Some(head) = slots.front() else { break };
        let (expect, forward) = match head {
            Slot::Forward(e) => (*e, true),
            Slot::Swallow(e) => (*e, false),
            Slot::Synth(_) => continue,
        };
        // Frames that arrived together are taken without the async path.
        let f = match conn.try_recv().map_err(ExchangeError::Backend)? {
            Some(f) => f,
            None => conn.recv().await.map_err(ExchangeError::Backend)?,
        };
        let out = &mut client.buf;
        match f.tag {
            b'N' | b'S' | b'A' => {
                if forward {
                    sink.frame(out, &f);
                }
                continue;
            }
            b'E' => {
                outcome.error = true;
                sink.error_at(out, &f, expect);
                if expect == Expect::Query || expect == Expect::Sync {
                    continue;
                }
                // Extended protocol: the backend skips to Sync.
                slots.pop_front();
                while let Some(s) = slots.front() {
                    if matches!(s, Slot::Forward(Expect::Sync) | Slot::Swallow(Expect::Sync)) {
                        break;
                    }
                    slots.pop_front();
                }
                continue;
            }
            _ => {}
        }
        let done = match (expect, f.tag) {
            (Expect::Parse(id), b'1') => {
                if let Some(id) = id {
                    conn.prepared.insert(id);
                }
                true
            }
            (Expect::Bind, b'2') => true,
            (Expect::DescribeStatement, b't') => false,
            (Expect::DescribeStatement | Expect::DescribePortal, b'T' | b'n') => true,
            (Expect::Execute, b'D' | b'H' | b'd' | b'c') => false,
            (Expect::Execute, b'C' | b'I' | b's') => true,
            (Expect::Close, b'3') => true,
            (Expect::Sync | Expect::Query, b'Z') => {
                let st = f.body().first().copied().unwrap_or(b'I');
                conn.status = st;
                outcome.status = Some(st);
                slots.pop_front();
                continue;
            }
            (Expect::Query, _) => false,
            (e, t) => {
                conn.broken = true;
                return Err(ExchangeError::Backend(ProtocolError::Malformed(format!(
                    "unexpected backend message '{}' while waiting for {e:?}",
                    t as char
                ))));
            }
        };
        if forward {
            sink.frame(out, &f);
        }
        if done {
            slots.pop_front();
        }
        if client.buf.len() >= CLIENT_FLUSH_BYTES {
            if let Err(e) = client.flush().await {
                // The rest of this response is still on the wire: never
                // pool this connection again.
                conn.broken = true;
                return Err(ExchangeError::Client(e));
            }
        }
    }
    Ok(outcome)
}
