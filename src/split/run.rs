//! Driving a job through its steps from whatever phase the catalog
//! records ([`drive`]): what `pg-router split start` and `resume` run, and
//! what the reconciler will run.
//!
//! - created: steps 1–3 on a live exported snapshot, then catch-up;
//! - capture, bootstrap, copy (a process died before catch-up: the
//!   snapshot died with it): undone and started over;
//! - catchup: the stream resumes from the slot's confirmed position;
//! - cutover (a process died inside the write block, before the routing
//!   update): the block is lifted, back to catch-up;
//! - routed: waits for every router, then cleanup; cleanup: cleanup.
//!
//! From catch-up on: verification (optional), then cutover attempts when
//! the lag is below the threshold (with `manual_cutover`, only after
//! `pg-router split cutover` set `progress -> 'cutover_requested'`). A
//! failure before the routing update rolls the job back (phase failed, the
//! reason recorded); after it, the job stays where it failed and is
//! resumed.

use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::Client;

use crate::catalog::{Catalog, ShardInfo};

use crate::txn::failpoint::{self, Failpoint};

use super::apply::Applier;
use super::bootstrap::{self, BootstrapSettings};
use super::capture::{self, CaptureSettings};
use super::catchup::{self, CatchUpSettings, Until};
use super::cleanup;
use super::copy::{self, CopySettings};
use super::cutover::{self, CutoverSettings, Outcome};
use super::env::JobEnv;
use super::error::SplitError;
use super::job::{Job, Phase};
use super::progress::Observer;
use super::rollback;
use super::shards::ShardAccess;
use super::store;
use super::verify;
use super::wal::PgWalSource;

/// Everything a job run is configured with.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Step 1.
    pub capture: CaptureSettings,
    /// Tables copied in parallel (step 3).
    pub parallel_tables: usize,
    /// PostgreSQL bin dir (`pg_dump`, `psql`).
    pub pg_bin: PathBuf,
    /// Step 4.
    pub catchup: CatchUpSettings,
    /// Steps 5–6.
    pub cutover: CutoverSettings,
    /// Verify before the cutover (a mismatch fails the job).
    pub verify: bool,
    /// Wait for `pg-router split cutover` before cutting over.
    pub manual_cutover: bool,
}

/// The connections a job run owns.
pub struct JobContext {
    /// Catalog connection.
    pub cat: Client,
    /// The catalog as loaded when the run started.
    pub catalog: Catalog,
    /// How shards are reached.
    pub access: ShardAccess,
    /// Source shard.
    pub source_info: ShardInfo,
    /// Target shard.
    pub target_info: ShardInfo,
    /// SQL connection to the source.
    pub source: Client,
    /// SQL connection to the target.
    pub target: Client,
}

impl JobContext {
    /// Loads the catalog and connects to `job`'s shards.
    ///
    /// Errors: [`SplitError::UnknownShard`], [`SplitError::Shard`],
    /// [`SplitError::Db`].
    pub async fn open(
        cat: Client,
        access: ShardAccess,
        job: &Job,
    ) -> Result<JobContext, SplitError> {
        let catalog = crate::catalog::load(&cat)
            .await
            .map_err(|e| SplitError::Wal {
                shard: "catalog".into(),
                message: format!("loading the catalog: {e}"),
            })?;
        let info = |s: &str| {
            catalog
                .shards
                .get(s)
                .cloned()
                .ok_or_else(|| SplitError::UnknownShard(s.to_string()))
        };
        let source_info = info(&job.spec.source)?;
        let target_info = info(&job.spec.target)?;
        let source = access.connect(&source_info).await?;
        let target = access.connect(&target_info).await?;
        Ok(JobContext {
            cat,
            catalog,
            access,
            source_info,
            target_info,
            source,
            target,
        })
    }

    /// The steps' view of it.
    pub fn env(&self) -> JobEnv<'_> {
        JobEnv {
            cat: &self.cat,
            catalog: &self.catalog,
            access: &self.access,
            source_info: &self.source_info,
            target_info: &self.target_info,
            source: &self.source,
            target: &self.target,
        }
    }

    fn wal(&self, id: i64) -> PgWalSource {
        PgWalSource::new(
            &self.source_info.name,
            self.access.replication_conninfo(&self.source_info, id),
            self.access.connect_timeout,
        )
    }
}

/// Takes job `id`'s session advisory lock on the catalog session `cat`
/// (key `hashtextextended('pgrouter.split_job/<id>', 0)`), so one process
/// at a time runs or rolls back a job; held until the session ends. Waits
/// up to 10 s for a process that just died to let go of it. Re-entrant
/// within the session.
///
/// Errors: [`SplitError::RunElsewhere`]; [`SplitError::Db`].
pub async fn claim(cat: &Client, id: i64) -> Result<(), SplitError> {
    claim_within(cat, id, Duration::from_secs(10)).await
}

/// [`claim`], waiting at most `wait` (tried every 200 ms, at least once).
///
/// Errors: as [`claim`].
pub async fn claim_within(cat: &Client, id: i64, wait: Duration) -> Result<(), SplitError> {
    use super::error::Context;
    let tries = (wait.as_millis() / 200).max(1);
    for i in 0..tries {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let got: bool = cat
            .query_one(
                "select pg_try_advisory_lock(hashtextextended('pgrouter.split_job/' || $1::int8::text, 0))",
                &[&id],
            )
            .await
            .context(|| format!("locking split job {id}"))?
            .get(0);
        if got {
            return Ok(());
        }
    }
    Err(SplitError::RunElsewhere(id))
}

/// Runs job `id` until it ends (or, with a failure past the routing
/// update, until that failure); returns its final phase.
///
/// Errors: [`SplitError::RunElsewhere`] (see [`claim`]);
/// [`SplitError::NoSuchJob`]; any step's error (before the routing update
/// the job is rolled back first, phase failed).
pub async fn drive(
    ctx: &JobContext,
    id: i64,
    settings: &RunSettings,
    observer: &dyn Observer,
) -> Result<Phase, SplitError> {
    claim(&ctx.cat, id).await?;
    loop {
        let job = store::load(&ctx.cat, id)
            .await?
            .ok_or(SplitError::NoSuchJob(id))?;
        if job.phase.is_terminal() {
            return Ok(job.phase);
        }
        let result = step(ctx, &job, settings, observer).await;
        match result {
            Ok(()) => continue,
            Err(e) => {
                let now = store::load(&ctx.cat, id)
                    .await?
                    .ok_or(SplitError::NoSuchJob(id))?;
                if now.phase.past_point_of_no_return() || now.phase.is_terminal() {
                    let _ = store::set_error(&ctx.cat, id, &e.to_string()).await;
                    return Err(e);
                }
                // Rolled back automatically before the routing update.
                if now.phase == Phase::Cutover {
                    let _ = cutover::lift(&ctx.cat, &now).await;
                }
                let now = store::load(&ctx.cat, id)
                    .await?
                    .ok_or(SplitError::NoSuchJob(id))?;
                observer.step(&format!("failed, rolling back: {e}"));
                rollback::rollback(ctx.env(), &now, Some(&e.to_string())).await?;
                return Err(e);
            }
        }
    }
}

/// One pass from the job's phase.
async fn step(
    ctx: &JobContext,
    job: &Job,
    settings: &RunSettings,
    observer: &dyn Observer,
) -> Result<(), SplitError> {
    let env = ctx.env();
    match job.phase {
        Phase::Created => {
            observer.step("step 1: publication and replication slot with an exported snapshot");
            let cap = capture::run(env, job, ctx.wal(job.id), &settings.capture).await?;
            failpoint::hit(Failpoint::SplitAfterCapture).await;
            let job = reload(ctx, job.id).await?;
            observer.step("step 2: bootstrapping the target");
            bootstrap::run(
                env,
                &job,
                &BootstrapSettings {
                    pg_bin: settings.pg_bin.clone(),
                },
            )
            .await?;
            failpoint::hit(Failpoint::SplitAfterBootstrap).await;
            let job = reload(ctx, job.id).await?;
            observer.step("step 3: initial copy");
            let report = copy::run(
                env,
                &job,
                &cap.snapshot,
                &CopySettings {
                    parallel_tables: settings.parallel_tables,
                    pg_bin: settings.pg_bin.clone(),
                },
                observer,
            )
            .await?;
            let rows: u64 = report.tables.iter().map(|t| t.rows_copied).sum();
            let bytes: u64 = report.tables.iter().map(|t| t.bytes_copied).sum();
            observer.step(&format!(
                "step 3 done: copy {:.1} s ({rows} rows, {bytes} bytes), indexes {:.1} s",
                report.copy_time.as_secs_f64(),
                report.post_data_time.as_secs_f64()
            ));
            store::record_progress(
                &ctx.cat,
                job.id,
                "copy_seconds",
                &report.copy_time.as_secs_f64().into(),
            )
            .await?;
            let job = reload(ctx, job.id).await?;
            let mut wal = cap.wal;
            let mut applier = catchup::start(env, &job, &mut wal).await?;
            follow(ctx, &job, wal, &mut applier, settings, observer).await
        }
        Phase::Capture | Phase::Bootstrap | Phase::Copy => {
            observer.step("the previous run died before catch-up: starting over");
            rollback::restart(env, job).await?;
            Ok(())
        }
        Phase::CatchUp => {
            let mut wal = ctx.wal(job.id);
            let mut applier = start_again(env, job, &mut wal).await?;
            follow(ctx, job, wal, &mut applier, settings, observer).await
        }
        Phase::Cutover => cutover::lift(&ctx.cat, job).await,
        Phase::Routed => {
            cutover::finish_routed(&ctx.cat, job, settings.cutover.poll, None).await?;
            let job = reload(ctx, job.id).await?;
            cleanup::run(env, &job, observer).await.map(|_| ())
        }
        Phase::Cleanup => cleanup::run(env, job, observer).await.map(|_| ()),
        Phase::Completed | Phase::Failed | Phase::RolledBack => Ok(()),
    }
}

/// Starts the stream of a job found in catch-up; the previous process's
/// walsender may still hold the slot for a moment.
async fn start_again(
    env: JobEnv<'_>,
    job: &Job,
    wal: &mut PgWalSource,
) -> Result<Applier, SplitError> {
    let mut tries = 0;
    loop {
        match catchup::start(env, job, wal).await {
            Ok(a) => return Ok(a),
            Err(SplitError::Wal { .. }) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Catch-up, verification, cutover attempts; ends when the routing update
/// is done (the caller's next pass cleans up).
async fn follow(
    ctx: &JobContext,
    job: &Job,
    mut wal: PgWalSource,
    applier: &mut Applier,
    settings: &RunSettings,
    observer: &dyn Observer,
) -> Result<(), SplitError> {
    let env = ctx.env();
    observer.step("step 4: catching up with the source");
    let lag = Until::LagBelow(settings.cutover.lag_threshold_bytes);
    catchup::run(
        env,
        job,
        &mut wal,
        applier,
        &lag,
        &settings.catchup,
        observer,
    )
    .await?;
    if settings.verify {
        observer.step("verifying row counts and checksums at one consistent point");
        let v = verify_retrying(ctx, job, &mut wal, applier, settings, observer).await?;
        if !v.ok {
            return Err(SplitError::Verification {
                tables: v.mismatches(),
            });
        }
    }
    if settings.manual_cutover {
        observer.step("waiting for `pg-router split cutover`");
        loop {
            let (cutover, verify) = requested(&ctx.cat, job.id).await?;
            if cutover {
                break;
            }
            if verify {
                observer.step("verifying on request");
                store::record_progress(&ctx.cat, job.id, "verify_requested", &false.into()).await?;
                let timeout = settings.capture.slot_timeout;
                let side = ctx.wal(job.id);
                match verify::run(env, job, &mut wal, applier, side, timeout).await {
                    Ok(v) => observer.step(&format!(
                        "verification: {}",
                        if v.ok { "ok" } else { "MISMATCH" }
                    )),
                    Err(e @ SplitError::SlotTimeout { .. }) => {
                        record_verify_wait(&ctx.cat, job.id, 1, &e).await?;
                        observer.step(&format!("verification not done: {e}"));
                    }
                    Err(e) => return Err(e),
                }
            }
            catchup::run(
                env,
                job,
                &mut wal,
                applier,
                &lag,
                &settings.catchup,
                observer,
            )
            .await?;
            tokio::time::sleep(settings.catchup.report_every).await;
        }
    }
    for attempt in 1..=settings.cutover.attempts.max(1) {
        catchup::run(
            env,
            job,
            &mut wal,
            applier,
            &lag,
            &settings.catchup,
            observer,
        )
        .await?;
        let job = reload(ctx, job.id).await?;
        match cutover::run(
            env,
            &job,
            &mut wal,
            applier,
            &settings.cutover,
            &settings.catchup,
            observer,
        )
        .await?
        {
            Outcome::Routed { window_ms, routers } => {
                observer.step(&format!(
                    "step 6: routing updated; write-block window {window_ms:.1} ms over {routers} routers"
                ));
                return Ok(());
            }
            Outcome::Abandoned { reason } => {
                observer.step(&format!("cutover attempt {attempt} abandoned: {reason}"));
            }
        }
    }
    Err(SplitError::CutoverFailed {
        attempts: settings.cutover.attempts,
    })
}

/// Verification, taken again after a catch-up when its snapshot could not
/// be taken within `capture.slot_timeout` (write transactions open on the
/// source), up to `cutover.attempts` times; each wait is recorded in
/// `progress.verify_waits`.
///
/// Errors: the last [`SplitError::SlotTimeout`], and those of
/// [`verify::run`] and [`catchup::run`].
async fn verify_retrying(
    ctx: &JobContext,
    job: &Job,
    wal: &mut PgWalSource,
    applier: &mut Applier,
    settings: &RunSettings,
    observer: &dyn Observer,
) -> Result<verify::Verification, SplitError> {
    let env = ctx.env();
    let attempts = settings.cutover.attempts.max(1);
    let lag = Until::LagBelow(settings.cutover.lag_threshold_bytes);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let side = ctx.wal(job.id);
        match verify::run(env, job, wal, applier, side, settings.capture.slot_timeout).await {
            Err(e @ SplitError::SlotTimeout { .. }) if attempt < attempts => {
                record_verify_wait(&ctx.cat, job.id, attempt, &e).await?;
                observer.step(&format!("verification attempt {attempt} waits: {e}"));
                catchup::run(env, job, wal, applier, &lag, &settings.catchup, observer).await?;
            }
            r => return r,
        }
    }
}

/// Records in `progress.verify_waits` that verification attempt `attempt`
/// of job `id` could not take its snapshot (`e`).
async fn record_verify_wait(
    cat: &Client,
    id: i64,
    attempt: usize,
    e: &SplitError,
) -> Result<(), SplitError> {
    let value = serde_json::json!({ "attempt": attempt, "error": e.to_string() });
    store::record_progress(cat, id, "verify_waits", &value).await
}

async fn reload(ctx: &JobContext, id: i64) -> Result<Job, SplitError> {
    store::load(&ctx.cat, id)
        .await?
        .ok_or(SplitError::NoSuchJob(id))
}

/// `progress -> 'cutover_requested'` and `'verify_requested'` of job `id`.
async fn requested(cat: &Client, id: i64) -> Result<(bool, bool), SplitError> {
    use super::error::Context;
    let r = cat
        .query_one(
            "select coalesce((progress ->> 'cutover_requested')::bool, false), \
                    coalesce((progress ->> 'verify_requested')::bool, false) \
               from pgrouter.split_jobs where id = $1",
            &[&id],
        )
        .await
        .context(|| format!("reading split job {id}"))?;
    Ok((r.get(0), r.get(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_pg::TestPg;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_session_at_a_time_claims_a_job() {
        let pg = TestPg::start();
        let (a, b) = (pg.connect().await, pg.connect().await);
        claim(&a, 7).await.expect("first claim");
        claim(&a, 7).await.expect("re-entrant in its session");
        let e = claim_within(&b, 7, Duration::ZERO)
            .await
            .expect_err("held by a");
        assert!(matches!(e, SplitError::RunElsewhere(7)), "{e}");
        claim_within(&b, 8, Duration::ZERO)
            .await
            .expect("another job");
        // The holder's session ends: the next process takes it over.
        drop(a);
        claim_within(&b, 7, Duration::from_secs(5))
            .await
            .expect("released with the session");
    }
}
