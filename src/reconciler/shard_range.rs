//! The ShardRange reconcile: a keyspace's key range → shard layout applied
//! to its cluster's catalog ([`CatalogAccess::apply_ranges`]: the same
//! catalog operation family as `pg-router meta`; routers reload on the
//! catalog's NOTIFY), and the result reported in status. A layout that
//! gives a populated key range to another shard is refused (condition
//! `Applied=False`, reason `Refused`) and never applied: moving rows is a
//! ShardSplitJob's work. A layout applied once is not re-applied after a
//! split job has changed the catalog's ranges (reason `Superseded`, which
//! would undo the split) until the spec changes. Deleting a ShardRange
//! leaves the catalog as it is.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::api::{cluster_access, patch_status, publish};
use super::catalog_sync::{RangesError, RangesRequest};
use super::cluster::{Context, ReconcileError};
use super::crd::{RangeAssignment, ShardRange, ShardRangeSpec, ShardRangeStatus};
use super::status::condition;
use crate::topology::KeyRange;
use crate::vindex::VindexKind;

/// What one reconcile of a ShardRange came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeResult {
    /// The catalog has the layout at `generation`; `written` if this
    /// reconcile wrote it.
    Applied {
        /// The keyspace's active generation.
        generation: i64,
        /// Written now (else it already was the layout).
        written: bool,
    },
    /// Not applied: a populated range would be reassigned.
    Refused(String),
    /// Not applied yet: a split job is active or the ranges moved meanwhile.
    Busy(String),
    /// Not re-applied: a split job changed the ranges after this layout
    /// was applied.
    Superseded(String),
    /// Not applied: the catalog or a shard could not be reached or refused.
    Failed(String),
    /// The spec cannot be read (bad hex, unknown vindex).
    Invalid(String),
    /// The PostgresCluster, or its password, is not there (yet).
    Waiting(String),
}

/// A `0x` hex keyspace id (1–16 digits), as the CRDs spell them.
///
/// Errors: a message naming `field`.
pub fn keyspace_id(field: &str, s: &str) -> Result<u64, String> {
    s.strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .filter(|h| !h.is_empty() && h.len() <= 16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or_else(|| format!("{field}: '{s}' is not a 0x hex keyspace id of at most 16 digits"))
}

/// One range of the spec as a [`KeyRange`].
///
/// Errors: a message naming the field.
pub fn key_range(field: &str, r: &RangeAssignment) -> Result<KeyRange, String> {
    let start = keyspace_id(&format!("{field}.start"), &r.start)?;
    let end = r
        .end
        .as_deref()
        .map(|e| keyspace_id(&format!("{field}.end"), e))
        .transpose()?;
    Ok(KeyRange { start, end })
}

/// The catalog request of a spec. Gaps and overlaps are the catalog
/// operation's check.
///
/// Errors: a message naming the field (unknown vindex, bad hex, no ranges).
pub fn layout_of(spec: &ShardRangeSpec) -> Result<RangesRequest, String> {
    let vindex: VindexKind = spec
        .vindex
        .parse()
        .map_err(|_| format!("spec.vindex: unknown vindex '{}'", spec.vindex))?;
    if spec.ranges.is_empty() {
        return Err("spec.ranges: no ranges".into());
    }
    let layout = spec
        .ranges
        .iter()
        .enumerate()
        .map(|(i, r)| Ok((key_range(&format!("spec.ranges[{i}]"), r)?, r.shard.clone())))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(RangesRequest {
        keyspace: spec.keyspace.clone(),
        vindex,
        layout,
        applied_at: None,
    })
}

/// The new status: condition `Applied` (True with reason `Written` or
/// `InSync`; False with `Refused`, `Busy`, `Superseded`, `CatalogError`,
/// `InvalidSpec` or `Waiting`); `catalogGeneration` from the last apply that succeeded.
/// Pure; `now` is RFC 3339.
pub fn shard_range_status(
    prev: Option<&ShardRangeStatus>,
    result: &RangeResult,
    generation: Option<i64>,
    now: &str,
) -> ShardRangeStatus {
    let prev_conditions = prev.map(|p| p.conditions.as_slice()).unwrap_or_default();
    let (on, reason, message) = match result {
        RangeResult::Applied {
            generation: g,
            written: true,
        } => (
            true,
            "Written",
            format!("the catalog's layout, generation {g}"),
        ),
        RangeResult::Applied { generation: g, .. } => (
            true,
            "InSync",
            format!("the catalog's layout, generation {g}"),
        ),
        RangeResult::Refused(m) => (false, "Refused", m.clone()),
        RangeResult::Busy(m) => (false, "Busy", m.clone()),
        RangeResult::Superseded(m) => (false, "Superseded", m.clone()),
        RangeResult::Failed(m) => (false, "CatalogError", m.clone()),
        RangeResult::Invalid(m) => (false, "InvalidSpec", m.clone()),
        RangeResult::Waiting(m) => (false, "Waiting", m.clone()),
    };
    ShardRangeStatus {
        catalog_generation: match result {
            RangeResult::Applied { generation, .. } => Some(*generation),
            _ => prev.and_then(|p| p.catalog_generation),
        },
        observed_generation: generation,
        conditions: vec![condition(
            prev_conditions,
            "Applied",
            on,
            reason,
            message,
            generation,
            now,
        )],
    }
}

/// Reconciles one ShardRange: finds its cluster's catalog and password,
/// applies the layout, patches the status when it changed and publishes
/// an Event when the layout was written or the reason it was not changed.
///
/// Errors: [`ReconcileError`] for a failed API request (retried).
pub async fn reconcile(sr: Arc<ShardRange>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let ns = sr.namespace().unwrap_or_default();
    let result = match layout_of(&sr.spec) {
        Err(m) => RangeResult::Invalid(m),
        Ok(mut req) => {
            // This spec was applied before: the catalog generation then.
            req.applied_at = sr
                .status
                .as_ref()
                .filter(|s| s.observed_generation == sr.metadata.generation)
                .filter(|s| {
                    s.conditions.iter().any(|c| {
                        c.type_ == "Applied" && (c.status == "True" || c.reason == "Superseded")
                    })
                })
                .and_then(|s| s.catalog_generation);
            apply(&sr, &ctx, &ns, req).await?
        }
    };
    let status = shard_range_status(
        sr.status.as_ref(),
        &result,
        sr.metadata.generation,
        &(ctx.now)(),
    );
    if sr.status.as_ref() != Some(&status) {
        patch_status(&ctx.client, &*sr, &status).await?;
    }
    let reason_before = sr
        .status
        .as_ref()
        .and_then(|s| s.conditions.first())
        .map(|c| c.reason.clone());
    let now = &status.conditions[0];
    if matches!(result, RangeResult::Applied { written: true, .. })
        || (now.status == "False" && reason_before.as_deref() != Some(now.reason.as_str()))
    {
        let warning = now.status != "True" && now.reason != "Superseded";
        let note = Some(now.message.clone());
        publish(
            &ctx.recorder,
            &*sr,
            warning,
            &now.reason,
            note,
            "ApplyRanges",
        )
        .await;
    }
    Ok(match result {
        RangeResult::Applied { .. } | RangeResult::Superseded(_) => {
            Action::requeue(Duration::from_secs(300))
        }
        RangeResult::Invalid(_) => Action::await_change(),
        RangeResult::Refused(_) => Action::requeue(Duration::from_secs(120)),
        RangeResult::Busy(_) | RangeResult::Waiting(_) => Action::requeue(Duration::from_secs(30)),
        RangeResult::Failed(_) => Action::requeue(Duration::from_secs(15)),
    })
}

/// Applies `req` to the catalog of the ShardRange's cluster.
async fn apply(
    sr: &ShardRange,
    ctx: &Context,
    ns: &str,
    req: RangesRequest,
) -> Result<RangeResult, ReconcileError> {
    let access = match cluster_access(&ctx.client, ns, &sr.spec.cluster).await? {
        Ok(a) => a,
        Err(m) => return Ok(RangeResult::Waiting(m)),
    };
    Ok(
        match ctx
            .catalog
            .apply_ranges(access.catalog_dsn, access.password, req)
            .await
        {
            Ok((generation, written)) => RangeResult::Applied {
                generation,
                written,
            },
            Err(RangesError::Refused(m)) => RangeResult::Refused(m),
            Err(RangesError::Busy(m)) => RangeResult::Busy(m),
            Err(RangesError::Superseded(m)) => RangeResult::Superseded(m),
            Err(RangesError::Failed(m)) => RangeResult::Failed(m),
        },
    )
}

/// Backoff after a failed ShardRange reconcile.
pub fn error_policy(_sr: Arc<ShardRange>, e: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %e, "ShardRange reconcile failed");
    Action::requeue(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ranges: &[(&str, Option<&str>, &str)]) -> ShardRangeSpec {
        ShardRangeSpec {
            cluster: "shop".into(),
            keyspace: "main".into(),
            vindex: "hash_murmur3".into(),
            ranges: ranges
                .iter()
                .map(|(s, e, sh)| RangeAssignment {
                    start: s.to_string(),
                    end: e.map(str::to_string),
                    shard: sh.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn layouts_from_specs() {
        let s = spec(&[
            ("0x0", Some("0x8000000000000000"), "shard0"),
            ("0x8000000000000000", None, "shard1"),
        ]);
        let req = layout_of(&s).expect("layout");
        assert_eq!(req.vindex, VindexKind::HashMurmur3);
        assert_eq!(
            req.layout[1],
            (
                KeyRange {
                    start: 1 << 63,
                    end: None
                },
                "shard1".to_string()
            )
        );
        let e = layout_of(&spec(&[("8000", None, "shard0")])).expect_err("no 0x");
        assert!(e.starts_with("spec.ranges[0].start"), "{e}");
        let e = layout_of(&spec(&[("0x0", Some("0x1ffffffffffffffff"), "s")])).expect_err("17");
        assert!(e.starts_with("spec.ranges[0].end"), "{e}");
        let mut bad = s.clone();
        bad.vindex = "md5".into();
        assert!(layout_of(&bad).expect_err("vindex").contains("md5"));
        assert!(layout_of(&spec(&[])).is_err());
    }

    #[test]
    fn status_keeps_the_last_generation_and_transition_times() {
        let applied = RangeResult::Applied {
            generation: 3,
            written: true,
        };
        let s1 = shard_range_status(None, &applied, Some(1), "t1");
        assert_eq!(s1.catalog_generation, Some(3));
        assert_eq!(
            (
                s1.conditions[0].status.as_str(),
                s1.conditions[0].reason.as_str()
            ),
            ("True", "Written")
        );
        let in_sync = RangeResult::Applied {
            generation: 3,
            written: false,
        };
        let s2 = shard_range_status(Some(&s1), &in_sync, Some(1), "t2");
        assert_eq!(s2.conditions[0].reason, "InSync");
        assert_eq!(s2.conditions[0].last_transition_time, "t1");
        let s3 = shard_range_status(Some(&s2), &in_sync, Some(1), "t3");
        assert_eq!(s3, s2, "steady");
        let refused = RangeResult::Refused("key range ... has rows".into());
        let s4 = shard_range_status(Some(&s3), &refused, Some(2), "t4");
        assert_eq!(s4.catalog_generation, Some(3), "the catalog kept it");
        assert_eq!(
            (
                s4.conditions[0].status.as_str(),
                s4.conditions[0].reason.as_str(),
                s4.conditions[0].last_transition_time.as_str()
            ),
            ("False", "Refused", "t4")
        );
        assert_eq!(s4.observed_generation, Some(2));
    }
}
