//! Distributed transactions: the two-phase commit coordinator's pieces that
//! are not tied to a client session.
//!
//! - [`log`]: the durable decision log in the catalog (the commit point);
//! - [`recovery`]: the loop resolving in-doubt transactions after a crash;
//! - [`failpoint`]: crash/stall points for the crash tests;
//! - [`TransactionMode`], [`TxnConfig`], global transaction ids ([`Gids`]).
//!
//! The session side (which participants wrote, PREPARE / COMMIT PREPARED on
//! the pinned backend connections) is `exec/commit.rs`. The protocol is
//! PostgreSQL's two-phase commit (PostgreSQL docs: PREPARE TRANSACTION,
//! COMMIT PREPARED, `pg_prepared_xacts`) with a presumed-abort decision log
//! as in Citus (`pg_dist_transaction`).

pub mod failpoint;
pub mod log;
pub mod recovery;

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

/// How a transaction that wrote on several shards commits
/// (`[transactions] mode` in the router config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionMode {
    /// Two-phase commit with a durable decision: atomic across shards,
    /// also across router and shard crashes (default).
    #[default]
    Twopc,
    /// COMMIT on each writing shard one after the other; if one fails, the
    /// rest are rolled back and the client gets the error plus a WARNING
    /// naming the shards that had already committed.
    BestEffort,
    /// A transaction may write on one shard only: a write reaching a second
    /// shard fails with 0A000.
    Single,
}

/// `[transactions]` section of the router config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnConfig {
    /// Commit protocol for multi-shard writes.
    #[serde(default)]
    pub mode: TransactionMode,
    /// Recovery loop period, ms.
    #[serde(default = "default_recovery_interval")]
    pub recovery_interval_ms: u64,
    /// How long a prepared transaction without a decision is left to its
    /// coordinator before recovery aborts it, ms.
    #[serde(default = "default_recovery_grace")]
    pub recovery_grace_ms: u64,
    /// Catalog connections used to write commit decisions.
    #[serde(default = "default_log_connections")]
    pub decision_log_connections: usize,
}

fn default_recovery_interval() -> u64 {
    5000
}
fn default_recovery_grace() -> u64 {
    10_000
}
fn default_log_connections() -> usize {
    4
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            mode: TransactionMode::default(),
            recovery_interval_ms: default_recovery_interval(),
            recovery_grace_ms: default_recovery_grace(),
            decision_log_connections: default_log_connections(),
        }
    }
}

/// Global transaction ids `pgr_<router id>_<sequence>` for PREPARE
/// TRANSACTION: the router id (16 hex digits, random per process start)
/// makes them unique across routers and restarts.
pub struct Gids {
    router_id: String,
    seq: AtomicU64,
}

impl Gids {
    /// A generator with a fresh random router id.
    pub fn new() -> Gids {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(d.as_nanos());
        }
        Gids {
            router_id: format!("{:016x}", h.finish()),
            seq: AtomicU64::new(0),
        }
    }

    /// This router's id.
    pub fn router_id(&self) -> &str {
        &self.router_id
    }

    /// The next gid (at most 41 bytes; PostgreSQL allows 199).
    pub fn next(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        format!("pgr_{}_{n}", self.router_id)
    }
}

impl Default for Gids {
    fn default() -> Self {
        Gids::new()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gids_are_unique_and_prefixed() {
        let a = super::Gids::new();
        let b = super::Gids::new();
        assert_ne!(a.router_id(), b.router_id());
        let g1 = a.next();
        let g2 = a.next();
        assert_ne!(g1, g2);
        assert!(g1.starts_with("pgr_") && g1.len() <= 41, "{g1}");
    }
}
