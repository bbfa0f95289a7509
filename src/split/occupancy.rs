//! Whether a shard holds any row of a key range ([`first_key_in_range`]):
//! the check before a key range is re-assigned to another shard without a
//! split job (a ShardRange change), which is only safe for a range that
//! has no rows where it is now. Read like [`super::purge`] does, a block
//! range per statement, so no statement scans a large table whole; stops
//! at the first row found.

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::plan::quote_ident;

use super::error::SplitError;
use super::filter::RangeFilter;
use super::purge::BLOCKS_PER_SCAN;

/// The sharding key (text) of one row of `filter`'s table on `c` (shard
/// `shard`) whose key is in the range, or `None` when there is none (a
/// table that does not exist on the shard has none).
///
/// Errors: [`SplitError::Shard`]; [`SplitError::Copy`] for a key the
/// router cannot read.
pub async fn first_key_in_range(
    c: &Client,
    shard: &str,
    filter: &RangeFilter,
) -> Result<Option<String>, SplitError> {
    let t = quote_ident(&filter.table);
    let k = quote_ident(&filter.key_column);
    let err = |what: &str, source| SplitError::Shard {
        shard: shard.to_string(),
        context: format!("{what} '{}'", filter.table),
        source,
    };
    let blocks: i64 = match c
        .query_opt(
            "select pg_catalog.pg_relation_size(c.oid) / current_setting('block_size')::int8 \
               from pg_catalog.pg_class c where c.oid = pg_catalog.to_regclass($1)",
            &[&t],
        )
        .await
    {
        Ok(Some(r)) => r.get(0),
        Ok(None) => return Ok(None),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => return Ok(None),
        Err(e) => return Err(err("sizing", e)),
    };
    let scan = format!(
        "select {k}::text from {t} \
          where ctid >= format('(%s,0)', $1::int8)::tid and ctid < format('(%s,0)', $2::int8)::tid"
    );
    let mut start = 0i64;
    while start <= blocks {
        let rows = c
            .query(&scan, &[&start, &(start + BLOCKS_PER_SCAN)])
            .await
            .map_err(|e| err("scanning", e))?;
        start += BLOCKS_PER_SCAN;
        for r in &rows {
            let key: Option<String> = r.get(0);
            let inside = filter.text(key.as_deref()).map_err(|e| SplitError::Copy {
                table: filter.table.clone(),
                message: format!("a sharding key the router cannot read: {e}"),
            })?;
            if inside {
                return Ok(key);
            }
        }
    }
    Ok(None)
}
