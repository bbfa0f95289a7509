//! The PostgresCluster reconcile: every desired object
//! ([`super::desired::cluster_objects`]) server-side applied (field manager
//! `pg-router-operator`, forced), readiness read from what the applies
//! return, and the status patched ([`super::status::cluster_status`]).
//! Level-based and idempotent: the same spec and cluster give the same
//! requests. Deleting the cluster deletes its objects through their owner
//! references (Kubernetes garbage collection); volumes' PVCs stay.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use super::catalog_sync::CatalogAccess;
use super::crd::{PostgresCluster, PostgresClusterStatus};
use super::desired::{
    catalog_dsn, cluster_objects, password_secret, shard_host, Ctx, Object, SpecError,
    FIELD_MANAGER, PG_PORT,
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
}

/// The reporter of the reconciler's Events.
pub fn reporter() -> Reporter {
    Reporter {
        controller: FIELD_MANAGER.into(),
        instance: std::env::var("HOSTNAME").ok(),
    }
}

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// An API request failed.
    #[error("{what}: {source}")]
    Api {
        /// The request.
        what: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// An object has no apiVersion/kind (not expected).
    #[error("object without apiVersion/kind: {0}")]
    Malformed(String),
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
        let api: Api<PostgresCluster> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({ "status": status });
        api.patch_status(
            &pc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|source| ReconcileError::Api {
            what: format!("patching the status of PostgresCluster {}", pc.name_any()),
            source,
        })?;
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

/// The `password` key of the cluster's `<cluster>-postgres` Secret (the
/// catalog's and the shards' `postgres` password), or why there is none.
///
/// Errors: an API failure other than "not found".
pub(crate) async fn read_password(
    client: &Client,
    ns: &str,
    cctx: &Ctx,
) -> Result<Result<String, String>, ReconcileError> {
    let secret_name = password_secret(cctx);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = secrets
        .get_opt(&secret_name)
        .await
        .map_err(|source| ReconcileError::Api {
            what: format!("reading Secret {secret_name}"),
            source,
        })?;
    let password = secret.and_then(|s| s.data).and_then(|d| {
        d.get("password")
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    });
    Ok(password.ok_or_else(|| format!("Secret {secret_name} has no key \"password\"")))
}

/// The Event of a phase change: Normal, Warning for `Degraded`; reason the
/// new phase, note the `Progressing` or `Degraded` message. A failure to
/// publish is logged, not retried.
async fn phase_event(pc: &PostgresCluster, status: &PostgresClusterStatus, recorder: &Recorder) {
    let phase = status.phase.clone().unwrap_or_default();
    let degraded = phase == "Degraded";
    let note = status
        .conditions
        .iter()
        .find(|c| c.type_ == if degraded { "Degraded" } else { "Progressing" })
        .map(|c| c.message.clone())
        .filter(|m| !m.is_empty());
    let ev = Event {
        type_: if degraded {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: phase,
        note,
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &pc.object_ref(&())).await {
        tracing::warn!(error = %e, cluster = %pc.name_any(), "could not publish an Event");
    }
}

/// Backoff after a failed reconcile.
pub fn error_policy(_pc: Arc<PostgresCluster>, e: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %e, "reconcile failed");
    Action::requeue(Duration::from_secs(10))
}

/// Server-side applies `o` in namespace `ns`; returns the object as stored.
async fn apply(client: &Client, ns: &str, o: &Object) -> Result<DynamicObject, ReconcileError> {
    let (Some(api_version), Some(kind), Some(name)) = (
        o["apiVersion"].as_str(),
        o["kind"].as_str(),
        o["metadata"]["name"].as_str(),
    ) else {
        return Err(ReconcileError::Malformed(o.to_string()));
    };
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(o),
    )
    .await
    .map_err(|source| ReconcileError::Api {
        what: format!("applying {kind} {name}"),
        source,
    })
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
