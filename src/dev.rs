//! Wiring: start a router from a configuration (`serve`), or start an
//! embedded throwaway cluster plus a router in front of it (`dev`, also the
//! harness used by the integration tests).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::auth::{AuthConfig, UserDb};
use crate::catalog::{self, ShardInfo};
use crate::client::workers::Workers;
use crate::cluster::{ClusterOptions, LocalCluster};
use crate::config::{BackendConfig, LimitsConfig, RouterConfig};
use crate::state::{Phase, RouterState};
use crate::txn::log::DecisionLog;
use crate::txn::TxnConfig;

/// Errors starting the router or the embedded cluster.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// Configuration problem.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Invalid `[auth]` section or users file.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthConfigError),
    /// The embedded cluster could not start.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The catalog could not be reached or is invalid.
    #[error("catalog: {0}")]
    Catalog(#[from] crate::catalog::CatalogError),
    /// Connecting to the catalog database failed.
    #[error("cannot connect to the catalog database: {}", crate::catalog::pg_error_text(.0))]
    CatalogConnect(#[from] tokio_postgres::Error),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Other start-up failure.
    #[error("{0}")]
    Other(String),
}

/// `pg-router dev` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Number of shards to start.
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    /// Extra empty shards, registered in the catalog without key ranges:
    /// targets for online resharding (`docs/resharding.md`).
    #[arg(long, default_value_t = 0)]
    pub spare_shards: usize,
    /// Port the router listens on (127.0.0.1).
    #[arg(long, default_value_t = 6432)]
    pub port: u16,
    /// Keep the PostgreSQL data here (reused on the next start) instead of a
    /// fresh temporary directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Connections per shard in the router's pools (split over workers).
    #[arg(long, default_value_t = 20)]
    pub pool_size: usize,
    /// Session worker threads (0 = one per CPU).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
}

/// A running router: its address and how to stop it.
pub struct RouterHandle {
    /// Shared state (catalog, pools).
    pub state: Arc<RouterState>,
    /// Address clients connect to.
    pub addr: SocketAddr,
    /// The configuration it was started with.
    pub config: RouterConfig,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    watcher: JoinHandle<()>,
    lease: JoinHandle<()>,
    sequences: JoinHandle<()>,
    recovery: JoinHandle<()>,
    health: JoinHandle<()>,
    workers: Option<Arc<Workers>>,
    http: Option<JoinHandle<()>>,
    /// Address of the metrics/health endpoint, if configured.
    pub http_addr: Option<SocketAddr>,
}

impl RouterHandle {
    /// Graceful shutdown: stops accepting clients, closes clients that are
    /// between transactions (57P01) and the others when their transaction
    /// ends, waits up to `deadline` for all to leave, then closes the rest
    /// (their open transactions roll back) and stops. Returns the number of
    /// clients closed at the deadline.
    pub async fn shutdown(mut self, deadline: Duration) -> usize {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.state.set_phase(Phase::Draining);
        let t0 = tokio::time::Instant::now();
        let mut left = self.state.client_connections();
        while left > 0 && t0.elapsed() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            left = self.state.client_connections();
        }
        if left > 0 {
            tracing::warn!(
                clients = left,
                "shutdown deadline reached; closing the remaining clients"
            );
            self.state.set_phase(Phase::Closing);
            // Sessions waiting for their client close at once; give them a
            // moment before the workers stop.
            let t1 = tokio::time::Instant::now();
            while self.state.client_connections() > 0 && t1.elapsed() < Duration::from_secs(1) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        self.stop().await;
        left
    }

    /// Stops accepting clients and the catalog watcher, then closes every
    /// client session and joins the session workers.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.watcher.abort();
        self.lease.abort();
        self.sequences.abort();
        self.recovery.abort();
        self.health.abort();
        if let Some(h) = self.http.take() {
            h.abort();
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        if let Some(w) = self.workers.take().and_then(|w| Arc::try_unwrap(w).ok()) {
            let _ = tokio::task::spawn_blocking(move || w.shutdown()).await;
        }
    }
}

/// Starts a router: loads the catalog, opens pools, watches the catalog for
/// changes (LISTEN/NOTIFY) and accepts clients on `cfg.listen`.
pub async fn start_router(cfg: &RouterConfig) -> Result<RouterHandle, DevError> {
    // Configuration errors first, before any connection.
    let users = UserDb::load(&cfg.auth)?;
    let tls = crate::state::tls::TlsSettings::load(&cfg.tls)
        .map_err(|e| DevError::Other(e.to_string()))?;
    let backend_tls = cfg.backend.tls_config().map_err(DevError::Other)?;
    let (client, conn) = tokio_postgres::connect(&cfg.catalog, tokio_postgres::NoTls).await?;
    let conn_task = tokio::spawn(conn);
    // A router needs the catalog tables of its version (e.g. the 2PC
    // decision log): apply pending migrations (idempotent, serialized by an
    // advisory lock).
    catalog::migrate(&client).await?;
    let cat = catalog::load(&client).await?;
    drop(client);
    conn_task.abort();
    let state = RouterState::new(cat, cfg, users, backend_tls);
    state.set_tls(tls);
    state.set_decision_log(DecisionLog::new(
        cfg.catalog.clone(),
        state.gids.router_id().to_string(),
        cfg.transactions.decision_log_connections,
        tokio::runtime::Handle::current(),
    ));
    let (st1, st2) = (state.clone(), state.clone());
    let recovery = crate::txn::recovery::spawn(
        move || st1.shard_targets(),
        move |n| st2.metrics.in_doubt.store(n, Ordering::Relaxed),
        cfg.catalog.clone(),
        cfg.transactions.recovery_interval_ms,
        cfg.transactions.recovery_grace_ms,
    );
    let (st1, st2) = (state.clone(), state.clone());
    let health = tokio::spawn(crate::backend::health::run_checker(
        move || st1.health_targets(),
        move || st2.health_intervals(),
    ));
    if let Err(e) = state.fetch_server_params().await {
        tracing::warn!("could not read server parameters from the first shard: {e}");
    }
    let st = state.clone();
    let watcher = catalog::spawn_watcher(cfg.catalog.clone(), move |c| {
        tracing::info!(
            tables = c.tables.len(),
            shards = c.shards.len(),
            "catalog reloaded"
        );
        st.apply_catalog(c);
    });
    // Writes need this router's catalog lease (online resharding); the
    // first renewal comes before the first client.
    state.gate.require_lease();
    let lease = crate::state::lease::spawn(state.clone(), cfg.catalog.clone());
    let sequences = crate::state::sequences::spawn(&state.sequences, cfg.catalog.clone());
    let lease_wait = std::time::Instant::now();
    while !state.gate.lease_valid() {
        if lease_wait.elapsed() > std::time::Duration::from_millis(cfg.resharding.lease_ttl_ms) {
            tracing::warn!("no catalog lease yet: writes wait for it");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| DevError::Listen {
            addr: cfg.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| DevError::Listen {
        addr: cfg.listen.clone(),
        source,
    })?;
    let (http, http_addr) = match &cfg.metrics_listen {
        Some(a) => {
            let l = TcpListener::bind(a)
                .await
                .map_err(|source| DevError::Listen {
                    addr: a.clone(),
                    source,
                })?;
            let addr = l.local_addr().ok();
            (
                Some(tokio::spawn(crate::admin::http::serve(l, state.clone()))),
                addr,
            )
        }
        None => (None, None),
    };
    let workers = Arc::new(
        Workers::start(&state)
            .map_err(|e| DevError::Other(format!("cannot start session workers: {e}")))?,
    );
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(crate::client::serve(
        listener,
        workers.clone(),
        async move {
            let _ = rx.await;
        },
    ));
    Ok(RouterHandle {
        state,
        addr,
        config: cfg.clone(),
        stop: Some(tx),
        task: Some(task),
        http,
        http_addr,
        watcher,
        lease,
        sequences,
        recovery,
        health,
        workers: Some(workers),
    })
}

/// An embedded cluster (N shards + catalog) with a router in front: what
/// `pg-router dev` runs and what integration tests use.
pub struct DevCluster {
    /// The PostgreSQL instances (stopped when this is dropped).
    pub cluster: LocalCluster,
    /// The router.
    pub router: RouterHandle,
}

impl DevCluster {
    /// Starts `opts.shards` shards (plus `opts.spare_shards` spare ones) and
    /// a catalog, seeds the catalog for pgbench (keyspace `main`,
    /// hash_murmur3 over equal key ranges of the shards; spare shards
    /// registered without ranges) and starts a router on `listen` (port 0 =
    /// any free port).
    /// `workers` = 0 runs one session worker per CPU.
    pub async fn start(
        opts: ClusterOptions,
        listen: SocketAddr,
        pool_size: usize,
        workers: usize,
    ) -> Result<DevCluster, DevError> {
        Self::start_with(opts, listen, pool_size, workers, TxnConfig::default()).await
    }

    /// [`DevCluster::start`] with distributed-transaction settings `txn`.
    pub async fn start_with(
        opts: ClusterOptions,
        listen: SocketAddr,
        pool_size: usize,
        workers: usize,
        txn: TxnConfig,
    ) -> Result<DevCluster, DevError> {
        Self::start_config(opts, listen, pool_size, workers, |c| c.transactions = txn).await
    }

    /// [`DevCluster::start`] with the router configuration changed by
    /// `configure` (auth, limits, ...) before the router starts.
    pub async fn start_config(
        opts: ClusterOptions,
        listen: SocketAddr,
        pool_size: usize,
        workers: usize,
        configure: impl FnOnce(&mut RouterConfig),
    ) -> Result<DevCluster, DevError> {
        let routed_count = opts.shards;
        let cluster = tokio::task::spawn_blocking(move || LocalCluster::start(&opts))
            .await
            .map_err(|e| DevError::Other(format!("cluster start task failed: {e}")))??;
        let shards: Vec<ShardInfo> = cluster
            .shards
            .iter()
            .map(|s| ShardInfo {
                name: s.name.clone(),
                host: s.host.clone(),
                port: s.port,
                dbname: s.dbname.clone(),
                user: None,
            })
            .collect();
        let catalog_dsn = cluster.catalog.dsn();
        let (client, conn) = tokio_postgres::connect(&catalog_dsn, tokio_postgres::NoTls).await?;
        let conn_task = tokio::spawn(conn);
        let (routed, spare) = shards.split_at(routed_count.min(shards.len()));
        catalog::seed_default(&client, routed).await?;
        for s in spare {
            catalog::add_shard(&client, &s.name, &s.host, s.port, &s.dbname, None).await?;
        }
        drop(client);
        conn_task.abort();
        let mut cfg = RouterConfig {
            listen: listen.to_string(),
            catalog: catalog_dsn,
            workers,
            backend: BackendConfig {
                pool_size,
                ..BackendConfig::default()
            },
            limits: LimitsConfig::default(),
            transactions: TxnConfig::default(),
            // A throwaway cluster on loopback: no passwords; `postgres` may
            // use the admin console (`psql -U postgres pgrouter`).
            auth: AuthConfig {
                admin_users: vec!["postgres".into()],
                ..AuthConfig::trust()
            },
            metrics_listen: None,
            tls: crate::config::TlsConfig::default(),
            resharding: crate::config::ReshardingConfig::default(),
        };
        configure(&mut cfg);
        let router = start_router(&cfg).await?;
        Ok(DevCluster { cluster, router })
    }

    /// Catalog connection string (for `pg-router meta --catalog`).
    pub fn catalog_dsn(&self) -> String {
        self.cluster.catalog.dsn()
    }

    /// Stops the router, then every PostgreSQL instance.
    pub async fn stop(self) {
        let DevCluster {
            mut cluster,
            router,
        } = self;
        router.stop().await;
        let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
    }
}

/// `pg-router dev`: runs until Ctrl-C or SIGTERM, then stops everything.
pub async fn run(args: DevArgs) -> Result<(), DevError> {
    let opts = ClusterOptions {
        shards: args.shards.max(1),
        spare_shards: args.spare_shards,
        data_dir: args.data_dir.clone(),
        ..ClusterOptions::default()
    };
    let listen: SocketAddr = ([127, 0, 0, 1], args.port).into();
    let dev = DevCluster::start(opts, listen, args.pool_size, args.workers).await?;
    let port = dev.router.addr.port();
    let routed = dev.cluster.shards.len() - args.spare_shards.min(dev.cluster.shards.len());
    println!("pg-router is ready on 127.0.0.1:{port} with {routed} shards.");
    for (i, s) in dev.cluster.shards.iter().enumerate() {
        println!(
            "  {}: 127.0.0.1:{} (data {}){}",
            s.name,
            s.port,
            s.data_dir.display(),
            if i >= routed {
                " spare: registered, owns no key range"
            } else {
                ""
            }
        );
    }
    println!("  catalog: {}", dev.catalog_dsn());
    println!();
    println!("Connect:   psql -h 127.0.0.1 -p {port} -U postgres");
    println!("Benchmark: pgbench -i -s 10 -h 127.0.0.1 -p {port} -U postgres postgres");
    println!("           pgbench -S -c 8 -j 2 -T 30 -h 127.0.0.1 -p {port} -U postgres postgres");
    println!(
        "Catalog:   pg-router meta --catalog \"{}\" show",
        dev.catalog_dsn()
    );
    println!("Press Ctrl-C to stop.");
    wait_for_shutdown().await;
    println!("stopping...");
    dev.stop().await;
    Ok(())
}

/// `pg-router serve --config FILE`: runs until Ctrl-C or SIGTERM.
/// `pg-router serve --config FILE`: runs until SIGTERM or Ctrl-C, then
/// shuts down gracefully (`limits.shutdown_timeout_ms`). SIGHUP reloads the
/// file: users, limits and pool settings take effect; an invalid file is
/// reported (naming the key) and the running configuration stays.
pub async fn serve(config: &Path) -> Result<(), DevError> {
    let cfg = RouterConfig::load(config)?;
    let router = start_router(&cfg).await?;
    tracing::info!("pg-router listening on {}", router.addr);
    // The running configuration, shared by SIGHUP and the admin console's
    // RELOAD.
    let running = Arc::new(parking_lot::Mutex::new(cfg));
    {
        let (path, running) = (config.to_path_buf(), running.clone());
        router.state.set_reload_hook(Box::new(move |state| {
            reload(&path, &mut running.lock(), state)
        }));
    }
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| DevError::Other(format!("cannot install the SIGHUP handler: {e}")))?;
    let stop = wait_for_shutdown();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = hup.recv() => {
                let _ = reload(config, &mut running.lock(), &router.state);
            }
        }
    }
    let deadline = Duration::from_millis(router.state.limits().shutdown_timeout_ms);
    tracing::info!(deadline_ms = deadline.as_millis() as u64, "shutting down");
    let closed = router.shutdown(deadline).await;
    tracing::info!(closed_at_deadline = closed, "stopped");
    Ok(())
}

/// Re-reads the config file and applies what can change while running;
/// logs the outcome. Returns the changed keys that need a restart, or why
/// the file was refused (the running configuration then stays).
fn reload(
    path: &Path,
    running: &mut RouterConfig,
    state: &RouterState,
) -> Result<Vec<&'static str>, String> {
    let new = RouterConfig::load(path).map_err(|e| e.to_string());
    let applied = new.and_then(|new| {
        let restart = state.reload(&new, running).map_err(|e| e.to_string())?;
        // What needs a restart keeps its running value.
        running.auth = new.auth;
        running.limits = new.limits;
        running.backend = new.backend;
        Ok(restart)
    });
    match &applied {
        Ok(restart) => {
            for key in restart {
                tracing::warn!(key, "config change needs a restart to take effect");
            }
            tracing::info!(users = state.users().len(), "config reloaded");
        }
        Err(e) => {
            tracing::error!("config reload failed, keeping the running configuration: {e}")
        }
    }
    applied
}

async fn wait_for_shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
