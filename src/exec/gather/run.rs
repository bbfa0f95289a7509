//! One gather execution: Parse/Bind/Execute of the rewritten statement on
//! every shard (prepared on demand), the shards' row descriptions checked
//! and the client's written, the merge, and the shards drained or
//! cancelled afterwards ([`ExecCtx::run_gather`]).

use std::sync::Arc;

use bytes::Bytes;
use postgres_protocol::message::frontend as fe;

use crate::plan::GatherPlan;
use crate::protocol::backend::{error_code, row_description, row_types};
use crate::protocol::error::codes;
use crate::protocol::{synth, Frame, PgError};

use super::merge::{Layout, Window};
use super::params::shard_formats;
use super::shard_io::{next_event, Capture, Ev, Merged, Phase};
use crate::exec::auto_prepared::of_text;
use crate::exec::concat::with_shard_detail;
use crate::exec::context::{End, ExecCtx};
use crate::exec::exchange::{self, Expect, Slot};

/// How one execution talks to the shards.
pub(super) struct Request {
    /// Backend statement name ("" = unnamed).
    pub(super) statement: String,
    /// A failure of the prepared statement before it ran is returned as
    /// [`Gathered::BeforeRun`] instead of sent (the caller runs the text
    /// as written): outside a transaction block only.
    pub(super) retry_before_run: bool,
    /// Parse to send where the statement is not prepared: (id for the
    /// prepared set, frame); None = always send `parse_always`.
    pub(super) prepared: Option<(u64, Bytes)>,
    /// Unnamed Parse sent every time (simple protocol).
    pub(super) parse_always: Option<Bytes>,
    /// Parameter formats and values for the shards' Bind.
    pub(super) param_formats: Vec<i16>,
    pub(super) params: Vec<Option<Vec<u8>>>,
    /// The client's result format codes.
    pub(super) client_formats: Vec<i16>,
    /// End the shards' messages with Sync (and read their ReadyForQuery)
    /// instead of Flush: the simple protocol, or an Execute right before
    /// the batch's Sync.
    pub(super) sync: bool,
    /// Whether and when the client gets the RowDescription (of the
    /// visible columns, in the client's formats).
    pub(super) describe: Describe,
    /// The client's Execute row limit (None: all rows): at most that many
    /// rows are sent, then PortalSuspended if exactly that many were (as
    /// PostgreSQL answers an Execute whose limit is reached).
    pub(super) max_rows: Option<u64>,
    /// A plan with a final step: what it sends besides the shards' rows.
    pub(super) final_ctx: Option<super::final_step::FinalCtx>,
}

/// How [`ExecCtx::run_gather`] ended.
pub(super) enum Gathered {
    /// The statement ran; false if it failed (the error was sent).
    Ran(bool),
    /// With [`Request::retry_before_run`]: the prepared statement failed
    /// on every shard before running (at Parse or Bind) with an error of
    /// its text or values (SQLSTATE class 42, 22 or 0A); that ErrorResponse
    /// (shard named), not sent. Nothing ran and every connection is
    /// usable.
    BeforeRun(Bytes),
}

/// When a gather sends the client the RowDescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Describe {
    /// Never (an extended-protocol Execute; a final step's own).
    No,
    /// With the rows, not before an error (the simple protocol: a failed
    /// statement answers ErrorResponse alone).
    WithRows,
    /// Whenever the shards described the result, even if they then fail
    /// (a Describe of the portal answered by its Execute: PostgreSQL
    /// answers the Describe before Execute runs).
    Portal,
}

impl ExecCtx {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_gather(
        &mut self,
        shards: &[String],
        plan: &Arc<GatherPlan>,
        mut req: Request,
        offset: u64,
        limit: Option<u64>,
        having: Vec<(usize, Option<String>)>,
    ) -> Result<Gathered, End> {
        self.gather_synced.clear();
        // Connections and router-injected preludes.
        let mut idxs = Vec::with_capacity(shards.len());
        for s in shards {
            match self.acquire(s).await {
                Ok(i) => idxs.push(i),
                Err(e) => {
                    self.send_error(&e);
                    return Ok(Gathered::Ran(false));
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
                    None => return Ok(Gathered::Ran(false)),
                }
            }
        };
        // A final step's result has the client's formats; the shards'
        // columns are all hidden.
        let client_formats: &[i16] = if plan.finish.is_some() {
            &[]
        } else {
            &req.client_formats
        };
        let formats = match shard_formats(client_formats, visible, plan.hidden) {
            Ok(f) => f,
            Err(e) => {
                self.abandon(&idxs);
                self.send_error(&e);
                return Ok(Gathered::Ran(false));
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
            if req.sync {
                fe::sync(&mut conn.out);
            } else {
                fe::flush(&mut conn.out);
            }
        }
        for &i in &idxs {
            if let Err(e) = self.held[i].conn.flush().await {
                self.abandon(&idxs);
                return self.lost(i, e).map(Gathered::Ran);
            }
            // Until the response is read to its end (below), the connection
            // must not return to the pool: if the client goes away while
            // rows stream, it is closed instead.
            self.held[i].conn.broken = true;
        }
        // Preludes (settings, BEGIN, statement preparation).
        let mut first_error: Option<Bytes> = None;
        // Shards whose statement failed before running (Parse or Bind).
        let mut before_run = 0usize;
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
                    return self.lost(i, e).map(Gathered::Ran);
                }
            }
            if let Some(e) = cap.0 {
                if let Some((id, _)) = &req.prepared {
                    self.held[i].conn.prepared.remove(id);
                }
                first_error.get_or_insert_with(|| {
                    with_shard_detail(&Frame { tag: b'E', data: e }, Some(shards[n].as_str()))
                });
                // A failed settings replay or BEGIN is never retried.
                if cap.1 {
                    before_run += 1;
                }
                phase[n] = Phase::Ended;
            }
        }
        // Row descriptions.
        let mut desc: Option<Frame> = None;
        for (n, &i) in idxs.iter().enumerate() {
            while phase[n] == Phase::Open {
                match next_event!(self, i) {
                    Ok(Ev::Desc(f)) => {
                        desc.get_or_insert(f);
                        break;
                    }
                    Ok(Ev::Error(f)) => {
                        first_error
                            .get_or_insert_with(|| with_shard_detail(&f, Some(shards[n].as_str())));
                        before_run += 1;
                        phase[n] = Phase::Ended;
                    }
                    Ok(Ev::Done) => phase[n] = Phase::Ended,
                    Ok(Ev::Ready) => phase[n] = Phase::Finished,
                    Ok(Ev::Row(_)) => {}
                    Err(e) => {
                        self.abandon(&idxs);
                        return self.lost(i, e).map(Gathered::Ran);
                    }
                }
            }
        }
        let mut failure: Option<PgError> = None;
        let limit = match req.max_rows {
            Some(m) => Some(limit.map_or(m, |l| l.min(m))),
            None => limit,
        };
        let mut window = Window::new(offset, limit);
        let mut arrays = Vec::new();
        let mut final_layout = None;
        let describe = match req.describe {
            _ if plan.finish.is_some() => Describe::No,
            Describe::WithRows if first_error.is_some() => Describe::No,
            d => d,
        };
        if let (Describe::WithRows | Describe::Portal, Some(d)) = (describe, &desc) {
            // The simple protocol's description says text (a binary COPY
            // reads only its names); a portal's, the Bind's formats.
            let portal = describe == Describe::Portal;
            let fmt = |i: usize| if portal && i < visible { formats[i] } else { 0 };
            let _ = synth::row_description_prefix(&mut self.out.buf, d.body(), visible, &fmt);
        }
        if first_error.is_none() {
            let layout = match desc.as_ref().map(|d| row_types(d.body())) {
                Some(Ok(types)) if types.len() == visible + plan.hidden => Layout {
                    visible,
                    types,
                    formats: {
                        let mut f = formats;
                        f.truncate(visible);
                        f
                    },
                },
                _ => {
                    self.abandon(&idxs);
                    self.send_error(&PgError::new(
                        codes::INTERNAL_ERROR,
                        "shards returned an unexpected row description",
                    ));
                    return Ok(Gathered::Ran(false));
                }
            };
            let r = if plan.finish.is_some() {
                let r = self
                    .collect_rows(&idxs, shards, &layout, &mut phase, &mut arrays)
                    .await?;
                final_layout = Some(layout);
                r
            } else if plan.grouping.is_some() {
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
                    return self.lost(i, e).map(Gathered::Ran);
                }
            }
        }
        // After a failure, cancel the shards still running (outside a
        // transaction block: those connections are then not reused, so a
        // late cancel cannot hit a later statement). When every shard had
        // ended and its Sync is read below, nothing is cancelled and every
        // connection is reused.
        let cancelled = (first_error.is_some() || failure.is_some())
            && self.block.is_none()
            && (!req.sync || phase.contains(&Phase::Open));
        if cancelled {
            self.cancel_open(&idxs, shards, &phase).await;
        }
        // Drain what is left so the connections stay usable.
        for (n, &i) in idxs.iter().enumerate() {
            loop {
                let done = match phase[n] {
                    Phase::Finished => true,
                    Phase::Ended => !req.sync,
                    Phase::Open => false,
                };
                if done {
                    break;
                }
                match next_event!(self, i) {
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
                        return self.lost(i, e).map(Gathered::Ran);
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
            if req.sync {
                // Every shard answered the Sync: nothing is pending there.
                self.gather_synced = idxs
                    .iter()
                    .map(|&i| self.held[i].conn.shard.clone())
                    .collect();
            }
        }
        if let Some(e) = first_error {
            if req.retry_before_run && before_run == idxs.len() && frame_of_text(&e) {
                return Ok(Gathered::BeforeRun(e));
            }
            self.forward_error_frame(&e);
            return Ok(Gathered::Ran(false));
        }
        if let Some(e) = failure {
            self.send_error(&e);
            return Ok(Gathered::Ran(false));
        }
        if let (Some(f), Some(ctx), Some(layout)) =
            (&plan.finish, req.final_ctx.take(), final_layout)
        {
            return self
                .run_final(idxs[0], &shards[0], f, ctx, &layout, &arrays, req.max_rows)
                .await
                .map(Gathered::Ran);
        }
        if req.max_rows == Some(window.sent) {
            self.out.buf.extend_from_slice(&[b's', 0, 0, 0, 4]);
            self.portal_suspended = true;
        } else {
            synth::command_complete_count(&mut self.out.buf, "SELECT", window.sent);
        }
        Ok(Gathered::Ran(true))
    }

    /// Sends the queued Describe (statement) with a Flush and reads every
    /// shard's preludes and description; returns the column count.
    pub(super) async fn describe_count(
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
}

/// True if ErrorResponse frame `e` (tag and length included) reports an
/// error of the statement's text or values ([`of_text`]).
fn frame_of_text(e: &[u8]) -> bool {
    of_text(&error_code(e.get(5..).unwrap_or_default()).unwrap_or_default())
}
