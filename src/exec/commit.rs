//! Ending a transaction block: one-phase commit when at most one
//! participant wrote, two-phase commit with a durable decision otherwise
//! (PostgreSQL docs "PREPARE TRANSACTION", "COMMIT PREPARED"; the decision
//! log is `txn::log`), or sequential commits in `best_effort` mode.
//!
//! Participants are the pinned backend connections that received BEGIN.
//! A participant *wrote* when a statement the planner classifies as a write
//! ran on it; the others are asked `pg_current_xact_id_if_assigned()` (a
//! transaction without an xid has nothing to commit), so a SELECT calling
//! a writing function is still committed atomically.
//!
//! Two-phase commit: PREPARE TRANSACTION 'gid' on every writer (readers
//! COMMIT in the same round) → INSERT of the COMMIT decision in the catalog
//! (the commit point) → COMMIT PREPARED on every writer. A failure before
//! the commit point rolls everything back; after it the client is told
//! COMMIT and the recovery loop (`txn::recovery`) finishes any participant
//! that could not be reached.

use crate::metrics::TxnKind;

use postgres_protocol::message::frontend as fe;

use crate::protocol::backend::error_fields;
use crate::protocol::error::codes;
use crate::protocol::{synth, Frame, PgError, ProtocolError};
use crate::txn::failpoint::{self, Failpoint};
use crate::txn::log::{Decision, LogError};
use crate::txn::TransactionMode;

use super::concat::with_shard_detail;
use super::context::{End, ExecCtx};

/// A participant's answer to one simple query.
enum Reply {
    /// Success; the rows (text).
    Ok(Vec<Vec<Option<String>>>),
    /// ErrorResponse from the shard.
    Failed(Frame),
    /// The connection failed (it is marked broken).
    Lost(ProtocolError),
}

impl Reply {
    fn is_ok(&self) -> bool {
        matches!(self, Reply::Ok(_))
    }
}

/// SQLSTATE 42704 (undefined_object): "prepared transaction with
/// identifier ... does not exist" — already resolved by recovery.
const UNDEFINED_OBJECT: &str = "42704";

impl ExecCtx {
    /// Ends the transaction block: COMMIT (or ROLLBACK when `commit` is false
    /// or the block failed) on every participant. Returns the command tag to
    /// report, or None when it failed (the error was sent).
    pub async fn end_block(&mut self, commit: bool) -> Result<Option<&'static str>, End> {
        let Some(block) = self.block.take() else {
            return Ok(Some(if commit { "COMMIT" } else { "ROLLBACK" }));
        };
        let commit = commit && !block.failed;
        if block.ddl {
            self.state.routing().forget_schemas();
        }
        let parts: Vec<usize> = (0..self.held.len())
            .filter(|&i| self.held[i].began)
            .collect();
        let r = if !commit {
            self.one_round_end(&parts, "ROLLBACK").await
        } else if parts.len() <= 1 {
            self.one_round_end(&parts, "COMMIT").await
        } else if self.state.txn.mode == TransactionMode::BestEffort {
            self.commit_sequential(&parts).await
        } else {
            self.commit_distributed(&parts).await
        };
        if commit && matches!(r, Ok(true)) {
            self.commit_block_settings(&block, &parts);
        }
        self.state.metrics.transaction(match (commit, &r) {
            (true, Ok(true)) if parts.len() <= 1 => TxnKind::SingleShard,
            (true, Ok(true)) if self.state.txn.mode == TransactionMode::BestEffort => {
                TxnKind::BestEffort
            }
            (true, Ok(true)) => TxnKind::TwoPhase,
            _ => TxnKind::Rollback,
        });
        self.held.clear();
        r.map(|ok| ok.then_some(if commit { "COMMIT" } else { "ROLLBACK" }))
    }

    /// Sends `sql` to every participant in `parts` at once; true if all
    /// succeeded (the first error is forwarded otherwise).
    async fn one_round_end(&mut self, parts: &[usize], sql: &str) -> Result<bool, End> {
        let replies = self.round(parts, |_| sql.to_string()).await;
        Ok(self.forward_first_error(parts, &replies))
    }

    /// `transaction_mode = twopc` commit of several participants.
    async fn commit_distributed(&mut self, parts: &[usize]) -> Result<bool, End> {
        let mut writers: Vec<usize> = parts
            .iter()
            .copied()
            .filter(|&i| self.held[i].wrote)
            .collect();
        let unknown: Vec<usize> = parts
            .iter()
            .copied()
            .filter(|&i| !self.held[i].wrote)
            .collect();
        if !unknown.is_empty() {
            let replies = self
                .round(&unknown, |_| {
                    "SELECT pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL".into()
                })
                .await;
            if !self.forward_first_error(&unknown, &replies) {
                self.round(parts, |_| "ROLLBACK".into()).await;
                return Ok(false);
            }
            for (&i, r) in unknown.iter().zip(&replies) {
                if matches!(r, Reply::Ok(rows) if rows.first().and_then(|r| r.first()).is_some_and(|v| v.as_deref() == Some("t")))
                {
                    writers.push(i);
                }
            }
        }
        let readers: Vec<usize> = parts
            .iter()
            .copied()
            .filter(|i| !writers.contains(i))
            .collect();
        if writers.len() <= 1 {
            // One-phase: the only writer's COMMIT decides; readers have
            // nothing to commit.
            return self.one_round_end(parts, "COMMIT").await;
        }
        let gid = self.state.gids.next();
        let lit = gid.replace('\'', "''");
        // Phase 1: PREPARE on writers, COMMIT on readers, one round trip.
        let all: Vec<usize> = writers.iter().chain(&readers).copied().collect();
        let phase1 = |i: usize| {
            if writers.contains(&i) {
                format!("PREPARE TRANSACTION '{lit}'")
            } else {
                "COMMIT".to_string()
            }
        };
        let replies = self
            .staged_round(&all, phase1, Failpoint::AfterPrepareSome)
            .await;
        if !self.forward_first_error(&all, &replies) {
            // Undo the prepared ones; a participant that cannot be told is
            // left to recovery (no decision → abort after the grace period).
            let prepared: Vec<usize> = writers
                .iter()
                .zip(&replies)
                .filter(|(_, r)| r.is_ok())
                .map(|(&i, _)| i)
                .collect();
            self.round(&prepared, |_| format!("ROLLBACK PREPARED '{lit}'"))
                .await;
            return Ok(false);
        }
        // The commit point.
        let shards: Vec<String> = writers
            .iter()
            .map(|&i| self.held[i].conn.shard.to_string())
            .collect();
        let decision = match self.state.decision_log() {
            Some(log) => log.decide_commit(&gid, &shards).await,
            None => Err(LogError::NotWritten(
                "the router has no decision log".into(),
            )),
        };
        match decision {
            Ok(Decision::Commit) => {}
            Ok(Decision::Abort) => {
                self.round(&writers, |_| format!("ROLLBACK PREPARED '{lit}'"))
                    .await;
                self.send_error(
                    &PgError::new(
                        "40000",
                        "the distributed transaction was rolled back by 2PC recovery before its commit decision was recorded",
                    )
                    .with_detail(format!("gid: {gid}")),
                );
                return Ok(false);
            }
            Err(e @ LogError::NotWritten(_)) => {
                self.round(&writers, |_| format!("ROLLBACK PREPARED '{lit}'"))
                    .await;
                self.send_error(
                    &PgError::new(
                        codes::CONNECTION_FAILURE,
                        format!("{e}; the transaction was rolled back"),
                    )
                    .with_detail(format!("gid: {gid}")),
                );
                return Ok(false);
            }
            Err(e @ LogError::Unknown(_)) => {
                self.send_error(
                    &PgError::new("08007", e.to_string())
                        .with_detail(format!("gid: {gid}; prepared on shards {}", shards.join(", ")))
                        .with_hint("the recovery loop commits it on every shard if the decision was recorded, else rolls it back"),
                );
                return Ok(false);
            }
        }
        failpoint::hit(Failpoint::AfterDecision).await;
        // Phase 2. The decision is durable: whatever happens now, the
        // client is told COMMIT; recovery finishes unreachable shards.
        let replies = self
            .staged_round(
                &writers,
                |_| format!("COMMIT PREPARED '{lit}'"),
                Failpoint::AfterCommitSome,
            )
            .await;
        for (&i, r) in writers.iter().zip(replies) {
            match r {
                Reply::Ok(_) => {}
                Reply::Failed(f) if error_code(&f) == Some(UNDEFINED_OBJECT) => {}
                Reply::Failed(f) => tracing::warn!(
                    shard = %self.held[i].conn.shard,
                    gid,
                    "COMMIT PREPARED failed ({}); left to 2PC recovery",
                    error_code(&f).unwrap_or("?????")
                ),
                Reply::Lost(e) => tracing::warn!(
                    shard = %self.held[i].conn.shard,
                    gid,
                    "lost the shard during COMMIT PREPARED ({e}); left to 2PC recovery"
                ),
            }
        }
        Ok(true)
    }

    /// `transaction_mode = best_effort`: COMMIT participants one by one; on
    /// the first failure roll back the rest, forward the error and warn
    /// which shards had already committed.
    async fn commit_sequential(&mut self, parts: &[usize]) -> Result<bool, End> {
        for (n, &i) in parts.iter().enumerate() {
            let mark = self.out.buf.len();
            let r = self.round(&[i], |_| "COMMIT".into()).await;
            if self.forward_first_error(&[i], &r) {
                continue;
            }
            let rest = &parts[n + 1..];
            self.round(rest, |_| "ROLLBACK".into()).await;
            if n > 0 {
                let names = |ix: &[usize]| {
                    ix.iter()
                        .map(|&k| self.held[k].conn.shard.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let msg = format!(
                    "transaction partially committed: committed on shards {}, not committed on shards {}",
                    names(&parts[..n]),
                    names(&parts[n..])
                );
                // The WARNING goes before the error.
                let tail = self.out.buf.split_off(mark);
                synth::notice(
                    &mut self.out.buf,
                    &PgError {
                        severity: "WARNING",
                        ..PgError::new("01000", msg)
                    },
                );
                self.out.buf.unsplit(tail);
            }
            return Ok(false);
        }
        Ok(true)
    }

    /// Rolls back the open block on every participant without reporting
    /// their replies (the statement's own error was already sent); a
    /// connection that fails is marked broken and not pooled.
    pub async fn abort_block(&mut self) {
        self.block = None;
        let parts: Vec<usize> = (0..self.held.len())
            .filter(|&i| self.held[i].began)
            .collect();
        self.round(&parts, |_| "ROLLBACK".into()).await;
        self.held.clear();
    }

    /// Sends one simple query per participant, all before reading.
    async fn send_round(
        &mut self,
        parts: &[usize],
        sql: impl Fn(usize) -> String,
    ) -> Vec<Result<(), ProtocolError>> {
        let mut out = Vec::with_capacity(parts.len());
        for &i in parts {
            let conn = &mut self.held[i].conn;
            let r = match fe::query(&sql(i), &mut conn.out) {
                Ok(()) => conn.flush().await,
                Err(e) => Err(ProtocolError::Io(e)),
            };
            out.push(r);
        }
        out
    }

    /// A [`ExecCtx::round`] passing failpoint `fp` after the first
    /// participant succeeded. When `fp` is armed the first participant is
    /// asked alone before the others (else everything is sent at once).
    async fn staged_round(
        &mut self,
        parts: &[usize],
        sql: impl Fn(usize) -> String,
        fp: Failpoint,
    ) -> Vec<Reply> {
        if !failpoint::armed(fp) || parts.is_empty() {
            let replies = self.round(parts, sql).await;
            if replies.first().is_some_and(Reply::is_ok) {
                failpoint::hit(fp).await;
            }
            return replies;
        }
        let mut replies = self.round(&parts[..1], &sql).await;
        if replies[0].is_ok() {
            failpoint::hit(fp).await;
        }
        replies.extend(self.round(&parts[1..], &sql).await);
        replies
    }

    /// [`ExecCtx::send_round`] then the replies, in `parts` order.
    async fn round(&mut self, parts: &[usize], sql: impl Fn(usize) -> String) -> Vec<Reply> {
        let sent = self.send_round(parts, sql).await;
        let mut replies = Vec::with_capacity(parts.len());
        for (&i, s) in parts.iter().zip(sent) {
            replies.push(match s {
                Err(e) => Reply::Lost(e),
                Ok(()) => self.read_reply(i).await,
            });
        }
        replies
    }

    /// Reads one simple-query response from held connection `i`.
    async fn read_reply(&mut self, i: usize) -> Reply {
        match self.held[i].conn.read_simple().await {
            Ok((rows, None)) => Reply::Ok(rows),
            Ok((_, Some(e))) => Reply::Failed(e),
            Err(e) => Reply::Lost(e),
        }
    }

    /// Forwards the first failure among `replies` (of `parts`) to the
    /// client with the shard named in DETAIL; true if there was none.
    fn forward_first_error(&mut self, parts: &[usize], replies: &[Reply]) -> bool {
        for (&i, r) in parts.iter().zip(replies) {
            let shard = self.held[i].conn.shard.to_string();
            match r {
                Reply::Ok(_) => {}
                Reply::Failed(f) => {
                    self.forward_error_frame(&with_shard_detail(f, Some(&shard)));
                    return false;
                }
                Reply::Lost(e) => {
                    self.send_error(
                        &PgError::new(
                            codes::CONNECTION_FAILURE,
                            format!("lost connection to shard \"{shard}\": {e}"),
                        )
                        .with_detail(format!("shard: {shard}")),
                    );
                    return false;
                }
            }
        }
        true
    }
}

/// SQLSTATE of an ErrorResponse frame.
fn error_code(f: &Frame) -> Option<&str> {
    error_fields(f.body())
        .ok()?
        .into_iter()
        .find(|(k, _)| *k == b'C')
        .map(|(_, v)| v)
}
