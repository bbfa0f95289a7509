//! The recovery loop: resolves in-doubt (prepared, unresolved) distributed
//! transactions and garbage-collects the decision log. The algorithm is
//! Citus's two-phase commit recovery (`recover_prepared_transactions`)
//! adapted to a separate catalog database:
//!
//! 1. take a session advisory lock in the catalog (one router recovers at a
//!    time; the others skip the pass);
//! 2. read the decision log (snapshot A);
//! 3. list every shard's `pg_prepared_xacts` with our gid prefix `pgr_`;
//! 4. read the decision log again (snapshot B) and resolve each prepared
//!    transaction: COMMIT PREPARED if B says commit, ROLLBACK PREPARED if it
//!    says abort; without a decision, once the transaction has been
//!    prepared for longer than the grace period, decide ABORT in the log
//!    (exclusive with the coordinator's COMMIT decision, see
//!    [`super::log`]) and act on whichever decision is in force;
//! 5. if every shard was listed, delete the rows of snapshot A whose gid no
//!    shard holds any more (a commit row is written only after every
//!    participant prepared, so all its participants have committed); abort
//!    rows are kept for [`ABORT_RETENTION_S`] so a coordinator stalled past
//!    the grace period still finds them.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::backend::{BackendConn, ShardTarget};

use super::log::{self, Decision};

/// Abort decisions are kept this long (seconds) after their prepared
/// transactions are gone.
pub const ABORT_RETENTION_S: f64 = 3600.0;

/// What one recovery pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// The pass ran (false: another router held the recovery lock).
    pub ran: bool,
    /// COMMIT PREPARED sent (per shard and gid).
    pub committed: usize,
    /// ROLLBACK PREPARED sent (per shard and gid).
    pub rolled_back: usize,
    /// Prepared transactions left alone (younger than the grace period,
    /// or their shard failed during the pass).
    pub pending: usize,
    /// Shards that could not be listed or resolved.
    pub unreachable: Vec<String>,
    /// Decision rows deleted.
    pub forgotten: u64,
}

/// Recovery errors (the catalog could not be used; shard problems are
/// reported in [`Report::unreachable`] instead).
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// A catalog query failed.
    #[error("2PC recovery: catalog: {}", crate::catalog::pg_error_text(.0))]
    Catalog(#[from] tokio_postgres::Error),
}

const LOCK_SQL: &str = "select pg_try_advisory_lock(hashtext('pgrouter.twopc_recovery'))";
const UNLOCK_SQL: &str = "select pg_advisory_unlock(hashtext('pgrouter.twopc_recovery'))";
const LIST_SQL: &str = "select gid, extract(epoch from now() - prepared)::float8::text \
     from pg_catalog.pg_prepared_xacts \
     where gid like 'pgr\\_%' and database = current_database()";

/// Runs one recovery pass over `shards` (every shard of the current
/// catalog: name and connection target), using catalog connection `c`.
/// `grace_ms`: how long a prepared transaction without a decision is left
/// to its coordinator.
///
/// Errors: [`RecoveryError::Catalog`]; the lock is released in any case.
pub async fn recover_once(
    shards: &[(String, ShardTarget)],
    c: &Client,
    grace_ms: u64,
) -> Result<Report, RecoveryError> {
    let locked: bool = c.query_one(LOCK_SQL, &[]).await?.try_get(0)?;
    if !locked {
        return Ok(Report::default());
    }
    let r = pass(shards, c, grace_ms).await;
    let _ = c.query_one(UNLOCK_SQL, &[]).await;
    r
}

async fn pass(
    shards: &[(String, ShardTarget)],
    c: &Client,
    grace_ms: u64,
) -> Result<Report, RecoveryError> {
    let mut report = Report {
        ran: true,
        ..Report::default()
    };
    let before = log::all_decisions(c).await?;
    let mut conns: Vec<(String, BackendConn)> = Vec::new();
    let mut prepared: Vec<(usize, String, f64)> = Vec::new();
    for (shard, target) in shards {
        let shard = shard.as_str();
        let mut conn = match BackendConn::connect(target).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(shard, "2PC recovery cannot reach the shard: {e}");
                report.unreachable.push(shard.to_string());
                continue;
            }
        };
        match conn.simple_rows(LIST_SQL).await {
            Ok(Ok(rows)) => {
                let i = conns.len();
                for r in rows {
                    if let [Some(gid), Some(age)] = r.as_slice() {
                        prepared.push((i, gid.clone(), age.parse().unwrap_or(0.0)));
                    }
                }
                conns.push((shard.to_string(), conn));
            }
            Ok(Err((_, msg))) | Err(crate::protocol::ProtocolError::Malformed(msg)) => {
                tracing::warn!(
                    shard,
                    "2PC recovery cannot list prepared transactions: {msg}"
                );
                report.unreachable.push(shard.to_string());
            }
            Err(e) => {
                tracing::debug!(shard, "2PC recovery lost the shard: {e}");
                report.unreachable.push(shard.to_string());
            }
        }
    }
    let now = log::all_decisions(c).await?;
    let grace_s = grace_ms as f64 / 1000.0;
    let mut seen = foldhash::HashSet::default();
    for (i, gid, age) in &prepared {
        seen.insert(gid.clone());
        let decision = match now.get(gid) {
            Some(row) => row.decision,
            None if *age > grace_s => log::decide_abort(c, gid, "recovery").await?,
            None => {
                report.pending += 1;
                continue;
            }
        };
        let (shard, conn) = &mut conns[*i];
        let lit = gid.replace('\'', "''");
        let sql = match decision {
            Decision::Commit => format!("COMMIT PREPARED '{lit}'"),
            Decision::Abort => format!("ROLLBACK PREPARED '{lit}'"),
        };
        match conn.simple_rows(&sql).await {
            // 42704: resolved meanwhile by its coordinator or another pass.
            Ok(Ok(_)) => match decision {
                Decision::Commit => report.committed += 1,
                Decision::Abort => report.rolled_back += 1,
            },
            Ok(Err((code, _))) if code == "42704" => {}
            Ok(Err((code, msg))) => {
                tracing::warn!(shard = %shard, gid, "2PC recovery: {sql} failed: {code} {msg}");
                report.pending += 1;
            }
            Err(e) => {
                tracing::warn!(shard = %shard, gid, "2PC recovery lost the shard: {e}");
                report.pending += 1;
                if !report.unreachable.contains(shard) {
                    report.unreachable.push(shard.clone());
                }
            }
        }
    }
    for (_, conn) in conns {
        conn.terminate().await;
    }
    if report.unreachable.is_empty() {
        let gone: Vec<String> = before
            .values()
            .filter(|r| !seen.contains(&r.gid))
            .filter(|r| r.decision == Decision::Commit || r.age_s > ABORT_RETENTION_S)
            .map(|r| r.gid.clone())
            .collect();
        report.forgotten = log::forget(c, &gone).await?;
    }
    Ok(report)
}

/// Starts the recovery loop on the current runtime: a pass at once, then
/// every `interval_ms` over the shards `shards` returns at that moment
/// (name, connection target); `in_doubt` is told the number of prepared
/// transactions left unresolved after each pass that ran. Catalog
/// connection problems are logged and retried at the next pass.
pub fn spawn(
    shards: impl Fn() -> Vec<(String, ShardTarget)> + Send + 'static,
    in_doubt: impl Fn(u64) + Send + 'static,
    dsn: String,
    interval_ms: u64,
    grace_ms: u64,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut client: Option<Client> = None;
        loop {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                match tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await {
                    Ok((c, conn)) => {
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                        client = Some(c);
                    }
                    Err(e) => tracing::warn!("2PC recovery cannot connect to the catalog: {e}"),
                }
            }
            if let Some(c) = &client {
                let r = recover_once(&shards(), c, grace_ms).await;
                if let Ok(r) = &r {
                    if r.ran {
                        in_doubt(r.pending as u64);
                    }
                }
                match r {
                    Ok(r) if r.committed + r.rolled_back > 0 || r.forgotten > 0 => {
                        tracing::info!(
                            committed = r.committed,
                            rolled_back = r.rolled_back,
                            pending = r.pending,
                            forgotten = r.forgotten,
                            "2PC recovery resolved in-doubt transactions"
                        );
                    }
                    Ok(r) if !r.unreachable.is_empty() => {
                        tracing::debug!(shards = ?r.unreachable, "2PC recovery skipped unreachable shards");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("{e}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(interval_ms.max(10))).await;
        }
    })
}
