//! PostgreSQL `numeric`: an exact decimal with a display scale, plus the
//! special values NaN and ±Infinity (PostgreSQL docs §8.1.2 "Arbitrary
//! Precision Numbers"; text forms of PostgreSQL
//! `src/backend/utils/adt/numeric.c` `numeric_in`/`numeric_out`).
//!
//! Arithmetic lives in `numeric_ops.rs`, the binary wire format in
//! `numeric_wire.rs`.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use num_bigint::{BigInt, BigUint, Sign};
use num_traits::{Signed, ToPrimitive, Zero};

use super::ValueError;

/// Largest display scale a computed result may get (PostgreSQL
/// `NUMERIC_MAX_DISPLAY_SCALE`, numeric.h).
pub(crate) const MAX_DISPLAY_SCALE: u32 = 1000;
/// Largest display scale the storage format holds (`NUMERIC_DSCALE_MAX`).
pub(crate) const DSCALE_MAX: u32 = 0x3FFF;
/// Largest base-10000 weight the storage format holds (`NUMERIC_WEIGHT_MAX`).
pub(crate) const WEIGHT_MAX: i64 = 32767;
/// Exponents at or beyond this magnitude are rejected by `numeric_in`
/// before anything else (`INT_MAX / 2`).
const EXPONENT_LIMIT: i64 = (i32::MAX / 2) as i64;

/// A PostgreSQL `numeric` value.
///
/// `Finite` is `unscaled / 10^scale`, where `scale` is PostgreSQL's display
/// scale (dscale): "12.50" is `unscaled = 1250, scale = 2`. Zero is never
/// negative. Equality and hashing are by value (`1.0 == 1.00`), NaN equals
/// NaN; ordering ([`Numeric::cmp_pg`]) is PostgreSQL's: -Infinity < finite
/// values < Infinity < NaN.
#[derive(Debug, Clone)]
pub enum Numeric {
    /// `NaN` (greatest in the sort order, equal to itself).
    NaN,
    /// `Infinity`.
    PosInf,
    /// `-Infinity`.
    NegInf,
    /// A finite value `unscaled / 10^scale` with display scale `scale`.
    Finite {
        /// The value times `10^scale`.
        unscaled: BigInt,
        /// Display scale: the number of digits printed after the point.
        scale: u32,
    },
}

/// `10^n` as a big unsigned integer.
pub(crate) fn pow10(n: u32) -> BigUint {
    BigUint::from(10u32).pow(n)
}

/// PostgreSQL's `isspace` set (C locale): space, \t, \n, \v, \f, \r.
pub(crate) fn is_pg_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn overflow() -> ValueError {
    ValueError::OutOfRange("value overflows numeric format".into())
}

/// The decimal digits of a magnitude.
fn decimal(m: &BigUint) -> String {
    m.to_str_radix(10)
}

impl Numeric {
    /// The integer `v` with display scale 0 (PostgreSQL `int64_to_numeric`).
    pub fn from_i64(v: i64) -> Numeric {
        Numeric::Finite {
            unscaled: BigInt::from(v),
            scale: 0,
        }
    }

    /// The integer `v` with display scale 0.
    pub fn from_i128(v: i128) -> Numeric {
        Numeric::Finite {
            unscaled: BigInt::from(v),
            scale: 0,
        }
    }

    /// Zero with display scale 0.
    pub fn zero() -> Numeric {
        Numeric::from_i64(0)
    }

    /// Parses PostgreSQL `numeric_in` text (PostgreSQL 15): optional
    /// leading/trailing whitespace, `NaN`, `Infinity`, `+Infinity`,
    /// `-Infinity`, `inf`, `+inf`, `-inf` (case-insensitive), or an optional
    /// sign, digits with an optional point (".5", "5." allowed) and an
    /// optional exponent `e[+-]N`. The display scale is the number of
    /// fraction digits written minus the exponent, at least 0: "1e3" is
    /// 1000 with scale 0, "1.5e-3" is 0.0015 with scale 4. Bad syntax →
    /// `Malformed` ("invalid input syntax for type numeric: \"…\"");
    /// beyond the storage format (more than 131072 integer digits, or a
    /// scale over 16383) → `OutOfRange("value overflows numeric format")`.
    pub fn parse(s: &str) -> Result<Numeric, ValueError> {
        let syntax =
            || ValueError::Malformed(format!("invalid input syntax for type numeric: \"{s}\""));
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() && is_pg_space(b[i]) {
            i += 1;
        }
        const SPECIALS: [(&[u8], Numeric); 7] = [
            (b"nan", Numeric::NaN),
            (b"infinity", Numeric::PosInf),
            (b"+infinity", Numeric::PosInf),
            (b"-infinity", Numeric::NegInf),
            (b"inf", Numeric::PosInf),
            (b"+inf", Numeric::PosInf),
            (b"-inf", Numeric::NegInf),
        ];
        for (word, val) in SPECIALS.iter() {
            let rest = &b[i..];
            if rest.len() >= word.len() && rest[..word.len()].eq_ignore_ascii_case(word) {
                if rest[word.len()..].iter().all(|&c| is_pg_space(c)) {
                    return Ok(val.clone());
                }
                return Err(syntax());
            }
        }
        let mut negative = false;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            negative = b[i] == b'-';
            i += 1;
        }
        let mut digits: Vec<u8> = Vec::new();
        let mut frac: i64 = 0;
        let mut seen_point = false;
        let mut any_digit = false;
        while i < b.len() {
            let c = b[i];
            if c.is_ascii_digit() {
                any_digit = true;
                if !(digits.is_empty() && c == b'0') {
                    digits.push(c);
                }
                if seen_point {
                    frac += 1;
                }
            } else if c == b'.' && !seen_point {
                seen_point = true;
            } else {
                break;
            }
            i += 1;
        }
        if !any_digit {
            return Err(syntax());
        }
        let mut exponent: i64 = 0;
        if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
            i += 1;
            let mut eneg = false;
            if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                eneg = b[i] == b'-';
                i += 1;
            }
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                exponent = (exponent * 10 + i64::from(b[i] - b'0')).min(EXPONENT_LIMIT);
                i += 1;
            }
            if i == start {
                return Err(syntax());
            }
            if eneg {
                exponent = -exponent;
            }
            if exponent >= EXPONENT_LIMIT || exponent <= -EXPONENT_LIMIT {
                return Err(overflow());
            }
        }
        if !b[i..].iter().all(|&c| is_pg_space(c)) {
            return Err(syntax());
        }
        // `digits` has no leading zeros; trailing fraction zeros count in `frac`.
        let dscale = (frac - exponent).max(0);
        if dscale > i64::from(DSCALE_MAX) {
            return Err(overflow());
        }
        if digits.is_empty() {
            return Ok(Numeric::Finite {
                unscaled: BigInt::zero(),
                scale: dscale as u32,
            });
        }
        let lead_exp = digits.len() as i64 - 1 + exponent - frac;
        if lead_exp.div_euclid(4) > WEIGHT_MAX {
            return Err(overflow());
        }
        let shift = (exponent - frac).max(0);
        let mag = BigUint::parse_bytes(&digits, 10).ok_or_else(syntax)? * pow10(shift as u32);
        let sign = if negative { Sign::Minus } else { Sign::Plus };
        Ok(Numeric::Finite {
            unscaled: BigInt::from_biguint(sign, mag),
            scale: dscale as u32,
        })
    }

    /// PostgreSQL `numeric_out`: `NaN`, `Infinity`, `-Infinity`, or the
    /// value with exactly `scale` fraction digits and no exponent
    /// ("0.00", "-12.50", "1000").
    pub fn to_text(&self) -> String {
        match self {
            Numeric::NaN => "NaN".into(),
            Numeric::PosInf => "Infinity".into(),
            Numeric::NegInf => "-Infinity".into(),
            Numeric::Finite { unscaled, scale } => {
                let mag = decimal(unscaled.magnitude());
                let scale = *scale as usize;
                let mut out = String::with_capacity(mag.len() + scale + 3);
                if unscaled.is_negative() {
                    out.push('-');
                }
                if mag.len() <= scale {
                    out.push('0');
                    if scale > 0 {
                        out.push('.');
                        out.extend(std::iter::repeat_n('0', scale - mag.len()));
                        out.push_str(&mag);
                    }
                } else {
                    let int_len = mag.len() - scale;
                    out.push_str(&mag[..int_len]);
                    if scale > 0 {
                        out.push('.');
                        out.push_str(&mag[int_len..]);
                    }
                }
                out
            }
        }
    }

    /// PostgreSQL's numeric ordering (`cmp_numerics`): -Infinity < finite
    /// values (compared exactly, scale ignored) < Infinity < NaN, NaN equal
    /// to NaN.
    pub fn cmp_pg(&self, o: &Numeric) -> Ordering {
        fn rank(n: &Numeric) -> u8 {
            match n {
                Numeric::NegInf => 0,
                Numeric::Finite { .. } => 1,
                Numeric::PosInf => 2,
                Numeric::NaN => 3,
            }
        }
        match (self, o) {
            (
                Numeric::Finite {
                    unscaled: a,
                    scale: sa,
                },
                Numeric::Finite {
                    unscaled: b,
                    scale: sb,
                },
            ) => cmp_scaled(a, *sa, b, *sb),
            _ => rank(self).cmp(&rank(o)),
        }
    }

    /// True for NaN.
    pub fn is_nan(&self) -> bool {
        matches!(self, Numeric::NaN)
    }

    /// True for a finite zero of any scale.
    pub fn is_zero(&self) -> bool {
        matches!(self, Numeric::Finite { unscaled, .. } if unscaled.is_zero())
    }

    /// The display scale (0 for NaN and the infinities).
    pub fn scale(&self) -> u32 {
        match self {
            Numeric::Finite { scale, .. } => *scale,
            _ => 0,
        }
    }

    /// The value with trailing fraction zeros removed (`unscaled`, `scale`),
    /// the canonical form used for hashing. `None` for NaN and infinities.
    pub fn normalized(&self) -> Option<(BigInt, u32)> {
        let Numeric::Finite { unscaled, scale } = self else {
            return None;
        };
        if unscaled.is_zero() {
            return Some((BigInt::zero(), 0));
        }
        let mut u = unscaled.clone();
        let mut s = *scale;
        let ten = BigInt::from(10u32);
        while s > 0 {
            let (q, r) = (&u / &ten, &u % &ten);
            if !r.is_zero() {
                break;
            }
            u = q;
            s -= 1;
        }
        Some((u, s))
    }

    /// Base-10000 weight of the first non-zero digit and that digit
    /// (PostgreSQL's NumericVar `weight` and `digits[0]` after stripping);
    /// `(0, 0)` for zero. NaN/infinities give `(0, 0)` too.
    pub(crate) fn weight_and_first_digit(&self) -> (i64, u32) {
        let Numeric::Finite { unscaled, scale } = self else {
            return (0, 0);
        };
        if unscaled.is_zero() {
            return (0, 0);
        }
        let dec = decimal(unscaled.magnitude());
        let p = dec.len() as i64 - 1 - i64::from(*scale);
        let w = p.div_euclid(4);
        let lead = (p - 4 * w + 1) as usize; // 1..=4 decimal digits in the first group
        let mut first: u32 = 0;
        for k in 0..lead {
            let d = dec.as_bytes().get(k).map_or(0, |c| u32::from(c - b'0'));
            first = first * 10 + d;
        }
        (w, first)
    }

    /// Checks the value fits PostgreSQL's storage format (`make_result`):
    /// base-10000 weight ≤ 32767 and display scale ≤ 16383, else
    /// `OutOfRange("value overflows numeric format")`.
    pub fn check_format(&self) -> Result<(), ValueError> {
        if let Numeric::Finite { scale, .. } = self {
            if *scale > DSCALE_MAX {
                return Err(overflow());
            }
            let (w, _) = self.weight_and_first_digit();
            if w > WEIGHT_MAX {
                return Err(overflow());
            }
        }
        Ok(())
    }

    /// PostgreSQL `numeric_float8`: the nearest `f64` (correctly rounded,
    /// as `strtod` of the text form); NaN and ±Infinity map to the float
    /// specials; a finite value beyond `f64` → `OutOfRange`.
    pub fn to_f64_pg(&self) -> Result<f64, ValueError> {
        let f = self.to_f64_lossy();
        if f.is_infinite() && matches!(self, Numeric::Finite { .. }) {
            return Err(ValueError::OutOfRange(format!(
                "\"{}\" is out of range for type double precision",
                self.to_text()
            )));
        }
        Ok(f)
    }

    /// PostgreSQL `numeric_float4`: the nearest `f32` of the text form
    /// (correctly rounded, as `strtof`; no double rounding through `f64`),
    /// returned widened to `f64`; NaN/±Infinity map to the float specials;
    /// overflow, or a non-zero value underflowing to 0, → `OutOfRange("\"…\"
    /// is out of range for type real")`.
    pub fn to_f32_pg(&self) -> Result<f64, ValueError> {
        let Numeric::Finite { unscaled, .. } = self else {
            return Ok(self.to_f64_lossy());
        };
        let text = self.to_text();
        let g: f32 = text.parse().unwrap_or(f32::INFINITY);
        if g.is_infinite() || (g == 0.0 && !unscaled.is_zero()) {
            return Err(ValueError::OutOfRange(format!(
                "\"{text}\" is out of range for type real"
            )));
        }
        Ok(f64::from(g))
    }

    /// Like [`Numeric::to_f64_pg`] but a finite value beyond `f64` becomes
    /// ±infinity (used for cross-type comparisons with floats).
    pub fn to_f64_lossy(&self) -> f64 {
        match self {
            Numeric::NaN => f64::NAN,
            Numeric::PosInf => f64::INFINITY,
            Numeric::NegInf => f64::NEG_INFINITY,
            Numeric::Finite { unscaled, .. } => match self.to_text().parse::<f64>() {
                Ok(f) => f,
                Err(_) if unscaled.is_negative() => f64::NEG_INFINITY,
                Err(_) => f64::INFINITY,
            },
        }
    }

    /// PostgreSQL `float8_numeric`: NaN/±Infinity map to the numeric
    /// specials; a finite value is first printed with 15 significant
    /// digits (`%.15g`, DBL_DIG) and that text parsed, so 0.1 → "0.1".
    pub fn from_f64_pg(f: f64) -> Numeric {
        float_numeric(f, format!("{:.14e}", f))
    }

    /// PostgreSQL `float4_numeric`: like [`Numeric::from_f64_pg`] with 6
    /// significant digits (`%.6g`, FLT_DIG).
    pub fn from_f32_pg(f: f32) -> Numeric {
        float_numeric(f as f64, format!("{:.5e}", f))
    }

    /// PostgreSQL `numeric_int8`/`numeric_int4`/`numeric_int2`: rounds half
    /// away from zero to an integer and range-checks it against
    /// `[min, max]`. `type_name` is "bigint", "integer" or "smallint";
    /// errors: "cannot convert NaN to bigint" / "cannot convert infinity to
    /// bigint" (`NotSupported`), "bigint out of range" (`OutOfRange`).
    pub fn to_int_pg(&self, min: i64, max: i64, type_name: &str) -> Result<i64, ValueError> {
        let (unscaled, scale) = match self {
            Numeric::NaN => {
                return Err(ValueError::NotSupported(format!(
                    "cannot convert NaN to {type_name}"
                )))
            }
            Numeric::PosInf | Numeric::NegInf => {
                return Err(ValueError::NotSupported(format!(
                    "cannot convert infinity to {type_name}"
                )))
            }
            Numeric::Finite { unscaled, scale } => (unscaled, *scale),
        };
        let rounded = round_half_away(unscaled, &BigInt::from(pow10(scale)));
        match rounded.to_i64() {
            Some(v) if v >= min && v <= max => Ok(v),
            _ => Err(ValueError::OutOfRange(format!("{type_name} out of range"))),
        }
    }
}

/// `num / den` rounded half away from zero (`den` ≠ 0).
pub(crate) fn round_half_away(num: &BigInt, den: &BigInt) -> BigInt {
    let (q, r) = (num / den, num % den);
    if r.is_zero() {
        return q;
    }
    let twice = r.magnitude() * 2u32;
    if &twice >= den.magnitude() {
        let negative = num.is_negative() != den.is_negative();
        if negative {
            q - 1
        } else {
            q + 1
        }
    } else {
        q
    }
}

/// Parses Rust's `{:.Ne}` output ("1.50000000000000e-1") the way
/// PostgreSQL parses `%g` output: trailing mantissa zeros are dropped
/// before the display scale is derived.
fn from_sig_digits(s: &str) -> Numeric {
    let (mant, exp) = s.split_once('e').unwrap_or((s, "0"));
    let mant = if mant.contains('.') {
        mant.trim_end_matches('0').trim_end_matches('.')
    } else {
        mant
    };
    Numeric::parse(&format!("{mant}e{exp}")).unwrap_or(Numeric::NaN)
}

/// Exact comparison of `a / 10^sa` with `b / 10^sb`.
pub(crate) fn cmp_scaled(a: &BigInt, sa: u32, b: &BigInt, sb: u32) -> Ordering {
    let sign_rank = |x: &BigInt| match x.sign() {
        Sign::Minus => -1i8,
        Sign::NoSign => 0,
        Sign::Plus => 1,
    };
    let (ra, rb) = (sign_rank(a), sign_rank(b));
    if ra != rb || ra == 0 {
        return ra.cmp(&rb);
    }
    match sa.cmp(&sb) {
        Ordering::Equal => a.cmp(b),
        Ordering::Less => (a * BigInt::from(pow10(sb - sa))).cmp(b),
        Ordering::Greater => a.cmp(&(b * BigInt::from(pow10(sa - sb)))),
    }
}

/// Hashes an integer the way a `Numeric` with that integral value hashes,
/// so `Value::Int` and `Value::Numeric` share one hash domain.
pub(crate) fn hash_integer<H: Hasher>(v: i64, state: &mut H) {
    state.write_u8(3);
    state.write_i64(v);
}

impl PartialEq for Numeric {
    fn eq(&self, other: &Numeric) -> bool {
        self.cmp_pg(other) == Ordering::Equal
    }
}

impl Eq for Numeric {}

impl Hash for Numeric {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Numeric::NaN => state.write_u8(0),
            Numeric::PosInf => state.write_u8(1),
            Numeric::NegInf => state.write_u8(2),
            Numeric::Finite { .. } => {
                if let Some((u, s)) = self.normalized() {
                    if s == 0 {
                        if let Some(v) = u.to_i64() {
                            hash_integer(v, state);
                            return;
                        }
                    }
                    state.write_u8(4);
                    u.hash(state);
                    state.write_u32(s);
                }
            }
        }
    }
}

impl fmt::Display for Numeric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl FromStr for Numeric {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Numeric, ValueError> {
        Numeric::parse(s)
    }
}

impl From<i64> for Numeric {
    fn from(v: i64) -> Numeric {
        Numeric::from_i64(v)
    }
}

/// NaN/±Infinity as the numeric specials, else the finite value printed
/// with its type's significant digits (`digits`, `%e` form) and parsed.
fn float_numeric(f: f64, digits: String) -> Numeric {
    if f.is_nan() {
        Numeric::NaN
    } else if f.is_infinite() {
        if f > 0.0 {
            Numeric::PosInf
        } else {
            Numeric::NegInf
        }
    } else {
        from_sig_digits(&digits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn n(s: &str) -> Numeric {
        Numeric::parse(s).expect(s)
    }

    fn fin(n: &Numeric) -> (String, u32) {
        match n {
            Numeric::Finite { unscaled, scale } => (unscaled.to_string(), *scale),
            other => panic!("not finite: {other:?}"),
        }
    }

    #[test]
    fn parse_forms() {
        assert_eq!(fin(&n("12.50")), ("1250".into(), 2));
        assert_eq!(fin(&n("1e3")), ("1000".into(), 0));
        assert_eq!(fin(&n("1.5e-3")), ("15".into(), 4));
        assert_eq!(fin(&n(" +.5 ")), ("5".into(), 1));
        assert_eq!(fin(&n("5.")), ("5".into(), 0));
        assert_eq!(fin(&n("-0.000")), ("0".into(), 3));
        assert_eq!(fin(&n("1.50e1")), ("150".into(), 1));
        assert_eq!(fin(&n("00012.3400")), ("123400".into(), 4));
        assert_eq!(fin(&n("0e200000")), ("0".into(), 0));
        assert_eq!(fin(&n("9e-3")), ("9".into(), 3));
        assert_eq!(fin(&n("\t-7\n")), ("-7".into(), 0));
        assert!(n("NaN").is_nan());
        assert!(matches!(n(" -inf "), Numeric::NegInf));
        assert!(matches!(n("INFINITY"), Numeric::PosInf));
        assert!(matches!(n("+Infinity"), Numeric::PosInf));
        assert!(matches!(n("inf"), Numeric::PosInf));
    }

    #[test]
    fn parse_errors_like_postgres() {
        for bad in [
            "",
            " ",
            "1 2",
            ".",
            "e5",
            "1e",
            "1e+",
            "- 1",
            "+-1",
            "Infinityx",
            "+NaN",
            "1_000",
            "0x10",
            "1..2",
            "abc",
        ] {
            match Numeric::parse(bad) {
                Err(e @ ValueError::Malformed(_)) => assert_eq!(e.sqlstate(), "22P02", "{bad}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        for big in [
            "1e131072",
            "1e-16384",
            "1e2000000000",
            "0e-20000",
            "1.5e-16383",
            "1e99999999999999999999",
        ] {
            assert_eq!(
                Numeric::parse(big).unwrap_err(),
                ValueError::OutOfRange("value overflows numeric format".into()),
                "{big}"
            );
        }
        assert!(Numeric::parse("1e131071").is_ok());
        assert!(Numeric::parse("1e-16383").is_ok());
    }

    #[test]
    fn text_output() {
        for (i, o) in [
            ("12.50", "12.50"),
            ("-0.000", "0.000"),
            ("0.0015", "0.0015"),
            ("1e5", "100000"),
            ("-123456789.000012345", "-123456789.000012345"),
            ("0", "0"),
            ("-0.5", "-0.5"),
            ("NaN", "NaN"),
            ("inf", "Infinity"),
            ("-inf", "-Infinity"),
        ] {
            assert_eq!(n(i).to_text(), o, "{i}");
        }
        assert_eq!(
            Numeric::from_i64(i64::MIN).to_text(),
            "-9223372036854775808"
        );
    }

    #[test]
    fn ordering_and_equality() {
        assert_eq!(n("1.0").cmp_pg(&n("1.00")), Ordering::Equal);
        assert_eq!(n("1.0"), n("1"));
        assert_eq!(n("-1").cmp_pg(&n("0.5")), Ordering::Less);
        assert_eq!(n("0.00").cmp_pg(&n("-0.001")), Ordering::Greater);
        assert_eq!(n("NaN").cmp_pg(&n("Infinity")), Ordering::Greater);
        assert_eq!(n("NaN").cmp_pg(&n("NaN")), Ordering::Equal);
        assert_eq!(n("Infinity").cmp_pg(&n("1e100000")), Ordering::Greater);
        assert_eq!(n("-Infinity").cmp_pg(&n("-1e100000")), Ordering::Less);
        assert_eq!(n("12.345").cmp_pg(&n("12.3449999")), Ordering::Greater);
        let h = |x: &Numeric| {
            let mut s = DefaultHasher::new();
            x.hash(&mut s);
            s.finish()
        };
        assert_eq!(h(&n("1.0")), h(&n("1.000")));
        assert_eq!(h(&n("0.00")), h(&n("0")));
        assert_eq!(h(&n("12.50")), h(&n("12.5")));
        assert_ne!(h(&n("12.5")), h(&n("1.25")));
    }

    #[test]
    fn weights() {
        assert_eq!(n("0.5").weight_and_first_digit(), (-1, 5000));
        assert_eq!(n("12345").weight_and_first_digit(), (1, 1));
        assert_eq!(n("9999").weight_and_first_digit(), (0, 9999));
        assert_eq!(n("0.0001").weight_and_first_digit(), (-1, 1));
        assert_eq!(n("1e-20").weight_and_first_digit(), (-5, 1));
        assert_eq!(n("100000000").weight_and_first_digit(), (2, 1));
        assert_eq!(n("0").weight_and_first_digit(), (0, 0));
    }

    #[test]
    fn conversions() {
        assert_eq!(Numeric::from_f64_pg(0.1).to_text(), "0.1");
        assert_eq!(
            Numeric::from_f64_pg(1e20).to_text(),
            "100000000000000000000"
        );
        assert_eq!(Numeric::from_f64_pg(1e-5).to_text(), "0.00001");
        assert_eq!(Numeric::from_f64_pg(2.5).to_text(), "2.5");
        assert_eq!(Numeric::from_f64_pg(-0.0).to_text(), "0");
        assert_eq!(
            Numeric::from_f64_pg(1.0 / 3.0).to_text(),
            "0.333333333333333"
        );
        assert_eq!(Numeric::from_f32_pg(1.1).to_text(), "1.1");
        // PostgreSQL 15: 123456789012345678::float8::numeric, 16777217::float4::numeric
        assert_eq!(
            Numeric::from_f64_pg(123456789012345678.0).to_text(),
            "123456789012346000"
        );
        assert_eq!(Numeric::from_f32_pg(16777217.0).to_text(), "16777200");
        assert_eq!(
            Numeric::from_f32_pg(1e-20).to_text(),
            "0.00000000000000000001"
        );
        assert_eq!(
            n("12345678901234567890123").to_f64_pg(),
            Ok(1.2345678901234568e22)
        );
        // 1.00000005960464477539062 is half-way between two f32: f64 first would round twice
        assert_eq!(
            n("1.000000059604644775390625000001").to_f32_pg(),
            Ok(f64::from(1.0000001f32))
        );
        assert!(n("1e39").to_f32_pg().is_err());
        assert!(n("1e-50").to_f32_pg().is_err());
        assert!(Numeric::from_f64_pg(f64::NAN).is_nan());
        assert_eq!(n("2.5").to_int_pg(i64::MIN, i64::MAX, "bigint"), Ok(3));
        assert_eq!(n("-2.5").to_int_pg(i64::MIN, i64::MAX, "bigint"), Ok(-3));
        assert_eq!(n("-2.49").to_int_pg(i64::MIN, i64::MAX, "bigint"), Ok(-2));
        assert_eq!(
            n("32767.5").to_int_pg(-32768, 32767, "smallint"),
            Err(ValueError::OutOfRange("smallint out of range".into()))
        );
        assert_eq!(
            n("NaN")
                .to_int_pg(-32768, 32767, "smallint")
                .unwrap_err()
                .sqlstate(),
            "0A000"
        );
        assert_eq!(n("0.1").to_f64_pg(), Ok(0.1));
        assert!(n("1e400").to_f64_pg().is_err());
    }
}
