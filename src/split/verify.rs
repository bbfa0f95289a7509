//! Verification (the seed's "checksum", Vitess's VDiff): per table, the row
//! count and an order-independent checksum of the moving range, source
//! against target, at one consistent point without blocking writes.
//!
//! A temporary logical slot on the source exports a snapshot at its
//! consistent point C; the job's own stream is applied exactly up to the
//! transactions committed below C ([`WalSource::next_before`]) and a
//! REPEATABLE READ snapshot is taken on the target there, so both sides
//! show the same transactions. Each side's rows of the range (key through
//! the table's vindex) are reduced to their count and the sum modulo
//! 2^128 of `md5(row::text)`; the apply goes on afterwards.

use std::time::Duration;

use futures_util::{pin_mut, TryStreamExt};
use serde::Serialize;
use tokio_postgres::Client;

use crate::plan::quote_ident;

use super::apply::Applier;
use super::capture::{artifact_name, blockers};
use super::change::{lsn_text, parse_lsn};
use super::env::JobEnv;
use super::error::{Context, SplitError};
use super::filter::RangeFilter;
use super::job::Job;
use super::wal::{Before, WalSource};

/// One table's comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCheck {
    /// Table.
    pub table: String,
    /// Rows of the range on the source.
    pub source_rows: u64,
    /// Rows of the range on the target.
    pub target_rows: u64,
    /// Checksum on the source (32 hex digits).
    pub source_checksum: String,
    /// Checksum on the target.
    pub target_checksum: String,
    /// Counts and checksums are equal.
    pub ok: bool,
}

/// A verification's result (`split_jobs.verification`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    /// The consistent point compared at (`pg_lsn` text).
    pub lsn: String,
    /// Per table, sorted by name.
    pub tables: Vec<TableCheck>,
    /// Every table matched.
    pub ok: bool,
    /// Wall time, ms.
    pub elapsed_ms: f64,
}

impl Verification {
    /// The tables that did not match, described.
    pub fn mismatches(&self) -> Vec<String> {
        self.tables
            .iter()
            .filter(|t| !t.ok)
            .map(|t| {
                format!(
                    "'{}': source {} rows / {}, target {} rows / {}",
                    t.table, t.source_rows, t.source_checksum, t.target_rows, t.target_checksum
                )
            })
            .collect()
    }
}

/// Verifies `job` while its stream `wal` is applied by `applier`; `side`
/// is a second replication connection to the source (for the temporary
/// slot). Records the result in the job row.
///
/// Creating the temporary slot waits for the write transactions open on
/// the source (PostgreSQL's snapshot builder); after `slot_timeout` the
/// wait is cancelled (its walsender ended) and nothing of the job's
/// stream has been applied yet.
///
/// Errors: [`SplitError::SlotTimeout`] (naming the transactions it waited
/// for), [`SplitError::Wal`], [`SplitError::Shard`], the apply's and the
/// catalog's. A mismatch is not an error: see [`Verification::ok`].
pub async fn run<W: WalSource, S: WalSource>(
    env: JobEnv<'_>,
    job: &Job,
    wal: &mut W,
    applier: &mut Applier,
    mut side: S,
    slot_timeout: Duration,
) -> Result<Verification, SplitError> {
    let started = std::time::Instant::now();
    let slot = format!("{}_verify", artifact_name(job.id));
    let publication = job
        .publication
        .clone()
        .unwrap_or_else(|| artifact_name(job.id));
    let created = tokio::time::timeout(slot_timeout, side.create_slot(&slot, &publication, true));
    let snapshot = match created.await {
        Ok(r) => r?,
        Err(_) => {
            let shard = &env.source_info.name;
            let blockers = blockers(env.source).await.unwrap_or_default();
            drop(side);
            cancel_slot(env.source, shard, &slot).await?;
            return Err(SplitError::SlotTimeout {
                shard: shard.clone(),
                slot,
                waited_ms: started.elapsed().as_millis(),
                blockers,
            });
        }
    };
    let c: String = env
        .source
        .query_one(
            "select confirmed_flush_lsn::text from pg_catalog.pg_replication_slots where slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| shard_error(&env.source_info.name, "reading the verification slot", e))?
        .get(0);
    let boundary = parse_lsn(&c).unwrap_or(0);
    // Apply exactly the transactions committed below the boundary.
    loop {
        // Held transactions commit once nothing more is at hand.
        let wait = if applier.holding() {
            std::time::Duration::ZERO
        } else {
            std::time::Duration::from_millis(100)
        };
        let applied = match wal.next_before(boundary, wait).await? {
            Before::Event(e) => applier.apply(e).await?,
            Before::Reached | Before::Idle if applier.holding() => applier.flush().await?,
            Before::Reached if !applier.in_transaction() => break,
            Before::Reached | Before::Idle => continue,
        };
        if let super::apply::Applied::Committed { end_lsn, .. } = applied {
            wal.confirm(end_lsn).await?;
        }
    }
    let target = env.access.connect(env.target_info).await?;
    target
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1")
        .await
        .map_err(|e| shard_error(&env.target_info.name, "taking the target snapshot", e))?;
    let source = env.access.connect(env.source_info).await?;
    source
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
            snapshot.replace('\'', "''")
        ))
        .await
        .map_err(|e| {
            shard_error(
                &env.source_info.name,
                "importing the verification snapshot",
                e,
            )
        })?;
    let mut tables: Vec<_> = env
        .catalog
        .tables
        .values()
        .filter(|t| t.keyspace == job.spec.keyspace)
        .collect();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    let mut checks = Vec::new();
    for t in tables {
        let filter = RangeFilter::new(t, job.spec.range);
        let (s, d) = tokio::join!(
            checksum(&source, &env.source_info.name, &filter),
            checksum(&target, &env.target_info.name, &filter)
        );
        let (s, d) = (s?, d?);
        checks.push(TableCheck {
            table: t.name.clone(),
            source_rows: s.0,
            target_rows: d.0,
            source_checksum: format!("{:032x}", s.1),
            target_checksum: format!("{:032x}", d.1),
            ok: s == d,
        });
    }
    let _ = source.batch_execute("COMMIT").await;
    let _ = target.batch_execute("COMMIT").await;
    drop(side);
    let v = Verification {
        lsn: lsn_text(boundary),
        ok: checks.iter().all(|c| c.ok),
        tables: checks,
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    };
    let value = serde_json::to_value(&v).unwrap_or(serde_json::Value::Null);
    env.cat
        .execute(
            "update pgrouter.split_jobs set verification = $2::text::jsonb, updated_at = now() \
              where id = $1",
            &[&job.id, &value.to_string()],
        )
        .await
        .context(|| format!("recording the verification of split job {}", job.id))?;
    Ok(v)
}

/// Count and checksum of the range's rows of a table.
async fn checksum(
    c: &Client,
    shard: &str,
    filter: &RangeFilter,
) -> Result<(u64, u128), SplitError> {
    let sql = format!(
        "select {}::text, md5(t::text) from {} t",
        quote_ident(&filter.key_column),
        quote_ident(&filter.table)
    );
    let rows = c
        .query_raw(&sql, std::iter::empty::<&str>())
        .await
        .map_err(|e| shard_error(shard, "reading rows to verify", e))?;
    pin_mut!(rows);
    let (mut n, mut sum) = (0u64, 0u128);
    while let Some(r) = rows
        .try_next()
        .await
        .map_err(|e| shard_error(shard, "reading rows to verify", e))?
    {
        let key: Option<&str> = r.get(0);
        let inside = filter.text(key).map_err(|e| SplitError::Copy {
            table: filter.table.clone(),
            message: format!("a sharding key the router cannot read: {e}"),
        })?;
        if inside {
            let h: &str = r.get(1);
            n += 1;
            sum = sum.wrapping_add(u128::from_str_radix(h, 16).unwrap_or(0));
        }
    }
    Ok((n, sum))
}

fn shard_error(shard: &str, what: &str, source: tokio_postgres::Error) -> SplitError {
    super::error::shard_error(shard, what.to_string(), source)
}

/// Ends the walsender still creating the temporary slot `slot` on the
/// source and waits (up to 5 s) until the slot is gone; a temporary slot
/// goes with its session.
///
/// Errors: [`SplitError::Shard`].
async fn cancel_slot(source: &Client, shard: &str, slot: &str) -> Result<(), SplitError> {
    for _ in 0..500 {
        let left: i64 = source
            .query_one(
                "select count(pg_catalog.pg_terminate_backend(active_pid)) + \
                        count(*) filter (where active_pid is null) \
                   from pg_catalog.pg_replication_slots where slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(|e| shard_error(shard, "ending the creation of the verification slot", e))?
            .get(0);
        if left == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(SplitError::Wal {
        shard: shard.to_string(),
        message: format!(
            "the temporary slot '{slot}' is still there 5 s after its walsender was ended"
        ),
    })
}
