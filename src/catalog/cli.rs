//! The `pg-router meta` subcommand: administering the catalog from a shell.

use std::fmt::Write;

use tokio_postgres::{Client, NoTls};

use crate::vindex::{KeyType, VindexKind};

use super::error::{CatalogError, DbContext};
use super::load::load;
use super::lookup_ops::{add_lookup_vindex, drop_lookup_vindex};
use super::migrate::migrate;
use super::model::normalize_table_name;
use super::ops::{add_keyspace, add_reference_table, add_shard, add_table, drop_reference_table};
use super::ranges::{add_ranges, RangeLayout};
use super::rules::{add_table_rule, drop_table_rule};
use super::show::show_routing;

/// `pg-router meta`: read and change the routing catalog.
#[derive(clap::Args, Debug, Clone)]
pub struct MetaArgs {
    /// Catalog database DSN, libpq `key=value` (`host=... port=... user=... dbname=...`)
    /// or URL (`postgres://user@host:port/db`) form. No TLS.
    #[arg(long, env = "PGROUTER_CATALOG")]
    pub catalog: String,
    /// What to do.
    #[command(subcommand)]
    pub command: MetaCommand,
}

/// The `pg-router meta` subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum MetaCommand {
    /// Create or upgrade the catalog schema (apply pending migrations).
    Init,
    /// Declare a keyspace (a set of tables sharded together).
    AddKeyspace {
        /// Keyspace name.
        #[arg(long)]
        name: String,
        /// Default vindex of its tables: hash_murmur3, hash_crc32, hash_fnv1a, range, consistent_hash.
        #[arg(long, default_value = "hash_murmur3", value_parser = parse_vindex_arg)]
        vindex: VindexKind,
    },
    /// Declare or update a shard (a PostgreSQL database).
    AddShard {
        /// Shard name.
        #[arg(long)]
        name: String,
        /// Host name or IP address.
        #[arg(long)]
        host: String,
        /// TCP port.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
        /// Database name.
        #[arg(long, default_value = "postgres")]
        dbname: String,
        /// User to connect as (default: the client's user).
        #[arg(long)]
        user: Option<String>,
    },
    /// Replace the ranges of a keyspace's current generation with a layout over shards.
    AddRanges {
        /// Keyspace name.
        #[arg(long)]
        keyspace: String,
        /// Shards, comma-separated, in range order (for the equal layout).
        #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
        shards: Vec<String>,
        /// equal: one equal range per shard; ring: a consistent-hash ring.
        #[arg(long, value_enum, default_value_t = LayoutArg::Equal)]
        layout: LayoutArg,
        /// Ring points per shard (ring layout only).
        #[arg(long, default_value_t = 64)]
        vnodes: usize,
    },
    /// Declare or update a sharded table (refused for a reference table).
    AddTable {
        /// Table name (a schema prefix is dropped; stored lower case).
        #[arg(long)]
        table: String,
        /// Sharding key column.
        #[arg(long)]
        column: String,
        /// Keyspace (default: the only keyspace; an error if there are several).
        #[arg(long)]
        keyspace: Option<String>,
        /// Vindex (default: the keyspace's).
        #[arg(long, value_parser = parse_vindex_arg)]
        vindex: Option<VindexKind>,
        /// Key type: int, text or uuid.
        #[arg(long, default_value = "int", value_parser = parse_key_type_arg)]
        key_type: KeyType,
    },
    /// Declare a keyspace rule: a table later created through a router with
    /// this column (and not declared yet) is declared sharded by it, e.g.
    /// `--column id` before `sysbench ... prepare`.
    AddTableRule {
        /// Key column name (stored lower case).
        #[arg(long)]
        column: String,
        /// Keyspace (default: the only keyspace; an error if there are several).
        #[arg(long)]
        keyspace: Option<String>,
    },
    /// Remove a keyspace rule (the tables it declared stay declared).
    DropTableRule {
        /// Key column name.
        #[arg(long)]
        column: String,
    },
    /// Declare a reference table (a full copy on every shard: reads go to
    /// one shard, writes to every shard). Create the table on every shard
    /// first (e.g. CREATE TABLE through the router).
    AddReferenceTable {
        /// Table name (a schema prefix is dropped; stored lower case).
        #[arg(long)]
        table: String,
    },
    /// Remove a reference table from the catalog (the shards' copies stay).
    DropReferenceTable {
        /// Table name (a schema prefix is dropped; matched lower case).
        #[arg(long)]
        table: String,
    },
    /// Declare an owned lookup vindex on a non-key column of a sharded table
    /// (and its lookup table, a sharded table keyed by that column), then
    /// print the CREATE TABLE to run through the router for the lookup table.
    AddLookupVindex {
        /// Owner table (a declared sharded table; a schema prefix is dropped).
        #[arg(long)]
        table: String,
        /// Looked-up column of the owner table (not its sharding key).
        #[arg(long)]
        column: String,
        /// Key type of the column: int, text or uuid.
        #[arg(long, default_value = "text", value_parser = parse_key_type_arg)]
        key_type: KeyType,
        /// At most one owner row per value (default: several allowed).
        #[arg(long)]
        unique: bool,
        /// Lookup table name (default: <table>_<column>_lookup).
        #[arg(long)]
        lookup_table: Option<String>,
        /// Vindex name (default: <table>_<column>).
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove a lookup vindex and its lookup table's declaration from the
    /// catalog (the lookup tables on the shards stay).
    DropLookupVindex {
        /// Vindex name.
        #[arg(long)]
        name: String,
    },
    /// Print keyspaces with their ranges, shards, sharded and reference
    /// tables, lookup vindexes.
    Show,
}

/// `--layout` values of `add-ranges`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutArg {
    /// One equal range per shard.
    Equal,
    /// Consistent-hash ring with `--vnodes` points per shard.
    Ring,
}

/// Connects to `args.catalog` and runs `args.command`, printing its result to
/// stdout.
///
/// Errors: [`CatalogError::Connect`] if the DSN is invalid or the server is
/// unreachable; the errors of the operation run.
pub async fn run_meta(args: MetaArgs) -> Result<(), CatalogError> {
    let (client, connection) = tokio_postgres::connect(&args.catalog, NoTls)
        .await
        .map_err(CatalogError::Connect)?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "catalog connection ended");
        }
    });
    let result = execute(&client, &args.command).await;
    drop(client);
    let _ = driver.await;
    print!("{}", result?);
    Ok(())
}

/// Runs one subcommand on `client` and returns the text to print (ends with
/// a newline).
///
/// Errors: those of the operation run; for `add-table` without `--keyspace`,
/// [`CatalogError::InvalidArgument`] unless exactly one keyspace exists.
pub async fn execute(client: &Client, command: &MetaCommand) -> Result<String, CatalogError> {
    let mut out = String::new();
    match command {
        MetaCommand::Init => {
            let applied = migrate(client).await?;
            if applied.is_empty() {
                let _ = writeln!(out, "catalog schema already up to date");
            } else {
                let _ = writeln!(
                    out,
                    "catalog schema migrated: applied version(s) {applied:?}"
                );
            }
        }
        MetaCommand::AddKeyspace { name, vindex } => {
            let created = add_keyspace(client, name, *vindex).await?;
            let what = if created { "created" } else { "already exists" };
            let _ = writeln!(out, "keyspace {name} (vindex {}): {what}", vindex.as_str());
        }
        MetaCommand::AddShard {
            name,
            host,
            port,
            dbname,
            user,
        } => {
            let s = add_shard(client, name, host, *port, dbname, user.as_deref()).await?;
            let user = s.user.map(|u| format!(" as {u}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "shard {}: {}:{}/{}{user}",
                s.name, s.host, s.port, s.dbname
            );
        }
        MetaCommand::AddRanges {
            keyspace,
            shards,
            layout,
            vnodes,
        } => {
            let layout = match layout {
                LayoutArg::Equal => RangeLayout::Equal,
                LayoutArg::Ring => RangeLayout::Ring { vnodes: *vnodes },
            };
            let ranges = add_ranges(client, keyspace, shards, layout).await?;
            let generation = ranges.first().map(|r| r.generation).unwrap_or_default();
            let _ = writeln!(
                out,
                "keyspace {keyspace} generation {generation}: {} ranges",
                ranges.len()
            );
            for r in &ranges {
                let _ = writeln!(out, "  {} -> {}", r.range, r.shard);
            }
        }
        MetaCommand::AddTable {
            table,
            column,
            keyspace,
            vindex,
            key_type,
        } => {
            let keyspace = match keyspace {
                Some(k) => k.clone(),
                None => only_keyspace(client).await?,
            };
            let t = add_table(client, table, column, &keyspace, *vindex, *key_type).await?;
            let _ = writeln!(
                out,
                "table {}: keyspace {}, key {}, vindex {}, key_type {}",
                t.name,
                t.keyspace,
                t.key_column,
                t.vindex.as_str(),
                t.key_type.as_str()
            );
        }
        MetaCommand::AddTableRule { column, keyspace } => {
            let keyspace = match keyspace {
                Some(k) => k.clone(),
                None => only_keyspace(client).await?,
            };
            add_table_rule(client, column, &keyspace).await?;
            let _ = writeln!(
                out,
                "table rule {}: new tables with this column are sharded by it in keyspace {keyspace}",
                column.trim().to_lowercase()
            );
        }
        MetaCommand::DropTableRule { column } => {
            let dropped = drop_table_rule(client, column).await?;
            let _ = writeln!(
                out,
                "table rule {}: {}",
                column.trim().to_lowercase(),
                if dropped { "dropped" } else { "not found" }
            );
        }
        MetaCommand::AddReferenceTable { table } => {
            let name = add_reference_table(client, table).await?;
            let _ = writeln!(out, "reference table {name}: declared");
        }
        MetaCommand::DropReferenceTable { table } => {
            let name = normalize_table_name(table);
            let what = if drop_reference_table(client, table).await? {
                "dropped from the catalog (the shards' copies are left alone)"
            } else {
                "not declared; nothing dropped"
            };
            let _ = writeln!(out, "reference table {name}: {what}");
        }
        MetaCommand::AddLookupVindex {
            table,
            column,
            key_type,
            unique,
            lookup_table,
            name,
        } => {
            let (v, ddl) = add_lookup_vindex(
                client,
                name.as_deref(),
                table,
                column,
                *key_type,
                lookup_table.as_deref(),
                *unique,
            )
            .await?;
            let _ = writeln!(
                out,
                "lookup vindex {}: {}.{} -> {} ({}, key_type {})",
                v.name,
                v.table,
                v.column,
                v.lookup_table,
                if v.unique { "unique" } else { "non-unique" },
                v.key_type.as_str()
            );
            let _ = writeln!(out, "create the lookup table through the router: {ddl};");
        }
        MetaCommand::DropLookupVindex { name } => {
            let what = if drop_lookup_vindex(client, name).await? {
                "dropped with its lookup table's declaration (the tables on the shards are left alone)"
            } else {
                "not declared; nothing dropped"
            };
            let _ = writeln!(out, "lookup vindex {}: {what}", name.trim().to_lowercase());
        }
        MetaCommand::Show => out = show_routing(&load(client).await?),
    }
    Ok(out)
}

/// The name of the only keyspace.
async fn only_keyspace(client: &Client) -> Result<String, CatalogError> {
    let names: Vec<String> = client
        .query("select name from pgrouter.keyspaces order by name", &[])
        .await
        .ctx("reading pgrouter.keyspaces")?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .ctx("reading pgrouter.keyspaces")?;
    match names.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(CatalogError::InvalidArgument(
            "no keyspace declared yet; run add-keyspace first".into(),
        )),
        several => Err(CatalogError::InvalidArgument(format!(
            "several keyspaces ({}); pass --keyspace",
            several.join(", ")
        ))),
    }
}

fn parse_vindex_arg(s: &str) -> Result<VindexKind, String> {
    s.parse::<VindexKind>().map_err(|e| e.to_string())
}

fn parse_key_type_arg(s: &str) -> Result<KeyType, String> {
    s.parse::<KeyType>().map_err(|e| e.to_string())
}
