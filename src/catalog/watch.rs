//! [`spawn_watcher`]: live reload of the catalog on `NOTIFY pgrouter_catalog`.

use std::time::Duration;

use futures_util::future::poll_fn;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use super::error::{CatalogError, DbContext};
use super::load::load;
use super::model::Catalog;

/// The NOTIFY channel the catalog triggers announce changes on; the payload is
/// the name of the changed table (`keyspaces`, `shards`, ...).
pub const CHANNEL: &str = "pgrouter_catalog";

/// `application_name` the watcher's session uses unless the DSN sets one.
pub const WATCHER_APPLICATION_NAME: &str = "pg-router-catalog-watcher";

/// After a notification, how long to wait for more before reloading once.
const COALESCE: Duration = Duration::from_millis(50);
/// First reconnect delay; doubled after each failed attempt.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Largest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// With no notification for this long, ping the server to detect a dead link.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// How long a heartbeat ping may take before the connection is declared lost.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect timeout used unless the DSN sets one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection settings of a router task's catalog session: `dsn`
/// (libpq `key=value` or URL form) with `application_name` and
/// `connect_timeout` filled in where the DSN does not set them.
///
/// Errors: the DSN does not parse.
pub fn session_config(
    dsn: &str,
    application_name: &str,
    connect_timeout: Duration,
) -> Result<Config, tokio_postgres::Error> {
    let mut config = dsn.parse::<Config>()?;
    if config.get_application_name().is_none() {
        config.application_name(application_name);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(connect_timeout);
    }
    Ok(config)
}

/// Spawns a task that keeps a catalog up to date: it connects to `dsn` (libpq
/// `key=value` or URL form, no TLS), runs `LISTEN pgrouter_catalog`, loads the
/// catalog once, then reloads it after every burst of notifications (a burst
/// is coalesced: after one notification it waits 50 ms and drains the rest).
///
/// `on_change` receives every catalog that loads and validates: once after
/// each (re)connect, including the first (changes may have been missed), and
/// once per burst. A catalog that fails validation is logged with
/// `tracing::warn!` and not passed on, so the caller's previous one stays in
/// force. On connection loss (or a failed 30 s heartbeat) the task reconnects
/// with backoff (100 ms, doubling up to 5 s) forever.
///
/// The task ends only if `dsn` does not parse (logged with `tracing::error!`)
/// or when the handle is aborted.
pub fn spawn_watcher(
    dsn: String,
    on_change: impl Fn(Catalog) + Send + Sync + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let config = match session_config(&dsn, WATCHER_APPLICATION_NAME, CONNECT_TIMEOUT) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "catalog watcher: invalid catalog DSN; live reload disabled");
                return;
            }
        };
        watch_forever(&config, &on_change).await;
    })
}

/// Why a watch session ended.
enum Ended {
    /// Connecting or subscribing failed: keep backing off.
    NotEstablished(CatalogError),
    /// An established session was lost: retry soon.
    Lost(String),
}

async fn watch_forever(config: &Config, on_change: &(impl Fn(Catalog) + Sync)) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match session(config, on_change).await {
            Ended::NotEstablished(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "catalog watcher: cannot subscribe to catalog changes");
            }
            Ended::Lost(reason) => {
                backoff = BACKOFF_MIN;
                tracing::warn!(%reason, retry_in_ms = backoff.as_millis() as u64, "catalog watcher: connection lost; reconnecting");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection: subscribe, load once, reload per burst until the link dies.
async fn session(config: &Config, on_change: &(impl Fn(Catalog) + Sync)) -> Ended {
    let (client, mut connection) = match config.connect(NoTls).await {
        Ok(pair) => pair,
        Err(e) => return Ended::NotEstablished(CatalogError::Connect(e)),
    };
    let (notify_tx, mut notify_rx) = mpsc::unbounded_channel::<()>();
    let driver = AbortOnDrop(tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    tracing::trace!(
                        channel = n.channel(),
                        payload = n.payload(),
                        "catalog change notified"
                    );
                    if notify_tx.send(()).is_err() {
                        return "watcher gone".to_string();
                    }
                }
                Some(Ok(AsyncMessage::Notice(n))) => {
                    tracing::debug!(notice = %n, "catalog server notice")
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return e.to_string(),
                None => return "connection closed".to_string(),
            }
        }
    }));
    if let Err(e) = client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .ctx(format!("LISTEN {CHANNEL}"))
    {
        return Ended::NotEstablished(e);
    }
    reload(&client, on_change).await;
    loop {
        match tokio::time::timeout(HEARTBEAT, notify_rx.recv()).await {
            Ok(Some(())) => {
                tokio::time::sleep(COALESCE).await;
                while notify_rx.try_recv().is_ok() {}
                reload(&client, on_change).await;
            }
            Ok(None) => break,
            Err(_idle) => {
                if !matches!(
                    tokio::time::timeout(PING_TIMEOUT, client.simple_query("select 1")).await,
                    Ok(Ok(_))
                ) {
                    return Ended::Lost("heartbeat failed".to_string());
                }
            }
        }
        if client.is_closed() {
            break;
        }
    }
    drop(client);
    match driver.join().await {
        Some(reason) => Ended::Lost(reason),
        None => Ended::Lost("connection task failed".to_string()),
    }
}

/// Loads the catalog and hands it to `on_change`; an invalid catalog is logged
/// and dropped (the caller keeps the previous one).
async fn reload(client: &Client, on_change: &(impl Fn(Catalog) + Sync)) {
    match load(client).await {
        Ok(catalog) => {
            tracing::debug!(
                keyspaces = catalog.keyspaces.len(),
                shards = catalog.shards.len(),
                tables = catalog.tables.len(),
                "catalog reloaded"
            );
            on_change(catalog);
        }
        Err(e) if client.is_closed() => {
            tracing::debug!(error = %e, "catalog reload interrupted by connection loss");
        }
        Err(e) => {
            tracing::warn!(error = %e, "catalog change NOT applied: the new catalog is invalid; the previous one stays in force");
        }
    }
}

/// Aborts the wrapped task when dropped (so a watcher that is itself aborted
/// does not leave its connection driver behind).
struct AbortOnDrop(JoinHandle<String>);

impl AbortOnDrop {
    /// Waits for the task; `None` if it panicked or was cancelled.
    async fn join(mut self) -> Option<String> {
        (&mut self.0).await.ok()
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
