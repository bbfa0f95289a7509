//! The integration tests, one test binary (`cargo test --profile ci --test
//! it`): one module per area, each running its own embedded cluster (real
//! PostgreSQL shards + catalog) and router; shared helpers in [`common`];
//! [`layout`] checks the source layout's rules. Linking one
//! binary instead of one per area is what keeps the test build short.
//!
//! All tests run in this one process, in parallel (`--test-threads`), so
//! none may depend on owning process-wide state (environment variables,
//! signal handlers, the working directory); the one that installs a panic
//! hook (`fuzz_frontend`) ignores panics raised in test code, which belong
//! to the test that raised them.

mod common;
mod drivers;

mod admin;
mod auto_prepare;
mod bulk_insert;
mod copy_query;
mod fuzz_frontend;
mod gather;
mod generated_keys;
mod insert_select;
mod isolation;
#[cfg(feature = "operator")]
mod kube_live;
#[cfg(feature = "operator")]
mod kube_objects;
#[cfg(feature = "operator")]
mod kube_split;
mod layout;
mod lookup;
mod operations;
mod pgbench;
mod reference;
mod router;
mod scatter_diff;
mod shard_failure;
mod split;
mod split_crash;
mod split_cutoff;
mod split_data;
mod split_online;
mod split_tls;
mod split_verify;
mod subqueries;
mod tls;
mod transactions;
mod twopc_crash;
