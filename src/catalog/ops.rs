//! Declaring keyspaces, shards, sharded tables and reference tables
//! (idempotent upserts), and dropping reference tables (lookup vindexes:
//! the `lookup_ops` module, which builds on this one).
//!
//! Every write fires the catalog's NOTIFY trigger, so running routers reload.

use tokio_postgres::Client;

use crate::vindex::{KeyType, VindexKind};

use super::error::{CatalogError, DbContext};
use super::load::check_lookup_vindexes;
use super::model::{normalize_table_name, ShardInfo, ShardedTable};
use super::parse_row::parse_vindex;
use super::tx;

/// Declares keyspace `name` with default vindex `vindex` at generation 1.
///
/// Idempotent: if the keyspace exists with the same vindex (any alias of it),
/// nothing changes. Returns `true` if it was created, `false` if it existed.
///
/// Errors: [`CatalogError::VindexConflict`] if it exists with another vindex
/// (changing a keyspace's vindex would move every row);
/// [`CatalogError::InvalidArgument`] for an empty name; [`CatalogError::Db`].
pub async fn add_keyspace(
    client: &Client,
    name: &str,
    vindex: VindexKind,
) -> Result<bool, CatalogError> {
    require_name("keyspace name", name)?;
    let inserted = client
        .execute(
            "insert into pgrouter.keyspaces (name, vindex) values ($1, $2) on conflict (name) do nothing",
            &[&name, &vindex.as_str()],
        )
        .await
        .ctx(format!("inserting keyspace '{name}'"))?;
    if inserted == 1 {
        return Ok(true);
    }
    let row = client
        .query_one(
            "select vindex from pgrouter.keyspaces where name = $1",
            &[&name],
        )
        .await
        .ctx(format!("reading keyspace '{name}'"))?;
    let existing: String = row.try_get(0).ctx(format!("reading keyspace '{name}'"))?;
    let same = existing.parse::<VindexKind>().is_ok_and(|v| v == vindex);
    if same {
        Ok(false)
    } else {
        Err(CatalogError::VindexConflict {
            keyspace: name.to_string(),
            existing,
            requested: vindex.as_str().to_string(),
        })
    }
}

/// Declares shard `name` at `host:port`, database `dbname`, connecting as
/// `user` (`None` = as the client's user). Upsert: an existing shard's
/// address is replaced (e.g. after a failover). Returns the stored row.
///
/// Errors: [`CatalogError::InvalidArgument`] for an empty name, host or
/// dbname or port 0; [`CatalogError::Db`].
pub async fn add_shard(
    client: &Client,
    name: &str,
    host: &str,
    port: u16,
    dbname: &str,
    user: Option<&str>,
) -> Result<ShardInfo, CatalogError> {
    require_name("shard name", name)?;
    require_name("shard host", host)?;
    require_name("shard dbname", dbname)?;
    if port == 0 {
        return Err(CatalogError::InvalidArgument(format!(
            "shard '{name}': port must be in 1..=65535"
        )));
    }
    client
        .execute(
            "insert into pgrouter.shards (name, host, port, dbname, user_name) values ($1, $2, $3, $4, $5)
             on conflict (name) do update
                set host = excluded.host, port = excluded.port,
                    dbname = excluded.dbname, user_name = excluded.user_name
              where (shards.host, shards.port, shards.dbname, shards.user_name)
                    is distinct from (excluded.host, excluded.port, excluded.dbname, excluded.user_name)",
            &[&name, &host, &i32::from(port), &dbname, &user],
        )
        .await
        .ctx(format!("upserting shard '{name}'"))?;
    Ok(ShardInfo {
        name: name.to_string(),
        host: host.to_string(),
        port,
        dbname: dbname.to_string(),
        user: user.map(str::to_string),
    })
}

/// Declares (upserts) sharded table `table` keyed by `column` in `keyspace`.
/// `table` is normalized (schema dropped, lower case) and `column` lower-cased;
/// `vindex = None` uses the keyspace's vindex. Returns the stored table.
///
/// Errors: [`CatalogError::UnknownKeyspace`] naming the table;
/// [`CatalogError::UnknownVindex`] if the keyspace's stored vindex is unknown;
/// [`CatalogError::ShardedAndReference`] if the table is declared as a
/// reference table; [`CatalogError::BadLookupVindex`] if the change would
/// break a lookup vindex of the table (e.g. keying an owner by its looked-up
/// column, or re-keying a lookup table); [`CatalogError::InvalidArgument`]
/// for an empty table or column; [`CatalogError::Db`].
pub async fn add_table(
    client: &Client,
    table: &str,
    column: &str,
    keyspace: &str,
    vindex: Option<VindexKind>,
    key_type: KeyType,
) -> Result<ShardedTable, CatalogError> {
    let name = normalize_table_name(table);
    require_name("table name", &name)?;
    let key_column = column.trim().to_lowercase();
    require_name("key column", &key_column)?;
    tx::begin(client, tx::READ_WRITE).await?;
    let result = upsert_table(client, name, key_column, keyspace, vindex, key_type, true).await;
    tx::finish(client, result).await
}

/// Inserts (or, with `overwrite`, upserts) the `sharded_tables` row, inside
/// the caller's transaction. Without `overwrite` a row already there is
/// kept and returned as the caller asked for it.
pub(super) async fn upsert_table(
    client: &Client,
    name: String,
    key_column: String,
    keyspace: &str,
    vindex: Option<VindexKind>,
    key_type: KeyType,
    overwrite: bool,
) -> Result<ShardedTable, CatalogError> {
    let row = || format!("table '{name}'");
    lock_table_kinds(client).await?;
    if is_reference_table(client, &name).await? {
        return Err(CatalogError::ShardedAndReference { table: name });
    }
    let ks = client
        .query_opt(
            "select vindex from pgrouter.keyspaces where name = $1 for share",
            &[&keyspace],
        )
        .await
        .ctx(format!("reading keyspace '{keyspace}'"))?
        .ok_or_else(|| CatalogError::UnknownKeyspace {
            row: row(),
            keyspace: keyspace.to_string(),
        })?;
    let vindex = match vindex {
        Some(v) => v,
        None => {
            let stored: String = ks
                .try_get(0)
                .ctx(format!("reading keyspace '{keyspace}'"))?;
            parse_vindex(&stored, || format!("keyspace '{keyspace}'"))?
        }
    };
    let sql = if overwrite {
        "insert into pgrouter.sharded_tables (table_name, keyspace, key_column, vindex, key_type)
         values ($1, $2, $3, $4, $5)
         on conflict (table_name) do update
            set keyspace = excluded.keyspace, key_column = excluded.key_column,
                vindex = excluded.vindex, key_type = excluded.key_type
          where (sharded_tables.keyspace, sharded_tables.key_column,
                 sharded_tables.vindex, sharded_tables.key_type)
                is distinct from (excluded.keyspace, excluded.key_column,
                                  excluded.vindex, excluded.key_type)"
    } else {
        "insert into pgrouter.sharded_tables (table_name, keyspace, key_column, vindex, key_type)
         values ($1, $2, $3, $4, $5)
         on conflict (table_name) do nothing"
    };
    client
        .execute(
            sql,
            &[
                &name,
                &keyspace,
                &key_column,
                &vindex.as_str(),
                &key_type.as_str(),
            ],
        )
        .await
        .ctx(format!("upserting {}", row()))?;
    // Re-keying an owner or a lookup table must not break its lookup vindex.
    check_lookup_vindexes(client).await?;
    Ok(ShardedTable {
        name,
        keyspace: keyspace.to_string(),
        key_column,
        vindex,
        key_type,
    })
}

/// Declares reference table `table` (a full copy on every shard): its name is
/// normalized (schema dropped, lower case) and stored in
/// `pgrouter.reference_tables`. Idempotent. Returns the stored name.
///
/// Only the catalog changes: the table itself must be created (and filled)
/// on every shard, e.g. by `CREATE TABLE` through the router.
///
/// Errors: [`CatalogError::ShardedAndReference`] if the table is declared as
/// a sharded table; [`CatalogError::InvalidArgument`] for an empty name or a
/// catalog not migrated to version 3 (run `pg-router meta init`);
/// [`CatalogError::Db`].
pub async fn add_reference_table(client: &Client, table: &str) -> Result<String, CatalogError> {
    let name = normalize_table_name(table);
    require_name("table name", &name)?;
    tx::begin(client, tx::READ_WRITE).await?;
    let result = insert_reference_table(client, name).await;
    tx::finish(client, result).await
}

async fn insert_reference_table(client: &Client, name: String) -> Result<String, CatalogError> {
    lock_table_kinds(client).await?;
    require_reference_schema(client).await?;
    let sharded = client
        .query_opt(
            "select 1 from pgrouter.sharded_tables where table_name = $1",
            &[&name],
        )
        .await
        .ctx(format!("reading table '{name}'"))?;
    if sharded.is_some() {
        return Err(CatalogError::ShardedAndReference { table: name });
    }
    client
        .execute(
            "insert into pgrouter.reference_tables (table_name) values ($1) on conflict (table_name) do nothing",
            &[&name],
        )
        .await
        .ctx(format!("inserting reference table '{name}'"))?;
    Ok(name)
}

/// Removes reference table `table` (normalized like
/// [`add_reference_table`]) from the catalog; the shards' copies are left
/// alone. Returns `true` if it was declared, `false` if there was nothing to
/// drop.
///
/// Errors: [`CatalogError::InvalidArgument`] for an empty name or a catalog
/// not migrated to version 3; [`CatalogError::Db`].
pub async fn drop_reference_table(client: &Client, table: &str) -> Result<bool, CatalogError> {
    let name = normalize_table_name(table);
    require_name("table name", &name)?;
    require_reference_schema(client).await?;
    let deleted = client
        .execute(
            "delete from pgrouter.reference_tables where table_name = $1",
            &[&name],
        )
        .await
        .ctx(format!("deleting reference table '{name}'"))?;
    Ok(deleted > 0)
}

/// Serializes the transactions that declare tables (sharded or reference)
/// and lookup vindexes until commit, so two concurrent declarations cannot
/// give one name both kinds or leave a lookup vindex that does not fit its
/// tables.
pub(super) async fn lock_table_kinds(client: &Client) -> Result<(), CatalogError> {
    client
        .batch_execute("select pg_advisory_xact_lock(hashtext('pgrouter.table_kinds'))")
        .await
        .ctx("taking the table declaration lock")
}

/// True if `pgrouter.reference_tables` exists (catalog migration 3).
async fn has_reference_schema(client: &Client) -> Result<bool, CatalogError> {
    client
        .query_one(
            "select to_regclass('pgrouter.reference_tables') is not null",
            &[],
        )
        .await
        .and_then(|r| r.try_get(0))
        .ctx("looking for pgrouter.reference_tables")
}

async fn require_reference_schema(client: &Client) -> Result<(), CatalogError> {
    if has_reference_schema(client).await? {
        Ok(())
    } else {
        Err(CatalogError::InvalidArgument(
            "the catalog has no pgrouter.reference_tables yet; upgrade it with `pg-router meta init`"
                .into(),
        ))
    }
}

/// True if `name` is a declared reference table (false on a catalog without
/// reference tables).
pub(super) async fn is_reference_table(client: &Client, name: &str) -> Result<bool, CatalogError> {
    if !has_reference_schema(client).await? {
        return Ok(false);
    }
    let row = client
        .query_opt(
            "select 1 from pgrouter.reference_tables where table_name = $1",
            &[&name],
        )
        .await
        .ctx(format!("reading reference table '{name}'"))?;
    Ok(row.is_some())
}

/// Rejects an empty (or blank) identifier.
pub(super) fn require_name(what: &str, value: &str) -> Result<(), CatalogError> {
    if value.trim().is_empty() {
        Err(CatalogError::InvalidArgument(format!(
            "{what} must not be empty"
        )))
    } else {
        Ok(())
    }
}
