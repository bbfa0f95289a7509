//! Vindex kinds: which function maps a sharding key to a keyspace id.

use std::fmt;
use std::str::FromStr;

use super::error::VindexError;
use super::hash::{crc32_id, fnv1a_id, murmur3_id, with_hash_bytes};
use super::key::KeyValue;
use super::keyspace_id::KeyspaceId;
use super::range::range_id;

/// A vindex: the function from a sharding key to a keyspace id.
/// The exact encodings and test vectors are in `docs/vindexes.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VindexKind {
    /// MurmurHash3 x64_128 (Austin Appleby, SMHasher), seed 0, first 64 bits (`h1`).
    HashMurmur3,
    /// CRC-32 (IEEE) `c`, keyspace id `(c << 32) | c`.
    HashCrc32,
    /// FNV-1a 64-bit (Fowler, Noll, Vo).
    HashFnv1a,
    /// Order preserving; see [`range_id`](super::range::range_id).
    Range,
    /// Same keyspace id as `HashMurmur3`; the keyspace's ranges are laid out
    /// as a consistent-hash ring (`topology::ring_ranges`).
    ConsistentHash,
}

impl VindexKind {
    /// Canonical name: `"hash_murmur3"`, `"hash_crc32"`, `"hash_fnv1a"`,
    /// `"range"` or `"consistent_hash"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            VindexKind::HashMurmur3 => "hash_murmur3",
            VindexKind::HashCrc32 => "hash_crc32",
            VindexKind::HashFnv1a => "hash_fnv1a",
            VindexKind::Range => "range",
            VindexKind::ConsistentHash => "consistent_hash",
        }
    }

    /// True for [`VindexKind::Range`]: key order is keyspace-id order, so a
    /// key interval maps to a keyspace-id interval (see
    /// `topology::RoutingTable::shards_overlapping`).
    pub fn is_order_preserving(&self) -> bool {
        matches!(self, VindexKind::Range)
    }

    /// The keyspace id of `key`. Total (never fails), allocation-free.
    ///
    /// Hash vindexes hash `Int` as its 8 little-endian bytes, `Text` as its
    /// UTF-8 bytes and `Uuid` as its 16 RFC 4122 bytes, then:
    /// `HashMurmur3`/`ConsistentHash` → MurmurHash3 x64_128 seed 0, `h1`;
    /// `HashCrc32` → `(c << 32) | c` for CRC-32 `c`; `HashFnv1a` → FNV-1a 64.
    /// `Range` → order-preserving [`range_id`](super::range::range_id).
    #[inline]
    pub fn keyspace_id(&self, key: &KeyValue) -> KeyspaceId {
        match self {
            VindexKind::HashMurmur3 | VindexKind::ConsistentHash => {
                with_hash_bytes(key, murmur3_id)
            }
            VindexKind::HashCrc32 => with_hash_bytes(key, crc32_id),
            VindexKind::HashFnv1a => with_hash_bytes(key, fnv1a_id),
            VindexKind::Range => range_id(key),
        }
    }
}

/// Parses a vindex name, case-insensitively: `hash`, `murmur3`,
/// `hash_murmur3` → `HashMurmur3`; `crc32`, `hash_crc32`; `fnv1a`,
/// `hash_fnv1a`; `range`; `consistent_hash`, `consistent-hash`.
///
/// Errors: [`VindexError::UnknownVindex`].
impl FromStr for VindexKind {
    type Err = VindexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const NAMES: [(&str, VindexKind); 10] = [
            ("hash", VindexKind::HashMurmur3),
            ("murmur3", VindexKind::HashMurmur3),
            ("hash_murmur3", VindexKind::HashMurmur3),
            ("crc32", VindexKind::HashCrc32),
            ("hash_crc32", VindexKind::HashCrc32),
            ("fnv1a", VindexKind::HashFnv1a),
            ("hash_fnv1a", VindexKind::HashFnv1a),
            ("range", VindexKind::Range),
            ("consistent_hash", VindexKind::ConsistentHash),
            ("consistent-hash", VindexKind::ConsistentHash),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|(_, k)| *k)
            .ok_or_else(|| VindexError::UnknownVindex(s.to_string()))
    }
}

/// Writes [`VindexKind::as_str`].
impl fmt::Display for VindexKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{equal_ranges, KeyRange};
    use crate::vindex::KeyType;

    const ALL: [VindexKind; 5] = [
        VindexKind::HashMurmur3,
        VindexKind::HashCrc32,
        VindexKind::HashFnv1a,
        VindexKind::Range,
        VindexKind::ConsistentHash,
    ];

    const UUID: &str = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";

    /// The table of docs/vindexes.md: (key type, text input,
    /// [murmur3, crc32, fnv1a, range]) keyspace ids. Computed independently
    /// in Python (mmh3 5.3.1 `hash64(..., signed=False)[0]`, zlib.crc32, a
    /// 5-line FNV-1a).
    const VECTORS: [(KeyType, &str, [u64; 4]); 6] = [
        (
            KeyType::Int,
            "0",
            [
                0x28df63b7cc57c3cb,
                0x6522df696522df69,
                0xa8c7f832281a39c5,
                0x8000000000000000,
            ],
        ),
        (
            KeyType::Int,
            "1",
            [
                0x004403b7fb05c44a,
                0xa988dff7a988dff7,
                0x89cd31291d2aefa4,
                0x8000000000000001,
            ],
        ),
        (
            KeyType::Int,
            "17",
            [
                0x38ae6327402ac2e8,
                0xd533eedcd533eedc,
                0x7979a1b9cc1f91b4,
                0x8000000000000011,
            ],
        ),
        (
            KeyType::Int,
            "-1",
            [
                0xa0e4b27a1abaed73,
                0x2144df1c2144df1c,
                0x8cf51a8bfca3883d,
                0x7fffffffffffffff,
            ],
        ),
        (
            KeyType::Text,
            "hello",
            [
                0xcbd8a7b341bd9b02,
                0x3610a6863610a686,
                0xa430d84680aabd0b,
                0x68656c6c6f000000,
            ],
        ),
        (
            KeyType::Uuid,
            UUID,
            [
                0xf3dc9b88e053728f,
                0x7b9445d87b9445d8,
                0x922c7bdf539eeddf,
                0xa0eebc999c0b4ef8,
            ],
        ),
    ];

    /// Which of `equal_ranges(2)` holds `id`: 0 = `[0, 2^63)`, 1 = `[2^63, ..]`.
    fn half(id: u64) -> usize {
        let r: Vec<KeyRange> = equal_ranges(2);
        r.iter().position(|r| r.contains(id)).unwrap_or(usize::MAX)
    }

    #[test]
    fn documented_vectors() {
        // (murmur3, crc32, fnv1a, range) half for each row of the doc table.
        let halves: [[usize; 4]; 6] = [
            [0, 0, 1, 1],
            [0, 1, 1, 1],
            [0, 1, 0, 1],
            [1, 0, 1, 0],
            [1, 0, 1, 0],
            [1, 0, 1, 1],
        ];
        for ((t, input, ids), hv) in VECTORS.iter().zip(halves) {
            let key = match t.parse_text(input) {
                Ok(k) => k,
                Err(e) => panic!("{input}: {e}"),
            };
            let kinds = [
                VindexKind::HashMurmur3,
                VindexKind::HashCrc32,
                VindexKind::HashFnv1a,
                VindexKind::Range,
            ];
            for ((kind, want), want_half) in kinds.iter().zip(ids).zip(hv) {
                let got = kind.keyspace_id(&key);
                assert_eq!(got, *want, "{kind} {input}: got {got:#018x}");
                assert_eq!(half(got), want_half, "{kind} {input}");
            }
            assert_eq!(VindexKind::ConsistentHash.keyspace_id(&key), ids[0]);
        }
    }

    #[test]
    fn int_widths_hash_equal() {
        let (b2, b4, b8) = (
            17i16.to_be_bytes(),
            17i32.to_be_bytes(),
            17i64.to_be_bytes(),
        );
        let keys = [
            KeyType::Int.parse_binary(&b2),
            KeyType::Int.parse_binary(&b4),
            KeyType::Int.parse_binary(&b8),
            KeyType::Int.parse_text(" +17 "),
        ];
        for kind in ALL {
            let ids: Vec<_> = keys
                .iter()
                .map(|k| k.as_ref().map(|k| kind.keyspace_id(k)).ok())
                .collect();
            assert!(
                ids.iter().all(|i| i.is_some() && *i == ids[0]),
                "{kind}: {ids:?}"
            );
        }
    }

    #[test]
    fn uuid_text_forms_and_binary_hash_equal() {
        let forms = [
            UUID,
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        ];
        let bin = [
            0xa0u8, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ];
        let want = KeyType::Uuid
            .parse_binary(&bin)
            .map(|k| VindexKind::HashMurmur3.keyspace_id(&k));
        assert_eq!(want, Ok(0xf3dc9b88e053728f));
        for f in forms {
            let got = KeyType::Uuid
                .parse_text(f)
                .map(|k| VindexKind::HashMurmur3.keyspace_id(&k));
            assert_eq!(got, want, "{f}");
        }
    }

    #[test]
    fn names() {
        for (s, k) in [
            ("hash", VindexKind::HashMurmur3),
            ("MURMUR3", VindexKind::HashMurmur3),
            ("hash_murmur3", VindexKind::HashMurmur3),
            ("crc32", VindexKind::HashCrc32),
            ("hash_crc32", VindexKind::HashCrc32),
            ("fnv1a", VindexKind::HashFnv1a),
            ("Hash_FNV1a", VindexKind::HashFnv1a),
            ("range", VindexKind::Range),
            ("consistent_hash", VindexKind::ConsistentHash),
            ("consistent-hash", VindexKind::ConsistentHash),
        ] {
            assert_eq!(s.parse::<VindexKind>(), Ok(k), "{s}");
        }
        for k in ALL {
            assert_eq!(k.as_str().parse::<VindexKind>(), Ok(k));
            assert_eq!(k.to_string(), k.as_str());
        }
        let e = "md5"
            .parse::<VindexKind>()
            .map_err(|e| (e.sqlstate(), e.to_string()));
        assert_eq!(
            e,
            Err((
                "42704",
                "unknown vindex \"md5\" (expected hash_murmur3, hash_crc32, hash_fnv1a, range or consistent_hash)"
                    .to_string()
            ))
        );
        assert!(VindexKind::Range.is_order_preserving());
        assert!(!VindexKind::HashMurmur3.is_order_preserving());
    }
}
