//! Deleting the rows of one key range from a table, in small batches
//! ([`purge_range`]): the source's moved rows after the routing update
//! (step 7), the target's copied rows on a rollback when the table was there
//! before the job, and a replayed `TRUNCATE` on a target that owns other
//! ranges.
//!
//! The table is read in block ranges (TID range scans, PostgreSQL 14+:
//! `ctid >= '(a,0)' and ctid < '(b,0)'`) so no statement scans it whole;
//! the rows whose key is in the range are deleted by `ctid`, a batch per
//! statement, each re-checking that the key is one of those seen in range
//! (a `ctid` reused by another row meanwhile can only match a row of the
//! range). Passes repeat until one finds nothing: rows moved by concurrent
//! updates are caught by the next pass. Meant for a range no client writes
//! to any more.

use tokio_postgres::Client;

use crate::plan::quote_ident;

use super::error::SplitError;
use super::filter::RangeFilter;

/// Blocks read per scan statement.
pub(crate) const BLOCKS_PER_SCAN: i64 = 1024;

/// Most passes over the table before giving up (rows keep appearing in
/// the range: something still writes to it).
const MAX_PASSES: usize = 8;

/// Deletes every row of `filter`'s table on `c` (shard `shard`) whose key is
/// in the range, `batch` rows per DELETE (at least 1); returns the rows
/// deleted. Statements run as they come: autocommit, or inside the
/// caller's open transaction.
///
/// Errors: [`SplitError::Shard`]; [`SplitError::Copy`] for a key the
/// router cannot read, or rows still appearing after the last pass.
pub async fn purge_range(
    c: &Client,
    shard: &str,
    filter: &RangeFilter,
    batch: usize,
) -> Result<u64, SplitError> {
    let t = quote_ident(&filter.table);
    let k = quote_ident(&filter.key_column);
    let err = |what: &str, source| SplitError::Shard {
        shard: shard.to_string(),
        context: format!("{what} '{}'", filter.table),
        source,
    };
    let scan = format!(
        "select ctid::text, {k}::text from {t} \
          where ctid >= format('(%s,0)', $1::int8)::tid and ctid < format('(%s,0)', $2::int8)::tid"
    );
    let delete = format!(
        "delete from {t} where ctid = any($1::text[]::tid[]) and {k}::text = any($2::text[])"
    );
    let mut total = 0u64;
    for _ in 0..MAX_PASSES {
        let blocks: i64 = c
            .query_one(
                &format!(
                    "select pg_catalog.pg_relation_size('{}'::regclass) \
                          / current_setting('block_size')::int8",
                    t.replace('\'', "''")
                ),
                &[],
            )
            .await
            .map_err(|e| err("sizing", e))?
            .get(0);
        let mut found = 0u64;
        let mut start = 0i64;
        while start <= blocks {
            let rows = c
                .query(&scan, &[&start, &(start + BLOCKS_PER_SCAN)])
                .await
                .map_err(|e| err("scanning", e))?;
            start += BLOCKS_PER_SCAN;
            let mut ctids = Vec::new();
            let mut keys = Vec::new();
            for r in &rows {
                let key: Option<String> = r.get(1);
                let inside = filter.text(key.as_deref()).map_err(|e| SplitError::Copy {
                    table: filter.table.clone(),
                    message: format!("a sharding key the router cannot read: {e}"),
                })?;
                if inside {
                    ctids.push(r.get::<_, String>(0));
                    keys.push(key.unwrap_or_default());
                }
            }
            found += ctids.len() as u64;
            for (c_chunk, k_chunk) in ctids.chunks(batch.max(1)).zip(keys.chunks(batch.max(1))) {
                total += c
                    .execute(&delete, &[&c_chunk, &k_chunk])
                    .await
                    .map_err(|e| err("deleting moved rows from", e))?;
            }
        }
        if found == 0 {
            return Ok(total);
        }
    }
    Err(SplitError::Copy {
        table: filter.table.clone(),
        message: format!(
            "rows of the range keep appearing on shard '{shard}' after {MAX_PASSES} passes: something still writes to it"
        ),
    })
}
