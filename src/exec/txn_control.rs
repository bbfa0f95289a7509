//! Transaction control run by the router itself: BEGIN, COMMIT/ROLLBACK
//! (AND CHAIN), SAVEPOINT / RELEASE / ROLLBACK TO checked against the
//! block's savepoint stack, and the implicit block that makes a statement
//! writing on several shards atomic.

use bytes::BytesMut;

use crate::plan::{Plan, TxnStmt};
use crate::protocol::error::codes;
use crate::protocol::{synth, PgError};

use super::block::{Block, BlockOp};
use super::context::{End, ExecCtx};

impl ExecCtx {
    pub async fn txn_command(&mut self, t: &TxnStmt, sql: &str) -> Result<bool, End> {
        match t {
            TxnStmt::Begin { sql } => {
                if let Some(b) = self.block.as_mut().filter(|b| b.implicit) {
                    // BEGIN inside the implicit transaction of an
                    // extended-protocol batch turns it into a block, as in
                    // PostgreSQL (no warning); its characteristics apply if
                    // no shard has begun yet.
                    b.implicit = false;
                    if !self.held.iter().any(|h| h.began) {
                        b.begin_sql = sql.clone();
                    }
                } else if self.block.is_some() {
                    synth::notice(
                        &mut self.out.buf,
                        &PgError {
                            severity: "WARNING",
                            ..PgError::new("25001", "there is already a transaction in progress")
                        },
                    );
                } else {
                    self.block = Some(Block::new(sql.clone(), false));
                }
                synth::command_complete(&mut self.out.buf, "BEGIN");
                Ok(true)
            }
            TxnStmt::Commit | TxnStmt::Rollback => {
                let commit = matches!(t, TxnStmt::Commit);
                let chain = and_chain(sql);
                if chain && self.block.is_none() {
                    self.send_error(&PgError::new(
                        "25P01",
                        format!(
                            "{} AND CHAIN can only be used in transaction blocks",
                            if commit { "COMMIT" } else { "ROLLBACK" }
                        ),
                    ));
                    return Ok(false);
                }
                if self.block.is_none() {
                    synth::notice(
                        &mut self.out.buf,
                        &PgError {
                            severity: "WARNING",
                            ..PgError::new("25P01", "there is no transaction in progress")
                        },
                    );
                    synth::command_complete(
                        &mut self.out.buf,
                        if commit { "COMMIT" } else { "ROLLBACK" },
                    );
                    return Ok(true);
                }
                let chained = self.block.as_ref().map(Block::chained);
                match self.end_block(commit).await? {
                    Some(tag) => {
                        if let (true, Some(b)) = (chain, chained) {
                            // Same isolation level / access mode as the
                            // block just ended.
                            self.block = Some(b);
                        }
                        synth::command_complete(&mut self.out.buf, tag);
                        Ok(true)
                    }
                    None => Ok(false),
                }
            }
            TxnStmt::Savepoint => self.savepoint_command(sql).await,
        }
    }

    /// SAVEPOINT / RELEASE / ROLLBACK TO: checked against the block's
    /// savepoint stack, sent to every participant that has begun (later
    /// participants get the open savepoints replayed after BEGIN).
    async fn savepoint_command(&mut self, sql: &str) -> Result<bool, End> {
        let Some((op, name)) = savepoint_op(sql) else {
            self.send_error(&PgError::new(
                codes::SYNTAX_ERROR,
                "syntax error in savepoint statement",
            ));
            return Ok(false);
        };
        let Some(block) = &mut self.block else {
            self.send_error(&PgError::new(
                "25P01",
                format!("{} can only be used in transaction blocks", op.keyword()),
            ));
            return Ok(false);
        };
        let key = savepoint_key(&name);
        let pos = block.savepoint_pos(&key, savepoint_key);
        if op != SavepointOp::Savepoint && pos.is_none() {
            self.send_error(&PgError::new(
                "3B001",
                format!("savepoint \"{key}\" does not exist"),
            ));
            return Ok(false);
        }
        let ok = match self.on_began_participants(sql).await? {
            Some(ok) => ok,
            None => {
                synth::command_complete(&mut self.out.buf, op.tag());
                true
            }
        };
        if ok {
            if let Some(b) = &mut self.block {
                match (op, pos) {
                    (SavepointOp::Savepoint, _) => b.ops.push(BlockOp::Savepoint(name)),
                    (SavepointOp::Release, Some(i)) => b.release(i),
                    (SavepointOp::RollbackTo, Some(i)) => b.rollback_to(i),
                    _ => {}
                }
            }
        }
        Ok(ok)
    }

    /// Opens an implicit block for a statement writing on `shards` shards
    /// outside a transaction block, so it commits atomically (two-phase
    /// commit); its CommandComplete is held back until the commit.
    /// Returns Some(true) if a block was opened, Some(false) if none is
    /// needed, None if the statement is refused (`transaction_mode =
    /// single`; the error was sent).
    pub fn open_write_block(&mut self, shards: usize) -> Option<bool> {
        if shards <= 1 || self.block.is_some() {
            return Some(false);
        }
        if self.state.txn.mode == crate::txn::TransactionMode::Single {
            self.send_error(
                &PgError::unsupported(format!(
                    "transaction_mode = single: this statement writes on {shards} shards"
                ))
                .with_hint("restrict it to one shard with a condition on the sharding key, or set transactions.mode = \"twopc\""),
            );
            return None;
        }
        self.block = Some(Block::new("BEGIN", true));
        self.deferred = Some(BytesMut::new());
        Some(true)
    }

    /// Ends the block [`ExecCtx::open_write_block`] opened: commits if the
    /// statement succeeded (`ok`), else rolls back; then releases the held
    /// CommandComplete (or the statement's error). Returns whether the
    /// statement and its commit succeeded.
    pub async fn close_write_block(&mut self, opened: bool, ok: bool) -> Result<bool, End> {
        if !opened {
            return Ok(ok);
        }
        let held_back = self.deferred.take().unwrap_or_default();
        if ok {
            let committed = self.end_block(true).await?.is_some();
            if committed {
                self.out.buf.extend_from_slice(&held_back);
            }
            return Ok(committed);
        }
        self.out.buf.extend_from_slice(&held_back);
        self.abort_block().await;
        Ok(false)
    }
}

/// A savepoint statement kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SavepointOp {
    Savepoint,
    Release,
    RollbackTo,
}

impl SavepointOp {
    fn keyword(self) -> &'static str {
        match self {
            SavepointOp::Savepoint => "SAVEPOINT",
            SavepointOp::Release => "RELEASE SAVEPOINT",
            SavepointOp::RollbackTo => "ROLLBACK TO SAVEPOINT",
        }
    }
    fn tag(self) -> &'static str {
        match self {
            SavepointOp::Savepoint => "SAVEPOINT",
            SavepointOp::Release => "RELEASE",
            SavepointOp::RollbackTo => "ROLLBACK",
        }
    }
}

/// Parses `SAVEPOINT n`, `RELEASE [SAVEPOINT] n`,
/// `ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] n` into the kind and the
/// name as written (a quoted name keeps its quotes).
fn savepoint_op(sql: &str) -> Option<(SavepointOp, String)> {
    let text = sql
        .trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    // (lower-cased word, the text after it)
    let words: Vec<(String, &str)> = text
        .split_whitespace()
        .scan(text, |rest, w| {
            let at = rest.find(w).unwrap_or(0) + w.len();
            *rest = &rest[at..];
            Some((w.to_ascii_lowercase(), *rest))
        })
        .collect();
    let is = |i: usize, w: &str| words.get(i).is_some_and(|(x, _)| x == w);
    let (op, mut i) = match words.first().map(|(w, _)| w.as_str()) {
        Some("savepoint") => (SavepointOp::Savepoint, 1),
        Some("release") => (SavepointOp::Release, 1),
        Some("rollback") => {
            let i = if is(1, "work") || is(1, "transaction") {
                2
            } else {
                1
            };
            if !is(i, "to") {
                return None;
            }
            (SavepointOp::RollbackTo, i + 1)
        }
        _ => return None,
    };
    // Optional SAVEPOINT keyword (unless it is the name itself).
    if op != SavepointOp::Savepoint && is(i, "savepoint") && words.len() > i + 1 {
        i += 1;
    }
    let rest = words.get(i.checked_sub(1)?)?.1.trim();
    if rest.is_empty() {
        return None;
    }
    Some((op, rest.to_string()))
}

/// A savepoint name as PostgreSQL compares it: quoted names exactly
/// (without quotes, `""` unescaped), unquoted ones lower-cased.
fn savepoint_key(name: &str) -> String {
    match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(q) => q.replace("\"\"", "\""),
        None => name.to_ascii_lowercase(),
    }
}

/// `COMMIT AND CHAIN` / `ROLLBACK AND CHAIN` (not `AND NO CHAIN`).
fn and_chain(sql: &str) -> bool {
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == ';')
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_lowercase())
        .collect();
    matches!(words.as_slice(), [.., a, c] if a == "and" && c == "chain")
}

/// Statements allowed in a failed block: COMMIT/ROLLBACK, ROLLBACK TO.
pub(crate) fn ends_failed_block(p: &Plan, sql: &str) -> bool {
    match p {
        Plan::Transaction(TxnStmt::Commit | TxnStmt::Rollback) => true,
        Plan::Transaction(TxnStmt::Savepoint) => first_word(sql).eq_ignore_ascii_case("rollback"),
        _ => false,
    }
}

fn first_word(s: &str) -> &str {
    s.split_whitespace().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn savepoint_statements() {
        assert_eq!(
            savepoint_op("SAVEPOINT a"),
            Some((SavepointOp::Savepoint, "a".into()))
        );
        assert_eq!(
            savepoint_op("release savepoint B;"),
            Some((SavepointOp::Release, "B".into()))
        );
        assert_eq!(
            savepoint_op("RELEASE b"),
            Some((SavepointOp::Release, "b".into()))
        );
        assert_eq!(
            savepoint_op("ROLLBACK TO SAVEPOINT \"x y\""),
            Some((SavepointOp::RollbackTo, "\"x y\"".into()))
        );
        assert_eq!(
            savepoint_op("rollback work to s1"),
            Some((SavepointOp::RollbackTo, "s1".into()))
        );
        // A savepoint named "savepoint".
        assert_eq!(
            savepoint_op("RELEASE savepoint"),
            Some((SavepointOp::Release, "savepoint".into()))
        );
        assert_eq!(savepoint_op("ROLLBACK"), None);
        assert_eq!(savepoint_op("SAVEPOINT"), None);
        assert_eq!(savepoint_key("Ab"), "ab");
        assert_eq!(savepoint_key("\"Ab\"\"c\""), "Ab\"c");
    }

    #[test]
    fn chain() {
        assert!(and_chain("COMMIT AND CHAIN"));
        assert!(and_chain("rollback work and chain;"));
        assert!(!and_chain("COMMIT AND NO CHAIN"));
        assert!(!and_chain("COMMIT"));
    }
}
