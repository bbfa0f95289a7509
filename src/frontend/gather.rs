//! The scatter-gather executor for merged SELECTs ([`GatherPlan`]): sends
//! the rewritten statement to every shard of the keyspace with the extended
//! protocol (visible columns in the client's formats, hidden columns in
//! binary), then streams the merge to the client: a k-way merge of the
//! shards' sorted streams, or concatenation, with DISTINCT ON and
//! OFFSET/LIMIT; or a hash aggregation finished at the router.
//!
//! Memory: one row per shard for ordered and plain merges; one state per
//! group for GROUP BY, DISTINCT and aggregates. Once LIMIT rows were sent
//! the remaining rows (at most LIMIT + OFFSET per shard) are drained.
//!
//! A shard error is forwarded with the shard named in DETAIL; the other
//! shards are drained so their connections stay usable.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::frontend as fe;

use crate::plan::{GatherPlan, Literals, RowCount, SqlPiece};
use crate::protocol::backend::{data_row, data_row_prefix, row_description};
use crate::protocol::error::codes;
use crate::protocol::frontend::Bind;
use crate::protocol::{synth, Frame, PgError, ProtocolError};

use super::client::CLIENT_FLUSH_BYTES;
use super::exchange::{self, Expect, Sink, Slot};
use super::extended::ClientStmt;
use super::gather_merge::{cmp_sort, row_sort_values, Groups, Layout, Take, Window};
use super::merge::with_shard_detail;
use super::route::{Raw, Values};
use super::session::{End, Session};

/// Literal/parameter `i` as text (None = NULL); binary integer parameters
/// (int8/int4/int2, as LIMIT/OFFSET/HAVING constants) are rendered in
/// decimal.
fn param_text(values: &Values<'_>, i: usize) -> Result<Option<String>, PgError> {
    match values.raw(i)? {
        None => Ok(None),
        Some(Raw::Text(t)) => Ok(Some(t.into_owned())),
        Some(Raw::Binary(b)) => {
            let v = match *b {
                [a, b2, c, d, e, f, g, h] => i64::from_be_bytes([a, b2, c, d, e, f, g, h]),
                [a, b2, c, d] => i32::from_be_bytes([a, b2, c, d]) as i64,
                [a, b2] => i16::from_be_bytes([a, b2]) as i64,
                _ => {
                    return Err(PgError::unsupported(
                        "binary parameters of this type in LIMIT/OFFSET/HAVING across shards",
                    ))
                }
            };
            Ok(Some(v.to_string()))
        }
    }
}

/// A LIMIT/OFFSET value; None for NULL.
fn row_count(values: &Values<'_>, c: RowCount, what: &str) -> Result<Option<i64>, PgError> {
    let t = match c {
        RowCount::Const(v) => return Ok(Some(v)),
        RowCount::Param(i) => param_text(values, i)?,
    };
    let Some(t) = t else { return Ok(None) };
    let t = t.trim();
    if let Ok(v) = t.parse::<i64>() {
        return Ok(Some(v));
    }
    match t.parse::<f64>() {
        Ok(f) if f.is_finite() && f.abs() < 9.2e18 => Ok(Some(f.round() as i64)),
        _ => Err(PgError::new(
            codes::INVALID_TEXT_REPRESENTATION,
            format!("invalid input syntax for type bigint: \"{t}\" ({what})"),
        )),
    }
}

/// (offset, limit) of one execution, validated like PostgreSQL.
fn window_bounds(plan: &GatherPlan, values: &Values<'_>) -> Result<(u64, Option<u64>), PgError> {
    let limit = match plan.limit {
        Some(c) => row_count(values, c, "LIMIT")?,
        None => None,
    };
    let offset = match plan.offset {
        Some(c) => row_count(values, c, "OFFSET")?,
        None => None,
    };
    if limit.is_some_and(|l| l < 0) {
        return Err(PgError::new("2201W", "LIMIT must not be negative"));
    }
    if offset.is_some_and(|o| o < 0) {
        return Err(PgError::new("2201X", "OFFSET must not be negative"));
    }
    Ok((offset.unwrap_or(0) as u64, limit.map(|l| l as u64)))
}

/// The shards' statement text for a simple-protocol execution.
fn shard_sql(
    plan: &GatherPlan,
    sql: &str,
    lits: &Literals,
    offset: u64,
    limit: Option<u64>,
) -> Result<String, PgError> {
    let rows = match limit {
        Some(l) => l.saturating_add(offset).to_string(),
        None => "ALL".to_string(),
    };
    render_pieces(&plan.sql, sql, lits, &rows)
}

/// Renders statement pieces for a simple-protocol execution: verbatim
/// text, the client's literals copied from `sql` as written, and `limit`
/// for [`SqlPiece::Limit`].
///
/// Errors: XX000 when a literal is not in the text.
pub(crate) fn render_pieces(
    pieces: &[SqlPiece],
    sql: &str,
    lits: &Literals,
    limit: &str,
) -> Result<String, PgError> {
    let mut s = String::with_capacity(sql.len() + 64);
    for p in pieces {
        match p {
            SqlPiece::Text(t) => s.push_str(t),
            SqlPiece::Literal(i) => {
                let r = lits.span(*i).and_then(|r| sql.get(r)).ok_or_else(|| {
                    PgError::new(
                        codes::INTERNAL_ERROR,
                        format!("literal {i} not found in statement"),
                    )
                })?;
                s.push_str(r);
            }
            SqlPiece::Limit => s.push_str(limit),
        }
    }
    Ok(s)
}

/// The shards' statement text of a gather for a simple-protocol text, as
/// it would be sent (for `EXPLAIN (ROUTER)`).
pub(crate) fn simple_shard_sql(
    plan: &GatherPlan,
    sql: &str,
    lits: &Literals,
) -> Result<String, PgError> {
    let (offset, limit) = window_bounds(plan, &Values::Simple { sql, lits })?;
    shard_sql(plan, sql, lits, offset, limit)
}

/// Result formats for the shards: the client's codes for the visible
/// columns, binary for the hidden ones.
fn shard_formats(client: &[i16], visible: usize, hidden: usize) -> Result<Vec<i16>, PgError> {
    let mut v = match client.len() {
        0 => vec![0; visible],
        1 => vec![client[0]; visible],
        n if n == visible => client.to_vec(),
        n => {
            return Err(PgError::new(
                codes::PROTOCOL_VIOLATION,
                format!("bind message has {n} result formats but query has {visible} columns"),
            ))
        }
    };
    v.extend(std::iter::repeat_n(1, hidden));
    Ok(v)
}

/// Records the first error of router-injected exchanges.
#[derive(Default)]
struct Capture(Option<Bytes>);

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
}

/// One backend event of a gather.
enum Ev {
    Desc(Frame),
    Row(Frame),
    Done,
    Error(Frame),
    Ready,
}

/// Per-shard progress.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for rows / CommandComplete.
    Open,
    /// CommandComplete or ErrorResponse seen.
    Ended,
    /// Nothing more to read.
    Finished,
}

/// How one execution talks to the shards.
struct Request {
    /// Backend statement name ("" = unnamed).
    statement: String,
    /// Parse to send where the statement is not prepared: (id for the
    /// prepared set, frame); None = always send `parse_always`.
    prepared: Option<(u64, Bytes)>,
    /// Unnamed Parse sent every time (simple protocol).
    parse_always: Option<Bytes>,
    /// Parameter formats and values for the shards' Bind.
    param_formats: Vec<i16>,
    params: Vec<Option<Vec<u8>>>,
    /// The client's result format codes.
    client_formats: Vec<i16>,
    /// Simple protocol: end with Sync and send RowDescription.
    simple: bool,
}

impl Session {
    /// Runs a gather for a simple-protocol statement. Returns false if it
    /// failed (the error was sent).
    pub(crate) async fn gather_simple(
        &mut self,
        shards: &[String],
        plan: &Arc<GatherPlan>,
        sql: &str,
        lits: &Literals,
    ) -> Result<bool, End> {
        let args = Values::Simple { sql, lits };
        let prepared = (|| {
            let (offset, limit) = window_bounds(plan, &args)?;
            let text = shard_sql(plan, sql, lits, offset, limit)?;
            let mut parse = BytesMut::new();
            let _ = fe::parse("", &text, std::iter::empty(), &mut parse);
            let having = having_params(plan, &args)?;
            Ok::<_, PgError>((offset, limit, parse.freeze(), having))
        })();
        let (offset, limit, parse, having) = match prepared {
            Ok(x) => x,
            Err(e) => {
                self.send_error(&e);
                return Ok(false);
            }
        };
        let req = Request {
            statement: String::new(),
            prepared: None,
            parse_always: Some(parse),
            param_formats: Vec::new(),
            params: Vec::new(),
            client_formats: Vec::new(),
            simple: true,
        };
        self.run_gather(shards, plan, req, offset, limit, having)
            .await
    }

    /// Runs a gather at an extended-protocol Execute of a portal bound to
    /// `stmt` by the client's Bind `bind` (a whole frame). Returns false if
    /// it failed (the error was sent).
    pub(crate) async fn gather_extended(
        &mut self,
        shards: &[String],
        plan: &Arc<GatherPlan>,
        stmt: &Arc<ClientStmt>,
        bind: &Bytes,
        max_rows: i32,
    ) -> Result<bool, End> {
        let prepared = (|| {
            if max_rows > 0 {
                return Err(PgError::unsupported(
                    "fetching a merged multi-shard result in batches (Execute with a row limit) is not supported yet",
                ));
            }
            let b = Bind::decode(bind.get(5..).unwrap_or_default())
                .map_err(|e| PgError::new(codes::PROTOCOL_VIOLATION, e.to_string()))?;
            let args = Values::Bind(&b);
            let (offset, limit) = window_bounds(plan, &args)?;
            let having = having_params(plan, &args)?;
            let req = Request {
                statement: stmt.backend_name.clone(),
                prepared: Some((stmt.id, stmt.parse_frame.clone())),
                parse_always: None,
                param_formats: b.param_formats.clone(),
                params: b.params.iter().map(|p| p.map(|x| x.to_vec())).collect(),
                client_formats: b.result_formats.clone(),
                simple: false,
            };
            Ok::<_, PgError>((offset, limit, having, req))
        })();
        let (offset, limit, having, req) = match prepared {
            Ok(x) => x,
            Err(e) => {
                self.send_error(&e);
                return Ok(false);
            }
        };
        self.run_gather(shards, plan, req, offset, limit, having)
            .await
    }

    /// Describe of a gather statement (`portal_formats` None) or portal
    /// (the Bind's result format codes): the shards' RowDescription without
    /// the hidden columns.
    pub(crate) async fn gather_describe(
        &mut self,
        shard: &str,
        plan: &Arc<GatherPlan>,
        stmt: &Arc<ClientStmt>,
        portal_formats: Option<Vec<i16>>,
    ) -> Result<bool, End> {
        let idx = match self.acquire(shard).await {
            Ok(i) => i,
            Err(e) => {
                self.send_error(&e);
                return Ok(false);
            }
        };
        let mut slots = std::collections::VecDeque::new();
        self.prelude(idx, &mut slots);
        let conn = &mut self.held[idx].conn;
        let sent_parse = !conn.prepared.contains(&stmt.id);
        if sent_parse {
            conn.out.extend_from_slice(&stmt.parse_frame);
        }
        let _ = fe::describe(b'S', &stmt.backend_name, &mut conn.out);
        fe::flush(&mut conn.out);
        let mut cap = Capture::default();
        let r = match conn.flush().await {
            Ok(()) => exchange::run(conn, &mut slots, &mut self.out, &mut cap).await,
            Err(e) => Err(exchange::ExchangeError::Backend(e)),
        };
        if !self.after_exchange(idx, r)? {
            return Ok(false);
        }
        if let Some(e) = cap.0 {
            self.forward_error(&e, shard);
            return Ok(false);
        }
        let mut params_desc = None;
        loop {
            let f = match self.held[idx].conn.recv().await {
                Ok(f) => f,
                Err(e) => return self.lost(idx, e),
            };
            match f.tag {
                b'1' if sent_parse => {
                    self.held[idx].conn.prepared.insert(stmt.id);
                }
                b't' => params_desc = Some(f),
                b'T' => {
                    if portal_formats.is_none() {
                        if let Some(p) = &params_desc {
                            self.out.buf.extend_from_slice(&p.data);
                        }
                    }
                    let cols = row_description(f.body()).map(|c| c.len()).unwrap_or(0);
                    let visible = cols.saturating_sub(plan.hidden);
                    let formats = match &portal_formats {
                        Some(c) => match shard_formats(c, visible, 0) {
                            Ok(v) => v,
                            Err(e) => {
                                self.send_error(&e);
                                return Ok(false);
                            }
                        },
                        None => vec![0; visible],
                    };
                    let fmt = |i: usize| formats.get(i).copied().unwrap_or(0);
                    if let Err(e) =
                        synth::row_description_prefix(&mut self.out.buf, f.body(), visible, &fmt)
                    {
                        self.send_error(&PgError::new(codes::INTERNAL_ERROR, e.to_string()));
                        return Ok(false);
                    }
                    return Ok(true);
                }
                b'n' => {
                    if portal_formats.is_none() {
                        if let Some(p) = &params_desc {
                            self.out.buf.extend_from_slice(&p.data);
                        }
                    }
                    self.out.buf.extend_from_slice(&f.data);
                    return Ok(true);
                }
                b'E' => {
                    self.held[idx].conn.prepared.remove(&stmt.id);
                    self.forward_error(&f.data, shard);
                    return Ok(false);
                }
                _ => {}
            }
        }
    }

    fn forward_error(&mut self, frame: &Bytes, shard: &str) {
        let f = Frame {
            tag: b'E',
            data: frame.clone(),
        };
        self.forward_error_frame(&with_shard_detail(&f, Some(shard)));
    }

    /// A backend connection failed mid-gather: drop it and report.
    fn lost(&mut self, idx: usize, e: ProtocolError) -> Result<bool, End> {
        self.backend_lost(idx, &e);
        Ok(false)
    }

    async fn next_ev(&mut self, idx: usize) -> Result<Ev, ProtocolError> {
        loop {
            let conn = &mut self.held[idx].conn;
            let f = conn.recv().await?;
            return Ok(match f.tag {
                b'D' => Ev::Row(f),
                b'T' => Ev::Desc(f),
                b'C' | b'I' => Ev::Done,
                b'E' => Ev::Error(f),
                b'Z' => {
                    conn.status = f.body().first().copied().unwrap_or(b'I');
                    Ev::Ready
                }
                b'1' | b'2' | b't' | b'n' | b'N' | b'S' | b'A' => continue,
                t => {
                    conn.broken = true;
                    return Err(ProtocolError::Malformed(format!(
                        "unexpected backend message '{}' during a gather",
                        t as char
                    )));
                }
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_gather(
        &mut self,
        shards: &[String],
        plan: &Arc<GatherPlan>,
        req: Request,
        offset: u64,
        limit: Option<u64>,
        having: Vec<(usize, Option<String>)>,
    ) -> Result<bool, End> {
        // Connections and router-injected preludes.
        let mut idxs = Vec::with_capacity(shards.len());
        for s in shards {
            match self.acquire(s).await {
                Ok(i) => idxs.push(i),
                Err(e) => {
                    self.send_error(&e);
                    return Ok(false);
                }
            }
        }
        let mut preludes = Vec::with_capacity(idxs.len());
        for &i in &idxs {
            let mut slots = std::collections::VecDeque::new();
            self.prelude(i, &mut slots);
            let conn = &mut self.held[i].conn;
            if let Some(p) = &req.parse_always {
                conn.out.extend_from_slice(p);
            }
            if let Some((id, frame)) = &req.prepared {
                if !conn.prepared.contains(id) {
                    conn.out.extend_from_slice(frame);
                    slots.push_back(Slot::Swallow(Expect::Parse(Some(*id))));
                }
            }
            if req.parse_always.is_some() {
                slots.push_back(Slot::Swallow(Expect::Parse(None)));
            }
            preludes.push(slots);
        }
        // Column count: known from the plan, or described (SELECT *).
        let visible = match plan.visible {
            Some(v) => v,
            None => {
                for &i in &idxs {
                    let conn = &mut self.held[i].conn;
                    let _ = fe::describe(b'S', &req.statement, &mut conn.out);
                }
                match self.describe_count(&idxs, &mut preludes, shards).await? {
                    Some(n) => n.saturating_sub(plan.hidden),
                    None => return Ok(false),
                }
            }
        };
        let formats = match shard_formats(&req.client_formats, visible, plan.hidden) {
            Ok(f) => f,
            Err(e) => {
                self.abandon(&idxs);
                self.send_error(&e);
                return Ok(false);
            }
        };
        let params: Vec<Option<&[u8]>> = req.params.iter().map(|p| p.as_deref()).collect();
        for &i in &idxs {
            let conn = &mut self.held[i].conn;
            synth::bind(
                &mut conn.out,
                "",
                &req.statement,
                &req.param_formats,
                &params,
                &formats,
            );
            let _ = fe::describe(b'P', "", &mut conn.out);
            let _ = fe::execute("", 0, &mut conn.out);
            if req.simple {
                fe::sync(&mut conn.out);
            } else {
                fe::flush(&mut conn.out);
            }
        }
        for &i in &idxs {
            if let Err(e) = self.held[i].conn.flush().await {
                self.abandon(&idxs);
                return self.lost(i, e);
            }
            // Until the response is read to its end (below), the connection
            // must not return to the pool: if the client goes away while
            // rows stream, it is closed instead.
            self.held[i].conn.broken = true;
        }
        // Preludes (settings, BEGIN, statement preparation).
        let mut first_error: Option<Bytes> = None;
        let mut phase = vec![Phase::Open; idxs.len()];
        for (n, &i) in idxs.iter().enumerate() {
            if preludes[n].is_empty() {
                continue;
            }
            let mut cap = Capture::default();
            let conn = &mut self.held[i].conn;
            match exchange::run(conn, &mut preludes[n], &mut self.out, &mut cap).await {
                Ok(_) => {}
                Err(exchange::ExchangeError::Client(e)) => return Err(e.into()),
                Err(exchange::ExchangeError::Backend(e)) => {
                    self.abandon(&idxs);
                    return self.lost(i, e);
                }
            }
            if let Some(e) = cap.0 {
                if let Some((id, _)) = &req.prepared {
                    self.held[i].conn.prepared.remove(id);
                }
                first_error.get_or_insert_with(|| {
                    with_shard_detail(&Frame { tag: b'E', data: e }, Some(shards[n].as_str()))
                });
                phase[n] = Phase::Ended;
            }
        }
        // Row descriptions.
        let mut desc: Option<Frame> = None;
        for (n, &i) in idxs.iter().enumerate() {
            while phase[n] == Phase::Open {
                match self.next_ev(i).await {
                    Ok(Ev::Desc(f)) => {
                        desc.get_or_insert(f);
                        break;
                    }
                    Ok(Ev::Error(f)) => {
                        first_error
                            .get_or_insert_with(|| with_shard_detail(&f, Some(shards[n].as_str())));
                        phase[n] = Phase::Ended;
                    }
                    Ok(Ev::Done) => phase[n] = Phase::Ended,
                    Ok(Ev::Ready) => phase[n] = Phase::Finished,
                    Ok(Ev::Row(_)) => {}
                    Err(e) => {
                        self.abandon(&idxs);
                        return self.lost(i, e);
                    }
                }
            }
        }
        let mut failure: Option<PgError> = None;
        let mut window = Window::new(offset, limit);
        if first_error.is_none() {
            let layout = match desc.as_ref().map(|d| row_description(d.body())) {
                Some(Ok(cols)) if cols.len() == visible + plan.hidden => Layout {
                    visible,
                    types: cols.iter().map(|c| c.type_oid).collect(),
                    formats: formats[..visible].to_vec(),
                },
                _ => {
                    self.abandon(&idxs);
                    self.send_error(&PgError::new(
                        codes::INTERNAL_ERROR,
                        "shards returned an unexpected row description",
                    ));
                    return Ok(false);
                }
            };
            if req.simple {
                if let Some(d) = &desc {
                    let fmt = |_: usize| 0i16;
                    let _ =
                        synth::row_description_prefix(&mut self.out.buf, d.body(), visible, &fmt);
                }
            }
            let r = if plan.grouping.is_some() {
                self.merge_groups(
                    &idxs,
                    shards,
                    plan,
                    &layout,
                    &mut phase,
                    &mut window,
                    &having,
                )
                .await?
            } else {
                self.merge_rows(&idxs, shards, plan, &layout, &mut phase, &mut window)
                    .await?
            };
            match r {
                Merged::Ok => {}
                Merged::ShardError(e) => first_error = Some(e),
                Merged::Failed(e) => failure = Some(e),
                Merged::Lost(i, e) => {
                    self.abandon(&idxs);
                    return self.lost(i, e);
                }
            }
        }
        // After a failure, cancel the shards still running (outside a
        // transaction block: those connections are then not reused, so a
        // late cancel cannot hit a later statement).
        let cancelled = (first_error.is_some() || failure.is_some()) && self.block.is_none();
        if cancelled {
            self.cancel_open(&idxs, shards, &phase).await;
        }
        // Drain what is left so the connections stay usable.
        for (n, &i) in idxs.iter().enumerate() {
            loop {
                let done = match phase[n] {
                    Phase::Finished => true,
                    Phase::Ended => !req.simple,
                    Phase::Open => false,
                };
                if done {
                    break;
                }
                match self.next_ev(i).await {
                    Ok(Ev::Error(f)) => {
                        if !cancelled {
                            first_error.get_or_insert_with(|| {
                                with_shard_detail(&f, Some(shards[n].as_str()))
                            });
                        }
                        phase[n] = Phase::Ended;
                    }
                    Ok(Ev::Done) => phase[n] = Phase::Ended,
                    Ok(Ev::Ready) => phase[n] = Phase::Finished,
                    Ok(_) => {}
                    Err(e) => {
                        self.abandon(&idxs);
                        return self.lost(i, e);
                    }
                }
            }
        }
        // Fully read: reusable, unless cancelled (a late cancel could hit
        // the next statement).
        if !cancelled {
            for &i in &idxs {
                self.held[i].conn.broken = false;
            }
        }
        if let Some(e) = first_error {
            self.forward_error_frame(&e);
            return Ok(false);
        }
        if let Some(e) = failure {
            self.send_error(&e);
            return Ok(false);
        }
        synth::command_complete(&mut self.out.buf, &format!("SELECT {}", window.sent));
        Ok(true)
    }

    /// Sends the queued Describe (statement) with a Flush and reads every
    /// shard's preludes and description; returns the column count.
    async fn describe_count(
        &mut self,
        idxs: &[usize],
        preludes: &mut [std::collections::VecDeque<Slot>],
        shards: &[String],
    ) -> Result<Option<usize>, End> {
        for &i in idxs {
            fe::flush(&mut self.held[i].conn.out);
            if let Err(e) = self.held[i].conn.flush().await {
                self.abandon(idxs);
                return self.lost(i, e).map(|_| None);
            }
        }
        let mut count = None;
        for (n, &i) in idxs.iter().enumerate() {
            let mut cap = Capture::default();
            let conn = &mut self.held[i].conn;
            match exchange::run(conn, &mut preludes[n], &mut self.out, &mut cap).await {
                Ok(_) => {}
                Err(exchange::ExchangeError::Client(e)) => return Err(e.into()),
                Err(exchange::ExchangeError::Backend(e)) => {
                    self.abandon(idxs);
                    return self.lost(i, e).map(|_| None);
                }
            }
            preludes[n].clear();
            if let Some(e) = cap.0 {
                self.abandon(idxs);
                self.forward_error(&e, &shards[n]);
                return Ok(None);
            }
            loop {
                match self.held[i].conn.recv().await {
                    Ok(f) if f.tag == b'T' => {
                        count
                            .get_or_insert(row_description(f.body()).map(|c| c.len()).unwrap_or(0));
                        break;
                    }
                    Ok(f) if f.tag == b'n' => {
                        count.get_or_insert(0);
                        break;
                    }
                    Ok(f) if f.tag == b'E' => {
                        self.abandon(idxs);
                        self.forward_error(&f.data, &shards[n]);
                        return Ok(None);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.abandon(idxs);
                        return self.lost(i, e).map(|_| None);
                    }
                }
            }
        }
        Ok(count)
    }

    /// Sends a CancelRequest for every shard whose result is still open and
    /// marks those connections not reusable.
    async fn cancel_open(&mut self, idxs: &[usize], shards: &[String], phase: &[Phase]) {
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
    fn abandon(&mut self, idxs: &[usize]) {
        for &i in idxs {
            if let Some(h) = self.held.get_mut(i) {
                h.conn.broken = true;
                h.conn.out.clear();
            }
        }
    }

    async fn emit_visible(&mut self, f: &Frame, visible: usize, hidden: usize) -> Result<(), End> {
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

    /// Ungrouped merge: k-way merge on the sort keys (or concatenation),
    /// DISTINCT ON, OFFSET/LIMIT, streaming.
    async fn merge_rows(
        &mut self,
        idxs: &[usize],
        shards: &[String],
        plan: &GatherPlan,
        layout: &Layout,
        phase: &mut [Phase],
        window: &mut Window,
    ) -> Result<Merged, End> {
        // Next row of each shard with its sort values.
        let mut heads: Vec<Option<(Frame, Vec<crate::value::Value>)>> = vec![None; idxs.len()];
        let mut last_on: Option<Vec<crate::value::Value>> = None;
        let ordered = !plan.order.is_empty();
        let mut cur = 0usize;
        loop {
            if window.full() {
                return Ok(Merged::Ok);
            }
            // Fill heads (all shards when ordered, the current one when not).
            let range: Vec<usize> = if ordered {
                (0..idxs.len()).collect()
            } else {
                vec![cur]
            };
            for n in range {
                if heads[n].is_some() || phase[n] != Phase::Open {
                    continue;
                }
                let ev = self.next_ev(idxs[n]).await;
                let f = match row_or_end(ev, &mut phase[n], idxs[n], &shards[n]) {
                    Ok(Some(f)) => f,
                    Ok(None) => continue,
                    Err(m) => return Ok(m),
                };
                let vals = match data_row(f.body()) {
                    Ok(v) => v,
                    Err(e) => {
                        return Ok(Merged::Failed(PgError::new(
                            codes::INTERNAL_ERROR,
                            e.to_string(),
                        )))
                    }
                };
                let sv = match row_sort_values(plan, layout, &vals) {
                    Ok(s) => s,
                    Err(e) => return Ok(Merged::Failed(e)),
                };
                heads[n] = Some((f, sv));
            }
            // Pick the next row.
            let pick = if ordered {
                let mut best: Option<usize> = None;
                for n in 0..heads.len() {
                    if let Some((_, sv)) = &heads[n] {
                        best = match best {
                            Some(b) => {
                                let bv = heads[b].as_ref().map(|h| &h.1);
                                match bv {
                                    Some(bv)
                                        if cmp_sort(&plan.order, sv, bv)
                                            == std::cmp::Ordering::Less =>
                                    {
                                        Some(n)
                                    }
                                    _ => Some(b),
                                }
                            }
                            None => Some(n),
                        };
                    }
                }
                // Every shard must have a head or be finished before picking.
                if heads
                    .iter()
                    .zip(phase.iter())
                    .any(|(h, p)| h.is_none() && *p == Phase::Open)
                {
                    continue;
                }
                best
            } else if heads[cur].is_some() {
                Some(cur)
            } else if phase[cur] != Phase::Open {
                cur += 1;
                if cur >= idxs.len() {
                    None
                } else {
                    continue;
                }
            } else {
                continue;
            };
            let Some(n) = pick else { return Ok(Merged::Ok) };
            let Some((f, sv)) = heads[n].take() else {
                return Ok(Merged::Ok);
            };
            if plan.distinct_on > 0 {
                let key = &sv[..plan.distinct_on.min(sv.len())];
                let keys = &plan.order[..plan.distinct_on.min(plan.order.len())];
                if let Some(prev) = &last_on {
                    if cmp_sort(keys, prev, key) == std::cmp::Ordering::Equal {
                        continue;
                    }
                }
                last_on = Some(key.to_vec());
            }
            match window.take() {
                Take::Skip => {}
                Take::Emit => self.emit_visible(&f, layout.visible, plan.hidden).await?,
                Take::Done => return Ok(Merged::Ok),
            }
        }
    }

    /// Grouped merge: every shard row is folded into its group; then the
    /// groups are filtered by HAVING, sorted, windowed and sent.
    #[allow(clippy::too_many_arguments)]
    async fn merge_groups(
        &mut self,
        idxs: &[usize],
        shards: &[String],
        plan: &GatherPlan,
        layout: &Layout,
        phase: &mut [Phase],
        window: &mut Window,
        having: &[(usize, Option<String>)],
    ) -> Result<Merged, End> {
        let Some(g) = &plan.grouping else {
            return Ok(Merged::Ok);
        };
        let mut groups = Groups::new(g);
        for n in 0..idxs.len() {
            while phase[n] == Phase::Open {
                let ev = self.next_ev(idxs[n]).await;
                let f = match row_or_end(ev, &mut phase[n], idxs[n], &shards[n]) {
                    Ok(Some(f)) => f,
                    Ok(None) => continue,
                    Err(m) => return Ok(m),
                };
                let r = data_row(f.body())
                    .map_err(|e| PgError::new(codes::INTERNAL_ERROR, e.to_string()))
                    .and_then(|vals| groups.add(layout, &vals));
                if let Err(e) = r {
                    return Ok(Merged::Failed(e));
                }
            }
        }
        let param = |i: usize| -> Result<Option<String>, PgError> {
            Ok(having
                .iter()
                .find(|(j, _)| *j == i)
                .and_then(|(_, v)| v.clone()))
        };
        let rows = match groups.finish(plan, layout, &param) {
            Ok(r) => r,
            Err(e) => return Ok(Merged::Failed(e)),
        };
        for (_, row) in rows {
            match window.take() {
                Take::Skip => continue,
                Take::Done => break,
                Take::Emit => {
                    let refs: Vec<Option<&[u8]>> = row.iter().map(|v| v.as_deref()).collect();
                    synth::data_row(&mut self.out.buf, &refs);
                    if self.out.buf.len() >= CLIENT_FLUSH_BYTES {
                        self.out.flush().await?;
                    }
                }
            }
        }
        Ok(Merged::Ok)
    }
}

/// Handles a shard event while merging: a row is returned; CommandComplete,
/// ReadyForQuery and descriptions update the shard's phase (None); an
/// error or a lost connection ends the merge (Err).
fn row_or_end(
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

/// Outcome of a merge phase.
enum Merged {
    Ok,
    /// A shard's ErrorResponse (with the shard in DETAIL).
    ShardError(Bytes),
    /// An error found by the router (e.g. an unsupported type).
    Failed(PgError),
    /// Backend I/O failed on held connection `usize`.
    Lost(usize, ProtocolError),
}

/// The values of the literals/parameters HAVING reads, as text.
fn having_params(
    plan: &GatherPlan,
    args: &Values<'_>,
) -> Result<Vec<(usize, Option<String>)>, PgError> {
    let mut out = Vec::new();
    if let Some(c) = plan.grouping.as_ref().and_then(|g| g.having.as_ref()) {
        let mut idx = Vec::new();
        collect_params(c, &mut idx);
        for i in idx {
            out.push((i, param_text(args, i)?));
        }
    }
    Ok(out)
}

fn collect_params(c: &crate::plan::Cond, out: &mut Vec<usize>) {
    use crate::plan::{Cond, Operand};
    let op = |o: &Operand, out: &mut Vec<usize>| {
        if let Operand::Param(i) | Operand::NegParam(i) = o {
            out.push(*i);
        }
    };
    match c {
        Cond::Cmp(_, a, b) => {
            op(a, out);
            op(b, out);
        }
        Cond::IsNull(a, _) | Cond::Truth(a) => op(a, out),
        Cond::And(a, b) | Cond::Or(a, b) => {
            collect_params(a, out);
            collect_params(b, out);
        }
        Cond::Not(a) => collect_params(a, out),
    }
}
