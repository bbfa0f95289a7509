//! Keyspace ids as stored in `shard_ranges`: `numeric(20,0)` exchanged as text.
//!
//! A `u64` does not fit `bigint`, so the catalog stores range bounds as
//! `numeric(20,0)` and the router reads them with `::text`. An end bound of
//! exactly 2^64 and a NULL end bound both mean "unbounded" (`None`).

/// 2^64 as the decimal text PostgreSQL prints for `numeric(20,0)`.
pub const TWO_POW_64: &str = "18446744073709551616";

/// Parses a start bound (`start_id::text`): a decimal in `[0, 2^64)`.
///
/// Errors: a description of what is wrong, for the caller to attach to the row.
pub fn parse_start(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .map_err(|_| format!("start_id {text} is not a keyspace id in [0, 2^64)"))
}

/// Parses an end bound (`end_id::text`, NULL as `None`): a decimal in
/// `[1, 2^64]`; NULL and 2^64 give `None` (unbounded).
///
/// Errors: a description of what is wrong, for the caller to attach to the row.
pub fn parse_end(text: Option<&str>) -> Result<Option<u64>, String> {
    match text.map(str::trim) {
        None => Ok(None),
        Some(TWO_POW_64) => Ok(None),
        Some(t) => t
            .parse::<u64>()
            .map(Some)
            .map_err(|_| format!("end_id {t} is not a keyspace id in [1, 2^64]")),
    }
}

/// The text to bind (as `$n::text::numeric`) for an end bound; `None` stores NULL.
pub fn end_to_text(end: Option<u64>) -> Option<String> {
    end.map(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bounds() {
        assert_eq!(parse_start("0"), Ok(0));
        assert_eq!(parse_start("18446744073709551615"), Ok(u64::MAX));
        assert!(parse_start(TWO_POW_64).is_err());
        assert!(parse_start("-1").is_err());
        assert_eq!(parse_end(None), Ok(None));
        assert_eq!(parse_end(Some(TWO_POW_64)), Ok(None));
        assert_eq!(parse_end(Some("9223372036854775808")), Ok(Some(1 << 63)));
        assert!(parse_end(Some("18446744073709551617")).is_err());
        assert_eq!(end_to_text(Some(5)).as_deref(), Some("5"));
        assert_eq!(end_to_text(None), None);
    }
}
