//! The simple-protocol fast path over a prepared statement: a statement
//! that runs on one shard goes there as Parse (once per backend
//! connection) + Bind + Describe + Execute + Sync of its normalized text,
//! the literals as parameters ([`crate::plan::AutoStmt`]), and the
//! responses are forwarded as the simple protocol gives them (PostgreSQL
//! docs §55.2.2 and §55.2.3): ParseComplete, BindComplete and NoData are
//! dropped, an ErrorResponse's position is moved back into the client's
//! text.
//!
//! Outside a transaction block, a statement whose Parse or Bind fails with
//! an error of its text or values (SQLSTATE class 42, 22 or 0A; not a
//! cancel, a timeout or a shortage) is run again as written (nothing ran:
//! the error came before execution), so the client sees PostgreSQL's own
//! answer to its text; if that one succeeds, the text is not auto-prepared
//! again. Inside a block only parameters that cannot fail where the
//! literal did not are used (see [`crate::plan::AutoStmt::trusted`]); a
//! syntax error (42601) or an uninferable parameter type (42P18, 42P08) at
//! Parse there is the client's error, and turns the text's auto-preparing
//! off.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend as fe;
use postgres_protocol::IsNull;
use smallvec::SmallVec;

use crate::plan::{AutoParams, AutoStmt, Literals};
use crate::protocol::backend::{error_code, error_fields};
use crate::protocol::error::codes;
use crate::protocol::{Frame, PgError};

use super::context::{End, ExecCtx};
use super::exchange::{self, ExchangeError, Expect, Sink, Slot};
use super::statement::BackendName;

/// What [`ExecCtx::exchange_auto`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoRun {
    /// Nothing: send the statement as written.
    Declined,
    /// The statement ran; false if it failed (error sent to the client).
    Done(bool),
    /// The prepared form failed before running: send the statement as
    /// written, and [`AutoStmt::refuse`] the text if that succeeds.
    Original,
}

/// The client's text: where in it the statement starts.
#[derive(Debug, Clone, Copy)]
pub struct ClientText<'a> {
    /// The statement (as planned: its literals are `lits`).
    pub sql: &'a str,
    /// The Query message's text before the statement (error positions
    /// count from the start of the Query's text).
    pub before: &'a str,
}

/// Forwards an extended-protocol response as its simple-protocol form:
/// NoData dropped; the statement's ErrorResponse kept for
/// [`ExecCtx::exchange_auto`] (with the message it answered), an error of
/// the router's own queries before it (settings replay) forwarded.
struct SimpleSink {
    error: Option<(Frame, Expect)>,
}

impl Sink for SimpleSink {
    #[inline]
    fn frame(&mut self, out: &mut BytesMut, f: &Frame) {
        if f.tag != b'n' {
            out.extend_from_slice(&f.data);
        }
    }

    fn error_at(&mut self, out: &mut BytesMut, f: &Frame, at: Expect) {
        match at {
            Expect::Query => self.error(out, f),
            _ => {
                self.error.get_or_insert_with(|| (f.clone(), at));
            }
        }
    }
}

impl ExecCtx {
    /// Runs the statement `text.sql` (literals `lits`, normalized text
    /// `stmt`) on `shard` as a prepared statement, if this execution may
    /// be (see [`AutoRun`] and the module docs).
    ///
    /// Errors: [`End`] when the client connection fails; a shard's error
    /// or a lost backend is reported to the client (`Done(false)`).
    pub async fn exchange_auto(
        &mut self,
        shard: &str,
        stmt: &AutoStmt,
        text: ClientText<'_>,
        lits: &Literals,
    ) -> Result<AutoRun, End> {
        if stmt.refused() {
            return Ok(AutoRun::Declined);
        }
        let Some(params) = stmt.params(text.sql, lits) else {
            return Ok(AutoRun::Declined);
        };
        let undoable = self.block.is_none();
        if !undoable && !stmt.trusted(&params) {
            return Ok(AutoRun::Declined);
        }
        // One value per parameter: its first literal's.
        let mut values: SmallVec<[Cow<'_, str>; 8]> = SmallVec::with_capacity(lits.len());
        for i in 0..lits.len() {
            if params.slots.get(i).copied() != Some(values.len() as u32 + 1) {
                continue;
            }
            match lits.value(text.sql, i) {
                Some(v) => values.push(v),
                None => return Ok(AutoRun::Declined),
            }
        }
        let idx = match self.acquire(shard).await {
            Ok(i) => i,
            Err(e) => {
                self.send_error(&e);
                return Ok(AutoRun::Done(false));
            }
        };
        let mut slots = std::mem::take(&mut self.slot_buf);
        slots.clear();
        self.prelude(idx, &mut slots);
        let conn = &mut self.held[idx].conn;
        let name = BackendName::new(params.id);
        let name = name.as_str();
        if !conn.prepared.contains(&params.id) {
            let _ = fe::parse(
                name,
                &stmt.text_for(&params),
                params.types.iter().copied(),
                &mut conn.out,
            );
            slots.push_back(Slot::Swallow(Expect::Parse(Some(params.id))));
        }
        let bound = fe::bind(
            "",
            name,
            std::iter::empty(),
            values.iter(),
            |v, buf| {
                buf.put_slice(v.as_bytes());
                Ok(IsNull::No)
            },
            std::iter::empty(),
            &mut conn.out,
        );
        if bound.is_err() {
            // Cannot happen below 32,768 parameters or 2 GiB of values
            // (MAX_PARAMS literals of a text within the message limit):
            // the half-written messages are never sent.
            conn.broken = true;
            self.held.remove(idx);
            slots.clear();
            self.slot_buf = slots;
            self.send_error(&PgError::new(
                codes::PROGRAM_LIMIT_EXCEEDED,
                "statement has too many or too large parameters",
            ));
            return Ok(AutoRun::Done(false));
        }
        let _ = fe::describe(b'P', "", &mut conn.out);
        let _ = fe::execute("", 0, &mut conn.out);
        fe::sync(&mut conn.out);
        slots.extend([
            Slot::Swallow(Expect::Bind),
            Slot::Forward(Expect::DescribePortal),
            Slot::Forward(Expect::Execute),
            Slot::Swallow(Expect::Sync),
        ]);
        let mut sink = SimpleSink { error: None };
        let r = match conn.flush().await {
            Ok(()) => exchange::run(conn, &mut slots, &mut self.out, &mut sink).await,
            Err(e) => Err(ExchangeError::Backend(e)),
        };
        slots.clear();
        self.slot_buf = slots;
        if r.is_ok() {
            if let Some((f, at)) = sink.error {
                let code = error_code(f.body()).unwrap_or_default();
                let before_run = matches!(at, Expect::Parse(_) | Expect::Bind);
                if undoable && before_run && of_text(&code) {
                    return Ok(AutoRun::Original);
                }
                if matches!(at, Expect::Parse(_))
                    && ["42601", "42P18", "42P08"].contains(&code.as_str())
                {
                    // A parameter where the grammar wants a literal, or one
                    // whose type cannot be inferred: never again.
                    stmt.refuse();
                }
                let mapped = client_error(f.body(), stmt, &params, text, lits);
                crate::metrics::note_error_body(mapped.get(5..).unwrap_or_default());
                self.out.buf.extend_from_slice(&mapped);
            } else {
                stmt.verify(&params);
            }
        }
        self.after_exchange(idx, r).map(AutoRun::Done)
    }
}

/// True if SQLSTATE `code` reports an error of the statement's text or
/// values (class 42, 22 or 0A), not of the moment (a cancel, a timeout, a
/// shortage): a prepared form that failed so before running is run again
/// as written.
pub(crate) fn of_text(code: &str) -> bool {
    ["42", "22", "0A"].iter().any(|c| code.starts_with(c))
}

/// The ErrorResponse frame the client gets for a shard's error `body` about
/// the prepared form of `text`: the position (`P`, characters from 1) moved
/// from the normalized text to the client's, the context line naming a
/// parameter dropped (and its literal's position given when the error has
/// none), other fields unchanged.
fn client_error(
    body: &[u8],
    stmt: &AutoStmt,
    params: &AutoParams,
    text: ClientText<'_>,
    lits: &Literals,
) -> BytesMut {
    let mut out = BytesMut::with_capacity(body.len() + 16);
    out.put_u8(b'E');
    out.put_i32(0);
    let Ok(fields) = error_fields(body) else {
        out.clear();
        out.put_u8(b'E');
        out.put_i32(4 + body.len() as i32);
        out.put_slice(body);
        return out;
    };
    let to_client = |byte_in_sql: usize| -> Option<usize> {
        let prefix = text.sql.get(..byte_in_sql)?;
        Some(text.before.chars().count() + prefix.chars().count() + 1)
    };
    let put = |out: &mut BytesMut, code: u8, v: &str| {
        out.put_u8(code);
        out.put_slice(v.as_bytes());
        out.put_u8(0);
    };
    let mut has_position = false;
    let mut param = None;
    for (code, v) in &fields {
        match code {
            b'P' => {
                has_position = true;
                let pos = v
                    .parse::<usize>()
                    .ok()
                    .and_then(|p| {
                        let prepared = stmt.text_for(params);
                        let at = match prepared.char_indices().nth(p.checked_sub(1)?) {
                            Some((b, _)) => b,
                            None => prepared.len(),
                        };
                        stmt.original_offset(params, text.sql, lits, at)
                    })
                    .and_then(to_client);
                match pos {
                    Some(p) => put(&mut out, b'P', itoa::Buffer::new().format(p)),
                    None => put(&mut out, b'P', v),
                }
            }
            b'W' => {
                let kept: Vec<&str> = v
                    .split('\n')
                    .filter(
                        |line| match line.strip_prefix("unnamed portal parameter $") {
                            Some(rest) => {
                                let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                                param = rest.get(..digits).and_then(|d| d.parse::<usize>().ok());
                                false
                            }
                            None => true,
                        },
                    )
                    .collect();
                if !kept.is_empty() {
                    put(&mut out, b'W', &kept.join("\n"));
                }
            }
            _ => put(&mut out, *code, v),
        }
    }
    if !has_position {
        // The literal a parameter's value came from.
        let at = param
            .and_then(|k| (0..lits.len()).find(|&i| params.slots.get(i) == Some(&(k as u32))))
            .and_then(|i| lits.span(i))
            .and_then(|span| to_client(span.start));
        if let Some(p) = at {
            put(&mut out, b'P', itoa::Buffer::new().format(p));
        }
    }
    out.put_u8(0);
    let len = (out.len() - 1) as i32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    out
}
