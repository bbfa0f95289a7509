//! MurmurHash3 x64_128 over an in-memory byte slice.
//!
//! Algorithm: MurmurHash3 x64_128 by Austin Appleby (public domain,
//! SMHasher `MurmurHash3.cpp`, `MurmurHash3_x64_128`). Implemented here
//! rather than through the `murmur3` crate because that crate hashes a
//! `std::io::Read` (one 16-byte copy per block and an `io::Result` to handle)
//! while this sits on every query's hot path. The tests check it against the
//! SMHasher verification value, published vectors and the `murmur3` crate.

const C1: u64 = 0x87c3_7b91_1142_53d5;
const C2: u64 = 0x4cf5_ad43_2745_937f;

/// MurmurHash3 x64_128 of `data` with `seed`; returns `(h1, h2)`.
///
/// The reference implementation writes `h1` then `h2` as the 16-byte output,
/// so `h1` is the first 8 bytes read little-endian. The `murmur3` crate's
/// `murmur3_x64_128` returns the `u128` `(h2 << 64) | h1` (h1 = low half);
/// Python's `mmh3.hash64(data, signed=False)` returns `(h1, h2)` and
/// `mmh3.hash128(data)` the same `u128` as the crate.
#[inline]
pub fn murmur3_x64_128(data: &[u8], seed: u32) -> (u64, u64) {
    let mut h1 = seed as u64;
    let mut h2 = seed as u64;

    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        let (lo, hi) = block.split_at(8);
        let k1 = read_le(lo);
        let k2 = read_le(hi);

        h1 ^= mix_k1(k1);
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        h2 ^= mix_k2(k2);
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }

    let tail = blocks.remainder();
    if tail.len() > 8 {
        h2 ^= mix_k2(read_le(&tail[8..]));
    }
    if !tail.is_empty() {
        h1 ^= mix_k1(read_le(&tail[..tail.len().min(8)]));
    }

    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

/// First 64 bits (`h1`) of [`murmur3_x64_128`] with seed 0: the keyspace id
/// of the `hash_murmur3` and `consistent_hash` vindexes.
#[inline]
pub fn murmur3_x64_128_h1(data: &[u8]) -> u64 {
    murmur3_x64_128(data, 0).0
}

/// Reads up to 8 bytes little-endian, zero-padding the high bytes
/// (the reference's tail `switch`).
#[inline(always)]
fn read_le(b: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = b.len().min(8);
    buf[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(buf)
}

#[inline(always)]
fn mix_k1(k1: u64) -> u64 {
    k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2)
}

#[inline(always)]
fn mix_k2(k2: u64) -> u64 {
    k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1)
}

/// MurmurHash3's 64-bit finalizer.
#[inline(always)]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// SMHasher's `VerificationTest`: hash keys {0}, {0,1}, ... {0..254}
    /// (key i has length i) with seed 256 - i, concatenate the 16-byte
    /// outputs, hash that with seed 0; the first 4 bytes little-endian must
    /// be 0x6384BA69 for MurmurHash3_x64_128.
    #[test]
    fn smhasher_verification_value() {
        let mut key = [0u8; 256];
        let mut hashes = Vec::with_capacity(256 * 16);
        for i in 0..256usize {
            key[i] = i as u8;
            let (h1, h2) = murmur3_x64_128(&key[..i], (256 - i) as u32);
            hashes.extend_from_slice(&h1.to_le_bytes());
            hashes.extend_from_slice(&h2.to_le_bytes());
        }
        let (h1, _) = murmur3_x64_128(&hashes, 0);
        assert_eq!(h1 as u32, 0x6384_ba69);
    }

    #[test]
    fn published_vectors() {
        // Also checked with Python mmh3 5.3.1: mmh3.hash64(data, signed=False).
        assert_eq!(murmur3_x64_128(b"", 0), (0, 0));
        assert_eq!(
            murmur3_x64_128(b"The quick brown fox jumps over the lazy dog", 0),
            (0xe34b_bc7b_bc07_1b6c, 0x7a43_3ca9_c49a_9347)
        );
        assert_eq!(murmur3_x64_128_h1(b"hello"), 0xcbd8_a7b3_41bd_9b02);
    }

    #[test]
    fn matches_murmur3_crate_for_all_tail_lengths() {
        let data: Vec<u8> = (0..100u32)
            .map(|i| (i.wrapping_mul(167) ^ 0x5a) as u8)
            .collect();
        for len in 0..data.len() {
            for seed in [0u32, 1, 0xdead_beef] {
                let (h1, h2) = murmur3_x64_128(&data[..len], seed);
                let crate_h = murmur3::murmur3_x64_128(&mut Cursor::new(&data[..len]), seed).ok();
                assert_eq!(
                    Some(((h2 as u128) << 64) | h1 as u128),
                    crate_h,
                    "len {len} seed {seed}"
                );
            }
        }
    }
}
