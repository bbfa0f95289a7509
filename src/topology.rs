//! Key ranges, shard ranges and the per-keyspace routing table.
//!
//! A keyspace id is a `u64` computed by a vindex from a sharding key
//! (see [`crate::vindex`]). Every shard of a keyspace owns one or more
//! half-open key ranges `[start, end)` of keyspace ids; `end == None` means
//! "up to and including `u64::MAX`" (Vitess' `80-` style open end).
//! The active set of ranges of a keyspace is the set with the keyspace's
//! current generation; a resharding job writes a new generation and flips it.
//!
//! This module also builds the two standard layouts: [`equal_ranges`]
//! (N equal contiguous ranges, as Vitess' `-80`, `80-`) and [`ring_ranges`]
//! (a consistent-hash ring flattened to contiguous ranges).

use std::fmt;
use std::io::Cursor;
use std::sync::Arc;

// Defined with the vindexes that produce it (`crate::vindex` must not
// depend on this module); kept at this path for existing users.
pub use crate::vindex::KeyspaceId;

/// A half-open range of keyspace ids `[start, end)`; `end == None` is unbounded
/// (covers `u64::MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyRange {
    /// Inclusive lower bound.
    pub start: KeyspaceId,
    /// Exclusive upper bound; `None` = end of the keyspace id space.
    pub end: Option<KeyspaceId>,
}

impl KeyRange {
    /// The range covering the whole keyspace id space: `[0, None)`.
    pub const FULL: KeyRange = KeyRange {
        start: 0,
        end: None,
    };

    /// True if `ksid` lies in `[start, end)` (`end == None` includes `u64::MAX`).
    #[inline]
    pub fn contains(&self, ksid: KeyspaceId) -> bool {
        ksid >= self.start && self.end.is_none_or(|e| ksid < e)
    }

    /// True if the range holds no keyspace id (`end <= start`).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.end.is_some_and(|e| e <= self.start)
    }

    /// The largest keyspace id in the range, or `None` if the range is empty.
    #[inline]
    pub fn last(&self) -> Option<KeyspaceId> {
        match self.end {
            None => Some(u64::MAX),
            Some(e) if e > self.start => Some(e - 1),
            Some(_) => None,
        }
    }
}

/// Formats as `[0x0000000000000000, 0x8000000000000000)` (16 hex digits);
/// an unbounded end is written as the closed `0xffffffffffffffff]`.
impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.end {
            Some(e) => write!(f, "[{:#018x}, {:#018x})", self.start, e),
            None => write!(f, "[{:#018x}, {:#018x}]", self.start, u64::MAX),
        }
    }
}

/// One row of the catalog's `shard_ranges` table: a key range of a keyspace
/// owned by a shard at a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRange {
    /// Keyspace name.
    pub keyspace: String,
    /// The key range owned.
    pub range: KeyRange,
    /// Shard name (a row of the catalog's `shards` table).
    pub shard: String,
    /// Generation this row belongs to.
    pub generation: i64,
}

/// Why a set of shard ranges is not a valid routing table.
///
/// Every message starts with `keyspace '<name>': ` and names the offending
/// range(s) in the [`KeyRange`] `Display` form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// No ranges at all were given.
    #[error("keyspace '{keyspace}': no shard ranges")]
    NoRanges {
        /// Keyspace name.
        keyspace: String,
    },
    /// A range has `start >= end`.
    #[error("keyspace '{keyspace}': empty key range {range} for shard '{shard}'")]
    EmptyRange {
        /// Keyspace name.
        keyspace: String,
        /// The empty range.
        range: KeyRange,
        /// Shard owning it.
        shard: String,
    },
    /// A range row belongs to another keyspace than the table's.
    #[error(
        "keyspace '{keyspace}': range {range} of shard '{shard}' belongs to keyspace '{found}'"
    )]
    WrongKeyspace {
        /// Keyspace of the table.
        keyspace: String,
        /// Keyspace named by the row.
        found: String,
        /// The row's range.
        range: KeyRange,
        /// The row's shard.
        shard: String,
    },
    /// Rows of more than one generation were mixed in one table.
    #[error("keyspace '{keyspace}': ranges of generations {first} and {other} mixed in one routing table")]
    MixedGenerations {
        /// Keyspace name.
        keyspace: String,
        /// Generation of the first row.
        first: i64,
        /// Another generation found.
        other: i64,
    },
    /// Some keyspace ids are owned by no shard.
    #[error("keyspace '{keyspace}': key range gap {gap}")]
    Gap {
        /// Keyspace name.
        keyspace: String,
        /// The uncovered keyspace ids.
        gap: KeyRange,
    },
    /// Two ranges share keyspace ids.
    #[error("keyspace '{keyspace}': key ranges overlap: {first} (shard '{first_shard}') and {second} (shard '{second_shard}')")]
    Overlap {
        /// Keyspace name.
        keyspace: String,
        /// The range starting first.
        first: KeyRange,
        /// Its shard.
        first_shard: String,
        /// The range starting inside `first`.
        second: KeyRange,
        /// Its shard.
        second_shard: String,
    },
}

/// The validated ranges of ONE keyspace at one generation: maps every
/// keyspace id to exactly one shard.
///
/// Invariants (checked by [`RoutingTable::from_ranges`]): at least one range;
/// ranges sorted by start; the first starts at 0, each next one starts where
/// the previous ends, and the last is unbounded (`end == None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingTable {
    keyspace: String,
    ranges: Vec<ShardRange>,
    /// `starts[i] == ranges[i].range.start`; a dense array for the binary search.
    starts: Vec<KeyspaceId>,
    /// `shard_of[i]` = index into `shards` of `ranges[i].shard`.
    shard_of: Vec<usize>,
    /// Distinct shard names in range order of first appearance (shared:
    /// a scatter's route takes it without copying).
    shards: Arc<[String]>,
}

impl RoutingTable {
    /// Validates and indexes the ranges of keyspace `keyspace`.
    ///
    /// `ranges` may come in any order; they are sorted by start. They must
    /// all name `keyspace` and share one generation, and must cover
    /// `[0, u64::MAX]` exactly once.
    ///
    /// Errors: [`TopologyError::NoRanges`] if `ranges` is empty,
    /// [`TopologyError::WrongKeyspace`], [`TopologyError::MixedGenerations`],
    /// [`TopologyError::EmptyRange`] (`start >= end`),
    /// [`TopologyError::Overlap`] (names both ranges) and
    /// [`TopologyError::Gap`] (names the uncovered range); the first problem
    /// in start order is reported.
    pub fn from_ranges(
        keyspace: &str,
        mut ranges: Vec<ShardRange>,
    ) -> Result<RoutingTable, TopologyError> {
        let ks = || keyspace.to_string();
        let Some(first) = ranges.first() else {
            return Err(TopologyError::NoRanges { keyspace: ks() });
        };
        let generation = first.generation;
        for r in &ranges {
            if r.keyspace != keyspace {
                return Err(TopologyError::WrongKeyspace {
                    keyspace: ks(),
                    found: r.keyspace.clone(),
                    range: r.range,
                    shard: r.shard.clone(),
                });
            }
            if r.generation != generation {
                return Err(TopologyError::MixedGenerations {
                    keyspace: ks(),
                    first: generation,
                    other: r.generation,
                });
            }
            if r.range.is_empty() {
                return Err(TopologyError::EmptyRange {
                    keyspace: ks(),
                    range: r.range,
                    shard: r.shard.clone(),
                });
            }
        }
        ranges.sort_by(|a, b| a.range.cmp(&b.range).then_with(|| a.shard.cmp(&b.shard)));

        // Walk in start order; `next` is the first keyspace id not yet covered
        // (`None` once u64::MAX is covered).
        let mut next: Option<KeyspaceId> = Some(0);
        let mut prev: Option<&ShardRange> = None;
        for r in &ranges {
            match next {
                None => {
                    // Everything is covered already: r overlaps the unbounded previous range.
                    return Err(overlap(keyspace, prev, r));
                }
                Some(n) if r.range.start < n => return Err(overlap(keyspace, prev, r)),
                Some(n) if r.range.start > n => {
                    return Err(TopologyError::Gap {
                        keyspace: ks(),
                        gap: KeyRange {
                            start: n,
                            end: Some(r.range.start),
                        },
                    })
                }
                Some(_) => {}
            }
            next = r.range.end;
            prev = Some(r);
        }
        if let Some(n) = next {
            return Err(TopologyError::Gap {
                keyspace: ks(),
                gap: KeyRange {
                    start: n,
                    end: None,
                },
            });
        }

        let mut shards: Vec<String> = Vec::new();
        let mut shard_of = Vec::with_capacity(ranges.len());
        for r in &ranges {
            let idx = match shards.iter().position(|s| *s == r.shard) {
                Some(i) => i,
                None => {
                    shards.push(r.shard.clone());
                    shards.len() - 1
                }
            };
            shard_of.push(idx);
        }
        let starts = ranges.iter().map(|r| r.range.start).collect();
        Ok(RoutingTable {
            keyspace: keyspace.to_string(),
            ranges,
            starts,
            shard_of,
            shards: shards.into(),
        })
    }

    /// Index into `ranges` of the range containing `ksid`. O(log n).
    #[inline]
    fn range_index(&self, ksid: KeyspaceId) -> usize {
        // starts[0] == 0 <= ksid, so partition_point >= 1.
        self.starts
            .partition_point(|&s| s <= ksid)
            .saturating_sub(1)
    }

    /// The shard owning keyspace id `ksid` (start inclusive, end exclusive).
    /// Binary search, O(log n), no allocation; total over all of `u64`.
    #[inline]
    pub fn shard_for(&self, ksid: KeyspaceId) -> &str {
        &self.shards[self.shard_of[self.range_index(ksid)]]
    }

    /// Distinct shard names, in range (start) order of first appearance.
    /// Computed once at construction.
    #[inline]
    pub fn shards(&self) -> &[String] {
        &self.shards
    }

    /// [`RoutingTable::shards`], shared (a reference count, no copy).
    pub fn shard_list(&self) -> Arc<[String]> {
        self.shards.clone()
    }

    /// Distinct shards owning at least one keyspace id in the closed interval
    /// `[start, end_inclusive]`, in range order of first appearance.
    /// Empty if `start > end_inclusive`. O(log n + k) for k ranges hit.
    pub fn shards_overlapping(&self, start: KeyspaceId, end_inclusive: KeyspaceId) -> Vec<&str> {
        let mut out = Vec::new();
        if start > end_inclusive {
            return out;
        }
        let mut seen = vec![false; self.shards.len()];
        let first = self.range_index(start);
        for (i, r) in self.ranges.iter().enumerate().skip(first) {
            if r.range.start > end_inclusive {
                break;
            }
            let s = self.shard_of[i];
            if !seen[s] {
                seen[s] = true;
                out.push(self.shards[s].as_str());
            }
        }
        out
    }

    /// The validated ranges, sorted by start, contiguous, covering all of `u64`.
    #[inline]
    pub fn ranges(&self) -> &[ShardRange] {
        &self.ranges
    }

    /// The keyspace this table routes.
    #[inline]
    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    /// The generation shared by all ranges of this table.
    #[inline]
    pub fn generation(&self) -> i64 {
        self.ranges.first().map_or(0, |r| r.generation)
    }
}

fn overlap(keyspace: &str, prev: Option<&ShardRange>, r: &ShardRange) -> TopologyError {
    // prev is always Some when called (the first range starts at `next == 0`
    // and cannot start below it); fall back to r itself defensively.
    let p = prev.unwrap_or(r);
    TopologyError::Overlap {
        keyspace: keyspace.to_string(),
        first: p.range,
        first_shard: p.shard.clone(),
        second: r.range,
        second_shard: r.shard.clone(),
    }
}

/// Splits the `u64` keyspace id space into `n` contiguous ranges of equal
/// size (± 1): range `i` is `[floor(i * 2^64 / n), floor((i+1) * 2^64 / n))`,
/// the last one unbounded (`end == None`). `n = 2` gives `[0, 2^63)`,
/// `[2^63, None)` (Vitess' `-80`, `80-`); `n = 0` gives an empty vector.
pub fn equal_ranges(n: usize) -> Vec<KeyRange> {
    let n128 = n as u128;
    let bound =
        |i: usize| -> KeyspaceId { ((i as u128) << 64).checked_div(n128).unwrap_or(0) as u64 };
    (0..n)
        .map(|i| KeyRange {
            start: bound(i),
            end: if i + 1 == n { None } else { Some(bound(i + 1)) },
        })
        .collect()
}

/// Position on the consistent-hash ring of virtual node `i` of `shard`:
/// the first (low) `u64` `h1` of MurmurHash3 x64_128 (Austin Appleby,
/// SMHasher), seed 0, of the UTF-8 bytes of `"{shard}#{i}"`.
///
/// The `murmur3` crate returns `(h2 << 64) | h1`, so `h1` is the low half;
/// Python's `mmh3.hash64(f"{shard}#{i}".encode(), signed=False)[0]` agrees.
pub fn ring_point(shard: &str, i: usize) -> KeyspaceId {
    let key = format!("{shard}#{i}");
    // Reading from an in-memory Cursor cannot fail.
    murmur3::murmur3_x64_128(&mut Cursor::new(key.as_bytes()), 0).map_or(0, |h| h as u64)
}

/// Flattens a consistent-hash ring to contiguous key ranges.
///
/// Each shard gets `vnodes` points [`ring_point`]`(shard, 0..vnodes)`; points
/// are sorted (ties broken by shard name). The arc `(previous point, point]`
/// belongs to that point's shard; the wrap-around arc
/// `(last point, u64::MAX] ∪ [0, first point]` belongs to the first point's
/// shard and is emitted as two ranges (one starting at 0, one unbounded).
/// Adjacent ranges of the same shard are merged. The output is sorted,
/// non-overlapping and covers all of `u64`, ready for
/// [`RoutingTable::from_ranges`]. Adding an (N+1)-th shard moves only about
/// 1/(N+1) of the keyspace ids, all of them to the new shard.
///
/// Returns an empty vector if `shards` is empty or `vnodes == 0`.
/// Algorithm: Karger et al., "Consistent hashing and random trees" (1997).
pub fn ring_ranges(shards: &[String], vnodes: usize) -> Vec<(KeyRange, String)> {
    let mut points: Vec<(KeyspaceId, &str)> =
        Vec::with_capacity(shards.len().saturating_mul(vnodes));
    for s in shards {
        for i in 0..vnodes {
            points.push((ring_point(s, i), s.as_str()));
        }
    }
    points.sort_unstable();
    points.dedup();
    let Some(&(first_point, first_shard)) = points.first() else {
        return Vec::new();
    };

    let mut out: Vec<(KeyRange, String)> = Vec::new();
    let mut push = |start: KeyspaceId, end: Option<KeyspaceId>, shard: &str| {
        if let Some((last, last_shard)) = out.last_mut() {
            if last_shard == shard && last.end == Some(start) {
                last.end = end;
                return;
            }
        }
        out.push((KeyRange { start, end }, shard.to_string()));
    };

    // [0, p0] -> first point's shard (part of the wrap-around arc).
    push(0, first_point.checked_add(1), first_shard);
    for w in points.windows(2) {
        let (prev, _) = w[0];
        let (p, shard) = w[1];
        if p == prev {
            continue; // same point for two shards: the first (by name) owns it
        }
        // (prev, p] == [prev + 1, p + 1); prev < p <= u64::MAX so prev + 1 fits.
        push(prev + 1, p.checked_add(1), shard);
    }
    // (last point, u64::MAX] -> first point's shard.
    if let Some(&(last_point, _)) = points.last() {
        if let Some(start) = last_point.checked_add(1) {
            push(start, None, first_shard);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 1 << 63;

    fn sr(start: u64, end: Option<u64>, shard: &str) -> ShardRange {
        ShardRange {
            keyspace: "ks".into(),
            range: KeyRange { start, end },
            shard: shard.into(),
            generation: 1,
        }
    }

    fn table(rs: Vec<ShardRange>) -> RoutingTable {
        match RoutingTable::from_ranges("ks", rs) {
            Ok(t) => t,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn err(rs: Vec<ShardRange>) -> String {
        match RoutingTable::from_ranges("ks", rs) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn key_range_helpers() {
        let r = KeyRange {
            start: 5,
            end: Some(10),
        };
        assert!(r.contains(5) && r.contains(9) && !r.contains(10) && !r.contains(4));
        assert!(KeyRange::FULL.contains(u64::MAX) && KeyRange::FULL.contains(0));
        assert!(KeyRange {
            start: 3,
            end: Some(3)
        }
        .is_empty());
        assert!(!KeyRange {
            start: u64::MAX,
            end: None
        }
        .is_empty());
        assert_eq!(r.last(), Some(9));
        assert_eq!(KeyRange::FULL.last(), Some(u64::MAX));
        assert_eq!(
            KeyRange {
                start: 0,
                end: Some(H)
            }
            .to_string(),
            "[0x0000000000000000, 0x8000000000000000)"
        );
        assert_eq!(
            KeyRange {
                start: H,
                end: None
            }
            .to_string(),
            "[0x8000000000000000, 0xffffffffffffffff]"
        );
    }

    #[test]
    fn shard_for_boundaries() {
        let t = table(vec![sr(H, None, "b"), sr(0, Some(H), "a")]);
        assert_eq!(t.keyspace(), "ks");
        assert_eq!(t.generation(), 1);
        assert_eq!(t.shard_for(0), "a");
        assert_eq!(t.shard_for(H - 1), "a"); // end exclusive
        assert_eq!(t.shard_for(H), "b"); // start inclusive
        assert_eq!(t.shard_for(u64::MAX), "b");
        assert_eq!(t.shards(), ["a".to_string(), "b".to_string()]);
        assert_eq!(t.ranges()[0].shard, "a"); // sorted by start
    }

    #[test]
    fn shard_for_many_ranges_and_repeated_shards() {
        // a owns two ranges; shards() lists distinct names by first appearance.
        let t = table(vec![
            sr(0, Some(10), "a"),
            sr(10, Some(20), "b"),
            sr(20, Some(u64::MAX), "a"),
            sr(u64::MAX, None, "c"),
        ]);
        assert_eq!(
            t.shards(),
            ["a".to_string(), "b".to_string(), "c".to_string()]
        );
        assert_eq!(t.shard_for(9), "a");
        assert_eq!(t.shard_for(10), "b");
        assert_eq!(t.shard_for(19), "b");
        assert_eq!(t.shard_for(20), "a");
        assert_eq!(t.shard_for(u64::MAX - 1), "a");
        assert_eq!(t.shard_for(u64::MAX), "c");
    }

    #[test]
    fn single_full_range() {
        let t = table(vec![sr(0, None, "only")]);
        for k in [0, 1, H, u64::MAX] {
            assert_eq!(t.shard_for(k), "only");
        }
    }

    #[test]
    fn shards_overlapping_intervals() {
        let t = table(vec![
            sr(0, Some(10), "a"),
            sr(10, Some(20), "b"),
            sr(20, Some(30), "a"),
            sr(30, None, "c"),
        ]);
        assert_eq!(t.shards_overlapping(0, 9), vec!["a"]);
        assert_eq!(t.shards_overlapping(9, 10), vec!["a", "b"]);
        assert_eq!(t.shards_overlapping(10, 25), vec!["b", "a"]);
        assert_eq!(t.shards_overlapping(15, 15), vec!["b"]);
        assert_eq!(t.shards_overlapping(0, u64::MAX), vec!["a", "b", "c"]);
        assert_eq!(t.shards_overlapping(u64::MAX, u64::MAX), vec!["c"]);
        assert_eq!(t.shards_overlapping(30, 29), Vec::<&str>::new());
    }

    #[test]
    fn gap_detected_with_text() {
        let e = err(vec![
            sr(0, Some(H), "a"),
            sr(0x9000_0000_0000_0000, None, "b"),
        ]);
        assert_eq!(
            e,
            "keyspace 'ks': key range gap [0x8000000000000000, 0x9000000000000000)"
        );
        // Gap at the beginning.
        let e = err(vec![sr(1, None, "a")]);
        assert_eq!(
            e,
            "keyspace 'ks': key range gap [0x0000000000000000, 0x0000000000000001)"
        );
        // Gap at the end (u64::MAX uncovered).
        let e = err(vec![sr(0, Some(u64::MAX), "a")]);
        assert_eq!(
            e,
            "keyspace 'ks': key range gap [0xffffffffffffffff, 0xffffffffffffffff]"
        );
    }

    #[test]
    fn overlap_detected_with_text() {
        let e = err(vec![
            sr(0, Some(0x9000_0000_0000_0000), "a"),
            sr(H, None, "b"),
        ]);
        assert_eq!(
            e,
            "keyspace 'ks': key ranges overlap: [0x0000000000000000, 0x9000000000000000) (shard 'a') \
             and [0x8000000000000000, 0xffffffffffffffff] (shard 'b')"
        );
        // Second range inside an unbounded one.
        let e = err(vec![sr(0, None, "a"), sr(5, Some(6), "b")]);
        assert!(
            e.contains("overlap") && e.contains("'a'") && e.contains("'b'"),
            "{e}"
        );
        // Duplicate range.
        let e = err(vec![sr(0, None, "a"), sr(0, None, "b")]);
        assert!(e.contains("overlap"), "{e}");
    }

    #[test]
    fn other_errors() {
        assert_eq!(err(vec![]), "keyspace 'ks': no shard ranges");
        assert_eq!(
            err(vec![
                sr(0, Some(H), "a"),
                sr(H, Some(H), "x"),
                sr(H, None, "b")
            ]),
            "keyspace 'ks': empty key range [0x8000000000000000, 0x8000000000000000) for shard 'x'"
        );
        let mut other = sr(H, None, "b");
        other.keyspace = "zz".into();
        assert!(err(vec![sr(0, Some(H), "a"), other]).contains("belongs to keyspace 'zz'"));
        let mut g2 = sr(H, None, "b");
        g2.generation = 2;
        assert!(err(vec![sr(0, Some(H), "a"), g2]).contains("generations 1 and 2"));
    }

    #[test]
    fn equal_ranges_split() {
        assert!(equal_ranges(0).is_empty());
        assert_eq!(equal_ranges(1), vec![KeyRange::FULL]);
        assert_eq!(
            equal_ranges(2),
            vec![
                KeyRange {
                    start: 0,
                    end: Some(H)
                },
                KeyRange {
                    start: H,
                    end: None
                }
            ]
        );
        let r3 = equal_ranges(3);
        assert_eq!(r3[1].start, 0x5555_5555_5555_5555);
        assert_eq!(r3[2].start, 0xaaaa_aaaa_aaaa_aaaa);
        let r4 = equal_ranges(4);
        assert_eq!(r4[1].start, 1 << 62);
        assert_eq!(r4[3].start, 3 << 62);
        // Every split is a valid routing table.
        for n in 1..=17 {
            let rs = equal_ranges(n)
                .into_iter()
                .enumerate()
                .map(|(i, r)| sr(r.start, r.end, &format!("s{i}")))
                .collect();
            assert_eq!(table(rs).shards().len(), n);
        }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("shard-{i}")).collect()
    }

    fn ring_table(n: usize, vnodes: usize) -> RoutingTable {
        let rs = ring_ranges(&names(n), vnodes)
            .into_iter()
            .map(|(r, s)| sr(r.start, r.end, &s))
            .collect();
        table(rs)
    }

    /// Owner by definition: the shard of the first point >= ksid, wrapping.
    fn ring_owner(n: usize, vnodes: usize, ksid: u64) -> String {
        let mut pts: Vec<(u64, String)> = names(n)
            .into_iter()
            .flat_map(|s| (0..vnodes).map(move |i| (ring_point(&s, i), s.clone())))
            .collect();
        pts.sort();
        pts.iter()
            .find(|(p, _)| *p >= ksid)
            .unwrap_or(&pts[0])
            .1
            .clone()
    }

    #[test]
    fn ring_point_vector() {
        // Checked with Python: mmh3.hash64(b"shard-0#0", signed=False)[0]
        assert_eq!(ring_point("shard-0", 0), RING_POINT_SHARD0_0);
    }

    const RING_POINT_SHARD0_0: u64 = 0xc212_c344_20de_60ba;

    #[test]
    fn ring_ranges_cover_and_match_definition() {
        assert!(ring_ranges(&[], 8).is_empty());
        assert!(ring_ranges(&names(2), 0).is_empty());
        let single = ring_ranges(&names(1), 16);
        assert_eq!(single, vec![(KeyRange::FULL, "shard-0".to_string())]);

        let t = ring_table(3, 16); // from_ranges validates coverage
        assert_eq!(t.shards().len(), 3);
        // No two adjacent ranges of the same shard (merged).
        for w in t.ranges().windows(2) {
            assert_ne!(w[0].shard, w[1].shard);
        }
        let mut samples: Vec<u64> = vec![0, 1, u64::MAX, H];
        for r in t.ranges() {
            samples.push(r.range.start);
            if let Some(l) = r.range.last() {
                samples.push(l);
            }
        }
        for k in samples {
            assert_eq!(t.shard_for(k), ring_owner(3, 16, k), "ksid {k:#x}");
        }
    }

    #[test]
    fn ring_adding_a_shard_moves_about_one_nth() {
        let before = ring_table(3, 64);
        let after = ring_table(4, 64);
        let n = 10_000u64;
        let mut moved = 0;
        for i in 0..n {
            // Spread samples evenly over u64 (golden-ratio stride).
            let k = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let (a, b) = (before.shard_for(k), after.shard_for(k));
            if a != b {
                moved += 1;
                assert_eq!(b, "shard-3", "ids may only move to the new shard");
            }
        }
        assert!(moved * 100 < n * 40, "moved {moved} of {n}");
        assert!(moved > 0);
    }
}
