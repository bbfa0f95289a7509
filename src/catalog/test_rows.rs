//! Raw catalog rows shared by the validation unit tests (`validate`,
//! `lookup_check`).

use foldhash::HashMap;

use crate::vindex::{KeyType, VindexKind};

use super::keyid;
use super::model::ShardedTable;
use super::raw::{RawCatalog, RawKeyspace, RawLookupVindex, RawRange, RawShard, RawTable};

/// A valid raw catalog: keyspace `main` (hash) with two shards `s0`, `s1`
/// splitting it at 2^63, sharded table `Public.Orders` (key `ID`,
/// `hash_murmur3`, bigint), reference tables `Public.Countries` and
/// `currencies`, no lookup vindexes.
pub(super) fn raw() -> RawCatalog {
    RawCatalog {
        keyspaces: vec![RawKeyspace {
            name: "main".into(),
            vindex: "hash".into(),
            generation: 1,
        }],
        shards: ["s0", "s1"]
            .iter()
            .map(|n| RawShard {
                name: n.to_string(),
                host: "127.0.0.1".into(),
                port: 5432,
                dbname: "postgres".into(),
                user: None,
            })
            .collect(),
        ranges: vec![
            RawRange {
                keyspace: "main".into(),
                start: "0".into(),
                end: Some("9223372036854775808".into()),
                shard: "s0".into(),
                generation: 1,
            },
            RawRange {
                keyspace: "main".into(),
                start: "9223372036854775808".into(),
                end: Some(keyid::TWO_POW_64.into()),
                shard: "s1".into(),
                generation: 1,
            },
        ],
        tables: vec![RawTable {
            name: "Public.Orders".into(),
            keyspace: "main".into(),
            key_column: "ID".into(),
            vindex: "hash_murmur3".into(),
            key_type: "bigint".into(),
        }],
        reference_tables: vec!["Public.Countries".into(), "currencies".into()],
        lookup_vindexes: vec![],
        table_rules: vec![],
    }
}

/// A sharded table with the `hash_murmur3` vindex.
pub(super) fn table(
    name: &str,
    keyspace: &str,
    key_column: &str,
    key_type: KeyType,
) -> ShardedTable {
    ShardedTable {
        name: name.into(),
        keyspace: keyspace.into(),
        key_column: key_column.into(),
        vindex: VindexKind::HashMurmur3,
        key_type,
    }
}

/// users (key id), orders (key id), users_email_lookup (key email,
/// text), orders_note_lookup (key note, text), email_lookup_b (key
/// email, text), all in `main`; `other_ks` (key email, text) in keyspace
/// `other`.
pub(super) fn lookup_tables() -> HashMap<String, ShardedTable> {
    [
        table("users", "main", "id", KeyType::Int),
        table("orders", "main", "id", KeyType::Int),
        table("users_email_lookup", "main", "email", KeyType::Text),
        table("orders_note_lookup", "main", "note", KeyType::Text),
        table("other_ks", "other", "email", KeyType::Text),
        table("email_lookup_b", "main", "email", KeyType::Text),
    ]
    .into_iter()
    .map(|t| (t.name.clone(), t))
    .collect()
}

/// A unique lookup vindex row with key type `text`.
pub(super) fn raw_lookup(
    name: &str,
    table: &str,
    column: &str,
    lookup_table: &str,
) -> RawLookupVindex {
    RawLookupVindex {
        name: name.into(),
        table: table.into(),
        column: column.into(),
        key_type: "text".into(),
        lookup_table: lookup_table.into(),
        unique: true,
    }
}
