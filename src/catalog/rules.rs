//! Keyspace rules (`pgrouter.table_rules`, catalog migration 8): "a table
//! created through a router with column `c` is sharded by `c` in keyspace
//! `k`". [`add_table_rule`] and [`drop_table_rule`] are the admin side;
//! [`declare_by_rule`] is what a router runs before it creates such a
//! table on the shards.

use tokio_postgres::Client;

use super::error::{CatalogError, DbContext};
use super::model::{normalize_table_name, ShardedTable};
use super::ops::{is_reference_table, lock_table_kinds, require_name, upsert_table};
use super::tx;
use crate::vindex::KeyType;

/// Adds (or moves to `keyspace`) the rule for key column `column` (stored
/// lower case). Tables that exist already are not declared by it.
///
/// Errors: [`CatalogError::UnknownKeyspace`]; [`CatalogError::InvalidArgument`]
/// for an empty column or a catalog not migrated to version 8 (run
/// `pg-router meta init`); [`CatalogError::Db`].
pub async fn add_table_rule(
    client: &Client,
    column: &str,
    keyspace: &str,
) -> Result<(), CatalogError> {
    let column = column.trim().to_lowercase();
    require_name("key column", &column)?;
    require_rules_schema(client).await?;
    let known = client
        .query_opt(
            "select 1 from pgrouter.keyspaces where name = $1",
            &[&keyspace],
        )
        .await
        .ctx(format!("reading keyspace '{keyspace}'"))?;
    if known.is_none() {
        return Err(CatalogError::UnknownKeyspace {
            row: format!("table rule '{column}'"),
            keyspace: keyspace.to_string(),
        });
    }
    client
        .execute(
            "insert into pgrouter.table_rules (key_column, keyspace) values ($1, $2)
             on conflict (key_column) do update set keyspace = excluded.keyspace
              where table_rules.keyspace is distinct from excluded.keyspace",
            &[&column, &keyspace],
        )
        .await
        .ctx(format!("upserting table rule '{column}'"))?;
    Ok(())
}

/// Removes the rule for key column `column`; false if there was none. The
/// tables it declared stay declared.
///
/// Errors: as [`add_table_rule`].
pub async fn drop_table_rule(client: &Client, column: &str) -> Result<bool, CatalogError> {
    let column = column.trim().to_lowercase();
    require_name("key column", &column)?;
    require_rules_schema(client).await?;
    let n = client
        .execute(
            "delete from pgrouter.table_rules where key_column = $1",
            &[&column],
        )
        .await
        .ctx(format!("deleting table rule '{column}'"))?;
    Ok(n > 0)
}

/// Declares `table` sharded by `column` (of type `key_type`) in the keyspace
/// of `column`'s rule, with the keyspace's vindex, unless the table is
/// declared already (as either kind): one transaction under the table
/// declaration lock. Returns None if no rule names `column` any more or
/// the table is a reference table; a sharded table declared meanwhile is
/// kept as it is.
///
/// Errors: those of [`super::add_table`].
pub async fn declare_by_rule(
    client: &Client,
    table: &str,
    column: &str,
    key_type: KeyType,
) -> Result<Option<ShardedTable>, CatalogError> {
    let name = normalize_table_name(table);
    require_name("table name", &name)?;
    let column = column.to_lowercase();
    tx::begin(client, tx::READ_WRITE).await?;
    let result = async {
        lock_table_kinds(client).await?;
        let rule = client
            .query_opt(
                "select keyspace from pgrouter.table_rules where key_column = $1",
                &[&column],
            )
            .await
            .ctx(format!("reading table rule '{column}'"))?;
        let Some(rule) = rule else {
            return Ok(None);
        };
        let keyspace: String = rule
            .try_get(0)
            .ctx(format!("reading table rule '{column}'"))?;
        if is_reference_table(client, &name).await? {
            return Ok(None);
        }
        upsert_table(client, name, column, &keyspace, None, key_type, false)
            .await
            .map(Some)
    }
    .await;
    tx::finish(client, result).await
}

async fn require_rules_schema(client: &Client) -> Result<(), CatalogError> {
    let there: bool = client
        .query_one(
            "select to_regclass('pgrouter.table_rules') is not null",
            &[],
        )
        .await
        .and_then(|r| r.try_get(0))
        .ctx("looking for pgrouter.table_rules")?;
    if there {
        Ok(())
    } else {
        Err(CatalogError::InvalidArgument(
            "the catalog has no pgrouter.table_rules yet; upgrade it with `pg-router meta init`"
                .into(),
        ))
    }
}
