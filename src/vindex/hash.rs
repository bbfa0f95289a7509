//! The byte encoding of keys for the hash vindexes, and the three hashes.
//!
//! Bytes hashed: `Int` → the `i64` as 8 bytes little-endian (so `int2`,
//! `int4` and `int8` of equal value hash equal); `Text` → its UTF-8 bytes;
//! `Uuid` → its 16 bytes in RFC 4122 (network) order.

use std::hash::Hasher;

use super::key::KeyValue;
use super::keyspace_id::KeyspaceId;
use super::murmur3::murmur3_x64_128_h1;

/// Calls `f` with the bytes the hash vindexes hash for `key` (see the module
/// docs); no allocation (an `Int` is encoded on the stack).
#[inline(always)]
pub fn with_hash_bytes<R>(key: &KeyValue, f: impl FnOnce(&[u8]) -> R) -> R {
    match key {
        KeyValue::Int(v) => f(&v.to_le_bytes()),
        KeyValue::Text(s) => f(s.as_bytes()),
        KeyValue::Uuid(u) => f(u),
    }
}

/// `hash_murmur3` / `consistent_hash`: `h1`, the first 64 bits of
/// MurmurHash3 x64_128 (Austin Appleby, SMHasher), seed 0.
/// Same as Python `mmh3.hash64(data, signed=False)[0]`.
#[inline]
pub fn murmur3_id(data: &[u8]) -> KeyspaceId {
    murmur3_x64_128_h1(data)
}

/// `hash_crc32`: `c = CRC-32/ISO-HDLC (IEEE 802.3, zlib's crc32)` of `data`;
/// keyspace id = `(c << 32) | c`, so the 32-bit checksum spreads over the
/// whole `u64` space and its top bits choose among equal ranges.
#[inline]
pub fn crc32_id(data: &[u8]) -> KeyspaceId {
    let c = crc32fast::hash(data) as u64;
    (c << 32) | c
}

/// `hash_fnv1a`: 64-bit FNV-1a (Fowler, Noll, Vo; offset basis
/// `0xcbf29ce484222325`, prime `0x100000001b3`) of `data`.
#[inline]
pub fn fnv1a_id(data: &[u8]) -> KeyspaceId {
    let mut h = fnv::FnvHasher::default();
    h.write(data);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_reference_vectors() {
        // From the FNV reference test suite (isthe.com/chongo/tech/comp/fnv).
        assert_eq!(fnv1a_id(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_id(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_id(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn crc32_reference_vector() {
        // CRC-32 check value of "123456789".
        assert_eq!(crc32_id(b"123456789"), 0xcbf4_3926_cbf4_3926);
        assert_eq!(crc32_id(b""), 0);
    }

    #[test]
    fn hash_bytes_encoding() {
        with_hash_bytes(&KeyValue::Int(1), |b| {
            assert_eq!(b, [1, 0, 0, 0, 0, 0, 0, 0])
        });
        with_hash_bytes(&KeyValue::Int(-1), |b| assert_eq!(b, [0xff; 8]));
        with_hash_bytes(&KeyValue::Text("hé"), |b| {
            assert_eq!(b, [b'h', 0xc3, 0xa9])
        });
        let u = [7u8; 16];
        with_hash_bytes(&KeyValue::Uuid(u), |b| assert_eq!(b, u));
    }
}
