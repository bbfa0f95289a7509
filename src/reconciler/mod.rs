//! The Kubernetes reconciler (cargo feature `operator`; `docs/kubernetes.md`):
//! the custom resources ([`crd`]), their CRD manifests ([`crds`]) and the
//! objects a [`crd::PostgresCluster`] stands for, as pure functions of its
//! spec ([`desired`]), and the PostgresCluster reconcile that applies them
//! and reports status ([`cluster`], [`status`]).

pub mod catalog_sync;
pub mod cluster;
pub mod crd;
pub mod crds;
pub mod desired;
pub mod metrics;
pub mod run;
pub mod shard_range;
pub mod status;

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod shard_range_tests;
