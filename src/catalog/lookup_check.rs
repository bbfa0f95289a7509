//! Validating lookup vindex rows against the sharded tables they name (no
//! I/O): at load ([`build_lookup_vindexes`]) and before an admin operation
//! commits ([`check_lookup_rows`]).

use foldhash::{HashMap, HashMapExt, HashSet};

use super::error::CatalogError;
use super::model::{normalize_table_name, LookupVindex, ShardedTable};
use super::parse_row::{insert_table, parse_key_type, parse_table};
use super::raw::{RawLookupVindex, RawTable};

/// Validates the lookup vindex rows `raw` (in the order given) against the
/// sharded tables and groups them by owner table, each list sorted by vindex
/// name (the shape of
/// [`Catalog::lookup_vindexes`](super::model::Catalog::lookup_vindexes)).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_rows::{lookup_tables, raw, raw_lookup, table};
    use crate::catalog::validate::build;
    use crate::vindex::KeyType;

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
}
