//! Parsing single raw catalog rows: vindex and key type names and
//! `sharded_tables` rows, and adding a parsed table to a set of tables
//! without duplicates (shared by the full validation and the lookup vindex
//! checks).

use foldhash::HashMap;

use crate::vindex::{KeyType, VindexKind};

use super::error::CatalogError;
use super::model::{normalize_table_name, ShardedTable};
use super::raw::RawTable;

/// Adds `table` to `tables`.
///
/// Errors: [`CatalogError::BadRow`] if a table of the same (normalized) name
/// is already there.
pub(super) fn insert_table(
    tables: &mut HashMap<String, ShardedTable>,
    table: ShardedTable,
) -> Result<(), CatalogError> {
    if tables.contains_key(&table.name) {
        return Err(CatalogError::BadRow {
            row: format!("table '{}'", table.name),
            problem: "declared twice (names differing only in case or schema)".into(),
        });
    }
    tables.insert(table.name.clone(), table);
    Ok(())
}

/// Parses a `sharded_tables` row (name normalized, key column lower case)
/// without checking its keyspace.
///
/// Errors: [`CatalogError::UnknownVindex`], [`CatalogError::UnknownKeyType`]
/// naming the table.
pub(super) fn parse_table(t: RawTable) -> Result<ShardedTable, CatalogError> {
    let name = normalize_table_name(&t.name);
    let row = || format!("table '{}'", t.name);
    let vindex = parse_vindex(&t.vindex, row)?;
    let key_type = parse_key_type(&t.key_type, row)?;
    Ok(ShardedTable {
        name,
        keyspace: t.keyspace,
        key_column: t.key_column.to_lowercase(),
        vindex,
        key_type,
    })
}

/// Parses a vindex name; `row` names where it came from for the error.
///
/// Errors: [`CatalogError::UnknownVindex`].
pub fn parse_vindex(name: &str, row: impl FnOnce() -> String) -> Result<VindexKind, CatalogError> {
    name.parse::<VindexKind>()
        .map_err(|_| CatalogError::UnknownVindex {
            row: row(),
            name: name.to_string(),
        })
}

/// Parses a key type name; `row` names where it came from for the error.
///
/// Errors: [`CatalogError::UnknownKeyType`].
pub fn parse_key_type(name: &str, row: impl FnOnce() -> String) -> Result<KeyType, CatalogError> {
    name.parse::<KeyType>()
        .map_err(|_| CatalogError::UnknownKeyType {
            row: row(),
            name: name.to_string(),
        })
}
