//! `COPY` planning: `COPY table [(cols)] FROM STDIN | TO STDOUT` with new
//! style (`WITH (FORMAT csv, ...)`) or legacy (`CSV HEADER DELIMITER ','`)
//! options.
//!
//! sqlparser is tried first; the statements it cannot parse
//! (`WITH (FREEZE ON)`, `HEADER MATCH`, `ON_ERROR`, `FORCE_NULL *`, `WHERE`,
//! ...) go through a small parser of PostgreSQL's COPY grammar here.
//! Options other than FORMAT, DELIMITER, HEADER, QUOTE and ESCAPE are
//! accepted and left in the text the executor forwards to the shards.

use sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::fingerprint::{decode_literal, LitKind};
use super::lex::{significant, Tok, Token};
use super::names::{classify_table, norm_ident, object_parts, undeclared, TableClass};
use super::types::{unsupported, CopyFormat, CopyPlan, CopyQuery, Plan};
use super::SchemaView;
use crate::protocol::copy_out::{CopyOutFormat, CopyOutOptions, ForceQuote};

/// What a COPY statement asks for, before catalog resolution.
#[derive(Debug, Default, PartialEq, Eq)]
struct CopySpec {
    /// Folded table name parts; None for `COPY (query) TO`.
    table: Option<Vec<String>>,
    columns: Option<Vec<String>>,
    /// COPY ... TO.
    to: bool,
    /// STDIN / STDOUT (as opposed to a file or program).
    std: bool,
    format: Option<String>,
    delimiter: Option<String>,
    header: bool,
    quote: Option<String>,
    escape: Option<String>,
    /// `COPY (query)`: the query's byte range in the statement.
    query: Option<std::ops::Range<usize>>,
    /// NULL string.
    null: Option<String>,
    /// FORCE_QUOTE targets.
    force_quote: Option<ForceQuote>,
    /// Options the router passes on but does not apply itself (lower case
    /// names, e.g. `encoding`).
    other: Vec<String>,
}

/// Plan a COPY statement (see the module docs).
pub(crate) fn plan_copy(sql: &str, schema: &dyn SchemaView) -> Plan {
    let spec = match from_sqlparser(sql) {
        Some(spec) => spec,
        None => match parse(sql) {
            Ok(spec) => spec,
            Err(msg) => {
                return Plan::Error {
                    sqlstate: "42601",
                    message: format!("syntax error: {msg}"),
                    hint: None,
                }
            }
        },
    };
    resolve(sql, spec, schema)
}

fn resolve(sql: &str, spec: CopySpec, schema: &dyn SchemaView) -> Plan {
    if !spec.std {
        return unsupported(
            "COPY to or from a server file or program is not supported through pg-router",
            Some("use COPY ... FROM STDIN or COPY ... TO STDOUT (psql's \\copy)"),
        );
    }
    if let Some(r) = spec.query.clone() {
        return resolve_query(sql, r, spec, schema);
    }
    let Some(parts) = spec.table.clone() else {
        return unsupported("this COPY form is not supported through pg-router", None);
    };
    let (table, _key) = match classify_table(&parts, schema) {
        TableClass::System if spec.to => return Plan::AnyShard,
        TableClass::System => return super::names::system_write(),
        TableClass::Unknown(name) => return undeclared(&name),
        // Every shard has the same copy: read any one.
        TableClass::Reference(_) if spec.to => return Plan::AnyShard,
        TableClass::Reference(table) => {
            return unsupported(
                format!("COPY FROM STDIN into reference table \"{table}\" is not supported yet"),
                Some("use INSERT, which is run on every shard"),
            )
        }
        TableClass::Sharded { table, key } => (table, key),
    };
    if !spec.to && !schema.lookups(&table).is_empty() {
        return unsupported(
            format!("COPY FROM STDIN into \"{table}\", which owns lookup vindexes, is not supported: its lookup rows would not be written"),
            Some("use INSERT (simple query protocol), which maintains the lookup tables"),
        );
    }
    match format_bytes(&spec) {
        Ok((format, delimiter, quote, escape)) => Plan::Copy(CopyPlan {
            table,
            columns: spec.columns,
            from_stdin: !spec.to,
            format,
            delimiter,
            header: spec.header,
            quote,
            escape,
        }),
        Err(e) => e,
    }
}

/// The format, delimiter, quote and escape bytes of `spec` (PostgreSQL's
/// defaults: tab or comma, `"`, the quote), or the error plan.
fn format_bytes(spec: &CopySpec) -> Result<(CopyFormat, u8, u8, u8), Plan> {
    let format = match spec
        .format
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("text") => CopyFormat::Text,
        Some("csv") => CopyFormat::Csv,
        Some("binary") => CopyFormat::Binary,
        Some(other) => {
            return Err(Plan::Error {
                sqlstate: "22023",
                message: format!("COPY format \"{other}\" not recognized"),
                hint: None,
            })
        }
    };
    let one_byte = |v: &Option<String>, default: u8, what: &str| -> Result<u8, Plan> {
        match v {
            None => Ok(default),
            Some(s) if s.len() == 1 => Ok(s.as_bytes()[0]),
            Some(_) => Err(unsupported(
                format!("COPY {what} must be a single one-byte character"),
                None,
            )),
        }
    };
    let default_delim = if format == CopyFormat::Csv {
        b','
    } else {
        b'\t'
    };
    let delimiter = one_byte(&spec.delimiter, default_delim, "delimiter")?;
    let quote = one_byte(&spec.quote, b'"', "quote")?;
    let escape = one_byte(&spec.escape, quote, "escape")?;
    Ok((format, delimiter, quote, escape))
}

/// `COPY (query) TO STDOUT`: the query planned like a SELECT. One shard
/// (a key condition, or tables copied to every shard): the statement goes
/// there. Several: [`Plan::CopyQuery`], each shard's COPY concatenated or,
/// when the rows must be merged, the merged SELECT's rows encoded as COPY
/// data by the router.
fn resolve_query(
    sql: &str,
    r: std::ops::Range<usize>,
    spec: CopySpec,
    schema: &dyn SchemaView,
) -> Plan {
    if !spec.to {
        return Plan::Error {
            sqlstate: "42601",
            message: "COPY (query) FROM is not valid: a query can only be copied TO".into(),
            hint: None,
        };
    }
    let Some(inner) = sql.get(r.clone()) else {
        return unsupported("this COPY (query) form", None);
    };
    let (format, delimiter, quote, escape) = match format_bytes(&spec) {
        Ok(x) => x,
        Err(p) => return p,
    };
    let out = CopyOutOptions {
        format: match format {
            CopyFormat::Text => CopyOutFormat::Text,
            CopyFormat::Csv => CopyOutFormat::Csv,
            CopyFormat::Binary => CopyOutFormat::Binary,
        },
        delimiter,
        null: spec.null.clone().unwrap_or_else(|| {
            if format == CopyFormat::Csv {
                String::new()
            } else {
                "\\N".into()
            }
        }),
        header: spec.header,
        quote,
        escape,
        force_quote: spec.force_quote.clone().unwrap_or(ForceQuote::None),
    };
    match super::plan_original(inner, schema) {
        Plan::Keyed { keys, .. } => Plan::Keyed {
            keys,
            read_only: true,
        },
        Plan::AnyShard => Plan::AnyShard,
        Plan::Scatter {
            table,
            prune,
            lookup: None,
            merge,
            ..
        } => Plan::CopyQuery(std::sync::Arc::new(CopyQuery {
            table,
            prune,
            merge,
            query: r,
            out,
            unapplied: spec.other.first().cloned(),
        })),
        Plan::Scatter {
            lookup: Some(_), ..
        } => unsupported(
            "COPY (query) routed through a lookup vindex is not supported",
            Some("run the query as a SELECT"),
        ),
        e @ Plan::Error { .. } => e,
        // A merged `*`: the table's columns are read, then COPY is planned
        // again.
        need @ Plan::NeedSchema { .. } => need,
        // Its subqueries run first; the query itself may then run first as
        // a whole (`session/subqueries.rs`).
        Plan::Subqueries { message, hint, .. } => Plan::Subqueries {
            message,
            hint,
            read_only: true,
        },
        _ => unsupported(
            "COPY of this statement is not supported through pg-router",
            None,
        ),
    }
}

/// Use sqlparser's COPY support when it parses the statement.
fn from_sqlparser(sql: &str) -> Option<CopySpec> {
    let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let [Statement::Copy {
        source,
        to,
        target,
        options,
        legacy_options,
        ..
    }] = stmts.as_slice()
    else {
        return None;
    };
    let mut spec = CopySpec {
        to: *to,
        std: matches!(target, CopyTarget::Stdin | CopyTarget::Stdout),
        ..Default::default()
    };
    match source {
        CopySource::Table {
            table_name,
            columns,
        } => {
            spec.table = Some(object_parts(table_name)?);
            if !columns.is_empty() {
                spec.columns = Some(columns.iter().map(norm_ident).collect());
            }
        }
        // Our own parser keeps the query's place in the text.
        CopySource::Query(_) => return None,
    }
    for o in options {
        match o {
            CopyOption::Format(f) => spec.format = Some(f.value.clone()),
            CopyOption::Delimiter(c) => spec.delimiter = Some(c.to_string()),
            CopyOption::Header(h) => spec.header = *h,
            CopyOption::Quote(c) => spec.quote = Some(c.to_string()),
            CopyOption::Escape(c) => spec.escape = Some(c.to_string()),
            _ => {}
        }
    }
    for o in legacy_options {
        match o {
            CopyLegacyOption::Binary => spec.format = Some("binary".into()),
            CopyLegacyOption::Delimiter(c) => spec.delimiter = Some(c.to_string()),
            CopyLegacyOption::Csv(csv) => {
                spec.format = Some("csv".into());
                for c in csv {
                    match c {
                        CopyLegacyCsvOption::Header => spec.header = true,
                        CopyLegacyCsvOption::Quote(q) => spec.quote = Some(q.to_string()),
                        CopyLegacyCsvOption::Escape(e) => spec.escape = Some(e.to_string()),
                        _ => {}
                    }
                }
            }
            CopyLegacyOption::Null(_) => {}
            // Anything else is not PostgreSQL syntax (other dialects'
            // options); let our own parser judge the statement.
            _ => return None,
        }
    }
    Some(spec)
}

/// Cursor over the significant tokens of a COPY statement.
struct Cur<'a> {
    sql: &'a str,
    toks: Vec<Token>,
    i: usize,
}

impl<'a> Cur<'a> {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.i)
    }
    fn peek_word(&self, w: &str) -> bool {
        self.peek().is_some_and(|t| t.is_word(self.sql, w))
    }
    fn peek_punct(&self, c: u8) -> bool {
        self.peek().is_some_and(|t| t.is_punct(self.sql, c))
    }
    fn eat_word(&mut self, w: &str) -> bool {
        let yes = self.peek_word(w);
        if yes {
            self.i += 1;
        }
        yes
    }
    fn eat_punct(&mut self, c: u8) -> bool {
        let yes = self.peek_punct(c);
        if yes {
            self.i += 1;
        }
        yes
    }
    fn err_here(&self) -> String {
        match self.peek() {
            Some(t) => format!("syntax error at or near \"{}\" in COPY", t.text(self.sql)),
            None => "syntax error at end of COPY statement".to_string(),
        }
    }
    /// An identifier, folded (unquoted) or unquoted (`"x"`).
    fn ident(&mut self) -> Result<String, String> {
        match self.peek().copied() {
            Some(t) if t.kind == Tok::Ident => {
                self.i += 1;
                Ok(t.text(self.sql).to_ascii_lowercase())
            }
            Some(t) if t.kind == Tok::QuotedIdent => {
                self.i += 1;
                let text = t.text(self.sql);
                let inner = text.strip_prefix('"').unwrap_or(text);
                let inner = inner.strip_suffix('"').unwrap_or(inner);
                Ok(inner.replace("\"\"", "\""))
            }
            _ => Err(self.err_here()),
        }
    }
    /// A string constant, decoded.
    fn string(&mut self) -> Result<String, String> {
        match self.peek().copied() {
            Some(t) if matches!(t.kind, Tok::Str(_)) => {
                self.i += 1;
                Ok(token_value(self.sql, &t))
            }
            _ => Err(self.err_here()),
        }
    }
    /// `ident [, ident]*` or `*` (FORCE QUOTE / FORCE NOT NULL targets), with
    /// optional parentheses.
    fn column_targets(&mut self) -> Result<ForceQuote, String> {
        if self.eat_punct(b'*') {
            return Ok(ForceQuote::All);
        }
        let paren = self.eat_punct(b'(');
        let mut cols = Vec::new();
        loop {
            cols.push(self.ident()?);
            if !self.eat_punct(b',') {
                break;
            }
        }
        if paren && !self.eat_punct(b')') {
            return Err(self.err_here());
        }
        Ok(ForceQuote::Columns(cols))
    }
}

/// An identifier token's name: folded, or unquoted.
fn ident_value(sql: &str, t: &Token) -> String {
    let text = t.text(sql);
    match t.kind {
        Tok::QuotedIdent => text
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .unwrap_or(text)
            .replace("\"\"", "\""),
        _ => text.to_ascii_lowercase(),
    }
}

fn token_value(sql: &str, t: &Token) -> String {
    let text = t.text(sql);
    match t.kind {
        Tok::Str(k) => decode_literal(text, LitKind::Str(k))
            .map(|c| c.into_owned())
            .unwrap_or_default(),
        Tok::Ident => text.to_ascii_lowercase(),
        _ => text.to_string(),
    }
}

fn truthy(v: Option<&str>) -> bool {
    !matches!(
        v.map(str::to_ascii_lowercase).as_deref(),
        Some("false" | "off" | "0")
    )
}

/// Our own parser of PostgreSQL's COPY grammar (see the module docs).
fn parse(sql: &str) -> Result<CopySpec, String> {
    let mut c = Cur {
        sql,
        toks: significant(sql).collect(),
        i: 0,
    };
    let mut spec = CopySpec::default();
    if !c.eat_word("copy") {
        return Err(c.err_here());
    }
    if c.peek_punct(b'(') {
        // COPY (query): the query up to the matching parenthesis.
        let open = c.i;
        let mut depth = 0usize;
        loop {
            let t = c.peek().copied().ok_or_else(|| c.err_here())?;
            if t.is_punct(sql, b'(') {
                depth += 1;
            } else if t.is_punct(sql, b')') {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            c.i += 1;
        }
        spec.query = Some(c.toks[open].end..c.toks[c.i].start);
        c.i += 1;
    } else {
        table_part(&mut c, &mut spec)?;
    }
    direction_and_options(&mut c, &mut spec)?;
    Ok(spec)
}

/// `[BINARY] table [(columns)]` of a COPY statement.
fn table_part(c: &mut Cur<'_>, spec: &mut CopySpec) -> Result<(), String> {
    // Pre-7.3 `COPY BINARY table`.
    if c.peek_word("binary")
        && c.toks
            .get(c.i + 1)
            .is_some_and(|t| matches!(t.kind, Tok::Ident | Tok::QuotedIdent))
    {
        c.i += 1;
        spec.format = Some("binary".into());
    }
    let mut parts = vec![c.ident()?];
    while c.eat_punct(b'.') {
        parts.push(c.ident()?);
    }
    spec.table = Some(parts);
    if c.eat_punct(b'(') {
        let mut cols = vec![c.ident()?];
        while c.eat_punct(b',') {
            cols.push(c.ident()?);
        }
        if !c.eat_punct(b')') {
            return Err(c.err_here());
        }
        spec.columns = Some(cols);
    }
    Ok(())
}

/// `TO | FROM  STDOUT | STDIN | 'file' | PROGRAM 'cmd'  [WITH] options
/// [WHERE ...]` of a COPY statement.
fn direction_and_options(c: &mut Cur<'_>, spec: &mut CopySpec) -> Result<(), String> {
    if c.eat_word("to") {
        spec.to = true;
    } else if !c.eat_word("from") {
        return Err(c.err_here());
    }
    if c.eat_word("stdin") || c.eat_word("stdout") {
        spec.std = true;
    } else {
        // 'filename' or PROGRAM 'command'.
        c.eat_word("program");
        c.string()?;
    }
    c.eat_word("with");
    if c.eat_punct(b'(') {
        options_list(c, spec)?;
    } else {
        legacy_options(c, spec)?;
    }
    if c.eat_word("where") {
        // The filter is applied by each shard.
        return Ok(());
    }
    if c.peek().is_some_and(|t| t.kind == Tok::Semicolon) {
        c.i += 1;
    }
    if c.peek().is_some() {
        return Err(c.err_here());
    }
    Ok(())
}

/// `( name [value] [, ...] )`, the opening parenthesis already consumed.
fn options_list(c: &mut Cur<'_>, spec: &mut CopySpec) -> Result<(), String> {
    loop {
        let name = c.ident()?;
        // The value: every token up to `,` or `)` at this level.
        let mut depth = 0usize;
        let mut value: Option<String> = None;
        let mut list = Vec::new();
        loop {
            let Some(t) = c.peek().copied() else {
                return Err(c.err_here());
            };
            if depth == 0 && (t.is_punct(c.sql, b',') || t.is_punct(c.sql, b')')) {
                break;
            }
            if t.is_punct(c.sql, b'(') {
                depth += 1;
            } else if t.is_punct(c.sql, b')') {
                depth -= 1;
            } else if depth == 0 && value.is_none() {
                value = Some(token_value(c.sql, &t));
            } else if depth == 1 && matches!(t.kind, Tok::Ident | Tok::QuotedIdent) {
                list.push(ident_value(c.sql, &t));
            }
            c.i += 1;
        }
        match name.as_str() {
            "format" => spec.format = value,
            "delimiter" => spec.delimiter = value,
            "quote" => spec.quote = value,
            "escape" => spec.escape = value,
            "header" => spec.header = truthy(value.as_deref()),
            "null" => spec.null = value,
            "force_quote" if value.as_deref() == Some("*") => {
                spec.force_quote = Some(ForceQuote::All)
            }
            "force_quote" => spec.force_quote = Some(ForceQuote::Columns(list)),
            other => spec.other.push(other.to_string()),
        }
        if c.eat_punct(b')') {
            return Ok(());
        }
        if !c.eat_punct(b',') {
            return Err(c.err_here());
        }
    }
}

/// Pre-9.0 options: `BINARY`, `DELIMITER [AS] 'c'`, `NULL [AS] 'n'`, `CSV`,
/// `HEADER`, `QUOTE [AS] 'q'`, `ESCAPE [AS] 'e'`, `FORCE QUOTE cols|*`,
/// `FORCE NOT NULL cols`, `FORCE NULL cols`, `FREEZE`, `OIDS`,
/// `ENCODING 'e'`.
fn legacy_options(c: &mut Cur<'_>, spec: &mut CopySpec) -> Result<(), String> {
    loop {
        if c.eat_word("binary") {
            spec.format = Some("binary".into());
        } else if c.eat_word("csv") {
            spec.format = Some("csv".into());
        } else if c.eat_word("header") {
            spec.header = true;
        } else if c.peek_word("freeze") || c.peek_word("oids") {
            spec.other.push(c.ident()?);
        } else if c.eat_word("delimiter") {
            c.eat_word("as");
            spec.delimiter = Some(c.string()?);
        } else if c.eat_word("null") {
            c.eat_word("as");
            spec.null = Some(c.string()?);
        } else if c.eat_word("quote") {
            c.eat_word("as");
            spec.quote = Some(c.string()?);
        } else if c.eat_word("escape") {
            c.eat_word("as");
            spec.escape = Some(c.string()?);
        } else if c.eat_word("encoding") {
            c.string()?;
            spec.other.push("encoding".into());
        } else if c.eat_word("force") {
            let quote = c.eat_word("quote");
            if quote || c.eat_word("null") {
            } else if c.eat_word("not") {
                if !c.eat_word("null") {
                    return Err(c.err_here());
                }
            } else {
                return Err(c.err_here());
            }
            let targets = c.column_targets()?;
            if quote {
                spec.force_quote = Some(targets);
            } else {
                spec.other.push("force_null".into());
            }
        } else {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(sql: &str) -> CopySpec {
        parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    #[test]
    fn own_parser_matches_sqlparser_where_both_parse() {
        for sql in [
            "copy pgbench_accounts from stdin",
            "COPY t (a, \"B\") FROM STDIN WITH CSV HEADER DELIMITER ','",
            "COPY public.t TO STDOUT (FORMAT csv, HEADER true, QUOTE '''', ESCAPE '\\')",
            "COPY t FROM STDIN WITH DELIMITER AS '|'",
            "COPY t TO STDOUT BINARY",
            "COPY t FROM STDIN (FORMAT binary)",
        ] {
            let ours = spec(sql);
            let theirs = from_sqlparser(sql).unwrap_or_else(|| panic!("sqlparser: {sql}"));
            assert_eq!(ours, theirs, "{sql}");
        }
    }

    #[test]
    fn own_parser_handles_what_sqlparser_does_not() {
        let s = spec("copy pgbench_accounts from stdin with (freeze on)");
        assert_eq!(s.table, Some(vec!["pgbench_accounts".to_string()]));
        assert!(s.std && !s.to);
        let s =
            spec("COPY t TO STDOUT (FORMAT 'csv', HEADER MATCH, FORCE_QUOTE *, DELIMITER E'\\t');");
        assert_eq!(s.format.as_deref(), Some("csv"));
        assert!(s.header);
        assert_eq!(s.delimiter.as_deref(), Some("\t"));
        let s = spec("COPY t FROM STDIN (HEADER off, ON_ERROR ignore) WHERE a > 1");
        assert!(!s.header);
        let s = spec("COPY t FROM STDIN CSV HEADER FORCE NOT NULL a, b QUOTE AS '\"'");
        assert_eq!(s.quote.as_deref(), Some("\""));
        assert!(parse("COPY t FROM").is_err());
        assert!(parse("COPY t FROM STDIN (FORMAT").is_err());
        assert!(parse("COPY t FROM STDIN bogus").is_err());
        assert!(parse("COPY").is_err());
        assert_eq!(spec("COPY (SELECT 1) TO STDOUT").table, None);
        assert!(!spec("COPY t FROM '/tmp/x'").std);
        assert!(!spec("COPY t TO PROGRAM 'gzip'").std);
    }
}
