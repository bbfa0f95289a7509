//! Vindexes: functions from a sharding key to a keyspace id
//! ([`KeyspaceId`], a `u64`).
//!
//! A keyspace is configured with a key column type ([`KeyType`]) and a
//! vindex ([`VindexKind`]). The router parses a key from SQL text or a Bind
//! parameter ([`KeyType::parse_text`], [`KeyType::parse_binary`]) into a
//! borrowed [`KeyValue`], maps it with [`VindexKind::keyspace_id`], and looks
//! the id up in the keyspace's routing table (`topology::RoutingTable`,
//! which builds on this module).
//!
//! Files, one job each: `keyspace_id` (the id type), `key` (types and
//! values), `parse_int` / `parse_uuid` (PostgreSQL text input), `murmur3`
//! (MurmurHash3 x64_128), `hash` (key byte encoding and the three hashes),
//! `range` (order-preserving ids), `kind` (vindex names and dispatch),
//! `error`.
//! Exact encodings and test vectors: `docs/vindexes.md`.

mod error;
mod hash;
mod key;
mod keyspace_id;
mod kind;
mod murmur3;
mod parse_int;
mod parse_uuid;
mod range;

pub use error::VindexError;
pub use hash::{crc32_id, fnv1a_id, murmur3_id, with_hash_bytes};
pub use key::{KeyType, KeyValue};
pub use keyspace_id::KeyspaceId;
pub use kind::VindexKind;
pub use murmur3::{murmur3_x64_128, murmur3_x64_128_h1};
pub use parse_int::parse_i64;
pub use parse_uuid::parse_uuid;
pub use range::range_id;
