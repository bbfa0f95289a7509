//! Step 7, source cleanup, after the routing update: the change stream is
//! no longer needed (the caller has dropped it), so the slot and
//! publication are dropped on the source and the replication origin on
//! the target; then the moved rows are deleted from the source in small
//! batches ([`purge_range`]: no long locks, no statement scanning a whole
//! table), and the job completes. A failed cleanup is retried by running
//! the job again: it only goes forward.

use crate::txn::failpoint::{self, Failpoint};

use super::apply::drop_origin;
use super::capture::drop_artifacts;
use super::env::JobEnv;
use super::error::SplitError;
use super::filter::RangeFilter;
use super::job::{Job, Phase};
use super::progress::Observer;
use super::purge::purge_range;
use super::shards::end_job_sessions;
use super::store;

/// Rows per DELETE on the source.
pub const DELETE_BATCH: usize = 1000;

/// Runs step 7 of `job` (phase [`Phase::Routed`] or [`Phase::Cleanup`]);
/// returns the rows deleted from the source.
///
/// Errors: [`SplitError::PhaseChanged`], [`SplitError::Shard`],
/// [`SplitError::SessionsLeft`], the catalog's. The job stays in phase
/// cleanup on an error.
pub async fn run(env: JobEnv<'_>, job: &Job, observer: &dyn Observer) -> Result<u64, SplitError> {
    match job.phase {
        Phase::Routed => store::advance(env.cat, job.id, Phase::Routed, Phase::Cleanup).await?,
        Phase::Cleanup => {}
        found => {
            return Err(SplitError::PhaseChanged {
                id: job.id,
                expected: Phase::Cleanup,
                found,
            })
        }
    }
    observer.step("cleanup: dropping the slot and deleting the moved rows from the source");
    drop_artifacts(env.source, &job.spec.source, job.id).await?;
    // The apply's session (just closed, or a killed process's) holds the
    // origin until its backend exits.
    end_job_sessions(env.target, &job.spec.target, job.id).await?;
    drop_origin(env.target, &job.spec.target, job.id).await?;
    let mut tables: Vec<_> = env
        .catalog
        .tables
        .values()
        .filter(|t| t.keyspace == job.spec.keyspace)
        .collect();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    let mut deleted = 0;
    let mut per_table = serde_json::Map::new();
    for t in tables {
        let filter = RangeFilter::new(t, job.spec.range);
        let n = purge_range(env.source, &job.spec.source, &filter, DELETE_BATCH).await?;
        per_table.insert(t.name.clone(), n.into());
        deleted += n;
        failpoint::hit(Failpoint::SplitInCleanup).await;
    }
    store::record_progress(
        env.cat,
        job.id,
        "cleanup",
        &serde_json::Value::Object(per_table),
    )
    .await?;
    store::end(env.cat, job.id, Phase::Cleanup, Phase::Completed, None).await?;
    Ok(deleted)
}
