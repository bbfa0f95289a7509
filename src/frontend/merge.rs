//! Combining the responses of several shards into one client response
//! (scatter-gather): concatenated rows with summed command-tag counts, or a
//! single row of merged aggregates (COUNT/SUM/MIN/MAX, computed with
//! PostgreSQL's result types: count → int8, sum(int2/int4) → int8,
//! sum(int8/numeric) → numeric, sum(float) → float).

use bytes::{Bytes, BytesMut};

use crate::plan::AggKind;
use crate::protocol::backend::{command_tag, data_row, row_description, tag_count, Column};
use crate::protocol::error::codes;
use crate::protocol::{synth, Frame, PgError};

use super::exchange::Sink;

/// How shard responses combine.
#[derive(Debug, Clone)]
pub enum MergeMode {
    /// Identical statements (DDL, SET): the first shard's response is
    /// forwarded, the others only checked for errors.
    FirstOnly,
    /// Rows of every shard are forwarded; tag counts added.
    Concat,
    /// One row of merged aggregates, one kind per column.
    Aggregate(Vec<AggKind>),
}

/// Accumulated state of a scatter-gather over several shards.
pub struct MergeState {
    mode: MergeMode,
    tag: Option<(String, u64, bool)>,
    first_error: Option<Bytes>,
    columns: Vec<Column>,
    acc: Vec<Acc>,
    agg_rows: usize,
    failure: Option<PgError>,
    /// Shard names, for error details.
    pub shard_names: Vec<String>,
    /// COPY TO: skip the first CopyData of every shard but the first (CSV
    /// header line).
    pub copy_header: bool,
    copy_done: bool,
    copy_rows_seen: Vec<bool>,
    /// The router sent its own Describe before Execute: RowDescription and
    /// NoData are recorded, not forwarded.
    pub absorb_description: bool,
}

#[derive(Debug, Clone)]
enum Acc {
    Null,
    Int(i128),
    Dec { units: i128, scale: u32 },
    Float(f64),
    Text(Vec<u8>),
}

impl MergeState {
    /// A merge of the given mode.
    pub fn new(mode: MergeMode) -> Self {
        let n = match &mode {
            MergeMode::Aggregate(k) => k.len(),
            _ => 0,
        };
        MergeState {
            mode,
            tag: None,
            first_error: None,
            columns: Vec::new(),
            acc: vec![Acc::Null; n],
            agg_rows: 0,
            failure: None,
            shard_names: Vec::new(),
            copy_header: false,
            copy_done: false,
            copy_rows_seen: Vec::new(),
            absorb_description: false,
        }
    }

    /// A sink for the responses of shard number `index` (0 = first).
    pub fn sink(&mut self, index: usize) -> ShardSink<'_> {
        ShardSink { st: self, first: index == 0, shard: index }
    }

    /// True when some shard reported an error.
    pub fn failed(&self) -> bool {
        self.first_error.is_some() || self.failure.is_some()
    }

    /// Writes the merged result (rows for aggregates, then the command tag),
    /// or the first error, to `out`. Returns true on success.
    pub fn finish(&mut self, out: &mut BytesMut) -> bool {
        if let Some(e) = self.first_error.take() {
            out.extend_from_slice(&e);
            return false;
        }
        if let Some(e) = self.failure.take() {
            synth::error(out, &e);
            return false;
        }
        if let MergeMode::Aggregate(kinds) = &self.mode {
            if self.agg_rows == 0 {
                return true; // statement returned no rows (should not happen)
            }
            let mut vals: Vec<Option<Vec<u8>>> = Vec::with_capacity(kinds.len());
            for (i, kind) in kinds.iter().enumerate() {
                let col = self.columns.get(i);
                let binary = col.map(|c| c.format == 1).unwrap_or(false);
                match render(&self.acc[i], *kind, col.map(|c| c.type_oid).unwrap_or(0), binary) {
                    Ok(v) => vals.push(v),
                    Err(e) => {
                        synth::error(out, &e);
                        return false;
                    }
                }
            }
            let refs: Vec<Option<&[u8]>> = vals.iter().map(|v| v.as_deref()).collect();
            synth::data_row(out, &refs);
            synth::command_complete(out, "SELECT 1");
            return true;
        }
        if self.copy_done {
            out.extend_from_slice(&[b'c', 0, 0, 0, 4]);
        }
        if let Some((head, n, counted)) = &self.tag {
            if *counted {
                synth::command_complete(out, &format!("{head} {n}"));
            } else {
                synth::command_complete(out, head);
            }
        }
        true
    }

    fn on_tag(&mut self, f: &Frame) {
        let Ok(tag) = command_tag(f.body()) else { return };
        match (&mut self.tag, tag_count(tag)) {
            (None, Some((h, n))) => self.tag = Some((h.to_string(), n, true)),
            (None, None) => self.tag = Some((tag.to_string(), 0, false)),
            (Some((_, total, true)), Some((_, n))) => *total += n,
            _ => {}
        }
    }

    fn on_agg_row(&mut self, f: &Frame) {
        let MergeMode::Aggregate(kinds) = &self.mode else { return };
        let row = match data_row(f.body()) {
            Ok(r) => r,
            Err(e) => {
                self.failure = Some(PgError::new(codes::INTERNAL_ERROR, e.to_string()));
                return;
            }
        };
        self.agg_rows += 1;
        for (i, kind) in kinds.iter().enumerate() {
            let (oid, binary) = self.columns.get(i).map(|c| (c.type_oid, c.format == 1)).unwrap_or((0, false));
            let v = row.get(i).copied().flatten();
            match combine(&self.acc[i], *kind, v, oid, binary) {
                Ok(a) => self.acc[i] = a,
                Err(e) => {
                    self.failure.get_or_insert(e);
                }
            }
        }
    }
}

/// Per-shard view of a [`MergeState`].
pub struct ShardSink<'a> {
    st: &'a mut MergeState,
    first: bool,
    shard: usize,
}

impl Sink for ShardSink<'_> {
    fn frame(&mut self, out: &mut BytesMut, f: &Frame) {
        match f.tag {
            b'E' => {
                if self.st.first_error.is_none() {
                    self.st.first_error = Some(with_shard_detail(f, self.st.shard_names.get(self.shard)));
                }
            }
            b'C' => self.st.on_tag(f),
            b'd' => {
                if self.st.copy_rows_seen.len() <= self.shard {
                    self.st.copy_rows_seen.resize(self.shard + 1, false);
                }
                let seen = std::mem::replace(&mut self.st.copy_rows_seen[self.shard], true);
                if self.first || !(self.st.copy_header && !seen) {
                    out.extend_from_slice(&f.data);
                }
            }
            b'c' => self.st.copy_done = true,
            b'D' => match self.st.mode {
                MergeMode::Concat => out.extend_from_slice(&f.data),
                MergeMode::FirstOnly => {
                    if self.first {
                        out.extend_from_slice(&f.data)
                    }
                }
                MergeMode::Aggregate(_) => self.st.on_agg_row(f),
            },
            b'T' | b'n' if self.st.absorb_description => {
                if self.first && f.tag == b'T' {
                    self.st.columns = row_description(f.body()).unwrap_or_default();
                }
            }
            b'T' => {
                if self.first {
                    if matches!(self.st.mode, MergeMode::Aggregate(_)) {
                        self.st.columns = row_description(f.body()).unwrap_or_default();
                    }
                    out.extend_from_slice(&f.data);
                }
            }
            _ => {
                if self.first {
                    out.extend_from_slice(&f.data);
                }
            }
        }
    }
    fn synth(&mut self, out: &mut BytesMut, b: &[u8]) {
        if self.first {
            out.extend_from_slice(b);
        }
    }
}

/// Re-encodes an ErrorResponse adding "shard: NAME" to its DETAIL (or as
/// DETAIL when it has none), keeping every other field unchanged.
fn with_shard_detail(f: &Frame, shard: Option<&String>) -> Bytes {
    let Some(shard) = shard else { return f.data.clone() };
    let Ok(fields) = crate::protocol::backend::error_fields(f.body()) else { return f.data.clone() };
    let mut body = Vec::with_capacity(f.data.len() + 32);
    let mut had_detail = false;
    for (code, val) in &fields {
        body.push(*code);
        if *code == b'D' {
            had_detail = true;
            body.extend_from_slice(format!("{val} (shard: {shard})").as_bytes());
        } else {
            body.extend_from_slice(val.as_bytes());
        }
        body.push(0);
    }
    if !had_detail {
        body.push(b'D');
        body.extend_from_slice(format!("shard: {shard}").as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(b'E');
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(&body);
    Bytes::from(out)
}

// Type OIDs (pg_type.dat).
const INT2: u32 = 21;
const INT4: u32 = 23;
const INT8: u32 = 20;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const NUMERIC: u32 = 1700;

fn unsupported_type(oid: u32) -> PgError {
    PgError::unsupported(format!("merging this aggregate across shards is not supported for type oid {oid}"))
}

fn parse_int(v: &[u8], binary: bool) -> Option<i128> {
    if binary {
        return match v.len() {
            2 => Some(i16::from_be_bytes([v[0], v[1]]) as i128),
            4 => Some(i32::from_be_bytes([v[0], v[1], v[2], v[3]]) as i128),
            8 => Some(i64::from_be_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]) as i128),
            _ => None,
        };
    }
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// Parses a numeric in text form into (units, scale): "12.340" → (12340, 3).
fn parse_dec(v: &[u8]) -> Option<(i128, u32)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (ip, fp) = s.split_once('.').unwrap_or((s, ""));
    if ip.is_empty() && fp.is_empty() || !ip.bytes().chain(fp.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut units: i128 = 0;
    for b in ip.bytes().chain(fp.bytes()) {
        units = units.checked_mul(10)?.checked_add((b - b'0') as i128)?;
    }
    Some((if neg { -units } else { units }, fp.len() as u32))
}

fn rescale(units: i128, from: u32, to: u32) -> Option<i128> {
    units.checked_mul(10i128.checked_pow(to.checked_sub(from)?)?)
}

fn fmt_dec(units: i128, scale: u32) -> String {
    let neg = units < 0;
    let digits = units.unsigned_abs().to_string();
    let scale = scale as usize;
    let s = if scale == 0 {
        digits
    } else if digits.len() > scale {
        format!("{}.{}", &digits[..digits.len() - scale], &digits[digits.len() - scale..])
    } else {
        format!("0.{}{}", "0".repeat(scale - digits.len()), digits)
    };
    if neg {
        format!("-{s}")
    } else {
        s
    }
}

fn combine(acc: &Acc, kind: AggKind, v: Option<&[u8]>, oid: u32, binary: bool) -> Result<Acc, PgError> {
    let Some(v) = v else { return Ok(acc.clone()) };
    let overflow = || PgError::new(codes::NUMERIC_VALUE_OUT_OF_RANGE, "aggregate value out of range while merging shard results");
    let cur = match oid {
        INT2 | INT4 | INT8 => Acc::Int(parse_int(v, binary).ok_or_else(|| unsupported_type(oid))?),
        NUMERIC if !binary => {
            let (u, s) = parse_dec(v).ok_or_else(|| PgError::unsupported("NaN/infinite numeric aggregates across shards are not supported"))?;
            Acc::Dec { units: u, scale: s }
        }
        FLOAT4 | FLOAT8 if !binary => {
            let s = std::str::from_utf8(v).map_err(|_| unsupported_type(oid))?;
            Acc::Float(parse_pg_float(s).ok_or_else(|| unsupported_type(oid))?)
        }
        FLOAT8 if binary && v.len() == 8 => {
            Acc::Float(f64::from_be_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]))
        }
        _ if !binary && matches!(kind, AggKind::Min | AggKind::Max) && text_orderable(oid) => Acc::Text(v.to_vec()),
        _ => return Err(unsupported_type(oid)),
    };
    Ok(match (acc, cur) {
        (Acc::Null, c) => c,
        (Acc::Int(a), Acc::Int(b)) => Acc::Int(match kind {
            AggKind::Count | AggKind::Sum => a.checked_add(b).ok_or_else(overflow)?,
            AggKind::Min => (*a).min(b),
            AggKind::Max => (*a).max(b),
        }),
        (Acc::Dec { units: a, scale: sa }, Acc::Dec { units: b, scale: sb }) => {
            let s = (*sa).max(sb);
            let a2 = rescale(*a, *sa, s).ok_or_else(overflow)?;
            let b2 = rescale(b, sb, s).ok_or_else(overflow)?;
            match kind {
                AggKind::Count | AggKind::Sum => Acc::Dec { units: a2.checked_add(b2).ok_or_else(overflow)?, scale: s },
                AggKind::Min => if b2 < a2 { Acc::Dec { units: b, scale: sb } } else { acc.clone() },
                AggKind::Max => if b2 > a2 { Acc::Dec { units: b, scale: sb } } else { acc.clone() },
            }
        }
        (Acc::Float(a), Acc::Float(b)) => Acc::Float(match kind {
            AggKind::Count | AggKind::Sum => a + b,
            // PostgreSQL orders NaN above every other value.
            AggKind::Min => if a.is_nan() { b } else if b.is_nan() { *a } else { a.min(b) },
            AggKind::Max => if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) },
        }),
        (Acc::Text(a), Acc::Text(b)) => match kind {
            AggKind::Min => Acc::Text(if b < *a { b } else { a.clone() }),
            _ => Acc::Text(if b > *a { b } else { a.clone() }),
        },
        _ => return Err(unsupported_type(oid)),
    })
}

/// Types whose text form orders like the values under the C collation
/// (text, varchar, bpchar, name, date, timestamp in ISO style, uuid).
fn text_orderable(oid: u32) -> bool {
    matches!(oid, 25 | 1043 | 1042 | 19 | 1082 | 1114 | 2950)
}

fn parse_pg_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

fn render(acc: &Acc, kind: AggKind, oid: u32, binary: bool) -> Result<Option<Vec<u8>>, PgError> {
    if let (AggKind::Count, Acc::Null) = (kind, acc) {
        return Ok(Some(if binary { 0i64.to_be_bytes().to_vec() } else { b"0".to_vec() }));
    }
    Ok(match acc {
        Acc::Null => None,
        Acc::Int(v) => {
            if binary {
                let v = i64::try_from(*v).map_err(|_| PgError::new(codes::NUMERIC_VALUE_OUT_OF_RANGE, "bigint out of range"))?;
                Some(match oid {
                    INT2 => (v as i16).to_be_bytes().to_vec(),
                    INT4 => (v as i32).to_be_bytes().to_vec(),
                    _ => v.to_be_bytes().to_vec(),
                })
            } else {
                Some(v.to_string().into_bytes())
            }
        }
        Acc::Dec { units, scale } => Some(fmt_dec(*units, *scale).into_bytes()),
        Acc::Float(f) => {
            if binary {
                Some(f.to_be_bytes().to_vec())
            } else {
                Some(fmt_pg_float(*f, oid).into_bytes())
            }
        }
        Acc::Text(t) => Some(t.clone()),
    })
}

/// PostgreSQL's float output (extra_float_digits = 1 default, shortest
/// round-trip form, PostgreSQL ≥ 12): plain notation for exponents in
/// [-4, 15), otherwise `1e+20` style.
fn fmt_pg_float(f: f64, oid: u32) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let s = if oid == FLOAT4 { format!("{:e}", f as f32) } else { format!("{f:e}") };
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits = if oid == FLOAT4 { 6 } else { 15 };
    if exp < -4 || exp >= digits {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else if oid == FLOAT4 {
        format!("{}", f as f32)
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        assert_eq!(parse_dec(b"12.340"), Some((12340, 3)));
        assert_eq!(parse_dec(b"-0.5"), Some((-5, 1)));
        assert_eq!(fmt_dec(12340, 3), "12.340");
        assert_eq!(fmt_dec(-5, 1), "-0.5");
        assert_eq!(fmt_dec(5, 3), "0.005");
        let a = combine(&Acc::Null, AggKind::Sum, Some(b"1.5"), NUMERIC, false).unwrap();
        let b = combine(&a, AggKind::Sum, Some(b"2.25"), NUMERIC, false).unwrap();
        assert_eq!(render(&b, AggKind::Sum, NUMERIC, false).unwrap(), Some(b"3.75".to_vec()));
    }

    #[test]
    fn floats_like_postgres() {
        assert_eq!(fmt_pg_float(1e20, FLOAT8), "1e+20");
        assert_eq!(fmt_pg_float(0.1 + 0.2, FLOAT8), "0.30000000000000004");
        assert_eq!(fmt_pg_float(1.5, FLOAT8), "1.5");
        assert_eq!(fmt_pg_float(123456.0, FLOAT8), "123456");
        assert_eq!(fmt_pg_float(0.00001, FLOAT8), "1e-05");
    }

    #[test]
    fn count_and_min_max() {
        let mut a = Acc::Null;
        for v in [&b"3"[..], b"4"] {
            a = combine(&a, AggKind::Count, Some(v), INT8, false).unwrap();
        }
        assert_eq!(render(&a, AggKind::Count, INT8, false).unwrap(), Some(b"7".to_vec()));
        assert_eq!(render(&Acc::Null, AggKind::Count, INT8, false).unwrap(), Some(b"0".to_vec()));
        assert_eq!(render(&Acc::Null, AggKind::Max, INT4, false).unwrap(), None);
        let m = combine(&Acc::Text(b"b".to_vec()), AggKind::Min, Some(b"a"), 25, false).unwrap();
        assert_eq!(render(&m, AggKind::Min, 25, false).unwrap(), Some(b"a".to_vec()));
    }
}
