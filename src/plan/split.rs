//! Splitting a simple-protocol query string into statements.

use super::lex::{Lexer, Tok, Token};

/// Split a simple-protocol query string into statements at top-level
/// semicolons.
///
/// Semicolons inside `'..'`, `E'..'`, `".."`, dollar quotes `$tag$..$tag$`,
/// `--` comments and nested `/* */` comments do not split, nor do those of a
/// `CREATE FUNCTION/PROCEDURE ... BEGIN ATOMIC ... END` body. Returns the
/// statements as trimmed slices of `sql` (without their `;`), in order;
/// statements that are empty or only whitespace/comments are dropped. An
/// unterminated quote or comment extends to the end of the text (the
/// shard will report the error).
pub fn split_statements(sql: &str) -> Vec<&str> {
    match single_statement(sql) {
        Some(one) => vec![one],
        None => split_lexed(sql),
    }
}

/// The general case of [`split_statements`].
fn split_lexed(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut stmt = StmtState::default();
    let mut start = 0usize;
    let mut prev_sig: Option<Token> = None;
    for t in Lexer::new(sql) {
        match t.kind {
            Tok::Space | Tok::Comment => continue,
            Tok::Semicolon if stmt.atomic_depth == 0 => {
                push_stmt(&mut out, sql, start, t.start, stmt.has_content);
                start = t.end;
                stmt = StmtState::default();
                prev_sig = None;
                continue;
            }
            _ => {}
        }
        stmt.observe(sql, &t, prev_sig.as_ref());
        prev_sig = Some(t);
    }
    push_stmt(&mut out, sql, start, sql.len(), stmt.has_content);
    out
}

/// Fast path for the common case, without lexing: text that starts with a
/// letter and has no `;` is one statement; so is such text followed by one
/// final `;` when nothing before it could open a quote or comment that would
/// swallow that `;`. Returns the statement as [`split_statements`] would
/// (trimmed, without its `;`); None when the text needs the lexer (also
/// when it ends in non-ASCII text, which [`split_statements`] trims as
/// Unicode whitespace may be). Searches with `memchr` (SIMD), no
/// allocation.
pub fn single_statement(sql: &str) -> Option<&str> {
    let t = sql.trim_ascii();
    let b = t.as_bytes();
    if !b.first()?.is_ascii_alphabetic() {
        return None;
    }
    let (body, plain) = match t.strip_suffix(';') {
        None => (t, memchr::memchr(b';', b).is_none()),
        Some(body) => {
            let body = body.trim_ascii_end();
            let bb = body.as_bytes();
            let plain = memchr::memchr3(b';', b'\'', b'"', bb).is_none()
                && memchr::memchr3(b'$', b'-', b'/', bb).is_none();
            (body, plain)
        }
    };
    (plain && body.as_bytes().last()?.is_ascii()).then_some(body)
}

fn push_stmt<'a>(
    out: &mut Vec<&'a str>,
    sql: &'a str,
    start: usize,
    end: usize,
    has_content: bool,
) {
    if !has_content {
        return;
    }
    if let Some(s) = sql.get(start..end) {
        let s = s.trim();
        if !s.is_empty() {
            out.push(s);
        }
    }
}

/// Per-statement state: whether it has any token, and SQL-standard function
/// bodies (`BEGIN ATOMIC ... END`, where `;` does not end the statement).
#[derive(Default)]
struct StmtState {
    has_content: bool,
    /// Number of significant tokens seen.
    ntok: usize,
    /// Statement is CREATE [OR REPLACE] FUNCTION/PROCEDURE.
    routine: bool,
    /// Nesting inside BEGIN ATOMIC (CASE ... END also nests).
    atomic_depth: usize,
}

impl StmtState {
    fn observe(&mut self, sql: &str, t: &Token, prev: Option<&Token>) {
        self.has_content = true;
        self.ntok += 1;
        if t.kind != Tok::Ident {
            return;
        }
        // Detect CREATE [OR REPLACE] FUNCTION|PROCEDURE within the first
        // few tokens.
        if self.ntok <= 4 && (t.is_word(sql, "function") || t.is_word(sql, "procedure")) {
            self.routine = true;
        }
        if !self.routine {
            return;
        }
        if t.is_word(sql, "atomic") && prev.is_some_and(|p| p.is_word(sql, "begin")) {
            self.atomic_depth += 1;
        } else if self.atomic_depth > 0 {
            if t.is_word(sql, "case") {
                self.atomic_depth += 1;
            } else if t.is_word(sql, "end") {
                self.atomic_depth -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_agrees_with_lexer() {
        let cases = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 5;",
            "  select 1  ",
            "SELECT a ;",
            "SELECT 1 -- trailing comment",
            "SELECT 'unterminated",
            "SELECT $$x$$",
            "INSERT INTO t VALUES (1) ;  ",
            "\n\tSELECT 'é' FROM t\r\n",
        ];
        for c in cases {
            let one = single_statement(c).unwrap_or_else(|| panic!("fast path refused {c:?}"));
            assert_eq!(vec![one], split_lexed(c), "{c:?}");
        }
        for c in [
            "SELECT 1; SELECT 2",
            "SELECT ';'",
            "-- only a comment",
            "/* c */ SELECT 1",
            ";",
            "SELECT 1;;",
            "",
            "SELECT 1 /* ;",
            "SELECT 'a;",
            "SELECT 'a';",
            "SELECT 1\u{3000};",
            "SELECT 1 \u{a0}",
        ] {
            assert!(
                single_statement(c).is_none(),
                "{c:?} must take the lexer path"
            );
        }
    }

    #[test]
    fn splits_at_top_level_semicolons() {
        let sql = "BEGIN; SELECT 'a;b', E'c\\';d', \"e;f\" FROM t; -- x;y\n/* p; /* q; */ r; */ SELECT $$;$$, $t$ ; $t$;;  ; END";
        assert_eq!(
            split_statements(sql),
            vec![
                "BEGIN",
                "SELECT 'a;b', E'c\\';d', \"e;f\" FROM t",
                "-- x;y\n/* p; /* q; */ r; */ SELECT $$;$$, $t$ ; $t$",
                "END"
            ]
        );
    }

    #[test]
    fn drops_empty_and_comment_only() {
        assert!(split_statements("").is_empty());
        assert!(split_statements(" ; ;\n").is_empty());
        assert_eq!(split_statements("SELECT 1; -- bye"), vec!["SELECT 1"]);
        assert_eq!(split_statements("SELECT 1"), vec!["SELECT 1"]);
    }

    #[test]
    fn begin_atomic_bodies() {
        let sql = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 1 END; END; SELECT 2";
        assert_eq!(
            split_statements(sql),
            vec![
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 1 END; END",
                "SELECT 2"
            ]
        );
        assert_eq!(split_statements("BEGIN; END;"), vec!["BEGIN", "END"]);
    }

    #[test]
    fn unterminated_runs_to_end() {
        assert_eq!(split_statements("SELECT 'a; b"), vec!["SELECT 'a; b"]);
        assert_eq!(split_statements("SELECT 1 /* ; "), vec!["SELECT 1 /* ;"]);
    }
}
