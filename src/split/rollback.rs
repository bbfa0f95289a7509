//! Rollback of a job before its routing update (step 6): on request
//! (`pg-router split rollback`) or after a failure. What the job made is
//! removed — slot and publication on the source (so no WAL is retained),
//! the tables step 2 created on the target — and source data and routing
//! stay as they were. After step 6 a job only goes forward.

use super::capture::drop_artifacts;
use super::env::JobEnv;
use super::error::SplitError;
use super::job::{Job, Phase};
use super::store;
use crate::plan::quote_ident;

/// Rolls `job` back (the target connection is only used once step 2 ran).
/// `failure` = None: rolled back on request ([`Phase::RolledBack`]);
/// Some(reason): after a failure ([`Phase::Failed`], `reason` recorded).
///
/// Errors: [`SplitError::PastPointOfNoReturn`], [`SplitError::Ended`],
/// [`SplitError::PhaseChanged`] (another process moved the job meanwhile),
/// [`SplitError::Shard`] (dropping on the source failed: the job keeps its
/// phase, so the rollback can be run again).
pub async fn rollback(env: JobEnv<'_>, job: &Job, failure: Option<&str>) -> Result<(), SplitError> {
    let JobEnv {
        cat,
        source,
        target,
        ..
    } = env;
    if job.phase.past_point_of_no_return() {
        return Err(SplitError::PastPointOfNoReturn(job.describe()));
    }
    if job.phase.is_terminal() {
        return Err(SplitError::Ended(job.describe()));
    }
    drop_artifacts(source, &job.spec.source, job.id).await?;
    for t in &job.created_tables {
        target
            .batch_execute(&format!("drop table if exists {} cascade", quote_ident(t)))
            .await
            .map_err(|source| SplitError::Shard {
                shard: job.spec.target.clone(),
                context: format!("dropping table '{t}' created by {}", job.describe()),
                source,
            })?;
    }
    let to = if failure.is_some() {
        Phase::Failed
    } else {
        Phase::RolledBack
    };
    store::end(cat, job.id, job.phase, to, failure).await
}
