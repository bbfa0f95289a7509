//! A tiny byte-level SQL lexer shared by the statement splitter, the
//! fingerprinter, the keyword pre-classifier, the COPY parser and the INSERT
//! span finder.
//!
//! It follows PostgreSQL's lexer (`scan.l`) closely enough to find token
//! boundaries: whitespace, `--` and nested `/* */` comments, identifiers
//! (which may contain `$` after the first character), `"quoted"`
//! identifiers, string constants (`'..'`, `E'..'`, `B'..'`, `X'..'`,
//! `N'..'`, `U&'..'`, `$tag$..$tag$`), numbers, `$n` parameters, `;` and
//! single-byte punctuation. It never fails: an unterminated string or
//! comment extends to the end of the input and is flagged.
//!
//! Every boundary it reports sits on an ASCII byte or at the end of the
//! text, so slicing a `&str` with the reported ranges is always on a char
//! boundary (bytes >= 0x80 only ever appear inside identifiers, strings and
//! comments, and are consumed whole).

/// Kinds of string constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrKind {
    /// `'...'` (standard_conforming_strings = on: backslash is ordinary).
    Standard,
    /// `E'...'`: backslash escapes.
    Escape,
    /// `$tag$...$tag$`.
    Dollar,
    /// `B'0101'` bit string.
    Bit,
    /// `X'1F'` hexadecimal bit string.
    Hex,
    /// `N'...'` national character string (same content rules as standard).
    National,
    /// `U&'...'` string with Unicode escapes.
    Unicode,
}

/// Token kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    /// Whitespace run.
    Space,
    /// `-- ...` (up to, not including, the newline) or `/* ... */`.
    Comment,
    /// Unquoted identifier or keyword.
    Ident,
    /// `"quoted identifier"`.
    QuotedIdent,
    /// A string constant.
    Str(StrKind),
    /// A numeric constant.
    Number,
    /// A `$n` positional parameter.
    Param,
    /// `;`.
    Semicolon,
    /// Any other single byte (operators, parentheses, commas, ...).
    Other,
}

/// One token: kind and byte range; `terminated` is false for a string,
/// quoted identifier or comment that runs off the end of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: Tok,
    pub start: usize,
    pub end: usize,
    pub terminated: bool,
}

impl Token {
    /// The token's text (empty if the range is somehow not valid for `sql`).
    pub fn text<'a>(&self, sql: &'a str) -> &'a str {
        sql.get(self.start..self.end).unwrap_or("")
    }

    /// True if this is an identifier equal (ASCII case-insensitively) to `kw`.
    pub fn is_word(&self, sql: &str, kw: &str) -> bool {
        self.kind == Tok::Ident && self.text(sql).eq_ignore_ascii_case(kw)
    }

    /// True if this is the single punctuation byte `c`.
    pub fn is_punct(&self, sql: &str, c: u8) -> bool {
        self.kind == Tok::Other && self.text(sql).as_bytes() == [c]
    }

    /// Whitespace or comment.
    pub fn is_trivia(&self) -> bool {
        matches!(self.kind, Tok::Space | Tok::Comment)
    }
}

#[inline]
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// `IDENT_CONT[c]`: byte `c` may continue an identifier.
static IDENT_CONT: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
        c += 1;
    }
    t
};

#[inline]
pub(crate) fn is_ident_cont(c: u8) -> bool {
    IDENT_CONT[c as usize]
}

/// [`SCAN_CLASS`]: no token the fingerprinter needs starts at this byte.
const SCAN_SKIP: u8 = 0;
/// [`SCAN_CLASS`]: an identifier (or a prefixed string constant) starts.
const SCAN_IDENT: u8 = 1;
/// [`SCAN_CLASS`]: a number, a `'` string, or `$` (parameter or dollar
/// quote) starts.
const SCAN_LITERAL: u8 = 2;
/// [`SCAN_CLASS`]: `.` (a number when a digit follows).
const SCAN_DOT: u8 = 3;
/// [`SCAN_CLASS`]: `"` (quoted identifier).
const SCAN_DQUOTE: u8 = 4;
/// [`SCAN_CLASS`]: `-` (a comment when `-` follows).
const SCAN_DASH: u8 = 5;
/// [`SCAN_CLASS`]: `/` (a comment when `*` follows).
const SCAN_SLASH: u8 = 6;

/// `SCAN_CLASS[c]`: what may start at byte `c`, for
/// [`Lexer::next_literal`] (the first-byte cases of [`Lexer::next`]).
static SCAN_CLASS: [u8; 256] = {
    let mut t = [SCAN_SKIP; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        t[c] = if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 {
            SCAN_IDENT
        } else if b.is_ascii_digit() || b == b'\'' || b == b'$' {
            SCAN_LITERAL
        } else if b == b'.' {
            SCAN_DOT
        } else if b == b'"' {
            SCAN_DQUOTE
        } else if b == b'-' {
            SCAN_DASH
        } else if b == b'/' {
            SCAN_SLASH
        } else {
            SCAN_SKIP
        };
        c += 1;
    }
    t
};

#[inline]
fn is_dollar_tag_cont(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// Iterator over the tokens of a SQL text.
pub(crate) struct Lexer<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    /// Lex `sql` from the start.
    pub fn new(sql: &'a str) -> Lexer<'a> {
        Lexer {
            b: sql.as_bytes(),
            pos: 0,
        }
    }

    #[inline]
    fn at(&self, i: usize) -> u8 {
        self.b.get(i).copied().unwrap_or(0)
    }

    /// Scan a quoted run starting at the opening quote `q` (at `i`); a doubled
    /// quote is an escaped quote; with `backslash`, `\x` skips `x`.
    /// Returns (end, terminated).
    fn quoted(&self, i: usize, q: u8, backslash: bool) -> (usize, bool) {
        let b = self.b;
        let mut j = i + 1;
        while j < b.len() {
            let c = b[j];
            if backslash && c == b'\\' {
                j += 2;
                continue;
            }
            if c == q {
                if self.at(j + 1) == q {
                    j += 2;
                    continue;
                }
                return (j + 1, true);
            }
            j += 1;
        }
        (b.len(), false)
    }

    fn number(&self, i: usize) -> usize {
        let b = self.b;
        let mut j = i;
        // 0x / 0o / 0b integers (PostgreSQL 16).
        if self.at(j) == b'0'
            && matches!(self.at(j + 1), b'x' | b'X' | b'o' | b'O' | b'b' | b'B')
            && self.at(j + 2).is_ascii_hexdigit()
        {
            j += 2;
            while j < b.len() && (b[j].is_ascii_hexdigit() || b[j] == b'_') {
                j += 1;
            }
            return j;
        }
        while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'_') {
            j += 1;
        }
        // `1..5` is two tokens in PostgreSQL's lexer; don't eat the first dot.
        if self.at(j) == b'.' && self.at(j + 1) != b'.' {
            j += 1;
            while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'_') {
                j += 1;
            }
        }
        if matches!(self.at(j), b'e' | b'E') {
            let k = if matches!(self.at(j + 1), b'+' | b'-') {
                j + 2
            } else {
                j + 1
            };
            if self.at(k).is_ascii_digit() {
                j = k;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
            }
        }
        j
    }

    /// `$...` at `i`: a parameter, a dollar-quoted string, or a lone `$`.
    fn dollar(&self, i: usize) -> (Tok, usize, bool) {
        let b = self.b;
        if self.at(i + 1).is_ascii_digit() {
            let mut j = i + 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            return (Tok::Param, j, true);
        }
        // Opening tag: `$` [tag] `$`, the tag not starting with a digit.
        let mut j = i + 1;
        while j < b.len() && is_dollar_tag_cont(b[j]) {
            j += 1;
        }
        if self.at(j) != b'$' {
            return (Tok::Other, i + 1, true);
        }
        let tag = &b[i..=j];
        let body = j + 1;
        let mut k = body;
        while k < b.len() {
            if b[k] == b'$' && b[k..].starts_with(tag) {
                return (Tok::Str(StrKind::Dollar), k + tag.len(), true);
            }
            k += 1;
        }
        (Tok::Str(StrKind::Dollar), b.len(), false)
    }

    fn block_comment(&self, i: usize) -> (usize, bool) {
        let b = self.b;
        let mut depth = 0usize;
        let mut j = i;
        while j < b.len() {
            if b[j] == b'/' && self.at(j + 1) == b'*' {
                depth += 1;
                j += 2;
            } else if b[j] == b'*' && self.at(j + 1) == b'/' {
                depth = depth.saturating_sub(1);
                j += 2;
                if depth == 0 {
                    return (j, true);
                }
            } else {
                j += 1;
            }
        }
        (b.len(), false)
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let b = self.b;
        let i = self.pos;
        let c = *b.get(i)?;
        let (kind, end, terminated) = match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' | 0x80..=0xff => self.word(i),
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                let mut j = i + 1;
                while j < b.len() && is_space(b[j]) {
                    j += 1;
                }
                (Tok::Space, j, true)
            }
            b'0'..=b'9' => (Tok::Number, self.number(i), true),
            b'\'' => {
                let (e, t) = self.quoted(i, b'\'', false);
                (Tok::Str(StrKind::Standard), e, t)
            }
            b'"' => {
                let (e, t) = self.quoted(i, b'"', false);
                (Tok::QuotedIdent, e, t)
            }
            b'$' => self.dollar(i),
            b';' => (Tok::Semicolon, i + 1, true),
            b'-' if self.at(i + 1) == b'-' => {
                let mut j = i + 2;
                while j < b.len() && b[j] != b'\n' && b[j] != b'\r' {
                    j += 1;
                }
                (Tok::Comment, j, true)
            }
            b'/' if self.at(i + 1) == b'*' => {
                let (e, t) = self.block_comment(i);
                (Tok::Comment, e, t)
            }
            b'.' if self.at(i + 1).is_ascii_digit() => (Tok::Number, self.number(i), true),
            _ => (Tok::Other, i + 1, true),
        };
        let end = if end > i { end.min(b.len()) } else { i + 1 };
        self.pos = end;
        Some(Token {
            kind,
            start: i,
            end,
            terminated,
        })
    }
}

impl<'a> Lexer<'a> {
    /// The next token that matters to the fingerprinter: a string or number
    /// constant, a `$n` parameter, or an unterminated quoted identifier or
    /// comment. Identifiers, whitespace, punctuation and complete comments
    /// and quoted identifiers are skipped in tight loops driven by a byte
    /// class table ([`SCAN_CLASS`]).
    pub fn next_literal(&mut self) -> Option<Token> {
        let b = self.b;
        let mut i = self.pos;
        loop {
            // Whitespace, operators, punctuation: nothing starts here.
            while i < b.len() && SCAN_CLASS[b[i] as usize] == SCAN_SKIP {
                i += 1;
            }
            let c = *b.get(i)?;
            match SCAN_CLASS[c as usize] {
                SCAN_IDENT => {
                    let n = self.at(i + 1);
                    if n == b'\'' || n == b'&' {
                        // Maybe a prefixed string constant (`E'..'`, `U&'..'`).
                        let (kind, end, _) = self.word(i);
                        if kind != Tok::Ident {
                            self.pos = i;
                            return self.next();
                        }
                        i = end;
                    } else {
                        i += 1;
                        while i < b.len() && is_ident_cont(b[i]) {
                            i += 1;
                        }
                    }
                }
                SCAN_LITERAL => {
                    self.pos = i;
                    let t = self.next()?;
                    if t.kind != Tok::Other {
                        return Some(t);
                    }
                    i = t.end;
                }
                SCAN_DOT if self.at(i + 1).is_ascii_digit() => {
                    self.pos = i;
                    return self.next();
                }
                SCAN_DQUOTE => {
                    let (e, t) = self.quoted(i, b'"', false);
                    if !t {
                        self.pos = i;
                        return self.next();
                    }
                    i = e;
                }
                SCAN_DASH if self.at(i + 1) == b'-' => {
                    i += 2;
                    while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                        i += 1;
                    }
                }
                SCAN_SLASH if self.at(i + 1) == b'*' => {
                    let (e, t) = self.block_comment(i);
                    if !t {
                        self.pos = i;
                        return self.next();
                    }
                    i = e;
                }
                _ => i += 1,
            }
        }
    }

    /// An identifier, or a prefixed string constant (`E'`, `B'`, `X'`,
    /// `N'`, `U&'`), at `i`.
    #[inline]
    fn word(&self, i: usize) -> (Tok, usize, bool) {
        let b = self.b;
        let n = self.at(i + 1);
        if n == b'\'' || n == b'&' {
            let prefixed = |kind: StrKind, quote_at: usize, backslash: bool| {
                let (e, t) = self.quoted(quote_at, b'\'', backslash);
                (Tok::Str(kind), e, t)
            };
            match (b[i], n) {
                (b'e' | b'E', b'\'') => return prefixed(StrKind::Escape, i + 1, true),
                (b'b' | b'B', b'\'') => return prefixed(StrKind::Bit, i + 1, false),
                (b'x' | b'X', b'\'') => return prefixed(StrKind::Hex, i + 1, false),
                (b'n' | b'N', b'\'') => return prefixed(StrKind::National, i + 1, false),
                (b'u' | b'U', b'&') if self.at(i + 2) == b'\'' => {
                    return prefixed(StrKind::Unicode, i + 2, false)
                }
                _ => {}
            }
        }
        let mut j = i + 1;
        while j < b.len() && is_ident_cont(b[j]) {
            j += 1;
        }
        (Tok::Ident, j, true)
    }
}

/// Tokens of `sql` that are not whitespace or comments.
pub(crate) fn significant(sql: &str) -> impl Iterator<Item = Token> + '_ {
    Lexer::new(sql).filter(|t| !t.is_trivia())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(Tok, &str)> {
        Lexer::new(sql).map(|t| (t.kind, t.text(sql))).collect()
    }

    #[test]
    fn lexes_the_usual_suspects() {
        let k = kinds("a$1 $1 $$x$$ $t$y$t$ E'\\'' 'it''s' -1.5e3 /* /* */ */ -- c\n\"Q\"\"\";");
        assert_eq!(
            k,
            vec![
                (Tok::Ident, "a$1"),
                (Tok::Space, " "),
                (Tok::Param, "$1"),
                (Tok::Space, " "),
                (Tok::Str(StrKind::Dollar), "$$x$$"),
                (Tok::Space, " "),
                (Tok::Str(StrKind::Dollar), "$t$y$t$"),
                (Tok::Space, " "),
                (Tok::Str(StrKind::Escape), "E'\\''"),
                (Tok::Space, " "),
                (Tok::Str(StrKind::Standard), "'it''s'"),
                (Tok::Space, " "),
                (Tok::Other, "-"),
                (Tok::Number, "1.5e3"),
                (Tok::Space, " "),
                (Tok::Comment, "/* /* */ */"),
                (Tok::Space, " "),
                (Tok::Comment, "-- c"),
                (Tok::Space, "\n"),
                (Tok::QuotedIdent, "\"Q\"\"\""),
                (Tok::Semicolon, ";"),
            ]
        );
    }

    #[test]
    fn unterminated_and_odd_input_never_panics() {
        for s in [
            "'abc", "E'\\", "$a$ x", "/* /*", "\"x", "$", "é'x'", "0x", "1e", ".", "U&",
        ] {
            let toks: Vec<Token> = Lexer::new(s).collect();
            let total: usize = toks.iter().map(|t| t.end - t.start).sum();
            assert_eq!(total, s.len(), "{s}");
        }
        let t: Vec<Token> = Lexer::new("'abc").collect();
        assert!(!t[0].terminated);
    }
}
