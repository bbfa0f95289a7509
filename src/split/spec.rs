//! What a resharding job moves ([`MoveSpec`]: one key range of a keyspace
//! from its source shard to a target shard) and the routing it installs at
//! generation + 1 ([`next_ranges`]). Pure functions over a
//! [`RoutingTable`]; no I/O.
//!
//! A **split** moves part of a source range (the upper half of the source's
//! largest range by default, or `[at, end)` of the range containing `at`);
//! a **merge** moves a whole range to the shard owning the adjacent range; a
//! **move** is any range owned by one shard to any other shard. All three
//! are one primitive here: [`plan`] with a [`RangeChoice`].

use crate::topology::{KeyRange, KeyspaceId, RoutingTable, ShardRange};

/// Which part of the source's key ranges moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeChoice {
    /// The upper half of the source's largest range (ties: the first in
    /// keyspace id order); `[mid, end)` with `mid = start + len / 2`.
    UpperHalf,
    /// `[at, end)` of the source range containing `at` (`at` may not be
    /// that range's start: the whole range is [`RangeChoice::Range`]).
    At(KeyspaceId),
    /// Exactly this range; it must lie inside one range the source owns.
    Range(KeyRange),
}

/// One key range of a keyspace moving from `source` to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveSpec {
    /// Keyspace whose tables move together.
    pub keyspace: String,
    /// Shard owning `range` today.
    pub source: String,
    /// Shard owning `range` after the routing update.
    pub target: String,
    /// The moving key range `[start, end)`.
    pub range: KeyRange,
    /// The keyspace's generation the plan was made from; the routing update
    /// installs `generation + 1`.
    pub generation: i64,
}

/// Why a move cannot be planned. Each message names the keyspace and the
/// shards or range involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Source and target are the same shard.
    #[error("keyspace '{keyspace}': source and target are both shard '{shard}'")]
    SameShard {
        /// Keyspace.
        keyspace: String,
        /// The shard named twice.
        shard: String,
    },
    /// The source owns no range of the keyspace.
    #[error("keyspace '{keyspace}': shard '{source_shard}' owns no key range")]
    SourceOwnsNothing {
        /// Keyspace.
        keyspace: String,
        /// The source shard.
        source_shard: String,
    },
    /// The requested range is not inside one range the source owns.
    #[error("keyspace '{keyspace}': {range} is not inside a key range of shard '{source_shard}'")]
    NotOwned {
        /// Keyspace.
        keyspace: String,
        /// The source shard.
        source_shard: String,
        /// The range asked for.
        range: KeyRange,
    },
    /// The range to move is empty, or a split point would leave nothing
    /// behind (a one-id range cannot be halved; `at` equal to a range's
    /// start moves the whole range).
    #[error("keyspace '{keyspace}': {what}")]
    Empty {
        /// Keyspace.
        keyspace: String,
        /// What is empty.
        what: String,
    },
}

/// Plans moving `choice` of `source`'s ranges in `routing` to `target`.
///
/// Errors: [`SpecError::SameShard`], [`SpecError::SourceOwnsNothing`],
/// [`SpecError::NotOwned`] (the range or split point is not inside one of
/// the source's ranges), [`SpecError::Empty`]. Whether `target` is a
/// registered shard is the caller's check (the catalog's shard list).
pub fn plan(
    routing: &RoutingTable,
    source: &str,
    target: &str,
    choice: RangeChoice,
) -> Result<MoveSpec, SpecError> {
    let keyspace = routing.keyspace().to_string();
    if source == target {
        return Err(SpecError::SameShard {
            keyspace,
            shard: source.to_string(),
        });
    }
    let owned: Vec<KeyRange> = routing
        .ranges()
        .iter()
        .filter(|r| r.shard == source)
        .map(|r| r.range)
        .collect();
    if owned.is_empty() {
        return Err(SpecError::SourceOwnsNothing {
            keyspace,
            source_shard: source.to_string(),
        });
    }
    let not_owned = |range: KeyRange| SpecError::NotOwned {
        keyspace: keyspace.clone(),
        source_shard: source.to_string(),
        range,
    };
    let range = match choice {
        RangeChoice::UpperHalf => {
            let mut best = owned[0];
            for r in &owned[1..] {
                if len(r) > len(&best) {
                    best = *r;
                }
            }
            let half = len(&best) / 2;
            if half == 0 {
                return Err(SpecError::Empty {
                    keyspace,
                    what: format!("{best} holds one keyspace id and cannot be split"),
                });
            }
            KeyRange {
                start: best.start + half as u64,
                end: best.end,
            }
        }
        RangeChoice::At(at) => {
            let point = KeyRange {
                start: at,
                end: at.checked_add(1),
            };
            let r = owned
                .iter()
                .find(|r| r.contains(at))
                .ok_or_else(|| not_owned(point))?;
            if r.start == at {
                return Err(SpecError::Empty {
                    keyspace,
                    what: format!(
                        "split point {at:#018x} is the start of {r}: nothing would stay on shard '{source}' (move the whole range with a range instead)"
                    ),
                });
            }
            KeyRange {
                start: at,
                end: r.end,
            }
        }
        RangeChoice::Range(want) => {
            if want.is_empty() {
                return Err(SpecError::Empty {
                    keyspace,
                    what: format!("{want} is empty"),
                });
            }
            let inside = owned.iter().any(|r| {
                r.start <= want.start
                    && match (r.end, want.end) {
                        (None, _) => true,
                        (Some(_), None) => false,
                        (Some(re), Some(we)) => we <= re,
                    }
            });
            if !inside {
                return Err(not_owned(want));
            }
            want
        }
    };
    Ok(MoveSpec {
        keyspace,
        source: source.to_string(),
        target: target.to_string(),
        range,
        generation: routing.generation(),
    })
}

/// Number of keyspace ids in `r` (up to 2^64, hence u128).
fn len(r: &KeyRange) -> u128 {
    let end = r.end.map_or(1u128 << 64, u128::from);
    end.saturating_sub(u128::from(r.start))
}

/// The routing table rows after `spec` at generation `spec.generation + 1`:
/// the moving range owned by the target, every other id where it was, and
/// adjacent ranges of one shard coalesced (a merge leaves one range).
/// Validated as a complete routing table.
///
/// Errors: [`SpecError::NotOwned`] if `routing` no longer has the spec's
/// range inside one of the source's ranges (the plan is stale), or if the
/// result is not a valid routing table (reported the same way: it cannot
/// happen for a plan made from `routing`).
pub fn next_ranges(routing: &RoutingTable, spec: &MoveSpec) -> Result<Vec<ShardRange>, SpecError> {
    let stale = || SpecError::NotOwned {
        keyspace: spec.keyspace.clone(),
        source_shard: spec.source.clone(),
        range: spec.range,
    };
    if routing.generation() != spec.generation {
        return Err(stale());
    }
    let generation = spec.generation + 1;
    let mut pieces: Vec<(KeyRange, String)> = Vec::with_capacity(routing.ranges().len() + 2);
    let mut moved = false;
    for r in routing.ranges() {
        let inside = r.shard == spec.source
            && r.range.start <= spec.range.start
            && match (r.range.end, spec.range.end) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(re), Some(we)) => we <= re,
            };
        if !inside {
            pieces.push((r.range, r.shard.clone()));
            continue;
        }
        moved = true;
        if r.range.start < spec.range.start {
            pieces.push((
                KeyRange {
                    start: r.range.start,
                    end: Some(spec.range.start),
                },
                r.shard.clone(),
            ));
        }
        pieces.push((spec.range, spec.target.clone()));
        if let Some(we) = spec.range.end {
            if r.range.end.is_none_or(|re| we < re) {
                pieces.push((
                    KeyRange {
                        start: we,
                        end: r.range.end,
                    },
                    r.shard.clone(),
                ));
            }
        }
    }
    if !moved {
        return Err(stale());
    }
    let mut out: Vec<ShardRange> = Vec::with_capacity(pieces.len());
    for (range, shard) in pieces {
        if let Some(last) = out.last_mut() {
            if last.shard == shard && last.range.end == Some(range.start) {
                last.range.end = range.end;
                continue;
            }
        }
        out.push(ShardRange {
            keyspace: spec.keyspace.clone(),
            range,
            shard,
            generation,
        });
    }
    RoutingTable::from_ranges(&spec.keyspace, out.clone()).map_err(|_| stale())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::equal_ranges;

    fn table(shards: &[&str], generation: i64) -> RoutingTable {
        let ranges = equal_ranges(shards.len())
            .into_iter()
            .zip(shards)
            .map(|(range, s)| ShardRange {
                keyspace: "ks".into(),
                range,
                shard: s.to_string(),
                generation,
            })
            .collect();
        RoutingTable::from_ranges("ks", ranges).unwrap()
    }

    fn shape(rows: &[ShardRange]) -> Vec<(u64, Option<u64>, &str)> {
        rows.iter()
            .map(|r| (r.range.start, r.range.end, r.shard.as_str()))
            .collect()
    }

    #[test]
    fn split_takes_the_upper_half_of_the_largest_range() {
        let t = table(&["s0", "s1"], 3);
        let spec = plan(&t, "s0", "s2", RangeChoice::UpperHalf).unwrap();
        assert_eq!(
            spec.range,
            KeyRange {
                start: 1 << 62,
                end: Some(1 << 63)
            }
        );
        assert_eq!(spec.generation, 3);
        // The last range is unbounded: its half is computed over 2^64.
        let spec = plan(&t, "s1", "s2", RangeChoice::UpperHalf).unwrap();
        assert_eq!(
            spec.range,
            KeyRange {
                start: 3 << 62,
                end: None
            }
        );
        let next = next_ranges(&t, &spec).unwrap();
        assert_eq!(
            shape(&next),
            vec![
                (0, Some(1 << 63), "s0"),
                (1 << 63, Some(3 << 62), "s1"),
                (3 << 62, None, "s2")
            ]
        );
        assert!(next.iter().all(|r| r.generation == 4));
    }

    #[test]
    fn split_at_a_point_and_its_refusals() {
        let t = table(&["s0", "s1"], 1);
        let spec = plan(&t, "s0", "s2", RangeChoice::At(100)).unwrap();
        assert_eq!(
            spec.range,
            KeyRange {
                start: 100,
                end: Some(1 << 63)
            }
        );
        let e = plan(&t, "s0", "s2", RangeChoice::At(0)).unwrap_err();
        assert!(matches!(e, SpecError::Empty { .. }), "{e}");
        let e = plan(&t, "s0", "s2", RangeChoice::At(1 << 63)).unwrap_err();
        assert!(
            e.to_string()
                .contains("not inside a key range of shard 's0'"),
            "{e}"
        );
        let e = plan(&t, "s0", "s0", RangeChoice::UpperHalf).unwrap_err();
        assert!(matches!(e, SpecError::SameShard { .. }));
        let e = plan(&t, "s9", "s0", RangeChoice::UpperHalf).unwrap_err();
        assert!(matches!(e, SpecError::SourceOwnsNothing { .. }));
        // A one-id range cannot be halved.
        let tiny = RoutingTable::from_ranges(
            "ks",
            vec![
                ShardRange {
                    keyspace: "ks".into(),
                    range: KeyRange {
                        start: 0,
                        end: Some(1),
                    },
                    shard: "a".into(),
                    generation: 1,
                },
                ShardRange {
                    keyspace: "ks".into(),
                    range: KeyRange {
                        start: 1,
                        end: None,
                    },
                    shard: "b".into(),
                    generation: 1,
                },
            ],
        )
        .unwrap();
        assert!(matches!(
            plan(&tiny, "a", "c", RangeChoice::UpperHalf),
            Err(SpecError::Empty { .. })
        ));
    }

    #[test]
    fn merge_back_coalesces_and_moves_round_trip() {
        let t = table(&["s0", "s1"], 1);
        let split = plan(&t, "s0", "s2", RangeChoice::UpperHalf).unwrap();
        let after_split =
            RoutingTable::from_ranges("ks", next_ranges(&t, &split).unwrap()).unwrap();
        assert_eq!(after_split.shards(), ["s0", "s2", "s1"]);
        // Merge: the new shard's whole range back onto its left neighbour.
        let merge = plan(&after_split, "s2", "s0", RangeChoice::Range(split.range)).unwrap();
        let merged = next_ranges(&after_split, &merge).unwrap();
        assert_eq!(
            shape(&merged),
            vec![(0, Some(1 << 63), "s0"), (1 << 63, None, "s1")]
        );
        assert!(merged.iter().all(|r| r.generation == 3));
        // A move of a middle piece leaves three pieces.
        let mid = KeyRange {
            start: 10,
            end: Some(20),
        };
        let m = plan(&t, "s0", "s1", RangeChoice::Range(mid)).unwrap();
        assert_eq!(
            shape(&next_ranges(&t, &m).unwrap()),
            vec![
                (0, Some(10), "s0"),
                (10, Some(20), "s1"),
                (20, Some(1 << 63), "s0"),
                (1 << 63, None, "s1")
            ]
        );
        // Not inside one source range; empty.
        let across = KeyRange {
            start: 10,
            end: Some((1 << 63) + 5),
        };
        assert!(matches!(
            plan(&t, "s0", "s1", RangeChoice::Range(across)),
            Err(SpecError::NotOwned { .. })
        ));
        let empty = KeyRange {
            start: 10,
            end: Some(10),
        };
        assert!(matches!(
            plan(&t, "s0", "s1", RangeChoice::Range(empty)),
            Err(SpecError::Empty { .. })
        ));
    }

    #[test]
    fn a_stale_plan_is_refused() {
        let t = table(&["s0", "s1"], 1);
        let spec = plan(&t, "s0", "s2", RangeChoice::UpperHalf).unwrap();
        let moved = RoutingTable::from_ranges("ks", next_ranges(&t, &spec).unwrap()).unwrap();
        // The same plan against the routing it produced (generation 2).
        assert!(matches!(
            next_ranges(&moved, &spec),
            Err(SpecError::NotOwned { .. })
        ));
    }
}
