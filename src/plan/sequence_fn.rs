//! `SELECT currval('seq')`, `SELECT nextval('seq')` and `SELECT lastval()`
//! when `seq` is the sequence of a generated sharding key: the router hands
//! out those keys from its distributed sequence (`docs/generated-keys.md`),
//! so it answers these calls itself, as PostgreSQL would for the session.
//! Sequences the router does not generate stay on the shards.

use super::lex::{significant, Tok};
use super::schema::last_name;
use super::types::Plan;
use super::SchemaView;

/// A sequence function call the router may answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceFn {
    /// `currval('seq')`: the value this session last got (name without
    /// schema).
    Currval(String),
    /// `nextval('seq')`: a fresh value of the distributed sequence of
    /// `table` (catalog name).
    Nextval {
        /// The sequence (name without schema).
        sequence: String,
        /// The table whose key it generates.
        table: String,
    },
    /// `lastval()`: the value this session last got from any sequence.
    Lastval,
}

/// A `SELECT` of one sequence function call and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceCall {
    /// The call.
    pub func: SequenceFn,
    /// The result column's name: the alias, else the function's name.
    pub column: String,
}

/// Which table a sequence belongs to, as far as the router knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceOwner {
    /// The generated sharding key of this table (columns known).
    Table(String),
    /// Maybe this table's (its key would have that default name), whose
    /// columns are not known yet.
    Unread(String),
    /// Not a sequence the router generates values of.
    None,
}

/// The plan of `sql` if it is `SELECT [pg_catalog.]currval|nextval|lastval
/// ( ['name'[::regclass|::text]] ) [[AS] alias] [;]` and the router answers
/// it ([`Plan::SequenceFn`]), or must first read a table's columns to know
/// ([`Plan::NeedSchema`]). None: not such a call, or a sequence of the
/// shards' own (the statement goes to a shard as before).
pub(crate) fn plan_sequence_call(sql: &str, schema: &dyn SchemaView) -> Option<Plan> {
    let (name, arg, column) = parse(sql)?;
    let func = match (name.as_str(), arg) {
        ("lastval", None) => SequenceFn::Lastval,
        ("currval", Some(seq)) | ("nextval", Some(seq)) => match schema.sequence_owner(&seq) {
            SequenceOwner::Unread(table) => {
                return Some(Plan::NeedSchema {
                    table: table.into(),
                })
            }
            SequenceOwner::None => return None,
            SequenceOwner::Table(table) if name == "nextval" => SequenceFn::Nextval {
                sequence: seq,
                table,
            },
            SequenceOwner::Table(_) => SequenceFn::Currval(seq),
        },
        _ => return None,
    };
    Some(Plan::SequenceFn(std::sync::Arc::new(SequenceCall {
        func,
        column,
    })))
}

/// (function name lower case, the sequence argument without schema, the
/// column name) of a sequence function SELECT.
fn parse(sql: &str) -> Option<(String, Option<String>, String)> {
    let mut t = significant(sql).peekable();
    if !t.next()?.is_word(sql, "select") {
        return None;
    }
    let mut f = t.next()?;
    if f.is_word(sql, "pg_catalog") {
        if !t.next()?.is_punct(sql, b'.') {
            return None;
        }
        f = t.next()?;
    }
    let name = f.text(sql).to_ascii_lowercase();
    if f.kind != Tok::Ident || !matches!(name.as_str(), "currval" | "nextval" | "lastval") {
        return None;
    }
    if !t.next()?.is_punct(sql, b'(') {
        return None;
    }
    let mut arg = None;
    let mut n = t.next()?;
    if let Tok::Str(super::lex::StrKind::Standard) = n.kind {
        let text = n.text(sql);
        let inner = text.get(1..text.len().checked_sub(1)?)?.replace("''", "'");
        arg = Some(last_name(&inner));
        n = t.next()?;
        if n.is_punct(sql, b':') {
            if !t.next()?.is_punct(sql, b':') {
                return None;
            }
            let ty = t.next()?;
            if !(ty.is_word(sql, "regclass") || ty.is_word(sql, "text")) {
                return None;
            }
            n = t.next()?;
        }
    }
    if !n.is_punct(sql, b')') {
        return None;
    }
    let mut column = name.clone();
    match t.next() {
        None => {}
        Some(s) if s.kind == Tok::Semicolon => {}
        Some(a) => {
            let a = if a.is_word(sql, "as") { t.next()? } else { a };
            column = match a.kind {
                Tok::Ident => a.text(sql).to_ascii_lowercase(),
                Tok::QuotedIdent => {
                    let q = a.text(sql);
                    q.get(1..q.len().checked_sub(1)?)?.replace("\"\"", "\"")
                }
                _ => return None,
            };
            match t.next() {
                None => {}
                Some(s) if s.kind == Tok::Semicolon => {}
                Some(_) => return None,
            }
        }
    }
    if t.next().is_some() {
        return None;
    }
    Some((name, arg, column))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_parse() {
        assert_eq!(
            parse("SELECT currval('public.g_id_seq'::regclass)"),
            Some(("currval".into(), Some("g_id_seq".into()), "currval".into()))
        );
        assert_eq!(
            parse("select pg_catalog.nextval('\"G_seq\"') AS \"Id\";"),
            Some(("nextval".into(), Some("G_seq".into()), "Id".into()))
        );
        assert_eq!(
            parse("SELECT lastval() id"),
            Some(("lastval".into(), None, "id".into()))
        );
        assert_eq!(parse("SELECT currval('s') + 1"), None);
        assert_eq!(parse("SELECT currval('s'), 1"), None);
        assert_eq!(parse("SELECT currval(x)"), None);
        assert_eq!(parse("SELECT count(*) FROM t"), None);
        assert_eq!(parse("SELECT lastval() FROM t"), None);
    }
}
