//! Step 4, CDC catch-up: the slot of step 1 is streamed from its confirmed
//! position and applied to the target by the [`Applier`]; the slot is
//! confirmed after each target commit, the lag written to the job row
//! (`lag_bytes`, `confirmed_lsn`, `progress -> 'catchup'`) about once a
//! second. [`run`] returns when its [`Until`] condition holds: the lag is
//! below a threshold (ready for the cutover), or a fence message emitted on
//! the source (`pg_logical_emit_message`, [`emit_fence`]) has been applied —
//! then everything the source committed before the fence is on the target.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_postgres::Client;

use crate::txn::failpoint::{self, Failpoint};

use super::apply::{fence_prefix, Applied, Applier};
use super::change::{lsn_text, parse_lsn, Lsn};
use super::env::JobEnv;
use super::error::SplitError;
use super::job::{Job, Phase};
use super::progress::{CatchUpProgress, Observer};
use super::store;
use super::wal::WalSource;

/// Settings of step 4.
#[derive(Debug, Clone)]
pub struct CatchUpSettings {
    /// Longest wait for the next change before lag is measured.
    pub poll: Duration,
    /// How often lag is measured and written to the job row.
    pub report_every: Duration,
}

impl Default for CatchUpSettings {
    fn default() -> Self {
        CatchUpSettings {
            poll: Duration::from_millis(50),
            report_every: Duration::from_secs(1),
        }
    }
}

/// When [`run`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Until {
    /// The lag behind the source is at most this many bytes.
    LagBelow(u64),
    /// The fence message with this content has been applied.
    Fence(Vec<u8>),
}

/// Starts step 4 of `job` (phase [`Phase::Copy`] after a finished copy, or
/// [`Phase::CatchUp`] again after a restart): the job moves to phase
/// catchup, the slot is streamed on `wal`, and the apply is opened.
///
/// Errors: [`SplitError::PhaseChanged`], [`SplitError::Wal`], and
/// [`Applier::open`]'s.
pub async fn start<W: WalSource>(
    env: JobEnv<'_>,
    job: &Job,
    wal: &mut W,
) -> Result<Applier, SplitError> {
    match job.phase {
        Phase::Copy => store::advance(env.cat, job.id, Phase::Copy, Phase::CatchUp).await?,
        Phase::CatchUp => {}
        found => {
            return Err(SplitError::PhaseChanged {
                id: job.id,
                expected: Phase::CatchUp,
                found,
            })
        }
    }
    let (Some(slot), Some(publication)) = (&job.slot_name, &job.publication) else {
        return Err(SplitError::BadRow {
            id: job.id,
            what: "no replication slot recorded".into(),
        });
    };
    wal.start(slot, publication).await?;
    Applier::open(env, job).await
}

/// Emits job `id`'s fence on the source: a transactional logical decoding
/// message with content `content`; returns its position. Its commit is
/// flushed (`synchronous_commit = local` for that transaction), and with it
/// all WAL before it: a walsender sends only flushed WAL, and on a source
/// with `synchronous_commit = off` the last commits would otherwise wait
/// for the WAL writer (up to `wal_writer_delay`, 200 ms by default) — time
/// the cutover's write block would wait too.
///
/// Errors: [`SplitError::Shard`].
pub async fn emit_fence(
    source: &Client,
    shard: &str,
    id: i64,
    content: &[u8],
) -> Result<Lsn, SplitError> {
    let lsn: String = source
        .query_one(
            "select pg_catalog.set_config('synchronous_commit', 'local', true), \
                    pg_catalog.pg_logical_emit_message(true, $1, $2::bytea)::text",
            &[&fence_prefix(id), &content],
        )
        .await
        .map_err(|source| SplitError::Shard {
            shard: shard.to_string(),
            context: "emitting the split job's fence".into(),
            source,
        })?
        .get(1);
    Ok(parse_lsn(&lsn).unwrap_or(0))
}

/// The source's current WAL position.
pub async fn source_position(source: &Client, shard: &str) -> Result<Lsn, SplitError> {
    let lsn: String = source
        .query_one("select pg_catalog.pg_current_wal_lsn()::text", &[])
        .await
        .map_err(|source| SplitError::Shard {
            shard: shard.to_string(),
            context: "reading the current WAL position".into(),
            source,
        })?
        .get(0);
    Ok(parse_lsn(&lsn).unwrap_or(0))
}

/// Applies the stream until `until` holds; returns the progress then.
///
/// Errors: [`SplitError::Wal`] (the stream failed), the apply's errors,
/// the catalog's. The job keeps its phase: a restart resumes from the
/// confirmed position.
pub async fn run<W: WalSource>(
    env: JobEnv<'_>,
    job: &Job,
    wal: &mut W,
    applier: &mut Applier,
    until: &Until,
    settings: &CatchUpSettings,
    observer: &dyn Observer,
) -> Result<CatchUpProgress, SplitError> {
    run_until(env, job, wal, applier, until, None, settings, observer)
        .await
        .map(|p| p.unwrap_or_default())
}

/// [`run`] that gives up at `deadline` (checked between events, so the
/// apply stays consistent and can go on later); None when it gave up.
#[allow(clippy::too_many_arguments)]
pub async fn run_until<W: WalSource>(
    env: JobEnv<'_>,
    job: &Job,
    wal: &mut W,
    applier: &mut Applier,
    until: &Until,
    deadline: Option<Instant>,
    settings: &CatchUpSettings,
    observer: &dyn Observer,
) -> Result<Option<CatchUpProgress>, SplitError> {
    let mut last_report: Option<Instant> = None;
    let mut last_commit_us: Option<i64> = None;
    loop {
        let overdue = deadline.is_some_and(|d| Instant::now() >= d);
        if overdue && !applier.in_transaction() && !applier.holding() {
            return Ok(None);
        }
        let poll = match deadline {
            Some(d) => settings
                .poll
                .min(d.saturating_duration_since(Instant::now())),
            None => settings.poll,
        };
        // With transactions held for group commit, only what has already
        // arrived joins them: the group commits as soon as the stream
        // has nothing more at hand.
        let wait = if applier.holding() {
            Duration::ZERO
        } else {
            poll.max(Duration::from_millis(1))
        };
        let mut idle = false;
        let applied = match wal.next(wait).await? {
            Some(event) => {
                if deadline.is_some() {
                    tracing::debug!(?event, "cutover: event");
                }
                match applier.apply(event).await? {
                    Applied::Held if overdue => applier.flush().await?,
                    applied => applied,
                }
            }
            None if applier.holding() => applier.flush().await?,
            None => {
                idle = !applier.in_transaction();
                Applied::Nothing
            }
        };
        if let Applied::Committed {
            end_lsn,
            commit_time_us,
            fence,
        } = applied
        {
            failpoint::hit(Failpoint::SplitInCatchUp).await;
            wal.confirm(end_lsn).await?;
            last_commit_us = Some(commit_time_us);
            if let (Until::Fence(want), Some(got)) = (until, &fence) {
                if want == got {
                    if deadline.is_none() {
                        report(env, job, wal, applier, true, last_commit_us, observer).await?;
                    }
                    return Ok(Some(applier.progress.clone()));
                }
            }
        }
        if idle && wal.received() > applier.applied() {
            // Everything received is handled: nothing of it was in the
            // range, so the slot may move on.
            wal.confirm(wal.received()).await?;
        }
        // Inside a cutover (a deadline) nothing is measured or written.
        if deadline.is_none() && last_report.is_none_or(|t| t.elapsed() >= settings.report_every) {
            last_report = Some(Instant::now());
            report(env, job, wal, applier, idle, last_commit_us, observer).await?;
            if let Until::LagBelow(max) = until {
                if applier.progress.lag_bytes <= *max {
                    return Ok(Some(applier.progress.clone()));
                }
            }
        }
    }
}

/// Measures the lag, writes it to the job row and tells the observer.
async fn report<W: WalSource>(
    env: JobEnv<'_>,
    job: &Job,
    wal: &W,
    applier: &mut Applier,
    idle: bool,
    last_commit_us: Option<i64>,
    observer: &dyn Observer,
) -> Result<(), SplitError> {
    let current = source_position(env.source, &env.source_info.name).await?;
    let done = if idle {
        applier.applied().max(wal.received())
    } else {
        applier.applied()
    };
    let p = &mut applier.progress;
    p.lag_bytes = current.saturating_sub(done);
    p.lag_seconds = match (idle, last_commit_us) {
        (false, Some(us)) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64);
            (now - us).max(0) as f64 / 1e6
        }
        _ => 0.0,
    };
    let applied = (applier.applied() > 0).then(|| lsn_text(applier.applied()));
    store::record_lag(
        env.cat,
        job.id,
        applied.as_deref(),
        applier.progress.lag_bytes.min(i64::MAX as u64) as i64,
    )
    .await?;
    let value = serde_json::to_value(&applier.progress).unwrap_or(serde_json::Value::Null);
    store::record_progress(env.cat, job.id, "catchup", &value).await?;
    observer.catch_up(&applier.progress);
    Ok(())
}
