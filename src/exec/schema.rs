//! Schema awareness: the columns of a sharded table read from the shards
//! of its keyspace the first time a statement needs them
//! ([`crate::plan::Plan::NeedSchema`]), checked to be the same on every
//! shard, and kept in the routing snapshot until DDL through the router.

use std::sync::Arc;

use crate::plan::quote_ident;
use crate::plan::schema::{Column, TableSchema};
use crate::protocol::error::codes;
use crate::protocol::PgError;
use crate::state::Routing;

use super::context::{End, ExecCtx};
use super::inject::Rows;

/// The columns of the relation `$table` resolves to (search_path applies),
/// in `attnum` order: name, type OID, type text, default, identity,
/// generated, owned sequence.
fn columns_sql(table: &str) -> String {
    let regclass = quote_ident(table).replace('\'', "''");
    format!(
        "SELECT a.attname, a.atttypid::int8, pg_catalog.format_type(a.atttypid, a.atttypmod), \
         pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text, \
         pg_catalog.pg_get_serial_sequence(a.attrelid::regclass::text, a.attname) \
         FROM pg_catalog.pg_attribute a LEFT JOIN pg_catalog.pg_attrdef d \
         ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE a.attrelid = pg_catalog.to_regclass('{regclass}') AND a.attnum > 0 \
         AND NOT a.attisdropped ORDER BY a.attnum"
    )
}

/// The schema in `rows` (of [`columns_sql`]); None if a row is malformed.
fn parse_rows(rows: &Rows) -> Option<TableSchema> {
    let mut columns = Vec::with_capacity(rows.len());
    for r in rows {
        let text = |i: usize| r.get(i).cloned().flatten();
        let flag = |i: usize| text(i).and_then(|s| s.bytes().next()).unwrap_or(0);
        columns.push(Column {
            name: text(0)?,
            type_oid: text(1)?.parse().ok()?,
            type_name: text(2)?,
            default: text(3),
            identity: flag(4),
            generated: flag(5),
            sequence: text(6),
        });
    }
    Some(TableSchema { columns })
}

/// How `b` (shard `shard_b`) differs from `a`, in words; None if equal.
fn difference(a: &TableSchema, b: &TableSchema) -> Option<String> {
    if a == b {
        return None;
    }
    for (i, (x, y)) in a.columns.iter().zip(&b.columns).enumerate() {
        if x != y {
            return Some(format!(
                "column {} is \"{}\" {}{} there, \"{}\" {}{} on the first shard",
                i + 1,
                y.name,
                y.type_name,
                y.default
                    .as_deref()
                    .map(|d| format!(" DEFAULT {d}"))
                    .unwrap_or_default(),
                x.name,
                x.type_name,
                x.default
                    .as_deref()
                    .map(|d| format!(" DEFAULT {d}"))
                    .unwrap_or_default(),
            ));
        }
    }
    Some(format!(
        "it has {} columns there, {} on the first shard",
        b.columns.len(),
        a.columns.len()
    ))
}

impl ExecCtx {
    /// After `sql` ran (or before it runs) through the router on every
    /// shard: if it is DDL that may change columns, the columns read so
    /// far are forgotten (in `routing` and in the current snapshot), and
    /// again when the open transaction block ends (it may roll back).
    pub fn note_ddl(&mut self, routing: &Routing, sql: &str) {
        if !crate::plan::changes_columns(sql) {
            return;
        }
        routing.forget_schemas();
        self.state.routing().forget_schemas();
        if let Some(b) = &mut self.block {
            b.ddl = true;
        }
    }

    /// Reads `table`'s columns from every shard of its keyspace (inside the
    /// session's transaction, as a reader) and installs them in `routing`.
    /// Returns false after sending an error: 42P01 if the table does not
    /// exist, 55000 naming the shard if its columns differ from the first
    /// shard's, or a shard's own error.
    pub async fn load_schema(&mut self, routing: &Routing, table: &str) -> Result<bool, End> {
        let was_write = std::mem::replace(&mut self.cur_write, false);
        let read = self.read_schema(routing, table).await;
        self.cur_write = was_write;
        Ok(match read? {
            Some(schema) => {
                routing.install_schema(table, Arc::new(schema));
                true
            }
            None => false,
        })
    }

    /// The columns of `table`, the same on every shard; None after sending
    /// an error (see [`ExecCtx::load_schema`]).
    async fn read_schema(
        &mut self,
        routing: &Routing,
        table: &str,
    ) -> Result<Option<TableSchema>, End> {
        let shards: Vec<String> = match routing
            .catalog
            .table(table)
            .and_then(|t| routing.catalog.keyspace_of(t))
        {
            Some(k) => k.routing.shards().to_vec(),
            None => routing
                .catalog
                .shard_names()
                .into_iter()
                .map(str::to_string)
                .collect(),
        };
        let sql = columns_sql(table);
        let mut first: Option<(String, TableSchema)> = None;
        for shard in shards {
            let Some(rows) = self.injected(&shard, &sql).await? else {
                return Ok(None);
            };
            let error = match parse_rows(&rows) {
                None => PgError::new(
                    codes::INTERNAL_ERROR,
                    format!("unexpected column description of \"{table}\" from shard \"{shard}\""),
                ),
                Some(s) if s.columns.is_empty() => PgError::new(
                    codes::UNDEFINED_TABLE,
                    format!("relation \"{table}\" does not exist"),
                )
                .with_detail(format!("shard \"{shard}\"")),
                Some(schema) => match &first {
                    None => {
                        first = Some((shard, schema));
                        continue;
                    }
                    Some((s0, a)) => match difference(a, &schema) {
                        None => continue,
                        Some(d) => PgError::new(
                            codes::OBJECT_NOT_IN_PREREQUISITE_STATE,
                            format!("table \"{table}\" differs on shard \"{shard}\" from shard \"{s0}\": {d}"),
                        )
                        .with_hint("run the same DDL on every shard (through the router, it is)"),
                    },
                },
            };
            self.send_error(&error);
            return Ok(None);
        }
        if first.is_none() {
            self.send_error(&PgError::new(
                codes::CONNECTION_FAILURE,
                format!("no shard to read the columns of \"{table}\" from"),
            ));
        }
        Ok(first.map(|(_, s)| s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: &[Option<&str>]) -> Vec<Option<String>> {
        v.iter().map(|x| x.map(str::to_string)).collect()
    }

    #[test]
    fn rows_parse_and_compare() {
        let rows = vec![
            row(&[
                Some("id"),
                Some("23"),
                Some("integer"),
                Some("nextval('t_id_seq'::regclass)"),
                Some(""),
                Some(""),
                Some("public.t_id_seq"),
            ]),
            row(&[
                Some("c"),
                Some("1042"),
                Some("character(120)"),
                None,
                Some(""),
                Some(""),
                None,
            ]),
        ];
        let a = parse_rows(&rows).expect("parsed");
        assert_eq!(a.columns.len(), 2);
        assert_eq!(a.columns[0].identity, 0);
        assert!(a.key_generator("id").is_some());
        let mut b = a.clone();
        assert_eq!(difference(&a, &b), None);
        b.columns[1].type_name = "text".into();
        let d = difference(&a, &b).expect("differs");
        assert!(d.contains("column 2") && d.contains("text"), "{d}");
        b.columns.pop();
        assert!(difference(&a, &b).expect("differs").contains("1 columns"));
        assert!(parse_rows(&vec![row(&[Some("x"), Some("nan")])]).is_none());
    }
}
