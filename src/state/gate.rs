//! The write gate ([`WriteGate`]): whether this router may start a write
//! now. Two things close it (see `docs/resharding.md`, "Cutover across
//! routers"):
//!
//! - **The catalog lease.** The router renews a lease in the catalog
//!   (`pgrouter.routers`) about once a second; its local deadline counts
//!   from before each renewal was sent, so it runs out no later than the
//!   catalog's. Without a valid lease the router cannot know whether a key
//!   range has moved, so it admits no write (a split job passes a router
//!   whose lease has expired).
//! - **Write blocks** of split cutovers (`pgrouter.write_blocks`), installed
//!   by the lease task: a write of a transaction that has not yet written on
//!   the block's source shard waits until the block is lifted — the block
//!   row gone, or its routing update loaded here. Transactions that already
//!   wrote there go on, so the router can acknowledge the block once they
//!   have ended.
//!
//! The gate is checked once per statement that writes: one atomic load
//! when no block is installed, plus a clock read for the lease.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

/// A cutover write block as installed on this router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteBlock {
    /// The split job.
    pub job_id: i64,
    /// Its keyspace.
    pub keyspace: String,
    /// The source shard: writes of transactions that have not written
    /// there wait.
    pub source: String,
    /// The block's epoch (what the router acknowledges).
    pub epoch: i64,
    /// Some(g) once the routing update committed: the block lifts when this
    /// router serves generation `g` of the keyspace.
    pub routed_generation: Option<i64>,
}

/// What a write must do now ([`WriteGate::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead.
    Go,
    /// Wait: a cutover block applies to it.
    Blocked,
    /// Wait: the router holds no valid catalog lease.
    NoLease,
}

/// See the module docs.
pub struct WriteGate {
    base: Instant,
    /// Lease deadline, ns after `base`; 0 = none yet; u64::MAX = leases
    /// not used.
    lease_until_ns: AtomicU64,
    blocks: ArcSwap<Vec<WriteBlock>>,
    any_block: AtomicBool,
    /// Current grace period (its low bit indexes `in_flight`).
    period: AtomicUsize,
    /// Requests entered and not yet left, per grace period.
    in_flight: [AtomicUsize; 2],
    changed: Notify,
}

impl WriteGate {
    /// A gate that needs a lease: closed until the first renewal.
    pub fn with_lease() -> WriteGate {
        WriteGate::new(0)
    }

    /// A gate without leases (a router not coordinated through a catalog's
    /// split jobs, e.g. unit tests): only blocks close it.
    pub fn without_lease() -> WriteGate {
        WriteGate::new(u64::MAX)
    }

    fn new(lease: u64) -> WriteGate {
        WriteGate {
            base: Instant::now(),
            lease_until_ns: AtomicU64::new(lease),
            blocks: ArcSwap::from_pointee(Vec::new()),
            any_block: AtomicBool::new(false),
            period: AtomicUsize::new(0),
            in_flight: [AtomicUsize::new(0), AtomicUsize::new(0)],
            changed: Notify::new(),
        }
    }

    /// From now on writes need a lease (closed until the first
    /// [`WriteGate::renew`]).
    pub fn require_lease(&self) {
        let _ =
            self.lease_until_ns
                .compare_exchange(u64::MAX, 0, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Extends the lease to `until` (never shortens it).
    pub fn renew(&self, until: Instant) {
        let ns = until.saturating_duration_since(self.base).as_nanos() as u64;
        let ns = ns.clamp(1, u64::MAX - 1);
        if self.lease_until_ns.fetch_max(ns, Ordering::AcqRel) < ns {
            self.changed.notify_waiters();
        }
    }

    /// Whether the lease is valid now.
    pub fn lease_valid(&self) -> bool {
        let until = self.lease_until_ns.load(Ordering::Acquire);
        until == u64::MAX || (until > 0 && (self.base.elapsed().as_nanos() as u64) < until)
    }

    /// Time left on the lease (None: leases not used; zero: expired).
    pub fn lease_left(&self) -> Option<Duration> {
        let until = self.lease_until_ns.load(Ordering::Acquire);
        if until == u64::MAX {
            return None;
        }
        Some(Duration::from_nanos(
            until.saturating_sub(self.base.elapsed().as_nanos() as u64),
        ))
    }

    /// A request that may write is about to be routed: counted in the
    /// current grace period until [`WriteGate::leave`] with the returned
    /// period, so a block is acknowledged only after every request that
    /// entered before it was installed has left. Enter before
    /// [`WriteGate::admit`].
    pub fn enter(&self) -> usize {
        let p = self.period.load(Ordering::SeqCst) & 1;
        self.in_flight[p].fetch_add(1, Ordering::SeqCst);
        p
    }

    /// The request that entered in `period` is done (its connections are
    /// released, or marked as written through).
    pub fn leave(&self, period: usize) {
        self.in_flight[period & 1].fetch_sub(1, Ordering::SeqCst);
    }

    /// Starts a new grace period (after installing a block); returns the
    /// previous one, whose requests [`WriteGate::drained`] waits for.
    pub fn flip(&self) -> usize {
        self.period.fetch_add(1, Ordering::SeqCst) & 1
    }

    /// Whether every request of grace period `period` has left.
    pub fn drained(&self, period: usize) -> bool {
        self.in_flight[period & 1].load(Ordering::SeqCst) == 0
    }

    /// Installs the current blocks (replacing the previous set) and wakes
    /// waiting writes; returns false if nothing changed.
    pub fn install(&self, blocks: Vec<WriteBlock>) -> bool {
        if **self.blocks.load() == blocks {
            return false;
        }
        self.blocks.store(Arc::new(blocks.clone()));
        self.any_block.store(!blocks.is_empty(), Ordering::SeqCst);
        self.changed.notify_waiters();
        true
    }

    /// The installed blocks.
    pub fn blocks(&self) -> Arc<Vec<WriteBlock>> {
        self.blocks.load_full()
    }

    /// Whether a write could be held (a block is installed or the lease is
    /// not valid): the cheap test before [`WriteGate::admit`].
    pub fn maybe_closed(&self) -> bool {
        self.any_block.load(Ordering::SeqCst) || !self.lease_valid()
    }

    /// What a write must do: `wrote_on(shard)` tells whether its
    /// transaction already wrote on `shard`, `generation(keyspace)` which
    /// generation of the keyspace's routing this router serves.
    pub fn admit(
        &self,
        wrote_on: impl Fn(&str) -> bool,
        generation: impl Fn(&str) -> i64,
    ) -> Admit {
        if !self.lease_valid() {
            return Admit::NoLease;
        }
        if !self.any_block.load(Ordering::SeqCst) {
            return Admit::Go;
        }
        for b in self.blocks.load().iter() {
            if b.routed_generation
                .is_some_and(|g| generation(&b.keyspace) >= g)
            {
                continue;
            }
            if wrote_on(&b.source) {
                continue;
            }
            return Admit::Blocked;
        }
        Admit::Go
    }

    /// Waits until the gate changes (a block installed or lifted, a lease
    /// renewed) or `max` passes.
    pub async fn changed(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.changed.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(source: &str, routed: Option<i64>) -> WriteBlock {
        WriteBlock {
            job_id: 1,
            keyspace: "main".into(),
            source: source.into(),
            epoch: 7,
            routed_generation: routed,
        }
    }

    #[test]
    fn lease_and_blocks_decide() {
        let g = WriteGate::with_lease();
        let gen1 = |_: &str| 1;
        assert_eq!(g.admit(|_| false, gen1), Admit::NoLease, "no lease yet");
        g.renew(Instant::now() + Duration::from_secs(5));
        assert!(g.lease_valid() && !g.maybe_closed());
        assert_eq!(g.admit(|_| false, gen1), Admit::Go);
        g.install(vec![block("shard0", None)]);
        assert!(g.maybe_closed());
        assert_eq!(g.admit(|_| false, gen1), Admit::Blocked);
        // A transaction that already wrote on the source finishes.
        assert_eq!(g.admit(|s| s == "shard0", gen1), Admit::Go);
        // Routed: lifted once generation 2 is served here.
        g.install(vec![block("shard0", Some(2))]);
        assert_eq!(g.admit(|_| false, gen1), Admit::Blocked);
        assert_eq!(g.admit(|_| false, |_| 2), Admit::Go);
        g.install(Vec::new());
        assert!(!g.maybe_closed());
        // Grace periods: a request entered before a flip holds the old
        // period until it leaves; later ones count in the new period.
        let p = g.enter();
        let old = g.flip();
        assert_eq!(old, p);
        let q = g.enter();
        assert_ne!(q, old);
        assert!(!g.drained(old));
        g.leave(p);
        assert!(g.drained(old) && !g.drained(q));
        g.leave(q);
        // An expired lease closes the gate; renewals never shorten it.
        let g = WriteGate::with_lease();
        g.renew(Instant::now() + Duration::from_millis(20));
        g.renew(Instant::now());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(g.admit(|_| false, gen1), Admit::NoLease);
        assert_eq!(g.lease_left(), Some(Duration::ZERO));
        let free = WriteGate::without_lease();
        assert_eq!(free.admit(|_| false, gen1), Admit::Go);
        assert_eq!(free.lease_left(), None);
    }
}
