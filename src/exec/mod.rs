//! Executors: run a planned statement on the shards with the session's
//! [`ExecCtx`] (held backends, client writer, transaction block) and write
//! exactly the response one PostgreSQL server would.
//!
//! - [`fast_path`]: one shard, frames forwarded byte for byte (simple
//!   queries and whole extended-protocol batches); [`exchange`] tracks
//!   which backend response answers which request; [`auto_prepared`]: a
//!   simple query run as a prepared statement of its normalized text.
//! - [`concat`]: scatter-gather without merging (first shard's response,
//!   or concatenated rows with summed command tags).
//! - [`gather`]: scatter-gather of merged SELECTs (ORDER BY, LIMIT/OFFSET,
//!   aggregates, GROUP BY, DISTINCT, HAVING) with its I/O-free merge.
//! - [`commit`]: ending a block with one-phase, two-phase or best-effort
//!   commit rounds; [`txn_control`]: BEGIN/COMMIT/SAVEPOINT and implicit
//!   blocks; [`settings`]: SET/RESET replayed on backends.
//! - [`copy`]: COPY FROM split by sharding key (text, CSV, and binary in
//!   [`copy_binary`]), COPY TO concatenated; [`copy_query`]: `COPY (query)
//!   TO STDOUT` concatenated or merged.
//! - [`split_insert`]: a multi-row INSERT with parameters split by shard
//!   (extended protocol), RETURNING rows in the client's order;
//!   [`insert_select`]: INSERT ... SELECT rows routed by key.
//! - [`owned`], [`lookup`], [`owned_ext`]: writes to tables owning lookup
//!   vindexes and routing through lookup tables; [`inject`]: the
//!   router's own queries inside the client's transaction.
//! - [`schema`]: table columns read from the shards (schema awareness);
//!   [`generated`]: generated sharding keys drawn from the distributed
//!   sequence, `currval`/`nextval`/`lastval` answered by the router
//!   ([`sequence_values`]: the session's values).
//! - [`explain`]: `EXPLAIN (ROUTER)`.
//! - [`route`]: sharding key values → shards (key ranges, IN/ANY pruning).
//!
//! Executors never import the session: what they may use and change is in
//! [`ExecCtx`]; extended-protocol messages reach them as [`message::Item`]s.

pub mod admit;
pub mod auto_prepared;
pub mod block;
pub mod commit;
pub mod concat;
pub mod context;
pub mod copy;
pub mod copy_binary;
pub mod copy_query;
pub mod exchange;
pub mod explain;
pub mod fast_path;
pub mod gather;
pub mod generated;
pub mod inject;
pub mod insert_select;
pub mod lookup;
pub mod message;
pub mod owned;
pub mod owned_ext;
pub mod pool_cache;
pub mod route;
pub mod schema;
pub mod sequence_values;
pub mod settings;
pub mod split_insert;
pub mod statement;
pub mod table_rule;
pub mod txn_control;

pub use block::{Block, BlockOp};
pub use context::{End, ExecCtx, Held};
