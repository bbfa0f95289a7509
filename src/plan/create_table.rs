//! What a keyspace rule needs of a `CREATE TABLE` (`catalog::declare_by_rule`):
//! the new table's catalog name and its columns with the sharding key type
//! each could have.

use sqlparser::ast::{DataType, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::lex::significant;
use super::names::{classify_object, norm_ident, object_parts, TableClass};
use super::SchemaView;
use crate::vindex::KeyType;

/// A `CREATE TABLE` of a table the catalog does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTable {
    /// Catalog name (lower case unless quoted, no `public.`).
    pub table: String,
    /// The listed columns in order: name (folded) and the key type a
    /// sharding key of its type has (None: not usable as a key).
    pub columns: Vec<(String, Option<KeyType>)>,
}

/// The table `sql` creates, if it is a plain `CREATE TABLE name (columns)`
/// of a permanent table in the default schema that is neither declared
/// nor a system catalog. `CREATE TABLE ... AS`, `LIKE`, `PARTITION OF`,
/// `INHERITS`, temporary tables and other schemas give None.
pub fn created_table(sql: &str, schema: &dyn SchemaView) -> Option<CreatedTable> {
    if !significant(sql).next()?.is_word(sql, "create") {
        return None;
    }
    let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let [Statement::CreateTable(ct)] = stmts.as_slice() else {
        return None;
    };
    if ct.temporary
        || ct.query.is_some()
        || ct.like.is_some()
        || ct.clone.is_some()
        || ct.partition_of.is_some()
        || ct.inherits.is_some()
        || ct.columns.is_empty()
    {
        return None;
    }
    let parts = object_parts(&ct.name)?;
    if parts.len() > 1 && parts.first().map(String::as_str) != Some("public") {
        return None;
    }
    let TableClass::Unknown(table) = classify_object(&ct.name, schema) else {
        return None;
    };
    let columns = ct
        .columns
        .iter()
        .map(|c| (norm_ident(&c.name), key_type(&c.data_type)))
        .collect();
    Some(CreatedTable { table, columns })
}

/// The key type of a column of type `t`: integers (serials included) →
/// int, `text`/`varchar` → text, `uuid` → uuid.
fn key_type(t: &DataType) -> Option<KeyType> {
    match t {
        DataType::SmallInt(_)
        | DataType::Int(_)
        | DataType::Integer(_)
        | DataType::BigInt(_)
        | DataType::Int2(_)
        | DataType::Int4(_)
        | DataType::Int8(_) => Some(KeyType::Int),
        DataType::Text
        | DataType::Varchar(_)
        | DataType::CharacterVarying(_)
        | DataType::CharVarying(_) => Some(KeyType::Text),
        DataType::Uuid => Some(KeyType::Uuid),
        DataType::Custom(name, mods) if mods.is_empty() => {
            let n = object_parts(name)?;
            match n.last().map(String::as_str)? {
                "serial" | "bigserial" | "smallserial" | "serial2" | "serial4" | "serial8" => {
                    Some(KeyType::Int)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoTables;
    impl SchemaView for NoTables {
        fn key_column(&self, table: &str) -> Option<&str> {
            (table == "known").then_some("id")
        }
    }

    #[test]
    fn sysbench_and_other_tables() {
        let t = created_table(
            "CREATE TABLE sbtest1(\n  id SERIAL,\n  k INTEGER DEFAULT '0' NOT NULL,\n  c CHAR(120) DEFAULT '' NOT NULL,\n  pad CHAR(60) DEFAULT '' NOT NULL,\n  PRIMARY KEY (id)\n)",
            &NoTables,
        )
        .expect("sysbench's table");
        assert_eq!(t.table, "sbtest1");
        assert_eq!(
            t.columns,
            vec![
                ("id".into(), Some(KeyType::Int)),
                ("k".into(), Some(KeyType::Int)),
                ("c".into(), None),
                ("pad".into(), None),
            ]
        );
        let t = created_table(
            "/* x */ create table public.\"Users\" (\"Email\" text, u uuid, b bigserial)",
            &NoTables,
        )
        .expect("quoted");
        assert_eq!(t.table, "Users");
        assert_eq!(t.columns[0], ("Email".into(), Some(KeyType::Text)));
        assert_eq!(t.columns[1].1, Some(KeyType::Uuid));
        assert_eq!(t.columns[2].1, Some(KeyType::Int));
        for sql in [
            "CREATE TABLE known (id int)",
            "CREATE TEMP TABLE t (id int)",
            "CREATE TABLE t AS SELECT 1 AS id",
            "CREATE TABLE t (LIKE known)",
            "CREATE TABLE other.t (id int)",
            "CREATE TABLE pg_t (id int)",
            "CREATE INDEX i ON t (id)",
            "SELECT 1",
            "CREATE TABLE t (id int); CREATE TABLE u (id int)",
        ] {
            assert_eq!(created_table(sql, &NoTables), None, "{sql}");
        }
    }
}
