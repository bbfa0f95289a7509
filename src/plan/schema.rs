//! What the planner knows of a table's columns (schema awareness): read
//! from the shards' `pg_attribute` by the executor the first time a
//! statement needs it (see `exec/schema.rs`), kept per routing snapshot and
//! forgotten after DDL through the router.

use std::sync::Arc;

/// The columns of one table, in `attnum` order (dropped columns left out),
/// as every shard reported them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    /// Columns in table order.
    pub columns: Vec<Column>,
}

/// One column (`pg_attribute` row with its default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column name as stored (`attname`).
    pub name: String,
    /// Type OID (`atttypid`).
    pub type_oid: u32,
    /// `format_type(atttypid, atttypmod)`, e.g. `integer`, `character(120)`.
    pub type_name: String,
    /// Default expression (`pg_get_expr(adbin)`), None if none.
    pub default: Option<String>,
    /// `attidentity`: b'a' (GENERATED ALWAYS), b'd' (BY DEFAULT) or 0.
    pub identity: u8,
    /// `attgenerated`: b's' for a stored generated column, else 0.
    pub generated: u8,
    /// The sequence owned by the column (`pg_get_serial_sequence`: serial
    /// and identity columns), schema-qualified as PostgreSQL prints it.
    pub sequence: Option<String>,
}

/// How the router fills in an omitted sharding key whose column the shards
/// would fill from a sequence (serial, bigserial, `DEFAULT nextval(...)`,
/// `GENERATED ... AS IDENTITY`): from the router's distributed sequence of
/// the table, so values are unique across shards (`docs/generated-keys.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGenerator {
    /// Smallest value the column's type holds that the sequence may give
    /// (1: sequences start at 1).
    pub min: i64,
    /// Largest value of the column's type (`smallint` 32767, `integer`
    /// 2147483647, `bigint` 9223372036854775807).
    pub max: i64,
    /// GENERATED ALWAYS AS IDENTITY: the rewritten INSERT needs
    /// `OVERRIDING SYSTEM VALUE`.
    pub always: bool,
    /// The PostgreSQL sequence the column's default names, without schema
    /// (what `currval('...')` is asked about), if known.
    pub sequence: Option<String>,
}

impl TableSchema {
    /// Index of column `name` (compared as written: the catalog's names are
    /// lower case, as PostgreSQL folds unquoted names).
    pub fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The generator of column `name` if the shards would fill it from a
    /// sequence and its type is an integer; None otherwise.
    pub fn key_generator(&self, name: &str) -> Option<KeyGenerator> {
        let c = self.columns.get(self.position(name)?)?;
        let max = match c.type_oid {
            21 => i16::MAX as i64,
            23 => i32::MAX as i64,
            20 => i64::MAX,
            _ => return None,
        };
        let nextval = c
            .default
            .as_deref()
            .is_some_and(|d| d.starts_with("nextval("));
        if c.generated != 0 || !(nextval || c.identity == b'a' || c.identity == b'd') {
            return None;
        }
        let sequence = c
            .sequence
            .clone()
            .or_else(|| c.default.as_deref().and_then(nextval_argument))
            .map(|s| last_name(&s));
        Some(KeyGenerator {
            min: 1,
            max,
            always: c.identity == b'a',
            sequence,
        })
    }
}

/// `seq` of a default `nextval('seq'::regclass)`.
fn nextval_argument(default: &str) -> Option<String> {
    let rest = default.strip_prefix("nextval('")?;
    let end = rest.find('\'')?;
    Some(rest[..end].to_string())
}

/// The last dotted part of a possibly schema-qualified, possibly quoted
/// name, unquoted: `public."Seq"` → `Seq`, `public.t_id_seq` → `t_id_seq`.
pub fn last_name(name: &str) -> String {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut cur)),
            c if quoted => cur.push(c),
            c => cur.push(c.to_ascii_lowercase()),
        }
    }
    parts.push(cur);
    parts.pop().unwrap_or_default()
}

/// A shared schema entry.
pub type SharedSchema = Arc<TableSchema>;

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, oid: u32, default: Option<&str>, identity: u8) -> Column {
        Column {
            name: name.into(),
            type_oid: oid,
            type_name: String::new(),
            default: default.map(str::to_string),
            identity,
            generated: 0,
            sequence: None,
        }
    }

    #[test]
    fn generators_follow_the_default_and_type() {
        let s = TableSchema {
            columns: vec![
                col("id", 23, Some("nextval('sbtest1_id_seq'::regclass)"), 0),
                col("k", 23, Some("0"), 0),
                col("b", 20, None, b'a'),
                col("t", 25, Some("nextval('x'::regclass)"), 0),
                col("d", 21, None, b'd'),
            ],
        };
        let g = s.key_generator("id").expect("serial");
        assert_eq!((g.max, g.always), (i32::MAX as i64, false));
        assert_eq!(g.sequence.as_deref(), Some("sbtest1_id_seq"));
        assert!(s.key_generator("k").is_none());
        let b = s.key_generator("b").expect("identity");
        assert!(b.always);
        assert_eq!(b.max, i64::MAX);
        assert!(
            s.key_generator("t").is_none(),
            "text keys are not generated"
        );
        assert_eq!(s.key_generator("d").map(|g| g.max), Some(32767));
        assert!(s.key_generator("nope").is_none());
    }

    #[test]
    fn last_names() {
        assert_eq!(last_name("public.t_id_seq"), "t_id_seq");
        assert_eq!(last_name("public.\"My.Seq\""), "My.Seq");
        assert_eq!(last_name("T_SEQ"), "t_seq");
    }
}
