//! Shortest decimal digits of a float exactly as PostgreSQL's Ryu
//! (`src/common/d2s.c`, `f2s.c`, used by `float8out`/`float4out` since
//! PostgreSQL 12) chooses them. PostgreSQL builds Ryu without
//! `STRICTLY_SHORTEST`, so a decimal lying exactly on the half-way point to
//! a neighbouring float is never accepted (Rust's shortest formatting does
//! accept it for even mantissas); among the shortest candidates strictly
//! inside the rounding interval the one closest to the exact value wins,
//! ties to the even digit.
//!
//! The search uses Rust's correctly rounded `{:.Ne}` formatting for the
//! closest N-digit candidate and exact big-integer arithmetic to test the
//! interval only where the fast checks cannot decide.

use std::cmp::Ordering;

use num_bigint::BigUint;

use super::numeric::pow10;

/// A positive finite float as `m · 2^e`; `lower_closer` when the gap to
/// the next smaller float is half the gap to the next larger one (the
/// mantissa field is 0 and the exponent field above 1).
#[derive(Clone, Copy)]
pub(crate) struct Binary {
    m: u64,
    e: i32,
    lower_closer: bool,
}

impl Binary {
    /// Decomposes a positive finite non-zero `f64`.
    pub(crate) fn of_f64(f: f64) -> Binary {
        let bits = f.to_bits();
        let frac = bits & ((1 << 52) - 1);
        let exp = ((bits >> 52) & 0x7ff) as i32;
        if exp == 0 {
            Binary {
                m: frac,
                e: -1074,
                lower_closer: false,
            }
        } else {
            Binary {
                m: frac | (1 << 52),
                e: exp - 1075,
                lower_closer: frac == 0 && exp > 1,
            }
        }
    }

    /// Decomposes a positive finite non-zero `f32`.
    pub(crate) fn of_f32(g: f32) -> Binary {
        let bits = g.to_bits();
        let frac = u64::from(bits & ((1 << 23) - 1));
        let exp = ((bits >> 23) & 0xff) as i32;
        if exp == 0 {
            Binary {
                m: frac,
                e: -149,
                lower_closer: false,
            }
        } else {
            Binary {
                m: frac | (1 << 23),
                e: exp - 150,
                lower_closer: frac == 0 && exp > 1,
            }
        }
    }
}

/// Exact comparison of `d · 10^k` with `x · 2^e`.
fn cmp_dec_bin(d: u64, k: i32, x: u64, e: i32) -> Ordering {
    let mut l = BigUint::from(d);
    let mut r = BigUint::from(x);
    if k >= 0 {
        l *= pow10(k.unsigned_abs());
    } else {
        r *= pow10(k.unsigned_abs());
    }
    if e >= 0 {
        r <<= e.unsigned_abs();
    } else {
        l <<= e.unsigned_abs();
    }
    l.cmp(&r)
}

/// Parses Rust `LowerExp` output of a positive value ("1.25e-3") into
/// `(digits as integer, digit count, decimal exponent of the first digit)`.
fn parse_exp(s: &str) -> Option<(u64, usize, i32)> {
    let (mant, exp) = s.split_once('e')?;
    let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    Some((digits.parse().ok()?, digits.len(), exp.parse().ok()?))
}

/// Where `d · 10^k` lies against the open rounding interval of `b`.
enum Fit {
    Inside,
    /// Outside (or on the edge), below the exact value.
    Below,
    /// Outside (or on the edge), above the exact value.
    Above,
}

fn fit(b: Binary, d: u64, k: i32) -> Fit {
    let e = b.e - 2;
    let v = b.m * 4;
    let lo = if b.lower_closer { v - 1 } else { v - 2 };
    let hi = v + 2;
    if cmp_dec_bin(d, k, lo, e) != Ordering::Greater {
        Fit::Below
    } else if cmp_dec_bin(d, k, hi, e) != Ordering::Less {
        Fit::Above
    } else {
        Fit::Inside
    }
}

/// True when `d · 10^k` cannot be a dyadic rational with an odd numerator
/// at `2^(e-2)` or coarser, i.e. cannot sit exactly on a rounding
/// boundary: it has a factor 5^-k in its denominator that `d` does not
/// cancel.
fn surely_not_on_boundary(d: u64, k: i32) -> bool {
    if k >= 0 {
        return false;
    }
    let neg = k.unsigned_abs();
    if neg > 27 {
        return d != 0;
    }
    d % 5u64.pow(neg) != 0
}

/// The digits PostgreSQL prints for the positive finite float `b`
/// (trailing zeros removed) and the decimal exponent of the first digit.
///
/// `closest(n)` is Rust's `{:.(n-1)e}` of the value (closest n-digit
/// decimal, ties to even); `parses_back(s)` tells whether `s` reads back as
/// the same float; `n0` is Rust's shortest length (never longer than
/// Ryu's), `max_n` the digit count that always round-trips (17 or 9).
pub(crate) fn ryu_digits(
    b: Binary,
    closest: impl Fn(usize) -> String,
    parses_back: impl Fn(&str) -> bool,
    n0: usize,
    max_n: usize,
) -> (String, i32) {
    let mut last = (String::from("0"), 0);
    for n in n0.max(1)..=max_n {
        let s = closest(n);
        let Some((d, len, x)) = parse_exp(&s) else {
            break;
        };
        let k = x - (len as i32 - 1);
        if parses_back(&s) && surely_not_on_boundary(d, k) {
            return trimmed(d, k);
        }
        match fit(b, d, k) {
            Fit::Inside => return trimmed(d, k),
            Fit::Below => {
                if matches!(fit(b, d + 1, k), Fit::Inside) {
                    return trimmed(d + 1, k);
                }
            }
            Fit::Above => {
                if d > 0 && matches!(fit(b, d - 1, k), Fit::Inside) {
                    return trimmed(d - 1, k);
                }
            }
        }
        last = trimmed(d, k);
    }
    last
}

/// `d · 10^k` as (digits without trailing zeros, exponent of first digit).
fn trimmed(d: u64, k: i32) -> (String, i32) {
    let s = d.to_string();
    let x = k + s.len() as i32 - 1;
    let t = s.trim_end_matches('0');
    (if t.is_empty() { "0".into() } else { t.into() }, x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f64_digits(f: f64) -> (String, i32) {
        let n0 = format!("{f:e}")
            .split('e')
            .next()
            .map_or(1, |m| m.bytes().filter(u8::is_ascii_digit).count());
        ryu_digits(
            Binary::of_f64(f),
            |n| format!("{:.*e}", n - 1, f),
            |s| s.parse::<f64>() == Ok(f),
            n0,
            17,
        )
    }

    fn f32_digits(g: f32) -> (String, i32) {
        let n0 = format!("{g:e}")
            .split('e')
            .next()
            .map_or(1, |m| m.bytes().filter(u8::is_ascii_digit).count());
        ryu_digits(
            Binary::of_f32(g),
            |n| format!("{:.*e}", n - 1, g),
            |s| s.parse::<f32>() == Ok(g),
            n0,
            9,
        )
    }

    #[test]
    fn boundary_candidates_are_rejected() {
        // 132432704 = 0x4cfc9868: 1.324327e8 is exactly half-way to the next float
        assert_eq!(
            f32_digits(f32::from_bits(0x4cfc9868)),
            ("132432704".into(), 8)
        );
        assert_eq!(
            f64_digits(f64::from_bits(0x4355c4498d0552a4)),
            ("24507178754067088".into(), 16)
        );
        // tie between two shortest candidates → even digit
        assert_eq!(
            f32_digits(f32::from_bits(0x4a67e0ed)),
            ("37990992".into(), 6)
        );
    }

    #[test]
    fn ordinary_values() {
        assert_eq!(f64_digits(0.1), ("1".into(), -1));
        assert_eq!(f64_digits(0.1 + 0.2), ("30000000000000004".into(), -1));
        assert_eq!(f64_digits(1e20), ("1".into(), 20));
        assert_eq!(f64_digits(5e-324), ("5".into(), -324));
        assert_eq!(f64_digits(f64::MAX), ("17976931348623157".into(), 308));
        assert_eq!(f32_digits(1.1), ("11".into(), 0));
        assert_eq!(f32_digits(f32::MIN_POSITIVE), ("11754944".into(), -38));
    }
}
