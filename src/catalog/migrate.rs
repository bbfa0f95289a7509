//! The embedded schema migrations of the `pgrouter` catalog and [`migrate`].

use std::collections::HashSet;

use tokio_postgres::Client;

use super::error::{CatalogError, DbContext};
use super::tx;

/// One embedded migration: `shard-metadata/migrations/{version:04}_{name}.sql`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version number; applied in increasing order, recorded in
    /// `pgrouter.schema_migrations`.
    pub version: i32,
    /// Short name (the file name without number and extension).
    pub name: &'static str,
    /// The SQL text, run as one batch inside the migration transaction.
    pub sql: &'static str,
}

/// All migrations compiled into the binary, in version order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../shard-metadata/migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "twopc_decisions",
        sql: include_str!("../../shard-metadata/migrations/0002_twopc_decisions.sql"),
    },
];

/// Creates the schema and the bookkeeping table before anything else, so the
/// applied versions can be read (migration 0001 repeats this harmlessly).
const BOOTSTRAP: &str = "
    create schema if not exists pgrouter;
    create table if not exists pgrouter.schema_migrations (
        version    int primary key,
        name       text,
        applied_at timestamptz default now()
    );";

/// Applies every embedded migration not yet recorded in
/// `pgrouter.schema_migrations`, in version order, all in one transaction
/// holding `pg_advisory_xact_lock` (so concurrent routers / CLIs serialize).
/// Idempotent: a second call applies nothing.
///
/// Returns the versions applied by this call (empty if up to date).
///
/// Errors: [`CatalogError::Migration`] naming the failing migration (nothing is
/// committed then), [`CatalogError::Db`] for the lock or bookkeeping.
pub async fn migrate(client: &Client) -> Result<Vec<i32>, CatalogError> {
    tx::begin(client, tx::READ_WRITE).await?;
    let result = apply_pending(client).await;
    tx::finish(client, result).await
}

async fn apply_pending(client: &Client) -> Result<Vec<i32>, CatalogError> {
    client
        .batch_execute("select pg_advisory_xact_lock(hashtext('pgrouter.migrate'))")
        .await
        .ctx("taking the catalog migration lock")?;
    client
        .batch_execute(BOOTSTRAP)
        .await
        .ctx("creating pgrouter.schema_migrations")?;
    let applied: HashSet<i32> = client
        .query("select version from pgrouter.schema_migrations", &[])
        .await
        .ctx("reading pgrouter.schema_migrations")?
        .iter()
        .map(|r| r.try_get::<_, i32>(0))
        .collect::<Result<_, _>>()
        .ctx("reading pgrouter.schema_migrations")?;
    let mut done = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let failed = |source| CatalogError::Migration {
            version: m.version,
            name: m.name,
            source,
        };
        client.batch_execute(m.sql).await.map_err(failed)?;
        client
            .execute(
                "insert into pgrouter.schema_migrations (version, name) values ($1, $2)",
                &[&m.version, &m.name],
            )
            .await
            .map_err(failed)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied catalog migration"
        );
        done.push(m.version);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    #[test]
    fn migrations_are_in_strictly_increasing_order() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert!(MIGRATIONS
            .iter()
            .all(|m| m.version > 0 && !m.sql.trim().is_empty()));
    }
}
