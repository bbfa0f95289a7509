//! Backend side: raw protocol connections to shards and per-shard pools.
//!
//! The data path speaks the protocol directly (no row decoding) so frames can
//! be forwarded to clients byte for byte; `tokio-postgres` is used only on
//! the control plane (catalog).

pub mod conn;
pub mod health;
pub mod pool;
pub mod tls;

pub use conn::{
    router_application_name, BackendConn, BackendError, ShardTarget, ROUTER_SESSIONS_PATTERN,
};
pub use health::ShardHealth;
pub use pool::{PoolError, PooledConn, ShardPool};

#[cfg(test)]
mod pool_tests;
