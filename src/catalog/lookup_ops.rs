//! Declaring and dropping owned lookup vindexes ([`add_lookup_vindex`],
//! [`drop_lookup_vindex`]). Declaring one ends with the check the table
//! declarations also run before they commit ([`check_lookup_vindexes`],
//! kept with the catalog reads in `load`).
//!
//! A lookup vindex owns its lookup table's `sharded_tables` row: adding the
//! vindex declares the lookup table, dropping it removes that declaration.
//! Only the catalog changes; the lookup table itself is created on the shards
//! by running [`lookup_table_ddl`] through the router.

use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::vindex::KeyType;

use super::error::{CatalogError, DbContext};
use super::load::{check_lookup_vindexes, table_exists};
use super::lookup_check::lookup_mismatch;
use super::model::{normalize_table_name, LookupVindex, ShardedTable};
use super::ops::{is_reference_table, lock_table_kinds, require_name};
use super::parse_row::{parse_table, parse_vindex};
use super::raw::RawTable;
use super::tx;

/// Declares (upserts) lookup vindex `name` on column `column` of sharded
/// table `table`, through lookup table `lookup_table`, and returns it with
/// the DDL that creates the lookup table (see [`lookup_table_ddl`]), which
/// the operator runs through the router so it exists on every shard.
///
/// Names are normalized: `table` and `lookup_table` drop a schema and are
/// lower-cased, `column` and `name` are trimmed and lower-cased. Defaults:
/// `name` = `<table>_<column>`, `lookup_table` = `<table>_<column>_lookup`.
///
/// In one transaction holding the table declaration lock: the lookup table is
/// declared as a sharded table of the owner's keyspace keyed by `column`
/// (`key_type`, the keyspace's default vindex) unless it already is (a
/// declaration with the same keyspace, key column and key type is kept as
/// is, vindex included); then the `lookup_vindexes` row is inserted, or
/// updated if vindex `name` exists with another definition (a lookup table
/// it no longer uses loses its `sharded_tables` row). Idempotent.
///
/// Errors: [`CatalogError::InvalidArgument`] for an empty name or a catalog
/// not migrated to version 4 (run `pg-router meta init`);
/// [`CatalogError::UnknownTable`] if `table` is not a declared sharded
/// table; [`CatalogError::BadLookupVindex`] if `column` is its sharding key,
/// the lookup table is `table`, is declared as another sharded table, serves
/// another vindex, or the result would not load (e.g. `table` is itself a
/// lookup table); [`CatalogError::ShardedAndReference`] if the lookup table
/// is a reference table; [`CatalogError::LookupVindexConflict`] if the column
/// already has a lookup vindex of another name; [`CatalogError::Db`].
pub async fn add_lookup_vindex(
    client: &Client,
    name: Option<&str>,
    table: &str,
    column: &str,
    key_type: KeyType,
    lookup_table: Option<&str>,
    unique: bool,
) -> Result<(LookupVindex, String), CatalogError> {
    let table = normalize_table_name(table);
    require_name("table name", &table)?;
    let column = column.trim().to_lowercase();
    require_name("column", &column)?;
    let name = match name {
        Some(n) => n.trim().to_lowercase(),
        None => format!("{table}_{column}"),
    };
    require_name("lookup vindex name", &name)?;
    let lookup_table = match lookup_table {
        Some(l) => normalize_table_name(l),
        None => format!("{table}_{column}_lookup"),
    };
    require_name("lookup table name", &lookup_table)?;
    let v = LookupVindex {
        name,
        table,
        column,
        key_type,
        lookup_table,
        unique,
    };
    tx::begin(client, tx::READ_WRITE).await?;
    let result = store_lookup_vindex(client, &v).await;
    tx::finish(client, result).await?;
    let ddl = lookup_table_ddl(&v);
    Ok((v, ddl))
}

async fn store_lookup_vindex(client: &Client, v: &LookupVindex) -> Result<(), CatalogError> {
    let bad = |problem: String| CatalogError::BadLookupVindex {
        name: v.name.clone(),
        problem,
    };
    lock_table_kinds(client).await?;
    require_lookup_schema(client).await?;
    let owner = read_table(client, &v.table)
        .await?
        .ok_or_else(|| CatalogError::UnknownTable {
            row: format!("lookup vindex '{}'", v.name),
            table: v.table.clone(),
        })?;
    if is_reference_table(client, &v.lookup_table).await? {
        return Err(CatalogError::ShardedAndReference {
            table: v.lookup_table.clone(),
        });
    }
    let intended = ShardedTable {
        name: v.lookup_table.clone(),
        keyspace: owner.keyspace.clone(),
        key_column: v.column.clone(),
        vindex: owner.vindex,
        key_type: v.key_type,
    };
    if let Some(problem) = lookup_mismatch(v, &owner, &intended) {
        return Err(bad(problem));
    }
    if let Some(existing) = vindex_on_column(client, v).await? {
        return Err(CatalogError::LookupVindexConflict {
            table: v.table.clone(),
            column: v.column.clone(),
            existing,
            requested: v.name.clone(),
        });
    }
    if let Some(other) = vindex_using_lookup_table(client, v).await? {
        return Err(bad(format!(
            "lookup table '{}' is already the lookup table of vindex '{other}'",
            v.lookup_table
        )));
    }
    let previous = previous_lookup_table(client, &v.name).await?;
    upsert_lookup_table(client, v, &owner, previous.as_deref()).await?;
    upsert_vindex_row(client, v).await?;
    if let Some(old) = previous.filter(|p| *p != v.lookup_table) {
        delete_table_row(client, &old).await?;
    }
    check_lookup_vindexes(client).await
}

/// Declares `v`'s lookup table as a sharded table of `owner`'s keyspace,
/// keyed by `v.column`. An existing declaration with the same keyspace, key
/// column and key type is kept; another one is replaced only if it is the
/// lookup table `previous` of the vindex being redefined.
async fn upsert_lookup_table(
    client: &Client,
    v: &LookupVindex,
    owner: &ShardedTable,
    previous: Option<&str>,
) -> Result<(), CatalogError> {
    let existing = read_table(client, &v.lookup_table).await?;
    if let Some(t) = &existing {
        let fits =
            (&t.keyspace, &t.key_column, t.key_type) == (&owner.keyspace, &v.column, v.key_type);
        if fits {
            return Ok(());
        }
        if previous != Some(v.lookup_table.as_str()) {
            return Err(CatalogError::BadLookupVindex {
                name: v.name.clone(),
                problem: format!(
                    "lookup table '{}' is already declared as a sharded table \
                     (keyspace {}, key {}, key_type {}); choose another lookup table",
                    t.name,
                    t.keyspace,
                    t.key_column,
                    t.key_type.as_str()
                ),
            });
        }
    }
    let stored: String = client
        .query_one(
            "select vindex from pgrouter.keyspaces where name = $1",
            &[&owner.keyspace],
        )
        .await
        .and_then(|r| r.try_get(0))
        .ctx(format!("reading keyspace '{}'", owner.keyspace))?;
    let vindex = parse_vindex(&stored, || format!("keyspace '{}'", owner.keyspace))?;
    client
        .execute(
            "insert into pgrouter.sharded_tables (table_name, keyspace, key_column, vindex, key_type)
             values ($1, $2, $3, $4, $5)
             on conflict (table_name) do update
                set keyspace = excluded.keyspace, key_column = excluded.key_column,
                    vindex = excluded.vindex, key_type = excluded.key_type",
            &[
                &v.lookup_table,
                &owner.keyspace,
                &v.column,
                &vindex.as_str(),
                &v.key_type.as_str(),
            ],
        )
        .await
        .ctx(format!("upserting lookup table '{}'", v.lookup_table))?;
    Ok(())
}

/// Inserts the `lookup_vindexes` row of `v`, or updates vindex `v.name` if
/// it differs.
async fn upsert_vindex_row(client: &Client, v: &LookupVindex) -> Result<(), CatalogError> {
    client
        .execute(
            "insert into pgrouter.lookup_vindexes
                    (name, table_name, column_name, key_type, lookup_table, is_unique)
             values ($1, $2, $3, $4, $5, $6)
             on conflict (name) do update
                set table_name = excluded.table_name, column_name = excluded.column_name,
                    key_type = excluded.key_type, lookup_table = excluded.lookup_table,
                    is_unique = excluded.is_unique
              where (lookup_vindexes.table_name, lookup_vindexes.column_name,
                     lookup_vindexes.key_type, lookup_vindexes.lookup_table,
                     lookup_vindexes.is_unique)
                    is distinct from (excluded.table_name, excluded.column_name,
                                      excluded.key_type, excluded.lookup_table,
                                      excluded.is_unique)",
            &[
                &v.name,
                &v.table,
                &v.column,
                &v.key_type.as_str(),
                &v.lookup_table,
                &v.unique,
            ],
        )
        .await
        .ctx(format!("upserting lookup vindex '{}'", v.name))?;
    Ok(())
}

/// Removes lookup vindex `name` (trimmed, lower-cased) and its lookup
/// table's `sharded_tables` row, in one transaction holding the table
/// declaration lock. The lookup table on the shards is left alone. Returns
/// `true` if the vindex existed, `false` if there was nothing to drop.
///
/// Errors: [`CatalogError::InvalidArgument`] for an empty name or a catalog
/// not migrated to version 4 (run `pg-router meta init`);
/// [`CatalogError::Db`].
pub async fn drop_lookup_vindex(client: &Client, name: &str) -> Result<bool, CatalogError> {
    let name = name.trim().to_lowercase();
    require_name("lookup vindex name", &name)?;
    tx::begin(client, tx::READ_WRITE).await?;
    let result = delete_lookup_vindex(client, &name).await;
    tx::finish(client, result).await
}

async fn delete_lookup_vindex(client: &Client, name: &str) -> Result<bool, CatalogError> {
    lock_table_kinds(client).await?;
    require_lookup_schema(client).await?;
    let row = client
        .query_opt(
            "delete from pgrouter.lookup_vindexes where name = $1 returning lookup_table",
            &[&name],
        )
        .await
        .ctx(format!("deleting lookup vindex '{name}'"))?;
    let Some(row) = row else {
        return Ok(false);
    };
    let lookup_table: String = row
        .try_get(0)
        .ctx(format!("deleting lookup vindex '{name}'"))?;
    delete_table_row(client, &lookup_table).await?;
    Ok(true)
}

/// `CREATE TABLE` of `v`'s lookup table, to run through the router:
/// `CREATE TABLE <lookup_table> (<column> <type> NOT NULL, keyspace_id bigint
/// NOT NULL, PRIMARY KEY (<column>))`, the primary key being
/// `(<column>, keyspace_id)` for a non-unique vindex; `<type>` is `bigint`,
/// `text` or `uuid` for key type int, text or uuid. Names that are not plain
/// lower-case identifiers are double-quoted.
pub fn lookup_table_ddl(v: &LookupVindex) -> String {
    let column = ident(&v.column);
    let key = if v.unique {
        column.clone()
    } else {
        format!("{column}, keyspace_id")
    };
    format!(
        "CREATE TABLE {} ({column} {} NOT NULL, keyspace_id bigint NOT NULL, PRIMARY KEY ({key}))",
        ident(&v.lookup_table),
        sql_type(v.key_type)
    )
}

/// The column type of a lookup table's value column.
fn sql_type(key_type: KeyType) -> &'static str {
    match key_type {
        KeyType::Int => "bigint",
        KeyType::Text => "text",
        KeyType::Uuid => "uuid",
    }
}

/// `name` as an SQL identifier: as is if it is a plain lower-case identifier
/// (`[a-z_][a-z0-9_$]*`), double-quoted otherwise.
fn ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Fails unless `pgrouter.lookup_vindexes` exists (catalog migration 4).
async fn require_lookup_schema(client: &Client) -> Result<(), CatalogError> {
    if table_exists(client, "pgrouter.lookup_vindexes").await? {
        Ok(())
    } else {
        Err(CatalogError::InvalidArgument(
            "the catalog has no pgrouter.lookup_vindexes yet; upgrade it with `pg-router meta init`"
                .into(),
        ))
    }
}

/// The `sharded_tables` row of `name` (normalized), parsed; `None` if not
/// declared.
async fn read_table(client: &Client, name: &str) -> Result<Option<ShardedTable>, CatalogError> {
    let context = || format!("reading table '{name}'");
    let row = client
        .query_opt(
            "select table_name, keyspace, key_column, vindex, key_type
               from pgrouter.sharded_tables where table_name = $1",
            &[&name],
        )
        .await
        .ctx(context())?;
    let Some(r) = row else {
        return Ok(None);
    };
    let raw = RawTable {
        name: r.try_get(0).ctx(context())?,
        keyspace: r.try_get(1).ctx(context())?,
        key_column: r.try_get(2).ctx(context())?,
        vindex: r.try_get(3).ctx(context())?,
        key_type: r.try_get(4).ctx(context())?,
    };
    parse_table(raw).map(Some)
}

/// The name of another vindex than `v.name` on `(v.table, v.column)`.
async fn vindex_on_column(
    client: &Client,
    v: &LookupVindex,
) -> Result<Option<String>, CatalogError> {
    optional_name(
        client,
        "select name from pgrouter.lookup_vindexes
          where table_name = $1 and column_name = $2 and name <> $3",
        &[&v.table, &v.column, &v.name],
    )
    .await
}

/// The name of another vindex than `v.name` using `v.lookup_table`.
async fn vindex_using_lookup_table(
    client: &Client,
    v: &LookupVindex,
) -> Result<Option<String>, CatalogError> {
    optional_name(
        client,
        "select name from pgrouter.lookup_vindexes where lookup_table = $1 and name <> $2",
        &[&v.lookup_table, &v.name],
    )
    .await
}

/// Runs `sql` (a query on `pgrouter.lookup_vindexes` returning at most one
/// row) and returns the text in the first column of its row, if any.
async fn optional_name(
    client: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<String>, CatalogError> {
    let context = || "reading pgrouter.lookup_vindexes".to_string();
    match client.query_opt(sql, params).await.ctx(context())? {
        Some(r) => r.try_get(0).map(Some).ctx(context()),
        None => Ok(None),
    }
}

/// The lookup table of vindex `name` as stored, if the vindex exists.
async fn previous_lookup_table(
    client: &Client,
    name: &str,
) -> Result<Option<String>, CatalogError> {
    optional_name(
        client,
        "select lookup_table from pgrouter.lookup_vindexes where name = $1",
        &[&name],
    )
    .await
}

/// Deletes the `sharded_tables` row of `table` (a former lookup table).
async fn delete_table_row(client: &Client, table: &str) -> Result<(), CatalogError> {
    client
        .execute(
            "delete from pgrouter.sharded_tables where table_name = $1",
            &[&table],
        )
        .await
        .ctx(format!("deleting lookup table '{table}'"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vindex(unique: bool, key_type: KeyType) -> LookupVindex {
        LookupVindex {
            name: "users_email".into(),
            table: "users".into(),
            column: "email".into(),
            key_type,
            lookup_table: "users_email_lookup".into(),
            unique,
        }
    }

    #[test]
    fn ddl_for_unique_and_non_unique() {
        assert_eq!(
            lookup_table_ddl(&vindex(true, KeyType::Text)),
            "CREATE TABLE users_email_lookup (email text NOT NULL, keyspace_id bigint NOT NULL, PRIMARY KEY (email))"
        );
        assert_eq!(
            lookup_table_ddl(&vindex(false, KeyType::Int)),
            "CREATE TABLE users_email_lookup (email bigint NOT NULL, keyspace_id bigint NOT NULL, PRIMARY KEY (email, keyspace_id))"
        );
        let mut v = vindex(true, KeyType::Uuid);
        v.lookup_table = "e-mail \"x\"".into();
        v.column = "1st".into();
        assert_eq!(
            lookup_table_ddl(&v),
            "CREATE TABLE \"e-mail \"\"x\"\"\" (\"1st\" uuid NOT NULL, keyspace_id bigint NOT NULL, PRIMARY KEY (\"1st\"))"
        );
    }
}
