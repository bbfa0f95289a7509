//! [`JobEnv`]: what every step of a job works with.

use tokio_postgres::Client;

use crate::catalog::{Catalog, ShardInfo};

use super::shards::ShardAccess;

/// The connections and catalog snapshot a job's steps use: the catalog
/// database, the catalog as loaded when the step started, how shards are
/// reached, and SQL connections to the job's source and target shards.
#[derive(Clone, Copy)]
pub struct JobEnv<'a> {
    /// Connection to the catalog database (job rows, decision log).
    pub cat: &'a Client,
    /// The catalog snapshot (keyspace tables, routing, reference tables).
    pub catalog: &'a Catalog,
    /// Credentials for shard connections, `pg_dump` and `psql`.
    pub access: &'a ShardAccess,
    /// The source shard's catalog row.
    pub source_info: &'a ShardInfo,
    /// The target shard's catalog row.
    pub target_info: &'a ShardInfo,
    /// SQL connection to the source.
    pub source: &'a Client,
    /// SQL connection to the target.
    pub target: &'a Client,
}
