//! Step 3, the initial copy: every sharded table of the keyspace is read on
//! the source under the exported snapshot of step 1 (`SET TRANSACTION
//! SNAPSHOT`, so the copy and the slot's change stream meet exactly at the
//! consistent point) with binary `COPY (SELECT …) TO STDOUT`, filtered row by
//! row in the router by the table's vindex ([`RangeFilter`] over
//! [`BinaryCopyFilter`]), and written to the target with binary `COPY … FROM
//! STDIN` — one COPY statement (one transaction) per table, tables in
//! parallel up to [`CopySettings::parallel_tables`]. Generated columns are
//! left to the target to compute.
//!
//! Afterwards the tables step 2 created get their indexes and constraints
//! (`pg_dump --section=post-data`, restored with `psql` in one
//! transaction): building them once after the copy is faster than keeping
//! them up to date row by row.
//!
//! Progress (rows and bytes per table) goes to the job row
//! (`progress -> 'copy'`, about once a second and when a table is done) and
//! to an [`Observer`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use tokio_postgres::Client;

use crate::catalog::ShardedTable;
use crate::plan::quote_ident;

use crate::txn::failpoint::{self, Failpoint};

use super::bootstrap::{pg_dump, psql};
use super::copy_format::{BinaryCopyFilter, FormatError};
use super::env::JobEnv;
use super::error::{shard_error, SplitError};
use super::filter::RangeFilter;
use super::job::{Job, Phase};
use super::progress::{Observer, TableProgress};
use super::shards::job_application_name;
use super::store;

/// Settings of step 3.
#[derive(Debug, Clone)]
pub struct CopySettings {
    /// Tables copied at the same time (each with one source and one target
    /// connection); at least 1.
    pub parallel_tables: usize,
    /// Directory holding `pg_dump` and `psql` (post-data of created tables).
    pub pg_bin: PathBuf,
}

/// Output is sent to the target in COPY data messages of about this size
/// (bytes).
const SEND_CHUNK: usize = 256 * 1024;

/// How often progress is written to the job row.
const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// What step 3 did.
#[derive(Debug, Clone)]
pub struct CopyReport {
    /// Per table, sorted by name.
    pub tables: Vec<TableProgress>,
    /// Wall time of the copy itself (post-data excluded).
    pub copy_time: Duration,
    /// Wall time of the post-data restore.
    pub post_data_time: Duration,
}

/// Runs step 3 of `job` (phase [`Phase::Bootstrap`]) under the exported
/// snapshot `snapshot` (alive: step 1's replication connection is open and
/// idle) and moves the job to [`Phase::Copy`] when it starts. The job stays
/// in phase copy; catch-up (step 4) moves it on.
///
/// Errors: [`SplitError::PhaseChanged`]; [`SplitError::Copy`] (a key that is
/// not the keyspace's key type, malformed COPY data, a row count that does
/// not add up); [`SplitError::Shard`] (e.g. the snapshot is gone: "invalid
/// snapshot identifier"); [`SplitError::Tool`] from the post-data restore.
/// A failed table's COPY leaves nothing on the target (one statement);
/// tables already copied are removed by rollback.
pub async fn run(
    env: JobEnv<'_>,
    job: &Job,
    snapshot: &str,
    settings: &CopySettings,
    observer: &dyn Observer,
) -> Result<CopyReport, SplitError> {
    if job.phase != Phase::Bootstrap {
        return Err(SplitError::PhaseChanged {
            id: job.id,
            expected: Phase::Bootstrap,
            found: job.phase,
        });
    }
    store::advance(env.cat, job.id, Phase::Bootstrap, Phase::Copy).await?;
    let mut tables: Vec<&ShardedTable> = env
        .catalog
        .tables
        .values()
        .filter(|t| t.keyspace == job.spec.keyspace)
        .collect();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    let board = Mutex::new(BTreeMap::<String, TableProgress>::new());
    for t in &tables {
        let source_bytes: i64 = env
            .source
            .query_one(
                "select coalesce(pg_catalog.pg_table_size(to_regclass($1)), 0)",
                &[&quote_ident(&t.name)],
            )
            .await
            .map_err(|e| shard_error(&env.source_info.name, format!("sizing '{}'", t.name), e))?
            .get(0);
        board.lock().insert(
            t.name.clone(),
            TableProgress {
                table: t.name.clone(),
                source_bytes: source_bytes.max(0) as u64,
                ..TableProgress::default()
            },
        );
    }
    // Largest tables first: the parallel copy ends sooner.
    tables.sort_by_key(|t| std::cmp::Reverse(board.lock()[&t.name].source_bytes));
    let started = Instant::now();
    let parallel = settings.parallel_tables.max(1);
    let copies = futures_util::stream::iter(tables.iter().map(|t| {
        let filter = RangeFilter::new(t, job.spec.range);
        copy_table(env, job.id, filter, snapshot, &board, observer)
    }))
    .buffer_unordered(parallel);
    tokio::pin!(copies);
    let mut tick = tokio::time::interval(PERSIST_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            next = copies.next() => match next {
                None => break,
                Some(Ok(())) => {
                    persist(env, job.id, &board).await?;
                    failpoint::hit(Failpoint::SplitInCopy).await;
                }
                Some(Err(e)) => {
                    let _ = persist(env, job.id, &board).await;
                    return Err(e);
                }
            },
            _ = tick.tick() => persist(env, job.id, &board).await?,
        }
    }
    let copy_time = started.elapsed();
    persist(env, job.id, &board).await?;
    let post = Instant::now();
    if !job.created_tables.is_empty() {
        observer.step("building indexes and constraints of the created tables");
        let bootstrap = super::bootstrap::BootstrapSettings {
            pg_bin: settings.pg_bin.clone(),
        };
        let dump = pg_dump(
            env.access,
            env.source_info,
            &bootstrap,
            &["--schema-only", "--section=post-data"],
            &job.created_tables,
        )
        .await?;
        psql(env.access, env.target_info, &bootstrap, job.id, &dump).await?;
    }
    let tables = board.lock().values().cloned().collect();
    Ok(CopyReport {
        tables,
        copy_time,
        post_data_time: post.elapsed(),
    })
}

/// Writes the board to `progress -> 'copy'`.
async fn persist(
    env: JobEnv<'_>,
    id: i64,
    board: &Mutex<BTreeMap<String, TableProgress>>,
) -> Result<(), SplitError> {
    let value = serde_json::to_value(&*board.lock()).unwrap_or(serde_json::Value::Null);
    store::record_progress(env.cat, id, "copy", &value).await
}

/// Copies the moving range of one table (the target session named for job
/// `id`, so a rollback can end it and wait for it).
async fn copy_table(
    env: JobEnv<'_>,
    id: i64,
    filter: RangeFilter,
    snapshot: &str,
    board: &Mutex<BTreeMap<String, TableProgress>>,
    observer: &dyn Observer,
) -> Result<(), SplitError> {
    let table = filter.table.clone();
    let src_shard = env.source_info.name.as_str();
    let dst_shard = env.target_info.name.as_str();
    let source = env.access.connect(env.source_info).await?;
    let target = env
        .access
        .connect_as(env.target_info, &job_application_name(id))
        .await?;
    let (cols, key_field) = copy_columns(&source, src_shard, &filter).await?;
    let list = cols
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let qt = quote_ident(&table);
    source
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
            snapshot.replace('\'', "''")
        ))
        .await
        .map_err(|e| shard_error(src_shard, "importing the exported snapshot".into(), e))?;
    replica_role(&target, dst_shard).await?;
    let out = source
        .copy_out(&format!(
            "COPY (SELECT {list} FROM {qt}) TO STDOUT (FORMAT binary)"
        ))
        .await
        .map_err(|e| shard_error(src_shard, format!("reading '{table}'"), e))?;
    let sink = target
        .copy_in::<_, Bytes>(&format!("COPY {qt} ({list}) FROM STDIN (FORMAT binary)"))
        .await
        .map_err(|e| shard_error(dst_shard, format!("writing '{table}'"), e))?;
    tokio::pin!(out);
    tokio::pin!(sink);
    let mut f = BinaryCopyFilter::new(key_field);
    let mut read = 0u64;
    let mut last_report = Instant::now();
    let copy_error = |message: String| SplitError::Copy {
        table: table.clone(),
        message,
    };
    while let Some(chunk) = out
        .try_next()
        .await
        .map_err(|e| shard_error(src_shard, format!("reading '{table}'"), e))?
    {
        read += chunk.len() as u64;
        f.push::<KeyError>(&chunk, |key| {
            filter.binary(key).map_err(|e| KeyError::Key(e.to_string()))
        })
        .map_err(|e| copy_error(e.to_string()))?;
        if f.output_len() >= SEND_CHUNK {
            sink.send(f.take_output())
                .await
                .map_err(|e| shard_error(dst_shard, format!("writing '{table}'"), e))?;
        }
        if last_report.elapsed() >= Duration::from_millis(250) {
            last_report = Instant::now();
            let p = update(board, &table, f.counts(), read, false);
            observer.copy(&p);
        }
    }
    f.finish().map_err(|e| copy_error(e.to_string()))?;
    sink.send(f.take_output())
        .await
        .map_err(|e| shard_error(dst_shard, format!("writing '{table}'"), e))?;
    let written = sink
        .as_mut()
        .finish()
        .await
        .map_err(|e| shard_error(dst_shard, format!("committing the copy of '{table}'"), e))?;
    let _ = source.batch_execute("COMMIT").await;
    let counts = f.counts();
    if written != counts.rows_kept {
        return Err(copy_error(format!(
            "the target took {written} rows, {} were sent",
            counts.rows_kept
        )));
    }
    let p = update(board, &table, counts, read, true);
    observer.copy(&p);
    Ok(())
}

/// A key the filter could not read, or malformed COPY data.
#[derive(Debug, thiserror::Error)]
enum KeyError {
    #[error("{0}")]
    Format(#[from] FormatError),
    #[error("a sharding key the router cannot read: {0}")]
    Key(String),
}

fn update(
    board: &Mutex<BTreeMap<String, TableProgress>>,
    table: &str,
    counts: super::copy_format::FilterCounts,
    read: u64,
    done: bool,
) -> TableProgress {
    let mut b = board.lock();
    let p = b.entry(table.to_string()).or_default();
    p.table = table.to_string();
    p.rows_read = counts.rows_read;
    p.rows_copied = counts.rows_kept;
    p.bytes_copied = counts.bytes_kept;
    p.bytes_read = read;
    p.done = done;
    p.clone()
}

/// The table's columns that COPY can write (not dropped, not generated),
/// in order, and the sharding key's position among them.
///
/// Errors: [`SplitError::Copy`] when the key column is not among them.
pub async fn copy_columns(
    c: &Client,
    shard: &str,
    filter: &RangeFilter,
) -> Result<(Vec<String>, usize), SplitError> {
    let rows = c
        .query(
            "select attname::text from pg_catalog.pg_attribute \
              where attrelid = to_regclass($1) and attnum > 0 and not attisdropped \
                and attgenerated = '' order by attnum",
            &[&quote_ident(&filter.table)],
        )
        .await
        .map_err(|e| {
            shard_error(
                shard,
                format!("reading the columns of '{}'", filter.table),
                e,
            )
        })?;
    let cols: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let Some(key) = cols.iter().position(|c| *c == filter.key_column) else {
        return Err(SplitError::Copy {
            table: filter.table.clone(),
            message: format!(
                "sharding key column '{}' is not a stored column on shard '{shard}'",
                filter.key_column
            ),
        });
    };
    Ok((cols, key))
}

/// `SET session_replication_role = replica` on a target connection: the
/// target's triggers and foreign-key checks do not fire for rows the job
/// writes (they ran on the source), as in PostgreSQL's own logical
/// replication. Needs superuser; without it the session keeps its role
/// (logged).
pub async fn replica_role(target: &Client, shard: &str) -> Result<(), SplitError> {
    match target
        .batch_execute("SET session_replication_role = replica")
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            tracing::warn!(shard, "cannot set session_replication_role (not a superuser): target triggers fire for copied rows");
            Ok(())
        }
        Err(e) => Err(shard_error(
            shard,
            "setting session_replication_role".into(),
            e,
        )),
    }
}
