//! PostgreSQL-exact column values for the scatter-gather merge engine.
//!
//! A [`Value`] is one decoded column value of a shard's result row. It is
//! decoded from PostgreSQL's wire formats (binary: the types' `*_send` /
//! `*_recv` functions; text: the types' output functions, ISO DateStyle),
//! ordered like PostgreSQL's btree operator classes ([`Value::cmp_pg`]) and
//! encoded back into the text or binary format of the result column's type.
//! [`Numeric`] carries PostgreSQL's arbitrary-precision `numeric` with its
//! display scale so that merged aggregates (`sum`, `avg` = `numeric_div`)
//! print exactly what a single PostgreSQL server prints.
//!
//! Layout: `numeric.rs` (the [`Numeric`] type, text in/out, comparison),
//! `numeric_ops.rs` (addition, PostgreSQL division), `numeric_wire.rs`
//! (`numeric_send`/`numeric_recv`), `float.rs` (float4/float8 text in/out),
//! `shortest.rs` (PostgreSQL's Ryu digit choice),
//! `datetime.rs` (date/time/timestamp calendars and ISO text), `text.rs`
//! (bool, integer, bytea, uuid, "char" text forms), `decode.rs`,
//! `encode.rs`, `cmp.rs` (ordering, equality, hashing), `array.rs`
//! (binary one-dimensional arrays of values passed to a gather's final
//! step).

pub mod array;
mod cmp;
mod datetime;
mod decode;
mod encode;
pub mod float;
pub mod numeric;
mod numeric_ops;
mod numeric_wire;
mod shortest;
mod text;

#[cfg(test)]
mod pg_tests;

pub use float::{float_text, parse_float};
pub use numeric::Numeric;

/// PostgreSQL type oids of the types this module understands (PostgreSQL
/// `src/include/catalog/pg_type.dat`; the values are fixed across versions).
pub mod oid {
    /// `boolean`.
    pub const BOOL: u32 = 16;
    /// `bytea` (variable-length binary string).
    pub const BYTEA: u32 = 17;
    /// `"char"` (single byte, internal type).
    pub const CHAR: u32 = 18;
    /// `name` (63-byte identifier).
    pub const NAME: u32 = 19;
    /// `bigint` (8-byte signed integer).
    pub const INT8: u32 = 20;
    /// `smallint` (2-byte signed integer).
    pub const INT2: u32 = 21;
    /// `integer` (4-byte signed integer).
    pub const INT4: u32 = 23;
    /// `text`.
    pub const TEXT: u32 = 25;
    /// `oid` (4-byte unsigned integer).
    pub const OID: u32 = 26;
    /// `real` (IEEE 754 binary32).
    pub const FLOAT4: u32 = 700;
    /// `double precision` (IEEE 754 binary64).
    pub const FLOAT8: u32 = 701;
    /// `character(n)` (blank-padded).
    pub const BPCHAR: u32 = 1042;
    /// `character varying(n)`.
    pub const VARCHAR: u32 = 1043;
    /// `date` (4-byte day number).
    pub const DATE: u32 = 1082;
    /// `time without time zone` (8-byte microseconds).
    pub const TIME: u32 = 1083;
    /// `timestamp without time zone` (8-byte microseconds).
    pub const TIMESTAMP: u32 = 1114;
    /// `timestamp with time zone` (8-byte microseconds, UTC).
    pub const TIMESTAMPTZ: u32 = 1184;
    /// `numeric` (arbitrary precision decimal).
    pub const NUMERIC: u32 = 1700;
    /// `uuid` (16 bytes).
    pub const UUID: u32 = 2950;
}

/// A failure to decode, convert or compute a value. Each variant maps to
/// the SQLSTATE PostgreSQL reports for the same failure ([`ValueError::sqlstate`],
/// PostgreSQL docs Appendix A); the messages follow PostgreSQL's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The type (oid) is not supported for this operation, or the value's
    /// variant cannot be represented as that type (SQLSTATE 0A000).
    #[error("type with oid {0} is not supported for this operation")]
    UnsupportedType(u32),
    /// Malformed input bytes for the type. Text-format input errors carry
    /// PostgreSQL's message ("invalid input syntax for type integer: \"x\"",
    /// "invalid hexadecimal digit: ..."; SQLSTATE 22P02, 22007 for
    /// date/time types); all other messages are binary-format errors
    /// (SQLSTATE 22P03, "incorrect binary data format").
    #[error("{0}")]
    Malformed(String),
    /// A numeric or integer result out of range (SQLSTATE 22003), with
    /// PostgreSQL's message, e.g. "bigint out of range".
    #[error("{0}")]
    OutOfRange(String),
    /// Division by zero (SQLSTATE 22012).
    #[error("division by zero")]
    DivisionByZero,
    /// A conversion PostgreSQL refuses, e.g. "cannot convert NaN to bigint"
    /// (SQLSTATE 0A000).
    #[error("{0}")]
    NotSupported(String),
    /// A date/time value outside PostgreSQL's range, e.g. "date out of
    /// range" or "date/time field value out of range: \"2024-02-30\""
    /// (SQLSTATE 22008).
    #[error("{0}")]
    DatetimeOutOfRange(String),
}

impl ValueError {
    /// The five-character SQLSTATE PostgreSQL reports for this error
    /// (PostgreSQL docs Appendix A): 0A000 unsupported, 22P02 invalid text
    /// representation, 22007 invalid datetime format, 22P03 invalid binary
    /// representation, 22003 numeric value out of range, 22012 division by
    /// zero, 22008 datetime field overflow.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ValueError::UnsupportedType(_) | ValueError::NotSupported(_) => "0A000",
            ValueError::Malformed(m) => {
                if m.starts_with("invalid input syntax for type date")
                    || m.starts_with("invalid input syntax for type time")
                {
                    "22007"
                } else if m.starts_with("invalid input syntax")
                    || m.starts_with("invalid hexadecimal")
                {
                    "22P02"
                } else {
                    "22P03"
                }
            }
            ValueError::OutOfRange(_) => "22003",
            ValueError::DivisionByZero => "22012",
            ValueError::DatetimeOutOfRange(_) => "22008",
        }
    }
}

/// One decoded column value.
///
/// Shapes and units: integers of every width and `oid` widen to `i64`;
/// `real` widens exactly to `f64`; text-like types hold their bytes
/// (server encoding, not validated); `character(n)` holds its bytes with
/// trailing spaces stripped (PostgreSQL compares bpchar ignoring them);
/// dates are days since 2000-01-01 with `i32::MIN`/`i32::MAX` for
/// `-infinity`/`infinity`; times are microseconds since midnight;
/// timestamps are microseconds since 2000-01-01 00:00:00 (UTC for
/// `TimestampTz`) with `i64::MIN`/`i64::MAX` for `-infinity`/`infinity`
/// (PostgreSQL `src/include/datatype/timestamp.h`).
///
/// Equality and hashing agree with [`Value::cmp_pg`] returning `Equal` for
/// two values of one variant (numeric `1.0 == 1.00`; float `-0 == 0`, all
/// NaNs equal). `Int` and `Numeric` are also equal (and hash equal) when
/// numerically equal; no other pair of distinct variants is equal.
#[derive(Debug, Clone)]
pub enum Value {
    /// SQL NULL (orders greatest, like PostgreSQL's default NULLS LAST).
    Null,
    /// `boolean`.
    Bool(bool),
    /// `smallint`, `integer`, `bigint` or `oid`.
    Int(i64),
    /// `real` or `double precision`.
    Float(f64),
    /// `numeric`.
    Numeric(Numeric),
    /// `text`, `varchar`, `name`, `"char"`, `bpchar` (trailing spaces stripped).
    Text(Vec<u8>),
    /// `bytea`.
    Bytea(Vec<u8>),
    /// `date`: days since 2000-01-01; `i32::MIN`/`i32::MAX` = ∓infinity.
    Date(i32),
    /// `time`: microseconds since midnight, 0..=86_400_000_000.
    Time(i64),
    /// `timestamp`: µs since 2000-01-01 00:00:00; `i64::MIN`/`i64::MAX` = ∓infinity.
    Timestamp(i64),
    /// `timestamptz`: µs since 2000-01-01 00:00:00 UTC; `i64::MIN`/`i64::MAX` = ∓infinity.
    TimestampTz(i64),
    /// `uuid`: the 16 bytes in network order.
    Uuid([u8; 16]),
}
