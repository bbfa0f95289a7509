//! [`seed_default`]: the catalog of the embedded development cluster.

use tokio_postgres::Client;

use crate::vindex::{KeyType, VindexKind};

use super::error::CatalogError;
use super::migrate::migrate;
use super::model::ShardInfo;
use super::ops::{add_keyspace, add_shard, add_table};
use super::ranges::{add_ranges, RangeLayout};

/// Keyspace created by [`seed_default`].
pub const DEFAULT_KEYSPACE: &str = "main";

/// Tables declared by [`seed_default`]: (table, key column), all `int` keys.
pub const DEFAULT_TABLES: &[(&str, &str)] = &[
    ("pgbench_accounts", "aid"),
    ("pgbench_history", "aid"),
    ("pgbench_tellers", "tid"),
    ("pgbench_branches", "bid"),
];

/// Seeds the development catalog: migrates; declares keyspace `main`
/// (vindex `hash_murmur3`), `shards` (upserted), equal ranges over `shards`
/// in the order given (replacing `main`'s ranges at its current generation),
/// and the pgbench tables of [`DEFAULT_TABLES`]. Idempotent: running it again
/// with the same shards leaves the same catalog.
///
/// Errors: [`CatalogError::InvalidArgument`] for an empty `shards`; any error
/// of the operations it runs (e.g. [`CatalogError::VindexConflict`] if `main`
/// exists with another vindex).
pub async fn seed_default(client: &Client, shards: &[ShardInfo]) -> Result<(), CatalogError> {
    if shards.is_empty() {
        return Err(CatalogError::InvalidArgument(
            "seed_default needs at least one shard".into(),
        ));
    }
    migrate(client).await?;
    add_keyspace(client, DEFAULT_KEYSPACE, VindexKind::HashMurmur3).await?;
    for s in shards {
        add_shard(
            client,
            &s.name,
            &s.host,
            s.port,
            &s.dbname,
            s.user.as_deref(),
        )
        .await?;
    }
    let names: Vec<String> = shards.iter().map(|s| s.name.clone()).collect();
    add_ranges(client, DEFAULT_KEYSPACE, &names, RangeLayout::Equal).await?;
    for (table, column) in DEFAULT_TABLES {
        add_table(client, table, column, DEFAULT_KEYSPACE, None, KeyType::Int).await?;
    }
    Ok(())
}
