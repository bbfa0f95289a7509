//! Undoing a job before its routing update (step 6): on request
//! (`pg-router split rollback`), after a failure, or to start a job over
//! when its process died before catch-up (the exported snapshot of step 1
//! died with it). What the job made is removed — slot and publication on
//! the source (so no WAL is retained), the replication origin, the moving
//! range's rows copied into tables that were on the target before the job,
//! the tables step 2 created — and source data and routing stay as they
//! were. After step 6 a job only goes forward.

use super::apply::drop_origin;
use super::capture::drop_artifacts;
use super::env::JobEnv;
use super::error::SplitError;
use super::filter::RangeFilter;
use super::job::{Job, Phase};
use super::purge::purge_range;
use super::shards::end_job_sessions;
use super::store;
use crate::plan::quote_ident;

/// Rows per DELETE when the copied range is removed from the target.
const PURGE_BATCH: usize = 1000;

/// Rolls `job` back (the target connection is only used once step 2 ran).
/// `failure` = None: rolled back on request ([`Phase::RolledBack`]);
/// Some(reason): after a failure ([`Phase::Failed`], `reason` recorded).
///
/// The job is ended first (compare-and-set on its phase: a routing update
/// running in another process cannot commit after it), then what it made
/// is removed, and `progress -> 'undone'` set. Rolling back a job that
/// already failed or was rolled back runs the removal again if it never
/// finished (`undone` unset); otherwise it only drops what is named after
/// the job (slot, publication, origin, write block) and leaves table data
/// alone (a later job may own that range on the target now).
///
/// Errors: [`SplitError::PastPointOfNoReturn`] (also for a completed job),
/// [`SplitError::PhaseChanged`] (another process moved the job meanwhile),
/// [`SplitError::Shard`] (removing something failed: run the rollback
/// again).
pub async fn rollback(env: JobEnv<'_>, job: &Job, failure: Option<&str>) -> Result<(), SplitError> {
    if job.phase.past_point_of_no_return() {
        return Err(SplitError::PastPointOfNoReturn(job.describe()));
    }
    if !job.phase.is_terminal() {
        let to = if failure.is_some() {
            Phase::Failed
        } else {
            Phase::RolledBack
        };
        store::end(env.cat, job.id, job.phase, to, failure).await?;
        store::record_progress(env.cat, job.id, "undone", &false.into()).await?;
        undo(env, job).await?;
        return store::record_progress(env.cat, job.id, "undone", &true.into()).await;
    }
    let undone: Option<bool> = env
        .cat
        .query_one(
            "select (progress ->> 'undone')::bool from pgrouter.split_jobs where id = $1",
            &[&job.id],
        )
        .await
        .map_err(|source| SplitError::Db {
            context: format!("reading {}", job.describe()),
            source,
        })?
        .get(0);
    if undone == Some(false) {
        // The first rollback stopped half-way: its phase before is
        // unknown, so everything is removed as after a copy.
        let mut again = job.clone();
        again.phase = Phase::CatchUp;
        undo(env, &again).await?;
        return store::record_progress(env.cat, job.id, "undone", &true.into()).await;
    }
    drop_named(env, job).await
}

/// What the job named after itself: write block, slot and publication,
/// replication origin.
async fn drop_named(env: JobEnv<'_>, job: &Job) -> Result<(), SplitError> {
    // Routers resume writes at the source at once.
    env.cat
        .execute(
            "delete from pgrouter.write_blocks where job_id = $1 and state = 'blocking'",
            &[&job.id],
        )
        .await
        .map_err(|source| SplitError::Db {
            context: format!("lifting the write block of {}", job.describe()),
            source,
        })?;
    drop_artifacts(env.source, &job.spec.source, job.id).await?;
    // The job's sessions on the target (apply, copy, restores; a killed
    // process's still-running ones too) end first: what they commit must
    // be in place before anything is removed, and the apply's holds the
    // origin.
    end_job_sessions(env.target, &job.spec.target, job.id).await?;
    drop_origin(env.target, &job.spec.target, job.id).await
}

/// Undoes what `job` did and records it as [`Phase::Created`] again, to
/// run from step 1 (a job whose process died before catch-up).
///
/// Errors: as [`rollback`]; [`SplitError::PhaseChanged`] for a job in
/// catch-up or later (it resumes instead).
pub async fn restart(env: JobEnv<'_>, job: &Job) -> Result<Job, SplitError> {
    check(job)?;
    if job.phase >= Phase::CatchUp {
        return Err(SplitError::PhaseChanged {
            id: job.id,
            expected: Phase::Copy,
            found: job.phase,
        });
    }
    undo(env, job).await?;
    store::reset(env.cat, job.id, job.phase).await?;
    store::load(env.cat, job.id)
        .await?
        .ok_or(SplitError::NoSuchJob(job.id))
}

fn check(job: &Job) -> Result<(), SplitError> {
    if job.phase.past_point_of_no_return() {
        return Err(SplitError::PastPointOfNoReturn(job.describe()));
    }
    if job.phase.is_terminal() {
        return Err(SplitError::Ended(job.describe()));
    }
    Ok(())
}

async fn undo(env: JobEnv<'_>, job: &Job) -> Result<(), SplitError> {
    let JobEnv {
        catalog, target, ..
    } = env;
    drop_named(env, job).await?;
    if job.phase.is_terminal() {
        return Ok(());
    }
    if job.phase < Phase::Copy {
        return drop_created(env, job).await;
    }
    let mut tables: Vec<_> = catalog
        .tables
        .values()
        .filter(|t| t.keyspace == job.spec.keyspace && !job.created_tables.contains(&t.name))
        .collect();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    for t in tables {
        let exists: bool = target
            .query_one(
                "select to_regclass($1) is not null",
                &[&quote_ident(&t.name)],
            )
            .await
            .map_err(|source| SplitError::Shard {
                shard: job.spec.target.clone(),
                context: format!("looking for '{}'", t.name),
                source,
            })?
            .get(0);
        if exists {
            let filter = RangeFilter::new(t, job.spec.range);
            purge_range(target, &job.spec.target, &filter, PURGE_BATCH).await?;
        }
    }
    drop_created(env, job).await
}

async fn drop_created(env: JobEnv<'_>, job: &Job) -> Result<(), SplitError> {
    for t in job.created_tables.iter().chain(&job.reference_created) {
        env.target
            .batch_execute(&format!("drop table if exists {} cascade", quote_ident(t)))
            .await
            .map_err(|source| SplitError::Shard {
                shard: job.spec.target.clone(),
                context: format!("dropping table '{t}' created by {}", job.describe()),
                source,
            })?;
    }
    Ok(())
}
