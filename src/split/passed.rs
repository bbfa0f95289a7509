//! Routers the cutover passes: a router whose catalog lease ran out before
//! it acknowledged the write block is not waited for (it refuses writes
//! on its own), but what it had already started on the source could still
//! commit there after the fence — a transaction open on one of its backend
//! sessions, or one it prepared for 2PC — and the target would never see
//! it. [`settle`] runs after the acknowledgements and before the fence: it
//! ends the source sessions of every router that did not acknowledge (their
//! `application_name`, [`crate::backend::router_application_name`]) and
//! waits until their backends have exited, and resolves the routers'
//! prepared transactions on the source with a 2PC recovery pass. Their
//! effects are then in the source's WAL before the fence, or never happen.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::backend::{router_application_name, ROUTER_SESSIONS_PATTERN};
use crate::txn::recovery;

use super::env::JobEnv;
use super::error::{shard_error, Context, SplitError};

/// Poll interval while the ended sessions exit.
const POLL: Duration = Duration::from_millis(5);

/// What [`settle`] found and did on the source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Sessions of lease-less routers ended.
    pub sessions_ended: i64,
    /// Routers' prepared transactions resolved (committed or rolled back).
    pub prepared_resolved: usize,
}

/// Ends, on the job's source shard (`env.source`), the backend sessions of
/// every router that has not acknowledged the write block `epoch` under a
/// live lease (`acked`: the ids counted by the job; re-read from the
/// catalog `env.cat` while sessions remain, so a router whose lease came back
/// and that acknowledged meanwhile is spared — its acknowledgement means no
/// transaction of it holds a write on the source), waits for
/// their backends to exit, then resolves the routers' prepared
/// transactions (`pgr_…` gids) there with one recovery pass (grace
/// `recovery_grace_ms`).
///
/// Returns `Ok(Err(reason))` when the cutover must be abandoned: sessions
/// still there at `deadline`, or prepared transactions left in doubt
/// (younger than the grace, no decision).
///
/// Errors: [`SplitError::Shard`] / [`SplitError::Db`] when a query fails;
/// [`SplitError::Wal`] when the recovery pass fails.
pub async fn settle(
    env: JobEnv<'_>,
    epoch: i64,
    mut acked: Vec<String>,
    deadline: Instant,
    recovery_grace_ms: u64,
) -> Result<Result<Settled, String>, SplitError> {
    let (cat, access, info, source) = (env.cat, env.access, env.source_info, env.source);
    let mut settled = Settled::default();
    let prepared = loop {
        let names: Vec<String> = acked.iter().map(|id| router_application_name(id)).collect();
        let r = source
            .query_one(
                "select (select count(pg_catalog.pg_terminate_backend(pid)) \
                           from pg_catalog.pg_stat_activity \
                          where datname = pg_catalog.current_database() \
                            and application_name ~ $1 and application_name <> all($2) \
                            and pid <> pg_catalog.pg_backend_pid()), \
                        (select count(*) from pg_catalog.pg_prepared_xacts \
                          where gid like 'pgr\\_%' and database = pg_catalog.current_database())",
                &[&ROUTER_SESSIONS_PATTERN, &names],
            )
            .await
            .map_err(|e| {
                shard_error(
                    &info.name,
                    "ending the sessions of routers without a lease".into(),
                    e,
                )
            })?;
        let (left, prepared): (i64, i64) = (r.get(0), r.get(1));
        if left == 0 {
            break prepared;
        }
        if settled.sessions_ended == 0 {
            settled.sessions_ended = left;
            tracing::warn!(
                shard = %info.name,
                sessions = left,
                "cutover: ending the source sessions of routers whose catalog lease expired"
            );
        }
        if Instant::now() >= deadline {
            return Ok(Err(format!(
                "{left} sessions of routers without a catalog lease were still on shard '{}'",
                info.name
            )));
        }
        tokio::time::sleep(POLL).await;
        acked = acked_routers(cat, epoch).await?;
    };
    if prepared == 0 {
        return Ok(Ok(settled));
    }
    let shards = [(info.name.clone(), access.target(info))];
    let report = recovery::recover_once(&shards, cat, recovery_grace_ms)
        .await
        .map_err(|e| SplitError::Wal {
            shard: info.name.clone(),
            message: format!("resolving in-doubt transactions at the cutover: {e}"),
        })?;
    settled.prepared_resolved = report.committed + report.rolled_back;
    if !report.ran || report.pending > 0 || !report.unreachable.is_empty() {
        return Ok(Err(format!(
            "{prepared} prepared transactions of routers on shard '{}' are in doubt \
             (2PC recovery resolves them once their grace of {recovery_grace_ms} ms has passed)",
            info.name
        )));
    }
    Ok(Ok(settled))
}

/// Ids of the routers that hold a live catalog lease and have
/// acknowledged the write block `epoch` (`pgrouter.routers.block_ack`).
///
/// Errors: [`SplitError::Db`].
pub async fn acked_routers(cat: &Client, epoch: i64) -> Result<Vec<String>, SplitError> {
    let rows = cat
        .query(
            "select id from pgrouter.routers where lease_until > now() and block_ack >= $1",
            &[&epoch],
        )
        .await
        .context(|| "listing the routers that acknowledged the write block".to_string())?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
