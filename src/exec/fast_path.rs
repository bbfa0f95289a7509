//! The single-shard fast path: the client's messages go to one shard in
//! one write and its responses are forwarded byte for byte (no decoding of
//! rows), for simple queries and for whole extended-protocol batches.

use std::collections::VecDeque;

use bytes::Bytes;
use postgres_protocol::message::frontend as fe;

use crate::protocol::synth;

use super::context::{End, ExecCtx};
use super::exchange::{self, Direct, ExchangeError, Expect, Slot};
use super::message::Item;
use super::statement::ClientStmt;

impl ExecCtx {
    /// Sends `msgs` (already encoded client messages, with their `slots`) to
    /// `shard` and forwards the responses. Returns false if the statement
    /// failed (error already sent to the client). The slot queue is the
    /// session's own, reused (no allocation per query).
    pub async fn exchange_one(
        &mut self,
        shard: &str,
        msgs: &[u8],
        user_slots: &[Slot],
    ) -> Result<bool, End> {
        let idx = match self.acquire(shard).await {
            Ok(i) => i,
            Err(e) => {
                self.send_error(&e);
                return Ok(false);
            }
        };
        let mut slots = std::mem::take(&mut self.slot_buf);
        slots.clear();
        self.prelude(idx, &mut slots);
        slots.extend(user_slots.iter().cloned());
        let conn = &mut self.held[idx].conn;
        conn.out.extend_from_slice(msgs);
        let r = match conn.flush().await {
            Ok(()) => exchange::run(conn, &mut slots, &mut self.out, &mut Direct).await,
            Err(e) => Err(ExchangeError::Backend(e)),
        };
        slots.clear();
        self.slot_buf = slots;
        self.after_exchange(idx, r)
    }

    /// Queues `stmt`'s Parse on held connection `idx` unless it is there.
    pub fn ensure_prepared(&mut self, idx: usize, stmt: &ClientStmt, slots: &mut VecDeque<Slot>) {
        let conn = &mut self.held[idx].conn;
        if !conn.prepared.contains(&stmt.id) {
            conn.out.extend_from_slice(&stmt.parse_frame);
            slots.push_back(Slot::Swallow(Expect::Parse(Some(stmt.id))));
            // Counted as prepared for the rest of this batch; an error skips
            // to Sync and is reconciled below.
            conn.prepared.insert(stmt.id);
        }
    }

    /// Runs a whole extended-protocol batch whose messages all route to
    /// `shard` (or need no shard) in one write, statements prepared on
    /// demand, responses forwarded byte for byte; ParseComplete and
    /// CloseComplete for statements the connection already has are
    /// answered by the router. Returns false when the batch failed (the
    /// shard's or the router's error was sent): the session then skips
    /// messages until Sync.
    pub async fn batch_fast(&mut self, shard: &str, items: Vec<Item>) -> Result<bool, End> {
        let idx = match self.acquire(shard).await {
            Ok(i) => i,
            Err(e) => {
                self.send_error(&e);
                return Ok(false);
            }
        };
        let mut slots = VecDeque::with_capacity(items.len() + 2);
        self.prelude(idx, &mut slots);
        let mut injected = Vec::new();
        for it in items {
            match it {
                Item::Parse(stmt) => {
                    let conn = &mut self.held[idx].conn;
                    if conn.prepared.contains(&stmt.id) {
                        slots.push_back(Slot::Synth(Bytes::from_static(synth::PARSE_COMPLETE)));
                    } else {
                        conn.out.extend_from_slice(&stmt.parse_frame);
                        conn.prepared.insert(stmt.id);
                        injected.push(stmt.id);
                        slots.push_back(Slot::Forward(Expect::Parse(Some(stmt.id))));
                    }
                }
                Item::Bind { stmt, frame, .. } => {
                    if !self.held[idx].conn.prepared.contains(&stmt.id) {
                        injected.push(stmt.id);
                    }
                    self.ensure_prepared(idx, &stmt, &mut slots);
                    self.held[idx].conn.out.extend_from_slice(&frame);
                    slots.push_back(Slot::Forward(Expect::Bind));
                }
                Item::DescribeStmt { stmt, frame } => {
                    if !self.held[idx].conn.prepared.contains(&stmt.id) {
                        injected.push(stmt.id);
                    }
                    self.ensure_prepared(idx, &stmt, &mut slots);
                    self.held[idx].conn.out.extend_from_slice(&frame);
                    slots.push_back(Slot::Forward(Expect::DescribeStatement));
                }
                Item::DescribePortal { frame, .. } => {
                    self.held[idx].conn.out.extend_from_slice(&frame);
                    slots.push_back(Slot::Forward(Expect::DescribePortal));
                }
                Item::Execute { frame, .. } => {
                    self.held[idx].conn.out.extend_from_slice(&frame);
                    slots.push_back(Slot::Forward(Expect::Execute));
                }
                Item::ClosePortal { frame, .. } => {
                    self.held[idx].conn.out.extend_from_slice(&frame);
                    slots.push_back(Slot::Forward(Expect::Close));
                }
                Item::CloseStmt => {
                    slots.push_back(Slot::Synth(Bytes::from_static(synth::CLOSE_COMPLETE)))
                }
                Item::Sync => {
                    fe::sync(&mut self.held[idx].conn.out);
                    slots.push_back(Slot::Forward(Expect::Sync));
                }
                Item::Flush => fe::flush(&mut self.held[idx].conn.out),
                Item::Fail(_) | Item::FailFrame(_) => {}
            }
        }
        let conn = &mut self.held[idx].conn;
        let r = match conn.flush().await {
            Ok(()) => exchange::run(conn, &mut slots, &mut self.out, &mut Direct).await,
            Err(e) => Err(ExchangeError::Backend(e)),
        };
        if matches!(r, Ok(o) if o.error) {
            // Statements whose Parse was skipped or failed are not prepared.
            if let Some(h) = self.held.get_mut(idx) {
                for id in injected {
                    h.conn.prepared.remove(&id);
                }
            }
        }
        self.after_exchange(idx, r)
    }

    /// Sends one message (plus Flush) to `shard`, preparing `stmt` first if
    /// needed, and forwards its response.
    pub async fn one_message(
        &mut self,
        shard: &str,
        stmt: Option<&ClientStmt>,
        frame: &[u8],
        expect: Expect,
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
        if let Some(s) = stmt {
            self.ensure_prepared(idx, s, &mut slots);
        }
        let conn = &mut self.held[idx].conn;
        conn.out.extend_from_slice(frame);
        fe::flush(&mut conn.out);
        slots.push_back(Slot::Forward(expect));
        let r = match conn.flush().await {
            Ok(()) => exchange::run(conn, &mut slots, &mut self.out, &mut Direct).await,
            Err(e) => Err(ExchangeError::Backend(e)),
        };
        if let (Some(s), Ok(o)) = (stmt, &r) {
            if o.error {
                if let Some(h) = self.held.get_mut(idx) {
                    h.conn.prepared.remove(&s.id);
                }
            }
        }
        self.after_exchange(idx, r)
    }
}
