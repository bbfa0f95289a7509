//! The Kubernetes reconciler (cargo feature `operator`; `docs/kubernetes.md`):
//! the custom resources ([`crd`]), their CRD manifests ([`crds`]) and the
//! objects a [`crd::PostgresCluster`] stands for, as pure functions of its
//! spec ([`desired`]); the PostgresCluster reconcile that applies them and
//! reports status ([`cluster`], [`status`], [`catalog_sync`]); the
//! ShardRange reconcile ([`shard_range`]); the ShardSplitJob reconcile
//! ([`split_job`]) over the split library ([`split_access`]); the
//! controllers ([`run`]) and their metrics ([`metrics`]).

mod api;
pub mod catalog_sync;
pub mod cluster;
pub mod crd;
pub mod crds;
pub mod desired;
pub mod leader;
pub mod metrics;
pub mod run;
pub mod shard_range;
pub mod split_access;
pub mod split_job;
pub mod status;

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod shard_range_tests;
#[cfg(test)]
mod split_job_tests;
