//! A client's prepared statement as the shards know it: the plan, and the
//! Parse frame under the router-wide backend name `pgr_<id>` that is sent to
//! any backend connection lacking it.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::plan::{GatherPlan, Merge, Plan};

/// A client's prepared statement.
#[derive(Debug)]
pub struct ClientStmt {
    /// Hash of query text and parameter types; the backend name is `pgr_<id>`.
    pub id: u64,
    /// Query text.
    pub query: String,
    /// Parameter type OIDs from Parse.
    pub param_types: Vec<u32>,
    /// Routing plan.
    pub plan: Arc<Plan>,
    /// Routing version the plan was made with.
    pub version: u64,
    /// [`crate::state::Routing::schema_epoch`] the plan was made with.
    pub schema_epoch: u64,
    /// Encoded Parse message with the backend name, injected on demand.
    pub parse_frame: Bytes,
    /// Backend statement name.
    pub backend_name: String,
    /// Parameter types the shards inferred (ParameterDescription), fetched
    /// when a write to an owner table needs them for its pre-select.
    pub shard_param_types: OnceLock<Vec<u32>>,
}

impl ClientStmt {
    /// True if the statement was planned with `routing` as it is now (the
    /// same catalog snapshot and table columns).
    pub fn current(&self, routing: &crate::state::Routing) -> bool {
        self.version == routing.version && self.schema_epoch == routing.schema_epoch()
    }

    /// The gather plan of the statement, if it is a merged multi-shard
    /// SELECT.
    pub fn gather(&self) -> Option<Arc<GatherPlan>> {
        match &*self.plan {
            Plan::Scatter {
                merge: Merge::Gather(g),
                ..
            } => Some(g.clone()),
            _ => None,
        }
    }
}
