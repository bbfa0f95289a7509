//! Per-shard connection pool for raw backend connections, used in
//! transaction pooling mode: a client holds a connection for the length of a
//! transaction and gives it back at ReadyForQuery idle.
//!
//! Checkouts barge: a session that asks while a connection is idle takes it
//! at once, even when other checkouts are waiting. A released connection
//! wakes one waiter (oldest first), which takes it if no running session
//! did meanwhile and otherwise waits again; the checkout timeout bounds how
//! long a waiter can lose that race. Handing a released connection to the
//! oldest waiter instead (a fair queue) leaves it idle until that waiter's
//! task runs, which with hundreds of runnable sessions per worker is most
//! of the time (docs/benchmarks.md, 1,000 clients).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::health::{marks_down, ShardHealth};
use super::{BackendConn, BackendError, ShardTarget};

/// A bounded pool of connections to one shard.
pub struct ShardPool {
    /// Connection parameters.
    pub target: ShardTarget,
    slots: Mutex<Slots>,
    /// One wake-up per released connection or freed slot.
    freed: Notify,
    max_size: usize,
    checkout_timeout: Duration,
    opened: AtomicU64,
    waiting: AtomicUsize,
    health: Arc<ShardHealth>,
}

/// The pool's connections: `open` counts every connection against
/// `max_size` (idle, checked out, or being opened).
#[derive(Default)]
struct Slots {
    idle: Vec<BackendConn>,
    open: usize,
}

/// Errors checking a connection out.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No connection became free within the checkout timeout.
    #[error(
        "timed out after {ms} ms waiting for a connection to shard \"{shard}\" (pool size {size})"
    )]
    Timeout {
        /// Shard name.
        shard: String,
        /// Waited, in ms.
        ms: u128,
        /// Pool size.
        size: usize,
    },
    /// The shard is marked down (a connect or health check failed); no
    /// connection was attempted.
    #[error("shard \"{shard}\" is unavailable (down for {down_ms} ms; next reconnect attempt in {retry_ms} ms): {reason}")]
    Down {
        /// Shard name.
        shard: String,
        /// The last connect or probe error.
        reason: String,
        /// How long the shard has been down, ms.
        down_ms: u128,
        /// Until the health checker's next probe, ms.
        retry_ms: u128,
    },
    /// Connecting failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// What a checkout attempt got.
enum Got<'a> {
    /// An idle connection.
    Idle(BackendConn),
    /// A free slot, now counted in `open`: connect on it.
    Slot(OpenSlot<'a>),
}

impl ShardPool {
    /// A pool of at most `max_size` connections; checkouts wait at most
    /// `checkout_timeout` and fail at once while `health` says the shard is
    /// down.
    pub fn new(
        target: ShardTarget,
        max_size: usize,
        checkout_timeout: Duration,
        health: Arc<ShardHealth>,
    ) -> Arc<ShardPool> {
        Arc::new(ShardPool {
            target,
            slots: Mutex::new(Slots::default()),
            freed: Notify::new(),
            max_size: max_size.max(1),
            checkout_timeout,
            opened: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            health,
        })
    }

    /// Checks out an idle connection or opens a new one, waiting (at most
    /// the checkout timeout) while all `max_size` are in use; a checkout
    /// takes an idle connection even when others are waiting (see the
    /// module docs). Idle connections the shard has closed meanwhile are
    /// dropped, not handed out.
    ///
    /// Errors: [`PoolError::Down`] at once while the shard is marked down,
    /// [`PoolError::Timeout`], [`PoolError::Backend`] (a failed connect,
    /// which marks the shard down when the shard itself is unavailable,
    /// and asks the health checker for a probe when it timed out).
    pub async fn get(self: &Arc<Self>) -> Result<PooledConn, PoolError> {
        if let Some(d) = self.health.down() {
            self.clear_idle();
            return Err(PoolError::Down {
                shard: self.target.name.clone(),
                reason: d.reason,
                down_ms: d.for_.as_millis(),
                retry_ms: d.retry_in.as_millis(),
            });
        }
        // Fast path: an idle connection or a free slot, no timer.
        let got = match self.take() {
            Some(got) => got,
            None => self.wait().await?,
        };
        let slot = match got {
            Got::Idle(c) => return Ok(self.pooled(c)),
            Got::Slot(slot) => slot,
        };
        self.opened.fetch_add(1, Ordering::Relaxed);
        match BackendConn::connect(&self.target).await {
            Ok(c) => {
                slot.keep();
                Ok(self.pooled(c))
            }
            Err(e) => {
                if e.timed_out() {
                    tracing::warn!(shard = %self.target.name, error = %e, "connect timed out; probing the shard now");
                    self.health.suspect();
                } else if marks_down(&e) && self.health.mark_down(&e.to_string()) {
                    tracing::warn!(shard = %self.target.name, error = %e, "shard is down; failing its queries fast until a probe succeeds");
                }
                Err(e.into())
            }
        }
    }

    /// An idle connection, or a free slot; None when all are in use.
    /// The staleness probe (a socket read) runs outside the lock.
    fn take(&self) -> Option<Got<'_>> {
        loop {
            let mut c = {
                let mut s = self.slots.lock();
                match s.idle.pop() {
                    Some(c) => c,
                    None if s.open < self.max_size => {
                        s.open += 1;
                        return Some(Got::Slot(OpenSlot(Some(self))));
                    }
                    None => return None,
                }
            };
            if !c.is_stale() {
                return Some(Got::Idle(c));
            }
            // The shard closed it (restart, terminated backend).
            self.slots.lock().open -= 1;
            self.health.suspect();
        }
    }

    /// Waits for a released connection or slot, until the checkout
    /// timeout (a woken waiter that finds it taken waits again).
    async fn wait(&self) -> Result<Got<'_>, PoolError> {
        let _waiting = Waiting::new(&self.waiting);
        let deadline = tokio::time::Instant::now() + self.checkout_timeout;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before looking, so a release in between wakes it.
            freed.as_mut().enable();
            if let Some(got) = self.take() {
                return Ok(got);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(PoolError::Timeout {
                    shard: self.target.name.clone(),
                    ms: self.checkout_timeout.as_millis(),
                    size: self.max_size,
                });
            }
        }
    }

    fn pooled(self: &Arc<Self>, conn: BackendConn) -> PooledConn {
        PooledConn {
            conn: Some(conn),
            pool: self.clone(),
        }
    }

    /// Gives a connection back (kept idle when `keep`, else closed) and
    /// wakes one waiting checkout.
    fn put_back(&self, conn: BackendConn, keep: bool) {
        let mut s = self.slots.lock();
        if keep {
            s.idle.push(conn);
        } else {
            s.open -= 1;
        }
        drop(s);
        // A connection not kept closes here, outside the lock.
        self.freed.notify_one();
    }

    /// Connections checked out now (or being opened).
    pub fn in_use(&self) -> usize {
        let s = self.slots.lock();
        s.open - s.idle.len()
    }

    /// Checkouts waiting for a free connection now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Most connections this pool holds at once.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// How long a checkout waits for a free connection.
    pub fn checkout_timeout(&self) -> Duration {
        self.checkout_timeout
    }

    /// Connections this pool has opened (attempts, successful or not).
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Idle connections in the pool.
    pub fn idle_count(&self) -> usize {
        self.slots.lock().idle.len()
    }

    /// Drops every idle connection (e.g. after the shard restarted).
    pub fn clear_idle(&self) {
        let idle = {
            let mut s = self.slots.lock();
            s.open -= s.idle.len();
            std::mem::take(&mut s.idle)
        };
        if !idle.is_empty() {
            drop(idle);
            self.freed.notify_one();
        }
    }
}

/// A slot counted in the pool's `open` while a connection is opened on it;
/// freed again (and a waiter woken) unless [`OpenSlot::keep`] is called,
/// also when the checkout is abandoned mid-connect.
struct OpenSlot<'a>(Option<&'a ShardPool>);

impl OpenSlot<'_> {
    /// The connection was opened: the slot is now its.
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for OpenSlot<'_> {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take() {
            pool.slots.lock().open -= 1;
            pool.freed.notify_one();
        }
    }
}

/// A checked-out connection; returned to its pool on drop when it is healthy
/// and idle (status `I`), closed otherwise.
pub struct PooledConn {
    conn: Option<BackendConn>,
    pool: Arc<ShardPool>,
}

impl std::ops::Deref for PooledConn {
    type Target = BackendConn;
    fn deref(&self) -> &BackendConn {
        // Invariant: `conn` is Some until drop.
        self.conn
            .as_ref()
            .expect("pooled connection present until drop")
    }
}

impl std::ops::DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut BackendConn {
        self.conn
            .as_mut()
            .expect("pooled connection present until drop")
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            let keep = !c.broken && c.status == b'I' && c.out.is_empty();
            if c.broken {
                // Lost mid-use: probe the shard now rather than at the next
                // interval.
                self.pool.health.suspect();
            }
            self.pool.put_back(c, keep);
        }
    }
}

/// Counts a waiting checkout while alive (also if the wait is abandoned).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
