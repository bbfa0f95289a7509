//! PostgreSQL's text input for `uuid` (`uuid_in`), without allocation.

use super::error::VindexError;

/// Parses a UUID the way PostgreSQL's `uuid_in` (`string_to_uuid`) does,
/// returning its 16 bytes in RFC 4122 (network) order.
///
/// Accepted: 32 hex digits (any case), optionally wrapped in `{}`, with an
/// optional single `-` after any group of four hex digits (so the standard
/// `8-4-4-4-12` form, no hyphens at all, and e.g. `a0eebc99-9c0b4ef8-...`).
/// No surrounding whitespace.
///
/// Errors: [`VindexError::InvalidSyntax`] (`invalid input syntax for type uuid: "..."`).
pub fn parse_uuid(s: &str) -> Result<[u8; 16], VindexError> {
    let syntax = || VindexError::InvalidSyntax {
        type_name: "uuid",
        input: s.to_string(),
    };
    let b = s.as_bytes();
    let mut i = 0;
    let braces = b.first() == Some(&b'{');
    if braces {
        i += 1;
    }
    let mut out = [0u8; 16];
    for (n, byte) in out.iter_mut().enumerate() {
        let (Some(hi), Some(lo)) = (
            b.get(i).copied().and_then(hex_value),
            b.get(i + 1).copied().and_then(hex_value),
        ) else {
            return Err(syntax());
        };
        *byte = (hi << 4) | lo;
        i += 2;
        if n % 2 == 1 && n < 15 && b.get(i) == Some(&b'-') {
            i += 1;
        }
    }
    if braces {
        if b.get(i) != Some(&b'}') {
            return Err(syntax());
        }
        i += 1;
    }
    if i != b.len() {
        return Err(syntax());
    }
    Ok(out)
}

#[inline]
fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BYTES: [u8; 16] = [
        0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a,
        0x11,
    ];

    #[test]
    fn accepted_forms() {
        // The forms listed in PostgreSQL's documentation of the uuid type.
        for s in [
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
            "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
        ] {
            assert_eq!(parse_uuid(s), Ok(BYTES), "{s}");
        }
    }

    #[test]
    fn rejected_forms() {
        for s in [
            "",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
            "a0eeb-c99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 ",
            "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "-a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380aé",
        ] {
            assert_eq!(
                parse_uuid(s).map_err(|e| e.to_string()),
                Err(format!("invalid input syntax for type uuid: \"{s}\"")),
                "{s:?}"
            );
        }
    }
}
