//! State shared by every client session: the routing snapshot (catalog +
//! plan cache), per-shard pools, and the server parameters clients see;
//! the registry of connected clients ([`clients`]) and the client-facing
//! TLS settings ([`tls`]).

pub mod clients;
pub mod gate;
pub mod lease;
pub mod sequences;
pub mod splits;
pub mod tls;
pub mod wake;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use foldhash::{HashMap, HashMapExt};
use parking_lot::RwLock;

use crate::auth::UserDb;
use crate::backend::{BackendConn, BackendError, ShardHealth, ShardPool, ShardTarget};
use crate::catalog::Catalog;
use crate::config::{BackendConfig, LimitsConfig, RouterConfig};
use crate::plan::schema::SharedSchema;
use crate::plan::{Planner, SchemaView, SequenceOwner};
use crate::txn::log::DecisionLog;
use crate::txn::{Gids, TxnConfig};

/// One consistent routing snapshot. A new snapshot (with an empty plan
/// cache) replaces the old one whenever the catalog changes, so a plan is
/// never used with a catalog other than the one it was made from.
pub struct Routing {
    /// The catalog.
    pub catalog: Arc<Catalog>,
    /// Plan cache for this catalog.
    pub planner: Planner,
    /// Increases by one with every catalog change.
    pub version: u64,
    /// Table columns read from the shards (by catalog table name), for
    /// this catalog; cleared with the plan cache after DDL through the
    /// router ([`Routing::forget_schemas`]).
    pub schemas: RwLock<HashMap<String, SharedSchema>>,
    /// Increases whenever `schemas` changes: prepared statements planned
    /// at another value are planned again.
    schema_epoch: AtomicU64,
}

impl Routing {
    /// A snapshot of `catalog` with empty caches.
    fn new(catalog: Arc<Catalog>, plan_cache_capacity: usize, version: u64) -> Routing {
        Routing {
            catalog,
            planner: Planner::new(plan_cache_capacity).with_auto_prepare(true),
            version,
            schemas: RwLock::new(HashMap::new()),
            schema_epoch: AtomicU64::new(0),
        }
    }

    /// The version of the table columns known (see [`Routing::schemas`]).
    pub fn schema_epoch(&self) -> u64 {
        self.schema_epoch.load(Ordering::Acquire)
    }

    /// Records the columns of `table` (read from the shards) and drops the
    /// cached plans, some of which were made without them.
    pub fn install_schema(&self, table: &str, schema: SharedSchema) {
        self.schemas.write().insert(table.to_string(), schema);
        self.planner.clear();
        self.schema_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Forgets every table's columns and the plans made from them (after
    /// DDL through the router).
    pub fn forget_schemas(&self) {
        let had = {
            let mut s = self.schemas.write();
            let had = !s.is_empty();
            s.clear();
            had
        };
        if had {
            self.planner.clear();
            self.schema_epoch.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl SchemaView for Routing {
    fn key_column(&self, table: &str) -> Option<&str> {
        self.catalog.key_column(table)
    }

    fn is_reference(&self, table: &str) -> bool {
        self.catalog.is_reference(table)
    }

    fn lookups(&self, table: &str) -> Vec<(String, Arc<str>)> {
        SchemaView::lookups(&*self.catalog, table)
    }

    fn key_info(&self, table: &str) -> Option<(&str, crate::vindex::KeyType)> {
        SchemaView::key_info(&*self.catalog, table)
    }

    fn table_schema(&self, table: &str) -> Option<SharedSchema> {
        self.schemas.read().get(table).cloned()
    }

    fn sequence_owner(&self, sequence: &str) -> SequenceOwner {
        let schemas = self.schemas.read();
        for (name, t) in &self.catalog.tables {
            let key = t.key_column.as_str();
            match schemas.get(name) {
                Some(s) => {
                    if s.key_generator(key)
                        .is_some_and(|g| g.sequence.as_deref() == Some(sequence))
                    {
                        return SequenceOwner::Table(name.clone());
                    }
                }
                // serial's default name: <table>_<column>_seq.
                None if sequence == format!("{name}_{key}_seq") => {
                    return SequenceOwner::Unread(name.clone())
                }
                None => {}
            }
        }
        SequenceOwner::None
    }
}

impl SchemaView for Catalog {
    fn key_column(&self, table: &str) -> Option<&str> {
        self.table(table).map(|t| t.key_column.as_str())
    }

    fn key_info(&self, table: &str) -> Option<(&str, crate::vindex::KeyType)> {
        self.table(table).map(|t| (t.keyspace.as_str(), t.key_type))
    }

    fn is_reference(&self, table: &str) -> bool {
        Catalog::is_reference(self, table)
    }

    fn lookups(&self, table: &str) -> Vec<(String, std::sync::Arc<str>)> {
        self.lookups_of(table)
            .iter()
            .map(|l| {
                (
                    l.column.clone(),
                    std::sync::Arc::from(l.lookup_table.as_str()),
                )
            })
            .collect()
    }
}

/// Router-wide shared state.
pub struct RouterState {
    routing: ArcSwap<Routing>,
    /// Per shard, one pool per session worker (index = worker).
    pools: RwLock<HashMap<String, Arc<[Arc<ShardPool>]>>>,
    /// Bumped whenever `pools` changes, so sessions can cache lookups.
    pools_epoch: AtomicU64,
    /// Per shard, its health (shared by its pools in every worker; kept
    /// across pool replacement unless the shard's address changed).
    health: RwLock<HashMap<String, (ShardTarget, Arc<ShardHealth>)>>,
    workers: usize,
    /// Backend connection settings (reloadable: new pools use them).
    backend: RwLock<BackendConfig>,
    /// `backend.prepare_simple_queries` (reloadable).
    prepare_simple: std::sync::atomic::AtomicBool,
    /// TLS to the shards built from `backend` (None = plaintext).
    backend_tls: RwLock<Option<crate::backend::tls::BackendTls>>,
    /// Limits (reloadable; each is read where it applies).
    limits: ArcSwap<LimitsConfig>,
    server_params: RwLock<Vec<(String, String)>>,
    rr: AtomicUsize,
    version: AtomicU64,
    /// Distributed transaction settings.
    pub txn: TxnConfig,
    /// Global transaction ids of this router.
    pub gids: Gids,
    decisions: OnceLock<DecisionLog>,
    /// Cancel keys issued to connected clients.
    pub cancels: Arc<clients::CancelRegistry>,
    users: ArcSwap<UserDb>,
    clients: Arc<AtomicUsize>,
    /// Request, error and transaction statistics.
    pub metrics: crate::metrics::Metrics,
    phase: std::sync::atomic::AtomicU8,
    paused: std::sync::atomic::AtomicBool,
    resumed: tokio::sync::Notify,
    reload_hook: OnceLock<ReloadHook>,
    tls: ArcSwap<tls::TlsSettings>,
    /// Whether writes may start now (catalog lease, cutover blocks).
    pub gate: gate::WriteGate,
    /// Split jobs as last read, and the write-block windows seen here.
    pub splits: splits::SplitBoard,
    /// The `[resharding]` settings.
    pub resharding: crate::config::ReshardingConfig,
    /// Blocks of generated sharding key values reserved by this router.
    pub sequences: sequences::Sequences,
}

/// Why a configuration reload was refused (nothing was applied).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The `[auth]` section or users file.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthConfigError),
    /// The `[tls]` certificate or key.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// `backend.tls` / `backend.tls_ca_file`.
    #[error("{0}")]
    BackendTls(String),
}

/// Re-reads and applies the configuration file (`pg-router serve`):
/// returns the changed keys that need a restart, or why the file was
/// refused.
pub type ReloadHook = Box<dyn Fn(&RouterState) -> Result<Vec<&'static str>, String> + Send + Sync>;

/// The router's lifecycle, as sessions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Serving.
    Running = 0,
    /// Shutting down gracefully: clients are closed (57P01) when they are
    /// between transactions; open transactions may finish.
    Draining = 1,
    /// The drain deadline passed: every client is closed at its next read.
    Closing = 2,
}

/// One shard's pools (all workers) at one instant.
#[derive(Debug, Clone, Default)]
pub struct PoolStats {
    /// Shard name.
    pub shard: String,
    /// Most connections.
    pub size: usize,
    /// Checked out by clients.
    pub in_use: usize,
    /// Open and idle.
    pub idle: usize,
    /// Clients waiting for a connection.
    pub waiting: usize,
    /// Connections opened since start (attempts).
    pub opened: u64,
}

/// A client's place under `max_client_connections`, given back on drop.
pub struct ClientGuard(Arc<AtomicUsize>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RouterState {
    /// Shared state for `catalog` under configuration `cfg`, accepting the
    /// clients in `users`; `backend_tls` is `cfg.backend.tls_config()`
    /// (loaded by the caller, which reports its errors: a bad CA file must
    /// not fall back to plaintext). Each of the `cfg.effective_workers()`
    /// session workers gets its own pool per shard of
    /// `ceil(backend.pool_size / workers)` connections.
    pub fn new(
        catalog: Catalog,
        cfg: &RouterConfig,
        users: UserDb,
        backend_tls: Option<crate::backend::tls::BackendTls>,
    ) -> Arc<Self> {
        let workers = cfg.effective_workers();
        let st = Arc::new(RouterState {
            routing: ArcSwap::from_pointee(Routing::new(
                Arc::new(Catalog::empty()),
                cfg.limits.plan_cache_capacity,
                0,
            )),
            pools: RwLock::new(HashMap::new()),
            pools_epoch: AtomicU64::new(0),
            health: RwLock::new(HashMap::new()),
            workers: workers.max(1),
            backend: RwLock::new(cfg.backend.clone()),
            prepare_simple: std::sync::atomic::AtomicBool::new(cfg.backend.prepare_simple_queries),
            backend_tls: RwLock::new(backend_tls),
            limits: ArcSwap::from_pointee(cfg.limits.clone()),
            server_params: RwLock::new(Vec::new()),
            rr: AtomicUsize::new(0),
            version: AtomicU64::new(0),
            txn: cfg.transactions.clone(),
            gids: Gids::new(),
            decisions: OnceLock::new(),
            cancels: Arc::default(),
            users: ArcSwap::from_pointee(users),
            clients: Arc::default(),
            phase: std::sync::atomic::AtomicU8::new(Phase::Running as u8),
            paused: std::sync::atomic::AtomicBool::new(false),
            resumed: tokio::sync::Notify::new(),
            reload_hook: OnceLock::new(),
            tls: ArcSwap::from_pointee(tls::TlsSettings::disabled()),
            metrics: crate::metrics::Metrics::new(workers),
            gate: gate::WriteGate::without_lease(),
            splits: splits::SplitBoard::default(),
            resharding: cfg.resharding.clone(),
            sequences: sequences::Sequences::default(),
        });
        st.apply_catalog(catalog);
        st
    }

    /// True if single-shard simple-protocol statements run on the shards
    /// as prepared statements of their normalized text
    /// (`backend.prepare_simple_queries`).
    pub fn prepare_simple_queries(&self) -> bool {
        self.prepare_simple.load(Ordering::Relaxed)
    }

    /// The current routing snapshot.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.load_full()
    }

    /// Installs a new catalog: pools for new or changed shards, a fresh plan
    /// cache. Sessions pick it up at their next statement; pinned backend
    /// connections are unaffected.
    pub fn apply_catalog(&self, catalog: Catalog) {
        self.refresh_pools(&catalog);
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        self.routing.store(Arc::new(Routing::new(
            Arc::new(catalog),
            self.limits.load().plan_cache_capacity,
            version,
        )));
    }

    /// Makes a pool set for every shard of `catalog` whose target or pool
    /// settings changed, drops pools of removed shards. Connections checked
    /// out of a replaced pool go back to it and close with it.
    fn refresh_pools(&self, catalog: &Catalog) {
        let backend = self.backend.read().clone();
        let per_worker = backend.pool_size.div_ceil(self.workers);
        let timeout = Duration::from_millis(backend.checkout_timeout_ms);
        {
            let mut pools = self.pools.write();
            let mut health = self.health.write();
            pools.retain(|name, _| catalog.shards.contains_key(name));
            health.retain(|name, _| catalog.shards.contains_key(name));
            for (name, s) in &catalog.shards {
                let target = ShardTarget {
                    name: name.clone(),
                    host: s.host.clone(),
                    port: s.port,
                    dbname: s.dbname.clone(),
                    user: s.user.clone().unwrap_or_else(|| backend.user.clone()),
                    password: backend.password.clone(),
                    connect_timeout: Duration::from_millis(backend.connect_timeout_ms),
                    tls: self.backend_tls.read().clone(),
                    application_name: crate::backend::router_application_name(
                        self.gids.router_id(),
                    ),
                };
                let same = pools.get(name).is_some_and(|p| {
                    p.first().is_some_and(|p| {
                        p.target == target
                            && p.max_size() == per_worker.max(1)
                            && p.checkout_timeout() == timeout
                    })
                });
                let h = match health.get(name) {
                    Some((t, h)) if t.host == target.host && t.port == target.port => h.clone(),
                    _ => ShardHealth::new(),
                };
                health.insert(name.clone(), (target.clone(), h.clone()));
                if !same {
                    let per: Arc<[Arc<ShardPool>]> = (0..self.workers)
                        .map(|_| ShardPool::new(target.clone(), per_worker, timeout, h.clone()))
                        .collect();
                    pools.insert(name.clone(), per);
                }
            }
            // Under the write lock: a session that sees the new epoch
            // finds the new pools.
            self.pools_epoch.fetch_add(1, Ordering::Release);
        }
    }

    /// Changes whenever a shard's pools are added, replaced or removed
    /// (see [`crate::exec::pool_cache::PoolCache`]).
    pub fn pools_epoch(&self) -> u64 {
        self.pools_epoch.load(Ordering::Acquire)
    }

    /// Installs the 2PC decision log (once; later calls are ignored).
    pub fn set_decision_log(&self, log: DecisionLog) {
        let _ = self.decisions.set(log);
    }

    /// The 2PC decision log, None before [`RouterState::set_decision_log`].
    pub fn decision_log(&self) -> Option<&DecisionLog> {
        self.decisions.get()
    }

    /// Number of session workers.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Session worker `worker`'s pool for `shard` (`None` for an unknown
    /// shard or worker).
    pub fn pool(&self, shard: &str, worker: usize) -> Option<Arc<ShardPool>> {
        self.pools
            .read()
            .get(shard)
            .and_then(|p| p.get(worker))
            .cloned()
    }

    /// A shard name chosen round-robin, for statements any shard can
    /// answer; shards marked down are skipped while another is up.
    pub fn any_shard(&self) -> Option<String> {
        let routing = self.routing();
        let names = routing.catalog.shard_names();
        if names.is_empty() {
            return None;
        }
        let start = self.rr.fetch_add(1, Ordering::Relaxed);
        let health = self.health.read();
        let up = |n: &str| health.get(n).is_none_or(|(_, h)| h.is_up());
        let pick = (0..names.len())
            .map(|k| names[(start + k) % names.len()])
            .find(|n| up(n))
            .unwrap_or(names[start % names.len()]);
        Some(pick.to_string())
    }

    /// Every shard of the current catalog with its connection target (as
    /// session worker 0's pool has it), for 2PC recovery.
    pub fn shard_targets(&self) -> Vec<(String, ShardTarget)> {
        let routing = self.routing();
        routing
            .catalog
            .shard_names()
            .into_iter()
            .filter_map(|s| Some((s.to_string(), self.pool(s, 0)?.target.clone())))
            .collect()
    }

    /// Every shard's connection target and health, for the health checker.
    pub fn health_targets(&self) -> Vec<crate::backend::health::CheckTarget> {
        self.health
            .read()
            .values()
            .map(|(t, h)| crate::backend::health::CheckTarget {
                target: t.clone(),
                health: h.clone(),
            })
            .collect()
    }

    /// The health checker's settings: (probe interval of shards that are
    /// up, longest reconnect backoff of shards that are down).
    pub fn health_intervals(&self) -> (Duration, Duration) {
        let b = self.backend.read();
        (
            Duration::from_millis(b.health_check_interval_ms),
            Duration::from_millis(b.retry_backoff_max_ms),
        )
    }

    /// Shards and whether each is up (sorted by name).
    pub fn shard_health(&self) -> Vec<(String, Option<crate::backend::health::Down>)> {
        let mut v: Vec<_> = self
            .health
            .read()
            .iter()
            .map(|(n, (_, h))| (n.clone(), h.down()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Connects to the first shard to learn the ParameterStatus values
    /// (server_version, encodings, DateStyle, ...) reported to clients.
    ///
    /// Errors: the shard is unreachable or refuses the connection.
    pub async fn fetch_server_params(&self) -> Result<(), BackendError> {
        let Some(shard) = self
            .routing()
            .catalog
            .shard_names()
            .first()
            .map(|s| s.to_string())
        else {
            return Ok(());
        };
        let Some(pool) = self.pool(&shard, 0) else {
            return Ok(());
        };
        let conn = BackendConn::connect(&pool.target).await?;
        *self.server_params.write() = conn
            .params
            .iter()
            .filter(|(k, _)| k != "application_name")
            .cloned()
            .collect();
        conn.terminate().await;
        Ok(())
    }

    /// The user database clients authenticate against.
    pub fn users(&self) -> Arc<UserDb> {
        self.users.load_full()
    }

    /// Replaces the user database (config reload); connected clients stay.
    pub fn set_users(&self, users: UserDb) {
        self.users.store(Arc::new(users));
    }

    /// The current limits.
    pub fn limits(&self) -> arc_swap::Guard<Arc<LimitsConfig>> {
        self.limits.load()
    }

    /// Applies a reloaded configuration: users, TLS certificate, limits and
    /// backend pool settings (pools whose settings changed are replaced; clients keep
    /// the connections they hold). Returns the keys that changed but only
    /// take effect after a restart.
    ///
    /// Errors: an invalid `[auth]` section or users file, an unusable TLS
    /// certificate or key; nothing is applied then.
    pub fn reload(
        &self,
        cfg: &RouterConfig,
        running: &RouterConfig,
    ) -> Result<Vec<&'static str>, ReloadError> {
        let users = UserDb::load(&cfg.auth)?;
        let tls = tls::TlsSettings::load(&cfg.tls)?;
        let backend_tls = cfg.backend.tls_config().map_err(ReloadError::BackendTls)?;
        self.set_users(users);
        self.set_tls(tls);
        *self.backend_tls.write() = backend_tls;
        self.limits.store(Arc::new(cfg.limits.clone()));
        *self.backend.write() = cfg.backend.clone();
        self.prepare_simple
            .store(cfg.backend.prepare_simple_queries, Ordering::Relaxed);
        self.refresh_pools(&self.routing().catalog);
        let mut restart = Vec::new();
        if cfg.listen != running.listen {
            restart.push("listen");
        }
        if cfg.catalog != running.catalog {
            restart.push("catalog");
        }
        if cfg.workers != running.workers {
            restart.push("workers");
        }
        if cfg.transactions != running.transactions {
            restart.push("transactions");
        }
        if cfg.metrics_listen != running.metrics_listen {
            restart.push("metrics_listen");
        }
        Ok(restart)
    }

    /// The client-facing TLS settings new connections use.
    pub fn tls(&self) -> Arc<tls::TlsSettings> {
        self.tls.load_full()
    }

    /// Replaces the TLS settings (start, SIGHUP); connected clients keep
    /// their sessions.
    pub fn set_tls(&self, tls: tls::TlsSettings) {
        self.tls.store(Arc::new(tls));
    }

    /// Installs what the admin console's RELOAD runs (once).
    pub fn set_reload_hook(&self, hook: ReloadHook) {
        let _ = self.reload_hook.set(hook);
    }

    /// Runs the reload hook: None when the router has no configuration
    /// file (`pg-router dev`).
    pub fn reload_config(&self) -> Option<Result<Vec<&'static str>, String>> {
        self.reload_hook.get().map(|h| h(self))
    }

    /// PAUSE (admin console): sessions hold new transactions until
    /// [`RouterState::resume`]; transactions already open go on.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    /// RESUME: releases the sessions PAUSE holds.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.resumed.notify_waiters();
    }

    /// Whether PAUSE is in force.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Completes at the next RESUME (create it before checking
    /// [`RouterState::is_paused`] so no RESUME is missed).
    pub fn resumed(&self) -> tokio::sync::futures::Notified<'_> {
        self.resumed.notified()
    }

    /// Pool statistics per shard, summed over session workers.
    pub fn pool_stats(&self) -> Vec<PoolStats> {
        let pools = self.pools.read();
        let mut out: Vec<PoolStats> = pools
            .iter()
            .map(|(shard, per)| {
                let mut s = PoolStats {
                    shard: shard.clone(),
                    ..PoolStats::default()
                };
                for p in per.iter() {
                    s.size += p.max_size();
                    s.in_use += p.in_use();
                    s.idle += p.idle_count();
                    s.waiting += p.waiting();
                    s.opened += p.connections_opened();
                }
                s
            })
            .collect();
        out.sort_by(|a, b| a.shard.cmp(&b.shard));
        out
    }

    /// The router's [`Phase`].
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Running,
            1 => Phase::Draining,
            _ => Phase::Closing,
        }
    }

    /// Moves the router to `phase` and wakes every session waiting for its
    /// client, so idle ones react at once.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
        self.cancels.wake_all();
    }

    /// Takes a place for a new client, or None when
    /// `max_client_connections` are already connected (or authenticating).
    pub fn admit_client(&self) -> Option<ClientGuard> {
        let n = self.clients.fetch_add(1, Ordering::Relaxed);
        let guard = ClientGuard(self.clients.clone());
        (n < self.limits.load().max_client_connections).then_some(guard)
    }

    /// Client connections past the StartupMessage (authenticating or in a
    /// session).
    pub fn client_connections(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// ParameterStatus values for a new client.
    pub fn server_params(&self) -> Vec<(String, String)> {
        self.server_params.read().clone()
    }
}
