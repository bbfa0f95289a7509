//! The binary wire format of `numeric` (PostgreSQL
//! `src/backend/utils/adt/numeric.c` `numeric_send`/`numeric_recv`):
//! big-endian `int16 ndigits, int16 weight, uint16 sign, int16 dscale`,
//! then `ndigits` base-10000 digits as `int16`, most significant first;
//! value = Σ digit[i] · 10000^(weight − i). Sign words: 0x0000 positive,
//! 0x4000 negative, 0xC000 NaN, 0xD000 +Infinity, 0xF000 -Infinity.

use num_bigint::{BigInt, BigUint, Sign};
use num_traits::{Signed, Zero};

use super::numeric::{Numeric, DSCALE_MAX};
use super::ValueError;

const SIGN_POS: u16 = 0x0000;
const SIGN_NEG: u16 = 0x4000;
const SIGN_NAN: u16 = 0xC000;
const SIGN_PINF: u16 = 0xD000;
const SIGN_NINF: u16 = 0xF000;
/// The dscale `numeric_send` emits for ±Infinity: PostgreSQL reads it out
/// of the special value's header bits (0xD000/0xF000 & 0x1F80) >> 7.
const INF_DSCALE: u16 = 0x20;

fn header(out: &mut Vec<u8>, ndigits: u16, weight: i16, sign: u16, dscale: u16) {
    out.extend_from_slice(&ndigits.to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
}

impl Numeric {
    /// The `numeric_send` bytes: digits stripped of leading and trailing
    /// zero base-10000 digits, zero as `ndigits = 0, weight = 0`, NaN as
    /// `0,0,0xC000,0`, ±Infinity as `0,0,0xD000/0xF000,0x20` (exactly what
    /// PostgreSQL 15 sends). A value beyond the storage format (see
    /// [`Numeric::check_format`]) has its weight/scale truncated to 16 bits.
    pub fn to_binary(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        let (unscaled, scale) = match self {
            Numeric::NaN => {
                header(&mut out, 0, 0, SIGN_NAN, 0);
                return out;
            }
            Numeric::PosInf => {
                header(&mut out, 0, 0, SIGN_PINF, INF_DSCALE);
                return out;
            }
            Numeric::NegInf => {
                header(&mut out, 0, 0, SIGN_NINF, INF_DSCALE);
                return out;
            }
            Numeric::Finite { unscaled, scale } => (unscaled, *scale),
        };
        if unscaled.is_zero() {
            header(&mut out, 0, 0, SIGN_POS, scale as u16);
            return out;
        }
        let frac_groups = scale.div_ceil(4);
        let mut dec = unscaled.magnitude().to_str_radix(10).into_bytes();
        dec.extend(std::iter::repeat_n(
            b'0',
            (frac_groups * 4 - scale) as usize,
        ));
        let pad = (4 - dec.len() % 4) % 4;
        let mut padded = vec![b'0'; pad];
        padded.extend_from_slice(&dec);
        let mut groups: Vec<u16> = padded
            .chunks(4)
            .map(|c| {
                c.iter()
                    .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'))
            })
            .collect();
        let weight = groups.len() as i64 - 1 - i64::from(frac_groups);
        while groups.last() == Some(&0) {
            groups.pop();
        }
        let sign = if unscaled.is_negative() {
            SIGN_NEG
        } else {
            SIGN_POS
        };
        header(
            &mut out,
            groups.len() as u16,
            weight as i16,
            sign,
            scale as u16,
        );
        for g in groups {
            out.extend_from_slice(&g.to_be_bytes());
        }
        out
    }

    /// Decodes `numeric_recv` input. Checks like PostgreSQL: sign word one
    /// of the five above ("invalid sign in external \"numeric\" value"),
    /// dscale ≤ 16383 ("invalid scale ..."), digits in 0..=9999 ("invalid
    /// digit ..."), exact length ("insufficient data left in message" /
    /// "incorrect binary data format"); all `Malformed`. Digits hidden by
    /// dscale are truncated away, as PostgreSQL does.
    pub fn from_binary(b: &[u8]) -> Result<Numeric, ValueError> {
        let short = || ValueError::Malformed("insufficient data left in message".into());
        if b.len() < 8 {
            return Err(short());
        }
        let ndigits = usize::from(u16::from_be_bytes([b[0], b[1]]));
        let weight = i64::from(i16::from_be_bytes([b[2], b[3]]));
        let sign = u16::from_be_bytes([b[4], b[5]]);
        let dscale = u16::from_be_bytes([b[6], b[7]]);
        if ![SIGN_POS, SIGN_NEG, SIGN_NAN, SIGN_PINF, SIGN_NINF].contains(&sign) {
            return Err(ValueError::Malformed(
                "invalid sign in external \"numeric\" value".into(),
            ));
        }
        if u32::from(dscale) > DSCALE_MAX {
            return Err(ValueError::Malformed(
                "invalid scale in external \"numeric\" value".into(),
            ));
        }
        let body = &b[8..];
        if body.len() < ndigits * 2 {
            return Err(short());
        }
        if body.len() > ndigits * 2 {
            return Err(ValueError::Malformed("incorrect binary data format".into()));
        }
        let mut dec: Vec<u8> = Vec::with_capacity(ndigits * 4);
        for pair in body.chunks_exact(2) {
            let d = i16::from_be_bytes([pair[0], pair[1]]);
            if !(0..10000).contains(&d) {
                return Err(ValueError::Malformed(
                    "invalid digit in external \"numeric\" value".into(),
                ));
            }
            let d = d as u16;
            dec.extend_from_slice(&[
                b'0' + (d / 1000) as u8,
                b'0' + (d / 100 % 10) as u8,
                b'0' + (d / 10 % 10) as u8,
                b'0' + (d % 10) as u8,
            ]);
        }
        match sign {
            SIGN_NAN => return Ok(Numeric::NaN),
            SIGN_PINF => return Ok(Numeric::PosInf),
            SIGN_NINF => return Ok(Numeric::NegInf),
            _ => {}
        }
        // Decimal position j of `dec` has exponent int_len - 1 - j; keep the
        // positions with exponent ≥ -dscale, then pad with zeros.
        let int_len = 4 * (weight + 1);
        let keep = int_len + i64::from(dscale);
        let take = keep.clamp(0, dec.len() as i64) as usize;
        let mut digits = dec[..take].to_vec();
        let zeros = (keep - dec.len() as i64).max(0) as usize;
        digits.extend(std::iter::repeat_n(b'0', zeros));
        let mag = if digits.is_empty() {
            BigUint::zero()
        } else {
            BigUint::parse_bytes(&digits, 10).unwrap_or_default()
        };
        let s = if sign == SIGN_NEG {
            Sign::Minus
        } else {
            Sign::Plus
        };
        Ok(Numeric::Finite {
            unscaled: BigInt::from_biguint(s, mag),
            scale: u32::from(dscale),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// `numeric_send` outputs captured from PostgreSQL 15.18.
    const SENT: &[(&str, &str)] = &[
        ("12.50", "0002000000000002000c1388"),
        ("NaN", "00000000c0000000"),
        ("Infinity", "00000000d0000020"),
        ("-Infinity", "00000000f0000020"),
        ("0.00", "0000000000000002"),
        ("0", "0000000000000000"),
        (
            "-123456789.000012345",
            "0006000240000009000109291a85000004d21388",
        ),
        ("100000000", "00010002000000000001"),
        ("0.0001", "0001ffff000000040001"),
        ("1e-20", "0001fffb000000140001"),
    ];

    #[test]
    fn send_matches_postgres() {
        for (text, sent) in SENT {
            let n = Numeric::parse(text).expect("parse");
            assert_eq!(hex(&n.to_binary()), *sent, "{text}");
            let back = Numeric::from_binary(&unhex(sent)).expect("recv");
            assert_eq!(back.to_text(), n.to_text(), "{text}");
        }
    }

    #[test]
    fn recv_truncates_hidden_digits_and_checks() {
        // 1.2345 sent with dscale 2 → 1.23 (trunc, not round)
        let b = unhex("000200000000000200010929");
        assert_eq!(Numeric::from_binary(&b).expect("recv").to_text(), "1.23");
        // negative zero collapses to 0
        assert_eq!(
            Numeric::from_binary(&unhex("0000000040000001"))
                .expect("z")
                .to_text(),
            "0.0"
        );
        // weight beyond digits: 1 * 10000^3
        assert_eq!(
            Numeric::from_binary(&unhex("00010003000000000001"))
                .expect("w")
                .to_text(),
            "1000000000000"
        );
        assert!(Numeric::from_binary(&unhex("00000000")).is_err());
        assert!(Numeric::from_binary(&unhex("0001000000000000")).is_err());
        assert!(Numeric::from_binary(&unhex("000000000000000000")).is_err());
        assert!(Numeric::from_binary(&unhex("0000000012340000")).is_err());
        assert!(Numeric::from_binary(&unhex("0000000000004000")).is_err());
        assert!(Numeric::from_binary(&unhex("00010000000000002710")).is_err());
        assert!(Numeric::from_binary(&unhex("0001000000000000ffff")).is_err());
        assert_eq!(
            Numeric::from_binary(&unhex("0000")).unwrap_err().sqlstate(),
            "22P03"
        );
    }

    #[test]
    fn round_trips() {
        for s in [
            "0.1",
            "-0.5",
            "12345678.87654321",
            "1e100",
            "-1e-100",
            "99999999.9999",
            "10000",
            "0.00010000",
            "123456789012345678901234567890.123456789",
            "5.000",
            "-7",
        ] {
            let n = Numeric::parse(s).expect("parse");
            let back = Numeric::from_binary(&n.to_binary()).expect("recv");
            assert_eq!(back.to_text(), n.to_text(), "{s}");
        }
    }
}
