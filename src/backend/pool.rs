//! Per-shard connection pool for raw backend connections, used in
//! transaction pooling mode: a client holds a connection for the length of a
//! transaction and gives it back at ReadyForQuery idle.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::health::{marks_down, ShardHealth};
use super::{BackendConn, BackendError, ShardTarget};

/// A bounded pool of connections to one shard.
pub struct ShardPool {
    /// Connection parameters.
    pub target: ShardTarget,
    idle: Mutex<Vec<BackendConn>>,
    slots: Arc<Semaphore>,
    max_size: usize,
    checkout_timeout: Duration,
    opened: AtomicU64,
    waiting: AtomicUsize,
    health: Arc<ShardHealth>,
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
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(max_size.max(1))),
            max_size: max_size.max(1),
            checkout_timeout,
            opened: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            health,
        })
    }

    /// Checks out an idle connection or opens a new one. Idle connections
    /// the shard has closed meanwhile are dropped, not handed out.
    ///
    /// Errors: [`PoolError::Down`] at once while the shard is marked down,
    /// [`PoolError::Timeout`], [`PoolError::Backend`] (a failed connect,
    /// which marks the shard down when the shard itself is unavailable).
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
        // Fast path: a free slot, no timer.
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let waited = {
                    let _waiting = Waiting::new(&self.waiting);
                    tokio::time::timeout(self.checkout_timeout, self.slots.clone().acquire_owned())
                        .await
                };
                match waited {
                    Ok(Ok(p)) => p,
                    _ => {
                        return Err(PoolError::Timeout {
                            shard: self.target.name.clone(),
                            ms: self.checkout_timeout.as_millis(),
                            size: self.max_size,
                        })
                    }
                }
            }
        };
        let conn = loop {
            let idle = self.idle.lock().pop();
            match idle {
                Some(mut c) => {
                    if !c.is_stale() {
                        break c;
                    }
                    // The shard closed it (restart, terminated backend).
                    self.health.suspect();
                }
                None => {
                    self.opened.fetch_add(1, Ordering::Relaxed);
                    match BackendConn::connect(&self.target).await {
                        Ok(c) => break c,
                        Err(e) => {
                            if marks_down(&e) && self.health.mark_down(&e.to_string()) {
                                tracing::warn!(shard = %self.target.name, error = %e, "shard is down; failing its queries fast until a probe succeeds");
                            }
                            return Err(e.into());
                        }
                    }
                }
            }
        };
        Ok(PooledConn {
            conn: Some(conn),
            pool: self.clone(),
            _permit: permit,
        })
    }

    /// Connections checked out now.
    pub fn in_use(&self) -> usize {
        self.max_size - self.slots.available_permits().min(self.max_size)
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
        self.idle.lock().len()
    }

    /// Drops every idle connection (e.g. after the shard restarted).
    pub fn clear_idle(&self) {
        self.idle.lock().clear();
    }
}

/// A checked-out connection; returned to its pool on drop when it is healthy
/// and idle (status `I`), closed otherwise.
pub struct PooledConn {
    conn: Option<BackendConn>,
    pool: Arc<ShardPool>,
    _permit: OwnedSemaphorePermit,
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
            if !c.broken && c.status == b'I' && c.out.is_empty() {
                self.pool.idle.lock().push(c);
            } else if c.broken {
                // Lost mid-use: probe the shard now rather than at the next
                // interval.
                self.pool.health.suspect();
            }
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
