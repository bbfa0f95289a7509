//! A client's prepared statement as the shards know it: the plan, and the
//! Parse frame under the router-wide backend name `pgr_<id>` that is sent to
//! any backend connection lacking it.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::plan::{GatherPlan, Merge, Plan};

/// `pgr_<id as 16 lower-case hex digits>`: the backend name of the
/// router's statement `id`, built on the stack.
#[derive(Debug, Clone, Copy)]
pub struct BackendName([u8; 20]);

impl BackendName {
    /// The name of statement `id`.
    pub fn new(id: u64) -> BackendName {
        let mut b = *b"pgr_0000000000000000";
        for (i, c) in b[4..].iter_mut().enumerate() {
            let nibble = ((id >> (60 - 4 * i)) & 0xf) as u8;
            *c = if nibble < 10 {
                b'0' + nibble
            } else {
                b'a' + nibble - 10
            };
        }
        BackendName(b)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        // ASCII by construction.
        std::str::from_utf8(&self.0).unwrap_or("pgr_")
    }
}

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

#[cfg(test)]
mod tests {
    use super::BackendName;

    #[test]
    fn backend_names_are_hex() {
        assert_eq!(
            BackendName::new(0x0123_4567_89ab_cdef).as_str(),
            "pgr_0123456789abcdef"
        );
        assert_eq!(BackendName::new(u64::MAX).as_str(), "pgr_ffffffffffffffff");
        assert_eq!(BackendName::new(5).as_str(), format!("pgr_{:016x}", 5));
    }
}
