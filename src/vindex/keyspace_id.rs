//! The keyspace id type: what every vindex maps a sharding key to.

/// A keyspace id: the `u64` a vindex maps a sharding key to.
pub type KeyspaceId = u64;
