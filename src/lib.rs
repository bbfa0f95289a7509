//! pg-router: a distributed-SQL proxy for PostgreSQL.
//!
//! Clients speak the PostgreSQL protocol to the router as to one server;
//! the router routes each statement by its sharding key to one of N
//! PostgreSQL shards (fast path) or to several (scatter-gather), and keeps
//! the shard map in a PostgreSQL catalog. See `docs/ARCHITECTURE.md`.
//!
//! Modules in data-path order: [`client`] (socket, startup, TLS, auth) →
//! [`session`] (message loop) → [`plan`] → [`exec`] (executors) →
//! [`backend`] (shard connections and pools). Beside them: [`protocol`],
//! [`state`], [`catalog`], [`vindex`]/[`topology`], [`txn`] (2PC decision
//! log and recovery), [`split`] (online resharding), [`metrics`],
//! [`admin`], [`auth`], [`value`], [`cluster`], [`config`], [`dev`].

pub mod backend;
pub mod client;
pub mod exec;
pub mod plan;
pub mod session;

pub mod admin;
pub mod auth;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod dev;
pub mod metrics;
pub mod protocol;
#[cfg(feature = "operator")]
pub mod reconciler;
pub mod split;
pub mod state;
pub mod topology;
pub mod txn;
pub mod value;
pub mod vindex;
