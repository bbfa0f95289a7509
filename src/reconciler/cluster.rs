//! The PostgresCluster reconcile: every desired object
//! ([`super::desired::cluster_objects`]) server-side applied (field manager
//! `pg-router-operator`, forced), readiness read from what the applies
//! return, and the status patched ([`super::status::cluster_status`]).
//! Level-based and idempotent: the same spec and cluster give the same
//! requests. Deleting the cluster deletes its objects through their owner
//! references (Kubernetes garbage collection); volumes' PVCs stay.

use std::sync::Arc;
use std::time::Duration;

use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, ResourceExt};

use std::collections::BTreeMap;

pub use super::api::ReconcileError;
use super::api::{apply, patch_status, publish, read_password};

use super::catalog_sync::CatalogAccess;
use super::crd::{PostgresCluster, PostgresClusterStatus};
use super::desired::{
    catalog_dsn, cluster_objects, shard_host, Ctx, SpecError, FIELD_MANAGER, PG_PORT,
};
use super::status::{cluster_status, Observed};
use crate::catalog::ShardInfo;

/// What a reconcile needs besides the object.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The current time, RFC 3339 (a parameter so tests are exact).
    pub now: fn() -> String,
    /// The catalog operations ([`PgCatalog`](super::catalog_sync::PgCatalog)
    /// outside tests).
    pub catalog: Arc<dyn CatalogAccess>,
    /// Publishes the Events of phase changes.
    pub recorder: Recorder,
    /// The reconciler's own metrics (split job failures).
    pub metrics: Arc<super::metrics::ReconcileMetrics>,
    /// The split-job operations ([`PgSplit`](super::split_access::PgSplit)
    /// outside tests).
    pub split: Arc<dyn super::split_access::SplitAccess>,
}

/// The reporter of the reconciler's Events.
pub fn reporter() -> Reporter {
    Reporter {
        controller: FIELD_MANAGER.into(),
        instance: std::env::var("HOSTNAME").ok(),
    }
}

/// The current time as RFC 3339.
pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Reconciles one PostgresCluster: applies its objects, then patches its
/// status. An invalid spec applies nothing and sets `Degraded` (no retry
/// until the spec changes); a failed request is an error (retried).
///
/// Errors: [`ReconcileError`].
pub async fn reconcile(
    pc: Arc<PostgresCluster>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let ns = pc.namespace().unwrap_or_default();
    let mut observed = Observed::default();
    match cluster_objects(&pc) {
        Ok(objects) => {
            for o in &objects {
                let applied = apply(&ctx.client, &ns, o).await?;
                observe(&pc, &applied, &mut observed);
            }
            if observed.catalog_ready >= 1 {
                observed.catalog = Some(sync_catalog(&pc, &ctx, &ns).await?);
            }
        }
        Err(e @ SpecError::Invalid { .. }) => {
            observed.invalid = Some(("InvalidSpec".into(), e.to_string()));
        }
        Err(e) => return Err(ReconcileError::Malformed(e.to_string())),
    }
    let status = cluster_status(
        pc.status.as_ref(),
        &observed,
        pc.metadata.generation,
        &(ctx.now)(),
    );
    if pc.status.as_ref() != Some(&status) {
        patch_status(&ctx.client, &*pc, &status).await?;
    }
    let before = pc.status.as_ref().and_then(|s| s.phase.clone());
    if before != status.phase {
        phase_event(&pc, &status, &ctx.recorder).await;
    }
    Ok(if observed.invalid.is_some() {
        Action::await_change()
    } else if status.phase.as_deref() == Some("Ready") {
        Action::requeue(Duration::from_secs(300))
    } else {
        Action::requeue(Duration::from_secs(15))
    })
}

/// Migrates the catalog and registers the shards
/// ([`CatalogAccess::sync`]) with the password from the `<cluster>-postgres`
/// Secret. A catalog error, or a Secret without the password, is the
/// result (reported in the status, retried at the next requeue).
///
/// Errors: an API failure reading the Secret (other than "not found").
async fn sync_catalog(
    pc: &PostgresCluster,
    ctx: &Context,
    ns: &str,
) -> Result<Result<BTreeMap<String, i64>, String>, ReconcileError> {
    let Ok(cctx) = Ctx::new(pc) else {
        return Ok(Err("the PostgresCluster has no uid yet".into()));
    };
    let password = match read_password(&ctx.client, ns, &cctx).await? {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    let dsn = crate::config::with_password(&catalog_dsn(&cctx), &password);
    let shards = (0..pc.spec.shards.count)
        .map(|i| ShardInfo {
            name: format!("shard{i}"),
            host: shard_host(&cctx, i),
            port: PG_PORT as u16,
            dbname: "postgres".into(),
            user: None,
        })
        .collect();
    Ok(ctx.catalog.sync(dsn, shards).await)
}

/// The Event of a phase change: Normal, Warning for `Degraded`; reason the
/// new phase, note the `Progressing` or `Degraded` message.
async fn phase_event(pc: &PostgresCluster, status: &PostgresClusterStatus, recorder: &Recorder) {
    let phase = status.phase.clone().unwrap_or_default();
    let degraded = phase == "Degraded";
    let note = status
        .conditions
        .iter()
        .find(|c| c.type_ == if degraded { "Degraded" } else { "Progressing" })
        .map(|c| c.message.clone())
        .filter(|m| !m.is_empty());
    publish(recorder, pc, degraded, &phase, note, "Reconcile").await;
}

/// Backoff after a failed reconcile.
pub fn error_policy(_pc: Arc<PostgresCluster>, e: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %e, "reconcile failed");
    Action::requeue(Duration::from_secs(10))
}

/// Readiness from an applied StatefulSet or Deployment.
fn observe(pc: &PostgresCluster, applied: &DynamicObject, observed: &mut Observed) {
    let kind = applied
        .types
        .as_ref()
        .map(|t| t.kind.as_str())
        .unwrap_or("");
    let ready = applied.data["status"]["readyReplicas"]
        .as_u64()
        .unwrap_or(0) as u32;
    let name = applied.name_any();
    let prefix = format!("{}-", pc.name_any());
    match (kind, name.strip_prefix(&prefix)) {
        ("StatefulSet", Some("catalog")) => observed.catalog_ready = ready,
        ("StatefulSet", Some(shard)) => {
            observed
                .shards
                .push((shard.to_string(), ready, pc.spec.shards.replicas));
        }
        ("Deployment", Some("router")) => observed.router_ready = ready,
        _ => {}
    }
}
