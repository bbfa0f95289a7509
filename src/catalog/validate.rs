//! Turning raw catalog rows into a validated [`Catalog`] (no I/O).

use std::collections::BTreeMap;
use std::time::Instant;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use crate::topology::{KeyRange, RoutingTable, ShardRange};

use super::error::CatalogError;
use super::keyid;
use super::lookup_check::build_lookup_vindexes;
use super::model::{normalize_table_name, Catalog, Keyspace, ShardInfo, ShardedTable};
use super::parse_row::{insert_table, parse_table, parse_vindex};
use super::raw::{RawCatalog, RawRange, RawShard, RawTable};

/// Validates `raw` and builds the catalog. Rows are checked in the order
/// given, so the first error reported is deterministic.
///
/// Errors: the first invalid row, see `catalog::load`.
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
    for (column, keyspace) in &raw.table_rules {
        if !keyspaces.contains_key(keyspace) {
            return Err(CatalogError::UnknownKeyspace {
                row: format!("table rule '{column}'"),
                keyspace: keyspace.clone(),
            });
        }
    }
    Ok(Catalog {
        keyspaces,
        shards,
        tables,
        reference_tables,
        lookup_vindexes,
        table_rules: raw.table_rules,
        loaded_at: Instant::now(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_rows::raw;
    use crate::vindex::{KeyType, VindexKind};

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
