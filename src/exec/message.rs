//! Extended-protocol messages as the executors see them: where a bound
//! portal runs ([`Route`], including routes resolved through a lookup
//! table at Bind and writes to tables owning lookup vindexes), and one
//! decoded, routed message of a batch ([`Item`]).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::plan::{GatherPlan, Merge, TxnStmt};
use crate::protocol::PgError;

use super::concat::MergeMode;
pub use super::route::ShardList;
use super::statement::ClientStmt;

/// A shard name in a [`Route`]: names up to 23 bytes (all usual ones) are
/// stored inline, so routing a Bind and keeping its route with the portal
/// allocate nothing.
pub type ShardName = smol_str::SmolStr;

/// Where one message of a batch goes.
#[derive(Debug, Clone)]
pub enum Route {
    /// One shard.
    Shard(ShardName),
    /// Several shards, merged.
    Multi(ShardList, MergeMode),
    /// Answered by the router (transaction control).
    Txn(TxnStmt, String),
    /// SET / RESET / DISCARD, run by the router at Execute (recorded for
    /// replay, or kept with the transaction block).
    Set {
        /// The statement.
        sql: String,
        /// SET LOCAL / TRANSACTION / CONSTRAINTS.
        local: bool,
        /// RESET ALL / DISCARD ALL.
        reset_all: bool,
    },
    /// COPY run by the router's COPY path at Execute.
    Copy(crate::plan::CopyPlan, String),
    /// `COPY (query) TO STDOUT` over several shards, run at Execute.
    CopyQuery(Arc<crate::plan::CopyQuery>, String),
    /// A merged multi-shard SELECT: bound and run by the gather executor
    /// at Execute (`bind` is the client's Bind frame).
    Gather {
        /// Shards of the keyspace.
        shards: ShardList,
        /// The merge.
        plan: Arc<GatherPlan>,
        /// The client's statement.
        stmt: Arc<ClientStmt>,
        /// The client's Bind frame.
        bind: Bytes,
    },
    /// Routed through a lookup table when the Bind runs.
    Lookup(Arc<PendingRoute>),
    /// A write to a table owning lookup vindexes: lookup maintenance and
    /// the write run at Execute.
    Owned(Arc<OwnedRoute>),
    /// A multi-row INSERT whose rows belong to several shards: each shard's
    /// part runs at Execute.
    SplitInsert(Arc<super::split_insert::SplitInsert>),
    /// `INSERT ... SELECT` whose rows the router routes
    /// ([`crate::plan::Plan::InsertSelect`]): run at Execute with the
    /// Bind's values written into the text (`session/insert_select_ext.rs`).
    InsertSelect(Arc<PendingInsertSelect>),
    /// An INSERT whose sharding key the router generates: the values are
    /// drawn and the rows routed when the Bind runs.
    Generated(Arc<PendingGenerated>),
    /// `SELECT currval/nextval/lastval(...)` of a generated key's
    /// sequence: answered by the router or sent to a shard, decided when
    /// the Bind runs.
    Sequence(Arc<PendingSequence>),
    /// The router's own one-row answer (a sequence function's value).
    Answered(Arc<Answered>),
    /// A merged result suspended by an Execute row limit: its remaining
    /// rows were not kept, so a further Execute is refused.
    Exhausted,
}

/// The route of a scatter on `shards` with `merge` (the client's Bind
/// frame `bind` is kept for a gather).
pub fn scatter_route(
    shards: ShardList,
    merge: &Merge,
    stmt: &Arc<ClientStmt>,
    bind: &Bytes,
) -> Route {
    match merge {
        Merge::Gather(plan) => Route::Gather {
            shards,
            plan: plan.clone(),
            stmt: stmt.clone(),
            bind: bind.clone(),
        },
        _ => Route::Multi(shards, MergeMode::Concat),
    }
}

/// The route of a Bind that needs the lookup table (a statement whose
/// plan, or whose owner write's plan, is a scatter with a lookup key):
/// resolved to the owning shards when the Bind runs, in batch order.
#[derive(Debug)]
pub struct PendingRoute {
    /// The client's statement.
    pub stmt: Arc<ClientStmt>,
    /// The client's Bind frame (tag and length included).
    pub bind: Bytes,
    /// The route, set when the Bind ran; later messages on the portal use it.
    pub resolved: OnceLock<Route>,
}

/// The route of a Bind of an INSERT that omits its generated sharding key
/// ([`crate::plan::Plan::GenerateKey`]): resolved to a split INSERT of the
/// statement with the drawn values written in when the Bind runs.
#[derive(Debug)]
pub struct PendingGenerated {
    /// The client's statement.
    pub stmt: Arc<ClientStmt>,
    /// What to generate.
    pub plan: Arc<crate::plan::GeneratedInsert>,
    /// The client's Bind frame (tag and length included).
    pub bind: Bytes,
    /// The route, set when the Bind ran.
    pub resolved: OnceLock<Route>,
}

/// A bound `INSERT ... SELECT` routed by the router, run at Execute.
#[derive(Debug)]
pub struct PendingInsertSelect {
    /// The client's statement.
    pub stmt: Arc<ClientStmt>,
    /// The client's Bind frame (tag and length included).
    pub bind: Bytes,
    /// The client's result formats (RETURNING).
    pub result_formats: Vec<i16>,
}

/// The route of a Bind of a sequence function call
/// ([`crate::plan::Plan::SequenceFn`]).
#[derive(Debug)]
pub struct PendingSequence {
    /// The call.
    pub call: Arc<crate::plan::SequenceCall>,
    /// The client's result format for the value (0 text, 1 binary).
    pub format: i16,
    /// The route, set when the Bind ran.
    pub resolved: OnceLock<Route>,
}

/// A value the router answers a portal with.
#[derive(Debug)]
pub struct Answered {
    /// The call answered.
    pub call: Arc<crate::plan::SequenceCall>,
    /// The value.
    pub value: i64,
    /// The client's result format (0 text, 1 binary).
    pub format: i16,
}

/// A bound write to a table owning lookup vindexes: the Bind went to
/// `shards`; Execute runs the lookup maintenance and the write.
#[derive(Debug)]
pub struct OwnedRoute {
    /// Shards the statement runs on.
    pub shards: Vec<String>,
    /// The client's statement (its plan is [`crate::plan::Plan::Owned`]).
    pub stmt: Arc<ClientStmt>,
    /// The client's Bind frame (tag and length included).
    pub bind: Bytes,
}

/// The route a portal message uses: a pending route's resolution (None
/// if its Bind did not run).
pub fn effective(route: Option<&Route>) -> Option<Route> {
    match route {
        Some(Route::Lookup(p)) => p.resolved.get().cloned(),
        Some(Route::Generated(p)) => p.resolved.get().cloned(),
        Some(Route::Sequence(p)) => p.resolved.get().cloned(),
        other => other.cloned(),
    }
}

/// One message of an extended-protocol batch, decoded and routed. Frames
/// are whole messages (tag and length included), statement names already
/// renamed to the backend name; `route` is the portal's route (None: the
/// portal does not exist or its Bind failed).
pub enum Item {
    /// Parse of a registered statement.
    Parse(Arc<ClientStmt>),
    /// Bind of `stmt` to a portal routed by `route`.
    Bind {
        /// The statement bound.
        stmt: Arc<ClientStmt>,
        /// The Bind frame, renamed.
        frame: Bytes,
        /// Where the portal runs.
        route: Route,
    },
    /// Describe of a prepared statement.
    DescribeStmt {
        /// The statement.
        stmt: Arc<ClientStmt>,
        /// The Describe frame, renamed.
        frame: Bytes,
    },
    /// Describe of a portal.
    DescribePortal {
        /// The client's frame.
        frame: Bytes,
        /// The portal's route.
        route: Option<Route>,
    },
    /// Execute of a portal.
    Execute {
        /// The client's frame.
        frame: Bytes,
        /// The portal's route.
        route: Option<Route>,
    },
    /// Close of a portal.
    ClosePortal {
        /// The client's frame.
        frame: Bytes,
        /// The portal's route.
        route: Option<Route>,
    },
    /// Close of a prepared statement (answered by the router: shards keep
    /// their `pgr_` statements).
    CloseStmt,
    /// Sync.
    Sync,
    /// Flush.
    Flush,
    /// A message the router refused (sent as an error in batch order).
    Fail(PgError),
    /// A message that failed before the batch ran, its ErrorResponse frame
    /// already made (and counted): a subquery's own error.
    FailFrame(Bytes),
}

impl Item {
    /// The route the message runs on, if it is a portal message.
    pub fn route(&self) -> Option<&Route> {
        match self {
            Item::Bind { route, .. } => Some(route),
            Item::DescribePortal { route, .. }
            | Item::Execute { route, .. }
            | Item::ClosePortal { route, .. } => route.as_ref(),
            _ => None,
        }
    }
}
