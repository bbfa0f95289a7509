//! Leader election of the reconciler's replicas: only the holder of the
//! Lease `pg-router-operator` (coordination.k8s.io/v1, renewed by
//! `kube-lease-manager`) reconciles. A replica that loses the Lease stops
//! (its process exits with an error, so Kubernetes restarts it as a
//! candidate), as client-go's leader election does. Split jobs are also
//! fenced in the catalog (`split::run::claim`), so a deposed leader that
//! has not stopped yet cannot run a job beside the new one.

use std::future::Future;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

/// Name of the Lease.
pub const LEASE: &str = "pg-router-operator";

/// Seconds a Lease is held without renewal before another replica may take
/// it.
pub const LEASE_SECONDS: u64 = 15;

/// Runs `work` while `leader` says this replica leads: waits until it does,
/// then runs `work` until it ends (Ok) or leadership is lost (Err, `work`
/// dropped).
///
/// Errors: leadership lost, or the election stopped (its channel closed).
pub async fn while_leading<F>(mut leader: watch::Receiver<bool>, work: F) -> Result<(), String>
where
    F: Future<Output = ()>,
{
    while !*leader.borrow_and_update() {
        leader
            .changed()
            .await
            .map_err(|_| "leader election stopped before this replica led".to_string())?;
    }
    tracing::info!("leading: reconciling");
    tokio::pin!(work);
    loop {
        tokio::select! {
            () = &mut work => return Ok(()),
            changed = leader.changed() => {
                if changed.is_err() {
                    return Err("leader election stopped".into());
                }
                if !*leader.borrow_and_update() {
                    return Err("lost the leader Lease: stopping so a restart campaigns again".into());
                }
            }
        }
    }
}

/// Campaigns for the Lease [`LEASE`] in `namespace` as `identity` (the pod
/// name); the channel says whether this replica leads. The Lease is
/// released when the channel's receivers are all dropped.
///
/// Errors: the Lease cannot be read or created (message).
pub async fn campaign(
    client: Client,
    namespace: &str,
    identity: &str,
) -> Result<watch::Receiver<bool>, String> {
    let manager = LeaseManagerBuilder::new(client, LEASE)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(5)
        .with_field_manager(super::desired::FIELD_MANAGER)
        .build()
        .await
        .map_err(|e| format!("leader election Lease {namespace}/{LEASE}: {e}"))?;
    let (rx, _task) = manager.watch().await;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn works_only_while_leading() {
        let (tx, rx) = watch::channel(false);
        let started = Arc::new(AtomicBool::new(false));
        let s = started.clone();
        let run = tokio::spawn(while_leading(rx, async move {
            s.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!started.load(Ordering::SeqCst), "not before leading");
        tx.send(true).expect("send");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(started.load(Ordering::SeqCst), "runs once leading");
        tx.send(false).expect("send");
        let r = run.await.expect("join");
        assert!(r.expect_err("lost").contains("lost the leader Lease"));
        // Work that ends while leading ends the run cleanly; an election
        // that stops before leading is an error.
        let (tx, rx) = watch::channel(true);
        assert_eq!(while_leading(rx, async {}).await, Ok(()));
        drop(tx);
        let (tx, rx) = watch::channel(false);
        drop(tx);
        assert!(while_leading(rx, async {}).await.is_err());
    }
}
