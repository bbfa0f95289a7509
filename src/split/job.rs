//! A resharding job as the catalog's `pgrouter.split_jobs` row holds it
//! ([`Job`]) and its steps ([`Phase`]).

use super::spec::MoveSpec;

/// The last durable step of a job (`split_jobs.phase`). The order of the
/// variants is the order of the steps; [`Phase::Failed`] and
/// [`Phase::RolledBack`] end a job before the routing update,
/// [`Phase::Completed`] after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Planned and recorded; nothing done on any shard.
    Created,
    /// Step 1: publication and logical replication slot on the source, with
    /// the exported snapshot's consistent LSN recorded.
    Capture,
    /// Step 2: the target has the keyspace's schema and reference tables.
    Bootstrap,
    /// Step 3: the initial copy of the moving range.
    Copy,
    /// Step 4: CDC catch-up from the consistent LSN.
    CatchUp,
    /// Step 5: writes to the range are blocked on every router.
    Cutover,
    /// Step 6 committed: the new routing is installed (point of no return).
    Routed,
    /// Step 7: moved rows deleted from the source, slot and publication
    /// dropped.
    Cleanup,
    /// Done.
    Completed,
    /// Failed before the routing update and rolled back; `error` says why.
    Failed,
    /// Rolled back on request before the routing update.
    RolledBack,
}

impl Phase {
    /// Every phase, in step order.
    pub const ALL: [Phase; 11] = [
        Phase::Created,
        Phase::Capture,
        Phase::Bootstrap,
        Phase::Copy,
        Phase::CatchUp,
        Phase::Cutover,
        Phase::Routed,
        Phase::Cleanup,
        Phase::Completed,
        Phase::Failed,
        Phase::RolledBack,
    ];

    /// The catalog's spelling (`split_jobs.phase`).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Created => "created",
            Phase::Capture => "capture",
            Phase::Bootstrap => "bootstrap",
            Phase::Copy => "copy",
            Phase::CatchUp => "catchup",
            Phase::Cutover => "cutover",
            Phase::Routed => "routed",
            Phase::Cleanup => "cleanup",
            Phase::Completed => "completed",
            Phase::Failed => "failed",
            Phase::RolledBack => "rolled_back",
        }
    }

    /// Parses the catalog's spelling; None for anything else.
    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The job has ended (completed, failed or rolled back).
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Completed | Phase::Failed | Phase::RolledBack)
    }

    /// The routing update has committed: the job only goes forward.
    pub fn past_point_of_no_return(self) -> bool {
        matches!(self, Phase::Routed | Phase::Cleanup | Phase::Completed)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `split_jobs` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Job id (`split_jobs.id`).
    pub id: i64,
    /// What moves.
    pub spec: MoveSpec,
    /// Last durable step.
    pub phase: Phase,
    /// Logical replication slot on the source (set by step 1).
    pub slot_name: Option<String>,
    /// Publication on the source (set by step 1).
    pub publication: Option<String>,
    /// The slot's consistent point (`pg_lsn` text, e.g. `0/16B3748`): the
    /// exported snapshot's LSN, where CDC starts (set by step 1).
    pub snapshot_lsn: Option<String>,
    /// The last error, if a step failed.
    pub error: Option<String>,
    /// Sharded tables step 2 creates on the target (`progress.created`,
    /// recorded before they are created); rollback drops them.
    pub created_tables: Vec<String>,
    /// Reference tables step 2 creates and fills on the target
    /// (`progress.reference_created`, recorded before); rollback drops
    /// them.
    pub reference_created: Vec<String>,
}

impl Job {
    /// One line naming the job: `split job 3 (keyspace 'main', shard0 →
    /// shard2, [0x…, 0x…), phase copy)`.
    pub fn describe(&self) -> String {
        format!(
            "split job {} (keyspace '{}', {} → {}, {}, phase {})",
            self.id,
            self.spec.keyspace,
            self.spec.source,
            self.spec.target,
            self.spec.range,
            self.phase
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip_and_order() {
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
        assert_eq!(Phase::parse("copying"), None);
        assert!(Phase::Capture < Phase::Routed);
        assert!(Phase::Routed.past_point_of_no_return());
        assert!(!Phase::Cutover.past_point_of_no_return());
        assert!(Phase::Failed.is_terminal() && !Phase::Cleanup.is_terminal());
    }
}
