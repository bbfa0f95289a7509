//! Sharding key types and values, and their PostgreSQL text/binary input.

use std::fmt;
use std::str::FromStr;

use super::error::VindexError;
use super::parse_int::parse_i64;
use super::parse_uuid::parse_uuid;

/// The type of a sharding-key column, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// `smallint`, `integer` or `bigint`: all held as `i64`, so equal values
    /// of any width map to the same keyspace id.
    Int,
    /// `text` / `varchar`: UTF-8 bytes, compared byte-wise.
    Text,
    /// `uuid`: 16 bytes in RFC 4122 (network) order.
    Uuid,
}

impl KeyType {
    /// Canonical configuration name: `"int"`, `"text"` or `"uuid"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyType::Int => "int",
            KeyType::Text => "text",
            KeyType::Uuid => "uuid",
        }
    }

    /// PostgreSQL type name used in error messages: `bigint`, `text`, `uuid`.
    pub fn pg_type_name(&self) -> &'static str {
        match self {
            KeyType::Int => "bigint",
            KeyType::Text => "text",
            KeyType::Uuid => "uuid",
        }
    }

    /// Parses a key from PostgreSQL text format (a literal's or a text-format
    /// Bind parameter's contents, without quotes).
    ///
    /// - `Int`: as `int8in` (see [`parse_i64`](super::parse_int::parse_i64)):
    ///   surrounding whitespace, sign, `0x`/`0o`/`0b` prefixes and `_`
    ///   separators, range-checked to `i64`.
    /// - `Text`: the string itself, borrowed.
    /// - `Uuid`: as `uuid_in`: hyphenated, plain 32 hex digits, `{...}`, any case.
    ///
    /// Errors: [`VindexError::InvalidSyntax`], [`VindexError::OutOfRange`];
    /// [`VindexError::InvalidEncoding`] for text containing a NUL byte
    /// (which PostgreSQL text cannot hold).
    pub fn parse_text<'a>(&self, s: &'a str) -> Result<KeyValue<'a>, VindexError> {
        match self {
            KeyType::Int => parse_i64(s).map(KeyValue::Int),
            KeyType::Text => {
                if s.as_bytes().contains(&0) {
                    return Err(VindexError::InvalidEncoding {
                        bytes: "0x00".into(),
                    });
                }
                Ok(KeyValue::Text(s))
            }
            KeyType::Uuid => parse_uuid(s).map(KeyValue::Uuid),
        }
    }

    /// Parses a key from PostgreSQL binary (send) format, as in a
    /// binary-format Bind parameter.
    ///
    /// - `Int`: 2, 4 or 8 bytes, big-endian two's complement (`int2send`,
    ///   `int4send`, `int8send`), chosen by length.
    /// - `Text`: the raw bytes, which must be UTF-8 without NUL.
    /// - `Uuid`: exactly 16 bytes (`uuid_send`).
    ///
    /// Errors: [`VindexError::BinaryFormat`] on a wrong length,
    /// [`VindexError::InvalidEncoding`] on invalid UTF-8 or a NUL byte.
    pub fn parse_binary<'a>(&self, b: &'a [u8]) -> Result<KeyValue<'a>, VindexError> {
        match self {
            KeyType::Int => match *b {
                [a, b] => Ok(KeyValue::Int(i16::from_be_bytes([a, b]) as i64)),
                [a, b, c, d] => Ok(KeyValue::Int(i32::from_be_bytes([a, b, c, d]) as i64)),
                [a, b, c, d, e, f, g, h] => {
                    Ok(KeyValue::Int(i64::from_be_bytes([a, b, c, d, e, f, g, h])))
                }
                _ => Err(VindexError::BinaryFormat {
                    type_name: "bigint",
                    expected: "2, 4 or 8",
                    got: b.len(),
                }),
            },
            KeyType::Text => match std::str::from_utf8(b) {
                Ok(s) => self.parse_text(s),
                Err(e) => Err(invalid_utf8(&b[e.valid_up_to()..])),
            },
            KeyType::Uuid => match <[u8; 16]>::try_from(b) {
                Ok(u) => Ok(KeyValue::Uuid(u)),
                Err(_) => Err(VindexError::BinaryFormat {
                    type_name: "uuid",
                    expected: "16",
                    got: b.len(),
                }),
            },
        }
    }
}

/// PostgreSQL-style report of an invalid UTF-8 sequence starting at `bad[0]`:
/// the bytes the lead byte announces (1 to 4, as far as present), as
/// `0xc3 0x28`.
fn invalid_utf8(bad: &[u8]) -> VindexError {
    let want = match bad.first() {
        Some(0xc0..=0xdf) => 2,
        Some(0xe0..=0xef) => 3,
        Some(0xf0..=0xf7) => 4,
        _ => 1,
    };
    let bytes = bad
        .iter()
        .take(want)
        .map(|x| format!("{x:#04x}"))
        .collect::<Vec<_>>()
        .join(" ");
    VindexError::InvalidEncoding { bytes }
}

/// Parses a configuration type name, case-insensitively:
/// `int`, `int2`, `int4`, `int8`, `smallint`, `integer`, `bigint` → `Int`;
/// `text`, `varchar` → `Text`; `uuid` → `Uuid`.
///
/// Errors: [`VindexError::UnknownKeyType`].
impl FromStr for KeyType {
    type Err = VindexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const NAMES: [(&str, KeyType); 10] = [
            ("int", KeyType::Int),
            ("int2", KeyType::Int),
            ("int4", KeyType::Int),
            ("int8", KeyType::Int),
            ("smallint", KeyType::Int),
            ("integer", KeyType::Int),
            ("bigint", KeyType::Int),
            ("text", KeyType::Text),
            ("varchar", KeyType::Text),
            ("uuid", KeyType::Uuid),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|(_, t)| *t)
            .ok_or_else(|| VindexError::UnknownKeyType(s.to_string()))
    }
}

/// Writes [`KeyType::as_str`].
impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed sharding key, borrowing text from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyValue<'a> {
    /// Any integer width, widened to `i64`.
    Int(i64),
    /// UTF-8 text.
    Text(&'a str),
    /// 16 bytes in RFC 4122 (network) order.
    Uuid([u8; 16]),
}

impl KeyValue<'_> {
    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        match self {
            KeyValue::Int(_) => KeyType::Int,
            KeyValue::Text(_) => KeyType::Text,
            KeyValue::Uuid(_) => KeyType::Uuid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_type_names() {
        for (s, t) in [
            ("int", KeyType::Int),
            ("INT2", KeyType::Int),
            ("int4", KeyType::Int),
            ("Int8", KeyType::Int),
            ("smallint", KeyType::Int),
            ("INTEGER", KeyType::Int),
            ("bigint", KeyType::Int),
            ("text", KeyType::Text),
            ("VarChar", KeyType::Text),
            ("UUID", KeyType::Uuid),
        ] {
            assert_eq!(s.parse::<KeyType>(), Ok(t), "{s}");
        }
        assert_eq!(
            "float8".parse::<KeyType>().map_err(|e| e.to_string()),
            Err("unknown sharding key type \"float8\" (expected int, text or uuid)".to_string())
        );
        assert!(" int".parse::<KeyType>().is_err());
        for t in [KeyType::Int, KeyType::Text, KeyType::Uuid] {
            assert_eq!(t.as_str().parse::<KeyType>(), Ok(t));
            assert_eq!(t.to_string(), t.as_str());
        }
    }

    #[test]
    fn parse_text_values() {
        assert_eq!(KeyType::Int.parse_text(" -17 "), Ok(KeyValue::Int(-17)));
        assert_eq!(
            KeyType::Text.parse_text(" a b "),
            Ok(KeyValue::Text(" a b "))
        );
        assert_eq!(KeyType::Text.parse_text(""), Ok(KeyValue::Text("")));
        let u = KeyType::Uuid.parse_text("{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}");
        assert_eq!(u.map(|v| v.key_type()), Ok(KeyType::Uuid));
    }

    #[test]
    fn parse_text_errors() {
        let e = KeyType::Int
            .parse_text("abc")
            .map_err(|e| (e.sqlstate(), e.to_string()));
        assert_eq!(
            e,
            Err((
                "22P02",
                "invalid input syntax for type bigint: \"abc\"".into()
            ))
        );
        let e = KeyType::Int
            .parse_text("9223372036854775808")
            .map_err(|e| (e.sqlstate(), e.to_string()));
        assert_eq!(
            e,
            Err((
                "22003",
                "value \"9223372036854775808\" is out of range for type bigint".into()
            ))
        );
        let e = KeyType::Uuid.parse_text("nope").map_err(|e| e.to_string());
        assert_eq!(
            e,
            Err("invalid input syntax for type uuid: \"nope\"".into())
        );
        let e = KeyType::Text.parse_text("a\0b").map_err(|e| e.to_string());
        assert_eq!(
            e,
            Err("invalid byte sequence for encoding \"UTF8\": 0x00".into())
        );
    }

    #[test]
    fn parse_binary_ints_by_width() {
        assert_eq!(
            KeyType::Int.parse_binary(&[0xff, 0xfe]),
            Ok(KeyValue::Int(-2))
        );
        assert_eq!(
            KeyType::Int.parse_binary(&[0, 0, 0, 17]),
            Ok(KeyValue::Int(17))
        );
        assert_eq!(KeyType::Int.parse_binary(&[0xff; 4]), Ok(KeyValue::Int(-1)));
        assert_eq!(
            KeyType::Int.parse_binary(&(-1i64).to_be_bytes()),
            Ok(KeyValue::Int(-1))
        );
        assert_eq!(
            KeyType::Int.parse_binary(&i64::MIN.to_be_bytes()),
            Ok(KeyValue::Int(i64::MIN))
        );
        for len in [0usize, 1, 3, 5, 7, 9, 16] {
            let bytes = vec![0; len];
            let e = KeyType::Int
                .parse_binary(&bytes)
                .map_err(|e| (e.sqlstate(), e.to_string()));
            assert_eq!(
                e,
                Err((
                    "22P03",
                    format!("incorrect binary data format for type bigint: expected 2, 4 or 8 bytes, got {len}")
                ))
            );
        }
    }

    #[test]
    fn parse_binary_text_and_uuid() {
        assert_eq!(
            KeyType::Text.parse_binary("héllo".as_bytes()),
            Ok(KeyValue::Text("héllo"))
        );
        let e = KeyType::Text
            .parse_binary(&[b'a', 0xc3, 0x28])
            .map_err(|e| (e.sqlstate(), e.to_string()));
        assert_eq!(
            e,
            Err((
                "22021",
                "invalid byte sequence for encoding \"UTF8\": 0xc3 0x28".into()
            ))
        );
        let e = KeyType::Text
            .parse_binary(&[0xff])
            .map_err(|e| e.to_string());
        assert_eq!(
            e,
            Err("invalid byte sequence for encoding \"UTF8\": 0xff".into())
        );
        let e = KeyType::Text
            .parse_binary(&[0xe2, 0x82])
            .map_err(|e| e.to_string());
        assert_eq!(
            e,
            Err("invalid byte sequence for encoding \"UTF8\": 0xe2 0x82".into())
        );
        assert!(KeyType::Text.parse_binary(b"a\0").is_err());

        let u: Vec<u8> = (0u8..16).collect();
        let mut want = [0u8; 16];
        want.copy_from_slice(&u);
        assert_eq!(KeyType::Uuid.parse_binary(&u), Ok(KeyValue::Uuid(want)));
        let e = KeyType::Uuid
            .parse_binary(&u[..15])
            .map_err(|e| e.to_string());
        assert_eq!(
            e,
            Err("incorrect binary data format for type uuid: expected 16 bytes, got 15".into())
        );
    }
}
