//! Text forms of `boolean`, the integer types, `oid`, `bytea`, `uuid` and
//! `"char"` (PostgreSQL `src/backend/utils/adt/`: `bool.c` `boolin`,
//! `numutils.c` `pg_strtoint16/32/64`, `oid.c` `oidin`, `varlena.c`
//! `byteain`/`byteaout` with `encode.c` hex, `uuid.c` `uuid_in`/`uuid_out`,
//! `char.c` `charin`/`charout`; PostgreSQL 15 behaviour).

use super::numeric::is_pg_space;
use super::ValueError;

fn syntax(ty: &str, s: &str) -> ValueError {
    ValueError::Malformed(format!("invalid input syntax for type {ty}: \"{s}\""))
}

/// PostgreSQL `boolin`: after trimming whitespace, any prefix of `true`,
/// `false`, `yes`, `no`, a prefix of length ≥ 2 of `on`/`off`, or `1`/`0`
/// (case-insensitive).
pub(crate) fn parse_bool(s: &str) -> Result<bool, ValueError> {
    let t = s
        .trim_matches(|c: char| c.is_ascii() && is_pg_space(c as u8))
        .to_ascii_lowercase();
    let prefix_of = |w: &str, min: usize| t.len() >= min && w.starts_with(t.as_str());
    if prefix_of("true", 1) || prefix_of("yes", 1) || prefix_of("on", 2) || t == "1" {
        Ok(true)
    } else if prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || t == "0" {
        Ok(false)
    } else {
        Err(syntax("boolean", s))
    }
}

/// PostgreSQL `pg_strtoint16/32/64` (PostgreSQL 15: decimal only):
/// surrounding whitespace, optional sign, at least one digit. Values
/// outside `[min, max]` → `OutOfRange("value \"…\" is out of range for
/// type smallint")`; bad syntax → `Malformed`.
pub(crate) fn parse_int(s: &str, min: i64, max: i64, ty: &str) -> Result<i64, ValueError> {
    let t = s.trim_matches(|c: char| c.is_ascii() && is_pg_space(c as u8));
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax(ty, s));
    }
    let range = || ValueError::OutOfRange(format!("value \"{s}\" is out of range for type {ty}"));
    let mut v: i128 = 0;
    for b in digits.bytes() {
        v = v * 10 + i128::from(b - b'0');
        if v > i128::from(u64::MAX) {
            return Err(range());
        }
    }
    let v = if neg { -v } else { v };
    if v < i128::from(min) || v > i128::from(max) {
        return Err(range());
    }
    Ok(v as i64)
}

/// PostgreSQL `oidin`: an unsigned 32-bit decimal; like `strtoul`,
/// negative values down to -2147483648 wrap around ("-1" = 4294967295).
pub(crate) fn parse_oid(s: &str) -> Result<i64, ValueError> {
    let v = parse_int(s, i64::from(i32::MIN), i64::from(u32::MAX), "oid")?;
    Ok(if v < 0 { v + (1i64 << 32) } else { v })
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// PostgreSQL `byteain`: the hex form `\x` + pairs of hex digits
/// (whitespace allowed between pairs), or the escape form (bytes as-is,
/// `\\` for a backslash, `\ooo` octal with a first digit 0–3).
pub(crate) fn parse_bytea(b: &[u8]) -> Result<Vec<u8>, ValueError> {
    if let Some(hex) = b.strip_prefix(b"\\x") {
        let mut out = Vec::with_capacity(hex.len() / 2);
        let mut i = 0;
        while i < hex.len() {
            let c = hex[i];
            if matches!(c, b' ' | b'\n' | b'\t' | b'\r') {
                i += 1;
                continue;
            }
            let hi = hex_val(c).ok_or_else(|| bad_hex_digit(&hex[i..]))?;
            let Some(&c2) = hex.get(i + 1) else {
                return Err(ValueError::Malformed(
                    "invalid hexadecimal data: odd number of digits".into(),
                ));
            };
            let lo = hex_val(c2).ok_or_else(|| bad_hex_digit(&hex[i + 1..]))?;
            out.push(hi << 4 | lo);
            i += 2;
        }
        return Ok(out);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
        } else if b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else if let [d1 @ b'0'..=b'3', d2 @ b'0'..=b'7', d3 @ b'0'..=b'7', ..] = b[i + 1..] {
            out.push(((d1 - b'0') << 6) | ((d2 - b'0') << 3) | (d3 - b'0'));
            i += 4;
        } else {
            return Err(syntax("bytea", &String::from_utf8_lossy(b)));
        }
    }
    Ok(out)
}

fn bad_hex_digit(at: &[u8]) -> ValueError {
    let ch = std::str::from_utf8(at)
        .ok()
        .and_then(|s| s.chars().next())
        .map_or_else(
            || format!("\\x{:02x}", at.first().copied().unwrap_or(0)),
            String::from,
        );
    ValueError::Malformed(format!("invalid hexadecimal digit: \"{ch}\""))
}

/// PostgreSQL `byteaout` with `bytea_output = hex`: `\x` + lower-case hex.
pub(crate) fn bytea_out(b: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(2 + b.len() * 2);
    out.extend_from_slice(b"\\x");
    for &x in b {
        out.push(HEX[usize::from(x >> 4)]);
        out.push(HEX[usize::from(x & 15)]);
    }
    out
}

/// PostgreSQL `uuid_in`: 32 hex digits, optionally in braces, with an
/// optional hyphen after any group of four hex digits (except the last).
pub(crate) fn parse_uuid(b: &[u8]) -> Result<[u8; 16], ValueError> {
    let bad = || syntax("uuid", &String::from_utf8_lossy(b));
    let (body, braces) = match b.strip_prefix(b"{") {
        Some(rest) => (rest, true),
        None => (b, false),
    };
    let mut out = [0u8; 16];
    let mut i = 0;
    for (k, slot) in out.iter_mut().enumerate() {
        let hi = body.get(i).copied().and_then(hex_val).ok_or_else(bad)?;
        let lo = body.get(i + 1).copied().and_then(hex_val).ok_or_else(bad)?;
        *slot = hi << 4 | lo;
        i += 2;
        if k % 2 == 1 && k < 15 && body.get(i) == Some(&b'-') {
            i += 1;
        }
    }
    let rest = &body[i..];
    let rest = if braces {
        rest.strip_prefix(b"}").ok_or_else(bad)?
    } else {
        rest
    };
    if !rest.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// PostgreSQL `uuid_out`: 8-4-4-4-12 lower-case hex.
pub(crate) fn uuid_out(u: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(36);
    for (k, x) in u.iter().enumerate() {
        if matches!(k, 4 | 6 | 8 | 10) {
            out.push(b'-');
        }
        out.extend_from_slice(format!("{x:02x}").as_bytes());
    }
    out
}

/// PostgreSQL `charin`: `\ooo` (four bytes, octal) is that byte, else the
/// first byte (none for empty input); byte 0 is the empty value.
pub(crate) fn parse_char(b: &[u8]) -> Vec<u8> {
    let byte = match b {
        [b'\\', d1 @ b'0'..=b'7', d2 @ b'0'..=b'7', d3 @ b'0'..=b'7'] => {
            (u32::from(d1 - b'0') << 6 | u32::from(d2 - b'0') << 3 | u32::from(d3 - b'0')) as u8
        }
        [] => 0,
        [first, ..] => *first,
    };
    if byte == 0 {
        Vec::new()
    } else {
        vec![byte]
    }
}

/// PostgreSQL 15 `charout`: empty for byte 0, `\ooo` for a byte with the
/// high bit set, else the byte itself. Only the first byte of `b` counts.
pub(crate) fn char_out(b: &[u8]) -> Vec<u8> {
    match b.first() {
        None | Some(0) => Vec::new(),
        Some(&c) if c >= 0x80 => format!("\\{c:03o}").into_bytes(),
        Some(&c) => vec![c],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bools() {
        for t in ["t", "TRUE", " tr ", "y", "yes", "on", "1"] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for f in ["f", "False", "n", "no", "of", "off", "0"] {
            assert_eq!(parse_bool(f), Ok(false), "{f}");
        }
        for bad in ["", "o", "truex", "2", "yess", "onn"] {
            assert!(parse_bool(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ints() {
        assert_eq!(parse_int(" -32768 ", -32768, 32767, "smallint"), Ok(-32768));
        assert_eq!(
            parse_int("32768", -32768, 32767, "smallint"),
            Err(ValueError::OutOfRange(
                "value \"32768\" is out of range for type smallint".into()
            ))
        );
        assert_eq!(parse_int("+7", i64::MIN, i64::MAX, "bigint"), Ok(7));
        assert_eq!(
            parse_int("-9223372036854775808", i64::MIN, i64::MAX, "bigint"),
            Ok(i64::MIN)
        );
        assert!(parse_int("99999999999999999999999", i64::MIN, i64::MAX, "bigint").is_err());
        assert_eq!(
            parse_int("1.0", 0, 9, "integer").unwrap_err().sqlstate(),
            "22P02"
        );
        assert!(parse_int("", 0, 9, "integer").is_err());
        assert!(parse_int("-", 0, 9, "integer").is_err());
        assert_eq!(parse_oid("-1"), Ok(4_294_967_295));
        assert_eq!(parse_oid("4294967295"), Ok(4_294_967_295));
        assert!(parse_oid("4294967296").is_err());
        assert!(parse_oid("-2147483649").is_err());
    }

    #[test]
    fn byteas() {
        assert_eq!(parse_bytea(b"\\x00fF 10"), Ok(vec![0, 255, 16]));
        assert_eq!(parse_bytea(b"\\x"), Ok(vec![]));
        assert_eq!(parse_bytea(b"\\x0").unwrap_err().sqlstate(), "22P02");
        assert_eq!(
            parse_bytea(b"\\x0g"),
            Err(ValueError::Malformed(
                "invalid hexadecimal digit: \"g\"".into()
            ))
        );
        assert_eq!(parse_bytea(b"ab\\\\c\\001"), Ok(b"ab\\c\x01".to_vec()));
        assert!(parse_bytea(b"a\\9").is_err());
        assert_eq!(bytea_out(&[0xde, 0xad, 0x01]), b"\\xdead01");
    }

    #[test]
    fn uuids() {
        let want = [
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ];
        for s in [
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        ] {
            assert_eq!(parse_uuid(s.as_bytes()), Ok(want), "{s}");
        }
        for bad in [
            "",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
            "{a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0e-ebc999c0b4ef8bb6d6bb9bd380a11",
        ] {
            assert!(parse_uuid(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(uuid_out(&want), b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    }

    #[test]
    fn chars() {
        assert_eq!(parse_char(b"a"), b"a");
        assert_eq!(parse_char(b"abc"), b"a");
        assert_eq!(parse_char(b""), b"");
        assert_eq!(parse_char(b"\\377"), vec![255]);
        assert_eq!(parse_char(b"\\000"), b"");
        assert_eq!(char_out(&[255]), b"\\377");
        assert_eq!(char_out(b"x"), b"x");
        assert_eq!(char_out(b""), b"");
    }
}
