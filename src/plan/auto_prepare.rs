//! Auto-prepared statements: a single-shard simple-protocol statement can
//! run on its shard as a prepared statement of its normalized text, the
//! literals sent as parameters, so the shard parses and analyzes each
//! statement shape once per backend connection (as for the extended
//! protocol) instead of once per query.
//!
//! A parameter must mean exactly what the literal meant, so each one is
//! typed as PostgreSQL types the literal (`scan.l` and `make_const` in
//! `parse_node.c`): an integer that fits int4 is int4, else int8, else
//! numeric; a number with a fraction or an exponent is numeric; a string
//! constant has unknown type, so its parameter's type is left for the
//! server to infer from the context, as it does for the literal. The text
//! is not auto-prepared ([`auto_stmt`] gives None) where a parameter would
//! not be equivalent:
//!
//! * it is not a SELECT, INSERT, UPDATE, DELETE, WITH, VALUES or TABLE
//!   statement (utility statements take no parameters), or is a
//!   `SELECT ... INTO`;
//! * a literal stands alone as an ORDER BY, GROUP BY or DISTINCT ON item
//!   (`ORDER BY 2` is a column position; `ORDER BY $1` sorts by a constant);
//!
//! and one execution is not ([`AutoStmt::params`] gives None) when a
//! literal is a bit string, an `E''`, `N''` or `U&''` string, a standard
//! string holding a backslash (its value depends on
//! `standard_conforming_strings`), a number PostgreSQL 16 spells in hex,
//! octal, binary or with `_`, 2147483648 or 9223372036854775808 (which a
//! unary minus turns into an int4 / int8 literal), or touches an
//! identifier (`date'x'`, `1x`), or the text has more than
//! [`MAX_PARAMS`] literals.
//!
//! A string's parameter can still fail where its literal did not (a
//! parameter whose type cannot be inferred, `SELECT 'a' IS NULL`; a typed literal
//! `date '2020-01-01'`): a combination of parameter types with strings is
//! trusted once it prepared without error ([`AutoStmt::verify`]), and
//! [`AutoStmt::refuse`] turns the text's auto-preparing off for good.

use std::hash::BuildHasher;

use smallvec::SmallVec;

use super::fingerprint::{LitKind, Literals};
use super::lex::{is_ident_cont, significant, StrKind, Tok};
use super::prepare_verdict::PrepareVerdict;
use super::types::Plan;

/// Most literals an auto-prepared text may have.
pub const MAX_PARAMS: usize = 256;

/// Type OID of int4 (`pg_type.dat`).
const INT4: u32 = 23;
/// Type OID of int8.
const INT8: u32 = 20;
/// Type OID of numeric.
const NUMERIC: u32 = 1700;
/// "Unspecified": the server infers the parameter's type.
const UNSPECIFIED: u32 = 0;

/// A normalized statement text that may run as a prepared statement,
/// shared by every session through the plan cache.
#[derive(Debug)]
pub struct AutoStmt {
    text: Box<str>,
    text_id: u64,
    verdict: PrepareVerdict,
}

/// One execution's parameters: their type OIDs and the backend statement
/// (`pgr_<id>` of the text and these types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoParams {
    /// Parameter type OIDs (0 = unspecified), one per parameter.
    pub types: SmallVec<[u32; 8]>,
    /// The parameter (1-based) of each literal: numbers of equal type and
    /// value share one, so that equal expressions stay equal
    /// (`SELECT s % 10 ... GROUP BY s % 10`); parameters are numbered in
    /// the order of their first literal.
    pub slots: SmallVec<[u32; 8]>,
    /// Some literals share a parameter: the text's placeholders are
    /// renumbered ([`AutoStmt::text_for`]).
    pub shared: bool,
    /// Backend statement id: the statement is `pgr_<id as 16 hex digits>`.
    pub id: u64,
    /// Hash of `types` (never 0).
    types_hash: u64,
    /// Some literal is a string (its parameter's type is inferred).
    pub strings: bool,
}

fn hasher() -> foldhash::fast::FixedState {
    foldhash::fast::FixedState::with_seed(0x7067_725f_6175_746f)
}

impl AutoStmt {
    /// The normalized text (`$1..$n` in place of the literals).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The parameters of one execution: `sql` is the statement text and
    /// `lits` its literals (as [`super::Planner::plan_simple_shaped`] gave
    /// them). None if this execution cannot be auto-prepared (see the
    /// module docs).
    pub fn params(&self, sql: &str, lits: &Literals) -> Option<AutoParams> {
        if lits.len() > MAX_PARAMS {
            return None;
        }
        let mut types = SmallVec::with_capacity(lits.len());
        let mut slots: SmallVec<[u32; 8]> = SmallVec::with_capacity(lits.len());
        let mut strings = false;
        let mut shared = false;
        for i in 0..lits.len() {
            let ty = literal_type(sql, lits, i)?;
            strings |= ty == UNSPECIFIED;
            // An earlier number of the same type and value.
            let same = (ty != UNSPECIFIED)
                .then(|| {
                    (0..i).find(|&j| {
                        types.get(slots[j] as usize - 1) == Some(&ty)
                            && same_number(sql, lits, i, j)
                    })
                })
                .flatten();
            match same {
                Some(j) => {
                    shared = true;
                    slots.push(slots[j]);
                }
                None => {
                    types.push(ty);
                    slots.push(types.len() as u32);
                }
            }
        }
        let types_hash = hasher().hash_one((types.as_slice(), slots.as_slice())) | 1;
        let id = hasher().hash_one((self.text_id, types_hash));
        Some(AutoParams {
            types,
            slots,
            shared,
            id,
            types_hash,
            strings,
        })
    }

    /// The text to prepare for `p`: the normalized text, its placeholders
    /// renumbered when literals share a parameter.
    pub fn text_for(&self, p: &AutoParams) -> std::borrow::Cow<'_, str> {
        if !p.shared {
            return std::borrow::Cow::Borrowed(&self.text);
        }
        let mut out = String::with_capacity(self.text.len());
        for t in super::lex::Lexer::new(&self.text) {
            let tok = t.text(&self.text);
            let slot = (t.kind == Tok::Param)
                .then(|| tok.get(1..)?.parse::<usize>().ok())
                .flatten()
                .and_then(|k| p.slots.get(k.checked_sub(1)?));
            match slot {
                Some(n) => {
                    out.push('$');
                    out.push_str(itoa::Buffer::new().format(*n));
                }
                None => out.push_str(tok),
            }
        }
        std::borrow::Cow::Owned(out)
    }

    /// True if `p` may be prepared where a failure cannot be undone (inside
    /// a transaction block): no string parameters, or this combination
    /// prepared before.
    pub fn trusted(&self, p: &AutoParams) -> bool {
        self.verdict.trusted(p.strings, p.types_hash)
    }

    /// Records that `p` prepared without error.
    pub fn verify(&self, p: &AutoParams) {
        self.verdict.verify(p.strings, p.types_hash);
    }

    /// Turns auto-preparing off for this text (a parameter failed where
    /// the literal did not).
    pub fn refuse(&self) {
        self.verdict.refuse();
    }

    /// True after [`AutoStmt::refuse`].
    pub fn refused(&self) -> bool {
        self.verdict.refused()
    }

    /// Maps a byte offset in the text prepared for `p`
    /// ([`AutoStmt::text_for`]) to the byte offset in `sql` (the statement
    /// whose literals are `lits`) of the same place; a place inside a
    /// placeholder maps to its literal's start. None if the offset is past
    /// the text or `lits` does not fit it.
    pub fn original_offset(
        &self,
        p: &AutoParams,
        sql: &str,
        lits: &Literals,
        at: usize,
    ) -> Option<usize> {
        let text = self.text_for(p);
        let norm = text.as_bytes();
        let orig = sql.as_bytes();
        let (mut o, mut n) = (0usize, 0usize);
        for i in 0..lits.len() {
            let span = lits.span(i)?;
            let seg = span.start.checked_sub(o)?;
            if at < n + seg {
                return Some(o + (at - n));
            }
            n += seg;
            // A space the normalizer put between an identifier and `$k`.
            if norm.get(n) == Some(&b' ') {
                n += 1;
            }
            let k = p.slots.get(i).map_or(i + 1, |&k| k as usize).max(1);
            let digits = k.ilog10() as usize + 1;
            n += 1 + digits;
            if norm.get(n) == Some(&b' ') && orig.get(span.end).is_some_and(|&c| is_ident_cont(c)) {
                n += 1;
            }
            if at < n {
                return Some(span.start);
            }
            o = span.end;
        }
        let rest = at - n;
        (o + rest <= orig.len()).then_some(o + rest)
    }
}

/// The parameter type of literal `i` of `sql` (0 = unspecified, for a
/// string); None if a parameter cannot stand for it (see the module docs).
pub fn literal_type(sql: &str, lits: &Literals, i: usize) -> Option<u32> {
    let b = sql.as_bytes();
    let span = lits.span(i)?;
    let before = span.start.checked_sub(1).and_then(|j| b.get(j));
    if before.is_some_and(|&c| is_ident_cont(c))
        || b.get(span.end).is_some_and(|&c| is_ident_cont(c))
    {
        return None;
    }
    let tok = sql.get(span)?;
    match lits.kind(i)? {
        LitKind::Number => number_type(tok),
        LitKind::Str(StrKind::Standard) if !tok.contains('\\') => Some(UNSPECIFIED),
        LitKind::Str(StrKind::Dollar) => Some(UNSPECIFIED),
        LitKind::Str(_) => None,
    }
}

/// Hash of one execution's parameter types (0 = unspecified), never 0:
/// the key of [`PrepareVerdict::trusted`] for a text the router writes
/// itself (a gather's shard statement).
pub fn types_hash(types: &[u32]) -> u64 {
    hasher().hash_one(types) | 1
}

/// The backend statement id of `text` with parameter types `types` (the
/// statement is `pgr_<id as 16 hex digits>`).
pub fn statement_id(text: &str, types: &[u32]) -> u64 {
    hasher().hash_one((text, types))
}

/// True if number literals `i` and `j` of `sql` (of one type) have the
/// same value: integers compared as integers (`010` = `10`), numerics as
/// written. Literals of equal value must share a parameter: PostgreSQL
/// matches equal constants, not different parameters, between a GROUP BY
/// expression and the select list.
pub fn same_number(sql: &str, lits: &Literals, i: usize, j: usize) -> bool {
    let tok = |k: usize| lits.span(k).and_then(|r| sql.get(r));
    match (tok(i), tok(j)) {
        (Some(a), Some(b)) => match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(x), Ok(y)) => x == y,
            _ => a == b,
        },
        _ => false,
    }
}

/// The type PostgreSQL gives a numeric literal written `tok` (unsigned),
/// None for spellings and values a parameter cannot stand for (see the
/// module docs).
fn number_type(tok: &str) -> Option<u32> {
    let b = tok.as_bytes();
    if b.is_empty() {
        return None;
    }
    if b.iter().all(u8::is_ascii_digit) {
        return match tok.parse::<u64>() {
            Ok(v) if v <= i32::MAX as u64 => Some(INT4),
            Ok(0x8000_0000) => None,
            Ok(v) if v <= i64::MAX as u64 => Some(INT8),
            Ok(0x8000_0000_0000_0000) => None,
            _ => Some(NUMERIC),
        };
    }
    let plain = b
        .iter()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'));
    (plain && b.iter().any(u8::is_ascii_digit)).then_some(NUMERIC)
}

/// The auto-prepared form of a simple-protocol statement whose
/// normalized text is `normalized` and plan is `plan`; None when the plan
/// does not run on one shard as written (only [`Plan::Keyed`],
/// [`Plan::Insert`] and [`Plan::AnyShard`] do) or the text has a literal a
/// parameter cannot replace (see the module docs).
pub(crate) fn auto_stmt(normalized: &str, plan: &Plan) -> Option<AutoStmt> {
    if !matches!(
        plan,
        Plan::Keyed { .. } | Plan::Insert { .. } | Plan::AnyShard
    ) || !preparable_text(normalized)
    {
        return None;
    }
    Some(AutoStmt {
        text: normalized.into(),
        text_id: hasher().hash_one(normalized),
        verdict: PrepareVerdict::default(),
    })
}

/// True if a text with `$n` placeholders in place of literals may be
/// prepared as it is (a statement kind that takes parameters, no
/// placeholder standing for a column position; see the module docs).
pub fn preparable_text(sql: &str) -> bool {
    let mut toks = significant(sql).peekable();
    let Some(first) = toks.peek().copied() else {
        return false;
    };
    let lead = [
        "SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "VALUES", "TABLE",
    ]
    .into_iter()
    .find(|k| first.is_word(sql, k));
    let Some(lead) = lead else {
        return false;
    };
    let mut depth = 0usize;
    // Paren depth of the ORDER BY / GROUP BY / DISTINCT ON list being read.
    let mut clause: Option<usize> = None;
    // The next token starts an item of that list.
    let mut item_start = false;
    let mut prev: Option<super::lex::Token> = None;
    for t in toks {
        if lead != "INSERT" && t.is_word(sql, "INTO") {
            return false;
        }
        if let Some(p) = prev {
            if t.is_word(sql, "BY") && (p.is_word(sql, "ORDER") || p.is_word(sql, "GROUP"))
                || t.is_word(sql, "ON") && p.is_word(sql, "DISTINCT")
            {
                clause = Some(depth);
                item_start = true;
                prev = Some(t);
                continue;
            }
        }
        if t.is_punct(sql, b'(') {
            depth += 1;
        } else if t.is_punct(sql, b')') {
            depth = depth.saturating_sub(1);
            if clause.is_some_and(|d| depth < d) {
                clause = None;
            }
        }
        if let Some(d) = clause {
            if item_start && t.kind == Tok::Param {
                return false;
            }
            item_start = (t.is_punct(sql, b',') || t.is_punct(sql, b'(')) && depth >= d
                || item_start && (t.is_punct(sql, b'-') || t.is_punct(sql, b'+'));
        }
        prev = Some(t);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fingerprint::{normalize, Literals};

    fn shape(sql: &str) -> Option<(AutoStmt, Literals)> {
        let mut out = String::new();
        let mut lits = Literals::default();
        normalize(sql, &mut out, &mut lits);
        auto_stmt(&out, &Plan::AnyShard).map(|s| (s, lits))
    }

    fn types(sql: &str) -> Option<Vec<u32>> {
        let (s, lits) = shape(sql)?;
        s.params(sql, &lits).map(|p| p.types.to_vec())
    }

    #[test]
    fn literal_types_follow_postgresql() {
        assert_eq!(
            types("SELECT a FROM t WHERE k = 5 AND b = 2147483647 AND c = 2147483649"),
            Some(vec![INT4, INT4, INT8])
        );
        assert_eq!(
            types("SELECT 9223372036854775807, 9223372036854775809, 1.5, .5, 1e3, 007"),
            Some(vec![INT8, NUMERIC, NUMERIC, NUMERIC, NUMERIC, INT4])
        );
        assert_eq!(
            types("UPDATE t SET s = 'it''s', d = $$x\\y$$ WHERE k = 1"),
            Some(vec![0, 0, INT4])
        );
    }

    #[test]
    fn unfit_executions() {
        // Boundaries a unary minus turns into a smaller type.
        assert_eq!(types("SELECT -2147483648"), None);
        assert_eq!(types("SELECT -9223372036854775808"), None);
        for sql in [
            "SELECT B'101'",
            "SELECT X'1F'",
            "SELECT E'a'",
            "SELECT N'a'",
            "SELECT 'a\\b'",
            "SELECT 0x1F",
            "SELECT 1_000",
            "SELECT date'2020-01-01'",
            "SELECT 1x",
        ] {
            assert_eq!(types(sql), None, "{sql}");
        }
        let many = format!("SELECT {}", vec!["1"; MAX_PARAMS + 1].join(","));
        assert_eq!(types(&many), None);
    }

    #[test]
    fn ineligible_texts() {
        for sql in [
            "SELECT a FROM t ORDER BY 1",
            "SELECT a FROM t ORDER BY a, 2 DESC",
            "SELECT a, count(*) FROM t GROUP BY 1",
            "SELECT a FROM t GROUP BY ROLLUP (1)",
            "SELECT DISTINCT ON (1) a FROM t",
            "SELECT a FROM t ORDER BY -1",
            "SELECT a INTO u FROM t WHERE k = 1",
            "SHOW x",
            "EXPLAIN SELECT 1",
            "(SELECT 1)",
            "",
        ] {
            assert!(shape(sql).is_none(), "{sql}");
        }
        for sql in [
            "SELECT a FROM t WHERE k = 1 ORDER BY a LIMIT 5",
            "SELECT a FROM t ORDER BY a + 1",
            "SELECT a FROM (SELECT a FROM t ORDER BY a) s WHERE a IN (1, 2)",
            "INSERT INTO t (k, v) VALUES (1, 'x')",
            "WITH x AS (SELECT 1) SELECT * FROM x",
        ] {
            assert!(shape(sql).is_some(), "{sql}");
        }
        let mut out = String::new();
        let mut lits = Literals::default();
        normalize("SELECT 1", &mut out, &mut lits);
        assert!(auto_stmt(&out, &Plan::AllShards).is_none());
    }

    #[test]
    fn ids_depend_on_text_and_types() {
        let (s, l1) = shape("SELECT a FROM t WHERE k = 1").unwrap();
        let p1 = s.params("SELECT a FROM t WHERE k = 1", &l1).unwrap();
        let (_, l2) = shape("SELECT a FROM t WHERE k = 2").unwrap();
        let p2 = s.params("SELECT a FROM t WHERE k = 2", &l2).unwrap();
        assert_eq!(p1.id, p2.id);
        let big = "SELECT a FROM t WHERE k = 5000000000";
        let (_, l3) = shape(big).unwrap();
        assert_ne!(s.params(big, &l3).unwrap().id, p1.id);
        let (other, _) = shape("SELECT b FROM t WHERE k = 1").unwrap();
        assert_ne!(
            other.params("SELECT b FROM t WHERE k = 1", &l1).unwrap().id,
            p1.id
        );
    }

    #[test]
    fn equal_numbers_share_a_parameter() {
        let sql =
            "SELECT s % 10, 010, 10.0 FROM t WHERE k = 10 AND a = 'x' AND b = 'x' GROUP BY s % 10";
        let (st, lits) = shape(sql).unwrap();
        let p = st.params(sql, &lits).unwrap();
        assert_eq!(p.slots.to_vec(), vec![1, 1, 2, 1, 3, 4, 1]);
        assert_eq!(p.types.to_vec(), vec![INT4, NUMERIC, 0, 0]);
        assert!(p.shared);
        assert_eq!(
            st.text_for(&p),
            "SELECT s % $1, $1, $2 FROM t WHERE k = $1 AND a = $3 AND b = $4 GROUP BY s % $1"
        );
        let other =
            "SELECT s % 10, 11, 10.0 FROM t WHERE k = 12 AND a = 'x' AND b = 'x' GROUP BY s % 13";
        let (_, l2) = shape(other).unwrap();
        let q = st.params(other, &l2).unwrap();
        assert!(!q.shared && q.id != p.id);
        assert_eq!(st.text_for(&q), st.text());
        // Offsets follow the renumbered text.
        let text = st.text_for(&p);
        let at = text.find("GROUP").unwrap();
        assert_eq!(st.original_offset(&p, sql, &lits, at), sql.find("GROUP"));
    }

    #[test]
    fn strings_are_trusted_once_verified() {
        let sql = "SELECT a FROM t WHERE s = 'x' AND k = 1";
        let (s, lits) = shape(sql).unwrap();
        let p = s.params(sql, &lits).unwrap();
        assert!(p.strings && !s.trusted(&p));
        s.verify(&p);
        assert!(s.trusted(&p));
        let nums = "SELECT a FROM t WHERE s = 5 AND k = 1";
        let (_, l2) = shape(nums).unwrap();
        let q = s.params(nums, &l2).unwrap();
        assert!(!q.strings && s.trusted(&q));
        assert!(!s.refused());
        s.refuse();
        assert!(s.refused());
    }

    #[test]
    fn offsets_map_back_to_the_original_text() {
        let sql = "SELECT x FROM t WHERE k = 12345 AND s = date'a' AND zz = 1";
        let mut norm = String::new();
        let mut lits = Literals::default();
        normalize(sql, &mut norm, &mut lits);
        assert_eq!(
            norm,
            "SELECT x FROM t WHERE k = $1 AND s = date $2 AND zz = $3"
        );
        let st = AutoStmt {
            text: norm.as_str().into(),
            text_id: 0,
            verdict: PrepareVerdict::default(),
        };
        let at = |needle: &str| norm.find(needle).unwrap();
        let p = st.params(sql, &lits).unwrap_or(AutoParams {
            types: SmallVec::new(),
            slots: SmallVec::new(),
            shared: false,
            id: 0,
            types_hash: 1,
            strings: false,
        });
        let map = |n: usize| st.original_offset(&p, sql, &lits, n);
        assert_eq!(map(0), Some(0));
        assert_eq!(map(at("$1")), sql.find("12345"));
        assert_eq!(map(at("$1") + 1), sql.find("12345"));
        assert_eq!(map(at(" AND s")), sql.find(" AND s"));
        assert_eq!(map(at("$2")), sql.find("'a'"));
        assert_eq!(map(at("zz")), sql.find("zz"));
        assert_eq!(map(norm.len()), Some(sql.len()));
        assert_eq!(map(norm.len() + 1), None);
    }
}
