//! The API requests every reconcile makes: server-side apply of a desired
//! object ([`apply`]), a status merge patch ([`patch_status`]), an Event
//! ([`publish`]), the cluster's `postgres` password ([`read_password`])
//! and a named cluster's catalog access ([`cluster_access`]).

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::crd::PostgresCluster;
use super::desired::{catalog_dsn, password_secret, Ctx, Object, FIELD_MANAGER};

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

/// Server-side applies `o` in namespace `ns`; returns the object as stored.
pub(crate) async fn apply(
    client: &Client,
    ns: &str,
    o: &Object,
) -> Result<DynamicObject, ReconcileError> {
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

/// Merge-patches `obj`'s status subresource with `status`.
///
/// Errors: [`ReconcileError::Api`] naming the object.
pub(crate) async fn patch_status<K>(
    client: &Client,
    obj: &K,
    status: &impl Serialize,
) -> Result<(), ReconcileError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({ "status": status })),
    )
    .await
    .map_err(|source| ReconcileError::Api {
        what: format!("patching the status of {} {}", K::kind(&()), obj.name_any()),
        source,
    })?;
    Ok(())
}

/// Publishes an Event about `obj` (Warning if `warning`, else Normal); a
/// failure is logged, not retried.
pub(crate) async fn publish<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    warning: bool,
    reason: &str,
    note: Option<String>,
    action: &str,
) {
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note,
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, kind = %K::kind(&()), name = %obj.name_any(), "could not publish an Event");
    }
}

/// A PostgresCluster and how to reach its catalog.
pub(crate) struct ClusterAccess {
    /// The cluster.
    pub pc: PostgresCluster,
    /// Its naming context.
    pub ctx: Ctx,
    /// The `postgres` password (catalog and shards).
    pub password: String,
    /// The catalog DSN with the password.
    pub catalog_dsn: String,
}

/// The PostgresCluster `name` in `ns` and its catalog access, or why there
/// is none yet (no such cluster, no uid, no password).
///
/// Errors: an API failure other than "not found".
pub(crate) async fn cluster_access(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Result<ClusterAccess, String>, ReconcileError> {
    let clusters: Api<PostgresCluster> = Api::namespaced(client.clone(), ns);
    let pc = clusters
        .get_opt(name)
        .await
        .map_err(|source| ReconcileError::Api {
            what: format!("reading PostgresCluster {name}"),
            source,
        })?;
    let Some(pc) = pc else {
        return Ok(Err(format!("PostgresCluster {name} does not exist")));
    };
    let Ok(ctx) = Ctx::new(&pc) else {
        return Ok(Err(format!("PostgresCluster {name} has no uid yet")));
    };
    let password = match read_password(client, ns, &ctx).await? {
        Ok(p) => p,
        Err(m) => return Ok(Err(m)),
    };
    let catalog_dsn = crate::config::with_password(&catalog_dsn(&ctx), &password);
    Ok(Ok(ClusterAccess {
        pc,
        ctx,
        password,
        catalog_dsn,
    }))
}
