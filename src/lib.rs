//! pg-router: a distributed-SQL proxy for PostgreSQL.
//!
//! Clients speak the PostgreSQL protocol to the router as to one server;
//! the router routes each statement by its sharding key to one of N
//! PostgreSQL shards (fast path) or to several (scatter-gather), and keeps
//! the shard map in a PostgreSQL catalog. See `docs/ARCHITECTURE.md`.

pub mod auth;
pub mod backend;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod dev;
pub mod frontend;
pub mod metrics;
pub mod plan;
pub mod protocol;
pub mod state;
pub mod topology;
pub mod txn;
pub mod value;
pub mod vindex;
