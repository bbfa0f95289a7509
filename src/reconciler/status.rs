//! A PostgresCluster's status as a pure function of what the applies
//! returned ([`Observed`]) and the previous status: phase, per-shard
//! readiness, router replicas and the `Ready`/`Progressing`/`Degraded`
//! conditions, whose `lastTransitionTime` only changes when their status
//! does (so a steady cluster's status patch is a no-op).

use std::collections::BTreeMap;

use super::crd::{Condition, PostgresClusterStatus, ShardStatus};

/// What one reconcile saw of the cluster's workloads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Per shard: (catalog name, ready replicas, desired replicas).
    pub shards: Vec<(String, u32, u32)>,
    /// The catalog's ready replicas (of 1).
    pub catalog_ready: u32,
    /// Ready router pods.
    pub router_ready: u32,
    /// Why the spec could not be applied (reason, message), if it could not.
    pub invalid: Option<(String, String)>,
    /// The catalog sync ([`super::catalog_sync`]): None until the catalog
    /// instance is ready, then the keyspaces' generations or the error.
    pub catalog: Option<Result<BTreeMap<String, i64>, String>>,
}

/// The new status: `Ready` when every shard instance, the catalog (synced)
/// and at least one router are ready; `Degraded` when the spec is invalid;
/// `Provisioning` otherwise. `now` is an RFC 3339 time, `generation` the
/// object's `metadata.generation`.
pub fn cluster_status(
    prev: Option<&PostgresClusterStatus>,
    observed: &Observed,
    generation: Option<i64>,
    now: &str,
) -> PostgresClusterStatus {
    let prev_conditions = prev.map(|p| p.conditions.as_slice()).unwrap_or_default();
    let shards: Vec<ShardStatus> = observed
        .shards
        .iter()
        .map(|(name, ready, want)| ShardStatus {
            name: name.clone(),
            ready_replicas: *ready,
            ready: ready >= want,
        })
        .collect();
    let synced = matches!(observed.catalog, Some(Ok(_)));
    let all_ready = shards.iter().all(|s| s.ready)
        && observed.catalog_ready >= 1
        && synced
        && observed.router_ready >= 1;
    let (phase, ready, progressing, degraded) = match &observed.invalid {
        Some((reason, message)) => (
            "Degraded",
            (false, reason.as_str(), message.clone()),
            (false, reason.as_str(), String::new()),
            (true, reason.as_str(), message.clone()),
        ),
        None if all_ready => (
            "Ready",
            (
                true,
                "AllReady",
                "every shard, the catalog and the routers are ready".to_string(),
            ),
            (false, "Reconciled", String::new()),
            (false, "AsExpected", String::new()),
        ),
        None => {
            let waiting: Vec<&str> = shards
                .iter()
                .filter(|s| !s.ready)
                .map(|s| s.name.as_str())
                .chain((observed.catalog_ready == 0).then_some("catalog"))
                .chain((observed.router_ready == 0).then_some("router"))
                .collect();
            let mut msg = format!("waiting for {}", waiting.join(", "));
            if let Some(Err(e)) = &observed.catalog {
                msg = if waiting.is_empty() {
                    format!("catalog: {e}")
                } else {
                    format!("{msg}; catalog: {e}")
                };
            }
            (
                "Provisioning",
                (false, "NotReady", msg.clone()),
                (true, "Provisioning", msg),
                (false, "AsExpected", String::new()),
            )
        }
    };
    let cond = |type_: &str, (on, reason, message): (bool, &str, String)| {
        condition(prev_conditions, type_, on, reason, message, generation, now)
    };
    PostgresClusterStatus {
        phase: Some(phase.into()),
        observed_generation: generation,
        conditions: vec![
            cond("Ready", ready),
            cond("Progressing", progressing),
            cond("Degraded", degraded),
        ],
        shards,
        catalog_generations: match &observed.catalog {
            Some(Ok(g)) => g.clone(),
            _ => prev
                .map(|p| p.catalog_generations.clone())
                .unwrap_or_default(),
        },
        router_replicas: Some(observed.router_ready),
    }
}

/// Condition `type_`, keeping the previous transition time if its status
/// is unchanged.
pub fn condition(
    prev: &[Condition],
    type_: &str,
    on: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &str,
) -> Condition {
    let status = if on { "True" } else { "False" };
    let since = prev
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.to_string());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: since,
        observed_generation: generation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_and_transition_times() {
        let mut o = Observed {
            shards: vec![("shard0".into(), 1, 2), ("shard1".into(), 2, 2)],
            catalog_ready: 1,
            router_ready: 0,
            invalid: None,
            catalog: Some(Ok(BTreeMap::from([("main".to_string(), 2)]))),
        };
        let s1 = cluster_status(None, &o, Some(3), "t1");
        assert_eq!(s1.phase.as_deref(), Some("Provisioning"));
        assert_eq!(s1.conditions[1].message, "waiting for shard0, router");
        assert!(s1.shards[1].ready);
        o.shards[0].1 = 2;
        o.router_ready = 2;
        let s2 = cluster_status(Some(&s1), &o, Some(3), "t2");
        assert_eq!(s2.phase.as_deref(), Some("Ready"));
        assert_eq!(s2.conditions[0].last_transition_time, "t2", "Ready flipped");
        assert_eq!(
            s2.conditions[2].last_transition_time, "t1",
            "Degraded unchanged"
        );
        assert_eq!(s2.catalog_generations["main"], 2);
        let s3 = cluster_status(Some(&s2), &o, Some(3), "t3");
        assert_eq!(s3, s2, "a steady cluster's status does not change");
        // A catalog that cannot be synced holds the cluster back; its last
        // generations stay.
        let mut down = o.clone();
        down.catalog = Some(Err("connecting to the catalog: refused".into()));
        let s = cluster_status(Some(&s3), &down, Some(3), "t5");
        assert_eq!(s.phase.as_deref(), Some("Provisioning"));
        assert_eq!(
            s.conditions[1].message,
            "catalog: connecting to the catalog: refused"
        );
        assert_eq!(s.catalog_generations["main"], 2);
        o.invalid = Some((
            "InvalidSpec".into(),
            "spec.router.minReplicas: 7 > 6".into(),
        ));
        let s4 = cluster_status(Some(&s3), &o, Some(4), "t4");
        assert_eq!(s4.phase.as_deref(), Some("Degraded"));
        assert_eq!(s4.conditions[2].status, "True");
        assert_eq!(s4.conditions[2].message, "spec.router.minReplicas: 7 > 6");
        assert_eq!(s4.observed_generation, Some(4));
    }
}
