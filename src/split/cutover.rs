//! Steps 5 and 6, the cutover and the routing update, coordinated through
//! the catalog with every router (`docs/resharding.md`, "Cutover across
//! routers"):
//!
//! 1. the job inserts its write block (`pgrouter.write_blocks`, epoch =
//!    catalog clock in µs, expiring after [`CutoverSettings::max_window`]);
//!    routers hold new writes to the source and acknowledge once their
//!    writing transactions there have ended;
//! 2. it waits until every router with a live lease has acknowledged
//!    (`routers.block_ack >= epoch`); routers whose lease ran out are passed
//!    — they refuse writes on their own;
//! 3. it emits a fence on the source and applies the change stream up to
//!    it: the target has everything the source committed;
//! 4. one catalog transaction marks the block routed (only if it has not
//!    expired: checked under the row lock routers read it with), installs
//!    the new key ranges at generation + 1 and moves the job to phase
//!    routed — the point of no return;
//! 5. it waits until every live router serves the new generation; the
//!    **write-block window** (block inserted → new routing live on every
//!    router) is recorded, and the block deleted.
//!
//! If steps 2–4 do not finish within `max_window`, the cutover is
//! abandoned: the block is deleted (writes resume at the source, none
//! failed), the job returns to catch-up and may try again.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::txn::failpoint::{self, Failpoint};

use super::apply::Applier;
use super::catchup::{self, CatchUpSettings, Until};
use super::env::JobEnv;
use super::error::{Context, SplitError};
use super::job::{Job, Phase};
use super::passed;
use super::progress::Observer;
use super::spec::next_ranges;
use super::store;
use super::wal::WalSource;

/// Settings of steps 5 and 6.
#[derive(Debug, Clone)]
pub struct CutoverSettings {
    /// Longest write block before the routing update; past it the
    /// cutover is abandoned.
    pub max_window: Duration,
    /// Catch-up lag (bytes) below which a cutover is attempted.
    pub lag_threshold_bytes: u64,
    /// Cutover attempts before the job fails.
    pub attempts: usize,
    /// Poll interval of the routers' acknowledgements.
    pub poll: Duration,
    /// 2PC recovery grace (`transactions.recovery_grace_ms`) for the
    /// prepared transactions a router without a lease left on the source
    /// ([`super::passed::settle`]).
    pub recovery_grace_ms: u64,
}

impl Default for CutoverSettings {
    fn default() -> Self {
        CutoverSettings {
            max_window: Duration::from_millis(1000),
            lag_threshold_bytes: 64 << 10,
            attempts: 10,
            poll: Duration::from_millis(2),
            recovery_grace_ms: crate::txn::TxnConfig::default().recovery_grace_ms,
        }
    }
}

/// How a cutover attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The routing update committed and every live router serves it.
    Routed {
        /// The write-block window, ms.
        window_ms: f64,
        /// Routers that acknowledged.
        routers: i64,
    },
    /// Abandoned before the routing update; writes resumed at the source.
    Abandoned {
        /// Why (which wait ran out).
        reason: String,
    },
}

/// Runs one cutover attempt of `job` (phase [`Phase::CatchUp`], its stream
/// `wal` applied by `applier`).
///
/// Errors: [`SplitError::PhaseChanged`], the catalog's and the apply's. An
/// error before the routing update leaves the block to expire (routers
/// resume writes at the source after `max_window`).
pub async fn run<W: WalSource>(
    env: JobEnv<'_>,
    job: &Job,
    wal: &mut W,
    applier: &mut Applier,
    settings: &CutoverSettings,
    catchup_settings: &CatchUpSettings,
    observer: &dyn Observer,
) -> Result<Outcome, SplitError> {
    let cat = env.cat;
    let routing = &env
        .catalog
        .keyspaces
        .get(&job.spec.keyspace)
        .ok_or_else(|| SplitError::StalePlan {
            keyspace: job.spec.keyspace.clone(),
            planned: job.spec.generation,
            found: "none".into(),
        })?
        .routing;
    let ranges = next_ranges(routing, &job.spec).map_err(|e| SplitError::BadRow {
        id: job.id,
        what: e.to_string(),
    })?;
    store::advance(cat, job.id, Phase::CatchUp, Phase::Cutover).await?;
    observer.step("cutover: blocking writes to the range on every router");
    let started = Instant::now();
    let deadline = started + settings.max_window;
    let to_generation = job.spec.generation + 1;
    let row = cat
        .query_one(
            "insert into pgrouter.write_blocks \
                 (job_id, keyspace, source, epoch, to_generation, expires_at) \
             values ($1, $2, $3, (extract(epoch from clock_timestamp()) * 1e6)::bigint, $4, \
                     clock_timestamp() + $5::float8 * interval '1 millisecond') \
             returning epoch",
            &[
                &job.id,
                &job.spec.keyspace,
                &job.spec.source,
                &to_generation,
                &(settings.max_window.as_secs_f64() * 1e3),
            ],
        )
        .await
        .context(|| format!("blocking writes for split job {}", job.id))?;
    let epoch: i64 = row.get(0);
    cat.execute(
        "update pgrouter.split_jobs set cutover_started_at = clock_timestamp() where id = $1",
        &[&job.id],
    )
    .await
    .context(|| format!("recording the cutover of split job {}", job.id))?;

    // Every live router holds writes.
    let (routers, live) = loop {
        let r = cat
            .query_one(
                "select count(*) filter (where block_ack < $1), count(*), \
                        coalesce(array_agg(id), '{}') \
                   from pgrouter.routers where lease_until > now()",
                &[&epoch],
            )
            .await
            .context(|| "reading the routers' acknowledgements".to_string())?;
        let (waiting, live): (i64, i64) = (r.get(0), r.get(1));
        if waiting == 0 {
            break (live, r.get::<_, Vec<String>>(2));
        }
        if Instant::now() >= deadline {
            let reason = format!(
                "{waiting} of {live} routers did not acknowledge the write block within {} ms",
                settings.max_window.as_millis()
            );
            return abandon(cat, job, reason).await;
        }
        tokio::time::sleep(settings.poll).await;
    };

    let acked_ms = started.elapsed().as_secs_f64() * 1e3;
    failpoint::hit(Failpoint::SplitInCutover).await;
    // Routers passed without an acknowledgement: nothing of theirs may
    // commit on the source after the fence.
    let passed =
        match passed::settle(env, epoch, live, deadline, settings.recovery_grace_ms).await? {
            Ok(s) => s,
            Err(reason) => return abandon(cat, job, reason).await,
        };
    // The target has everything committed on the source.
    let fence = epoch.to_be_bytes().to_vec();
    let fence_lsn = catchup::emit_fence(env.source, &env.source_info.name, job.id, &fence).await?;
    tracing::debug!(job = job.id, fence_lsn, acked_ms, "fence emitted");
    let before = applier.progress.clone();
    let backlog_bytes = fence_lsn.saturating_sub(applier.applied());
    let reached = catchup::run_until(
        env,
        job,
        wal,
        applier,
        &Until::Fence(fence),
        Some(deadline),
        catchup_settings,
        observer,
    )
    .await?;
    if reached.is_none() {
        let reason = format!(
            "the target did not catch up with the source within {} ms",
            settings.max_window.as_millis()
        );
        return abandon(cat, job, reason).await;
    }

    let caught_up_ms = started.elapsed().as_secs_f64() * 1e3;
    // What reaching the fence took: WAL between the applied position and
    // the fence, source transactions (applied or skipped) and target
    // commits on the way.
    let fence_catch_up = serde_json::json!({
        "backlog_bytes": backlog_bytes,
        "transactions": (applier.progress.transactions + applier.progress.skipped)
            .saturating_sub(before.transactions + before.skipped),
        "commits": applier.progress.commits.saturating_sub(before.commits),
    });
    // The routing update: the point of no return.
    match route(cat, job, epoch, &ranges).await? {
        true => {}
        false => {
            let reason = format!(
                "the write block expired ({} ms) before the routing update",
                settings.max_window.as_millis()
            );
            return abandon(cat, job, reason).await;
        }
    }
    let routed_ms = started.elapsed().as_secs_f64() * 1e3;
    failpoint::hit(Failpoint::SplitAfterRouting).await;
    observer.step("routing updated; waiting for every router to serve it");
    let window_ms = finish_routed(cat, job, settings.poll, Some(started)).await?;
    // Where the window went (ms from the block): all routers acknowledged,
    // the target caught up to the fence, the routing update committed, every
    // router serves it.
    let timings = serde_json::json!({
        "acknowledged_ms": acked_ms,
        "caught_up_ms": caught_up_ms,
        "routed_ms": routed_ms,
        "window_ms": window_ms,
        "routers": routers,
        "fence": fence_catch_up,
        "passed_routers": {
            "sessions_ended": passed.sessions_ended,
            "prepared_resolved": passed.prepared_resolved,
        },
    });
    store::record_progress(cat, job.id, "cutover", &timings).await?;
    Ok(Outcome::Routed { window_ms, routers })
}

/// The routing update transaction; false if the block had expired (nothing
/// changed).
async fn route(
    cat: &Client,
    job: &Job,
    epoch: i64,
    ranges: &[crate::topology::ShardRange],
) -> Result<bool, SplitError> {
    let ctx = || format!("updating the routing for split job {}", job.id);
    cat.batch_execute("BEGIN").await.context(ctx)?;
    let result = async {
        let n = cat
            .execute(
                "update pgrouter.write_blocks set state = 'routed' \
                  where job_id = $1 and epoch = $2 and state = 'blocking' \
                    and expires_at > clock_timestamp()",
                &[&job.id, &epoch],
            )
            .await
            .context(ctx)?;
        if n == 0 {
            return Ok(false);
        }
        let g: Option<i64> = cat
            .query_opt(
                "select generation from pgrouter.keyspaces where name = $1 for update",
                &[&job.spec.keyspace],
            )
            .await
            .context(ctx)?
            .map(|r| r.get(0));
        if g != Some(job.spec.generation) {
            return Err(SplitError::StalePlan {
                keyspace: job.spec.keyspace.clone(),
                planned: job.spec.generation,
                found: g.map_or("none".into(), |g| g.to_string()),
            });
        }
        let next = job.spec.generation + 1;
        let starts: Vec<String> = ranges.iter().map(|r| r.range.start.to_string()).collect();
        let ends: Vec<Option<String>> = ranges
            .iter()
            .map(|r| r.range.end.map(|e| e.to_string()))
            .collect();
        let owners: Vec<&str> = ranges.iter().map(|r| r.shard.as_str()).collect();
        cat.execute(
            "delete from pgrouter.shard_ranges where keyspace = $1 and generation = $2",
            &[&job.spec.keyspace, &next],
        )
        .await
        .context(ctx)?;
        cat.execute(
            "insert into pgrouter.shard_ranges (keyspace, start_id, end_id, shard, generation) \
             select $1, u.s::numeric, u.e::numeric, u.sh, $2 \
               from unnest($3::text[], $4::text[], $5::text[]) as u(s, e, sh)",
            &[&job.spec.keyspace, &next, &starts, &ends, &owners],
        )
        .await
        .context(ctx)?;
        cat.execute(
            "update pgrouter.keyspaces set generation = $2 where name = $1",
            &[&job.spec.keyspace, &next],
        )
        .await
        .context(ctx)?;
        let n = cat
            .execute(
                "update pgrouter.split_jobs set phase = 'routed', updated_at = now() \
                  where id = $1 and phase = 'cutover'",
                &[&job.id],
            )
            .await
            .context(ctx)?;
        if n != 1 {
            return Err(SplitError::PhaseChanged {
                id: job.id,
                expected: Phase::Cutover,
                found: Phase::Cutover,
            });
        }
        Ok(true)
    }
    .await;
    match result {
        Ok(true) => {
            cat.batch_execute("COMMIT").await.context(ctx)?;
            Ok(true)
        }
        Ok(false) => {
            cat.batch_execute("ROLLBACK").await.context(ctx)?;
            Ok(false)
        }
        Err(e) => {
            let _ = cat.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// After the routing update (phase [`Phase::Routed`], also when a
/// restarted job finds it so): waits until every live router serves the
/// new generation, records the window (from `started`, or from the
/// recorded `cutover_started_at` on the catalog's clock) and deletes the
/// block. Returns the window, ms.
///
/// Errors: the catalog's.
pub async fn finish_routed(
    cat: &Client,
    job: &Job,
    poll: Duration,
    started: Option<Instant>,
) -> Result<f64, SplitError> {
    let next = job.spec.generation + 1;
    loop {
        let waiting: i64 = cat
            .query_one(
                "select count(*) from pgrouter.routers \
                  where lease_until > now() \
                    and coalesce((generations ->> $1)::bigint, 0) < $2",
                &[&job.spec.keyspace, &next],
            )
            .await
            .context(|| "reading the routers' generations".to_string())?
            .get(0);
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(poll).await;
    }
    let window_ms = match started {
        Some(s) => s.elapsed().as_secs_f64() * 1e3,
        None => cat
            .query_one(
                "select coalesce(extract(epoch from clock_timestamp() - cutover_started_at) * 1e3, 0)::float8 \
                   from pgrouter.split_jobs where id = $1",
                &[&job.id],
            )
            .await
            .context(|| "reading the cutover start".to_string())?
            .get(0),
    };
    cat.execute(
        "update pgrouter.split_jobs set cutover_window_ms = coalesce(cutover_window_ms, $2) \
          where id = $1",
        &[&job.id, &window_ms],
    )
    .await
    .context(|| format!("recording the cutover window of split job {}", job.id))?;
    cat.execute(
        "delete from pgrouter.write_blocks where job_id = $1",
        &[&job.id],
    )
    .await
    .context(|| format!("lifting the write block of split job {}", job.id))?;
    Ok(window_ms)
}

/// Ends a cutover attempt before the routing update: block deleted, job
/// back in catch-up.
async fn abandon(cat: &Client, job: &Job, reason: String) -> Result<Outcome, SplitError> {
    lift(cat, job).await?;
    tracing::warn!(job = job.id, %reason, "cutover abandoned; writes resumed at the source");
    Ok(Outcome::Abandoned { reason })
}

/// Deletes the job's write block and moves it from phase cutover back to
/// catch-up (also for a restarted job found in phase cutover: its block
/// never reached the routing update).
///
/// Errors: the catalog's; [`SplitError::PhaseChanged`].
pub async fn lift(cat: &Client, job: &Job) -> Result<(), SplitError> {
    cat.execute(
        "delete from pgrouter.write_blocks where job_id = $1 and state = 'blocking'",
        &[&job.id],
    )
    .await
    .context(|| format!("lifting the write block of split job {}", job.id))?;
    store::advance(cat, job.id, Phase::Cutover, Phase::CatchUp).await
}
