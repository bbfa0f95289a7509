//! [`load`]: reads the catalog tables in one snapshot into raw rows, then
//! hands them to [`validate::build`]; and
//! [`check_lookup_vindexes`], the same read and check of the lookup vindexes
//! alone that the admin operations run before they commit.

use tokio_postgres::{Client, Row};

use super::error::{CatalogError, DbContext};
use super::lookup_check::check_lookup_rows;
use super::model::Catalog;
use super::raw::{RawCatalog, RawKeyspace, RawLookupVindex, RawRange, RawShard, RawTable};
use super::tx;
use super::validate;

/// Reads the whole catalog in one REPEATABLE READ, READ ONLY transaction and
/// validates it. Only the `shard_ranges` rows at each keyspace's active
/// generation (`keyspaces.generation`) are read; range bounds are read as
/// `numeric::text` and parsed to `u64` (an end of 2^64 or NULL = unbounded).
/// A catalog without `pgrouter.reference_tables` (migration 3 not applied
/// yet) loads with no reference tables, and one without
/// `pgrouter.lookup_vindexes` (migration 4) with no lookup vindexes, one
/// without `pgrouter.table_rules` (migration 8) with no rules, so a
/// newer router still runs against a catalog that has not been upgraded with
/// `pg-router meta init`.
///
/// Errors: [`CatalogError::Db`] when a read fails (e.g. the schema is not
/// migrated); a validation error naming the offending row:
/// [`CatalogError::UnknownVindex`], [`CatalogError::UnknownKeyType`],
/// [`CatalogError::NoRanges`], [`CatalogError::Routing`] (gap / overlap),
/// [`CatalogError::UnknownKeyspace`], [`CatalogError::UnknownShard`],
/// [`CatalogError::ShardedAndReference`], [`CatalogError::BadRow`],
/// [`CatalogError::UnknownTable`], [`CatalogError::BadLookupVindex`].
pub async fn load(client: &Client) -> Result<Catalog, CatalogError> {
    tx::begin(client, tx::SNAPSHOT).await?;
    let raw = read_all(client).await;
    let raw = tx::finish(client, raw).await?;
    validate::build(raw)
}

/// Checks every lookup vindex against the sharded tables it names, as
/// [`load`] will (inside the caller's transaction, before it
/// commits). Nothing to check on a catalog not migrated to version 4.
///
/// Errors: those of
/// [`build_lookup_vindexes`](super::lookup_check::build_lookup_vindexes)
/// naming the vindex; [`CatalogError::Db`].
pub(super) async fn check_lookup_vindexes(client: &Client) -> Result<(), CatalogError> {
    let lookups = read_lookup_vindexes(client).await?;
    if lookups.is_empty() {
        return Ok(());
    }
    check_lookup_rows(lookups, read_sharded_tables(client).await?)
}

async fn read_all(client: &Client) -> Result<RawCatalog, CatalogError> {
    let keyspaces = select(
        client,
        "pgrouter.keyspaces",
        "select name, vindex, generation from pgrouter.keyspaces order by name",
        |r| {
            Ok(RawKeyspace {
                name: r.try_get(0)?,
                vindex: r.try_get(1)?,
                generation: r.try_get(2)?,
            })
        },
    )
    .await?;
    let shards = select(
        client,
        "pgrouter.shards",
        "select name, host, port, dbname, user_name from pgrouter.shards order by name",
        |r| {
            Ok(RawShard {
                name: r.try_get(0)?,
                host: r.try_get(1)?,
                port: r.try_get(2)?,
                dbname: r.try_get(3)?,
                user: r.try_get(4)?,
            })
        },
    )
    .await?;
    let ranges = select(
        client,
        "pgrouter.shard_ranges",
        "select r.keyspace, r.start_id::text, r.end_id::text, r.shard, r.generation
           from pgrouter.shard_ranges r
           join pgrouter.keyspaces k on k.name = r.keyspace and k.generation = r.generation
          order by r.keyspace, r.start_id",
        |r| {
            Ok(RawRange {
                keyspace: r.try_get(0)?,
                start: r.try_get(1)?,
                end: r.try_get(2)?,
                shard: r.try_get(3)?,
                generation: r.try_get(4)?,
            })
        },
    )
    .await?;
    let tables = read_sharded_tables(client).await?;
    let reference_tables = read_reference_tables(client).await?;
    let lookup_vindexes = read_lookup_vindexes(client).await?;
    let table_rules = read_table_rules(client).await?;
    Ok(RawCatalog {
        keyspaces,
        shards,
        ranges,
        tables,
        reference_tables,
        lookup_vindexes,
        table_rules,
    })
}

/// Every `pgrouter.table_rules` row as `(key_column, keyspace)`, by column;
/// none if the table does not exist (a catalog not yet migrated to
/// version 8).
///
/// Errors: [`CatalogError::Db`].
async fn read_table_rules(client: &Client) -> Result<Vec<(String, String)>, CatalogError> {
    if !table_exists(client, "pgrouter.table_rules").await? {
        return Ok(Vec::new());
    }
    select(
        client,
        "pgrouter.table_rules",
        "select key_column, keyspace from pgrouter.table_rules order by key_column",
        |r| Ok((r.try_get(0)?, r.try_get(1)?)),
    )
    .await
}

/// Every `pgrouter.sharded_tables` row, by name.
///
/// Errors: [`CatalogError::Db`].
async fn read_sharded_tables(client: &Client) -> Result<Vec<RawTable>, CatalogError> {
    select(
        client,
        "pgrouter.sharded_tables",
        "select table_name, keyspace, key_column, vindex, key_type
           from pgrouter.sharded_tables order by table_name",
        |r| {
            Ok(RawTable {
                name: r.try_get(0)?,
                keyspace: r.try_get(1)?,
                key_column: r.try_get(2)?,
                vindex: r.try_get(3)?,
                key_type: r.try_get(4)?,
            })
        },
    )
    .await
}

/// Every `pgrouter.lookup_vindexes` row, by name; none if the table does not
/// exist (a catalog not yet migrated to version 4).
///
/// Errors: [`CatalogError::Db`].
async fn read_lookup_vindexes(client: &Client) -> Result<Vec<RawLookupVindex>, CatalogError> {
    if !table_exists(client, "pgrouter.lookup_vindexes").await? {
        return Ok(Vec::new());
    }
    select(
        client,
        "pgrouter.lookup_vindexes",
        "select name, table_name, column_name, key_type, lookup_table, is_unique
           from pgrouter.lookup_vindexes order by name",
        |r| {
            Ok(RawLookupVindex {
                name: r.try_get(0)?,
                table: r.try_get(1)?,
                column: r.try_get(2)?,
                key_type: r.try_get(3)?,
                lookup_table: r.try_get(4)?,
                unique: r.try_get(5)?,
            })
        },
    )
    .await
}

/// True if the relation `qualified_name` (e.g. `pgrouter.lookup_vindexes`)
/// exists: a catalog table added by a later migration may be missing.
///
/// Errors: [`CatalogError::Db`].
pub(super) async fn table_exists(
    client: &Client,
    qualified_name: &str,
) -> Result<bool, CatalogError> {
    client
        .query_one("select to_regclass($1) is not null", &[&qualified_name])
        .await
        .and_then(|r| r.try_get(0))
        .ctx(format!("looking for {qualified_name}"))
}

/// The names in `pgrouter.reference_tables`; none if the table does not
/// exist (a catalog not yet migrated to version 3).
async fn read_reference_tables(client: &Client) -> Result<Vec<String>, CatalogError> {
    if !table_exists(client, "pgrouter.reference_tables").await? {
        return Ok(Vec::new());
    }
    select(
        client,
        "pgrouter.reference_tables",
        "select table_name from pgrouter.reference_tables order by table_name",
        |r| r.try_get(0),
    )
    .await
}

/// Runs `sql` (no parameters) and converts every row with `f`.
async fn select<T>(
    client: &Client,
    table: &str,
    sql: &str,
    f: impl Fn(&Row) -> Result<T, tokio_postgres::Error>,
) -> Result<Vec<T>, CatalogError> {
    let context = || format!("reading {table}");
    let rows = client.query(sql, &[]).await.ctx(context())?;
    rows.iter()
        .map(&f)
        .collect::<Result<Vec<T>, _>>()
        .ctx(context())
}
