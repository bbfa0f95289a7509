//! The router's side of split cutovers: [`spawn`] runs a task that keeps
//! this router's catalog lease (`pgrouter.routers`), installs the cutover
//! write blocks (`pgrouter.write_blocks`) in the [`super::gate::WriteGate`],
//! and acknowledges them.
//!
//! One iteration, about every `lease_renew_ms` (every 2 ms while a block is
//! installed, and at once on `NOTIFY pgrouter_split`):
//! 1. upsert this router's row: lease until catalog `now()` + TTL, the
//!    keyspace generations it serves;
//! 2. if no keyspace in the catalog is at a newer generation than the
//!    routing it serves (else it loads the catalog first, if its watcher
//!    lags), extend the local lease to (the time before step 1) + TTL;
//! 3. read the write blocks (`FOR SHARE`: a split job's routing update,
//!    which marks its block routed, cannot commit half-seen) and install
//!    them;
//! 4. acknowledge (`block_ack`) the newest block whose source no
//!    transaction of this router still holds a write on;
//! 5. about once a second, read the recent split jobs for `SHOW SPLITS`
//!    and the metrics ([`super::splits::SplitBoard`]).
//!
//! An iteration that does not finish within the TTL (a half-open
//! connection) ends the session; the task reconnects.
//!
//! Step 1 commits before step 3 reads, and a job inserts its block before
//! it lists routers: a router either is listed by the job or sees the
//! block (see `docs/resharding.md`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::poll_fn;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use super::gate::WriteBlock;
use super::RouterState;

/// The NOTIFY channel of `pgrouter.write_blocks` changes.
pub const CHANNEL: &str = "pgrouter_split";

/// `application_name` of the lease session.
pub const APPLICATION_NAME: &str = "pg-router-lease";

/// Iteration interval while a block is installed.
const FAST: Duration = Duration::from_millis(2);

/// Spawns the lease task for `state` against the catalog at `dsn` (libpq
/// `key=value` or URL form, no TLS); it reconnects with backoff (100 ms
/// doubling to 1 s) until aborted. Logs with `tracing` and never ends on
/// its own, except for a DSN that does not parse.
pub fn spawn(state: Arc<RouterState>, dsn: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        let config =
            match crate::catalog::session_config(&dsn, APPLICATION_NAME, Duration::from_secs(2)) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "lease: invalid catalog DSN; writes stay refused");
                    return;
                }
            };
        let mut backoff = Duration::from_millis(100);
        loop {
            match session(&state, &config).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "lease: catalog session lost");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    })
}

/// Why a lease session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Catalog(#[from] tokio_postgres::Error),
    /// A half-open connection (a partition): give it up and reconnect.
    #[error("the catalog did not answer within {0} ms")]
    Timeout(u128),
}

/// `f`, or [`SessionError::Timeout`] after `limit`.
async fn within<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, SessionError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(SessionError::Timeout(limit.as_millis())),
    }
}

async fn session(state: &Arc<RouterState>, config: &Config) -> Result<(), SessionError> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let driver = tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    let _abort = AbortOnDrop(driver);
    let ttl = Duration::from_millis(state.resharding.lease_ttl_ms);
    within(ttl, client.batch_execute(&format!("LISTEN {CHANNEL}"))).await?;
    let renew = Duration::from_millis(state.resharding.lease_renew_ms);
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let pid = std::process::id() as i32;
    let mut iterations = 0u64;
    // The grace period the installed blocks wait for, and whether blocks
    // changed again before it drained.
    let (mut grace, mut reflip) = (None, false);
    loop {
        // An iteration that takes a lease's lifetime has lost the catalog.
        let fast = within(
            ttl,
            iteration(state, &client, ttl, &host, pid, &mut grace, &mut reflip),
        )
        .await?;
        iterations += 1;
        if iterations % 1000 == 1 {
            // Rows of routers gone for an hour.
            within(
                ttl,
                client.execute(
                    "delete from pgrouter.routers where lease_until < now() - interval '1 hour'",
                    &[],
                ),
            )
            .await?;
        }
        let wait = if fast { FAST } else { renew };
        tokio::select! {
            n = rx.recv() => {
                if n.is_none() {
                    return Ok(());
                }
                while rx.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One iteration; returns true while a block is installed (iterate fast).
async fn iteration(
    state: &RouterState,
    client: &Client,
    ttl: Duration,
    host: &str,
    pid: i32,
    grace: &mut Option<usize>,
    reflip: &mut bool,
) -> Result<bool, tokio_postgres::Error> {
    let started = Instant::now();
    let routing = state.routing();
    let served: serde_json::Map<String, serde_json::Value> = routing
        .catalog
        .keyspaces
        .values()
        .map(|k| (k.name.clone(), k.generation.into()))
        .collect();
    let served_text = serde_json::Value::Object(served.clone()).to_string();
    let ttl_ms = ttl.as_millis() as f64;
    client
        .execute(
            "insert into pgrouter.routers (id, host, pid, lease_until, renewed_at, generations) \
             values ($1, $2, $3, now() + $4::float8 * interval '1 millisecond', now(), $5::text::jsonb) \
             on conflict (id) do update set host = excluded.host, pid = excluded.pid, \
                 lease_until = excluded.lease_until, renewed_at = now(), \
                 generations = excluded.generations",
            &[
                &state.gids.router_id(),
                &host,
                &pid,
                &ttl_ms,
                &served_text,
            ],
        )
        .await?;
    let stale = client
        .query("select name, generation from pgrouter.keyspaces", &[])
        .await?
        .iter()
        .any(|r| {
            let name: String = r.get(0);
            let g: i64 = r.get(1);
            served
                .get(&name)
                .and_then(|v| v.as_i64())
                .is_none_or(|s| s < g)
        });
    // A router whose catalog watcher lags (or hangs on a half-open
    // connection) loads the routing here; the lease waits for it.
    if !stale || load_newer(state, client).await {
        state.gate.renew(started + ttl);
    }
    let rows = client
        .query(
            "select job_id, keyspace, source, epoch, to_generation, state, \
                    expires_at > clock_timestamp() \
               from pgrouter.write_blocks for share",
            &[],
        )
        .await?;
    let mut blocks = Vec::new();
    for r in &rows {
        let state_text: String = r.get(5);
        let live: bool = r.get(6);
        let routed = state_text == "routed";
        if !routed && !live {
            // Expired before its routing update: the job can no longer
            // commit one (it checks the expiry under this row lock).
            continue;
        }
        blocks.push(WriteBlock {
            job_id: r.get(0),
            keyspace: r.get(1),
            source: r.get(2),
            epoch: r.get(3),
            routed_generation: routed.then(|| r.get(4)),
        });
    }
    // A routing update the catalog watcher has not loaded yet (it waits
    // to coalesce notifications): load it now, it ends the write block.
    let behind = blocks.iter().any(|b| {
        b.routed_generation.is_some_and(|g| {
            served
                .get(&b.keyspace)
                .and_then(|v| v.as_i64())
                .unwrap_or(0)
                < g
        })
    });
    if behind {
        load_newer(state, client).await;
    }
    // Blocks holding writes here (for the window histogram).
    let serving = state.routing();
    let holding: Vec<(i64, i64)> = blocks
        .iter()
        .filter(|b| {
            b.routed_generation.is_none_or(|g| {
                serving
                    .catalog
                    .keyspaces
                    .get(&b.keyspace)
                    .is_none_or(|k| k.generation < g)
            })
        })
        .map(|b| (b.job_id, b.epoch))
        .collect();
    state.splits.holding(&holding);
    if state.splits.due() {
        if let Err(e) = state.splits.read(client).await {
            tracing::warn!(error = %e, "lease: reading the split jobs failed");
        }
    }
    let fast = !blocks.is_empty();
    let pending: Vec<(String, i64)> = blocks
        .iter()
        .filter(|b| b.routed_generation.is_none())
        .map(|b| (b.source.clone(), b.epoch))
        .collect();
    // Installed first, then a new grace period: requests entering after
    // the flip see the block; those of the old period must leave.
    if state.gate.install(blocks) || grace.is_none() && !pending.is_empty() {
        match *grace {
            // Not drained yet: keep waiting for the older period (the new
            // blocks are flipped for once it has).
            Some(old) if !state.gate.drained(old) => *reflip = true,
            _ => {
                *grace = Some(state.gate.flip());
                *reflip = false;
            }
        }
    }
    if let Some(old) = *grace {
        if state.gate.drained(old) && *reflip {
            *grace = Some(state.gate.flip());
            *reflip = false;
        }
    }
    if pending.is_empty() {
        *grace = None;
    }
    let drained = grace.is_some_and(|old| state.gate.drained(old)) && !*reflip;
    let clients = if drained {
        state.cancels.list()
    } else {
        Vec::new()
    };
    let ack = pending
        .iter()
        .filter(|(source, _)| drained && !clients.iter().any(|(_, s)| s.wrote_on(source)))
        .map(|(_, epoch)| *epoch)
        .max();
    if let Some(epoch) = ack {
        client
            .execute(
                "update pgrouter.routers set block_ack = greatest(block_ack, $2) where id = $1",
                &[&state.gids.router_id(), &epoch],
            )
            .await?;
    }
    Ok(fast)
}

/// Loads the catalog and installs it unless some keyspace in it is older
/// than the routing served; true if installed.
async fn load_newer(state: &RouterState, client: &Client) -> bool {
    match crate::catalog::load(client).await {
        Ok(c) => {
            let current = state.routing();
            let newer = current.catalog.keyspaces.values().all(|k| {
                c.keyspaces
                    .get(&k.name)
                    .is_some_and(|n| n.generation >= k.generation)
            });
            if newer {
                state.apply_catalog(c);
            }
            newer
        }
        Err(e) => {
            tracing::warn!(error = %e, "lease: loading the new routing failed");
            false
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
