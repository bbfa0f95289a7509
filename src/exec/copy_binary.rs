//! `COPY ... FROM STDIN (FORMAT binary)` split by sharding key: the
//! client's stream is read into its header and whole tuples by
//! [`crate::protocol::copy_binary`]; every shard's stream gets the
//! client's header, the tuples it owns and its own trailer.

use bytes::BytesMut;

use crate::catalog::Catalog;
use crate::protocol::copy_binary::{BinaryCopyReader, Piece, TRAILER};
use crate::protocol::error::codes;
use crate::protocol::PgError;

/// Routes the complete pieces of `chunk` (CopyData of the client's stream,
/// read by `reader`) into the per-shard buffers `bufs`, indexed like
/// `shards`: the header to all, each tuple to its key's shard, the
/// client's trailer nowhere (see [`end_binary`]).
///
/// Errors: 22P04 for malformed data; those of [`binary_key_shard`].
pub(super) fn split_binary(
    reader: &mut BinaryCopyReader,
    chunk: &[u8],
    catalog: &Catalog,
    table: &str,
    shards: &[String],
    bufs: &mut [BytesMut],
) -> Result<(), PgError> {
    reader.push(chunk, |p| {
        match p {
            Piece::Header(h) => {
                for b in bufs.iter_mut() {
                    b.extend_from_slice(h);
                }
            }
            Piece::Tuple { data, key } => {
                let n = binary_key_shard(catalog, table, key, shards)?;
                bufs[n].extend_from_slice(data);
            }
            Piece::Trailer => {}
        }
        Ok::<(), PgError>(())
    })
}

/// At the client's CopyDone: checks the stream ended with its trailer and
/// gives every shard's stream its own.
///
/// Errors: 22P04 when the stream stopped before its trailer.
pub(super) fn end_binary(reader: &BinaryCopyReader, bufs: &mut [BytesMut]) -> Result<(), PgError> {
    reader.finish()?;
    for b in bufs.iter_mut() {
        b.extend_from_slice(&TRAILER);
    }
    Ok(())
}

/// Index into `shards` of the shard owning the binary key value `key` of
/// sharded table `table` (None = NULL).
///
/// Errors: 23502 for a NULL key; the key type's binary-format error
/// (22P03); XX000 when the shard is not in `shards`.
pub(super) fn binary_key_shard(
    catalog: &Catalog,
    table: &str,
    key: Option<&[u8]>,
    shards: &[String],
) -> Result<usize, PgError> {
    let t = catalog
        .table(table)
        .ok_or_else(|| PgError::unsupported(format!("table \"{table}\" has no routing")))?;
    let Some(key) = key else {
        return Err(PgError::new(
            "23502",
            format!(
                "null value in sharding key column \"{}\" of relation \"{table}\"",
                t.key_column
            ),
        ));
    };
    let ks = catalog
        .keyspace_of(t)
        .ok_or_else(|| PgError::unsupported(format!("table \"{table}\" has no routing")))?;
    let kv = t
        .key_type
        .parse_binary(key)
        .map_err(|e| PgError::new(e.sqlstate(), e.to_string()))?;
    let shard = ks.routing.shard_for(t.vindex.keyspace_id(&kv));
    shards.iter().position(|s| s == shard).ok_or_else(|| {
        PgError::new(
            codes::INTERNAL_ERROR,
            format!("shard \"{shard}\" is not in the keyspace"),
        )
    })
}
