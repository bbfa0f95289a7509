//! Decoding column values from PostgreSQL's wire formats (PostgreSQL docs
//! §55.2.3 "Formats and Format Codes"; binary layouts are the types'
//! `*_recv` functions in `src/backend/utils/adt/`).

use super::datetime::{self, END_DATE, END_TIMESTAMP, MIN_DATE, MIN_TIMESTAMP, USECS_PER_DAY};
use super::float::{parse_float4, parse_float8};
use super::text::{parse_bool, parse_bytea, parse_char, parse_int, parse_oid, parse_uuid};
use super::{oid, Numeric, Value, ValueError};

/// Exactly `N` bytes, else PostgreSQL's binary-format errors.
fn fixed<const N: usize>(b: &[u8]) -> Result<[u8; N], ValueError> {
    match b.len().cmp(&N) {
        std::cmp::Ordering::Less => Err(ValueError::Malformed(
            "insufficient data left in message".into(),
        )),
        std::cmp::Ordering::Greater => {
            Err(ValueError::Malformed("incorrect binary data format".into()))
        }
        std::cmp::Ordering::Equal => {
            let mut a = [0u8; N];
            a.copy_from_slice(b);
            Ok(a)
        }
    }
}

/// `character(n)` values compare without their trailing spaces.
fn strip_bpchar(b: &[u8]) -> Vec<u8> {
    let end = b.iter().rposition(|&c| c != b' ').map_or(0, |p| p + 1);
    b[..end].to_vec()
}

fn utf8(oid: u32, b: &[u8]) -> Result<&str, ValueError> {
    std::str::from_utf8(b).map_err(|_| {
        ValueError::Malformed(format!(
            "invalid input syntax for type with oid {oid}: invalid UTF-8 \"{}\"",
            String::from_utf8_lossy(b)
        ))
    })
}

impl Value {
    /// Decodes the PostgreSQL binary format (the type's `*_recv`) of type
    /// `oid`: bool (1 byte, non-zero = true), int2/int4/int8/oid
    /// (big-endian 2/4/8/4 bytes), float4/float8 (IEEE big-endian),
    /// numeric (`numeric_recv`), text/varchar/name/bpchar (raw bytes;
    /// bpchar loses trailing spaces), "char" (1 byte, 0 = empty), bytea
    /// (raw), uuid (16 bytes), date (int32 days since 2000-01-01), time
    /// (int64 µs, 0..=86400000000), timestamp/timestamptz (int64 µs since
    /// 2000-01-01), with PostgreSQL's range checks ("date out of range",
    /// "time out of range", "timestamp out of range" →
    /// `DatetimeOutOfRange`). Wrong lengths → `Malformed`; other oids →
    /// `UnsupportedType`.
    pub fn decode_binary(oid: u32, b: &[u8]) -> Result<Value, ValueError> {
        Ok(match oid {
            oid::BOOL => Value::Bool(fixed::<1>(b)?[0] != 0),
            oid::INT2 => Value::Int(i64::from(i16::from_be_bytes(fixed(b)?))),
            oid::INT4 => Value::Int(i64::from(i32::from_be_bytes(fixed(b)?))),
            oid::INT8 => Value::Int(i64::from_be_bytes(fixed(b)?)),
            oid::OID => Value::Int(i64::from(u32::from_be_bytes(fixed(b)?))),
            oid::FLOAT4 => Value::Float(f64::from(f32::from_be_bytes(fixed(b)?))),
            oid::FLOAT8 => Value::Float(f64::from_be_bytes(fixed(b)?)),
            oid::NUMERIC => Value::Numeric(Numeric::from_binary(b)?),
            oid::TEXT | oid::VARCHAR | oid::NAME => Value::Text(b.to_vec()),
            oid::BPCHAR => Value::Text(strip_bpchar(b)),
            oid::CHAR => Value::Text(parse_char_byte(fixed::<1>(b)?[0])),
            oid::BYTEA => Value::Bytea(b.to_vec()),
            oid::UUID => Value::Uuid(fixed(b)?),
            oid::DATE => {
                let d = i32::from_be_bytes(fixed(b)?);
                if d != i32::MIN && d != i32::MAX && !(MIN_DATE..END_DATE).contains(&i64::from(d)) {
                    return Err(ValueError::DatetimeOutOfRange("date out of range".into()));
                }
                Value::Date(d)
            }
            oid::TIME => {
                let t = i64::from_be_bytes(fixed(b)?);
                if !(0..=USECS_PER_DAY).contains(&t) {
                    return Err(ValueError::DatetimeOutOfRange("time out of range".into()));
                }
                Value::Time(t)
            }
            oid::TIMESTAMP | oid::TIMESTAMPTZ => {
                let t = i64::from_be_bytes(fixed(b)?);
                if t != i64::MIN && t != i64::MAX && !(MIN_TIMESTAMP..END_TIMESTAMP).contains(&t) {
                    return Err(ValueError::DatetimeOutOfRange(
                        "timestamp out of range".into(),
                    ));
                }
                if oid == oid::TIMESTAMP {
                    Value::Timestamp(t)
                } else {
                    Value::TimestampTz(t)
                }
            }
            other => return Err(ValueError::UnsupportedType(other)),
        })
    }

    /// Decodes PostgreSQL's text output format of type `oid` (the type's
    /// input function, PostgreSQL 15, ISO DateStyle): bool (`t`/`f`/`true`/
    /// `yes`/`on`/`1`… as `boolin`), int2/int4/int8/oid (range-checked →
    /// `OutOfRange`), float4/float8 (incl. `NaN`, `Infinity`, `-Infinity`,
    /// exponent forms), numeric (`numeric_in`), text/varchar/name (bytes),
    /// bpchar (trailing spaces stripped), "char" (`charin`), bytea (`\x`
    /// hex or escape form), uuid, date (`2024-01-02`, `0044-03-15 BC`,
    /// `infinity`), time (`03:04:05.123456`), timestamp
    /// (`2024-01-02 03:04:05.123456`), timestamptz
    /// (`2024-01-02 03:04:05+05:30`, converted to UTC; no offset = UTC).
    /// Bad text → `Malformed`; other oids → `UnsupportedType`.
    pub fn decode_text(oid: u32, b: &[u8]) -> Result<Value, ValueError> {
        Ok(match oid {
            oid::TEXT | oid::VARCHAR | oid::NAME => Value::Text(b.to_vec()),
            oid::BPCHAR => Value::Text(strip_bpchar(b)),
            oid::CHAR => Value::Text(parse_char(b)),
            oid::BYTEA => Value::Bytea(parse_bytea(b)?),
            oid::UUID => Value::Uuid(parse_uuid(b)?),
            oid::BOOL => Value::Bool(parse_bool(utf8(oid, b)?)?),
            oid::INT2 => Value::Int(parse_int(
                utf8(oid, b)?,
                i64::from(i16::MIN),
                i64::from(i16::MAX),
                "smallint",
            )?),
            oid::INT4 => Value::Int(parse_int(
                utf8(oid, b)?,
                i64::from(i32::MIN),
                i64::from(i32::MAX),
                "integer",
            )?),
            oid::INT8 => Value::Int(parse_int(utf8(oid, b)?, i64::MIN, i64::MAX, "bigint")?),
            oid::OID => Value::Int(parse_oid(utf8(oid, b)?)?),
            oid::FLOAT4 => Value::Float(parse_float4(utf8(oid, b)?)?),
            oid::FLOAT8 => Value::Float(parse_float8(utf8(oid, b)?)?),
            oid::NUMERIC => Value::Numeric(Numeric::parse(utf8(oid, b)?)?),
            oid::DATE => Value::Date(datetime::parse_date(utf8(oid, b)?)?),
            oid::TIME => Value::Time(datetime::parse_time(utf8(oid, b)?)?),
            oid::TIMESTAMP => Value::Timestamp(datetime::parse_timestamp(utf8(oid, b)?, false)?),
            oid::TIMESTAMPTZ => Value::TimestampTz(datetime::parse_timestamp(utf8(oid, b)?, true)?),
            other => return Err(ValueError::UnsupportedType(other)),
        })
    }
}

/// A received `"char"` byte: 0 is the empty value.
fn parse_char_byte(c: u8) -> Vec<u8> {
    if c == 0 {
        Vec::new()
    } else {
        vec![c]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_scalars() {
        assert!(matches!(
            Value::decode_binary(oid::BOOL, &[1]),
            Ok(Value::Bool(true))
        ));
        assert!(matches!(
            Value::decode_binary(oid::BOOL, &[7]),
            Ok(Value::Bool(true))
        ));
        assert!(matches!(
            Value::decode_binary(oid::BOOL, &[0]),
            Ok(Value::Bool(false))
        ));
        assert!(matches!(
            Value::decode_binary(oid::INT2, &[0xff, 0xfe]),
            Ok(Value::Int(-2))
        ));
        assert!(matches!(
            Value::decode_binary(oid::INT4, &[0, 0, 1, 0]),
            Ok(Value::Int(256))
        ));
        assert!(matches!(
            Value::decode_binary(oid::OID, &[0xff; 4]),
            Ok(Value::Int(4_294_967_295))
        ));
        assert!(matches!(
            Value::decode_binary(oid::INT8, &[0x80, 0, 0, 0, 0, 0, 0, 0]),
            Ok(Value::Int(i64::MIN))
        ));
        assert!(
            matches!(Value::decode_binary(oid::FLOAT4, &1.5f32.to_be_bytes()), Ok(Value::Float(f)) if f == 1.5)
        );
        assert!(
            matches!(Value::decode_binary(oid::FLOAT8, &(-2.0f64).to_be_bytes()), Ok(Value::Float(f)) if f == -2.0)
        );
        assert!(
            matches!(Value::decode_binary(oid::BPCHAR, b"ab  "), Ok(Value::Text(t)) if t == b"ab")
        );
        assert!(
            matches!(Value::decode_binary(oid::BPCHAR, b"   "), Ok(Value::Text(t)) if t.is_empty())
        );
        assert!(
            matches!(Value::decode_binary(oid::CHAR, &[0]), Ok(Value::Text(t)) if t.is_empty())
        );
        assert!(
            matches!(Value::decode_binary(oid::UUID, &[7; 16]), Ok(Value::Uuid(u)) if u == [7; 16])
        );
        assert!(matches!(Value::decode_binary(oid::TEXT, b""), Ok(Value::Text(t)) if t.is_empty()));
    }

    #[test]
    fn binary_errors() {
        let e = Value::decode_binary(oid::INT4, &[0, 0, 1]).unwrap_err();
        assert_eq!(e.sqlstate(), "22P03");
        assert!(Value::decode_binary(oid::INT2, &[0, 0, 1]).is_err());
        assert!(Value::decode_binary(oid::BOOL, &[]).is_err());
        assert!(Value::decode_binary(oid::UUID, &[0; 15]).is_err());
        assert_eq!(
            Value::decode_binary(600, &[]).unwrap_err(),
            ValueError::UnsupportedType(600)
        );
        assert_eq!(
            Value::decode_binary(600, &[]).unwrap_err().sqlstate(),
            "0A000"
        );
        let e = Value::decode_binary(oid::DATE, &(END_DATE as i32).to_be_bytes()).unwrap_err();
        assert_eq!(e.sqlstate(), "22008");
        assert!(Value::decode_binary(oid::DATE, &((MIN_DATE - 1) as i32).to_be_bytes()).is_err());
        assert!(Value::decode_binary(oid::TIME, &(USECS_PER_DAY + 1).to_be_bytes()).is_err());
        assert!(Value::decode_binary(oid::TIME, &(-1i64).to_be_bytes()).is_err());
        assert!(Value::decode_binary(oid::TIMESTAMP, &END_TIMESTAMP.to_be_bytes()).is_err());
        assert!(
            Value::decode_binary(oid::TIMESTAMPTZ, &(MIN_TIMESTAMP - 1).to_be_bytes()).is_err()
        );
        assert!(matches!(
            Value::decode_binary(oid::TIMESTAMPTZ, &i64::MAX.to_be_bytes()),
            Ok(Value::TimestampTz(i64::MAX))
        ));
    }

    #[test]
    fn text_scalars() {
        assert!(matches!(
            Value::decode_text(oid::BOOL, b"t"),
            Ok(Value::Bool(true))
        ));
        assert!(matches!(
            Value::decode_text(oid::INT2, b"-5"),
            Ok(Value::Int(-5))
        ));
        assert_eq!(
            Value::decode_text(oid::INT4, b"2147483648")
                .unwrap_err()
                .sqlstate(),
            "22003"
        );
        assert!(matches!(
            Value::decode_text(oid::OID, b"4294967295"),
            Ok(Value::Int(4_294_967_295))
        ));
        assert!(
            matches!(Value::decode_text(oid::FLOAT8, b"-Infinity"), Ok(Value::Float(f)) if f == f64::NEG_INFINITY)
        );
        assert!(
            matches!(Value::decode_text(oid::FLOAT4, b"1.1"), Ok(Value::Float(f)) if f == f64::from(1.1f32))
        );
        assert!(
            matches!(Value::decode_text(oid::FLOAT8, b"NaN"), Ok(Value::Float(f)) if f.is_nan())
        );
        assert!(
            matches!(Value::decode_text(oid::NUMERIC, b"12.50"), Ok(Value::Numeric(n)) if n.to_text() == "12.50")
        );
        assert!(
            matches!(Value::decode_text(oid::BYTEA, b"\\x0102"), Ok(Value::Bytea(v)) if v == [1, 2])
        );
        assert!(matches!(Value::decode_text(oid::BPCHAR, b"x  "), Ok(Value::Text(t)) if t == b"x"));
        assert!(matches!(Value::decode_text(oid::CHAR, b"\\101"), Ok(Value::Text(t)) if t == b"A"));
        assert!(matches!(
            Value::decode_text(oid::DATE, b"-infinity"),
            Ok(Value::Date(i32::MIN))
        ));
        assert!(matches!(
            Value::decode_text(oid::TIMESTAMP, b"infinity"),
            Ok(Value::Timestamp(i64::MAX))
        ));
        assert_eq!(
            Value::decode_text(oid::INT4, b"abc")
                .unwrap_err()
                .sqlstate(),
            "22P02"
        );
        assert_eq!(
            Value::decode_text(oid::INT4, &[0xff])
                .unwrap_err()
                .sqlstate(),
            "22P02"
        );
        assert_eq!(
            Value::decode_text(oid::DATE, b"2024-13-01")
                .unwrap_err()
                .sqlstate(),
            "22008"
        );
        assert_eq!(
            Value::decode_text(oid::TIMESTAMP, b"yesterday-ish")
                .unwrap_err()
                .sqlstate(),
            "22007"
        );
        assert_eq!(
            Value::decode_text(3802, b"{}").unwrap_err(),
            ValueError::UnsupportedType(3802)
        );
    }
}
