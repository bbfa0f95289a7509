//! Router-injected queries inside the client's transaction (lookup vindex
//! reads and maintenance): run on a held connection like the client's own
//! statements (joining the open block), their rows read as text and never
//! forwarded.
//!
//! Outside an extended-protocol batch they are simple Query messages.
//! Inside one ([`ExecCtx::in_extended`]) a simple Query would disturb the
//! client's pending extended-protocol state on that connection (it ends the
//! batch's implicit transaction and drops the unnamed portal), so they use
//! the shard's unnamed statement (client statements are always named
//! `pgr_<id>` on shards) and the portal [`PORTAL`], closed after use, and
//! end with Flush, not Sync: an error leaves the shard skipping messages
//! until the client's Sync, exactly as a failed client message does.

use std::collections::VecDeque;

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend as fe;

use crate::backend::conn::{BackendConn, ExtendedReply};
use crate::protocol::error::codes;
use crate::protocol::{PgError, ProtocolError};

use super::concat::with_shard_detail;
use super::context::{End, ExecCtx};
use super::statement::ClientStmt;

/// Rows of a router-injected query, as text (None = NULL).
pub type Rows = Vec<Vec<Option<String>>>;

/// The portal of router-injected extended-protocol queries.
pub(crate) const PORTAL: &str = "pgr_injected";

/// Parameters of an injected extended-protocol query.
#[derive(Clone, Copy)]
pub struct Params<'a> {
    /// Parameter type OIDs for the Parse (0 = let the shard infer).
    pub types: &'a [u32],
    /// The Bind parameter section: format codes and values, encoded as in
    /// Bind (PostgreSQL docs §55.7), e.g. copied from the client's Bind.
    pub section: &'a [u8],
}

impl Params<'_> {
    /// No parameters: no types, a Bind section with no format codes and
    /// no values.
    pub const NONE: Params<'static> = Params {
        types: &[],
        section: &[0, 0, 0, 0],
    };

    fn is_none(&self) -> bool {
        self.types.is_empty() && self.section == Params::NONE.section
    }
}

/// What to send on the connection.
enum Request<'a> {
    /// `sql` as a simple Query, or in the extended protocol with `params`.
    Query(&'a str, Params<'a>),
    /// Describe of the client's prepared statement (prepared first if the
    /// connection lacks it).
    Describe(&'a ClientStmt),
}

impl ExecCtx {
    /// Runs router-injected `sql` on `shard` inside the session's
    /// transaction and returns its rows as text. A shard error is forwarded
    /// to the client with the shard in DETAIL, a lost connection becomes
    /// 08006; both give None (the block, if any, is failed).
    pub async fn injected(&mut self, shard: &str, sql: &str) -> Result<Option<Rows>, End> {
        self.injected_with(shard, sql, Params::NONE).await
    }

    /// [`ExecCtx::injected`] with parameters, which need an
    /// extended-protocol batch (XX000 otherwise).
    pub async fn injected_with(
        &mut self,
        shard: &str,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<Rows>, End> {
        Ok(self
            .inject(shard, Request::Query(sql, params))
            .await?
            .map(|r| r.rows))
    }

    /// The parameter types `shard` inferred for the client's statement
    /// (its ParameterDescription), cached in the statement. Only inside an
    /// extended-protocol batch. None on failure (error sent).
    pub async fn statement_param_types(
        &mut self,
        shard: &str,
        stmt: &ClientStmt,
    ) -> Result<Option<Vec<u32>>, End> {
        if let Some(t) = stmt.shard_param_types.get() {
            return Ok(Some(t.clone()));
        }
        let Some(r) = self.inject(shard, Request::Describe(stmt)).await? else {
            return Ok(None);
        };
        let _ = stmt.shard_param_types.set(r.param_types.clone());
        Ok(Some(r.param_types))
    }

    async fn inject(
        &mut self,
        shard: &str,
        req: Request<'_>,
    ) -> Result<Option<ExtendedReply>, End> {
        let simple = !self.in_extended;
        if simple && !matches!(req, Request::Query(_, p) if p.is_none()) {
            self.send_error(&PgError::new(
                codes::INTERNAL_ERROR,
                "injected extended-protocol request outside an extended-protocol batch",
            ));
            return Ok(None);
        }
        let idx = match self.acquire(shard).await {
            Ok(i) => i,
            Err(e) => {
                self.send_error(&e);
                return Ok(None);
            }
        };
        let mut slots = VecDeque::new();
        self.prelude(idx, &mut slots);
        let conn = &mut self.held[idx].conn;
        let mut parsed = None;
        let (encoded, end): (std::io::Result<()>, &[u8]) = match req {
            Request::Query(sql, _) if simple => (fe::query(sql, &mut conn.out), b"Z"),
            Request::Query(sql, p) => (encode_query(sql, p, &mut conn.out), b"3"),
            Request::Describe(stmt) => {
                if !conn.prepared.contains(&stmt.id) {
                    conn.out.extend_from_slice(&stmt.parse_frame);
                    conn.prepared.insert(stmt.id);
                    parsed = Some(stmt.id);
                }
                let r = fe::describe(b'S', &stmt.backend_name, &mut conn.out);
                fe::flush(&mut conn.out);
                (r, b"nT")
            }
        };
        let mut reply = match exchange(conn, encoded, slots.len(), end).await {
            Ok(r) => r,
            Err(e) => {
                self.backend_lost(idx, &e);
                return Ok(None);
            }
        };
        if let Some(f) = reply.error.take() {
            if let (Some(id), Some(h)) = (parsed, self.held.get_mut(idx)) {
                h.conn.prepared.remove(&id);
            }
            self.forward_error_frame(&with_shard_detail(&f, Some(shard)));
            return Ok(None);
        }
        Ok(Some(reply))
    }
}

/// Sends what is queued on `conn` (`encoded` tells whether encoding
/// worked), reads the replies of the `prelude` simple queries queued before
/// it, then the injected request's reply up to a frame tagged in `end`
/// (`b"Z"`: a simple query). `error` holds the first ErrorResponse, the
/// prelude's first.
async fn exchange(
    conn: &mut BackendConn,
    encoded: std::io::Result<()>,
    prelude: usize,
    end: &[u8],
) -> Result<ExtendedReply, ProtocolError> {
    encoded?;
    conn.flush().await?;
    let mut failure = None;
    for _ in 0..prelude {
        let (_, err) = conn.read_simple().await?;
        failure = failure.or(err);
    }
    let mut reply = if end == b"Z" {
        let (rows, error) = conn.read_simple().await?;
        ExtendedReply {
            rows,
            error,
            ..Default::default()
        }
    } else {
        conn.read_extended(end).await?
    };
    reply.error = failure.or(reply.error);
    Ok(reply)
}

/// Parse (unnamed statement), Bind to [`PORTAL`] with `p` and text
/// results, Execute, Close portal, Flush.
fn encode_query(sql: &str, p: Params<'_>, out: &mut BytesMut) -> std::io::Result<()> {
    fe::parse("", sql, p.types.iter().copied(), out)?;
    let len = 4 + PORTAL.len() + 1 + 1 + p.section.len() + 2;
    let len = i32::try_from(len).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "parameters too large")
    })?;
    out.put_u8(b'B');
    out.put_i32(len);
    out.extend_from_slice(PORTAL.as_bytes());
    out.put_u8(0);
    out.put_u8(0);
    out.extend_from_slice(p.section);
    out.put_i16(0);
    fe::execute(PORTAL, 0, out)?;
    fe::close(b'P', PORTAL, out)?;
    fe::flush(out);
    Ok(())
}
