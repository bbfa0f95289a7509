//! Step 1, snapshot + WAL capture: on the source shard, a publication of
//! the keyspace's tables and a logical replication slot created with an
//! exported snapshot; the slot's consistent point is recorded in the job.
//!
//! Before the slot: every table of the keyspace must exist on the source
//! with a primary key or a replica identity (`REPLICA IDENTITY FULL` or
//! `USING INDEX`), or UPDATE/DELETE could not be replayed — refused here,
//! all such tables named. In-doubt two-phase transactions of the routers
//! (`pgr_` gids) are resolved first (one 2PC recovery pass), since slot
//! creation waits for every transaction holding an xid, prepared ones
//! included; the wait is bounded by [`CaptureSettings::slot_timeout`], after
//! which the attempt is cancelled and the blocking transactions are named.
//!
//! The exported snapshot lives as long as the returned [`Capture`]'s
//! replication connection: a process that dies before the initial copy
//! finished starts step 1 again (its slot and publication are dropped and
//! created anew).

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::catalog::{Catalog, ShardInfo};
use crate::plan::quote_ident;
use crate::txn::recovery;

use super::env::JobEnv;
use super::error::{shard_error, SplitError};
use super::job::{Job, Phase};
use super::shards::ShardAccess;
use super::store;
use super::wal::WalSource;

/// Settings of step 1.
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    /// Longest wait for the slot's creation (it waits for transactions
    /// running on the source).
    pub slot_timeout: Duration,
    /// 2PC recovery grace (`transactions.recovery_grace_ms`): a prepared
    /// transaction without a decision younger than this is left to its
    /// coordinator.
    pub recovery_grace_ms: u64,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        CaptureSettings {
            slot_timeout: Duration::from_secs(30),
            recovery_grace_ms: crate::txn::TxnConfig::default().recovery_grace_ms,
        }
    }
}

/// The name of job `id`'s slot and publication on the source:
/// `pgr_split_<id>`.
pub fn artifact_name(id: i64) -> String {
    format!("pgr_split_{id}")
}

/// Step 1's result: the slot, its live exported snapshot and where it
/// starts.
pub struct Capture<W> {
    /// The replication connection holding the exported snapshot.
    pub wal: W,
    /// Slot and publication name.
    pub slot: String,
    /// Exported snapshot name (`SET TRANSACTION SNAPSHOT`).
    pub snapshot: String,
    /// The slot's consistent point (`pg_lsn` text): the snapshot's LSN.
    pub lsn: String,
    /// The keyspace's tables, sorted.
    pub tables: Vec<String>,
}

/// The keyspace's sharded tables, sorted (lookup tables included: they are
/// sharded tables of the keyspace).
pub fn keyspace_tables(catalog: &Catalog, keyspace: &str) -> Vec<String> {
    let mut t: Vec<String> = catalog
        .tables
        .values()
        .filter(|t| t.keyspace == keyspace)
        .map(|t| t.name.clone())
        .collect();
    t.sort();
    t
}

/// Runs step 1 of `job` (phase [`Phase::Created`], or [`Phase::Capture`]
/// again after a restart) on its source, with `wal` the source's
/// replication protocol.
///
/// Errors: [`SplitError::TablesRefused`], [`SplitError::SlotTimeout`],
/// [`SplitError::Wal`], [`SplitError::Shard`], [`SplitError::PhaseChanged`]
/// and the catalog's errors. On an error nothing of this step is left on
/// the source (publication and slot dropped); the job stays in phase
/// capture with the error recorded by the caller.
pub async fn run<W: WalSource>(
    env: JobEnv<'_>,
    job: &Job,
    mut wal: W,
    settings: &CaptureSettings,
) -> Result<Capture<W>, SplitError> {
    let JobEnv {
        cat,
        catalog,
        access,
        source_info,
        source,
        ..
    } = env;
    let shard = source_info.name.as_str();
    let name = artifact_name(job.id);
    match job.phase {
        Phase::Created => store::advance(cat, job.id, Phase::Created, Phase::Capture).await?,
        Phase::Capture => drop_artifacts(source, shard, job.id).await?,
        found => {
            return Err(SplitError::PhaseChanged {
                id: job.id,
                expected: Phase::Capture,
                found,
            })
        }
    }
    let tables = keyspace_tables(catalog, &job.spec.keyspace);
    check_tables(source, shard, &tables).await?;
    resolve_in_doubt(cat, access, source_info, source, settings).await?;
    let sql = publication_sql(&name, &tables);
    source
        .batch_execute(&sql)
        .await
        .map_err(|e| shard_error(shard, format!("creating publication '{name}'"), e))?;
    let started = Instant::now();
    let snapshot =
        match tokio::time::timeout(settings.slot_timeout, wal.create_slot(&name, &name, false))
            .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let _ = drop_artifacts(source, shard, job.id).await;
                return Err(e);
            }
            Err(_) => {
                let blockers = blockers(source).await.unwrap_or_default();
                let _ = drop_artifacts(source, shard, job.id).await;
                return Err(SplitError::SlotTimeout {
                    shard: shard.to_string(),
                    slot: name,
                    waited_ms: started.elapsed().as_millis(),
                    blockers,
                });
            }
        };
    let lsn: Option<String> = source
        .query_opt(
            "select confirmed_flush_lsn::text from pg_catalog.pg_replication_slots where slot_name = $1",
            &[&name],
        )
        .await
        .map_err(|e| shard_error(shard, format!("reading replication slot '{name}'"), e))?
        .and_then(|r| r.get(0));
    let Some(lsn) = lsn else {
        let _ = drop_artifacts(source, shard, job.id).await;
        return Err(SplitError::Wal {
            shard: shard.to_string(),
            message: format!(
                "replication slot '{name}' has no consistent point after its creation"
            ),
        });
    };
    if let Err(e) = store::record_capture(cat, job.id, &name, &name, &lsn).await {
        let _ = drop_artifacts(source, shard, job.id).await;
        return Err(e);
    }
    Ok(Capture {
        wal,
        slot: name,
        snapshot,
        lsn,
        tables,
    })
}

/// `CREATE PUBLICATION name FOR TABLE …` of `tables` (identifiers quoted);
/// without tables, a publication of nothing.
fn publication_sql(name: &str, tables: &[String]) -> String {
    if tables.is_empty() {
        return format!("create publication {}", quote_ident(name));
    }
    let list: Vec<String> = tables.iter().map(|t| quote_ident(t)).collect();
    format!(
        "create publication {} for table {}",
        quote_ident(name),
        list.join(", ")
    )
}

/// Refuses tables missing on the source or without a primary key or
/// replica identity; every failing table is named.
///
/// Errors: [`SplitError::TablesRefused`], [`SplitError::Shard`].
pub async fn check_tables(
    source: &Client,
    shard: &str,
    tables: &[String],
) -> Result<(), SplitError> {
    let mut refused = Vec::new();
    for t in tables {
        let row = source
            .query_opt(
                "select c.relreplident::text, \
                        exists (select 1 from pg_catalog.pg_index i \
                                 where i.indrelid = c.oid and i.indisprimary) \
                   from pg_catalog.pg_class c \
                  where c.oid = to_regclass($1) and c.relkind in ('r', 'p')",
                &[&quote_ident(t)],
            )
            .await
            .map_err(|e| shard_error(shard, format!("checking table '{t}'"), e))?;
        match row {
            None => refused.push(format!("'{t}': does not exist on the shard")),
            Some(r) => {
                let identity: String = r.get(0);
                let has_pk: bool = r.get(1);
                let ok = match identity.as_str() {
                    "f" | "i" => true,
                    "d" => has_pk,
                    _ => false,
                };
                if !ok {
                    refused.push(format!(
                        "'{t}': no primary key or replica identity (add a primary key, or ALTER TABLE {} REPLICA IDENTITY FULL)",
                        quote_ident(t)
                    ));
                }
            }
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(SplitError::TablesRefused {
            shard: shard.to_string(),
            tables: refused,
        })
    }
}

/// Resolves the routers' in-doubt prepared transactions on the source with
/// one 2PC recovery pass (commit those with a commit decision, roll back
/// those decided abort or older than the grace period without one).
async fn resolve_in_doubt(
    cat: &Client,
    access: &ShardAccess,
    info: &ShardInfo,
    source: &Client,
    settings: &CaptureSettings,
) -> Result<(), SplitError> {
    let n: i64 = source
        .query_one(
            "select count(*) from pg_catalog.pg_prepared_xacts \
              where gid like 'pgr\\_%' and database = current_database()",
            &[],
        )
        .await
        .map_err(|e| shard_error(&info.name, "listing prepared transactions".into(), e))?
        .get(0);
    if n == 0 {
        return Ok(());
    }
    let shards = [(info.name.clone(), access.target(info))];
    match recovery::recover_once(&shards, cat, settings.recovery_grace_ms).await {
        Ok(r) => {
            tracing::info!(
                shard = %info.name,
                committed = r.committed,
                rolled_back = r.rolled_back,
                pending = r.pending,
                "resolved in-doubt transactions before creating the replication slot"
            );
            Ok(())
        }
        Err(e) => Err(SplitError::Wal {
            shard: info.name.clone(),
            message: format!("resolving in-doubt transactions: {e}"),
        }),
    }
}

/// The transactions a slot creation waits for: those holding an xid
/// (`pid`, state, age) and prepared transactions (gid, age).
pub(super) async fn blockers(source: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut out = Vec::new();
    for r in source
        .query(
            "select pid, coalesce(state, ''), \
                    coalesce(round(extract(epoch from now() - xact_start))::text, '?') \
               from pg_catalog.pg_stat_activity \
              where backend_xid is not null and pid <> pg_backend_pid() \
                and backend_type = 'client backend'",
            &[],
        )
        .await?
    {
        let pid: i32 = r.get(0);
        let state: String = r.get(1);
        let age: String = r.get(2);
        out.push(format!("pid {pid} ({state}, {age} s)"));
    }
    for r in source
        .query(
            "select gid, round(extract(epoch from now() - prepared))::text \
               from pg_catalog.pg_prepared_xacts where database = current_database()",
            &[],
        )
        .await?
    {
        let gid: String = r.get(0);
        let age: String = r.get(1);
        out.push(format!("prepared transaction '{gid}' ({age} s)"));
    }
    Ok(out)
}

/// Drops job `id`'s slot and publication on the source (named `name`),
/// ending first the replication connections using or creating the slot
/// (the slot's active walsender, and walsenders with the job's
/// `application_name`); absent ones are fine.
///
/// Errors: [`SplitError::Shard`].
pub async fn drop_artifacts(source: &Client, shard: &str, id: i64) -> Result<(), SplitError> {
    let name = artifact_name(id);
    let app = super::shards::job_application_name(id);
    let err = |what: &str, e| shard_error(shard, format!("{what} '{name}'"), e);
    for _ in 0..50 {
        let busy = source
            .query(
                "select pg_catalog.pg_terminate_backend(a.pid) \
                   from pg_catalog.pg_stat_activity a \
                  where a.backend_type = 'walsender' \
                    and (a.application_name = $2 \
                         or a.pid in (select active_pid from pg_catalog.pg_replication_slots \
                                       where slot_name = $1))",
                &[&name, &app],
            )
            .await
            .map_err(|e| err("ending the replication connection of slot", e))?;
        if busy.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    source
        .execute(
            "select pg_catalog.pg_drop_replication_slot(slot_name) \
               from pg_catalog.pg_replication_slots where slot_name = $1",
            &[&name],
        )
        .await
        .map_err(|e| err("dropping replication slot", e))?;
    source
        .batch_execute(&format!(
            "drop publication if exists {}",
            quote_ident(&name)
        ))
        .await
        .map_err(|e| err("dropping publication", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publication_statements() {
        assert_eq!(
            publication_sql("pgr_split_1", &["a".into(), "we\"ird".into()]),
            "create publication \"pgr_split_1\" for table \"a\", \"we\"\"ird\""
        );
        assert_eq!(publication_sql("p", &[]), "create publication \"p\"");
        assert_eq!(artifact_name(7), "pgr_split_7");
    }
}
