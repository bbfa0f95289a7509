//! Errors of key parsing and vindex configuration.

/// A sharding key that cannot be parsed, or an unknown key type / vindex name.
///
/// Messages follow PostgreSQL's wording so they can be sent to a SQL client
/// as is; [`VindexError::sqlstate`] gives the matching SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VindexError {
    /// Text input that is not a valid literal of the type,
    /// e.g. `invalid input syntax for type bigint: "abc"`.
    #[error("invalid input syntax for type {type_name}: \"{input}\"")]
    InvalidSyntax {
        /// PostgreSQL type name (`bigint`, `uuid`).
        type_name: &'static str,
        /// The offending input, verbatim.
        input: String,
    },
    /// A well-formed number outside the type's range,
    /// e.g. `value "9223372036854775808" is out of range for type bigint`.
    #[error("value \"{input}\" is out of range for type {type_name}")]
    OutOfRange {
        /// PostgreSQL type name.
        type_name: &'static str,
        /// The offending input, verbatim.
        input: String,
    },
    /// Binary (send-format) input of the wrong length,
    /// e.g. `incorrect binary data format for type bigint: expected 2, 4 or 8 bytes, got 3`.
    #[error(
        "incorrect binary data format for type {type_name}: expected {expected} bytes, got {got}"
    )]
    BinaryFormat {
        /// PostgreSQL type name.
        type_name: &'static str,
        /// Accepted lengths, e.g. `"2, 4 or 8"`.
        expected: &'static str,
        /// Length received.
        got: usize,
    },
    /// Text that is not valid UTF-8 or contains a NUL byte,
    /// e.g. `invalid byte sequence for encoding "UTF8": 0xff`.
    #[error("invalid byte sequence for encoding \"UTF8\": {bytes}")]
    InvalidEncoding {
        /// The first offending bytes as `0x..` words separated by spaces.
        bytes: String,
    },
    /// Unknown sharding key type name in configuration.
    #[error("unknown sharding key type \"{0}\" (expected int, text or uuid)")]
    UnknownKeyType(String),
    /// Unknown vindex name in configuration.
    #[error("unknown vindex \"{0}\" (expected hash_murmur3, hash_crc32, hash_fnv1a, range or consistent_hash)")]
    UnknownVindex(String),
}

impl VindexError {
    /// The PostgreSQL SQLSTATE for this error: `22P02`
    /// (invalid_text_representation), `22003` (numeric_value_out_of_range),
    /// `22P03` (invalid_binary_representation), `22021`
    /// (character_not_in_repertoire) or `42704` (undefined_object) for
    /// unknown configuration names.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            VindexError::InvalidSyntax { .. } => "22P02",
            VindexError::OutOfRange { .. } => "22003",
            VindexError::BinaryFormat { .. } => "22P03",
            VindexError::InvalidEncoding { .. } => "22021",
            VindexError::UnknownKeyType(_) | VindexError::UnknownVindex(_) => "42704",
        }
    }
}
