//! The ShardSplitJob reconcile. A finalizer (`pgrouter.io/split-job`) is
//! added first. Then, level-based from the spec and the catalog: a new
//! target shard (`shard{count}` of the cluster) is bootstrapped (its
//! StatefulSet and Services applied as the cluster's own shards, then
//! registered in the catalog once ready); the catalog job is found by the
//! object's uid or recorded ([`SplitAccess::find_or_create`]); this
//! process drives it from its durable phase ([`SplitAccess::ensure_running`],
//! so a restarted reconciler resumes it); a manual cutover is approved once
//! `spec.cutover.approved`; and the job row is mirrored into the status
//! ([`split_job_status`]) with an Event per phase change. Deleting the
//! object rolls the job back before its point of no return (the routing
//! update); after it, deletion waits for the job to complete, or with
//! `allowForwardOnly` lets it finish without waiting.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::api::{apply, cluster_access, patch_status, publish as publish_event};
use super::cluster::{Context, ReconcileError};
use super::crd::{CutoverMode, PostgresCluster, ShardSplitJob, ShardSplitJobStatus};
use super::desired::{shard_host, shard_objects, Ctx, PG_PORT};
use super::shard_range::{key_range, keyspace_id};
use super::split_access::{CreateError, JobSnapshot, RunnerSettings, SplitConn, SplitRequest};
use super::status::condition;
use crate::catalog::ShardInfo;
use crate::split::{Phase, RangeChoice};

/// The finalizer that lets a deletion roll the job back first.
pub const FINALIZER: &str = "pgrouter.io/split-job";

/// How often a running job's status is refreshed.
const POLL: Duration = Duration::from_secs(10);

/// What one reconcile saw of the job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobView {
    /// No job yet: waiting for the cluster, its password or the target
    /// shard (the message says which).
    Pending(String),
    /// The spec cannot be planned or read (message); retried on change and
    /// now and then.
    Refused(String),
    /// The job's row, and a problem running it if there is one.
    Job(JobSnapshot, Option<String>),
    /// The catalog could not be reached (message).
    Unavailable(String),
}

/// A condition's (status, reason, message).
type Cond<'a> = (bool, &'a str, String);

/// The status phase of a catalog phase.
pub fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Created => "Pending",
        Phase::Capture => "Capture",
        Phase::Bootstrap => "Bootstrap",
        Phase::Copy => "Copy",
        Phase::CatchUp => "CatchUp",
        Phase::Cutover => "Cutover",
        Phase::Routed => "Routed",
        Phase::Cleanup => "Cleanup",
        Phase::Completed => "Completed",
        Phase::Failed => "Failed",
        Phase::RolledBack => "RolledBack",
    }
}

/// The new status: the job row's fields (kept from `prev` while there is
/// no row to read), phase, and the conditions `Ready` (completed),
/// `Progressing` (running or waiting, with what for) and `Degraded`
/// (failed, refused, or a problem reaching the catalog or running the
/// job). Pure; `now` is RFC 3339.
pub fn split_job_status(
    prev: Option<&ShardSplitJobStatus>,
    view: &JobView,
    generation: Option<i64>,
    now: &str,
) -> ShardSplitJobStatus {
    let mut st = prev.cloned().unwrap_or_default();
    st.observed_generation = generation;
    let (ready, progressing, degraded): (Cond, Cond, Cond) = match view {
        JobView::Pending(why) => {
            st.phase = Some("Pending".into());
            (
                (false, "Pending", why.clone()),
                (true, "Pending", why.clone()),
                (false, "AsExpected", String::new()),
            )
        }
        JobView::Refused(why) => {
            st.phase = Some("Pending".into());
            (
                (false, "Refused", why.clone()),
                (false, "Refused", String::new()),
                (true, "Refused", why.clone()),
            )
        }
        JobView::Unavailable(why) => (
            (false, "CatalogError", why.clone()),
            (
                st.phase
                    .as_deref()
                    .is_some_and(|p| !matches!(p, "Completed" | "Failed" | "RolledBack")),
                "CatalogError",
                String::new(),
            ),
            (true, "CatalogError", why.clone()),
        ),
        JobView::Job(j, problem) => {
            st.phase = Some(phase_name(j.phase).into());
            st.job_id = Some(j.id);
            st.snapshot_lsn = j.snapshot_lsn.clone();
            st.lag_bytes = j.lag_bytes;
            st.rows_copied = Some(j.rows_copied);
            st.verification = j.verification.clone();
            st.cutover_started_at = j.cutover_started_at.clone();
            st.cutover_window_ms = j.cutover_window_ms.map(|w| w.round().max(0.0) as u64);
            st.failure_reason = match j.phase {
                Phase::Failed => j.error.clone(),
                _ => None,
            };
            let what = format!("split job {} is in phase {}", j.id, j.phase);
            match (j.phase, problem) {
                (Phase::Completed, _) => (
                    (true, "Completed", what),
                    (false, "Completed", String::new()),
                    (false, "AsExpected", String::new()),
                ),
                (Phase::Failed, _) => {
                    let why = j.error.clone().unwrap_or_default();
                    (
                        (false, "Failed", why.clone()),
                        (false, "Failed", String::new()),
                        (true, "Failed", why),
                    )
                }
                (Phase::RolledBack, _) => (
                    (false, "RolledBack", what.clone()),
                    (false, "RolledBack", String::new()),
                    (false, "RolledBack", what),
                ),
                (_, Some(p)) => (
                    (false, "Running", what.clone()),
                    (true, "Running", what),
                    (true, "RunFailed", p.clone()),
                ),
                (_, None) => (
                    (false, "Running", what.clone()),
                    (true, "Running", what),
                    (false, "AsExpected", String::new()),
                ),
            }
        }
    };
    let prev_conditions = prev.map(|p| p.conditions.clone()).unwrap_or_default();
    let cond = |type_: &str, (on, reason, message): (bool, &str, String)| {
        condition(
            &prev_conditions,
            type_,
            on,
            reason,
            message,
            generation,
            now,
        )
    };
    st.conditions = vec![
        cond("Ready", ready),
        cond("Progressing", progressing),
        cond("Degraded", degraded),
    ];
    st
}

/// What part of the source moves, from the spec.
///
/// Errors: a message naming the field.
pub fn range_choice(sj: &ShardSplitJob) -> Result<RangeChoice, String> {
    match (&sj.spec.range, &sj.spec.split_point) {
        (Some(_), Some(_)) => Err("spec.range and spec.splitPoint are exclusive".into()),
        (Some(r), None) => Ok(RangeChoice::Range(key_range("spec.range", r)?)),
        (None, Some(p)) => Ok(RangeChoice::At(keyspace_id("spec.splitPoint", p)?)),
        (None, None) => Ok(RangeChoice::UpperHalf),
    }
}

/// The index of a target that is the cluster's next shard (`shard{count}`).
fn new_shard(target: &str, pc: &PostgresCluster) -> Option<u32> {
    target
        .strip_prefix("shard")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n == pc.spec.shards.count)
}

/// Reconciles one ShardSplitJob (see the module docs).
///
/// Errors: [`ReconcileError`] for a failed API request (retried).
pub async fn reconcile(
    sj: Arc<ShardSplitJob>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let ns = sj.namespace().unwrap_or_default();
    let api: Api<ShardSplitJob> = Api::namespaced(ctx.client.clone(), &ns);
    if sj.metadata.deletion_timestamp.is_some() {
        return finalize(&sj, &ctx, &ns, &api).await;
    }
    if !sj.finalizers().iter().any(|f| f == FINALIZER) {
        let mut finalizers = sj.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        set_finalizers(&api, &sj, finalizers).await?;
        return Ok(Action::await_change());
    }
    let view = observe_and_drive(&sj, &ctx, &ns).await?;
    let status = split_job_status(
        sj.status.as_ref(),
        &view,
        sj.metadata.generation,
        &(ctx.now)(),
    );
    if sj.status.as_ref() != Some(&status) {
        patch_status(&ctx.client, &*sj, &status).await?;
    }
    let failed = status.phase.as_deref() == Some("Failed");
    ctx.metrics
        .split_job_failed(&ns, &sj.name_any(), Some(failed));
    let before = sj.status.as_ref().and_then(|s| s.phase.clone());
    let degraded_before = sj
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Degraded"))
        .map(|c| (c.status.clone(), c.reason.clone()));
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded");
    if before != status.phase {
        let phase = status.phase.clone().unwrap_or_default();
        let note = match &view {
            JobView::Job(j, _) if j.phase == Phase::Failed => j.error.clone(),
            JobView::Job(j, _) if j.phase == Phase::Completed => Some(format!(
                "split job {} completed; cutover window {} ms",
                j.id,
                j.cutover_window_ms
                    .map_or_else(|| "-".to_string(), |w| format!("{w:.1}"))
            )),
            JobView::Job(j, _) => Some(format!("split job {} is in phase {}", j.id, j.phase)),
            JobView::Pending(m) | JobView::Refused(m) | JobView::Unavailable(m) => Some(m.clone()),
        };
        let warn = phase == "Failed";
        publish(&ctx, &sj, warn, &phase, note).await;
    } else if let Some(d) = degraded.filter(|d| d.status == "True") {
        if degraded_before != Some((d.status.clone(), d.reason.clone())) {
            publish(&ctx, &sj, true, &d.reason, Some(d.message.clone())).await;
        }
    }
    Ok(match &view {
        JobView::Job(j, None) if j.phase.is_terminal() => Action::await_change(),
        JobView::Refused(_) => Action::requeue(Duration::from_secs(60)),
        JobView::Pending(_) | JobView::Unavailable(_) | JobView::Job(_, Some(_)) => {
            Action::requeue(Duration::from_secs(15))
        }
        JobView::Job(..) => Action::requeue(POLL),
    })
}

/// The cluster's catalog and shard credentials, or why there are none yet
/// (and the cluster).
async fn connect_info(
    sj: &ShardSplitJob,
    ctx: &Context,
    ns: &str,
) -> Result<Result<(SplitConn, PostgresCluster, Ctx), String>, ReconcileError> {
    let a = match cluster_access(&ctx.client, ns, &sj.spec.cluster).await? {
        Ok(a) => a,
        Err(m) => return Ok(Err(m)),
    };
    let conn = SplitConn {
        catalog_dsn: a.catalog_dsn,
        shard_password: a.password,
    };
    Ok(Ok((conn, a.pc, a.ctx)))
}

/// Bootstraps a new target, records or finds the job, drives it, reads it.
async fn observe_and_drive(
    sj: &ShardSplitJob,
    ctx: &Context,
    ns: &str,
) -> Result<JobView, ReconcileError> {
    let choice = match range_choice(sj) {
        Ok(c) => c,
        Err(m) => return Ok(JobView::Refused(m)),
    };
    // The uid tags the catalog job; a stored object always has one.
    let Some(owner) = sj.uid().filter(|u| !u.is_empty()) else {
        return Ok(JobView::Pending("the ShardSplitJob has no uid yet".into()));
    };
    let (conn, pc, cctx) = match connect_info(sj, ctx, ns).await? {
        Ok(x) => x,
        Err(m) => return Ok(JobView::Pending(m)),
    };
    let ended = sj
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| matches!(p, "Completed" | "Failed" | "RolledBack"));
    if let (Some(i), false) = (new_shard(&sj.spec.target, &pc), ended) {
        if let Some(waiting) = bootstrap_target(ctx, ns, &pc, &cctx, &conn, i).await? {
            return Ok(JobView::Pending(waiting));
        }
    }
    let req = SplitRequest {
        owner,
        keyspace: sj.spec.keyspace.clone(),
        source: sj.spec.source.clone(),
        target: sj.spec.target.clone(),
        choice,
    };
    let id = match ctx.split.find_or_create(conn.clone(), req).await {
        Ok(id) => id,
        Err(CreateError::Refused(m)) => return Ok(JobView::Refused(m)),
        Err(CreateError::Failed(m)) => return Ok(JobView::Unavailable(m)),
    };
    let snap = match ctx.split.observe(conn.clone(), id).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Ok(JobView::Unavailable(format!(
                "split job {id} is not in the catalog"
            )))
        }
        Err(m) => return Ok(JobView::Unavailable(m)),
    };
    if snap.phase.is_terminal() {
        return Ok(JobView::Job(snap, None));
    }
    let manual = sj.spec.cutover.mode == CutoverMode::Manual;
    let mut problem = None;
    if manual && sj.spec.cutover.approved {
        if let Err(m) = ctx.split.approve_cutover(conn.clone(), id).await {
            problem = Some(m);
        }
    }
    let settings = RunnerSettings {
        max_window_ms: sj.spec.cutover.max_window_ms,
        lag_threshold_bytes: sj.spec.cutover.lag_threshold_bytes,
        manual_cutover: manual,
    };
    match ctx.split.ensure_running(conn, id, settings).await {
        Ok(true) => tracing::info!(job = id, splitjob = %sj.name_any(), "split job run started"),
        Ok(false) => {}
        Err(m) => problem = Some(m),
    }
    Ok(JobView::Job(snap, problem))
}

/// Applies the objects of new shard `i` and, once its instances are
/// ready, registers it in the catalog (with the cluster's shards); returns
/// what it waits for, or None when the shard is ready and registered.
async fn bootstrap_target(
    ctx: &Context,
    ns: &str,
    pc: &PostgresCluster,
    cctx: &Ctx,
    conn: &SplitConn,
    i: u32,
) -> Result<Option<String>, ReconcileError> {
    let objects = match shard_objects(cctx, pc, i) {
        Ok(o) => o,
        Err(e) => return Ok(Some(format!("the target shard's objects: {e}"))),
    };
    let mut ready = false;
    for o in &objects {
        let applied = apply(&ctx.client, ns, o).await?;
        if applied
            .types
            .as_ref()
            .is_some_and(|t| t.kind == "StatefulSet")
        {
            let n = applied.data["status"]["readyReplicas"]
                .as_u64()
                .unwrap_or(0);
            ready = n >= u64::from(pc.spec.shards.replicas);
        }
    }
    if !ready {
        return Ok(Some(format!(
            "waiting for the target shard{i} to be ready (bootstrapping it)"
        )));
    }
    let shards = (0..=i)
        .map(|k| ShardInfo {
            name: format!("shard{k}"),
            host: shard_host(cctx, k),
            port: PG_PORT as u16,
            dbname: "postgres".into(),
            user: None,
        })
        .collect();
    match ctx.catalog.sync(conn.catalog_dsn.clone(), shards).await {
        Ok(_) => Ok(None),
        Err(m) => Ok(Some(format!("registering the target shard{i}: {m}"))),
    }
}

/// Deletion: rolls the job back before its point of no return, waits
/// after it (unless `allowForwardOnly`), then removes the finalizer.
async fn finalize(
    sj: &ShardSplitJob,
    ctx: &Context,
    ns: &str,
    api: &Api<ShardSplitJob>,
) -> Result<Action, ReconcileError> {
    if !sj.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let Ok((conn, _, _)) = connect_info(sj, ctx, ns).await? else {
        // The cluster (and its catalog) is gone, or never was.
        release(ctx, api, sj).await?;
        return Ok(Action::await_change());
    };
    let id = match sj.status.as_ref().and_then(|s| s.job_id) {
        Some(id) => Some(id),
        // Recorded, but the status patch was lost: found by uid.
        None => match sj.uid().filter(|u| !u.is_empty()) {
            None => None,
            Some(uid) => match ctx.split.find(conn.clone(), uid).await {
                Ok(id) => id,
                Err(m) => {
                    tracing::warn!(error = %m, "deleting a ShardSplitJob: catalog unavailable");
                    return Ok(Action::requeue(Duration::from_secs(15)));
                }
            },
        },
    };
    let Some(id) = id else {
        // No job was recorded.
        release(ctx, api, sj).await?;
        return Ok(Action::await_change());
    };
    let snap = match ctx.split.observe(conn.clone(), id).await {
        Ok(s) => s,
        Err(m) => {
            tracing::warn!(job = id, error = %m, "deleting a ShardSplitJob: catalog unavailable");
            return Ok(Action::requeue(Duration::from_secs(15)));
        }
    };
    match snap {
        Some(j) if j.phase.past_point_of_no_return() && !j.phase.is_terminal() => {
            let settings = RunnerSettings {
                max_window_ms: sj.spec.cutover.max_window_ms,
                lag_threshold_bytes: sj.spec.cutover.lag_threshold_bytes,
                manual_cutover: false,
            };
            if let Err(m) = ctx.split.ensure_running(conn, id, settings).await {
                tracing::warn!(job = id, error = %m, "could not run the split job");
            }
            if sj.spec.allow_forward_only {
                let note = format!(
                    "split job {id} is past its point of no return; it runs to completion without this object"
                );
                publish(ctx, sj, false, "ForwardOnly", Some(note)).await;
                release(ctx, api, sj).await?;
                return Ok(Action::await_change());
            }
            Ok(Action::requeue(POLL))
        }
        Some(j) if !j.phase.is_terminal() => {
            match ctx.split.rollback(conn, id).await {
                Ok(()) => {
                    let note = format!("split job {id} rolled back on deletion");
                    publish(ctx, sj, false, "RolledBack", Some(note)).await;
                }
                Err(m) => {
                    publish(ctx, sj, true, "RollbackFailed", Some(m)).await;
                    return Ok(Action::requeue(Duration::from_secs(15)));
                }
            }
            release(ctx, api, sj).await?;
            Ok(Action::await_change())
        }
        _ => {
            release(ctx, api, sj).await?;
            Ok(Action::await_change())
        }
    }
}

/// Removes this reconciler's finalizer from `sj` (and its metric series).
async fn release(
    ctx: &Context,
    api: &Api<ShardSplitJob>,
    sj: &ShardSplitJob,
) -> Result<(), ReconcileError> {
    let rest = sj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    set_finalizers(api, sj, rest).await?;
    let ns = sj.namespace().unwrap_or_default();
    ctx.metrics.split_job_failed(&ns, &sj.name_any(), None);
    Ok(())
}

/// Sets `metadata.finalizers` (merge patch, conditional on the object's
/// resourceVersion so a concurrent change is not overwritten).
async fn set_finalizers(
    api: &Api<ShardSplitJob>,
    sj: &ShardSplitJob,
    finalizers: Vec<String>,
) -> Result<(), ReconcileError> {
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": sj.resource_version(),
        }
    });
    api.patch(
        &sj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|source| ReconcileError::Api {
        what: format!("setting the finalizers of ShardSplitJob {}", sj.name_any()),
        source,
    })?;
    Ok(())
}

/// Publishes an Event on the job (a failure is logged).
async fn publish(
    ctx: &Context,
    sj: &ShardSplitJob,
    warning: bool,
    reason: &str,
    note: Option<String>,
) {
    publish_event(&ctx.recorder, sj, warning, reason, note, "Split").await;
}

/// Backoff after a failed ShardSplitJob reconcile.
pub fn error_policy(_sj: Arc<ShardSplitJob>, e: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %e, "ShardSplitJob reconcile failed");
    Action::requeue(Duration::from_secs(10))
}
