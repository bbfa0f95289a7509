//! The routing catalog: which keyspaces, shards, sharded tables, reference
//! tables and lookup vindexes exist and which shard owns which keyspace ids.
//!
//! The catalog lives in a PostgreSQL database, schema `pgrouter` (see
//! `shard-metadata/README.md`): tables `keyspaces`, `shards`, `shard_ranges`,
//! `sharded_tables`, `reference_tables`, `lookup_vindexes`, `table_rules`,
//! `schema_migrations`. This module
//! - applies the embedded schema migrations ([`migrate`]),
//! - reads and validates a snapshot of it ([`load`] → [`Catalog`]),
//! - declares keyspaces, shards, ranges and tables ([`add_keyspace`],
//!   [`add_shard`], [`add_ranges`], [`add_table`], [`add_reference_table`],
//!   [`drop_reference_table`], [`seed_default`]) and lookup vindexes
//!   ([`add_lookup_vindex`], [`drop_lookup_vindex`], [`lookup_table_ddl`]),
//!   and keyspace rules ([`add_table_rule`], [`drop_table_rule`],
//!   [`declare_by_rule`]),
//! - follows changes live via `LISTEN pgrouter_catalog` ([`spawn_watcher`]),
//! - renders it for people ([`show_routing`]) and backs the
//!   `pg-router meta` subcommand ([`cli`]).
//!
//! Every operation takes a `&tokio_postgres::Client` connected to the catalog
//! database and returns [`CatalogError`], whose messages name the row at fault.

mod assign;
pub mod cli;
mod error;
pub mod keyid;
mod load;
mod lookup_check;
mod lookup_ops;
mod migrate;
mod model;
mod ops;
mod parse_row;
mod ranges;
mod raw;
mod rules;
mod seed;
mod show;
mod tx;
mod validate;
mod watch;

#[cfg(test)]
pub(crate) mod test_pg;
#[cfg(test)]
mod test_rows;
#[cfg(test)]
mod tests;

pub use assign::{active_ranges, assign_ranges, reassigned, Assigned, Reassigned};
pub use cli::{run_meta, MetaArgs, MetaCommand};
pub use error::{pg_error_text, CatalogError};
pub use load::load;
pub use lookup_ops::{add_lookup_vindex, drop_lookup_vindex, lookup_table_ddl};
pub use migrate::{migrate, Migration, MIGRATIONS};
pub use model::{normalize_table_name, Catalog, Keyspace, LookupVindex, ShardInfo, ShardedTable};
pub use ops::{add_keyspace, add_reference_table, add_shard, add_table, drop_reference_table};
pub use ranges::{add_ranges, plan_ranges, RangeLayout};
pub use rules::{add_table_rule, declare_by_rule, drop_table_rule};
pub use seed::{seed_default, DEFAULT_KEYSPACE, DEFAULT_TABLES};
pub use show::show_routing;
pub use watch::{session_config, spawn_watcher, CHANNEL, WATCHER_APPLICATION_NAME};
