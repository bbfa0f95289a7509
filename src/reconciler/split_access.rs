//! The split-job side of a ShardSplitJob reconcile, behind [`SplitAccess`]
//! so the reconcile's tests fake it at this boundary: recording a job in
//! the catalog (tagged with the object's uid, so a restarted reconciler
//! finds it), reading its row back for the status, running it in this
//! process ([`crate::split::run::drive`], the library `pg-router split`
//! runs), approving a manual cutover and rolling it back. The job's state
//! lives in the catalog's `split_jobs` row: a reconciler that restarts
//! resumes it from there. [`PgSplit`] is the real implementation.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::split::capture::CaptureSettings;
use crate::split::catchup::CatchUpSettings;
use crate::split::cutover::{self, CutoverSettings};
use crate::split::progress::Observer;
use crate::split::run::{claim, drive, JobContext, RunSettings};
use crate::split::shards::ShardAccess;
use crate::split::{plan, rollback, store, Phase, RangeChoice, SplitError};

use super::catalog_sync::connect as catalog;

/// Where the catalog is and how the job reaches the shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitConn {
    /// Catalog DSN (libpq key=value, password included).
    pub catalog_dsn: String,
    /// Password of the `postgres` role on the shards.
    pub shard_password: String,
}

/// A move to record (one ShardSplitJob's spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitRequest {
    /// The object's uid: the job's `progress.owner`.
    pub owner: String,
    /// Keyspace.
    pub keyspace: String,
    /// Source shard.
    pub source: String,
    /// Target shard (registered).
    pub target: String,
    /// What part of the source's ranges moves.
    pub choice: RangeChoice,
}

/// How a job runs (from the spec's cutover settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerSettings {
    /// Longest write block of a cutover attempt, ms.
    pub max_window_ms: u64,
    /// Catch-up lag, bytes, below which a cutover is attempted.
    pub lag_threshold_bytes: u64,
    /// Wait for an approval ([`SplitAccess::approve_cutover`]).
    pub manual_cutover: bool,
}

/// A job's row, as the status shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSnapshot {
    /// `split_jobs.id`.
    pub id: i64,
    /// Last durable phase.
    pub phase: Phase,
    /// Exported snapshot's LSN.
    pub snapshot_lsn: Option<String>,
    /// Catch-up lag, bytes.
    pub lag_bytes: Option<u64>,
    /// Rows copied in step 3 (all tables).
    pub rows_copied: u64,
    /// `ok`, or `mismatch: <tables>`; None before verification.
    pub verification: Option<String>,
    /// Start of the last cutover attempt, RFC 3339 (UTC).
    pub cutover_started_at: Option<String>,
    /// Write-block window of the committed cutover, ms.
    pub cutover_window_ms: Option<f64>,
    /// The last error.
    pub error: Option<String>,
}

/// Why a job could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// The spec cannot be planned against the catalog (unknown keyspace
    /// or shard, a range the source does not own, another job active).
    #[error("{0}")]
    Refused(String),
    /// The catalog could not be reached or failed.
    #[error("{0}")]
    Failed(String),
}

/// The split-job operations a ShardSplitJob reconcile runs. Every method
/// is idempotent.
pub trait SplitAccess: Send + Sync {
    /// The job recorded for `req.owner`, or a new one planned from the
    /// catalog's routing for `req` (phase created); returns its id.
    ///
    /// Errors: [`CreateError`].
    fn find_or_create(
        &self,
        conn: SplitConn,
        req: SplitRequest,
    ) -> BoxFuture<'_, Result<i64, CreateError>>;

    /// The job recorded for `owner`, if any (nothing is created).
    ///
    /// Errors: a message (catalog unreachable).
    fn find(&self, conn: SplitConn, owner: String) -> BoxFuture<'_, Result<Option<i64>, String>>;

    /// The job's row (None: no such job).
    ///
    /// Errors: a message (catalog unreachable, bad row).
    fn observe(
        &self,
        conn: SplitConn,
        id: i64,
    ) -> BoxFuture<'_, Result<Option<JobSnapshot>, String>>;

    /// Makes sure this process drives job `id` (from its durable phase)
    /// unless it has ended; true if a run started now.
    ///
    /// Errors: a message (no `pg_dump`/`psql` found).
    fn ensure_running(
        &self,
        conn: SplitConn,
        id: i64,
        settings: RunnerSettings,
    ) -> BoxFuture<'_, Result<bool, String>>;

    /// Lets a job waiting for a manual cutover cut over.
    ///
    /// Errors: a message.
    fn approve_cutover(&self, conn: SplitConn, id: i64) -> BoxFuture<'_, Result<(), String>>;

    /// Stops this process's run of job `id` and rolls the job back (a
    /// write block it holds is lifted first); an ended job is left alone.
    ///
    /// Errors: a message; the job is past its point of no return.
    fn rollback(&self, conn: SplitConn, id: i64) -> BoxFuture<'_, Result<(), String>>;
}

/// [`SplitAccess`] on the real catalog and shards: runs each job on a
/// thread of this process with its own single-threaded tokio runtime (the
/// replication client is not `Send`), plaintext to the shards, as
/// `postgres`.
pub struct PgSplit {
    runs: Mutex<HashMap<i64, Run>>,
    pg_bin: Option<PathBuf>,
}

/// One job run: its thread, and the sender whose drop cancels it.
struct Run {
    cancel: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl PgSplit {
    /// With `pg_dump`/`psql` from `pg_bin` (None: PG_BIN_DIR, PATH, the
    /// usual install locations, looked up when a job starts).
    pub fn new(pg_bin: Option<PathBuf>) -> PgSplit {
        PgSplit {
            runs: Mutex::new(HashMap::new()),
            pg_bin,
        }
    }

    fn access(conn: &SplitConn) -> ShardAccess {
        ShardAccess {
            user: "postgres".into(),
            password: Some(conn.shard_password.clone()),
            connect_timeout: Duration::from_secs(5),
            tls: None,
        }
    }
}

/// Logs a run's steps (the status shows its progress from the job row).
struct LogObserver(i64);

impl Observer for LogObserver {
    fn step(&self, message: &str) {
        tracing::info!(job = self.0, "split job: {message}");
    }
}

impl SplitAccess for PgSplit {
    fn find_or_create(
        &self,
        conn: SplitConn,
        req: SplitRequest,
    ) -> BoxFuture<'_, Result<i64, CreateError>> {
        Box::pin(async move {
            let failed = |e: SplitError| CreateError::Failed(e.to_string());
            let cat = catalog(&conn.catalog_dsn)
                .await
                .map_err(CreateError::Failed)?;
            crate::catalog::migrate(&cat)
                .await
                .map_err(|e| CreateError::Failed(e.to_string()))?;
            if let Some(job) = store::owned_by(&cat, &req.owner).await.map_err(failed)? {
                return Ok(job.id);
            }
            let loaded = crate::catalog::load(&cat)
                .await
                .map_err(|e| CreateError::Failed(format!("loading the catalog: {e}")))?;
            let ks = loaded.keyspaces.get(&req.keyspace).ok_or_else(|| {
                CreateError::Refused(format!("keyspace '{}' does not exist", req.keyspace))
            })?;
            let spec = plan(&ks.routing, &req.source, &req.target, req.choice)
                .map_err(|e| CreateError::Refused(e.to_string()))?;
            match store::create_owned(&cat, &spec, Some(&req.owner)).await {
                Ok(job) => Ok(job.id),
                Err(
                    e @ (SplitError::JobRunning { .. }
                    | SplitError::UnknownShard(_)
                    | SplitError::StalePlan { .. }),
                ) => Err(CreateError::Refused(e.to_string())),
                Err(e) => Err(failed(e)),
            }
        })
    }

    fn find(&self, conn: SplitConn, owner: String) -> BoxFuture<'_, Result<Option<i64>, String>> {
        Box::pin(async move {
            let cat = catalog(&conn.catalog_dsn).await?;
            store::owned_by(&cat, &owner)
                .await
                .map(|j| j.map(|j| j.id))
                .map_err(|e| e.to_string())
        })
    }

    fn observe(
        &self,
        conn: SplitConn,
        id: i64,
    ) -> BoxFuture<'_, Result<Option<JobSnapshot>, String>> {
        Box::pin(async move {
            let cat = catalog(&conn.catalog_dsn).await?;
            let row = cat
                .query_opt(
                    "select phase, snapshot_lsn::text, lag_bytes, \
                            case when verification is null then null \
                                 when coalesce((verification ->> 'ok')::bool, false) then 'ok' \
                                 else 'mismatch: ' || verification::text end, \
                            to_char(cutover_started_at at time zone 'UTC', \
                                    'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
                            cutover_window_ms, error, \
                            coalesce((select sum((v ->> 'rows_copied')::int8) \
                                        from jsonb_each(j.progress -> 'copy') as e(k, v)), 0)::int8 \
                       from pgrouter.split_jobs j where id = $1",
                    &[&id],
                )
                .await
                .map_err(|e| format!("reading split job {id}: {e}"))?;
            let Some(r) = row else {
                return Ok(None);
            };
            let phase: String = r.get(0);
            let lag: Option<i64> = r.get(2);
            let rows: i64 = r.get(7);
            Ok(Some(JobSnapshot {
                id,
                phase: Phase::parse(&phase)
                    .ok_or_else(|| format!("split job {id}: unknown phase '{phase}'"))?,
                snapshot_lsn: r.get(1),
                lag_bytes: lag.map(|l| l.max(0) as u64),
                rows_copied: rows.max(0) as u64,
                verification: r.get(3),
                cutover_started_at: r.get(4),
                cutover_window_ms: r.get(5),
                error: r.get(6),
            }))
        })
    }

    fn ensure_running(
        &self,
        conn: SplitConn,
        id: i64,
        settings: RunnerSettings,
    ) -> BoxFuture<'_, Result<bool, String>> {
        Box::pin(async move {
            {
                let mut runs = self.runs.lock();
                runs.retain(|_, r| !r.thread.is_finished());
                if runs.contains_key(&id) {
                    return Ok(false);
                }
            }
            let pg_bin = match &self.pg_bin {
                Some(p) => p.clone(),
                None => crate::cluster::find_pg_bin_dir().map_err(|e| e.to_string())?,
            };
            let run = RunSettings {
                capture: CaptureSettings::default(),
                parallel_tables: 2,
                pg_bin,
                catchup: CatchUpSettings::default(),
                cutover: CutoverSettings {
                    max_window: Duration::from_millis(settings.max_window_ms),
                    lag_threshold_bytes: settings.lag_threshold_bytes,
                    ..CutoverSettings::default()
                },
                verify: true,
                manual_cutover: settings.manual_cutover,
            };
            let access = PgSplit::access(&conn);
            let (cancel, cancelled) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("split-job-{id}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::warn!(job = id, error = %e, "no runtime for the split job");
                            return;
                        }
                    };
                    // Built here: the run's future is not Send.
                    let job_run = async move {
                        let cat = catalog(&conn.catalog_dsn).await?;
                        let job = store::load(&cat, id)
                            .await
                            .map_err(|e| e.to_string())?
                            .ok_or_else(|| format!("split job {id} does not exist"))?;
                        if job.phase.is_terminal() {
                            return Ok(job.phase);
                        }
                        let ctx = JobContext::open(cat, access, &job)
                            .await
                            .map_err(|e| e.to_string())?;
                        drive(&ctx, id, &run, &LogObserver(id))
                            .await
                            .map_err(|e: SplitError| e.to_string())
                    };
                    rt.block_on(async move {
                        tokio::select! {
                            r = job_run => match r {
                                Ok(phase) => tracing::info!(job = id, %phase, "split job run ended"),
                                Err(e) => tracing::warn!(job = id, error = %e, "split job run failed"),
                            },
                            _ = cancelled => tracing::info!(job = id, "split job run stopped"),
                        }
                    });
                })
                .map_err(|e| format!("starting a thread for split job {id}: {e}"))?;
            self.runs.lock().insert(id, Run { cancel, thread });
            Ok(true)
        })
    }

    fn approve_cutover(&self, conn: SplitConn, id: i64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let cat = catalog(&conn.catalog_dsn).await?;
            store::record_progress(&cat, id, "cutover_requested", &true.into())
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn rollback(&self, conn: SplitConn, id: i64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let run = self.runs.lock().remove(&id);
            if let Some(Run { cancel, thread }) = run {
                drop(cancel);
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
            let cat = catalog(&conn.catalog_dsn).await?;
            let s = |e: SplitError| e.to_string();
            let job = store::load(&cat, id)
                .await
                .map_err(s)?
                .ok_or_else(|| format!("split job {id} does not exist"))?;
            if job.phase.is_terminal() {
                return Ok(());
            }
            if job.phase.past_point_of_no_return() {
                return Err(format!(
                    "{} is past its point of no return (the routing update)",
                    job.describe()
                ));
            }
            if job.phase == Phase::Cutover {
                cutover::lift(&cat, &job).await.map_err(s)?;
            }
            let ctx = JobContext::open(cat, PgSplit::access(&conn), &job)
                .await
                .map_err(s)?;
            claim(&ctx.cat, id).await.map_err(s)?;
            let job = store::load(&ctx.cat, id)
                .await
                .map_err(s)?
                .ok_or_else(|| format!("split job {id} does not exist"))?;
            rollback::rollback(ctx.env(), &job, None).await.map_err(s)
        })
    }
}

/// A shared [`PgSplit`] for the operator's context.
pub fn pg_split() -> Arc<dyn SplitAccess> {
    Arc::new(PgSplit::new(None))
}
