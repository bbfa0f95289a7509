//! [`assign_ranges`]: installing an explicit key range → shard layout for a
//! keyspace (what a ShardRange resource asks for), and [`reassigned`], the
//! pieces of the id space whose owner such a layout changes. Changing an
//! owner re-routes keys without moving rows, so a caller checks those
//! pieces are empty on their current shard first (the reconciler does,
//! `reconciler::shard_range`); a populated piece moves with a split job.

use std::collections::HashSet;

use tokio_postgres::Client;

use crate::topology::{KeyRange, RoutingTable, ShardRange};
use crate::vindex::VindexKind;

use super::error::{CatalogError, DbContext};
use super::keyid;
use super::ops::add_keyspace;
use super::ranges::{require_shards, write_generation};
use super::tx;

/// A piece of the keyspace id space whose shard a new layout changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassigned {
    /// The piece `[start, end)`.
    pub range: KeyRange,
    /// Its shard in the current layout.
    pub from: String,
    /// Its shard in the new layout.
    pub to: String,
}

/// What [`assign_ranges`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assigned {
    /// The active ranges already were the layout; nothing was written.
    Unchanged {
        /// The keyspace's active generation.
        generation: i64,
    },
    /// The layout was written and is now active at this generation (the
    /// active one for a keyspace that had no ranges, else the next one).
    Written {
        /// The keyspace's active generation after the write.
        generation: i64,
    },
}

impl Assigned {
    /// The keyspace's active generation afterwards.
    pub fn generation(self) -> i64 {
        match self {
            Assigned::Unchanged { generation } | Assigned::Written { generation } => generation,
        }
    }
}

/// The shard owning `ksid` in `ranges`, if any.
fn owner(ranges: &[ShardRange], ksid: u64) -> Option<&str> {
    ranges
        .iter()
        .find(|r| r.range.contains(ksid))
        .map(|r| r.shard.as_str())
}

/// The pieces of the id space owned by one shard in `current` and another
/// in `next`, in keyspace id order, adjacent pieces with the same owners
/// merged. Ids covered by only one of the layouts are not reassigned (a
/// keyspace without ranges has nothing to move). Pure.
pub fn reassigned(current: &[ShardRange], next: &[ShardRange]) -> Vec<Reassigned> {
    let mut bounds: Vec<u64> = current
        .iter()
        .chain(next)
        .flat_map(|r| [Some(r.range.start), r.range.end])
        .flatten()
        .collect();
    bounds.push(0);
    bounds.sort_unstable();
    bounds.dedup();
    let mut out: Vec<Reassigned> = Vec::new();
    for (i, &start) in bounds.iter().enumerate() {
        let end = bounds.get(i + 1).copied();
        let (Some(from), Some(to)) = (owner(current, start), owner(next, start)) else {
            continue;
        };
        if from == to {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.range.end == Some(start) && last.from == from && last.to == to => {
                last.range.end = end;
            }
            _ => out.push(Reassigned {
                range: KeyRange { start, end },
                from: from.to_string(),
                to: to.to_string(),
            }),
        }
    }
    out
}

/// The active generation of `keyspace` and its ranges there (by start);
/// `None` if the keyspace does not exist, an empty list if it has no
/// ranges yet.
///
/// Errors: [`CatalogError::Db`], [`CatalogError::BadRow`].
pub async fn active_ranges(
    client: &Client,
    keyspace: &str,
) -> Result<Option<(i64, Vec<ShardRange>)>, CatalogError> {
    let ctx = || format!("reading the ranges of keyspace '{keyspace}'");
    let Some(row) = client
        .query_opt(
            "select generation from pgrouter.keyspaces where name = $1",
            &[&keyspace],
        )
        .await
        .ctx(ctx())?
    else {
        return Ok(None);
    };
    let generation: i64 = row.try_get(0).ctx(ctx())?;
    let ranges = ranges_at(client, keyspace, generation).await?;
    Ok(Some((generation, ranges)))
}

async fn ranges_at(
    client: &Client,
    keyspace: &str,
    generation: i64,
) -> Result<Vec<ShardRange>, CatalogError> {
    let ctx = || format!("reading the ranges of keyspace '{keyspace}'");
    let rows = client
        .query(
            "select start_id::text, end_id::text, shard from pgrouter.shard_ranges \
              where keyspace = $1 and generation = $2 order by start_id",
            &[&keyspace, &generation],
        )
        .await
        .ctx(ctx())?;
    rows.iter()
        .map(|r| {
            let start: String = r.try_get(0).ctx(ctx())?;
            let end: Option<String> = r.try_get(1).ctx(ctx())?;
            let bad = |problem: String| CatalogError::BadRow {
                row: format!("shard_ranges ({keyspace}, gen {generation}, start {start})"),
                problem,
            };
            Ok(ShardRange {
                keyspace: keyspace.to_string(),
                range: KeyRange {
                    start: keyid::parse_start(&start).map_err(bad)?,
                    end: keyid::parse_end(end.as_deref()).map_err(bad)?,
                },
                shard: r.try_get(2).ctx(ctx())?,
                generation,
            })
        })
        .collect()
}

/// Makes `layout` (key range → shard, covering the id space exactly) the
/// active routing of `keyspace`, creating the keyspace with `vindex` if it
/// does not exist; one transaction, so routers see the old or the new
/// layout. A keyspace without ranges gets them at its active generation;
/// otherwise they are written at the next generation, which becomes
/// active (routers reload on the catalog's NOTIFY). `checked`, when given,
/// is the active layout the caller checked [`reassigned`] against: if the
/// active ranges differ from it nothing is written. No rows move: see the
/// module docs.
///
/// Errors: [`CatalogError::Routing`] for a layout with a gap or overlap;
/// [`CatalogError::VindexConflict`]; [`CatalogError::UnknownShard`];
/// [`CatalogError::Busy`] while a split job of the keyspace is active, or
/// when the active ranges are not `checked`; [`CatalogError::Db`].
pub async fn assign_ranges(
    client: &Client,
    keyspace: &str,
    vindex: VindexKind,
    layout: &[(KeyRange, String)],
    checked: Option<&[ShardRange]>,
) -> Result<Assigned, CatalogError> {
    let rows = |generation: i64| -> Vec<ShardRange> {
        layout
            .iter()
            .map(|(range, shard)| ShardRange {
                keyspace: keyspace.to_string(),
                range: *range,
                shard: shard.clone(),
                generation,
            })
            .collect()
    };
    RoutingTable::from_ranges(keyspace, rows(0)).map_err(|source| CatalogError::Routing {
        keyspace: keyspace.to_string(),
        generation: 0,
        source: Box::new(source),
    })?;
    tx::begin(client, tx::READ_WRITE).await?;
    let result = async {
        add_keyspace(client, keyspace, vindex).await?;
        let ctx = || format!("writing the ranges of keyspace '{keyspace}'");
        let generation: i64 = client
            .query_one(
                "select generation from pgrouter.keyspaces where name = $1 for update",
                &[&keyspace],
            )
            .await
            .ctx(ctx())?
            .try_get(0)
            .ctx(ctx())?;
        let active_job: Option<i64> = client
            .query_opt(
                "select id from pgrouter.split_jobs where keyspace = $1 \
                    and phase not in ('completed', 'failed', 'rolled_back') limit 1",
                &[&keyspace],
            )
            .await
            .ctx(ctx())?
            .map(|r| r.try_get(0))
            .transpose()
            .ctx(ctx())?;
        if let Some(id) = active_job {
            return Err(CatalogError::Busy {
                keyspace: keyspace.to_string(),
                reason: format!("split job {id} is active"),
            });
        }
        let current = ranges_at(client, keyspace, generation).await?;
        let same = |a: &[ShardRange], b: &[ShardRange]| {
            let key = |r: &ShardRange| (r.range, r.shard.clone());
            a.iter().map(key).collect::<HashSet<_>>() == b.iter().map(key).collect::<HashSet<_>>()
        };
        if same(&current, &rows(generation)) {
            return Ok(Assigned::Unchanged { generation });
        }
        if let Some(checked) = checked {
            if !same(&current, checked) {
                return Err(CatalogError::Busy {
                    keyspace: keyspace.to_string(),
                    reason: format!(
                        "its ranges at generation {generation} changed since they were checked"
                    ),
                });
            }
        }
        let shards: Vec<&str> = layout.iter().map(|(_, s)| s.as_str()).collect();
        require_shards(client, keyspace, &shards).await?;
        let next = if current.is_empty() {
            generation
        } else {
            generation + 1
        };
        write_generation(client, keyspace, next, &rows(next)).await?;
        client
            .execute(
                "update pgrouter.keyspaces set generation = $2 where name = $1",
                &[&keyspace, &next],
            )
            .await
            .ctx(ctx())?;
        Ok(Assigned::Written { generation: next })
    }
    .await;
    tx::finish(client, result).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: Option<u64>, shard: &str) -> ShardRange {
        ShardRange {
            keyspace: "main".into(),
            range: KeyRange { start, end },
            shard: shard.into(),
            generation: 1,
        }
    }

    #[test]
    fn reassigned_pieces() {
        let half = 1u64 << 63;
        let two = [r(0, Some(half), "s0"), r(half, None, "s1")];
        assert!(reassigned(&two, &two).is_empty());
        assert!(reassigned(&[], &two).is_empty(), "nothing to move");
        // The upper quarter moves from s1 to s2.
        let q3 = half + (half >> 1);
        let three = [
            r(0, Some(half), "s0"),
            r(half, Some(q3), "s1"),
            r(q3, None, "s2"),
        ];
        assert_eq!(
            reassigned(&two, &three),
            [Reassigned {
                range: KeyRange {
                    start: q3,
                    end: None
                },
                from: "s1".into(),
                to: "s2".into()
            }]
        );
        // Swapping the halves: two pieces; finer bounds in one layout
        // merge back into whole pieces.
        let swapped = [
            r(0, Some(100), "s1"),
            r(100, Some(half), "s1"),
            r(half, None, "s0"),
        ];
        let got = reassigned(&two, &swapped);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got[0].range,
            KeyRange {
                start: 0,
                end: Some(half)
            }
        );
        assert_eq!((got[1].from.as_str(), got[1].to.as_str()), ("s1", "s0"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn assigns_layouts_and_refuses_when_busy() {
        use super::super::test_pg::TestPg;
        use super::super::{add_shard, migrate};
        let pg = TestPg::start();
        let c = pg.connect().await;
        migrate(&c).await.expect("migrate");
        for s in ["s0", "s1", "s2"] {
            add_shard(&c, s, "127.0.0.1", 5432, "postgres", None)
                .await
                .expect("shard");
        }
        let half = 1u64 << 63;
        let layout = |hi: &str| {
            vec![
                (
                    KeyRange {
                        start: 0,
                        end: Some(half),
                    },
                    "s0".to_string(),
                ),
                (
                    KeyRange {
                        start: half,
                        end: None,
                    },
                    hi.to_string(),
                ),
            ]
        };
        let v = VindexKind::HashMurmur3;
        // A new keyspace gets its ranges at generation 1.
        let a = assign_ranges(&c, "main", v, &layout("s1"), None)
            .await
            .expect("first");
        assert_eq!(a, Assigned::Written { generation: 1 });
        let (g, now) = active_ranges(&c, "main").await.expect("read").expect("ks");
        assert_eq!((g, now.len()), (1, 2));
        assert_eq!(now[1].shard, "s1");
        assert_eq!(
            assign_ranges(&c, "main", v, &layout("s1"), None)
                .await
                .expect("same"),
            Assigned::Unchanged { generation: 1 }
        );
        // A change is written at the next generation, checked against what
        // the caller saw.
        let a = assign_ranges(&c, "main", v, &layout("s2"), Some(&now))
            .await
            .expect("move");
        assert_eq!(a, Assigned::Written { generation: 2 });
        let e = assign_ranges(&c, "main", v, &layout("s0"), Some(&now))
            .await
            .expect_err("stale check");
        assert!(matches!(e, CatalogError::Busy { .. }), "{e}");
        let e = assign_ranges(&c, "main", v, &layout("nope"), None)
            .await
            .expect_err("unknown shard");
        assert!(matches!(e, CatalogError::UnknownShard { .. }), "{e}");
        let e = assign_ranges(&c, "main", VindexKind::HashCrc32, &layout("s1"), None)
            .await
            .expect_err("vindex");
        assert!(matches!(e, CatalogError::VindexConflict { .. }), "{e}");
        let mut gap = layout("s1");
        gap[1].0.start += 1;
        let e = assign_ranges(&c, "main", v, &gap, None)
            .await
            .expect_err("gap");
        assert!(matches!(e, CatalogError::Routing { .. }), "{e}");
        // While a split job of the keyspace is active, nothing is written.
        c.batch_execute(
            "insert into pgrouter.split_jobs (keyspace, source, target, start_id, end_id, generation) \
             values ('main', 's2', 's1', 9223372036854775808, null, 2)",
        )
        .await
        .expect("job");
        let e = assign_ranges(&c, "main", v, &layout("s1"), None)
            .await
            .expect_err("busy");
        assert!(e.to_string().contains("split job"), "{e}");
        let (g, now) = active_ranges(&c, "main").await.expect("read").expect("ks");
        assert_eq!((g, now[1].shard.as_str()), (2, "s2"));
        assert!(active_ranges(&c, "none").await.expect("read").is_none());
    }
}
