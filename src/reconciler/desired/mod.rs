//! The objects a [`PostgresCluster`] stands for, as a pure function of its
//! spec ([`cluster_objects`]): what the reconciler applies (server-side
//! apply, field manager [`FIELD_MANAGER`]) on every reconcile. Names,
//! labels and owner references are fixed here so the reconcile loop, the
//! tests and `docs/kubernetes.md` agree.

mod postgres;
mod router;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use super::crd::PostgresCluster;

pub use postgres::{
    catalog_dsn, password_secret, postgres_objects, shard_host, shard_objects, PG_PORT,
};
pub use router::{router_objects, router_toml, ROUTER_PORT};

/// Field manager of the reconciler's server-side applies.
pub const FIELD_MANAGER: &str = "pg-router-operator";

/// `app.kubernetes.io/name` of every object.
pub const APP: &str = "pg-router";

/// One object to apply, serialized with its `apiVersion` and `kind`.
pub type Object = serde_json::Value;

/// Why a spec cannot be turned into objects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The object has no name or namespace (not yet stored by the API
    /// server).
    #[error("PostgresCluster has no {0}")]
    Missing(&'static str),
    /// A field is out of range or sets what the reconciler owns.
    #[error("spec.{field}: {message}")]
    Invalid {
        /// Dotted path under `spec`.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// An object did not serialize (not expected).
    #[error("serializing {0}: {1}")]
    Serialize(&'static str, String),
}

/// Every object of `pc` in apply order: per shard and the catalog a
/// ConfigMap, headless and client Services, StatefulSet and
/// PodDisruptionBudget; then the router's ConfigMap, Service, Deployment,
/// HorizontalPodAutoscaler, PodDisruptionBudget and (optionally)
/// ServiceMonitor.
///
/// Errors: [`SpecError`] for a stored object without name/namespace or an
/// invalid spec (e.g. `minReplicas > maxReplicas`, a reserved PostgreSQL
/// parameter).
pub fn cluster_objects(pc: &PostgresCluster) -> Result<Vec<Object>, SpecError> {
    let ctx = Ctx::new(pc)?;
    let mut out = postgres_objects(&ctx, pc)?;
    out.extend(router_objects(&ctx, pc)?);
    Ok(out)
}

/// What every object of one cluster shares.
pub struct Ctx {
    /// Cluster (PostgresCluster) name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Controller owner reference to the PostgresCluster.
    pub owner: OwnerReference,
}

impl Ctx {
    /// The context of `pc`.
    ///
    /// Errors: [`SpecError::Missing`] without name, namespace or uid.
    pub fn new(pc: &PostgresCluster) -> Result<Ctx, SpecError> {
        let namespace = pc.namespace().ok_or(SpecError::Missing("namespace"))?;
        let owner = pc
            .controller_owner_ref(&())
            .ok_or(SpecError::Missing("name or uid"))?;
        Ok(Ctx {
            name: pc.name_any(),
            namespace,
            owner,
        })
    }

    /// Labels of component `component` (`shard`, `catalog`, `router`).
    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".into(), APP.into()),
            ("app.kubernetes.io/instance".into(), self.name.clone()),
            ("app.kubernetes.io/component".into(), component.into()),
            ("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into()),
        ])
    }

    /// Metadata of object `name` with `labels`, owned by the cluster.
    pub fn meta(&self, name: &str, labels: &BTreeMap<String, String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// A selector matching exactly `labels`.
pub fn selector(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels.clone()),
        ..LabelSelector::default()
    }
}

/// `o` as JSON (with `apiVersion` and `kind`).
pub fn to_object<T: serde::Serialize>(what: &'static str, o: &T) -> Result<Object, SpecError> {
    serde_json::to_value(o).map_err(|e| SpecError::Serialize(what, e.to_string()))
}

/// FNV-1a 64 of `text`, hex: a pod template annotation that changes with a
/// ConfigMap's content, so its pods roll when it changes.
pub fn checksum(text: &str) -> String {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    h.write(text.as_bytes());
    format!("{:016x}", h.finish())
}

#[cfg(test)]
pub(crate) mod tests;
