//! Statement fingerprinting: one pass over a simple-protocol statement that
//! replaces every literal by a placeholder (`$1`, `$2`, ... in text order)
//! and records where the literals are.
//!
//! The normalized text is the plan-cache key, so two statements that differ
//! only in their literal values share one plan. Keywords, identifiers,
//! whitespace and comments are copied unchanged (so a statement without
//! literals normalizes to itself). A negative number stays `-` followed by a
//! literal, so the plan sees `-$k`.

use std::borrow::Cow;
use std::ops::Range;

use super::lex::{is_ident_cont, Lexer, StrKind, Tok};

/// What kind of literal a span holds (decides how [`Literals::value`]
/// decodes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum LitKind {
    /// Numeric constant, kept as written.
    #[default]
    Number,
    /// String constant of the given kind.
    Str(StrKind),
}

/// One literal span (u32 offsets keep [`Literals`] small; longer texts are
/// not normalized, see [`normalize`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Lit {
    start: u32,
    end: u32,
    kind: LitKind,
}

/// How many literal spans [`Literals`] keeps without allocating.
const INLINE: usize = 8;

/// Literal spans of one simple-protocol statement text, in text order.
///
/// Produced by [`Planner::plan_simple`](super::Planner::plan_simple) together
/// with the plan: `KeyExpr::Param { index: i, .. }` in a simple-protocol plan
/// refers to literal `i` of this list. Up to 8 spans are stored inline (no
/// heap allocation); longer lists spill to a vector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Literals {
    inline: [Lit; INLINE],
    len: usize,
    spill: Vec<Lit>,
}

impl Literals {
    /// No literal (for values that are read from nowhere: constant keys).
    pub const NONE: Literals = Literals {
        inline: [Lit {
            start: 0,
            end: 0,
            kind: LitKind::Number,
        }; INLINE],
        len: 0,
        spill: Vec::new(),
    };

    /// Number of literals found in the text.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the text has no literal.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn get(&self, i: usize) -> Option<Lit> {
        if i >= self.len {
            return None;
        }
        if i < INLINE {
            self.inline.get(i).copied()
        } else {
            self.spill.get(i - INLINE).copied()
        }
    }

    fn push(&mut self, lit: Lit) {
        if self.len < INLINE {
            self.inline[self.len] = lit;
        } else {
            self.spill.push(lit);
        }
        self.len += 1;
    }

    fn clear(&mut self) {
        self.len = 0;
        self.spill.clear();
    }

    /// The kind of literal `i`; None if out of range.
    pub(crate) fn kind(&self, i: usize) -> Option<LitKind> {
        self.get(i).map(|l| l.kind)
    }

    /// Byte range of literal `i` in the statement text, including its quotes
    /// and any `E`/`B`/`X`/`N`/`U&` prefix (a leading minus sign is not part
    /// of a literal). None if out of range.
    pub fn span(&self, i: usize) -> Option<Range<usize>> {
        self.get(i).map(|l| l.start as usize..l.end as usize)
    }

    /// The value of literal `i` as PostgreSQL would read it: numbers as
    /// written; strings unquoted and unescaped (`'it''s'` -> `it's`, `E'..'`
    /// backslash escapes, `$$..$$` bodies, `U&'..'` with the default `\`
    /// escape). For `B'..'` / `X'..'` bit strings, the digits between the
    /// quotes. `sql` must be the text the literals were found in; None if `i`
    /// is out of range or the span does not fit `sql`.
    pub fn value<'a>(&self, sql: &'a str, i: usize) -> Option<Cow<'a, str>> {
        let lit = self.get(i)?;
        let tok = sql.get(lit.start as usize..lit.end as usize)?;
        decode_literal(tok, lit.kind)
    }
}

/// Decode the text of one literal token.
pub(crate) fn decode_literal(tok: &str, kind: LitKind) -> Option<Cow<'_, str>> {
    match kind {
        LitKind::Number => Some(Cow::Borrowed(tok)),
        LitKind::Str(StrKind::Standard) => Some(unquote_standard(tok)),
        LitKind::Str(StrKind::National) => Some(unquote_standard(tok.get(1..)?)),
        LitKind::Str(StrKind::Bit | StrKind::Hex) => Some(unquote_standard(tok.get(1..)?)),
        LitKind::Str(StrKind::Escape) => Some(unescape_e(quoted_body(tok.get(1..)?))),
        LitKind::Str(StrKind::Unicode) => Some(unescape_unicode(&unquote_standard(tok.get(2..)?))),
        LitKind::Str(StrKind::Dollar) => {
            // `$tag$body$tag$`: the tag is everything up to the second `$`.
            let rest = tok.get(1..)?;
            let tag_len = rest.find('$')? + 2;
            if tok.len() >= 2 * tag_len {
                Some(Cow::Borrowed(tok.get(tag_len..tok.len() - tag_len)?))
            } else {
                // Unterminated: everything after the opening tag.
                Some(Cow::Borrowed(tok.get(tag_len.min(tok.len())..)?))
            }
        }
    }
}

/// The text between the quotes of `'...'` (tolerating a missing closing quote).
fn quoted_body(tok: &str) -> &str {
    let inner = tok.strip_prefix('\'').unwrap_or(tok);
    inner.strip_suffix('\'').unwrap_or(inner)
}

/// `'it''s'` -> `it's`.
pub(crate) fn unquote_standard(tok: &str) -> Cow<'_, str> {
    let body = quoted_body(tok);
    if body.contains("''") {
        Cow::Owned(body.replace("''", "'"))
    } else {
        Cow::Borrowed(body)
    }
}

fn hex_val(c: u8) -> Option<u32> {
    (c as char).to_digit(16)
}

fn push_char(out: &mut Vec<u8>, cp: u32) {
    let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
    let mut buf = [0u8; 4];
    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
}

/// Read up to `max` hex digits at `b[i..]`; returns (value, digits read).
fn read_hex(b: &[u8], i: usize, max: usize) -> (u32, usize) {
    let mut v = 0u32;
    let mut n = 0;
    while n < max {
        match b.get(i + n).copied().and_then(hex_val) {
            Some(d) => {
                v = v.wrapping_mul(16).wrapping_add(d);
                n += 1;
            }
            None => break,
        }
    }
    (v, n)
}

/// Unescape the body of an `E'...'` string (PostgreSQL rules: `\b \f \n \r
/// \t`, octal `\o..\ooo`, hex `\xh..\xhh`, `\uXXXX`, `\UXXXXXXXX`, any other
/// `\c` is `c`, `''` is `'`). Byte escapes forming invalid UTF-8 are replaced
/// by U+FFFD.
pub(crate) fn unescape_e(body: &str) -> Cow<'_, str> {
    if !body.contains('\\') && !body.contains("''") {
        return Cow::Borrowed(body);
    }
    let b = body.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\'' && b.get(i + 1) == Some(&b'\'') {
            out.push(b'\'');
            i += 2;
            continue;
        }
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let Some(&e) = b.get(i + 1) else {
            i += 1;
            continue;
        };
        i += 2;
        match e {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                let mut n = 0;
                while n < 2 {
                    match b.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                            n += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' => {
                let (v, n) = read_hex(b, i, 2);
                if n == 0 {
                    out.push(b'x');
                } else {
                    out.push(v as u8);
                    i += n;
                }
            }
            b'u' | b'U' => {
                let want = if e == b'u' { 4 } else { 8 };
                let (v, n) = read_hex(b, i, want);
                if n < want {
                    out.push(e);
                    continue;
                }
                i += n;
                // Surrogate pair written as two \u escapes.
                if (0xD800..0xDC00).contains(&v)
                    && b.get(i) == Some(&b'\\')
                    && b.get(i + 1) == Some(&b'u')
                {
                    let (lo, m) = read_hex(b, i + 2, 4);
                    if m == 4 && (0xDC00..0xE000).contains(&lo) {
                        i += 6;
                        push_char(&mut out, 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00));
                        continue;
                    }
                }
                push_char(&mut out, v);
            }
            other => out.push(other),
        }
    }
    Cow::Owned(match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// Decode `\XXXX`, `\+XXXXXX` and `\\` in the (already unquoted) body of a
/// `U&'...'` string (default escape character only).
fn unescape_unicode(body: &str) -> Cow<'static, str> {
    let b = body.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        if b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else if b.get(i + 1) == Some(&b'+') {
            let (v, n) = read_hex(b, i + 2, 6);
            if n == 6 {
                push_char(&mut out, v);
                i += 8;
            } else {
                out.push(b'\\');
                i += 1;
            }
        } else {
            let (v, n) = read_hex(b, i + 1, 4);
            if n == 4 {
                push_char(&mut out, v);
                i += 5;
            } else {
                out.push(b'\\');
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Outcome of [`normalize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Normalized {
    /// `out` holds the normalized text; plan it with placeholders as literal
    /// indexes.
    Ok,
    /// The text cannot be normalized faithfully (it contains `$n`
    /// parameters, a `U&'..'` string, or an unterminated string/comment, or
    /// is 4 GiB or longer): plan the original text instead.
    Unfit,
}

/// Normalize `sql` into `out` (cleared first) and record literal spans in
/// `lits` (cleared first). One pass, no allocation beyond growing `out`
/// and, past 8 literals, `lits`.
pub(crate) fn normalize(sql: &str, out: &mut String, lits: &mut Literals) -> Normalized {
    out.clear();
    lits.clear();
    if u32::try_from(sql.len()).is_err() {
        return Normalized::Unfit;
    }
    let bytes = sql.as_bytes();
    let mut fit = Normalized::Ok;
    let mut copied = 0usize;
    let mut lexer = Lexer::new(sql);
    while let Some(t) = lexer.next_literal() {
        let kind = match t.kind {
            Tok::Number => LitKind::Number,
            Tok::Str(k) => {
                if k == StrKind::Unicode || !t.terminated {
                    fit = Normalized::Unfit;
                }
                LitKind::Str(k)
            }
            Tok::Param => {
                fit = Normalized::Unfit;
                continue;
            }
            Tok::Comment | Tok::QuotedIdent if !t.terminated => {
                fit = Normalized::Unfit;
                continue;
            }
            _ => continue,
        };
        out.push_str(sql.get(copied..t.start).unwrap_or(""));
        // Keep the placeholder a separate token: `date'x'` must not become
        // the identifier `date$1`, nor `'a'5` the parameter `$15`.
        if out.as_bytes().last().is_some_and(|&c| is_ident_cont(c)) {
            out.push(' ');
        }
        // Cannot truncate: the text is shorter than 4 GiB (checked above).
        lits.push(Lit {
            start: t.start as u32,
            end: t.end as u32,
            kind,
        });
        out.push('$');
        push_decimal(out, lits.len());
        if bytes.get(t.end).is_some_and(|&c| is_ident_cont(c)) {
            out.push(' ');
        }
        copied = t.end;
    }
    out.push_str(sql.get(copied..).unwrap_or(""));
    fit
}

fn push_decimal(out: &mut String, mut n: usize) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    for &c in &buf[i..] {
        out.push(c as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(sql: &str) -> (String, Vec<String>, Normalized) {
        let mut out = String::new();
        let mut lits = Literals::default();
        let n = normalize(sql, &mut out, &mut lits);
        let vals = (0..lits.len())
            .map(|i| lits.value(sql, i).unwrap_or_default().into_owned())
            .collect();
        (out, vals, n)
    }

    #[test]
    fn replaces_literals_in_order() {
        let (n, v, ok) =
            norm("UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 5;");
        assert_eq!(
            n,
            "UPDATE pgbench_accounts SET abalance = abalance + -$1 WHERE aid = $2;"
        );
        assert_eq!(v, vec!["4321", "5"]);
        assert_eq!(ok, Normalized::Ok);
    }

    #[test]
    fn decodes_strings() {
        let sql = r"SELECT 'it''s', E'a\'b\n\x41\101\u00e9', $$x'y$$, $q$ $$ $q$, B'101', X'1F', N'n''', 1.5e3, .5, 0x1F";
        let (n, v, ok) = norm(sql);
        assert_eq!(ok, Normalized::Ok);
        assert_eq!(n, "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10");
        assert_eq!(
            v,
            vec![
                "it's",
                "a'b\nAAé",
                "x'y",
                " $$ ",
                "101",
                "1F",
                "n'",
                "1.5e3",
                ".5",
                "0x1F"
            ]
        );
    }

    #[test]
    fn keeps_comments_identifiers_and_spacing() {
        let (n, v, _) =
            norm("select /* 'no' */ \"a'b\", x1, a$b -- 'c'\n from t where d=date'2020-01-01'");
        assert_eq!(
            n,
            "select /* 'no' */ \"a'b\", x1, a$b -- 'c'\n from t where d=date $1"
        );
        assert_eq!(v, vec!["2020-01-01"]);
    }

    #[test]
    fn unfit_inputs() {
        assert_eq!(norm("SELECT $1").2, Normalized::Unfit);
        assert_eq!(norm("SELECT U&'\\0041'").2, Normalized::Unfit);
        assert_eq!(norm("SELECT U&'\\0041'").1, vec!["A"]);
        assert_eq!(norm("SELECT 'abc").2, Normalized::Unfit);
    }

    #[test]
    fn many_literals_spill() {
        let sql = "VALUES (1,2,3,4,5,6,7,8,9,10,11)";
        let (n, v, _) = norm(sql);
        assert_eq!(n, "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)");
        assert_eq!(v.len(), 11);
        assert_eq!(v[10], "11");
    }

    #[test]
    fn value_is_bounds_safe() {
        let mut out = String::new();
        let mut lits = Literals::default();
        normalize("SELECT 'éé'", &mut out, &mut lits);
        assert_eq!(lits.value("SELECT 'éé'", 0).as_deref(), Some("éé"));
        assert_eq!(lits.value("SELECT 'éé'", 1), None);
        assert_eq!(lits.value("x", 0), None);
        assert_eq!(lits.value("SELECT é", 0), None);
    }
}
