//! The catalog side of a PostgresCluster reconcile: once the catalog
//! instance is ready, its schema is migrated and every shard of the spec is
//! registered (`shard<i>` at its client Service), with the same operations
//! as `pg-router meta init` / `meta add-shard`; the keyspaces' generations
//! come back for the status. Behind [`CatalogAccess`] so the reconcile's
//! tests fake it at this boundary; [`PgCatalog`] is the real one.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_postgres::NoTls;

use crate::catalog::{add_shard, migrate, session_config, ShardInfo};

/// `application_name` of the reconciler's catalog sessions.
pub const APPLICATION_NAME: &str = "pg-router-operator";

/// The catalog operations a reconcile runs.
pub trait CatalogAccess: Send + Sync {
    /// Migrates the catalog at `dsn` (libpq key=value, password included)
    /// and registers `shards` (upserts: an existing shard's address is
    /// replaced); returns each keyspace's active generation, by name.
    ///
    /// Errors: a message naming what failed (connect, migrate, a shard).
    fn sync(
        &self,
        dsn: String,
        shards: Vec<ShardInfo>,
    ) -> BoxFuture<'_, Result<BTreeMap<String, i64>, String>>;
}

/// [`CatalogAccess`] against the real catalog (no TLS; 5 s connect timeout).
pub struct PgCatalog;

impl CatalogAccess for PgCatalog {
    fn sync(
        &self,
        dsn: String,
        shards: Vec<ShardInfo>,
    ) -> BoxFuture<'_, Result<BTreeMap<String, i64>, String>> {
        Box::pin(async move {
            let config = session_config(&dsn, APPLICATION_NAME, Duration::from_secs(5))
                .map_err(|e| format!("catalog DSN: {e}"))?;
            let (client, conn) = config
                .connect(NoTls)
                .await
                .map_err(|e| format!("connecting to the catalog: {e}"))?;
            let conn = tokio::spawn(async move {
                let _ = conn.await;
            });
            let result = async {
                migrate(&client)
                    .await
                    .map_err(|e| format!("migrating the catalog: {e}"))?;
                for s in &shards {
                    add_shard(
                        &client,
                        &s.name,
                        &s.host,
                        s.port,
                        &s.dbname,
                        s.user.as_deref(),
                    )
                    .await
                    .map_err(|e| format!("registering shard {}: {e}", s.name))?;
                }
                let rows = client
                    .query("select name, generation from pgrouter.keyspaces", &[])
                    .await
                    .map_err(|e| format!("reading keyspaces: {e}"))?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<BTreeMap<String, i64>, tokio_postgres::Error>>()
                    .map_err(|e| format!("reading keyspaces: {e}"))
            }
            .await;
            drop(client);
            let _ = conn.await;
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_pg::TestPg;

    fn shard(name: &str, host: &str) -> ShardInfo {
        ShardInfo {
            name: name.into(),
            host: host.into(),
            port: 5432,
            dbname: "postgres".into(),
            user: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrates_registers_and_reads_generations() {
        let pg = TestPg::start();
        let shards = vec![
            shard("shard0", "shop-shard0.db.svc"),
            shard("shard1", "shop-shard1.db.svc"),
        ];
        let gens = PgCatalog
            .sync(pg.dsn(), shards.clone())
            .await
            .expect("sync");
        assert!(gens.is_empty(), "no keyspace yet: {gens:?}");
        let c = pg.connect().await;
        c.batch_execute(
            "insert into pgrouter.keyspaces (name, vindex, generation) values ('main', 'hash_murmur3', 3)",
        )
        .await
        .expect("keyspace");
        // Idempotent; a moved shard's address is replaced.
        let moved = vec![shards[0].clone(), shard("shard1", "elsewhere.db.svc")];
        let gens = PgCatalog.sync(pg.dsn(), moved).await.expect("sync again");
        assert_eq!(gens, BTreeMap::from([("main".to_string(), 3)]));
        let hosts: Vec<(String, String)> = c
            .query("select name, host from pgrouter.shards order by name", &[])
            .await
            .expect("shards")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(
            hosts,
            [
                ("shard0".to_string(), "shop-shard0.db.svc".to_string()),
                ("shard1".to_string(), "elsewhere.db.svc".to_string())
            ]
        );
        let e = PgCatalog
            .sync(
                "host=127.0.0.1 port=1 user=postgres connect_timeout=1".into(),
                vec![],
            )
            .await
            .expect_err("nothing listens");
        assert!(e.starts_with("connecting to the catalog"), "{e}");
    }
}
