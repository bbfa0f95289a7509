//! Router metrics: per-worker request statistics (counts and HDR latency
//! histograms by route kind, errors by SQLSTATE class) recorded without
//! cross-thread contention, and router-wide counters. Their Prometheus
//! text exposition and the HTTP endpoint are in [`crate::admin`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// How a client request (a simple Query, or an extended-protocol batch up to
/// Sync) was served, by the number of shards it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Answered by the router alone (SET, BEGIN, SHOW of router state...).
    Router = 0,
    /// One shard (the single-shard fast path).
    FastPath = 1,
    /// Several shards (scatter-gather, multi-shard writes, broadcast).
    ScatterGather = 2,
}

impl RouteKind {
    /// All kinds, in label order.
    pub const ALL: [RouteKind; 3] = [
        RouteKind::Router,
        RouteKind::FastPath,
        RouteKind::ScatterGather,
    ];

    /// The kind for a request that used `shards` shards.
    pub fn for_shards(shards: u32) -> RouteKind {
        match shards {
            0 => RouteKind::Router,
            1 => RouteKind::FastPath,
            _ => RouteKind::ScatterGather,
        }
    }

    /// Label value (`router`, `fast_path`, `scatter_gather`).
    pub fn label(self) -> &'static str {
        match self {
            RouteKind::Router => "router",
            RouteKind::FastPath => "fast_path",
            RouteKind::ScatterGather => "scatter_gather",
        }
    }
}

/// How a transaction block ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnKind {
    /// Committed on at most one shard (plain COMMIT).
    SingleShard = 0,
    /// Committed on several shards with two-phase commit.
    TwoPhase = 1,
    /// Committed on several shards one after the other
    /// (`transactions.mode = best_effort`).
    BestEffort = 2,
    /// Rolled back (ROLLBACK, failed block, failed commit).
    Rollback = 3,
}

impl TxnKind {
    /// All kinds, in label order.
    pub const ALL: [TxnKind; 4] = [
        TxnKind::SingleShard,
        TxnKind::TwoPhase,
        TxnKind::BestEffort,
        TxnKind::Rollback,
    ];

    /// Label value.
    pub fn label(self) -> &'static str {
        match self {
            TxnKind::SingleShard => "single_shard",
            TxnKind::TwoPhase => "two_phase",
            TxnKind::BestEffort => "best_effort",
            TxnKind::Rollback => "rollback",
        }
    }
}

thread_local! {
    /// ErrorResponse classes sent by sessions on this thread since the
    /// last [`Metrics::record`] here (sessions of one worker share it; only
    /// per-class totals are exposed, so interleaving does not matter).
    static ERRORS: std::cell::RefCell<Vec<[u8; 2]>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Notes an ErrorResponse sent to a client, by SQLSTATE (`code`, five
/// characters); counted at the thread's next [`Metrics::record`].
pub fn note_error(code: &[u8]) {
    if let [a, b, ..] = code {
        let c = [*a, *b];
        ERRORS.with(|e| e.borrow_mut().push(c));
    }
}

/// [`note_error`] for an ErrorResponse frame body.
pub fn note_error_body(body: &[u8]) {
    note_error(&error_class(body));
}

/// Highest latency the histograms track: 1 hour, in microseconds (longer
/// requests are recorded as 1 hour).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// One session worker's statistics.
pub struct WorkerStats {
    /// Requests by [`RouteKind`].
    pub requests: [u64; 3],
    /// Request latency in microseconds by [`RouteKind`] (3 significant
    /// digits, HdrHistogram).
    pub latency: [Histogram<u64>; 3],
    /// ErrorResponses sent to clients by SQLSTATE class (first two
    /// characters).
    pub errors: BTreeMap<[u8; 2], u64>,
}

impl WorkerStats {
    fn new() -> WorkerStats {
        WorkerStats {
            requests: [0; 3],
            latency: [histogram(), histogram(), histogram()],
            errors: BTreeMap::new(),
        }
    }
}

fn histogram() -> Histogram<u64> {
    // Constant bounds and precision that HdrHistogram accepts.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Router-wide metrics.
pub struct Metrics {
    workers: Vec<Mutex<WorkerStats>>,
    txns: [AtomicU64; 4],
    /// In-doubt (prepared, unresolved) transactions left after the last
    /// recovery pass.
    pub in_doubt: AtomicU64,
}

impl Metrics {
    /// Metrics for `workers` session workers.
    pub fn new(workers: usize) -> Metrics {
        Metrics {
            workers: (0..workers.max(1))
                .map(|_| Mutex::new(WorkerStats::new()))
                .collect(),
            txns: Default::default(),
            in_doubt: AtomicU64::new(0),
        }
    }

    /// Records a finished request on `worker` (called on that worker's
    /// thread): its kind and latency, and the ErrorResponses noted on this
    /// thread since the last call. The lock is the worker's own (only a
    /// scrape contends).
    pub fn record(&self, worker: usize, kind: RouteKind, elapsed: Duration) {
        let Some(w) = self.workers.get(worker) else {
            return;
        };
        let mut w = w.lock();
        let k = kind as usize;
        w.requests[k] += 1;
        let us = (elapsed.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        let _ = w.latency[k].record(us);
        ERRORS.with(|e| {
            for c in e.borrow_mut().drain(..) {
                *w.errors.entry(c).or_insert(0) += 1;
            }
        });
    }

    /// Counts an ended transaction block.
    pub fn transaction(&self, kind: TxnKind) {
        self.txns[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A merged snapshot of every worker's statistics.
    pub fn snapshot(&self) -> Snapshot {
        let mut total = WorkerStats::new();
        for w in &self.workers {
            let w = w.lock();
            for k in 0..3 {
                total.requests[k] += w.requests[k];
                let _ = total.latency[k].add(&w.latency[k]);
            }
            for (c, n) in &w.errors {
                *total.errors.entry(*c).or_insert(0) += n;
            }
        }
        Snapshot {
            stats: total,
            txns: std::array::from_fn(|i| self.txns[i].load(Ordering::Relaxed)),
            in_doubt: self.in_doubt.load(Ordering::Relaxed),
        }
    }
}

/// Merged metrics at one instant.
pub struct Snapshot {
    /// All workers' request statistics.
    pub stats: WorkerStats,
    /// Transactions by [`TxnKind`].
    pub txns: [u64; 4],
    /// In-doubt transactions after the last recovery pass.
    pub in_doubt: u64,
}

/// The SQLSTATE class (first two characters) of an ErrorResponse body.
pub fn error_class(body: &[u8]) -> [u8; 2] {
    crate::protocol::backend::error_code(body)
        .and_then(|c| {
            let b = c.as_bytes();
            (b.len() >= 2).then(|| [b[0], b[1]])
        })
        .unwrap_or(*b"XX")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_workers() {
        let m = Metrics::new(2);
        for i in 1..=100u64 {
            m.record(
                (i % 2) as usize,
                RouteKind::FastPath,
                Duration::from_micros(i * 10),
            );
        }
        note_error(b"57014");
        note_error(b"23505");
        m.record(0, RouteKind::ScatterGather, Duration::from_millis(5));
        note_error(b"57P01");
        m.record(1, RouteKind::Router, Duration::ZERO);
        m.transaction(TxnKind::TwoPhase);
        let s = m.snapshot();
        assert_eq!(s.stats.requests, [1, 100, 1]);
        let p50 = s.stats.latency[1].value_at_quantile(0.5);
        assert!((495..=505).contains(&p50), "{p50}");
        assert_eq!(s.stats.errors.get(b"57"), Some(&2));
        assert_eq!(s.txns, [0, 1, 0, 0]);
        assert_eq!(RouteKind::for_shards(0), RouteKind::Router);
        assert_eq!(RouteKind::for_shards(7), RouteKind::ScatterGather);
    }
}
