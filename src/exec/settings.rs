//! SET / RESET / DISCARD through the router. Session settings are recorded
//! and replayed on every backend connection the session later uses
//! (transaction pooling); settings made inside a transaction block belong
//! to the block: sent to every participant, replayed on participants that
//! join later, and recorded for the session only if the block commits
//! (PostgreSQL reverts them on rollback).

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use bytes::BytesMut;
use postgres_protocol::message::frontend as fe;

use super::block::{Block, BlockOp};
use super::concat::MergeMode;
use super::context::{End, ExecCtx};
use super::exchange::{Expect, Slot, QUERY_SLOTS};

impl ExecCtx {
    /// Runs a SET / RESET / DISCARD statement (`local`: SET LOCAL,
    /// SET TRANSACTION or SET CONSTRAINTS; `reset_all`: RESET ALL or
    /// DISCARD ALL). Outside a block it runs on one shard and a session
    /// setting is recorded for replay; inside a block it runs on every
    /// participant that has begun (or on one shard, which begins) and is
    /// kept with the block. Returns false if it failed (error sent).
    pub async fn set_command(
        &mut self,
        sql: &str,
        local: bool,
        reset_all: bool,
    ) -> Result<bool, End> {
        if self.block.is_none() {
            let shard = match self.any_shard() {
                Ok(s) => s,
                Err(e) => {
                    self.send_error(&e);
                    return Ok(false);
                }
            };
            let ok = self.exchange_one(&shard, &query(sql), QUERY_SLOTS).await?;
            if ok && !local {
                self.record_setting(sql, reset_all);
                // That connection already has the new setting.
                if let Some(h) = self.held.iter_mut().find(|h| *h.conn.shard == *shard) {
                    h.conn.settings_hash = self.settings_hash;
                    // DISCARD ALL (never inside a block) deallocated the
                    // router's prepared statements there too.
                    if reset_all && is_discard(sql) {
                        h.conn.prepared.clear();
                    }
                }
            }
            return Ok(ok);
        }
        let ok = match self.on_began_participants(sql).await? {
            Some(ok) => ok,
            None => match self.any_shard() {
                // Beginning the block on it replays the block's earlier
                // savepoints and settings first.
                Ok(s) => self.exchange_one(&s, &query(sql), QUERY_SLOTS).await?,
                Err(e) => {
                    self.send_error(&e);
                    return Ok(false);
                }
            },
        };
        if ok {
            if let Some(b) = &mut self.block {
                b.ops.push(BlockOp::Set {
                    sql: sql.trim().trim_end_matches(';').trim_end().to_string(),
                    session: !local,
                    reset_all,
                });
            }
        }
        Ok(ok)
    }

    /// Sends `sql` as a simple query to every held connection on which the
    /// block has begun, forwarding the first shard's response (errors from
    /// any shard are forwarded). None if no participant has begun.
    pub async fn on_began_participants(&mut self, sql: &str) -> Result<Option<bool>, End> {
        let began: Vec<String> = self
            .held
            .iter()
            .filter(|h| h.began)
            .map(|h| h.conn.shard.to_string())
            .collect();
        if began.is_empty() {
            return Ok(None);
        }
        let msg = query(sql);
        let parts = began
            .into_iter()
            .map(|s| (s, msg.clone(), slots()))
            .collect();
        Ok(Some(self.exchange_many(parts, MergeMode::FirstOnly).await?))
    }

    /// Records the session-level settings of a block that committed on
    /// every participant in `parts` (indexes into `held`), which therefore
    /// all have them applied already.
    pub fn commit_block_settings(&mut self, block: &Block, parts: &[usize]) {
        let mut changed = false;
        for op in &block.ops {
            if let BlockOp::Set {
                sql,
                session: true,
                reset_all,
            } = op
            {
                self.record_setting(sql, *reset_all);
                changed = true;
            }
        }
        if changed {
            for &i in parts {
                if let Some(h) = self.held.get_mut(i) {
                    h.conn.settings_hash = self.settings_hash;
                }
            }
        }
    }

    /// Recomputes the fingerprint of the session settings that backend
    /// connections compare against theirs (0 = no settings).
    pub fn rehash_settings(&mut self) {
        if self.settings.is_empty() {
            self.settings_hash = 0;
            return;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.settings.hash(&mut h);
        self.settings_hash = h.finish() | 1;
    }

    /// Records a successful session-level SET/RESET (replayed on other
    /// backends); `reset_all` clears every recorded setting.
    pub fn record_setting(&mut self, sql: &str, reset_all: bool) {
        if reset_all {
            self.settings.clear();
        } else {
            let name = setting_name(sql);
            self.settings.retain(|(n, _)| *n != name);
            let lower = sql.trim_start().to_ascii_lowercase();
            if !lower.starts_with("reset") {
                self.settings
                    .push((name, sql.trim().trim_end_matches(';').to_string()));
            }
        }
        self.rehash_settings();
    }
}

fn query(sql: &str) -> bytes::Bytes {
    let mut b = BytesMut::new();
    let _ = fe::query(sql, &mut b);
    b.freeze()
}

fn slots() -> VecDeque<Slot> {
    VecDeque::from([Slot::Forward(Expect::Query)])
}

/// Lower-case name of the setting a SET/RESET statement changes.
fn setting_name(sql: &str) -> String {
    let mut words = sql
        .split(|c: char| c.is_whitespace() || c == '=' || c == ';')
        .filter(|w| !w.is_empty());
    let first = words.next().unwrap_or("").to_ascii_lowercase();
    let mut name = words.next().unwrap_or("").to_ascii_lowercase();
    if first == "set" && (name == "session" || name == "local") {
        name = words.next().unwrap_or("").to_ascii_lowercase();
    }
    name
}

/// True if `sql` is a DISCARD statement (the planner gives DISCARD ALL
/// `reset_all`).
fn is_discard(sql: &str) -> bool {
    crate::plan::has_word(sql, "discard")
}

#[cfg(test)]
mod tests {
    use super::super::block::{Block, BlockOp};

    #[test]
    fn setting_names() {
        assert_eq!(super::setting_name("SET search_path TO x"), "search_path");
        assert_eq!(
            super::setting_name("set session TimeZone = 'UTC'"),
            "timezone"
        );
        assert_eq!(super::setting_name("RESET work_mem"), "work_mem");
    }

    fn set(sql: &str) -> BlockOp {
        BlockOp::Set {
            sql: sql.into(),
            session: false,
            reset_all: false,
        }
    }

    #[test]
    fn block_ops_follow_savepoints() {
        let mut b = Block::new("BEGIN", false);
        b.ops.push(set("SET LOCAL work_mem = '1MB'"));
        b.ops.push(BlockOp::Savepoint("a".into()));
        b.ops.push(set("SET LOCAL lock_timeout = 5"));
        b.ops.push(BlockOp::Savepoint("b".into()));
        assert_eq!(
            b.begin_replay(),
            "BEGIN; SET LOCAL work_mem = '1MB'; SAVEPOINT a; SET LOCAL lock_timeout = 5; SAVEPOINT b"
        );
        // RELEASE a: both savepoints go, the setting made after a stays.
        let mut r = Block::new("BEGIN", false);
        r.ops = b.ops.clone();
        r.release(1);
        assert_eq!(
            r.begin_replay(),
            "BEGIN; SET LOCAL work_mem = '1MB'; SET LOCAL lock_timeout = 5"
        );
        // ROLLBACK TO a: the setting made after a is undone, a stays.
        b.failed = true;
        b.rollback_to(1);
        assert!(!b.failed);
        assert_eq!(
            b.begin_replay(),
            "BEGIN; SET LOCAL work_mem = '1MB'; SAVEPOINT a"
        );
        let key = |s: &str| s.to_ascii_lowercase();
        assert_eq!(b.savepoint_pos("a", key), Some(1));
        assert_eq!(b.savepoint_pos("b", key), None);
    }

    #[test]
    fn chain_keeps_transaction_characteristics() {
        let mut b = Block::new("BEGIN READ ONLY", false);
        b.ops
            .push(set("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"));
        b.ops.push(set("SET LOCAL work_mem = '1MB'"));
        b.ops.push(BlockOp::Savepoint("a".into()));
        b.ops.push(set("SET TRANSACTION SNAPSHOT '0001'"));
        assert_eq!(
            b.chained().begin_replay(),
            "BEGIN READ ONLY; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"
        );
    }
}
