//! Online resharding (the ShardSplitJob): moving one key range of a
//! keyspace from a source shard to a target shard while clients keep
//! reading and writing through the routers. The job's seven steps:
//! 1 snapshot + WAL capture, 2 bootstrap the target, 3 initial copy, 4 CDC
//! catch-up, 5 cutover with a measured write-block window, 6 routing update
//! (the point of no return), 7 source cleanup; rollback until step 6.
//!
//! Modules by step: [`spec`] (what moves and the routing it installs),
//! [`job`] and [`store`] (the job's durable state in the catalog's
//! `pgrouter.split_jobs`), [`capture`] (1, with [`wal`], the replication
//! protocol behind a trait of ours), [`bootstrap`] (2), [`copy`] (3),
//! [`catchup`] and [`apply`] (4), [`verify`], [`cutover`] with [`passed`]
//! (5–6), [`cleanup`] (7), [`rollback`]; [`run`] drives a job, [`cli`] is
//! `pg-router split`; [`shards`] is how the job reaches shards. See
//! `docs/resharding.md` for the design and its status.

pub mod apply;
pub mod apply_sql;
mod apply_target;
pub mod bootstrap;
pub mod capture;
pub mod catchup;
pub mod change;
pub mod cleanup;
pub mod cli;
pub mod copy;
pub mod copy_format;
pub mod cutover;
pub mod env;
pub mod error;
pub mod filter;
pub mod job;
pub mod occupancy;
pub mod passed;
pub mod progress;
pub mod purge;
pub mod rollback;
pub mod run;
pub mod shards;
pub mod spec;
pub mod store;
pub mod terminal;
pub mod verify;
pub mod wal;

pub use env::JobEnv;
pub use error::SplitError;
pub use job::{Job, Phase};
pub use spec::{next_ranges, plan, MoveSpec, RangeChoice, SpecError};
