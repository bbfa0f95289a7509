//! Query cancellation (PostgreSQL docs §55.2.8): each client gets its own
//! BackendKeyData (process id + secret key) from the router; a
//! CancelRequest carrying it is forwarded as a CancelRequest to every
//! backend connection the client holds at that moment — one for a
//! fast-path statement, every shard of a scatter-gather or of a
//! multi-shard transaction (an idle backend ignores it, as PostgreSQL
//! does).
//!
//! A backend leaves the client's [`CancelSlot`] when the client releases
//! the connection (the [`CancelGuard`] in its `Held` entry is dropped), so
//! a cancel never reaches a connection back in the pool. Like PgBouncer's,
//! a cancel racing with the end of the statement can still arrive after
//! it; the protocol gives no way to tell statements apart.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::backend::conn::cancel_request;
use crate::backend::ShardPool;

/// A backend connection a client holds: its pool (whose target says where
/// to send the cancel) and its BackendKeyData.
#[derive(Clone)]
struct Backend {
    pool: Arc<ShardPool>,
    pid: i32,
    secret: i32,
    /// The client's transaction (or statement) wrote through it.
    wrote: bool,
}

/// The router's handle on one client: the backends it holds (for cancel
/// requests) and a wake-up for its session (router shutdown).
#[derive(Default)]
pub struct CancelSlot {
    backends: Mutex<Vec<Backend>>,
    /// Notified when the router's phase changes (the session re-checks it).
    pub wake: super::wake::WakeSignal,
    /// Who the client is (set once after authentication; `SHOW CLIENTS`).
    pub info: std::sync::OnceLock<ClientInfo>,
    /// What the session is doing now, one of the `ACTIVITY_*` values.
    pub activity: std::sync::atomic::AtomicU8,
}

/// A connected client, as the admin console's `SHOW CLIENTS` lists it.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The client's address.
    pub addr: Option<std::net::SocketAddr>,
    /// Authenticated user.
    pub user: String,
    /// Database from the StartupMessage.
    pub database: String,
    /// `application_name` from the StartupMessage (may be empty).
    pub application_name: String,
    /// When the client connected.
    pub connected_at: std::time::SystemTime,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// [`CancelSlot::activity`]: waiting for the client outside a transaction.
pub const ACTIVITY_IDLE: u8 = 0;
/// [`CancelSlot::activity`]: running a request.
pub const ACTIVITY_ACTIVE: u8 = 1;
/// [`CancelSlot::activity`]: waiting for the client inside a transaction.
pub const ACTIVITY_IN_TRANSACTION: u8 = 2;
/// [`CancelSlot::activity`]: inside a failed transaction.
pub const ACTIVITY_FAILED_TRANSACTION: u8 = 3;
/// [`CancelSlot::activity`]: an admin console session.
pub const ACTIVITY_ADMIN: u8 = 4;

/// The `state` column of `SHOW CLIENTS` for an activity value.
pub fn activity_label(a: u8) -> &'static str {
    match a {
        ACTIVITY_IDLE => "idle",
        ACTIVITY_ACTIVE => "active",
        ACTIVITY_IN_TRANSACTION => "idle in transaction",
        ACTIVITY_FAILED_TRANSACTION => "idle in transaction (aborted)",
        _ => "admin",
    }
}

impl CancelSlot {
    /// Records a backend of `pool` (process id `pid`, key `secret`) the
    /// client now holds; the returned guard removes it when dropped (the
    /// connection is released). Allocation-free but for the list's growth:
    /// it runs on every checkout.
    pub fn hold(self: &Arc<Self>, pool: &Arc<ShardPool>, pid: i32, secret: i32) -> CancelGuard {
        self.backends.lock().push(Backend {
            pool: pool.clone(),
            pid,
            secret,
            wrote: false,
        });
        CancelGuard {
            slot: self.clone(),
            pid,
            pool: pool.clone(),
        }
    }
}

/// Removes a backend from its client's [`CancelSlot`] on drop.
pub struct CancelGuard {
    slot: Arc<CancelSlot>,
    pid: i32,
    pool: Arc<ShardPool>,
}

impl CancelGuard {
    /// Records that the client wrote through this backend (until it is
    /// released): a cutover write block waits for such transactions.
    pub fn mark_wrote(&self) {
        for b in self.slot.backends.lock().iter_mut() {
            if b.pid == self.pid && Arc::ptr_eq(&b.pool, &self.pool) {
                b.wrote = true;
            }
        }
    }
}

impl CancelSlot {
    /// Whether the client holds a backend of shard `shard` it wrote
    /// through (an open writing transaction there).
    pub fn wrote_on(&self, shard: &str) -> bool {
        self.backends
            .lock()
            .iter()
            .any(|b| b.wrote && b.pool.target.name == shard)
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.slot
            .backends
            .lock()
            .retain(|b| !(b.pid == self.pid && Arc::ptr_eq(&b.pool, &self.pool)));
    }
}

/// The BackendKeyData the router issued to connected clients.
#[derive(Default)]
pub struct CancelRegistry {
    clients: Mutex<HashMap<i32, (i32, Arc<CancelSlot>)>>,
}

impl CancelRegistry {
    /// Registers a new client: returns its (process id, secret key) for
    /// BackendKeyData, its slot, and the key that unregisters it on drop.
    /// Process ids are unique among connected clients, positive, random.
    pub fn register(self: &Arc<Self>) -> (i32, i32, Arc<CancelSlot>, CancelKey) {
        let slot = Arc::new(CancelSlot::default());
        let secret = rand_u32() as i32;
        let mut clients = self.clients.lock();
        let pid = loop {
            let pid = (rand_u32() & 0x3fff_ffff) as i32;
            if pid != 0 && !clients.contains_key(&pid) {
                break pid;
            }
        };
        clients.insert(pid, (secret, slot.clone()));
        let key = CancelKey {
            registry: self.clone(),
            pid,
        };
        (pid, secret, slot, key)
    }

    /// Wakes every registered client's session (a permit is stored for a
    /// session that is not waiting).
    pub fn wake_all(&self) {
        for (_, slot) in self.clients.lock().values() {
            slot.wake.wake();
        }
    }

    /// Every registered client: (process id, slot), by process id.
    pub fn list(&self) -> Vec<(i32, Arc<CancelSlot>)> {
        let mut v: Vec<_> = self
            .clients
            .lock()
            .iter()
            .map(|(pid, (_, slot))| (*pid, slot.clone()))
            .collect();
        v.sort_by_key(|(pid, _)| *pid);
        v
    }

    /// Number of connected clients (registered keys).
    pub fn clients(&self) -> usize {
        self.clients.lock().len()
    }

    /// Handles a CancelRequest for (`pid`, `secret`): sends a CancelRequest
    /// to every backend the client holds. Unknown keys or a wrong secret
    /// are ignored (the protocol sends no reply). Returns the number of
    /// backends signalled.
    pub async fn cancel(&self, pid: i32, secret: i32) -> usize {
        let backends: Vec<Backend> = {
            let clients = self.clients.lock();
            match clients.get(&pid) {
                Some((s, slot)) if *s == secret => slot.backends.lock().clone(),
                _ => return 0,
            }
        };
        let mut sent = 0;
        for b in &backends {
            match cancel_request(&b.pool.target, b.pid, b.secret).await {
                Ok(()) => sent += 1,
                Err(e) => {
                    tracing::debug!(shard = %b.pool.target.name, error = %e, "cancel request failed")
                }
            }
        }
        sent
    }
}

/// Unregisters a client's cancel key when the session ends.
pub struct CancelKey {
    registry: Arc<CancelRegistry>,
    pid: i32,
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.registry.clients.lock().remove(&self.pid);
    }
}

/// A random u32 from the operating system's CSPRNG (cancel keys must be
/// unguessable by other clients).
pub(crate) fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    crate::auth::random_bytes(&mut b);
    u32::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str) -> Arc<ShardPool> {
        let t = crate::backend::ShardTarget {
            name: name.into(),
            host: "127.0.0.1".into(),
            port: 1,
            dbname: "d".into(),
            user: "u".into(),
            password: None,
            connect_timeout: std::time::Duration::from_millis(50),
            tls: None,
            application_name: "pg-router test".into(),
        };
        ShardPool::new(
            t,
            1,
            std::time::Duration::from_millis(50),
            crate::backend::ShardHealth::new(),
        )
    }

    #[test]
    fn keys_are_unique_and_released() {
        let reg = Arc::new(CancelRegistry::default());
        let (p1, _, _, k1) = reg.register();
        let (p2, _, _, k2) = reg.register();
        assert_ne!(p1, p2);
        assert!(p1 > 0 && p2 > 0);
        assert_eq!(reg.clients(), 2);
        drop(k1);
        assert_eq!(reg.clients(), 1);
        drop(k2);
        assert_eq!(reg.clients(), 0);
    }

    #[test]
    fn guards_track_held_backends() {
        let slot = Arc::new(CancelSlot::default());
        let g1 = slot.hold(&pool("s0"), 10, 1);
        let g2 = slot.hold(&pool("s1"), 10, 2);
        assert_eq!(slot.backends.lock().len(), 2);
        drop(g1);
        let left: Vec<String> = slot
            .backends
            .lock()
            .iter()
            .map(|b| b.pool.target.name.clone())
            .collect();
        assert_eq!(left, vec!["s1".to_string()]);
        drop(g2);
        assert!(slot.backends.lock().is_empty());
    }

    #[tokio::test]
    async fn wrong_secret_or_unknown_pid_signals_nothing() {
        let reg = Arc::new(CancelRegistry::default());
        let (pid, secret, slot, _key) = reg.register();
        let _g = slot.hold(&pool("s0"), 10, 1);
        assert_eq!(reg.cancel(pid, secret.wrapping_add(1)).await, 0);
        assert_eq!(reg.cancel(pid.wrapping_add(1), secret).await, 0);
    }
}
