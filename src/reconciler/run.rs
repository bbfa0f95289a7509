//! `pg-router operator run`: the controllers (kube-runtime) that reconcile
//! PostgresClusters ([`super::cluster::reconcile`], also when the
//! StatefulSets and Deployments they own change), ShardRanges
//! ([`super::shard_range::reconcile`]) and ShardSplitJobs
//! ([`super::split_job::reconcile`], whose jobs run in this process), until
//! SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::runtime::events::Recorder;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client};

use super::catalog_sync::PgCatalog;
use super::cluster::{error_policy, now_rfc3339, reconcile, reporter, Context};
use super::crd::{PostgresCluster, ShardRange, ShardSplitJob};
use super::leader::{campaign, while_leading};
use super::metrics::{serve, ReconcileMetrics};
use super::shard_range;
use super::split_access::pg_split;
use super::split_job;
use tokio::net::TcpListener;

/// Runs the controllers with the in-cluster (or kubeconfig) credentials,
/// watching `namespace` or every namespace, and serves its metrics on
/// `metrics_listen` (`ip:port`, [`super::metrics`]). With
/// `leader_namespace`, reconciles only while it holds the leader Lease
/// there ([`super::leader`], identity `$HOSTNAME`).
///
/// Errors: no Kubernetes configuration found or usable, the metrics
/// address cannot be bound, the Lease cannot be used, or leadership was
/// lost (message).
pub async fn run(
    namespace: Option<String>,
    metrics_listen: &str,
    leader_namespace: Option<String>,
) -> Result<(), String> {
    let listener = TcpListener::bind(metrics_listen)
        .await
        .map_err(|e| format!("cannot listen on {metrics_listen} for metrics: {e}"))?;
    let client = Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes API access: {e}"))?;
    fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let metrics = Arc::new(ReconcileMetrics::default());
    let ctx = Arc::new(Context {
        metrics: metrics.clone(),
        client: client.clone(),
        now: now_rfc3339,
        catalog: Arc::new(PgCatalog),
        recorder: Recorder::new(client.clone(), reporter()),
        split: pg_split(),
    });
    let http = tokio::spawn(serve(listener, metrics.clone()));
    tracing::info!(namespace = ?namespace, metrics = metrics_listen, "pg-router operator: reconciling PostgresClusters, ShardRanges and ShardSplitJobs");
    let m = metrics.clone();
    let clusters = Controller::new(
        api::<PostgresCluster>(&client, &namespace),
        watcher::Config::default(),
    )
    .owns(
        api::<StatefulSet>(&client, &namespace),
        watcher::Config::default(),
    )
    .owns(
        api::<Deployment>(&client, &namespace),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(
        move |pc, ctx| {
            let m = m.clone();
            async move {
                let t = Instant::now();
                let r = reconcile(pc, ctx).await;
                m.observe("PostgresCluster", r.is_ok(), t.elapsed());
                r
            }
        },
        error_policy,
        ctx.clone(),
    )
    .for_each(|res| async move {
        match res {
            Ok((obj, _)) => tracing::debug!(cluster = %obj.name, "reconciled"),
            Err(e) => tracing::warn!(error = %e, "reconcile error"),
        }
    });
    let m = metrics.clone();
    let ranges = Controller::new(
        api::<ShardRange>(&client, &namespace),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(
        move |sr, ctx| {
            let m = m.clone();
            async move {
                let t = Instant::now();
                let r = shard_range::reconcile(sr, ctx).await;
                m.observe("ShardRange", r.is_ok(), t.elapsed());
                r
            }
        },
        shard_range::error_policy,
        ctx.clone(),
    )
    .for_each(|res| async move {
        match res {
            Ok((obj, _)) => tracing::debug!(shardrange = %obj.name, "reconciled"),
            Err(e) => tracing::warn!(error = %e, "ShardRange reconcile error"),
        }
    });
    let m = metrics.clone();
    let jobs = Controller::new(
        api::<ShardSplitJob>(&client, &namespace),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(
        move |sj, ctx| {
            let m = m.clone();
            async move {
                let t = Instant::now();
                let r = split_job::reconcile(sj, ctx).await;
                m.observe("ShardSplitJob", r.is_ok(), t.elapsed());
                r
            }
        },
        split_job::error_policy,
        ctx,
    )
    .for_each(|res| async move {
        match res {
            Ok((obj, _)) => tracing::debug!(splitjob = %obj.name, "reconciled"),
            Err(e) => tracing::warn!(error = %e, "ShardSplitJob reconcile error"),
        }
    });
    let all = async {
        futures_util::future::join3(clusters, ranges, jobs).await;
    };
    let result = match leader_namespace {
        Some(ns) => {
            let identity = std::env::var("HOSTNAME")
                .unwrap_or_else(|_| format!("pg-router-operator-{}", std::process::id()));
            tracing::info!(namespace = %ns, identity = %identity, "campaigning for the leader Lease");
            let leading = campaign(client.clone(), &ns, &identity).await?;
            while_leading(leading, all).await
        }
        None => {
            all.await;
            Ok(())
        }
    };
    http.abort();
    result
}
