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

/// All migrations compiled into the binary, in version order. Versions need
/// not be contiguous: a binary may lack a version another branch adds, and a
/// catalog may have a later version applied before an earlier one (see
/// [`migrate`]), so every migration must be independent of the ones with
/// other numbers except those it builds on (all build on 1).
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
    Migration {
        version: 3,
        name: "reference_tables",
        sql: include_str!("../../shard-metadata/migrations/0003_reference_tables.sql"),
    },
    Migration {
        version: 4,
        name: "lookup_vindexes",
        sql: include_str!("../../shard-metadata/migrations/0004_lookup_vindexes.sql"),
    },
    Migration {
        version: 5,
        name: "split_jobs",
        sql: include_str!("../../shard-metadata/migrations/0005_split_jobs.sql"),
    },
    Migration {
        version: 6,
        name: "router_leases",
        sql: include_str!("../../shard-metadata/migrations/0006_router_leases.sql"),
    },
    Migration {
        version: 7,
        name: "sequences",
        sql: include_str!("../../shard-metadata/migrations/0007_sequences.sql"),
    },
    Migration {
        version: 8,
        name: "table_rules",
        sql: include_str!("../../shard-metadata/migrations/0008_table_rules.sql"),
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
/// Each version is checked on its own, not against the highest applied one:
/// a gap in the versions (e.g. 1 and 3 applied, 2 unknown to this binary) is
/// fine, and a version that appears later below the highest applied one
/// (2 after 1 and 3) is applied by the next call.
///
/// Returns the versions applied by this call, ascending (empty if up to date).
///
/// Errors: [`CatalogError::Migration`] naming the failing migration (nothing is
/// committed then), [`CatalogError::Db`] for the lock or bookkeeping.
pub async fn migrate(client: &Client) -> Result<Vec<i32>, CatalogError> {
    migrate_with(client, MIGRATIONS).await
}

/// [`migrate`] with an explicit migration list (tests use synthetic lists).
pub(crate) async fn migrate_with(
    client: &Client,
    migrations: &[Migration],
) -> Result<Vec<i32>, CatalogError> {
    tx::begin(client, tx::READ_WRITE).await?;
    let result = apply_pending(client, migrations).await;
    tx::finish(client, result).await
}

/// The migrations of `migrations` whose version is not in `applied`, in
/// ascending version order (whatever the order of `migrations`).
fn pending<'m>(migrations: &'m [Migration], applied: &HashSet<i32>) -> Vec<&'m Migration> {
    let mut todo: Vec<&Migration> = migrations
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .collect();
    todo.sort_by_key(|m| m.version);
    todo
}

async fn apply_pending(
    client: &Client,
    migrations: &[Migration],
) -> Result<Vec<i32>, CatalogError> {
    client
        // "already exists, skipping" NOTICEs of re-run bootstrap DDL are noise.
        .batch_execute(
            "set local client_min_messages = warning; \
             select pg_advisory_xact_lock(hashtext('pgrouter.migrate'))",
        )
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
    for m in pending(migrations, &applied) {
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
    use std::collections::HashSet;

    use super::{pending, Migration, MIGRATIONS};

    #[test]
    fn migrations_are_in_strictly_increasing_order() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert!(MIGRATIONS
            .iter()
            .all(|m| m.version > 0 && !m.sql.trim().is_empty()));
    }

    #[test]
    fn pending_tolerates_gaps_and_late_lower_versions() {
        let m = |version| Migration {
            version,
            name: "m",
            sql: "select 1",
        };
        let versions = |list: Vec<&Migration>| list.iter().map(|m| m.version).collect::<Vec<_>>();
        // A binary without version 2: 1 and 3, in order.
        let without_2 = [m(1), m(3)];
        assert_eq!(versions(pending(&without_2, &HashSet::new())), [1, 3]);
        // A later binary with 2, against a catalog holding 1 and 3: only 2.
        let with_2 = [m(1), m(2), m(3)];
        let applied: HashSet<i32> = [1, 3].into_iter().collect();
        assert_eq!(versions(pending(&with_2, &applied)), [2]);
        // Listed out of order: still applied in ascending order.
        let shuffled = [m(3), m(1), m(2)];
        assert_eq!(versions(pending(&shuffled, &HashSet::new())), [1, 2, 3]);
        // Versions the catalog has but the binary does not know are ignored.
        let applied: HashSet<i32> = [1, 2, 3, 4].into_iter().collect();
        assert!(pending(&with_2, &applied).is_empty());
    }
}
