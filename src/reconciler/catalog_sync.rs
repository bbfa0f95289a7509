//! The catalog side of a PostgresCluster reconcile: once the catalog
//! instance is ready, its schema is migrated and every shard of the spec is
//! registered (`shard<i>` at its client Service), with the same operations
//! as `pg-router meta init` / `meta add-shard`; the keyspaces' generations
//! come back for the status. A ShardRange's layout is applied here too
//! ([`CatalogAccess::apply_ranges`]). Behind [`CatalogAccess`] so the
//! reconciles' tests fake it at this boundary; [`PgCatalog`] is the real
//! one.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_postgres::NoTls;

use crate::catalog::{
    active_ranges, add_shard, assign_ranges, migrate, reassigned, session_config, Assigned,
    CatalogError, ShardInfo,
};
use crate::split::filter::RangeFilter;
use crate::split::occupancy::first_key_in_range;
use crate::split::shards::ShardAccess;
use crate::topology::KeyRange;
use crate::vindex::VindexKind;

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

    /// Makes `req` the keyspace's active layout in the catalog at `dsn`
    /// ([`crate::catalog::assign_ranges`]) after checking that every key
    /// range it gives another shard has no rows where it is now (shards
    /// reached as `postgres` with `shard_password`); returns the keyspace's
    /// active generation and whether it wrote.
    ///
    /// Errors: [`RangesError`].
    fn apply_ranges(
        &self,
        dsn: String,
        shard_password: String,
        req: RangesRequest,
    ) -> BoxFuture<'_, Result<(i64, bool), RangesError>>;
}

/// A key range → shard layout for one keyspace (a ShardRange's spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangesRequest {
    /// Keyspace (created with `vindex` if missing).
    pub keyspace: String,
    /// Its vindex.
    pub vindex: VindexKind,
    /// Ranges and their shards, covering the id space exactly.
    pub layout: Vec<(KeyRange, String)>,
    /// The keyspace generation this same layout was last applied at, if
    /// it was: when the catalog has moved past it to other ranges since
    /// (a split job), the layout is not applied again
    /// ([`RangesError::Superseded`]).
    pub applied_at: Option<i64>,
}

/// Why a layout was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangesError {
    /// Applying it would re-route rows without moving them (a populated
    /// range reassigned): never applied; the message names the range, the
    /// shards and a row's key.
    #[error("{0}")]
    Refused(String),
    /// A split job of the keyspace is active, or its ranges changed while
    /// they were checked: applied later.
    #[error("{0}")]
    Busy(String),
    /// The catalog moved on from this layout after it was applied (a split
    /// job changed the ranges): not re-applied, which would undo the
    /// split; the message names the generations.
    #[error("{0}")]
    Superseded(String),
    /// Anything else (connect, a catalog error, a shard unreachable, a
    /// layout with a gap).
    #[error("{0}")]
    Failed(String),
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
            let client = connect(&dsn).await?;
            {
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
        })
    }

    fn apply_ranges(
        &self,
        dsn: String,
        shard_password: String,
        req: RangesRequest,
    ) -> BoxFuture<'_, Result<(i64, bool), RangesError>> {
        Box::pin(async move {
            let client = connect(&dsn).await.map_err(RangesError::Failed)?;
            apply_checked(&client, &shard_password, &req).await
        })
    }
}

/// A session on the catalog at `dsn` (application name
/// [`APPLICATION_NAME`], 5 s connect timeout, no TLS), its connection
/// driven by a task until the client is dropped.
///
/// Errors: a message (bad DSN, cannot connect).
pub(crate) async fn connect(dsn: &str) -> Result<tokio_postgres::Client, String> {
    let config = session_config(dsn, APPLICATION_NAME, Duration::from_secs(5))
        .map_err(|e| format!("catalog DSN: {e}"))?;
    let (client, conn) = config
        .connect(NoTls)
        .await
        .map_err(|e| format!("connecting to the catalog: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// [`CatalogAccess::apply_ranges`] on an open catalog session.
async fn apply_checked(
    client: &tokio_postgres::Client,
    shard_password: &str,
    req: &RangesRequest,
) -> Result<(i64, bool), RangesError> {
    let failed = |e: CatalogError| RangesError::Failed(e.to_string());
    migrate(client).await.map_err(failed)?;
    let (generation, current) = active_ranges(client, &req.keyspace)
        .await
        .map_err(failed)?
        .unwrap_or_default();
    let next: Vec<_> = req
        .layout
        .iter()
        .map(|(range, shard)| crate::topology::ShardRange {
            keyspace: req.keyspace.clone(),
            range: *range,
            shard: shard.clone(),
            generation: 0,
        })
        .collect();
    let pieces = reassigned(&current, &next);
    if let Some(applied) = req
        .applied_at
        .filter(|g| generation > *g && !pieces.is_empty())
    {
        return Err(RangesError::Superseded(format!(
            "keyspace '{}' moved from generation {applied}, where this layout was applied, \
             to {generation} with other ranges (a split job): not re-applied; \
             set spec.ranges to the catalog's layout (`pg-router meta show`) to manage it again",
            req.keyspace
        )));
    }
    if !pieces.is_empty() {
        let catalog = crate::catalog::load(client).await.map_err(failed)?;
        let access = ShardAccess {
            user: "postgres".into(),
            password: Some(shard_password.to_string()),
            connect_timeout: Duration::from_secs(5),
            tls: None,
        };
        let tables: Vec<_> = catalog
            .tables
            .values()
            .filter(|t| t.keyspace == req.keyspace)
            .collect();
        for piece in &pieces {
            if tables.is_empty() {
                break;
            }
            let info = catalog.shards.get(&piece.from).ok_or_else(|| {
                RangesError::Failed(format!("shard '{}' is not registered", piece.from))
            })?;
            let shard = access
                .connect(info)
                .await
                .map_err(|e| RangesError::Failed(e.to_string()))?;
            for t in &tables {
                let filter = RangeFilter::new(t, piece.range);
                let key = first_key_in_range(&shard, &piece.from, &filter)
                    .await
                    .map_err(|e| RangesError::Failed(e.to_string()))?;
                if let Some(key) = key {
                    return Err(RangesError::Refused(format!(
                        "key range {} has rows on shard '{}' (table '{}', key {key}): \
                         giving it to shard '{}' would strand them; move it with a ShardSplitJob",
                        piece.range, piece.from, t.name, piece.to
                    )));
                }
            }
        }
    }
    match assign_ranges(
        client,
        &req.keyspace,
        req.vindex,
        &req.layout,
        Some(&current),
    )
    .await
    {
        Ok(Assigned::Written { generation }) => Ok((generation, true)),
        Ok(Assigned::Unchanged { generation }) => Ok((generation, false)),
        Err(e @ CatalogError::Busy { .. }) => Err(RangesError::Busy(e.to_string())),
        Err(e) => Err(failed(e)),
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn applies_layouts_and_refuses_a_populated_reassignment() {
        use crate::catalog::add_table;
        use crate::vindex::KeyType;
        let pg = TestPg::start();
        let half = 1u64 << 63;
        let layout = |lo: &str, hi: &str| RangesRequest {
            keyspace: "main".into(),
            vindex: VindexKind::HashMurmur3,
            applied_at: None,
            layout: vec![
                (
                    KeyRange {
                        start: 0,
                        end: Some(half),
                    },
                    lo.to_string(),
                ),
                (
                    KeyRange {
                        start: half,
                        end: None,
                    },
                    hi.to_string(),
                ),
            ],
        };
        // Both shards are this one server (trust auth: any password).
        let here = |name: &str| ShardInfo {
            port: pg.port,
            host: "127.0.0.1".into(),
            ..shard(name, "")
        };
        PgCatalog
            .sync(pg.dsn(), vec![here("shard0"), here("shard1")])
            .await
            .expect("sync");
        let apply = |req| PgCatalog.apply_ranges(pg.dsn(), "pw".into(), req);
        assert_eq!(apply(layout("shard0", "shard1")).await, Ok((1, true)));
        assert_eq!(apply(layout("shard0", "shard1")).await, Ok((1, false)));
        let c = pg.connect().await;
        add_table(&c, "items", "id", "main", None, KeyType::Int)
            .await
            .expect("table");
        c.batch_execute(
            "create table items (id bigint primary key); \
             insert into items select g from generate_series(1, 100) g",
        )
        .await
        .expect("rows");
        // Giving shard1's half to shard0 would strand its rows.
        let e = apply(layout("shard0", "shard0"))
            .await
            .expect_err("populated");
        let RangesError::Refused(m) = &e else {
            panic!("{e:?}")
        };
        assert!(
            m.contains("has rows on shard 'shard1' (table 'items'") && m.contains("ShardSplitJob"),
            "{m}"
        );
        let gens = PgCatalog.sync(pg.dsn(), vec![]).await.expect("read");
        assert_eq!(gens["main"], 1, "nothing was written");
        // Once the range is empty, the same change applies.
        c.batch_execute("truncate items").await.expect("truncate");
        assert_eq!(apply(layout("shard0", "shard0")).await, Ok((2, true)));
        // Applied at generation 1, the catalog since at 2 with other ranges:
        // not re-applied.
        let mut again = layout("shard0", "shard1");
        again.applied_at = Some(1);
        let e = apply(again.clone()).await.expect_err("superseded");
        assert!(matches!(e, RangesError::Superseded(_)), "{e:?}");
        again.applied_at = Some(2);
        assert_eq!(apply(again).await, Ok((3, true)), "a spec edited since");
        let e = apply(layout("shard0", "nope"))
            .await
            .expect_err("unknown shard");
        assert!(matches!(e, RangesError::Failed(_)), "{e:?}");
    }
}
