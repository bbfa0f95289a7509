//! The router-side merge of a gather ([`GatherPlan`]), independent of I/O:
//! sort-key extraction and comparison, OFFSET/LIMIT windows, and the
//! per-group aggregation with HAVING and output encoding.
//!
//! Values are compared with PostgreSQL's semantics for their type
//! ([`Value::cmp_pg`]); hidden columns arrive in binary format, so the
//! session's DateStyle/TimeZone do not matter. Text compares byte-wise,
//! which equals PostgreSQL's order under the C collation (the shards'
//! collation must be C/POSIX, as `pg-router dev` creates them).

use std::cmp::Ordering;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use crate::plan::{
    AggFunc, AggSlot, CmpOp, Cond, GatherPlan, Grouping, Operand, SortKey, SortSource,
};
use crate::protocol::backend::data_row_column;
use crate::protocol::error::codes;
use crate::protocol::PgError;
use crate::value::numeric::Numeric;
use crate::value::{oid, Value, ValueError};

/// A value error as the ErrorResponse PostgreSQL would send.
pub fn value_error(e: ValueError) -> PgError {
    match e {
        ValueError::UnsupportedType(t) => PgError::unsupported(format!(
            "merging values of type oid {t} across shards is not supported (ORDER BY, GROUP BY, DISTINCT or aggregates on this type)"
        )),
        other => PgError::new(other.sqlstate(), other.to_string()),
    }
}

/// Column layout of the shards' rows for one execution.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Client-visible columns (the first ones).
    pub visible: usize,
    /// Type OID of every column (visible, then hidden).
    pub types: Vec<u32>,
    /// The client's format code for each visible column.
    pub formats: Vec<i16>,
}

impl Layout {
    fn hidden_type(&self, h: usize) -> u32 {
        self.types.get(self.visible + h).copied().unwrap_or(0)
    }

    /// Decodes visible column `c` (in the client's format) of a row.
    pub fn visible_value(&self, row: &[Option<&[u8]>], c: usize) -> Result<Value, PgError> {
        self.visible_at(row.get(c).copied().flatten(), c)
    }

    /// Decodes `raw`, the value of visible column `c` (None = NULL).
    fn visible_at(&self, raw: Option<&[u8]>, c: usize) -> Result<Value, PgError> {
        let ty = self.types.get(c).copied().unwrap_or(0);
        match raw {
            None => Ok(Value::Null),
            Some(b) if self.formats.get(c) == Some(&1) => {
                Value::decode_binary(ty, b).map_err(value_error)
            }
            Some(b) => Value::decode_text(ty, b).map_err(value_error),
        }
    }

    /// Decodes hidden column `h` (binary format) of a row.
    pub fn hidden(&self, row: &[Option<&[u8]>], h: usize) -> Result<Value, PgError> {
        self.hidden_at(row.get(self.visible + h).copied().flatten(), h)
    }

    /// Decodes `raw`, the value of hidden column `h` (None = NULL).
    fn hidden_at(&self, raw: Option<&[u8]>, h: usize) -> Result<Value, PgError> {
        match raw {
            None => Ok(Value::Null),
            Some(b) => Value::decode_binary(self.hidden_type(h), b).map_err(value_error),
        }
    }
}

/// Compares two rows' sort values under `keys` (ASC/DESC, NULLS
/// FIRST/LAST).
pub fn cmp_sort(keys: &[SortKey], a: &[Value], b: &[Value]) -> Ordering {
    for (k, (x, y)) in keys.iter().zip(a.iter().zip(b.iter())) {
        let o = match (matches!(x, Value::Null), matches!(y, Value::Null)) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if k.nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (false, true) => {
                if k.nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (false, false) => {
                let o = x.cmp_pg(y);
                if k.desc {
                    o.reverse()
                } else {
                    o
                }
            }
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// A row's values for the sort keys, in key order: inline up to 4 keys.
pub type SortValues = smallvec::SmallVec<[Value; 4]>;

/// Writes the sort values of a shard row (DataRow body `row`) of an
/// ungrouped gather into `out` (cleared first); only the sort keys'
/// columns are read.
///
/// Errors: XX000 for a malformed row, the value errors of [`value_error`].
pub fn row_sort_values(
    plan: &GatherPlan,
    layout: &Layout,
    row: &[u8],
    out: &mut SortValues,
) -> Result<(), PgError> {
    let column = |i: usize| {
        data_row_column(row, i).map_err(|e| PgError::new(codes::INTERNAL_ERROR, e.to_string()))
    };
    out.clear();
    for k in &plan.order {
        out.push(match k.source {
            SortSource::Hidden(h) => layout.hidden_at(column(layout.visible + h)?, h)?,
            SortSource::Visible(c) => layout.visible_at(column(c)?, c)?,
            _ => Value::Null,
        });
    }
    Ok(())
}

/// What to do with the next merged row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Inside OFFSET: drop it.
    Skip,
    /// Send it.
    Emit,
    /// LIMIT reached: stop.
    Done,
}

/// OFFSET/LIMIT applied to the merged stream.
#[derive(Debug, Clone)]
pub struct Window {
    skip: u64,
    left: Option<u64>,
    /// Rows emitted so far.
    pub sent: u64,
}

impl Window {
    /// A window skipping `offset` rows and emitting at most `limit`.
    pub fn new(offset: u64, limit: Option<u64>) -> Self {
        Window {
            skip: offset,
            left: limit,
            sent: 0,
        }
    }

    /// True when no more rows will be emitted.
    pub fn full(&self) -> bool {
        self.left == Some(0)
    }

    /// Decides about the next row.
    pub fn take(&mut self) -> Take {
        if self.left == Some(0) {
            return Take::Done;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return Take::Skip;
        }
        if let Some(l) = &mut self.left {
            *l -= 1;
        }
        self.sent += 1;
        Take::Emit
    }
}

#[derive(Debug, Clone)]
enum Acc {
    Count(i64),
    Sum(Value),
    /// Best value and, for a visible min/max column, its bytes in the
    /// client's format.
    MinMax(Value, Option<Vec<u8>>),
    Avg(Value, i64),
    Bool(Option<bool>),
    /// The distinct non-NULL values of a DISTINCT aggregate's argument.
    Distinct(HashSet<Value>),
}

#[derive(Debug)]
struct Group {
    first: Vec<Option<Vec<u8>>>,
    accs: Vec<Acc>,
}

/// Hash aggregation of shard rows into groups (GROUP BY keys, or one group
/// for aggregates without GROUP BY, or DISTINCT rows).
pub struct Groups<'p> {
    g: &'p Grouping,
    map: HashMap<Vec<Value>, Group>,
    /// Visible column of each slot that is a client column.
    slot_col: Vec<Option<usize>>,
}

fn overflow() -> PgError {
    PgError::new(codes::NUMERIC_VALUE_OUT_OF_RANGE, "bigint out of range")
}

/// `a + b` for values of one sum type (int8, numeric, float).
fn add(a: &Value, b: &Value) -> Result<Value, PgError> {
    Ok(match (a, b) {
        (Value::Null, x) | (x, Value::Null) => x.clone(),
        (Value::Int(x), Value::Int(y)) => Value::Int(x.checked_add(*y).ok_or_else(overflow)?),
        (Value::Numeric(x), Value::Numeric(y)) => Value::Numeric(x.add(y)),
        (Value::Int(x), Value::Numeric(y)) | (Value::Numeric(y), Value::Int(x)) => {
            Value::Numeric(Numeric::from_i64(*x).add(y))
        }
        (Value::Float(x), Value::Float(y)) => Value::Float(x + y),
        _ => {
            return Err(PgError::unsupported(
                "sum() of this type across shards is not supported",
            ))
        }
    })
}

fn as_i64(v: &Value) -> Result<i64, PgError> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Null => Ok(0),
        _ => Err(PgError::new(
            codes::INTERNAL_ERROR,
            "count() partial is not an integer",
        )),
    }
}

fn bool_of(v: &Value) -> Result<Option<bool>, PgError> {
    match v {
        Value::Bool(b) => Ok(Some(*b)),
        Value::Null => Ok(None),
        _ => Err(PgError::new(
            codes::INTERNAL_ERROR,
            "bool_and()/bool_or() partial is not a boolean",
        )),
    }
}

/// avg = sum / count with PostgreSQL's result type: numeric for integer and
/// numeric sums (numeric division scale rules), float8 for floats.
fn avg(sum: &Value, count: i64) -> Result<Value, PgError> {
    if count == 0 {
        return Ok(Value::Null);
    }
    let c = Numeric::from_i64(count);
    Ok(match sum {
        Value::Null => Value::Null,
        Value::Int(s) => Value::Numeric(Numeric::from_i64(*s).div_pg(&c).map_err(value_error)?),
        Value::Numeric(s) => Value::Numeric(s.div_pg(&c).map_err(value_error)?),
        Value::Float(f) => Value::Float(f / count as f64),
        _ => {
            return Err(PgError::unsupported(
                "avg() of this type across shards is not supported",
            ))
        }
    })
}

impl<'p> Groups<'p> {
    /// An empty aggregation for `g`.
    pub fn new(g: &'p Grouping) -> Self {
        let mut slot_col = vec![None; g.aggs.len()];
        for (col, s) in g.outputs.iter().enumerate() {
            if let Some(s) = s {
                if let Some(x) = slot_col.get_mut(*s) {
                    *x = Some(col);
                }
            }
        }
        Groups {
            g,
            map: HashMap::new(),
            slot_col,
        }
    }

    /// Adds one shard row (a partial group).
    pub fn add(&mut self, layout: &Layout, row: &[Option<&[u8]>]) -> Result<(), PgError> {
        let key: Vec<Value> = self
            .g
            .keys
            .iter()
            .map(|&h| layout.hidden(row, h))
            .collect::<Result<_, _>>()?;
        let g = self.g;
        let grp = self.map.entry(key).or_insert_with(|| {
            let first = row
                .iter()
                .take(layout.visible)
                .map(|v| v.map(|b| b.to_vec()))
                .collect();
            empty_group(g, first)
        });
        for (i, (slot, acc)) in self.g.aggs.iter().zip(grp.accs.iter_mut()).enumerate() {
            let part = |k: usize| -> Result<Value, PgError> {
                match slot.partials.get(k) {
                    Some(&h) => layout.hidden(row, h),
                    None => Ok(Value::Null),
                }
            };
            match acc {
                Acc::Count(n) => *n = n.checked_add(as_i64(&part(0)?)?).ok_or_else(overflow)?,
                Acc::Sum(s) => *s = add(s, &part(0)?)?,
                Acc::MinMax(best, bytes) => {
                    let v = part(0)?;
                    if matches!(v, Value::Null) {
                        continue;
                    }
                    let better = match &*best {
                        Value::Null => true,
                        b => {
                            let o = v.cmp_pg(b);
                            if slot.func == AggFunc::Min {
                                o == Ordering::Less
                            } else {
                                o == Ordering::Greater
                            }
                        }
                    };
                    if better {
                        *best = v;
                        *bytes = self.slot_col[i]
                            .and_then(|c| row.get(c).copied().flatten())
                            .map(|b| b.to_vec());
                    }
                }
                Acc::Avg(s, n) => {
                    *s = add(s, &part(0)?)?;
                    *n = n.checked_add(as_i64(&part(1)?)?).ok_or_else(overflow)?;
                }
                Acc::Bool(b) => {
                    if let Some(v) = bool_of(&part(0)?)? {
                        *b = Some(match (slot.func, *b) {
                            (_, None) => v,
                            (AggFunc::BoolAnd, Some(x)) => x && v,
                            (_, Some(x)) => x || v,
                        });
                    }
                }
                Acc::Distinct(set) => {
                    let v = part(0)?;
                    if !matches!(v, Value::Null) {
                        set.insert(v);
                    }
                }
            }
        }
        Ok(())
    }

    /// Finishes the aggregation: one row per group that passes HAVING, in
    /// ORDER BY order, each as (sort values, encoded visible columns).
    /// `param` reads literal/parameter `i` as text for HAVING.
    #[allow(clippy::type_complexity)]
    pub fn finish(
        mut self,
        plan: &GatherPlan,
        layout: &Layout,
        param: &dyn Fn(usize) -> Result<Option<String>, PgError>,
    ) -> Result<Vec<(Vec<Value>, Vec<Option<Vec<u8>>>)>, PgError> {
        if self.map.is_empty() && self.g.single {
            let grp = empty_group(self.g, vec![None; layout.visible]);
            self.map.insert(Vec::new(), grp);
        }
        let mut out = Vec::with_capacity(self.map.len());
        for (key, grp) in self.map.drain() {
            let vals: Vec<Value> = self
                .g
                .aggs
                .iter()
                .zip(grp.accs.iter())
                .map(|(slot, acc)| final_value(slot, acc, layout))
                .collect::<Result<_, _>>()?;
            if let Some(h) = &self.g.having {
                let ctx = Ctx {
                    key: &key,
                    vals: &vals,
                    g: self.g,
                    layout,
                    param,
                };
                if eval(h, &ctx)? != Some(true) {
                    continue;
                }
            }
            let sort: Vec<Value> = plan
                .order
                .iter()
                .map(|k| match k.source {
                    SortSource::Key(i) => key.get(i).cloned().unwrap_or(Value::Null),
                    SortSource::Agg(s) => vals.get(s).cloned().unwrap_or(Value::Null),
                    SortSource::Hidden(_) | SortSource::Visible(_) => Value::Null,
                })
                .collect();
            let mut row = Vec::with_capacity(layout.visible);
            for (col, o) in self.g.outputs.iter().enumerate().take(layout.visible) {
                row.push(match o {
                    None => grp.first.get(col).cloned().flatten(),
                    Some(s) => match (grp.accs.get(*s), vals.get(*s)) {
                        (Some(Acc::MinMax(_, bytes)), _) => bytes.clone(),
                        (_, Some(v)) => encode(
                            v,
                            layout.types[col],
                            layout.formats.get(col).copied().unwrap_or(0),
                        )?,
                        _ => None,
                    },
                });
            }
            out.push((sort, row));
        }
        if self.g.distinct {
            // SELECT DISTINCT over the groups: equal output rows (by value,
            // as PostgreSQL compares them) once.
            let mut seen = HashSet::with_capacity(out.len());
            let mut kept = Vec::with_capacity(out.len());
            for (sort, row) in out {
                let refs: Vec<Option<&[u8]>> = row.iter().map(|c| c.as_deref()).collect();
                let vals: Vec<Value> = (0..row.len())
                    .map(|c| layout.visible_value(&refs, c))
                    .collect::<Result<_, _>>()?;
                if seen.insert(vals) {
                    kept.push((sort, row));
                }
            }
            out = kept;
        }
        if !plan.order.is_empty() {
            out.sort_by(|a, b| cmp_sort(&plan.order, &a.0, &b.0));
        }
        Ok(out)
    }
}

/// A group before its first row is folded in.
fn empty_group(g: &Grouping, first: Vec<Option<Vec<u8>>>) -> Group {
    let accs = g
        .aggs
        .iter()
        .map(|s| {
            if s.distinct {
                return Acc::Distinct(HashSet::new());
            }
            match s.func {
                AggFunc::Count => Acc::Count(0),
                AggFunc::Sum => Acc::Sum(Value::Null),
                AggFunc::Min | AggFunc::Max => Acc::MinMax(Value::Null, None),
                AggFunc::Avg => Acc::Avg(Value::Null, 0),
                AggFunc::BoolAnd | AggFunc::BoolOr => Acc::Bool(None),
            }
        })
        .collect();
    Group { first, accs }
}

/// Type OID of an aggregate slot's result.
fn slot_type(slot: &AggSlot, layout: &Layout) -> u32 {
    let part = |k: usize| {
        slot.partials
            .get(k)
            .map(|&h| layout.hidden_type(h))
            .unwrap_or(0)
    };
    let arg = part(0);
    match (slot.func, slot.distinct) {
        (AggFunc::Count, _) => oid::INT8,
        (AggFunc::BoolAnd | AggFunc::BoolOr, _) => oid::BOOL,
        (AggFunc::Sum | AggFunc::Min | AggFunc::Max, false) => part(0),
        (AggFunc::Avg, false) => match part(0) {
            oid::FLOAT4 | oid::FLOAT8 => oid::FLOAT8,
            _ => oid::NUMERIC,
        },
        (AggFunc::Sum, true) => sum_type(arg),
        (AggFunc::Avg, true) => match arg {
            oid::FLOAT4 | oid::FLOAT8 => oid::FLOAT8,
            _ => oid::NUMERIC,
        },
        (AggFunc::Min | AggFunc::Max, true) => arg,
    }
}

/// PostgreSQL's sum() result type for an argument type.
fn sum_type(arg: u32) -> u32 {
    match arg {
        oid::INT2 | oid::INT4 => oid::INT8,
        oid::INT8 | oid::NUMERIC => oid::NUMERIC,
        other => other,
    }
}

fn final_value(slot: &AggSlot, acc: &Acc, layout: &Layout) -> Result<Value, PgError> {
    Ok(match acc {
        Acc::Count(n) => Value::Int(*n),
        Acc::Sum(v) | Acc::MinMax(v, _) => v.clone(),
        Acc::Avg(s, n) => avg(s, *n)?,
        Acc::Bool(b) => b.map(Value::Bool).unwrap_or(Value::Null),
        Acc::Distinct(distinct) => {
            let arg = slot
                .partials
                .first()
                .map(|&h| layout.hidden_type(h))
                .unwrap_or(0);
            let to_sum = |v: &Value| -> Value {
                match (sum_type(arg), v) {
                    (oid::NUMERIC, Value::Int(i)) => Value::Numeric(Numeric::from_i64(*i)),
                    _ => v.clone(),
                }
            };
            match slot.func {
                AggFunc::Count => Value::Int(distinct.len() as i64),
                AggFunc::Sum | AggFunc::Avg => {
                    let mut s = Value::Null;
                    for v in distinct {
                        s = add(&s, &to_sum(v))?;
                    }
                    if slot.func == AggFunc::Sum {
                        s
                    } else {
                        avg(&s, distinct.len() as i64)?
                    }
                }
                _ => Value::Null,
            }
        }
    })
}

/// Encodes a computed value as column type `ty` in format `fmt`.
fn encode(v: &Value, ty: u32, fmt: i16) -> Result<Option<Vec<u8>>, PgError> {
    let v = match (ty, v) {
        (_, Value::Null) => return Ok(None),
        (oid::NUMERIC, Value::Int(i)) => Value::Numeric(Numeric::from_i64(*i)),
        (oid::FLOAT8 | oid::FLOAT4, Value::Int(i)) => Value::Float(*i as f64),
        _ => v.clone(),
    };
    let r = if fmt == 1 {
        v.encode_binary(ty)
    } else {
        v.encode_text(ty)
    };
    r.map(Some).map_err(value_error)
}

struct Ctx<'a> {
    key: &'a [Value],
    vals: &'a [Value],
    g: &'a Grouping,
    layout: &'a Layout,
    param: &'a dyn Fn(usize) -> Result<Option<String>, PgError>,
}

impl Ctx<'_> {
    /// Type of a typed operand (key or aggregate), None for constants.
    fn typ(&self, o: &Operand) -> Option<u32> {
        match o {
            Operand::Key(i) => self.g.keys.get(*i).map(|&h| self.layout.hidden_type(h)),
            Operand::Agg(s) => self.g.aggs.get(*s).map(|slot| slot_type(slot, self.layout)),
            _ => None,
        }
    }

    fn value(&self, o: &Operand, ty: Option<u32>) -> Result<Value, PgError> {
        let text = match o {
            Operand::Key(i) => return Ok(self.key.get(*i).cloned().unwrap_or(Value::Null)),
            Operand::Agg(s) => return Ok(self.vals.get(*s).cloned().unwrap_or(Value::Null)),
            Operand::Null => return Ok(Value::Null),
            Operand::Const(c) => Some(c.clone()),
            Operand::Param(i) => (self.param)(*i)?,
            Operand::NegParam(i) => (self.param)(*i)?.map(|t| match t.trim().strip_prefix('-') {
                Some(pos) => pos.to_string(),
                None => format!("-{}", t.trim()),
            }),
        };
        let Some(text) = text else {
            return Ok(Value::Null);
        };
        let ty = ty.unwrap_or(oid::NUMERIC);
        // Compare integers with fractional constants exactly.
        let ty = if matches!(ty, oid::INT2 | oid::INT4 | oid::INT8)
            && !text
                .bytes()
                .all(|c| c.is_ascii_digit() || c == b'-' || c == b'+' || c == b' ')
        {
            oid::NUMERIC
        } else {
            ty
        };
        Value::decode_text(ty, text.as_bytes()).map_err(value_error)
    }
}

fn eval(c: &Cond, ctx: &Ctx<'_>) -> Result<Option<bool>, PgError> {
    Ok(match c {
        Cond::And(a, b) => match (eval(a, ctx)?, eval(b, ctx)?) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Cond::Or(a, b) => match (eval(a, ctx)?, eval(b, ctx)?) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Cond::Not(a) => eval(a, ctx)?.map(|x| !x),
        Cond::Truth(o) => match ctx.value(o, ctx.typ(o).or(Some(oid::BOOL)))? {
            Value::Bool(b) => Some(b),
            Value::Null => None,
            _ => {
                return Err(PgError::new(
                    "42804",
                    "argument of HAVING must be type boolean",
                ))
            }
        },
        Cond::IsNull(o, is) => {
            let v = ctx.value(o, ctx.typ(o))?;
            Some(matches!(v, Value::Null) == *is)
        }
        Cond::Cmp(op, a, b) => {
            let ty = ctx.typ(a).or_else(|| ctx.typ(b));
            let (x, y) = (ctx.value(a, ty)?, ctx.value(b, ty)?);
            if matches!(x, Value::Null) || matches!(y, Value::Null) {
                return Ok(None);
            }
            let o = x.cmp_pg(&y);
            Some(match op {
                CmpOp::Eq => o == Ordering::Equal,
                CmpOp::Ne => o != Ordering::Equal,
                CmpOp::Lt => o == Ordering::Less,
                CmpOp::Le => o != Ordering::Greater,
                CmpOp::Gt => o == Ordering::Greater,
                CmpOp::Ge => o != Ordering::Less,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_offsets_and_limits() {
        let mut w = Window::new(2, Some(2));
        let got: Vec<Take> = (0..6).map(|_| w.take()).collect();
        assert_eq!(
            got,
            vec![
                Take::Skip,
                Take::Skip,
                Take::Emit,
                Take::Emit,
                Take::Done,
                Take::Done
            ]
        );
        assert_eq!(w.sent, 2);
        let mut w = Window::new(0, None);
        assert_eq!(w.take(), Take::Emit);
    }

    #[test]
    fn sort_nulls_and_direction() {
        let asc = SortKey {
            source: SortSource::Hidden(0),
            desc: false,
            nulls_first: false,
        };
        let desc = SortKey {
            source: SortSource::Hidden(0),
            desc: true,
            nulls_first: true,
        };
        let (one, two, null) = ([Value::Int(1)], [Value::Int(2)], [Value::Null]);
        assert_eq!(cmp_sort(&[asc], &one, &two), Ordering::Less);
        assert_eq!(cmp_sort(&[asc], &null, &two), Ordering::Greater);
        assert_eq!(cmp_sort(&[desc], &one, &two), Ordering::Greater);
        assert_eq!(cmp_sort(&[desc], &null, &two), Ordering::Less);
    }

    #[test]
    fn avg_has_postgres_type_and_scale() {
        let v = avg(&Value::Int(5), 3).expect("avg");
        assert_eq!(
            encode(&v, oid::NUMERIC, 0).expect("enc"),
            Some(b"1.6666666666666667".to_vec())
        );
        assert_eq!(avg(&Value::Null, 0).expect("avg"), Value::Null);
        let f = avg(&Value::Float(3.0), 2).expect("avg");
        assert_eq!(
            encode(&f, oid::FLOAT8, 0).expect("enc"),
            Some(b"1.5".to_vec())
        );
    }

    #[test]
    fn sum_overflow_is_22003() {
        let e = add(&Value::Int(i64::MAX), &Value::Int(1)).expect_err("overflow");
        assert_eq!(e.code, codes::NUMERIC_VALUE_OUT_OF_RANGE);
    }
}
