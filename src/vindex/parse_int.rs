//! PostgreSQL's text input for integers (`int8in`), without allocation.

use super::error::VindexError;

/// PostgreSQL name of the type parsed here, used in error messages.
const TYPE_NAME: &str = "bigint";

/// Parses a PostgreSQL integer literal to `i64`, as `int8in` does.
///
/// Accepts, like PostgreSQL 16+'s `pg_strtoint64_safe`: optional leading and
/// trailing C-locale whitespace (space, `\t`, `\n`, `\v`, `\f`, `\r`), an
/// optional `+`/`-` sign, decimal digits or a `0x`/`0o`/`0b` (any case)
/// prefixed hexadecimal/octal/binary number, with single `_` separators
/// between digits. The result is range-checked to
/// `i64::MIN..=i64::MAX`.
///
/// Errors: [`VindexError::InvalidSyntax`] for anything else,
/// [`VindexError::OutOfRange`] when the value does not fit an `i64`
/// (reported as soon as the digits overflow, as PostgreSQL does).
pub fn parse_i64(s: &str) -> Result<i64, VindexError> {
    let b = s.as_bytes();
    if let Some(v) = plain_decimal(b) {
        return Ok(v);
    }
    let syntax = || VindexError::InvalidSyntax {
        type_name: TYPE_NAME,
        input: s.to_string(),
    };
    let out_of_range = || VindexError::OutOfRange {
        type_name: TYPE_NAME,
        input: s.to_string(),
    };

    let mut i = 0;
    while i < b.len() && is_c_space(b[i]) {
        i += 1;
    }
    let neg = match b.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let radix: u64 = match (b.get(i), b.get(i + 1)) {
        (Some(b'0'), Some(b'x' | b'X')) => 16,
        (Some(b'0'), Some(b'o' | b'O')) => 8,
        (Some(b'0'), Some(b'b' | b'B')) => 2,
        _ => 10,
    };
    if radix != 10 {
        i += 2;
    }

    let first_digit = i;
    let mut mag: u64 = 0;
    while let Some(&c) = b.get(i) {
        if let Some(d) = digit_value(c, radix) {
            mag = mag
                .checked_mul(radix)
                .and_then(|m| m.checked_add(d))
                .ok_or_else(out_of_range)?;
            // Anything above 2^63 is out of range for either sign.
            if mag > 1 << 63 {
                return Err(out_of_range());
            }
            i += 1;
        } else if c == b'_' {
            // A decimal number may not start with '_' (a prefixed one may);
            // '_' must always be followed by a digit.
            if radix == 10 && i == first_digit {
                return Err(syntax());
            }
            i += 1;
            match b.get(i) {
                Some(&n) if digit_value(n, radix).is_some() => {}
                _ => return Err(syntax()),
            }
        } else {
            break;
        }
    }
    if i == first_digit {
        return Err(syntax());
    }
    while i < b.len() && is_c_space(b[i]) {
        i += 1;
    }
    if i != b.len() {
        return Err(syntax());
    }

    if neg {
        // mag <= 2^63 here; 2^63 as i64 is i64::MIN and negates to itself.
        Ok((mag as i64).wrapping_neg())
    } else if mag > i64::MAX as u64 {
        Err(out_of_range())
    } else {
        Ok(mag as i64)
    }
}

/// The value of `b` when it is an optional `-` and 1 to 18 decimal digits
/// (which cannot overflow an `i64`), the form nearly every key takes;
/// None for anything else (the full parser decides).
#[inline]
fn plain_decimal(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + i64::from(d);
    }
    Some(if neg { -v } else { v })
}

/// C `isspace` in the C locale.
#[inline]
fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Value of ASCII digit `c` in `radix` (2, 8, 10 or 16), if it is one.
#[inline]
fn digit_value(c: u8, radix: u64) -> Option<u64> {
    let d = match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => return None,
    } as u64;
    (d < radix).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> i64 {
        match parse_i64(s) {
            Ok(v) => v,
            Err(e) => panic!("{s:?}: {e}"),
        }
    }

    fn err(s: &str) -> String {
        match parse_i64(s) {
            Ok(v) => panic!("{s:?} parsed as {v}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn decimal() {
        assert_eq!(ok("0"), 0);
        assert_eq!(ok("17"), 17);
        assert_eq!(ok("-1"), -1);
        assert_eq!(ok("+42"), 42);
        assert_eq!(ok("-0"), 0);
        assert_eq!(ok("007"), 7);
        assert_eq!(ok("  12 \t\n"), 12);
        assert_eq!(ok("\x0b\x0c\r5"), 5);
        assert_eq!(ok("9223372036854775807"), i64::MAX);
        assert_eq!(ok("-9223372036854775808"), i64::MIN);
        assert_eq!(ok("1_000_000"), 1_000_000);
    }

    #[test]
    fn plain_decimal_agrees_with_the_full_parser() {
        // 18 digits take the fast path, 19 the full parser.
        assert_eq!(ok("999999999999999999"), 999_999_999_999_999_999);
        assert_eq!(ok("-999999999999999999"), -999_999_999_999_999_999);
        assert_eq!(ok("1000000000000000000"), 1_000_000_000_000_000_000);
        assert_eq!(plain_decimal(b"-"), None);
        assert_eq!(plain_decimal(b"12a"), None);
        assert_eq!(plain_decimal(b"1_0"), None);
        assert_eq!(plain_decimal(b"1234567890123456789"), None);
        assert_eq!(plain_decimal(b"-42"), Some(-42));
    }

    #[test]
    fn prefixed() {
        assert_eq!(ok("0x1F"), 31);
        assert_eq!(ok("0XfF"), 255);
        assert_eq!(ok("-0x10"), -16);
        assert_eq!(ok("0o17"), 15);
        assert_eq!(ok("0b101"), 5);
        assert_eq!(ok("0x_ff"), 255);
        assert_eq!(ok("0x7FFFFFFFFFFFFFFF"), i64::MAX);
        assert_eq!(ok("-0x8000000000000000"), i64::MIN);
    }

    #[test]
    fn syntax_errors() {
        for s in [
            "", " ", "abc", "-", "+", "1a", "1 2", "1.0", "1e3", "--1", "+-1", "_1", "1_", "1__0",
            "0x", "0x_", "0xg", "0b2", "0o8", "١", "1\0", "−1",
        ] {
            assert_eq!(
                err(s),
                format!("invalid input syntax for type bigint: \"{s}\""),
                "{s:?}"
            );
        }
    }

    #[test]
    fn range_errors() {
        for s in [
            "9223372036854775808",
            "-9223372036854775809",
            "99999999999999999999",
            "0x8000000000000000",
            "184467440737095516160",
        ] {
            assert_eq!(
                err(s),
                format!("value \"{s}\" is out of range for type bigint"),
                "{s:?}"
            );
        }
        // Overflow is reported before trailing junk, as PostgreSQL does.
        assert!(err("99999999999999999999abc").contains("out of range"));
    }
}
