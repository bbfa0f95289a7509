//! Scatter-gather without merging at the router: the statement is sent to
//! several shards at once and their responses combined into one client
//! response: the first shard's (DDL, SET), or concatenated rows with summed
//! command-tag counts (plain scatter, multi-shard DML, COPY TO). Sorting,
//! grouping and aggregation are done by the gather executor (`gather/`).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::frontend as fe;

use crate::protocol::backend::{command_tag, tag_count};
use crate::protocol::copy_out::copy_data;
use crate::protocol::{synth, Frame, ProtocolError};

use super::context::{lost_connection, End, ExecCtx};
use super::exchange::{self, ExchangeError, Expect, Sink, Slot};
use super::statement::ClientStmt;

/// How shard responses combine.
#[derive(Debug, Clone)]
pub enum MergeMode {
    /// Identical statements (DDL, SET, writes to reference tables): the
    /// first shard's response is forwarded (its command tag too, row count
    /// included), the others only checked for errors.
    FirstOnly,
    /// Rows of every shard are forwarded; tag counts added.
    Concat,
    /// A multi-row INSERT split by shard: tag counts added, and the
    /// RETURNING rows held until every shard is done, then sent in the
    /// client's VALUES order: the `i`-th row comes from shard number
    /// `rows[i]` (each shard returns its rows in the order it got them).
    /// Rows a shard did not return (`ON CONFLICT DO NOTHING`) are skipped;
    /// should a shard return more, the extra rows follow, in shard order.
    Interleave(std::sync::Arc<[u32]>),
}

/// Accumulated state of a scatter-gather over several shards.
pub struct MergeState {
    mode: MergeMode,
    tag: Option<(String, u64, bool)>,
    first_error: Option<Bytes>,
    /// Shard names, for error details.
    pub shard_names: Vec<String>,
    /// COPY TO: skip the first CopyData of every shard but the first (CSV
    /// header line).
    pub copy_header: bool,
    /// COPY TO in binary format: one file header (the first shard's), one
    /// trailer (written at the end); each shard's are stripped.
    pub copy_binary: bool,
    /// Binary COPY TO: the current shard's last CopyData payload, held
    /// back until it is known whether it ends the shard's stream.
    copy_held: Option<Vec<u8>>,
    copy_done: bool,
    copy_rows_seen: Vec<bool>,
    /// Interleave: the rows held per shard.
    held_rows: Vec<VecDeque<Bytes>>,
}

impl MergeState {
    /// A merge of the given mode.
    pub fn new(mode: MergeMode) -> Self {
        MergeState {
            mode,
            tag: None,
            first_error: None,
            shard_names: Vec::new(),
            copy_header: false,
            copy_binary: false,
            copy_held: None,
            copy_done: false,
            copy_rows_seen: Vec::new(),
            held_rows: Vec::new(),
        }
    }

    /// A sink for the responses of shard number `index` (0 = first).
    pub fn sink(&mut self, index: usize) -> ShardSink<'_> {
        ShardSink {
            st: self,
            first: index == 0,
            shard: index,
        }
    }

    /// The merged command tag's row count (`UPDATE n` → n), if it has one.
    pub fn row_count(&self) -> Option<u64> {
        match &self.tag {
            Some((_, n, true)) => Some(*n),
            _ => None,
        }
    }

    /// Writes the merged result (rows for aggregates, then the command tag),
    /// or the first error, to `out`. Returns true on success.
    pub fn finish(&mut self, out: &mut BytesMut) -> bool {
        if let Some(e) = self.first_error.take() {
            crate::metrics::note_error_body(e.get(5..).unwrap_or_default());
            out.extend_from_slice(&e);
            return false;
        }
        if self.copy_done {
            if self.copy_binary {
                copy_data(out, &(-1i16).to_be_bytes());
            }
            out.extend_from_slice(&[b'c', 0, 0, 0, 4]);
        }
        if let MergeMode::Interleave(order) = &self.mode {
            for &n in order.iter() {
                if let Some(r) = self
                    .held_rows
                    .get_mut(n as usize)
                    .and_then(VecDeque::pop_front)
                {
                    out.extend_from_slice(&r);
                }
            }
            for r in self.held_rows.iter_mut().flat_map(std::mem::take) {
                out.extend_from_slice(&r);
            }
        }
        if let Some((head, n, counted)) = &self.tag {
            if *counted {
                synth::command_complete_count(out, head, *n);
            } else {
                synth::command_complete(out, head);
            }
        }
        true
    }

    fn on_tag(&mut self, f: &Frame) {
        let Ok(tag) = command_tag(f.body()) else {
            return;
        };
        match (&mut self.tag, tag_count(tag)) {
            (None, Some((h, n))) => self.tag = Some((h.to_string(), n, true)),
            (None, None) => self.tag = Some((tag.to_string(), 0, false)),
            (Some((_, total, true)), Some((_, n))) => *total += n,
            _ => {}
        }
    }
}

/// Bytes of a binary COPY file header (signature, flags, extension length;
/// PostgreSQL docs, COPY "Binary Format").
const BINARY_COPY_HEADER: usize = 19;

/// Per-shard view of a [`MergeState`].
pub struct ShardSink<'a> {
    st: &'a mut MergeState,
    first: bool,
    shard: usize,
}

impl Sink for ShardSink<'_> {
    /// Held back as the first error; counted when `finish` writes it.
    fn error(&mut self, out: &mut BytesMut, f: &Frame) {
        self.frame(out, f);
    }
    fn frame(&mut self, out: &mut BytesMut, f: &Frame) {
        match f.tag {
            b'E' => {
                if self.st.first_error.is_none() {
                    self.st.first_error = Some(with_shard_detail(
                        f,
                        self.st.shard_names.get(self.shard).map(String::as_str),
                    ));
                }
            }
            // FirstOnly: one shard's row count (each shard wrote its own
            // copy of the same rows), not the sum.
            b'C' if self.first
                || matches!(self.st.mode, MergeMode::Concat | MergeMode::Interleave(_)) =>
            {
                self.st.on_tag(f)
            }
            b'C' => {}
            b'd' => {
                if self.st.copy_rows_seen.len() <= self.shard {
                    self.st.copy_rows_seen.resize(self.shard + 1, false);
                }
                let seen = std::mem::replace(&mut self.st.copy_rows_seen[self.shard], true);
                if self.st.copy_binary {
                    // The file header (19 bytes) starts each shard's
                    // stream; keep the first shard's.
                    let payload = f.data.get(5..).unwrap_or_default();
                    let payload = if self.first || seen {
                        payload
                    } else {
                        payload.get(BINARY_COPY_HEADER..).unwrap_or_default()
                    };
                    if let Some(prev) = self.st.copy_held.replace(payload.to_vec()) {
                        copy_data(out, &prev);
                    }
                } else if self.first || !self.st.copy_header || seen {
                    out.extend_from_slice(&f.data);
                }
            }
            b'c' => {
                // The shard's last CopyData ends with the 2-byte trailer.
                if let Some(prev) = self.st.copy_held.take() {
                    let keep = prev.len().saturating_sub(2);
                    if keep > 0 {
                        copy_data(out, &prev[..keep]);
                    }
                }
                self.st.copy_done = true
            }
            b'D' => match self.st.mode {
                MergeMode::Concat => out.extend_from_slice(&f.data),
                MergeMode::Interleave(_) => {
                    if self.st.held_rows.len() <= self.shard {
                        self.st.held_rows.resize_with(self.shard + 1, VecDeque::new);
                    }
                    self.st.held_rows[self.shard].push_back(f.data.clone());
                }
                MergeMode::FirstOnly => {
                    if self.first {
                        out.extend_from_slice(&f.data)
                    }
                }
            },
            _ => {
                if self.first {
                    out.extend_from_slice(&f.data);
                }
            }
        }
    }
    fn synth(&mut self, out: &mut BytesMut, b: &[u8]) {
        if self.first {
            out.extend_from_slice(b);
        }
    }
}

/// Re-encodes an ErrorResponse adding "shard: NAME" to its DETAIL (or as
/// DETAIL when it has none), keeping every other field unchanged.
pub(crate) fn with_shard_detail(f: &Frame, shard: Option<&str>) -> Bytes {
    let Some(shard) = shard else {
        return f.data.clone();
    };
    let Ok(fields) = crate::protocol::backend::error_fields(f.body()) else {
        return f.data.clone();
    };
    let mut body = Vec::with_capacity(f.data.len() + 32);
    let mut had_detail = false;
    for (code, val) in &fields {
        body.push(*code);
        if *code == b'D' {
            had_detail = true;
            body.extend_from_slice(format!("{val} (shard: {shard})").as_bytes());
        } else {
            body.extend_from_slice(val.as_bytes());
        }
        body.push(0);
    }
    if !had_detail {
        body.push(b'D');
        body.extend_from_slice(format!("shard: {shard}").as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(b'E');
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(&body);
    Bytes::from(out)
}

impl ExecCtx {
    /// Sends per-shard messages to several shards at once and merges the
    /// responses. `parts` = (shard, encoded messages, slots). Returns false
    /// if any shard failed (the error was sent).
    pub async fn exchange_many(
        &mut self,
        parts: Vec<(String, Bytes, VecDeque<Slot>)>,
        mode: MergeMode,
    ) -> Result<bool, End> {
        self.exchange_many_with(parts, MergeState::new(mode)).await
    }

    /// [`ExecCtx::exchange_many`] with a prepared merge state.
    pub async fn exchange_many_with(
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
    pub fn finish_merge(&mut self, mut merge: MergeState) -> bool {
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

    /// Sends one message (plus Flush) to several shards and merges.
    pub async fn many_message(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> Frame {
        let mut b = BytesMut::new();
        synth::command_complete(&mut b, s);
        Frame {
            tag: b'C',
            data: b.freeze(),
        }
    }

    fn merged(mode: MergeMode, tags: &[&str]) -> BytesMut {
        let mut st = MergeState::new(mode);
        let mut out = BytesMut::new();
        for (i, t) in tags.iter().enumerate() {
            st.sink(i).frame(&mut out, &tag(t));
        }
        assert!(st.finish(&mut out));
        out
    }

    #[test]
    fn first_only_keeps_the_first_count_concat_adds() {
        let mut want = BytesMut::new();
        synth::command_complete(&mut want, "UPDATE 3");
        assert_eq!(
            merged(MergeMode::FirstOnly, &["UPDATE 3", "UPDATE 3"]),
            want
        );
        let mut want = BytesMut::new();
        synth::command_complete(&mut want, "INSERT 0 5");
        assert_eq!(
            merged(MergeMode::Concat, &["INSERT 0 2", "INSERT 0 3"]),
            want
        );
    }
}
