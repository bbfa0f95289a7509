//! Text forms of `real` and `double precision` (PostgreSQL
//! `src/backend/utils/adt/float.c` `float4in`/`float8in`,
//! `float4out`/`float8out`; output as in PostgreSQL ≥ 12 with the default
//! `extra_float_digits = 1`, i.e. the shortest round-trip digits of
//! `src/common/d2s.c`/`f2s.c`, see `shortest.rs`).

use super::numeric::is_pg_space;
use super::shortest::{ryu_digits, Binary};
use super::{oid, ValueError};

/// PostgreSQL `float8out` (or `float4out` when `oid` is [`oid::FLOAT4`],
/// after rounding `f` to `f32`) with `extra_float_digits = 1`: the
/// shortest decimal strictly inside the float's rounding interval (closest
/// to the exact value, ties to even; see `shortest.rs`), in fixed notation
/// when the decimal exponent is in `-4 ..< 15` (`-4 ..< 6` for float4),
/// otherwise as `d.ddde±XX` with at least two exponent digits; `NaN`,
/// `Infinity`, `-Infinity`, `-0`. Examples: `1e+20`, `1e-05`,
/// `0.30000000000000004`, `1.2345678901234568e+17`, `1.234567e+06`
/// (float4).
pub fn float_text(f: f64, oid: u32) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    let (neg, digits, exp, fixed_below) = if oid == oid::FLOAT4 {
        let g = f as f32;
        if g.is_infinite() {
            return if g > 0.0 {
                "Infinity".into()
            } else {
                "-Infinity".into()
            };
        }
        if g == 0.0 {
            return if g.is_sign_negative() {
                "-0".into()
            } else {
                "0".into()
            };
        }
        let a = g.abs();
        let (d, x) = ryu_digits(
            Binary::of_f32(a),
            |n| format!("{:.*e}", n - 1, a),
            |t| t.parse::<f32>() == Ok(a),
            sig_digits(&format!("{a:e}")),
            9,
        );
        (g < 0.0, d, x, 6)
    } else {
        if f.is_infinite() {
            return if f > 0.0 {
                "Infinity".into()
            } else {
                "-Infinity".into()
            };
        }
        if f == 0.0 {
            return if f.is_sign_negative() {
                "-0".into()
            } else {
                "0".into()
            };
        }
        let a = f.abs();
        let (d, x) = ryu_digits(
            Binary::of_f64(a),
            |n| format!("{:.*e}", n - 1, a),
            |t| t.parse::<f64>() == Ok(a),
            sig_digits(&format!("{a:e}")),
            17,
        );
        (f < 0.0, d, x, 15)
    };
    layout(neg, &digits, exp, fixed_below)
}

/// Number of significant digits in Rust's `LowerExp` output ("1.25e3" → 3).
fn sig_digits(e: &str) -> usize {
    let mant = e.split('e').next().unwrap_or(e);
    mant.bytes().filter(u8::is_ascii_digit).count().max(1)
}

/// Lays out significant `digits` with decimal exponent `exp` (of the first
/// digit) the way PostgreSQL's Ryu output does (`to_chars`): fixed
/// notation when `-4 <= exp < fixed_below`, else `d.ddde±XX`.
fn layout(neg: bool, digits: &str, exp: i32, fixed_below: i32) -> String {
    let mut out = String::with_capacity(digits.len() + 8);
    if neg {
        out.push('-');
    }
    let n = digits.len() as i32;
    if (-4..fixed_below).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(digits);
        } else if exp + 1 >= n {
            out.push_str(digits);
            out.extend(std::iter::repeat_n('0', (exp + 1 - n) as usize));
        } else {
            let split = (exp + 1) as usize;
            out.push_str(&digits[..split]);
            out.push('.');
            out.push_str(&digits[split..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.unsigned_abs()));
    }
    out
}

/// PostgreSQL `float8in` accepting syntax: surrounding whitespace, an
/// optional sign, decimal digits with optional point and exponent, or
/// `NaN`/`Infinity`/`inf` (case-insensitive, optionally signed). `None`
/// for bad syntax and for values PostgreSQL rejects as out of range
/// (overflow to infinity, or underflow of a non-zero input to zero).
/// Hexadecimal floats (accepted by glibc `strtod`) are not supported.
pub fn parse_float(s: &str) -> Option<f64> {
    parse_float8(s).ok()
}

/// Trims PostgreSQL whitespace and checks the float syntax Rust and
/// `strtod` agree on; returns the trimmed text and whether its mantissa
/// has a non-zero digit (for the underflow check).
fn float_syntax(s: &str) -> Option<(&str, bool)> {
    let t = s.trim_matches(|c: char| c.is_ascii() && is_pg_space(c as u8));
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    let lower = body.to_ascii_lowercase();
    if matches!(lower.as_str(), "nan" | "inf" | "infinity") {
        return Some((t, false));
    }
    let mant_end = body.find(['e', 'E']).unwrap_or(body.len());
    let (mant, exp) = body.split_at(mant_end);
    let mut digits = 0;
    let mut nonzero = false;
    let mut points = 0;
    for c in mant.chars() {
        match c {
            '0' => digits += 1,
            '1'..='9' => {
                digits += 1;
                nonzero = true
            }
            '.' => points += 1,
            _ => return None,
        }
    }
    if digits == 0 || points > 1 {
        return None;
    }
    if !exp.is_empty() {
        let e = &exp[1..];
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    Some((t, nonzero))
}

/// `float8in` with PostgreSQL's errors: bad syntax → `Malformed("invalid
/// input syntax for type double precision: \"…\"")`, overflow/underflow →
/// `OutOfRange("\"…\" is out of range for type double precision")`.
pub(crate) fn parse_float8(s: &str) -> Result<f64, ValueError> {
    let syntax = || {
        ValueError::Malformed(format!(
            "invalid input syntax for type double precision: \"{s}\""
        ))
    };
    let range =
        || ValueError::OutOfRange(format!("\"{s}\" is out of range for type double precision"));
    let (t, nonzero) = float_syntax(s).ok_or_else(syntax)?;
    let v: f64 = t.parse().map_err(|_| syntax())?;
    let literal_special = t
        .bytes()
        .any(|b| b.is_ascii_alphabetic() && !matches!(b, b'e' | b'E'));
    if (v.is_infinite() && !literal_special) || (v == 0.0 && nonzero) {
        return Err(range());
    }
    Ok(v)
}

/// `float4in` with PostgreSQL's errors (type name "real"); the result is
/// the correctly rounded `f32`, returned widened to `f64`.
pub(crate) fn parse_float4(s: &str) -> Result<f64, ValueError> {
    let syntax = || ValueError::Malformed(format!("invalid input syntax for type real: \"{s}\""));
    let range = || ValueError::OutOfRange(format!("\"{s}\" is out of range for type real"));
    let (t, nonzero) = float_syntax(s).ok_or_else(syntax)?;
    let v: f32 = t.parse().map_err(|_| syntax())?;
    let literal_special = t
        .bytes()
        .any(|b| b.is_ascii_alphabetic() && !matches!(b, b'e' | b'E'));
    if (v.is_infinite() && !literal_special) || (v == 0.0 && nonzero) {
        return Err(range());
    }
    Ok(f64::from(v))
}

/// PostgreSQL's float ordering (`float8_cmp_internal`): NaN equals NaN and
/// is greater than every other value including +Infinity; -0 equals 0.
pub fn cmp_float(a: f64, b: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_examples() {
        let f8 = |f: f64| float_text(f, oid::FLOAT8);
        assert_eq!(f8(1e20), "1e+20");
        assert_eq!(f8(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(f8(1e-5), "1e-05");
        assert_eq!(f8(123456789012345680.0), "1.2345678901234568e+17");
        assert_eq!(f8(1e15), "1e+15");
        assert_eq!(f8(1e14), "100000000000000");
        assert_eq!(f8(0.0001), "0.0001");
        assert_eq!(f8(0.00001234), "1.234e-05");
        assert_eq!(f8(-0.0), "-0");
        assert_eq!(f8(0.0), "0");
        assert_eq!(f8(f64::NAN), "NaN");
        assert_eq!(f8(f64::INFINITY), "Infinity");
        assert_eq!(f8(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(f8(5e-324), "5e-324");
        assert_eq!(f8(1.5), "1.5");
        assert_eq!(f8(100.0), "100");
        let f4 = |f: f64| float_text(f, oid::FLOAT4);
        assert_eq!(f4(f64::from(1.1f32)), "1.1");
        assert_eq!(f4(1234567.0), "1.234567e+06");
        assert_eq!(f4(123456.0), "123456");
        assert_eq!(f4(f64::from(3.4028235e38f32)), "3.4028235e+38");
        assert_eq!(f4(f64::from(1e-45f32)), "1e-45");
        // a tie between two shortest candidates goes to the even digit (Ryu)
        assert_eq!(f4(f64::from(f32::from_bits(0x4a67e0ed))), "3.7990992e+06");
        // a candidate exactly half-way to the next float is not accepted
        assert_eq!(f4(f64::from(f32::from_bits(0x4cfc9868))), "1.32432704e+08");
        assert_eq!(
            f8(f64::from_bits(0x4392a0cd9af0b46a)),
            "3.3557468857585523e+17"
        );
        assert_eq!(
            float_text(f64::from(0.1f32), oid::FLOAT8),
            "0.10000000149011612"
        );
    }

    #[test]
    fn input() {
        assert_eq!(parse_float(" 1.5 "), Some(1.5));
        assert_eq!(parse_float("-1e5"), Some(-1e5));
        assert_eq!(parse_float(".5"), Some(0.5));
        assert_eq!(parse_float("5."), Some(5.0));
        assert_eq!(parse_float("1E+2"), Some(100.0));
        assert_eq!(parse_float("Infinity"), Some(f64::INFINITY));
        assert_eq!(parse_float("-inf"), Some(f64::NEG_INFINITY));
        assert!(parse_float("NaN").is_some_and(f64::is_nan));
        assert_eq!(parse_float("1e-310"), Some(1e-310));
        assert_eq!(parse_float("0e-999"), Some(0.0));
        assert_eq!(parse_float("1e400"), None);
        assert_eq!(parse_float("1e-400"), None);
        for bad in [
            "",
            " ",
            "abc",
            "1.2.3",
            "1e",
            "e1",
            "1 2",
            "--1",
            "0x10",
            "infinityx",
            ".",
        ] {
            assert_eq!(parse_float(bad), None, "{bad}");
        }
        assert_eq!(parse_float8("1e400").unwrap_err().sqlstate(), "22003");
        assert_eq!(parse_float8("x").unwrap_err().sqlstate(), "22P02");
        assert_eq!(parse_float4("1e39").unwrap_err().sqlstate(), "22003");
        assert_eq!(parse_float4("1.1"), Ok(f64::from(1.1f32)));
    }

    #[test]
    fn ordering() {
        use std::cmp::Ordering::*;
        assert_eq!(cmp_float(f64::NAN, f64::INFINITY), Greater);
        assert_eq!(cmp_float(f64::NAN, f64::NAN), Equal);
        assert_eq!(cmp_float(-0.0, 0.0), Equal);
        assert_eq!(cmp_float(f64::NEG_INFINITY, -1e308), Less);
    }
}
