//! The order-preserving `range` vindex.

use super::key::KeyValue;
use super::keyspace_id::KeyspaceId;

/// Order-preserving keyspace id, so that key ranges map to keyspace-id ranges:
///
/// - `Int(v)` → `(v as u64) ^ (1 << 63)` (flips the sign bit: `i64::MIN` → 0,
///   `-1` → `0x7fffffffffffffff`, `0` → `0x8000000000000000`, `i64::MAX` →
///   `u64::MAX`); a bijection that preserves `i64` order.
/// - `Text(s)` → the first 8 UTF-8 bytes big-endian, zero padded on the
///   right; preserves byte-wise (`COLLATE "C"`) order, with ties for strings
///   sharing an 8-byte prefix.
/// - `Uuid(u)` → the first 8 bytes big-endian; preserves PostgreSQL's uuid
///   order, with ties for uuids sharing the first 8 bytes.
#[inline]
pub fn range_id(key: &KeyValue) -> KeyspaceId {
    match key {
        KeyValue::Int(v) => (*v as u64) ^ (1 << 63),
        KeyValue::Text(s) => be_prefix(s.as_bytes()),
        KeyValue::Uuid(u) => be_prefix(u),
    }
}

/// Up to the first 8 bytes of `b` read big-endian, right zero padded.
#[inline]
fn be_prefix(b: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = b.len().min(8);
    buf[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_order_preserved() {
        let vals = [
            i64::MIN,
            i64::MIN + 1,
            -17,
            -1,
            0,
            1,
            17,
            i64::MAX - 1,
            i64::MAX,
        ];
        for w in vals.windows(2) {
            assert!(range_id(&KeyValue::Int(w[0])) < range_id(&KeyValue::Int(w[1])));
        }
        assert_eq!(range_id(&KeyValue::Int(i64::MIN)), 0);
        assert_eq!(range_id(&KeyValue::Int(-1)), 0x7fff_ffff_ffff_ffff);
        assert_eq!(range_id(&KeyValue::Int(0)), 0x8000_0000_0000_0000);
        assert_eq!(range_id(&KeyValue::Int(i64::MAX)), u64::MAX);
    }

    #[test]
    fn text_and_uuid_prefixes() {
        assert_eq!(range_id(&KeyValue::Text("")), 0);
        assert_eq!(range_id(&KeyValue::Text("a")), 0x6100_0000_0000_0000);
        assert_eq!(
            range_id(&KeyValue::Text("abcdefghij")),
            0x6162_6364_6566_6768
        );
        let words = ["", "A", "a", "ab", "abc", "b", "zzzzzzzz"];
        for w in words.windows(2) {
            assert!(
                range_id(&KeyValue::Text(w[0])) < range_id(&KeyValue::Text(w[1])),
                "{w:?}"
            );
        }
        let mut u = [0u8; 16];
        u[0] = 0x12;
        u[7] = 0x34;
        u[8] = 0xff;
        assert_eq!(range_id(&KeyValue::Uuid(u)), 0x1200_0000_0000_0034);
    }
}
