//! Throwaway local PostgreSQL servers for `pg-router dev` and the
//! integration tests.
//!
//! [`LocalCluster::start`] brings up N shard instances and one catalog
//! instance on free 127.0.0.1 ports, in parallel, and [`LocalCluster`]'s
//! `Drop` stops them all again (also when a test panics) and deletes a
//! temporary data root.
//!
//! ```no_run
//! use pg_router::cluster::{ClusterOptions, LocalCluster};
//! let cluster = LocalCluster::start(&ClusterOptions::default())?;
//! for shard in &cluster.shards {
//!     println!("{} at {}", shard.name, shard.dsn());
//! }
//! println!("pgbench: {}", cluster.bin("pgbench").display());
//! # Ok::<(), pg_router::cluster::ClusterError>(())
//! ```
//!
//! How it works:
//! - Binaries: [`find_pg_bin_dir`] (`PG_BIN_DIR`, `pg_ctl` on `PATH`, or the
//!   newest `/usr/lib/postgresql/<ver>/bin`).
//! - OS user: PostgreSQL refuses root, so as root the programs run as the
//!   `postgres` user (created as `pgrouter` when missing); otherwise as
//!   ourselves.
//! - Data dirs: `<root>/<name>`, made by `initdb -U postgres -A trust -E UTF8
//!   --locale=C --no-sync`, or copied from a cached initdb template in the
//!   temp dir (`PG_ROUTER_INITDB_TEMPLATE=off` disables it); an existing
//!   cluster is reused. A temporary root goes to `/dev/shm` when it has
//!   4 GiB free (file creation there is ~30x faster than on a VM disk), else
//!   to the temp dir; `PG_ROUTER_TMPDIR` overrides. Our settings go to `<data_dir>/pg_router.conf`
//!   (included from `postgresql.conf`); the server log is
//!   `<data_dir>/postgres.log` and the unix socket lives in the data dir.
//! - Servers run detached (`pg_ctl` puts them in their own session), so a
//!   process that exits without dropping the cluster (SIGKILL, Ctrl-C without
//!   a handler) leaves them running; the next temp-root start in the same pid
//!   namespace kills and deletes such leftovers.

mod bin_dir;
mod conf;
mod data_dir;
mod error;
mod initdb;
mod instance;
mod local;
mod options;
mod os_user;
mod ports;
mod process;
mod reap;
mod template;
#[cfg(test)]
mod tests;
mod tmp_base;

pub use bin_dir::find_pg_bin_dir;
pub use error::ClusterError;
pub use instance::{PgInstance, StopMode};
pub use local::LocalCluster;
pub use options::ClusterOptions;
