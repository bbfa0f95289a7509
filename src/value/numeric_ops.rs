//! `numeric` arithmetic with PostgreSQL's result scales and special-value
//! rules (PostgreSQL `src/backend/utils/adt/numeric.c`: `numeric_add`,
//! `numeric_sub`, `numeric_div` with `select_div_scale`; PostgreSQL 15
//! semantics for NaN and ±Infinity).

use num_bigint::BigInt;
use num_traits::{Signed, Zero};

use super::numeric::{pow10, round_half_away, Numeric, MAX_DISPLAY_SCALE};
use super::ValueError;

/// Minimum number of significant digits a quotient gets
/// (`NUMERIC_MIN_SIG_DIGITS`).
const MIN_SIG_DIGITS: i64 = 16;
/// Decimal digits per base-10000 digit (`DEC_DIGITS`).
const DEC_DIGITS: i64 = 4;

/// `u / 10^from` rescaled to `10^to` (`to ≥ from`).
fn upscale(u: &BigInt, from: u32, to: u32) -> BigInt {
    if to == from {
        u.clone()
    } else {
        u * BigInt::from(pow10(to - from))
    }
}

impl Numeric {
    /// PostgreSQL `numeric_add`: result display scale = max of the
    /// operands' scales; NaN + x = NaN; Infinity + -Infinity = NaN;
    /// ±Infinity + finite = ±Infinity. (The storage-format limit is not
    /// checked here; see [`Numeric::check_format`].)
    pub fn add(&self, o: &Numeric) -> Numeric {
        match (self, o) {
            (Numeric::NaN, _) | (_, Numeric::NaN) => Numeric::NaN,
            (Numeric::PosInf, Numeric::NegInf) | (Numeric::NegInf, Numeric::PosInf) => Numeric::NaN,
            (Numeric::PosInf, _) | (_, Numeric::PosInf) => Numeric::PosInf,
            (Numeric::NegInf, _) | (_, Numeric::NegInf) => Numeric::NegInf,
            (
                Numeric::Finite {
                    unscaled: a,
                    scale: sa,
                },
                Numeric::Finite {
                    unscaled: b,
                    scale: sb,
                },
            ) => {
                let s = (*sa).max(*sb);
                Numeric::Finite {
                    unscaled: upscale(a, *sa, s) + upscale(b, *sb, s),
                    scale: s,
                }
            }
        }
    }

    /// The negation (NaN stays NaN; zero stays non-negative).
    pub fn neg(&self) -> Numeric {
        match self {
            Numeric::NaN => Numeric::NaN,
            Numeric::PosInf => Numeric::NegInf,
            Numeric::NegInf => Numeric::PosInf,
            Numeric::Finite { unscaled, scale } => Numeric::Finite {
                unscaled: -unscaled,
                scale: *scale,
            },
        }
    }

    /// PostgreSQL `numeric_sub`: `self + (-o)` with the same scale and
    /// special-value rules as [`Numeric::add`] (Infinity - Infinity = NaN).
    pub fn sub(&self, o: &Numeric) -> Numeric {
        self.add(&o.neg())
    }

    /// PostgreSQL `numeric_div` (PostgreSQL 15).
    ///
    /// Special values: NaN in either operand → NaN (so NaN / 0 = NaN);
    /// ±Infinity / ±Infinity → NaN; ±Infinity / 0 → `DivisionByZero`;
    /// ±Infinity / finite → ±Infinity by the divisor's sign; finite /
    /// ±Infinity → 0 (scale 0). Finite / 0 → `DivisionByZero`.
    ///
    /// Finite result scale (`select_div_scale`): with `w1`, `w2` the
    /// base-10000 weights and `d1`, `d2` the first base-10000 digits of the
    /// operands (0 and 0 for a zero operand), `qweight = w1 - w2 - (d1 <= d2)`
    /// and `rscale = max(16 - 4·qweight, dscale1, dscale2)` clamped to
    /// `[0, 1000]`. The quotient is rounded half away from zero to `rscale`
    /// digits (`div_var` computes the truncated quotient with extra digits
    /// and `round_var`s it, which is the exactly rounded quotient). A
    /// quotient beyond the storage format → `OutOfRange("value overflows
    /// numeric format")`.
    pub fn div_pg(&self, o: &Numeric) -> Result<Numeric, ValueError> {
        let (a, sa, b, sb) = match (self, o) {
            (Numeric::NaN, _) | (_, Numeric::NaN) => return Ok(Numeric::NaN),
            (Numeric::PosInf | Numeric::NegInf, Numeric::PosInf | Numeric::NegInf) => {
                return Ok(Numeric::NaN)
            }
            (Numeric::PosInf | Numeric::NegInf, Numeric::Finite { unscaled, .. }) => {
                if unscaled.is_zero() {
                    return Err(ValueError::DivisionByZero);
                }
                let positive = matches!(self, Numeric::PosInf) == unscaled.is_positive();
                return Ok(if positive {
                    Numeric::PosInf
                } else {
                    Numeric::NegInf
                });
            }
            (Numeric::Finite { .. }, Numeric::PosInf | Numeric::NegInf) => {
                return Ok(Numeric::zero())
            }
            (
                Numeric::Finite {
                    unscaled: a,
                    scale: sa,
                },
                Numeric::Finite {
                    unscaled: b,
                    scale: sb,
                },
            ) => (a, *sa, b, *sb),
        };
        if b.is_zero() {
            return Err(ValueError::DivisionByZero);
        }
        let rscale = select_div_scale(self, o);
        // a/10^sa ÷ b/10^sb × 10^rscale = a·10^(sb+rscale) ÷ (b·10^sa)
        let up = u64::from(sb) + u64::from(rscale);
        let (num, den) = if up >= u64::from(sa) {
            (
                a * BigInt::from(pow10((up - u64::from(sa)) as u32)),
                b.clone(),
            )
        } else {
            (
                a.clone(),
                b * BigInt::from(pow10((u64::from(sa) - up) as u32)),
            )
        };
        let q = Numeric::Finite {
            unscaled: round_half_away(&num, &den),
            scale: rscale,
        };
        q.check_format()?;
        Ok(q)
    }
}

/// PostgreSQL `select_div_scale` for two finite operands.
fn select_div_scale(x: &Numeric, y: &Numeric) -> u32 {
    let (w1, d1) = x.weight_and_first_digit();
    let (w2, d2) = y.weight_and_first_digit();
    let mut qweight = w1 - w2;
    if d1 <= d2 {
        qweight -= 1;
    }
    let rscale = (MIN_SIG_DIGITS - qweight * DEC_DIGITS)
        .max(i64::from(x.scale()))
        .max(i64::from(y.scale()))
        .max(0)
        .min(i64::from(MAX_DISPLAY_SCALE));
    rscale as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Numeric {
        Numeric::parse(s).expect(s)
    }

    fn div(x: &str, y: &str) -> String {
        n(x).div_pg(&n(y)).expect("div").to_text()
    }

    #[test]
    fn add_scales_and_specials() {
        assert_eq!(n("1.5").add(&n("2.25")).to_text(), "3.75");
        assert_eq!(n("1.50").add(&n("-1.5")).to_text(), "0.00");
        assert_eq!(n("100").add(&n("0.001")).to_text(), "100.001");
        assert!(n("NaN").add(&n("1")).is_nan());
        assert!(n("Infinity").add(&n("-Infinity")).is_nan());
        assert_eq!(n("Infinity").add(&n("-5")).to_text(), "Infinity");
        assert_eq!(n("-Infinity").add(&n("5")).to_text(), "-Infinity");
        assert_eq!(n("5").sub(&n("7.5")).to_text(), "-2.5");
        assert!(n("Infinity").sub(&n("Infinity")).is_nan());
    }

    #[test]
    fn div_specials() {
        assert!(n("NaN").div_pg(&n("0")).expect("nan").is_nan());
        assert!(n("1").div_pg(&n("NaN")).expect("nan").is_nan());
        assert!(n("Infinity").div_pg(&n("-Infinity")).expect("nan").is_nan());
        assert_eq!(div("Infinity", "-3"), "-Infinity");
        assert_eq!(div("-Infinity", "-3"), "Infinity");
        assert_eq!(div("1", "Infinity"), "0");
        assert_eq!(div("-1.25", "-Infinity"), "0");
        assert_eq!(n("1").div_pg(&n("0")), Err(ValueError::DivisionByZero));
        assert_eq!(n("0").div_pg(&n("0.00")), Err(ValueError::DivisionByZero));
        assert_eq!(
            n("Infinity").div_pg(&n("0")),
            Err(ValueError::DivisionByZero)
        );
        assert_eq!(ValueError::DivisionByZero.sqlstate(), "22012");
    }

    #[test]
    fn div_basic() {
        assert_eq!(div("7", "3"), "2.3333333333333333");
        assert_eq!(div("2", "3"), "0.66666666666666666667");
        assert_eq!(div("-5", "3"), "-1.6666666666666667");
        assert_eq!(div("15", "4"), "3.7500000000000000");
        assert_eq!(
            n("1e131071").div_pg(&n("0.001")).unwrap_err().sqlstate(),
            "22003"
        );
    }
}
