//! Encoding values into the text or binary format of a result column's
//! type (the types' output and `*_send` functions in PostgreSQL
//! `src/backend/utils/adt/`), converting between numeric variants with
//! PostgreSQL's cast semantics where the result type differs.

use super::datetime::{date_out, time_out, timestamp_out};
use super::float::float_text;
use super::text::{bytea_out, char_out, uuid_out};
use super::{oid, Numeric, Value, ValueError};

/// (min, max, name) of an integer result type.
fn int_bounds(oid: u32) -> (i64, i64, &'static str) {
    match oid {
        oid::INT2 => (i64::from(i16::MIN), i64::from(i16::MAX), "smallint"),
        oid::INT4 => (i64::from(i32::MIN), i64::from(i32::MAX), "integer"),
        oid::OID => (0, i64::from(u32::MAX), "OID"),
        _ => (i64::MIN, i64::MAX, "bigint"),
    }
}

fn null_error() -> ValueError {
    ValueError::Malformed("NULL has no wire representation (send length -1)".into())
}

impl Value {
    /// The value as an integer of result type `oid` (int2/int4/int8/oid):
    /// `Int` range-checked; `Numeric` rounded half away from zero
    /// (`numeric_int8`…); `Float` rounded half to even (`rint`, as
    /// `dtoi8`…). Out of range → `OutOfRange("smallint out of range")`,
    /// "integer out of range", "bigint out of range", "OID out of range".
    fn as_int(&self, oid: u32) -> Result<i64, ValueError> {
        let (min, max, name) = int_bounds(oid);
        let range = || ValueError::OutOfRange(format!("{name} out of range"));
        match self {
            Value::Int(v) if (min..=max).contains(v) => Ok(*v),
            Value::Int(_) => Err(range()),
            Value::Numeric(n) => n.to_int_pg(min, max, name),
            Value::Float(f) => {
                let r = f.round_ties_even();
                // max + 1 is exact for every bound (i64::MAX as f64 is 2^63 already)
                if r.is_finite() && r >= min as f64 && r < (max as f64) + 1.0 {
                    Ok(r as i64)
                } else {
                    Err(range())
                }
            }
            Value::Null => Err(null_error()),
            _ => Err(ValueError::UnsupportedType(oid)),
        }
    }

    /// The value as a float of result type `oid` (float4 results are
    /// rounded to `f32` and checked like `float8_to_float4`: "value out of
    /// range: overflow"/"underflow").
    fn as_float(&self, oid: u32) -> Result<f64, ValueError> {
        let f = match self {
            Value::Float(f) => *f,
            Value::Int(v) if oid == oid::FLOAT4 => return Ok(f64::from(*v as f32)),
            Value::Int(v) => *v as f64,
            Value::Numeric(n) if oid == oid::FLOAT4 => return n.to_f32_pg(),
            Value::Numeric(n) => n.to_f64_pg()?,
            Value::Null => return Err(null_error()),
            _ => return Err(ValueError::UnsupportedType(oid)),
        };
        if oid == oid::FLOAT4 {
            let g = f as f32;
            if g.is_infinite() && f.is_finite() {
                return Err(ValueError::OutOfRange(
                    "value out of range: overflow".into(),
                ));
            }
            if g == 0.0 && f != 0.0 {
                return Err(ValueError::OutOfRange(
                    "value out of range: underflow".into(),
                ));
            }
            return Ok(f64::from(g));
        }
        Ok(f)
    }

    /// The value as a numeric (`Int` exactly with scale 0; `Float` as
    /// `float8_numeric`, 15 significant digits).
    fn as_numeric(&self) -> Result<Numeric, ValueError> {
        match self {
            Value::Numeric(n) => Ok(n.clone()),
            Value::Int(v) => Ok(Numeric::from_i64(*v)),
            Value::Float(f) => Ok(Numeric::from_f64_pg(*f)),
            Value::Null => Err(null_error()),
            _ => Err(ValueError::UnsupportedType(oid::NUMERIC)),
        }
    }

    /// Output in the text format of result type `oid` (the type's output
    /// function): int2/int4/int8/oid decimal (range-checked as in
    /// `encode_binary`); float4/float8 via [`float_text`] (shortest
    /// round-trip, `extra_float_digits = 1`); numeric via
    /// [`Numeric::to_text`] (display scale kept, "NaN", "Infinity");
    /// bool `t`/`f`; text types as their bytes ("char" as `charout`);
    /// bytea `\x` + lower-case hex; uuid 8-4-4-4-12 lower-case hex; date,
    /// time and timestamp in ISO DateStyle. Int/Numeric/Float convert to
    /// each other's types with PostgreSQL's cast rules. Timestamptz (needs
    /// the session TimeZone) and other oids → `UnsupportedType`; NULL →
    /// `Malformed`.
    pub fn encode_text(&self, oid: u32) -> Result<Vec<u8>, ValueError> {
        Ok(match (oid, self) {
            (_, Value::Null) => return Err(null_error()),
            (oid::INT2 | oid::INT4 | oid::INT8 | oid::OID, v) => {
                v.as_int(oid)?.to_string().into_bytes()
            }
            (oid::FLOAT4 | oid::FLOAT8, v) => float_text(v.as_float(oid)?, oid).into_bytes(),
            (oid::NUMERIC, v) => v.as_numeric()?.to_text().into_bytes(),
            (oid::BOOL, Value::Bool(b)) => {
                if *b {
                    b"t".to_vec()
                } else {
                    b"f".to_vec()
                }
            }
            (oid::TEXT | oid::VARCHAR | oid::NAME | oid::BPCHAR, Value::Text(t)) => t.clone(),
            (oid::CHAR, Value::Text(t)) => char_out(t),
            (oid::BYTEA, Value::Bytea(b)) => bytea_out(b),
            (oid::UUID, Value::Uuid(u)) => uuid_out(u),
            (oid::DATE, Value::Date(d)) => date_out(*d).into_bytes(),
            (oid::TIME, Value::Time(t)) => time_out(*t).into_bytes(),
            (oid::TIMESTAMP, Value::Timestamp(t)) => timestamp_out(*t).into_bytes(),
            _ => return Err(ValueError::UnsupportedType(oid)),
        })
    }

    /// Output in the binary format of result type `oid` (the type's
    /// `*_send`): int2/int4/int8/oid big-endian 2/4/8/4 bytes
    /// (range-checked → `OutOfRange("smallint out of range")`, "integer out
    /// of range", "bigint out of range", "OID out of range"); float4/float8
    /// IEEE big-endian; numeric `numeric_send` layout (values beyond the
    /// storage format → `OutOfRange("value overflows numeric format")`);
    /// bool 1 byte; text types their bytes ("char" one byte, 0 for empty);
    /// bytea raw; uuid 16 bytes; date int32 days; time, timestamp,
    /// timestamptz int64 µs. Int/Numeric/Float convert with PostgreSQL's
    /// cast rules; other mismatches and oids → `UnsupportedType`; NULL →
    /// `Malformed`.
    pub fn encode_binary(&self, oid: u32) -> Result<Vec<u8>, ValueError> {
        Ok(match (oid, self) {
            (_, Value::Null) => return Err(null_error()),
            (oid::INT2, v) => (v.as_int(oid)? as i16).to_be_bytes().to_vec(),
            (oid::INT4, v) => (v.as_int(oid)? as i32).to_be_bytes().to_vec(),
            (oid::OID, v) => (v.as_int(oid)? as u32).to_be_bytes().to_vec(),
            (oid::INT8, v) => v.as_int(oid)?.to_be_bytes().to_vec(),
            (oid::FLOAT4, v) => (v.as_float(oid)? as f32).to_be_bytes().to_vec(),
            (oid::FLOAT8, v) => v.as_float(oid)?.to_be_bytes().to_vec(),
            (oid::NUMERIC, v) => {
                let n = v.as_numeric()?;
                n.check_format()?;
                n.to_binary()
            }
            (oid::BOOL, Value::Bool(b)) => vec![u8::from(*b)],
            (oid::TEXT | oid::VARCHAR | oid::NAME | oid::BPCHAR, Value::Text(t)) => t.clone(),
            (oid::CHAR, Value::Text(t)) => vec![t.first().copied().unwrap_or(0)],
            (oid::BYTEA, Value::Bytea(b)) => b.clone(),
            (oid::UUID, Value::Uuid(u)) => u.to_vec(),
            (oid::DATE, Value::Date(d)) => d.to_be_bytes().to_vec(),
            (oid::TIME, Value::Time(t)) => t.to_be_bytes().to_vec(),
            (oid::TIMESTAMP, Value::Timestamp(t)) | (oid::TIMESTAMPTZ, Value::TimestampTz(t)) => {
                t.to_be_bytes().to_vec()
            }
            _ => return Err(ValueError::UnsupportedType(oid)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txt(v: &Value, oid: u32) -> String {
        String::from_utf8(v.encode_text(oid).expect("encode")).expect("utf8")
    }

    #[test]
    fn text_outputs() {
        assert_eq!(txt(&Value::Int(-5), oid::INT4), "-5");
        assert_eq!(txt(&Value::Int(5), oid::NUMERIC), "5");
        assert_eq!(txt(&Value::Int(5), oid::FLOAT8), "5");
        assert_eq!(txt(&Value::Float(1e20), oid::FLOAT8), "1e+20");
        assert_eq!(txt(&Value::Float(f64::from(1.1f32)), oid::FLOAT4), "1.1");
        assert_eq!(txt(&Value::Float(0.1), oid::NUMERIC), "0.1");
        let n = Numeric::parse("3.7500").expect("n");
        assert_eq!(txt(&Value::Numeric(n.clone()), oid::NUMERIC), "3.7500");
        assert_eq!(txt(&Value::Numeric(n), oid::FLOAT8), "3.75");
        assert_eq!(txt(&Value::Numeric(Numeric::NaN), oid::NUMERIC), "NaN");
        assert_eq!(
            txt(&Value::Numeric(Numeric::PosInf), oid::NUMERIC),
            "Infinity"
        );
        assert_eq!(txt(&Value::Bool(true), oid::BOOL), "t");
        assert_eq!(txt(&Value::Bool(false), oid::BOOL), "f");
        assert_eq!(txt(&Value::Text(b"hi".to_vec()), oid::TEXT), "hi");
        assert_eq!(txt(&Value::Bytea(vec![0xAB, 0x01]), oid::BYTEA), "\\xab01");
        assert_eq!(
            txt(&Value::Uuid([0x11; 16]), oid::UUID),
            "11111111-1111-1111-1111-111111111111"
        );
        assert_eq!(txt(&Value::Date(0), oid::DATE), "2000-01-01");
        assert_eq!(txt(&Value::Time(1_000_000), oid::TIME), "00:00:01");
        assert_eq!(
            txt(&Value::Timestamp(i64::MIN), oid::TIMESTAMP),
            "-infinity"
        );
        assert_eq!(
            Value::TimestampTz(0).encode_text(oid::TIMESTAMPTZ),
            Err(ValueError::UnsupportedType(oid::TIMESTAMPTZ))
        );
        assert_eq!(
            Value::Bool(true).encode_text(oid::TEXT),
            Err(ValueError::UnsupportedType(oid::TEXT))
        );
        assert!(Value::Null.encode_text(oid::TEXT).is_err());
    }

    #[test]
    fn int_range_checks() {
        let err = |v: i64, oid: u32| Value::Int(v).encode_binary(oid).unwrap_err();
        assert_eq!(
            err(32768, oid::INT2),
            ValueError::OutOfRange("smallint out of range".into())
        );
        assert_eq!(
            err(-2147483649, oid::INT4),
            ValueError::OutOfRange("integer out of range".into())
        );
        assert_eq!(
            err(-1, oid::OID),
            ValueError::OutOfRange("OID out of range".into())
        );
        assert_eq!(err(32768, oid::INT2).sqlstate(), "22003");
        assert_eq!(
            Value::Int(-2).encode_binary(oid::INT2),
            Ok(vec![0xff, 0xfe])
        );
        assert_eq!(
            Value::Int(1).encode_binary(oid::INT8),
            Ok(vec![0, 0, 0, 0, 0, 0, 0, 1])
        );
        let big = Value::Numeric(Numeric::parse("9223372036854775807.5").expect("n"));
        assert_eq!(
            big.encode_binary(oid::INT8),
            Err(ValueError::OutOfRange("bigint out of range".into()))
        );
        let nan = Value::Numeric(Numeric::NaN);
        assert_eq!(
            nan.encode_text(oid::INT4),
            Err(ValueError::NotSupported(
                "cannot convert NaN to integer".into()
            ))
        );
        assert_eq!(Value::Float(2.5).encode_text(oid::INT4), Ok(b"2".to_vec()));
        assert_eq!(Value::Float(3.5).encode_text(oid::INT4), Ok(b"4".to_vec()));
        assert!(Value::Float(9.3e18).encode_binary(oid::INT8).is_err());
        assert!(Value::Float(f64::NAN).encode_binary(oid::INT8).is_err());
        assert_eq!(
            Value::Float(-32768.4).encode_text(oid::INT2),
            Ok(b"-32768".to_vec())
        );
        assert!(Value::Float(32767.5).encode_text(oid::INT2).is_err());
    }

    #[test]
    fn binary_outputs() {
        assert_eq!(
            Value::Float(1.5).encode_binary(oid::FLOAT4),
            Ok(1.5f32.to_be_bytes().to_vec())
        );
        assert_eq!(
            Value::Float(1e300)
                .encode_binary(oid::FLOAT4)
                .unwrap_err()
                .sqlstate(),
            "22003"
        );
        assert_eq!(
            Value::Float(1e-300)
                .encode_binary(oid::FLOAT4)
                .unwrap_err()
                .sqlstate(),
            "22003"
        );
        assert_eq!(Value::Bool(true).encode_binary(oid::BOOL), Ok(vec![1]));
        assert_eq!(
            Value::Text(Vec::new()).encode_binary(oid::CHAR),
            Ok(vec![0])
        );
        assert_eq!(Value::Date(-1).encode_binary(oid::DATE), Ok(vec![0xff; 4]));
        assert_eq!(
            Value::TimestampTz(1).encode_binary(oid::TIMESTAMPTZ),
            Ok(vec![0, 0, 0, 0, 0, 0, 0, 1])
        );
        assert_eq!(
            Value::Timestamp(1).encode_binary(oid::TIMESTAMPTZ),
            Err(ValueError::UnsupportedType(oid::TIMESTAMPTZ))
        );
        assert_eq!(
            Value::Int(1250).encode_binary(oid::NUMERIC),
            Ok(vec![0, 1, 0, 0, 0, 0, 0, 0, 0x04, 0xe2])
        );
        let huge = Numeric::parse("1e131071")
            .expect("n")
            .add(&Numeric::parse("9e131071").expect("n"));
        assert_eq!(
            Value::Numeric(huge)
                .encode_binary(oid::NUMERIC)
                .unwrap_err()
                .sqlstate(),
            "22003"
        );
    }
}
