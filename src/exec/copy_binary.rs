//! `COPY ... FROM STDIN (FORMAT binary)` split by sharding key: the
//! client's stream is read into its header and whole tuples by
//! [`crate::protocol::copy_binary`]; every shard's stream gets the
//! client's header, the tuples it owns and its own trailer.

use bytes::BytesMut;

use crate::catalog::Catalog;
use crate::protocol::copy_binary::{BinaryCopyReader, Piece, TRAILER};
use crate::protocol::PgError;

use super::route::{binary_key_shard, null_key, shard_index};

/// Routes the complete pieces of `chunk` (CopyData of the client's stream,
/// read by `reader`) into the per-shard buffers `bufs`, indexed like
/// `shards`: the header to all, each tuple to its key's shard, the
/// client's trailer nowhere (see [`end_binary`]).
///
/// Errors: 22P04 for malformed data; 23502 for a NULL key; those of
/// [`binary_key_shard`] and [`shard_index`].
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
                let shard = binary_key_shard(catalog, table, key)?
                    .ok_or_else(|| null_key(catalog, table))?;
                let n = shard_index(shards, shard)?;
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
