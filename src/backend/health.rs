//! Shard health: a shard that cannot be reached is marked down so that the
//! queries needing it fail at once (08006 naming the shard) instead of each
//! one waiting for a connect timeout; a background checker probes it with
//! exponential backoff and marks it up again when it answers. Shards that
//! are up are probed every `backend.health_check_interval_ms` over one kept
//! connection, so a shard that stops answering is noticed without a client
//! paying for it; a probe of a shard that is up that times out is retried
//! once on a new connection before the shard is marked down (a stall of
//! the router's machine must not fail a healthy shard's queries).
//!
//! Same idea as PgBouncer's `server_login_retry` and pgdog's ban list, with
//! the state shared by every session worker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// First retry delay after a shard is marked down, ms (doubled per failed
/// probe up to `backend.retry_backoff_max_ms`).
pub const FIRST_RETRY_MS: u64 = 100;

/// Health of one shard, shared by the pools of every session worker.
#[derive(Debug)]
pub struct ShardHealth {
    down: AtomicBool,
    probing: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// When the shard was marked down (None while up).
    since: Option<Instant>,
    /// Why (the last connect or probe error).
    reason: String,
    /// Failed probes since it went down.
    failures: u32,
    /// When the checker should probe next.
    next_probe: Instant,
}

/// Why a shard is down, for the error a client gets.
#[derive(Debug, Clone)]
pub struct Down {
    /// The last connect or probe error.
    pub reason: String,
    /// How long the shard has been down.
    pub for_: Duration,
    /// Until the next probe (0 when one is due or running).
    pub retry_in: Duration,
}

impl Default for ShardHealth {
    fn default() -> Self {
        ShardHealth {
            down: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                since: None,
                reason: String::new(),
                failures: 0,
                next_probe: Instant::now(),
            }),
        }
    }
}

impl ShardHealth {
    /// A shard believed up.
    pub fn new() -> Arc<ShardHealth> {
        Arc::new(ShardHealth::default())
    }

    /// True unless the shard is marked down (one atomic load).
    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Acquire)
    }

    /// Why the shard is down, or None while it is up.
    pub fn down(&self) -> Option<Down> {
        if self.is_up() {
            return None;
        }
        let g = self.inner.lock();
        let now = Instant::now();
        Some(Down {
            reason: g.reason.clone(),
            for_: g.since.map(|s| now.duration_since(s)).unwrap_or_default(),
            retry_in: g.next_probe.saturating_duration_since(now),
        })
    }

    /// Marks the shard down because of `reason` (a connect error). Returns
    /// true if it was up.
    pub fn mark_down(&self, reason: &str) -> bool {
        let mut g = self.inner.lock();
        let was_up = g.since.is_none();
        if was_up {
            g.since = Some(Instant::now());
            g.failures = 0;
            g.next_probe = Instant::now() + Duration::from_millis(FIRST_RETRY_MS);
        }
        g.reason = reason.to_string();
        self.down.store(true, Ordering::Release);
        was_up
    }

    /// Records a failed probe of a down shard: the next one waits twice as
    /// long, at most `max_backoff`.
    fn probe_failed(&self, reason: &str, max_backoff: Duration) {
        self.mark_down(reason);
        let mut g = self.inner.lock();
        g.failures = g.failures.saturating_add(1);
        let exp = FIRST_RETRY_MS.saturating_mul(1u64 << g.failures.min(20));
        let delay = Duration::from_millis(exp).min(max_backoff.max(Duration::from_millis(1)));
        g.next_probe = Instant::now() + delay;
    }

    /// Marks the shard up. Returns true if it was down.
    pub fn mark_up(&self) -> bool {
        let mut g = self.inner.lock();
        let was_down = g.since.take().is_some();
        g.failures = 0;
        g.reason.clear();
        self.down.store(false, Ordering::Release);
        was_down
    }

    /// Asks for a probe as soon as possible (a held connection broke: the
    /// shard may have gone away).
    pub fn suspect(&self) {
        self.inner.lock().next_probe = Instant::now();
    }

    /// Whether a probe is due at `now`.
    fn probe_due(&self, now: Instant) -> bool {
        now >= self.inner.lock().next_probe
    }

    fn schedule(&self, after: Duration) {
        self.inner.lock().next_probe = Instant::now() + after;
    }
}

/// Whether a connect error means the shard itself is unavailable (so later
/// checkouts should fail fast) rather than this one connection being
/// refused for a reason of its own (too many connections, bad password).
/// A connect that timed out does not: a stall of this machine looks the
/// same as a hung shard, so it only makes the shard suspect (probed at
/// once, and marked down if two probes in a row time out).
pub fn marks_down(e: &super::BackendError) -> bool {
    match e {
        super::BackendError::Connect { timed_out, .. } => !timed_out,
        super::BackendError::Protocol { .. } => true,
        // 57P01-57P03: admin shutdown, crash shutdown, cannot connect now
        // (starting up / shutting down / in recovery).
        super::BackendError::Refused { code, .. } => code.starts_with("57P"),
    }
}

/// What the checker needs to know about one shard.
pub struct CheckTarget {
    /// Connection parameters.
    pub target: super::ShardTarget,
    /// The shard's shared health.
    pub health: Arc<ShardHealth>,
}

/// The health checker loop: every 50 ms, probes each shard whose probe is
/// due — down shards with backoff (100 ms doubling up to `max_backoff`), up
/// shards every `interval` (zero: only when a broken connection made the
/// shard suspect) — and marks them up or down (an up shard after two
/// timed-out probes in a row, or one refused or failed). `targets` is called each
/// round (the shard list follows the catalog and reloads). Runs until
/// aborted.
pub async fn run_checker(
    targets: impl Fn() -> Vec<CheckTarget>,
    interval: impl Fn() -> (Duration, Duration),
) {
    // Per shard: the target a kept connection was opened with, and it.
    type Kept = std::collections::HashMap<String, (super::ShardTarget, super::BackendConn)>;
    let kept: Arc<Mutex<Kept>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (every, max_backoff) = interval();
        let now = Instant::now();
        for t in targets() {
            if !t.health.probe_due(now) || t.health.probing.swap(true, Ordering::AcqRel) {
                continue;
            }
            let kept = kept.clone();
            tokio::spawn(async move {
                // Reused only while the target is unchanged (a reload may
                // have changed the address, role or TLS).
                let conn = kept
                    .lock()
                    .remove(&t.target.name)
                    .filter(|(target, _)| *target == t.target)
                    .map(|(_, c)| c);
                let mut r = probe(&t.target, conn).await;
                // A stall of this machine (a paused VM, swapping) outlasts
                // a probe as a hung shard does: a shard that is up is
                // marked down only if a second probe, on a new connection,
                // times out too.
                if matches!(&r, Err(f) if f.timed_out) && t.health.is_up() {
                    r = probe(&t.target, None).await;
                }
                match r.map_err(|f| f.reason) {
                    Ok(conn) => {
                        if t.health.mark_up() {
                            tracing::info!(shard = %t.target.name, "shard is reachable again");
                        }
                        t.health.schedule(if every.is_zero() {
                            Duration::from_secs(3600)
                        } else {
                            every
                        });
                        kept.lock()
                            .insert(t.target.name.clone(), (t.target.clone(), conn));
                    }
                    Err(reason) => {
                        if t.health.mark_down(&reason) {
                            tracing::warn!(shard = %t.target.name, %reason, "shard is down; failing its queries fast until a probe succeeds");
                        }
                        t.health.probe_failed(&reason, max_backoff);
                    }
                }
                t.health.probing.store(false, Ordering::Release);
            });
        }
    }
}

/// Why a probe failed.
struct ProbeFailure {
    reason: String,
    /// No answer within the connect timeout (as opposed to a refused
    /// connection or an error answer).
    timed_out: bool,
}

/// Runs `SELECT 1` on `conn` (or a new connection) within the target's
/// connect timeout. Returns the connection for reuse, or why it failed.
async fn probe(
    t: &super::ShardTarget,
    conn: Option<super::BackendConn>,
) -> Result<super::BackendConn, ProbeFailure> {
    let fut = async {
        let reuse = conn.and_then(|mut c| (!c.is_stale()).then_some(c));
        let mut conn = match reuse {
            Some(c) => c,
            None => super::BackendConn::connect(t)
                .await
                .map_err(|e| e.to_string())?,
        };
        match conn.simple_rows("SELECT 1").await {
            Ok(Ok(_)) => Ok(conn),
            Ok(Err((code, msg))) => Err(format!(
                "shard \"{}\" failed a health check: {msg} (SQLSTATE {code})",
                t.name
            )),
            Err(e) => Err(format!("shard \"{}\": {e}", t.name)),
        }
    };
    match tokio::time::timeout(t.connect_timeout, fut).await {
        Ok(r) => r.map_err(|reason| ProbeFailure {
            reason,
            timed_out: false,
        }),
        Err(_) => Err(ProbeFailure {
            reason: format!(
                "shard \"{}\" did not answer a health check within {} ms",
                t.name,
                t.connect_timeout.as_millis()
            ),
            timed_out: true,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_then_up_with_backoff() {
        let h = ShardHealth::new();
        assert!(h.is_up() && h.down().is_none());
        assert!(h.mark_down("refused"));
        assert!(!h.mark_down("refused again"));
        let d = h.down().unwrap();
        assert_eq!(d.reason, "refused again");
        assert!(d.retry_in <= Duration::from_millis(FIRST_RETRY_MS));
        let max = Duration::from_millis(1000);
        h.probe_failed("x", max);
        assert!(h.down().unwrap().retry_in > Duration::from_millis(150));
        for _ in 0..10 {
            h.probe_failed("x", max);
        }
        assert!(h.down().unwrap().retry_in <= max);
        assert!(h.mark_up());
        assert!(h.is_up() && !h.mark_up());
    }

    #[test]
    fn which_errors_mark_a_shard_down() {
        let refused = |code: &str| super::super::BackendError::Refused {
            shard: "s".into(),
            message: "m".into(),
            code: code.into(),
        };
        assert!(marks_down(&refused("57P03")));
        assert!(!marks_down(&refused("53300")));
        assert!(!marks_down(&refused("28P01")));
        let connect = |timed_out: bool| super::super::BackendError::Connect {
            shard: "s".into(),
            addr: "a".into(),
            reason: "refused".into(),
            timed_out,
        };
        assert!(marks_down(&connect(false)));
        assert!(!marks_down(&connect(true)));
    }
}
