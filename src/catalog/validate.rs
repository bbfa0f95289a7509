//! Turning raw catalog rows into a validated [`Catalog`] (no I/O).

use std::collections::BTreeMap;
use std::time::Instant;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use crate::topology::{KeyRange, RoutingTable, ShardRange};
use crate::vindex::{KeyType, VindexKind};

use super::error::CatalogError;
use super::keyid;
use super::model::{
    normalize_table_name, Catalog, Keyspace, LookupVindex, ShardInfo, ShardedTable,
};

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

/// All rows read by one [`load`](super::load).
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
}

/// Validates `raw` and builds the catalog. Rows are checked in the order
/// given, so the first error reported is deterministic.
///
/// Errors: the first invalid row, see [`load`](super::load).
pub fn build(raw: RawCatalog) -> Result<Catalog, CatalogError> {
    let shards = build_shards(raw.shards)?;
    let mut ranges_by_ks: HashMap<String, Vec<ShardRange>> = HashMap::new();
    for r in raw.ranges {
        let range = build_range(&r, &shards)?;
        ranges_by_ks
            .entry(r.keyspace.clone())
            .or_default()
            .push(range);
    }
    let mut keyspaces = HashMap::new();
    for k in raw.keyspaces {
        let vindex = parse_vindex(&k.vindex, || format!("keyspace '{}'", k.name))?;
        let ranges = ranges_by_ks.remove(&k.name).unwrap_or_default();
        if ranges.is_empty() {
            return Err(CatalogError::NoRanges {
                keyspace: k.name,
                generation: k.generation,
            });
        }
        let routing =
            RoutingTable::from_ranges(&k.name, ranges).map_err(|source| CatalogError::Routing {
                keyspace: k.name.clone(),
                generation: k.generation,
                source: Box::new(source),
            })?;
        keyspaces.insert(
            k.name.clone(),
            Keyspace {
                name: k.name,
                vindex,
                generation: k.generation,
                routing,
            },
        );
    }
    let mut tables = HashMap::new();
    for t in raw.tables {
        insert_table(&mut tables, build_table(t, &keyspaces)?)?;
    }
    let reference_tables = build_reference_tables(raw.reference_tables, &tables)?;
    let lookup_vindexes = build_lookup_vindexes(raw.lookup_vindexes, &tables)?;
    Ok(Catalog {
        keyspaces,
        shards,
        tables,
        reference_tables,
        lookup_vindexes,
        loaded_at: Instant::now(),
    })
}

/// Adds `table` to `tables`.
///
/// Errors: [`CatalogError::BadRow`] if a table of the same (normalized) name
/// is already there.
fn insert_table(
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

/// Validates the lookup vindex rows `raw` (in the order given) against the
/// sharded tables and groups them by owner table, each list sorted by vindex
/// name (the shape of [`Catalog::lookup_vindexes`]).
///
/// Each row must name an owner and a lookup table that are distinct
/// declared sharded tables of one keyspace, the lookup table keyed by the
/// looked-up column with the vindex's key type, and a column that is not the
/// owner's sharding key. Across rows: names are unique, a lookup table
/// serves one vindex, an owner table has one vindex per column, and no
/// lookup table owns a lookup vindex.
///
/// Errors: [`CatalogError::UnknownKeyType`], [`CatalogError::UnknownTable`],
/// [`CatalogError::BadLookupVindex`], [`CatalogError::BadRow`] (empty or
/// duplicate name), each naming the row.
pub fn build_lookup_vindexes(
    raw: Vec<RawLookupVindex>,
    tables: &HashMap<String, ShardedTable>,
) -> Result<HashMap<String, Vec<LookupVindex>>, CatalogError> {
    let mut all: Vec<LookupVindex> = Vec::with_capacity(raw.len());
    // Lookup table -> the vindex using it.
    let mut lookup_tables: HashMap<String, String> = HashMap::with_capacity(raw.len());
    for r in raw {
        let v = build_lookup_vindex(r, tables)?;
        let problem = if all.iter().any(|o| o.name == v.name) {
            Some("declared twice (names differing only in case)".to_string())
        } else if let Some(o) = all
            .iter()
            .find(|o| o.table == v.table && o.column == v.column)
        {
            Some(format!(
                "table '{}' column '{}' already has lookup vindex '{}'",
                v.table, v.column, o.name
            ))
        } else {
            lookup_tables.get(&v.lookup_table).map(|o| {
                format!(
                    "lookup table '{}' is already the lookup table of vindex '{o}'",
                    v.lookup_table
                )
            })
        };
        if let Some(problem) = problem {
            return Err(CatalogError::BadLookupVindex {
                name: v.name,
                problem,
            });
        }
        lookup_tables.insert(v.lookup_table.clone(), v.name.clone());
        all.push(v);
    }
    let mut by_owner: HashMap<String, Vec<LookupVindex>> = HashMap::new();
    for v in all {
        if let Some(o) = lookup_tables.get(&v.table) {
            return Err(CatalogError::BadLookupVindex {
                problem: format!(
                    "owner table '{}' is the lookup table of vindex '{o}'; a lookup table cannot own a lookup vindex",
                    v.table
                ),
                name: v.name,
            });
        }
        by_owner.entry(v.table.clone()).or_default().push(v);
    }
    for list in by_owner.values_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(by_owner)
}

/// Validates one lookup vindex row against `tables` (see
/// [`build_lookup_vindexes`]); names are normalized (lower case, no schema).
fn build_lookup_vindex(
    r: RawLookupVindex,
    tables: &HashMap<String, ShardedTable>,
) -> Result<LookupVindex, CatalogError> {
    let row = || format!("lookup vindex '{}'", r.name);
    let name = r.name.trim().to_lowercase();
    if name.is_empty() {
        return Err(CatalogError::BadRow {
            row: row(),
            problem: "empty vindex name".into(),
        });
    }
    let key_type = parse_key_type(&r.key_type, row)?;
    let v = LookupVindex {
        name,
        table: normalize_table_name(&r.table),
        column: r.column.trim().to_lowercase(),
        key_type,
        lookup_table: normalize_table_name(&r.lookup_table),
        unique: r.unique,
    };
    let owner = tables
        .get(&v.table)
        .ok_or_else(|| CatalogError::UnknownTable {
            row: row(),
            table: v.table.clone(),
        })?;
    let lookup = tables
        .get(&v.lookup_table)
        .ok_or_else(|| CatalogError::UnknownTable {
            row: row(),
            table: v.lookup_table.clone(),
        })?;
    match lookup_mismatch(&v, owner, lookup) {
        Some(problem) => Err(CatalogError::BadLookupVindex {
            name: v.name,
            problem,
        }),
        None => Ok(v),
    }
}

/// What is wrong with lookup vindex `v` given its owner and lookup tables
/// (`None` if they fit). Shared with the admin operations.
pub(super) fn lookup_mismatch(
    v: &LookupVindex,
    owner: &ShardedTable,
    lookup: &ShardedTable,
) -> Option<String> {
    if v.column.is_empty() {
        Some("empty column name".into())
    } else if v.lookup_table == v.table {
        Some(format!(
            "the lookup table must not be the owner table '{}'",
            v.table
        ))
    } else if v.column == owner.key_column {
        Some(format!(
            "column '{}' is the sharding key of table '{}'; a lookup vindex is for another column",
            v.column, v.table
        ))
    } else if lookup.keyspace != owner.keyspace {
        Some(format!(
            "lookup table '{}' is in keyspace '{}' but owner table '{}' is in keyspace '{}'",
            lookup.name, lookup.keyspace, owner.name, owner.keyspace
        ))
    } else if lookup.key_column != v.column {
        Some(format!(
            "lookup table '{}' is keyed by column '{}', not by the looked-up column '{}'",
            lookup.name, lookup.key_column, v.column
        ))
    } else if lookup.key_type != v.key_type {
        Some(format!(
            "lookup table '{}' has key_type {} but the vindex has key_type {}",
            lookup.name,
            lookup.key_type.as_str(),
            v.key_type.as_str()
        ))
    } else {
        None
    }
}

/// Validates lookup vindex rows against sharded table rows outside a full
/// load (the admin operations check the catalog they are about to commit
/// this way). Only the sharded tables named by a lookup vindex are parsed;
/// their keyspaces are not checked.
///
/// Errors: those of [`build_lookup_vindexes`]; for a named table with an
/// unknown vindex or key type, [`CatalogError::UnknownVindex`] /
/// [`CatalogError::UnknownKeyType`]; [`CatalogError::BadRow`] for a named
/// table declared twice.
pub fn check_lookup_rows(
    lookups: Vec<RawLookupVindex>,
    tables: Vec<RawTable>,
) -> Result<(), CatalogError> {
    let named: HashSet<String> = lookups
        .iter()
        .flat_map(|l| {
            [
                normalize_table_name(&l.table),
                normalize_table_name(&l.lookup_table),
            ]
        })
        .collect();
    let mut parsed = HashMap::with_capacity(named.len());
    for t in tables {
        if named.contains(&normalize_table_name(&t.name)) {
            insert_table(&mut parsed, parse_table(t)?)?;
        }
    }
    build_lookup_vindexes(lookups, &parsed).map(|_| ())
}

/// Normalizes reference table names and checks that none is also a sharded
/// table (names equal after normalization are one table).
fn build_reference_tables(
    raw: Vec<String>,
    tables: &HashMap<String, ShardedTable>,
) -> Result<HashSet<String>, CatalogError> {
    let mut out = HashSet::with_capacity(raw.len());
    for r in raw {
        let name = normalize_table_name(&r);
        if name.is_empty() {
            return Err(CatalogError::BadRow {
                row: format!("reference table '{r}'"),
                problem: "empty table name".into(),
            });
        }
        if tables.contains_key(&name) {
            return Err(CatalogError::ShardedAndReference { table: name });
        }
        out.insert(name);
    }
    Ok(out)
}

fn build_shards(raw: Vec<RawShard>) -> Result<BTreeMap<String, ShardInfo>, CatalogError> {
    let mut shards = BTreeMap::new();
    for s in raw {
        let port = u16::try_from(s.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| CatalogError::BadRow {
                row: format!("shard '{}'", s.name),
                problem: format!("port {} is not in 1..=65535", s.port),
            })?;
        shards.insert(
            s.name.clone(),
            ShardInfo {
                name: s.name,
                host: s.host,
                port,
                dbname: s.dbname,
                user: s.user,
            },
        );
    }
    Ok(shards)
}

fn build_range(
    r: &RawRange,
    shards: &BTreeMap<String, ShardInfo>,
) -> Result<ShardRange, CatalogError> {
    let row = || {
        format!(
            "shard_ranges row (keyspace '{}', generation {}, start_id {})",
            r.keyspace, r.generation, r.start
        )
    };
    let bad = |problem: String| CatalogError::BadRow {
        row: row(),
        problem,
    };
    let start = keyid::parse_start(&r.start).map_err(bad)?;
    let end = keyid::parse_end(r.end.as_deref()).map_err(bad)?;
    if end.is_some_and(|e| e <= start) {
        return Err(bad(format!(
            "end_id {} is not above start_id",
            r.end.as_deref().unwrap_or("NULL")
        )));
    }
    if !shards.contains_key(&r.shard) {
        return Err(CatalogError::UnknownShard {
            row: row(),
            shard: r.shard.clone(),
        });
    }
    Ok(ShardRange {
        keyspace: r.keyspace.clone(),
        range: KeyRange { start, end },
        shard: r.shard.clone(),
        generation: r.generation,
    })
}

fn build_table(
    t: RawTable,
    keyspaces: &HashMap<String, Keyspace>,
) -> Result<ShardedTable, CatalogError> {
    if !keyspaces.contains_key(&t.keyspace) {
        return Err(CatalogError::UnknownKeyspace {
            row: format!("table '{}'", t.name),
            keyspace: t.keyspace,
        });
    }
    parse_table(t)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawCatalog {
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
        }
    }

    fn table(name: &str, keyspace: &str, key_column: &str, key_type: KeyType) -> ShardedTable {
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
    fn lookup_tables() -> HashMap<String, ShardedTable> {
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

    fn raw_lookup(name: &str, table: &str, column: &str, lookup_table: &str) -> RawLookupVindex {
        RawLookupVindex {
            name: name.into(),
            table: table.into(),
            column: column.into(),
            key_type: "text".into(),
            lookup_table: lookup_table.into(),
            unique: true,
        }
    }

    #[test]
    fn builds_lookup_vindexes_by_owner() {
        let mut r = raw();
        r.tables.push(RawTable {
            name: "orders_note_lookup".into(),
            keyspace: "main".into(),
            key_column: "Note".into(),
            vindex: "hash".into(),
            key_type: "text".into(),
        });
        r.lookup_vindexes = vec![RawLookupVindex {
            name: "Orders_Note".into(),
            table: "public.ORDERS".into(),
            column: "NOTE".into(),
            key_type: "text".into(),
            lookup_table: "Orders_Note_Lookup".into(),
            unique: false,
        }];
        let c = build(r).expect("valid");
        assert_eq!(
            c.lookups_of("orders"),
            &[LookupVindex {
                name: "orders_note".into(),
                table: "orders".into(),
                column: "note".into(),
                key_type: KeyType::Text,
                lookup_table: "orders_note_lookup".into(),
                unique: false,
            }]
        );
        assert!(c.lookups_of("orders_note_lookup").is_empty());
        assert!(build(raw()).expect("none").lookup_vindexes.is_empty());

        // Several vindexes of one owner are sorted by name.
        let mut t = lookup_tables();
        t.insert(
            "users_note_lookup".into(),
            table("users_note_lookup", "main", "note", KeyType::Text),
        );
        let by_owner = build_lookup_vindexes(
            vec![
                raw_lookup("z_users", "users", "email", "users_email_lookup"),
                raw_lookup("a_orders", "orders", "note", "orders_note_lookup"),
                raw_lookup("b_users", "users", "note", "users_note_lookup"),
            ],
            &t,
        )
        .expect("two owners");
        let names = |owner: &str| -> Vec<&str> {
            by_owner[owner].iter().map(|v| v.name.as_str()).collect()
        };
        assert_eq!(by_owner.len(), 2);
        assert_eq!(names("users"), ["b_users", "z_users"]);
        assert_eq!(names("orders"), ["a_orders"]);
    }

    #[test]
    fn lookup_vindex_errors_name_the_row() {
        let t = lookup_tables();
        let one = |r: RawLookupVindex| {
            build_lookup_vindexes(vec![r], &t)
                .expect_err("invalid")
                .to_string()
        };
        let ok = raw_lookup("users_email", "users", "email", "users_email_lookup");
        build_lookup_vindexes(vec![ok.clone()], &t).expect("valid");

        let e = one(raw_lookup("v", "nope", "email", "users_email_lookup"));
        assert!(
            e.contains("lookup vindex 'v'") && e.contains("'nope' is not a declared sharded table"),
            "{e}"
        );
        let e = one(raw_lookup("v", "users", "email", "missing"));
        assert!(
            e.contains("lookup vindex 'v'") && e.contains("'missing'"),
            "{e}"
        );
        let e = one(raw_lookup("v", "users", "email", "users"));
        assert!(e.contains("must not be the owner table 'users'"), "{e}");
        let e = one(raw_lookup("v", "users", "ID", "users_email_lookup"));
        assert!(
            e.contains("column 'id' is the sharding key of table 'users'"),
            "{e}"
        );
        let e = one(raw_lookup("v", "users", "email", "other_ks"));
        assert!(
            e.contains("in keyspace 'other'") && e.contains("in keyspace 'main'"),
            "{e}"
        );
        let e = one(raw_lookup("v", "users", "name", "users_email_lookup"));
        assert!(
            e.contains("keyed by column 'email', not by the looked-up column 'name'"),
            "{e}"
        );
        let mut r = ok.clone();
        r.key_type = "uuid".into();
        let e = one(r);
        assert!(
            e.contains("key_type text but the vindex has key_type uuid"),
            "{e}"
        );
        let mut r = ok.clone();
        r.key_type = "float".into();
        let e = one(r);
        assert!(
            e.contains("lookup vindex 'users_email'") && e.contains("'float'"),
            "{e}"
        );
        let e = one(raw_lookup(" ", "users", "email", "users_email_lookup"));
        assert!(e.contains("empty vindex name"), "{e}");

        let many = |rows: Vec<RawLookupVindex>| {
            build_lookup_vindexes(rows, &t)
                .expect_err("invalid")
                .to_string()
        };
        // One lookup table for two vindexes.
        let e = many(vec![
            ok.clone(),
            raw_lookup("orders_email", "orders", "email", "users_email_lookup"),
        ]);
        assert!(
            e.contains("lookup vindex 'orders_email'")
                && e.contains("already the lookup table of vindex 'users_email'"),
            "{e}"
        );
        // Two vindexes on one column.
        let e = many(vec![
            ok.clone(),
            raw_lookup("again", "users", "email", "email_lookup_b"),
        ]);
        assert!(
            e.contains("lookup vindex 'again'")
                && e.contains(
                    "table 'users' column 'email' already has lookup vindex 'users_email'"
                ),
            "{e}"
        );
        // Same name twice.
        let e = many(vec![
            ok.clone(),
            raw_lookup("USERS_EMAIL", "orders", "note", "orders_note_lookup"),
        ]);
        assert!(e.contains("declared twice"), "{e}");
        // A lookup table owning a lookup vindex, whichever row comes first.
        let chained = raw_lookup(
            "chained",
            "users_email_lookup",
            "note",
            "orders_note_lookup",
        );
        for rows in [vec![ok.clone(), chained.clone()], vec![chained, ok.clone()]] {
            let e = many(rows);
            assert!(
                e.contains("lookup vindex 'chained'")
                    && e.contains("owner table 'users_email_lookup' is the lookup table of vindex 'users_email'"),
                "{e}"
            );
        }
    }

    #[test]
    fn builds_a_valid_catalog() {
        let c = build(raw()).expect("valid");
        let ks = &c.keyspaces["main"];
        assert_eq!(ks.vindex, VindexKind::HashMurmur3);
        assert_eq!(ks.routing.ranges().len(), 2);
        assert_eq!(
            ks.routing.ranges()[1].range,
            KeyRange {
                start: 1 << 63,
                end: None
            }
        );
        let t = c.table("orders").expect("normalized name");
        assert_eq!(t.key_column, "id");
        assert_eq!(t.key_type, KeyType::Int);
        assert_eq!(c.shard_names(), vec!["s0", "s1"]);
        assert_eq!(c.keyspace_of(t).map(|k| k.name.as_str()), Some("main"));
        assert!(c.is_reference("countries") && c.is_reference("currencies"));
        assert!(!c.is_reference("orders") && c.reference_tables.len() == 2);
    }

    #[test]
    fn a_table_cannot_be_sharded_and_reference() {
        let mut r = raw();
        r.reference_tables.push("ORDERS".into());
        let e = build(r).expect_err("both");
        assert!(
            matches!(&e, CatalogError::ShardedAndReference { table } if table == "orders"),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("'orders'") && msg.contains("both a sharded table and a reference table"),
            "{msg}"
        );
        let mut r = raw();
        r.reference_tables.push("  ".into());
        let e = build(r).expect_err("empty").to_string();
        assert!(e.contains("empty table name"), "{e}");
    }

    #[test]
    fn reports_the_offending_row() {
        let mut r = raw();
        r.keyspaces[0].vindex = "md5".into();
        let e = build(r).expect_err("bad vindex").to_string();
        assert!(e.contains("keyspace 'main'") && e.contains("md5"), "{e}");

        let mut r = raw();
        r.tables[0].key_type = "float".into();
        let e = build(r).expect_err("bad key type").to_string();
        assert!(
            e.contains("table 'Public.Orders'") && e.contains("float"),
            "{e}"
        );

        let mut r = raw();
        r.tables[0].keyspace = "other".into();
        let e = build(r).expect_err("unknown keyspace").to_string();
        assert!(
            e.contains("table 'Public.Orders'") && e.contains("'other'"),
            "{e}"
        );

        let mut r = raw();
        r.ranges.clear();
        let e = build(r).expect_err("no ranges").to_string();
        assert!(
            e.contains("keyspace 'main'") && e.contains("generation 1"),
            "{e}"
        );

        let mut r = raw();
        r.ranges[1].start = "9223372036854775809".into();
        let e = build(r).expect_err("gap");
        assert!(
            matches!(&e, CatalogError::Routing { keyspace, generation: 1, .. } if keyspace == "main"),
            "{e}"
        );

        let mut r = raw();
        r.ranges[1].start = "-5".into();
        let e = build(r).expect_err("negative").to_string();
        assert!(e.contains("start_id -5"), "{e}");

        let mut r = raw();
        r.shards[0].port = 70000;
        let e = build(r).expect_err("port").to_string();
        assert!(e.contains("shard 's0'") && e.contains("70000"), "{e}");
    }
}
