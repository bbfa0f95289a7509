//! [`show_routing`]: a human-readable dump of a [`Catalog`].

use std::fmt::Write;

use super::model::Catalog;

/// Renders `catalog` as plain text, sorted by name, in five or six sections:
///
/// ```text
/// keyspaces:
///   main  vindex hash_murmur3  generation 1  (2 ranges)
///     [0x0000000000000000, 0x8000000000000000) -> shard0
///     [0x8000000000000000, 0xffffffffffffffff] -> shard1
/// shards:
///   shard0  127.0.0.1:5433/postgres
/// tables:
///   pgbench_accounts  keyspace main  key aid  vindex hash_murmur3  key_type int
/// reference tables:
///   countries
/// lookup vindexes:
///   users_email  users.email -> users_email_lookup  unique  key_type text
/// table rules:
///   new tables with column id -> sharded by it in keyspace main
/// ```
///
/// (The table rules section only when there are rules.)
///
/// Ranges use `KeyRange`'s `Display`: an unbounded end is shown as the
/// inclusive `0xffffffffffffffff]`.
/// The text ends with a newline.
pub fn show_routing(catalog: &Catalog) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored.
    let _ = write_keyspaces(&mut out, catalog);
    let _ = write_shards(&mut out, catalog);
    let _ = write_tables(&mut out, catalog);
    let _ = write_reference_tables(&mut out, catalog);
    let _ = write_lookup_vindexes(&mut out, catalog);
    let _ = write_table_rules(&mut out, catalog);
    out
}

/// The keyspace rules, a section only when there are some.
fn write_table_rules(out: &mut String, catalog: &Catalog) -> std::fmt::Result {
    if catalog.table_rules.is_empty() {
        return Ok(());
    }
    writeln!(out, "table rules:")?;
    for (column, keyspace) in &catalog.table_rules {
        writeln!(
            out,
            "  new tables with column {column} -> sharded by it in keyspace {keyspace}"
        )?;
    }
    Ok(())
}

fn write_keyspaces(out: &mut String, catalog: &Catalog) -> std::fmt::Result {
    writeln!(out, "keyspaces:")?;
    let mut keyspaces: Vec<_> = catalog.keyspaces.values().collect();
    keyspaces.sort_by(|a, b| a.name.cmp(&b.name));
    if keyspaces.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for ks in keyspaces {
        let ranges = ks.routing.ranges();
        writeln!(
            out,
            "  {}  vindex {}  generation {}  ({} range{})",
            ks.name,
            ks.vindex.as_str(),
            ks.generation,
            ranges.len(),
            if ranges.len() == 1 { "" } else { "s" }
        )?;
        for r in ranges {
            writeln!(out, "    {} -> {}", r.range, r.shard)?;
        }
    }
    Ok(())
}

fn write_shards(out: &mut String, catalog: &Catalog) -> std::fmt::Result {
    writeln!(out, "shards:")?;
    if catalog.shards.is_empty() {
        writeln!(out, "  (none)")?;
    }
    let width = catalog.shards.keys().map(String::len).max().unwrap_or(0);
    for s in catalog.shards.values() {
        write!(
            out,
            "  {:width$}  {}:{}/{}",
            s.name, s.host, s.port, s.dbname
        )?;
        match &s.user {
            Some(u) => writeln!(out, "  user {u}")?,
            None => writeln!(out)?,
        }
    }
    Ok(())
}

fn write_tables(out: &mut String, catalog: &Catalog) -> std::fmt::Result {
    writeln!(out, "tables:")?;
    let mut tables: Vec<_> = catalog.tables.values().collect();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    if tables.is_empty() {
        writeln!(out, "  (none)")?;
    }
    let width = tables.iter().map(|t| t.name.len()).max().unwrap_or(0);
    for t in tables {
        writeln!(
            out,
            "  {:width$}  keyspace {}  key {}  vindex {}  key_type {}",
            t.name,
            t.keyspace,
            t.key_column,
            t.vindex.as_str(),
            t.key_type.as_str()
        )?;
    }
    Ok(())
}

fn write_reference_tables(out: &mut String, catalog: &Catalog) -> std::fmt::Result {
    writeln!(out, "reference tables:")?;
    let mut names: Vec<&str> = catalog
        .reference_tables
        .iter()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    if names.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for n in names {
        writeln!(out, "  {n}")?;
    }
    Ok(())
}

fn write_lookup_vindexes(out: &mut String, catalog: &Catalog) -> std::fmt::Result {
    writeln!(out, "lookup vindexes:")?;
    let mut all: Vec<_> = catalog.lookup_vindexes.values().flatten().collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    if all.is_empty() {
        writeln!(out, "  (none)")?;
    }
    let width = all.iter().map(|v| v.name.len()).max().unwrap_or(0);
    for v in all {
        writeln!(
            out,
            "  {:width$}  {}.{} -> {}  {}  key_type {}",
            v.name,
            v.table,
            v.column,
            v.lookup_table,
            if v.unique { "unique" } else { "non-unique" },
            v.key_type.as_str()
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::raw::{
        RawCatalog, RawKeyspace, RawLookupVindex, RawRange, RawShard, RawTable,
    };
    use crate::catalog::validate::build;

    #[test]
    fn shows_every_section() {
        let raw = RawCatalog {
            keyspaces: vec![RawKeyspace {
                name: "main".into(),
                vindex: "hash_murmur3".into(),
                generation: 2,
            }],
            shards: vec![RawShard {
                name: "shard0".into(),
                host: "10.0.0.1".into(),
                port: 6432,
                dbname: "app".into(),
                user: Some("router".into()),
            }],
            ranges: vec![RawRange {
                keyspace: "main".into(),
                start: "0".into(),
                end: None,
                shard: "shard0".into(),
                generation: 2,
            }],
            tables: [
                "orders:id",
                "orders_email_lookup:email",
                "orders_sku_lookup:sku",
            ]
            .iter()
            .map(|t| {
                let (name, key) = t.split_once(':').expect("name:key");
                RawTable {
                    name: name.into(),
                    keyspace: "main".into(),
                    key_column: key.into(),
                    vindex: "hash_murmur3".into(),
                    key_type: "text".into(),
                }
            })
            .collect(),
            reference_tables: vec!["countries".into(), "currencies".into()],
            lookup_vindexes: [("orders_sku", "sku", false), ("by_email", "email", true)]
                .iter()
                .map(|(name, column, unique)| RawLookupVindex {
                    name: name.to_string(),
                    table: "orders".into(),
                    column: column.to_string(),
                    key_type: "text".into(),
                    lookup_table: format!("orders_{column}_lookup"),
                    unique: *unique,
                })
                .collect(),
            table_rules: vec![("id".into(), "main".into())],
        };
        let text = show_routing(&build(raw).expect("valid"));
        assert!(
            text.contains("main  vindex hash_murmur3  generation 2  (1 range)"),
            "{text}"
        );
        assert!(
            text.contains("[0x0000000000000000, 0xffffffffffffffff] -> shard0"),
            "{text}"
        );
        assert!(
            text.contains("shard0  10.0.0.1:6432/app  user router"),
            "{text}"
        );
        assert!(
            text.contains(
                "\n  orders               keyspace main  key id  vindex hash_murmur3  key_type text\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("reference tables:\n  countries\n  currencies\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "lookup vindexes:\n\
                 \x20 by_email    orders.email -> orders_email_lookup  unique  key_type text\n\
                 \x20 orders_sku  orders.sku -> orders_sku_lookup  non-unique  key_type text\n\
                 table rules:\n\
                 \x20 new tables with column id -> sharded by it in keyspace main\n"
            ),
            "{text}"
        );
        let empty = show_routing(&Catalog::empty());
        assert!(
            empty.ends_with("reference tables:\n  (none)\nlookup vindexes:\n  (none)\n"),
            "{empty}"
        );
    }
}
