//! The in-memory catalog: keyspaces with their routing, shards, sharded
//! tables, reference tables.

use std::collections::BTreeMap;
use std::time::Instant;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use crate::topology::RoutingTable;
use crate::vindex::{KeyType, VindexKind};

/// A validated snapshot of the `pgrouter` catalog, as read by
/// `catalog::load` in one REPEATABLE READ transaction.
///
/// Invariants (checked by `load`): every keyspace has a gap-free,
/// overlap-free routing table covering `[0, 2^64)`; every table's keyspace is
/// in `keyspaces`; every shard a routing table names is in `shards`; no name
/// is both in `tables` and in `reference_tables`.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// Keyspaces by name.
    pub keyspaces: HashMap<String, Keyspace>,
    /// Shards by name (sorted).
    pub shards: BTreeMap<String, ShardInfo>,
    /// Sharded tables by name (lower case, no schema).
    pub tables: HashMap<String, ShardedTable>,
    /// Reference tables (a full copy on every shard) by name (lower case, no
    /// schema).
    pub reference_tables: HashSet<String>,
    /// Lookup vindexes by owner table name (lower case, no schema), each
    /// list sorted by vindex name.
    pub lookup_vindexes: HashMap<String, Vec<LookupVindex>>,
    /// Keyspace rules `(key_column, keyspace)` sorted by column: a table
    /// created through a router with such a column is declared sharded by
    /// it (`pgrouter.table_rules`, `docs/generated-keys.md`).
    pub table_rules: Vec<(String, String)>,
    /// When this snapshot was read.
    pub loaded_at: Instant,
}

/// A keyspace: tables sharded together by one vindex over one set of ranges.
#[derive(Debug, Clone)]
pub struct Keyspace {
    /// Keyspace name (`keyspaces.name`).
    pub name: String,
    /// The keyspace's default vindex (tables may override it).
    pub vindex: VindexKind,
    /// The active generation: `routing` holds the `shard_ranges` rows of it.
    pub generation: i64,
    /// Keyspace id → shard for the active generation.
    pub routing: RoutingTable,
}

/// Where a shard lives (`shards` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// Shard name, referenced by `shard_ranges.shard`.
    pub name: String,
    /// Host name or IP address.
    pub host: String,
    /// TCP port (1..=65535).
    pub port: u16,
    /// Database name on that server.
    pub dbname: String,
    /// User to connect as; `None` = the user the client authenticated as.
    pub user: Option<String>,
}

/// A sharded table (`sharded_tables` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardedTable {
    /// Table name, lower case, without schema.
    pub name: String,
    /// The keyspace whose routing places its rows.
    pub keyspace: String,
    /// The sharding key column (lower case).
    pub key_column: String,
    /// Vindex mapping the key to a keyspace id.
    pub vindex: VindexKind,
    /// How key values are parsed before hashing.
    pub key_type: KeyType,
}

/// An owned lookup vindex (`lookup_vindexes` row): maps the values of a
/// non-key column of an owner table to the keyspace ids of the rows holding
/// them, through a lookup table (Vitess's owned `lookup` /
/// `lookup_unique`). The lookup table is itself a sharded table of the
/// owner's keyspace, keyed by the looked-up value, with two columns:
/// `<column>` (the value, of `key_type`) and `keyspace_id bigint` (the
/// owner row's u64 keyspace id, stored as the signed bigint with the same
/// 64 bits). The router inserts and deletes its rows in the same
/// transaction as the owner rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupVindex {
    /// Vindex name (lower case).
    pub name: String,
    /// Owner table (a sharded table), lower case, no schema.
    pub table: String,
    /// Looked-up column of the owner table (lower case; not its sharding key).
    pub column: String,
    /// How values of the column are parsed before hashing.
    pub key_type: KeyType,
    /// The lookup table (a sharded table keyed by `column`), lower case.
    pub lookup_table: String,
    /// Unique: at most one owner row per value (the lookup table's primary
    /// key is `(<column>)`; a duplicate fails the owner's INSERT/UPDATE with
    /// 23505). Non-unique: primary key `(<column>, keyspace_id)`.
    pub unique: bool,
}

impl Catalog {
    /// A catalog with no keyspaces, shards or tables (every table lookup
    /// misses); what a router serves before its first load.
    pub fn empty() -> Catalog {
        Catalog {
            keyspaces: HashMap::new(),
            shards: BTreeMap::new(),
            tables: HashMap::new(),
            reference_tables: HashSet::new(),
            lookup_vindexes: HashMap::new(),
            table_rules: Vec::new(),
            loaded_at: Instant::now(),
        }
    }

    /// The sharded table `name`, which the caller has already normalized
    /// (lower case, no schema); `None` if it is not declared.
    pub fn table(&self, name: &str) -> Option<&ShardedTable> {
        self.tables.get(name)
    }

    /// True if `name` (already normalized: lower case, no schema) is a
    /// declared reference table.
    pub fn is_reference(&self, name: &str) -> bool {
        self.reference_tables.contains(name)
    }

    /// The keyspace of table `t`; `None` only if `t` is not from this catalog.
    pub fn keyspace_of(&self, t: &ShardedTable) -> Option<&Keyspace> {
        self.keyspaces.get(&t.keyspace)
    }

    /// The lookup vindexes owned by sharded table `name` (normalized), sorted
    /// by vindex name; empty if none.
    pub fn lookups_of(&self, name: &str) -> &[LookupVindex] {
        self.lookup_vindexes
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Names of all shards in the `shards` table, sorted.
    pub fn shard_names(&self) -> Vec<&str> {
        self.shards.keys().map(String::as_str).collect()
    }
}

/// Normalizes a table name the way the router looks it up: drops a schema
/// qualifier (`public.Orders` → `Orders`), then lower-cases (`orders`).
pub fn normalize_table_name(name: &str) -> String {
    let bare = name.rsplit('.').next().unwrap_or(name);
    bare.trim().trim_matches('"').to_lowercase()
}
