//! The router-level transaction block: the statement that opened it, whether
//! it failed, and the savepoints and settings every participant must share
//! (BEGIN is sent lazily to each shard the block touches).

/// The router-level transaction block (BEGIN is sent lazily to each shard
/// the block touches).
pub struct Block {
    /// Statement that opened the block, replayed on each participant.
    pub begin_sql: String,
    /// An error happened in the block (client status `E`).
    pub failed: bool,
    /// Opened by the router: a multi-statement simple query, or one
    /// statement writing on several shards outside a transaction block.
    pub implicit: bool,
    /// Savepoints and settings in effect, in the order they ran; replayed
    /// after BEGIN on participants that join the block later, so every
    /// participant has the same savepoint stack and settings.
    pub ops: Vec<BlockOp>,
    /// DDL ran in the block: the table columns the router read inside it
    /// may not outlive it, so they are forgotten when it ends.
    pub ddl: bool,
}

/// A statement whose effect lasts inside the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockOp {
    /// `SAVEPOINT name` (the name as written).
    Savepoint(String),
    /// A SET / RESET run in the block (`SET LOCAL`, `SET TRANSACTION`,
    /// `SET CONSTRAINTS` or a session-level change). `session` changes
    /// outlive the block: they are recorded in the session's settings when
    /// it commits (PostgreSQL reverts them on rollback).
    Set {
        /// The statement as the client wrote it.
        sql: String,
        /// Session-level (not LOCAL / TRANSACTION / CONSTRAINTS).
        session: bool,
        /// RESET ALL.
        reset_all: bool,
    },
}

impl Block {
    /// A block opened by `begin_sql`.
    pub fn new(begin_sql: impl Into<String>, implicit: bool) -> Block {
        Block {
            begin_sql: begin_sql.into(),
            failed: false,
            implicit,
            ops: Vec::new(),
            ddl: false,
        }
    }

    /// The block that `COMMIT AND CHAIN` / `ROLLBACK AND CHAIN` opens: the
    /// same BEGIN and the same `SET TRANSACTION` characteristics
    /// (isolation level, access mode, deferrable), as PostgreSQL.
    pub fn chained(&self) -> Block {
        let mut b = Block::new(self.begin_sql.clone(), false);
        b.ops = self
            .ops
            .iter()
            .filter(|op| match op {
                BlockOp::Set { sql, .. } => is_transaction_characteristics(sql),
                BlockOp::Savepoint(_) => false,
            })
            .cloned()
            .collect();
        b
    }

    /// What a participant joining the block runs: BEGIN, then the open
    /// savepoints and the settings, in order (one simple query).
    pub fn begin_replay(&self) -> String {
        let mut sql = self.begin_sql.clone();
        for op in &self.ops {
            match op {
                BlockOp::Savepoint(name) => {
                    sql.push_str("; SAVEPOINT ");
                    sql.push_str(name);
                }
                BlockOp::Set { sql: s, .. } => {
                    sql.push_str("; ");
                    sql.push_str(s.trim().trim_end_matches(';'));
                }
            }
        }
        sql
    }

    /// Index in `ops` of the innermost savepoint whose name compares equal
    /// to `key` (PostgreSQL allows duplicate names).
    pub fn savepoint_pos(&self, key: &str, name_key: impl Fn(&str) -> String) -> Option<usize> {
        self.ops
            .iter()
            .rposition(|op| matches!(op, BlockOp::Savepoint(n) if name_key(n) == key))
    }

    /// RELEASE of the savepoint at `i`: it and the savepoints opened after
    /// it are gone; settings made after it stay in effect.
    pub fn release(&mut self, i: usize) {
        let mut k = 0;
        self.ops.retain(|op| {
            let keep = k < i || !matches!(op, BlockOp::Savepoint(_));
            k += 1;
            keep
        });
    }

    /// ROLLBACK TO the savepoint at `i`: everything after it is undone; the
    /// savepoint stays.
    pub fn rollback_to(&mut self, i: usize) {
        self.ops.truncate(i + 1);
        self.failed = false;
    }
}

/// `SET TRANSACTION ISOLATION LEVEL / READ ONLY / READ WRITE /
/// [NOT] DEFERRABLE` (not `SET TRANSACTION SNAPSHOT`).
fn is_transaction_characteristics(sql: &str) -> bool {
    let mut w = sql.split_whitespace().map(|w| w.to_ascii_lowercase());
    w.next().as_deref() == Some("set")
        && w.next().as_deref() == Some("transaction")
        && w.next().is_some_and(|x| !x.starts_with("snapshot"))
}
