//! Ordering, equality and hashing of values, following PostgreSQL's btree
//! operator classes (PostgreSQL docs §11.2 and §64.2; `float8_cmp_internal`
//! in `float.c`, `cmp_numerics` in `numeric.c`, `varstr_cmp` under the C
//! collation, `bpcharcmp`, `date_cmp_timestamp`).

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use super::datetime::USECS_PER_DAY;
use super::float::cmp_float;
use super::numeric::hash_integer;
use super::{Numeric, Value};

/// Order of variants that PostgreSQL would not compare with each other.
fn rank(v: &Value) -> u8 {
    match v {
        Value::Bool(_) => 0,
        Value::Int(_) | Value::Float(_) | Value::Numeric(_) => 1,
        Value::Text(_) => 2,
        Value::Bytea(_) => 3,
        Value::Date(_) | Value::Timestamp(_) => 4,
        Value::TimestampTz(_) => 5,
        Value::Time(_) => 6,
        Value::Uuid(_) => 7,
        Value::Null => 8,
    }
}

/// A date as a timestamp at midnight (PostgreSQL `date2timestamp`,
/// infinities kept).
fn date_as_timestamp(d: i32) -> i64 {
    match d {
        i32::MIN => i64::MIN,
        i32::MAX => i64::MAX,
        _ => i64::from(d) * USECS_PER_DAY,
    }
}

impl Value {
    /// PostgreSQL's ordering of two values of one type (btree opclass).
    ///
    /// NULL sorts greatest (callers normally handle NULLs themselves);
    /// bool false < true; integers numerically; floats with NaN equal to
    /// NaN and greater than everything including +Infinity, -0 == 0;
    /// numeric: -Infinity < finite < Infinity < NaN, scale ignored; text
    /// and bytea by bytes (C collation; bpchar already without trailing
    /// spaces); dates, times, timestamps chronologically; uuid by bytes.
    /// Mixed Int/Numeric compare exactly; Float against Int or Numeric
    /// compares after converting the other side to `f64` (PostgreSQL casts
    /// to float8 for such comparisons). Date against Timestamp compares the
    /// date as midnight. Other mixed variants order by a fixed variant rank.
    pub fn cmp_pg(&self, other: &Value) -> Ordering {
        use Value::*;
        match (self, other) {
            (Null, Null) => Ordering::Equal,
            (Bool(a), Bool(b)) => a.cmp(b),
            (Int(a), Int(b)) => a.cmp(b),
            (Float(a), Float(b)) => cmp_float(*a, *b),
            (Numeric(a), Numeric(b)) => a.cmp_pg(b),
            (Int(a), Numeric(b)) => super::Numeric::from_i64(*a).cmp_pg(b),
            (Numeric(a), Int(b)) => a.cmp_pg(&super::Numeric::from_i64(*b)),
            (Float(a), Int(b)) => cmp_float(*a, *b as f64),
            (Int(a), Float(b)) => cmp_float(*a as f64, *b),
            (Float(a), Numeric(b)) => cmp_float(*a, b.to_f64_lossy()),
            (Numeric(a), Float(b)) => cmp_float(a.to_f64_lossy(), *b),
            (Text(a), Text(b)) | (Bytea(a), Bytea(b)) => a.cmp(b),
            (Date(a), Date(b)) => a.cmp(b),
            (Time(a), Time(b))
            | (Timestamp(a), Timestamp(b))
            | (TimestampTz(a), TimestampTz(b)) => a.cmp(b),
            (Date(a), Timestamp(b)) => date_as_timestamp(*a).cmp(b),
            (Timestamp(a), Date(b)) => a.cmp(&date_as_timestamp(*b)),
            (Uuid(a), Uuid(b)) => a.cmp(b),
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

impl PartialEq for Value {
    /// Equal when [`Value::cmp_pg`] says `Equal` and both are the same
    /// variant, or one is `Int` and the other `Numeric`.
    fn eq(&self, other: &Value) -> bool {
        let comparable = std::mem::discriminant(self) == std::mem::discriminant(other)
            || matches!(
                (self, other),
                (Value::Int(_), Value::Numeric(_)) | (Value::Numeric(_), Value::Int(_))
            );
        comparable && self.cmp_pg(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl Hash for Value {
    /// Consistent with `eq`: numerics hash their trailing-zero-free value
    /// (an integral numeric hashes like the same `Int`), floats hash -0 as
    /// 0 and every NaN alike.
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Value::Null => state.write_u8(0),
            Value::Bool(b) => {
                state.write_u8(1);
                b.hash(state);
            }
            Value::Int(v) => hash_integer(*v, state),
            Value::Numeric(n) => Numeric::hash(n, state),
            Value::Float(f) => {
                state.write_u8(5);
                let bits = if f.is_nan() {
                    f64::NAN.to_bits()
                } else if *f == 0.0 {
                    0
                } else {
                    f.to_bits()
                };
                state.write_u64(bits);
            }
            Value::Text(t) => {
                state.write_u8(6);
                t.hash(state);
            }
            Value::Bytea(b) => {
                state.write_u8(7);
                b.hash(state);
            }
            Value::Date(d) => {
                state.write_u8(8);
                state.write_i32(*d);
            }
            Value::Time(t) => {
                state.write_u8(9);
                state.write_i64(*t);
            }
            Value::Timestamp(t) => {
                state.write_u8(10);
                state.write_i64(*t);
            }
            Value::TimestampTz(t) => {
                state.write_u8(11);
                state.write_i64(*t);
            }
            Value::Uuid(u) => {
                state.write_u8(12);
                u.hash(state);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;
    use std::collections::HashSet;

    fn h(v: &Value) -> u64 {
        let mut s = DefaultHasher::new();
        v.hash(&mut s);
        s.finish()
    }

    fn num(s: &str) -> Value {
        Value::Numeric(Numeric::parse(s).expect(s))
    }

    #[test]
    fn float_order() {
        let mut v = [
            Value::Float(f64::NAN),
            Value::Float(f64::INFINITY),
            Value::Float(1.0),
            Value::Float(-0.0),
            Value::Float(f64::NEG_INFINITY),
            Value::Float(0.0),
        ];
        v.sort_by(|a, b| a.cmp_pg(b));
        let shown: Vec<f64> = v
            .iter()
            .map(|x| if let Value::Float(f) = x { *f } else { 0.0 })
            .collect();
        assert_eq!(shown[0], f64::NEG_INFINITY);
        assert_eq!(shown[3], 1.0);
        assert_eq!(shown[4], f64::INFINITY);
        assert!(shown[5].is_nan());
        assert_eq!(Value::Float(-0.0), Value::Float(0.0));
        assert_eq!(h(&Value::Float(-0.0)), h(&Value::Float(0.0)));
        assert_eq!(Value::Float(f64::NAN), Value::Float(-f64::NAN));
        assert_eq!(h(&Value::Float(f64::NAN)), h(&Value::Float(-f64::NAN)));
    }

    #[test]
    fn numeric_equality_and_hash() {
        assert_eq!(num("1.0"), num("1.00"));
        assert_eq!(h(&num("1.0")), h(&num("1.00")));
        assert_eq!(Value::Int(1), num("1.000"));
        assert_eq!(h(&Value::Int(1)), h(&num("1.000")));
        assert_ne!(Value::Int(1), num("1.5"));
        assert_eq!(num("NaN").cmp_pg(&num("Infinity")), Ordering::Greater);
        assert_eq!(Value::Int(2).cmp_pg(&num("1.999")), Ordering::Greater);
        assert_eq!(Value::Float(0.5).cmp_pg(&num("0.5")), Ordering::Equal);
        assert_eq!(
            Value::Float(f64::NAN).cmp_pg(&num("Infinity")),
            Ordering::Greater
        );
        assert_eq!(Value::Int(3).cmp_pg(&Value::Float(2.5)), Ordering::Greater);
        let set: HashSet<Value> = [num("2.50"), num("2.5"), Value::Int(2), num("2.0")]
            .into_iter()
            .collect();
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn misc_order() {
        assert_eq!(
            Value::Bool(false).cmp_pg(&Value::Bool(true)),
            Ordering::Less
        );
        assert_eq!(
            Value::Text(b"B".to_vec()).cmp_pg(&Value::Text(b"a".to_vec())),
            Ordering::Less
        );
        assert_eq!(
            Value::Text(b"ab".to_vec()).cmp_pg(&Value::Text(b"abc".to_vec())),
            Ordering::Less
        );
        assert_eq!(Value::Null.cmp_pg(&Value::Int(i64::MAX)), Ordering::Greater);
        assert_eq!(Value::Int(i64::MAX).cmp_pg(&Value::Null), Ordering::Less);
        assert_eq!(
            Value::Date(i32::MAX).cmp_pg(&Value::Date(5)),
            Ordering::Greater
        );
        assert_eq!(
            Value::Date(1).cmp_pg(&Value::Timestamp(USECS_PER_DAY)),
            Ordering::Equal
        );
        assert_eq!(
            Value::Date(i32::MIN).cmp_pg(&Value::Timestamp(i64::MIN + 1)),
            Ordering::Less
        );
        assert_ne!(Value::Date(1), Value::Timestamp(USECS_PER_DAY));
        assert_eq!(
            Value::Uuid([0; 16]).cmp_pg(&Value::Uuid([1; 16])),
            Ordering::Less
        );
    }
}
