//! [`add_ranges`]: laying a keyspace's id space out over shards.

use std::collections::HashSet;

use tokio_postgres::Client;

use crate::topology::{equal_ranges, ring_ranges, RoutingTable, ShardRange};

use super::error::{CatalogError, DbContext};
use super::keyid;
use super::tx;

/// How [`add_ranges`] divides the keyspace id space `[0, 2^64)` among shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeLayout {
    /// One contiguous range per shard, of equal size, in the order given
    /// (`topology::equal_ranges`).
    Equal,
    /// A consistent-hash ring with `vnodes` points per shard
    /// (`topology::ring_ranges`): many small ranges per shard.
    Ring {
        /// Points per shard; must be > 0.
        vnodes: usize,
    },
}

/// Computes the ranges `layout` gives `shards` for `keyspace` at `generation`,
/// validated as a complete routing table (no I/O).
///
/// Errors: [`CatalogError::InvalidArgument`] for no shards, a duplicate shard
/// or zero vnodes; [`CatalogError::Routing`] if the layout does not cover the
/// id space exactly.
pub fn plan_ranges(
    keyspace: &str,
    generation: i64,
    shards: &[String],
    layout: RangeLayout,
) -> Result<Vec<ShardRange>, CatalogError> {
    if shards.is_empty() {
        return Err(CatalogError::InvalidArgument(format!(
            "keyspace '{keyspace}': no shards given"
        )));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = shards.iter().find(|s| !seen.insert(s.as_str())) {
        return Err(CatalogError::InvalidArgument(format!(
            "keyspace '{keyspace}': shard '{dup}' given twice"
        )));
    }
    let pairs: Vec<_> = match layout {
        RangeLayout::Equal => equal_ranges(shards.len())
            .into_iter()
            .zip(shards.iter().cloned())
            .collect(),
        RangeLayout::Ring { vnodes: 0 } => {
            return Err(CatalogError::InvalidArgument(format!(
                "keyspace '{keyspace}': vnodes must be > 0"
            )));
        }
        RangeLayout::Ring { vnodes } => ring_ranges(shards, vnodes),
    };
    let ranges: Vec<ShardRange> = pairs
        .into_iter()
        .map(|(range, shard)| ShardRange {
            keyspace: keyspace.to_string(),
            range,
            shard,
            generation,
        })
        .collect();
    RoutingTable::from_ranges(keyspace, ranges.clone()).map_err(|source| {
        CatalogError::Routing {
            keyspace: keyspace.to_string(),
            generation,
            source: Box::new(source),
        }
    })?;
    Ok(ranges)
}

/// Replaces the ranges of `keyspace` at its current (active) generation with
/// the layout of `shards`, in one transaction (routers see the old or the new
/// layout, never a mix). This re-routes keys immediately and moves no data:
/// use it to set a keyspace up, not to reshard a populated one.
/// Returns the rows written, by start.
///
/// Errors: [`CatalogError::UnknownKeyspace`], [`CatalogError::UnknownShard`],
/// the errors of [`plan_ranges`], [`CatalogError::Db`].
pub async fn add_ranges(
    client: &Client,
    keyspace: &str,
    shards: &[String],
    layout: RangeLayout,
) -> Result<Vec<ShardRange>, CatalogError> {
    tx::begin(client, tx::READ_WRITE).await?;
    let result = replace_ranges(client, keyspace, shards, layout).await;
    tx::finish(client, result).await
}

async fn replace_ranges(
    client: &Client,
    keyspace: &str,
    shards: &[String],
    layout: RangeLayout,
) -> Result<Vec<ShardRange>, CatalogError> {
    let ctx = || format!("writing the ranges of keyspace '{keyspace}'");
    let generation: i64 = client
        .query_opt(
            "select generation from pgrouter.keyspaces where name = $1 for update",
            &[&keyspace],
        )
        .await
        .ctx(ctx())?
        .ok_or_else(|| CatalogError::UnknownKeyspace {
            row: "add_ranges".to_string(),
            keyspace: keyspace.to_string(),
        })?
        .try_get(0)
        .ctx(ctx())?;
    require_shards(client, keyspace, shards).await?;
    let ranges = plan_ranges(keyspace, generation, shards, layout)?;
    write_generation(client, keyspace, generation, &ranges).await?;
    Ok(ranges)
}

/// Fails unless every one of `shards` is a row of `pgrouter.shards`.
///
/// Errors: [`CatalogError::UnknownShard`] naming the first missing one;
/// [`CatalogError::Db`].
pub(super) async fn require_shards<S: AsRef<str>>(
    client: &Client,
    keyspace: &str,
    shards: &[S],
) -> Result<(), CatalogError> {
    let ctx = || format!("writing the ranges of keyspace '{keyspace}'");
    let names: Vec<&str> = shards.iter().map(AsRef::as_ref).collect();
    let known: HashSet<String> = client
        .query(
            "select name from pgrouter.shards where name = any($1)",
            &[&names],
        )
        .await
        .ctx(ctx())?
        .iter()
        .map(|r| r.try_get::<_, String>(0))
        .collect::<Result<_, _>>()
        .ctx(ctx())?;
    match names.iter().find(|s| !known.contains(**s)) {
        Some(missing) => Err(CatalogError::UnknownShard {
            row: format!("ranges of keyspace '{keyspace}'"),
            shard: missing.to_string(),
        }),
        None => Ok(()),
    }
}

/// Replaces the `shard_ranges` rows of `keyspace` at `generation` with
/// `ranges` (their own `generation` fields are not used), inside the
/// caller's transaction.
///
/// Errors: [`CatalogError::Db`].
pub(super) async fn write_generation(
    client: &Client,
    keyspace: &str,
    generation: i64,
    ranges: &[ShardRange],
) -> Result<(), CatalogError> {
    let ctx = || format!("writing the ranges of keyspace '{keyspace}'");
    client
        .execute(
            "delete from pgrouter.shard_ranges where keyspace = $1 and generation = $2",
            &[&keyspace, &generation],
        )
        .await
        .ctx(ctx())?;
    let starts: Vec<String> = ranges.iter().map(|r| r.range.start.to_string()).collect();
    let ends: Vec<Option<String>> = ranges
        .iter()
        .map(|r| keyid::end_to_text(r.range.end))
        .collect();
    let owners: Vec<&str> = ranges.iter().map(|r| r.shard.as_str()).collect();
    client
        .execute(
            "insert into pgrouter.shard_ranges (keyspace, start_id, end_id, shard, generation)
             select $1, u.s::numeric, u.e::numeric, u.sh, $2
               from unnest($3::text[], $4::text[], $5::text[]) as u(s, e, sh)",
            &[&keyspace, &generation, &starts, &ends, &owners],
        )
        .await
        .ctx(ctx())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s{i}")).collect()
    }

    #[test]
    fn plans_valid_layouts() {
        let eq = plan_ranges("ks", 3, &names(2), RangeLayout::Equal).expect("equal");
        assert_eq!(eq.len(), 2);
        assert_eq!(eq[0].range.start, 0);
        assert_eq!(eq[1].range.end, None);
        assert!(eq.iter().all(|r| r.generation == 3 && r.keyspace == "ks"));
        let ring = plan_ranges("ks", 1, &names(3), RangeLayout::Ring { vnodes: 8 }).expect("ring");
        assert!(ring.len() >= 3);
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(matches!(
            plan_ranges("ks", 1, &[], RangeLayout::Equal),
            Err(CatalogError::InvalidArgument(_))
        ));
        let dup = vec!["a".to_string(), "a".to_string()];
        let e = plan_ranges("ks", 1, &dup, RangeLayout::Equal)
            .expect_err("dup")
            .to_string();
        assert!(e.contains("'a' given twice"), "{e}");
        let e =
            plan_ranges("ks", 1, &names(2), RangeLayout::Ring { vnodes: 0 }).expect_err("vnodes");
        assert!(matches!(e, CatalogError::InvalidArgument(_)));
    }
}
