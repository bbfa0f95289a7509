//! Catalog rows as read from the `pgrouter` tables, before validation (the
//! input of `validate::build`).

/// A `pgrouter.keyspaces` row as stored.
#[derive(Debug, Clone)]
pub struct RawKeyspace {
    /// `name`.
    pub name: String,
    /// `vindex` (not yet parsed).
    pub vindex: String,
    /// `generation` (the active one).
    pub generation: i64,
}

/// A `pgrouter.shards` row as stored.
#[derive(Debug, Clone)]
pub struct RawShard {
    /// `name`.
    pub name: String,
    /// `host`.
    pub host: String,
    /// `port` (not yet range-checked).
    pub port: i32,
    /// `dbname`.
    pub dbname: String,
    /// `user_name`.
    pub user: Option<String>,
}

/// A `pgrouter.shard_ranges` row of an active generation, bounds as text.
#[derive(Debug, Clone)]
pub struct RawRange {
    /// `keyspace`.
    pub keyspace: String,
    /// `start_id::text`.
    pub start: String,
    /// `end_id::text` (NULL = unbounded).
    pub end: Option<String>,
    /// `shard`.
    pub shard: String,
    /// `generation`.
    pub generation: i64,
}

/// A `pgrouter.sharded_tables` row as stored.
#[derive(Debug, Clone)]
pub struct RawTable {
    /// `table_name`.
    pub name: String,
    /// `keyspace`.
    pub keyspace: String,
    /// `key_column`.
    pub key_column: String,
    /// `vindex` (not yet parsed).
    pub vindex: String,
    /// `key_type` (not yet parsed).
    pub key_type: String,
}

/// A `pgrouter.lookup_vindexes` row as stored (catalog migration 4).
#[derive(Debug, Clone)]
pub struct RawLookupVindex {
    /// `name`.
    pub name: String,
    /// `table_name` (the owner table).
    pub table: String,
    /// `column_name`.
    pub column: String,
    /// `key_type` (not yet parsed).
    pub key_type: String,
    /// `lookup_table`.
    pub lookup_table: String,
    /// `is_unique`.
    pub unique: bool,
}

/// All rows read by one catalog load (`catalog::load`).
#[derive(Debug, Clone, Default)]
pub struct RawCatalog {
    /// Keyspaces, by name.
    pub keyspaces: Vec<RawKeyspace>,
    /// Shards, by name.
    pub shards: Vec<RawShard>,
    /// Ranges of active generations, by keyspace then start.
    pub ranges: Vec<RawRange>,
    /// Sharded tables, by name.
    pub tables: Vec<RawTable>,
    /// `pgrouter.reference_tables.table_name` values, by name.
    pub reference_tables: Vec<String>,
    /// Lookup vindexes, by name (none before catalog migration 4).
    pub lookup_vindexes: Vec<RawLookupVindex>,
    /// Keyspace rules `(key_column, keyspace)`, by column (none before
    /// catalog migration 8).
    pub table_rules: Vec<(String, String)>,
}
