//! The CDC apply of step 4 ([`Applier`]): the source's changes, in commit
//! order and transaction by transaction, applied to the target when their
//! row is in the moving range.
//!
//! - INSERT of a row in the range: inserted.
//! - UPDATE: the row's new key decides. In the range: updated by its old
//!   identity (primary key, replica identity index, or the whole old row
//!   with `REPLICA IDENTITY FULL`), only the columns the change carries (an
//!   unchanged TOASTed value is absent and stays as it is); if no row
//!   matched, the row moved into the range and is inserted, values the
//!   change left out read from the source. Out of the range: deleted by its
//!   old identity (a row that moved out).
//! - DELETE: by identity, skipped when the old key is known and outside.
//! - TRUNCATE of a keyspace table: `TRUNCATE` when the target owns no other
//!   range of the keyspace, otherwise the range's rows are deleted.
//!
//! Group commit: a source transaction's commit is held while the stream has
//! more at hand, and the held transactions (at most 4,096, or 10,000 changes)
//! are applied in one target transaction, their statements pipelined: two
//! round trips per group, so a busy source is applied in batches as large
//! as the backlog rather than one round trip per source transaction. A
//! transaction carrying the job's fence, or a TRUNCATE, commits its group
//! at once.
//!
//! Exactly once: each group commits on the target together with the source
//! position of its last transaction, through a replication origin
//! (`pg_replication_origin_xact_setup`, PostgreSQL docs §9.27.6 and "Replication
//! Progress Tracking"), named like the slot. After a restart the stream
//! replays from the slot's confirmed position, and transactions the origin
//! has already seen are skipped (a group ends at a source commit boundary,
//! so the target always holds a prefix of the source's commit order). The
//! slot is confirmed only after the
//! target's commit ([`super::wal::WalSource::confirm`]).
//!
//! Identities are assumed unique across the keyspace (as a merge requires:
//! both shards' rows end up under one primary key).

use std::collections::HashMap;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use crate::plan::quote_ident;

use super::apply_sql;
use super::apply_target::{Flushed, Target};
use super::capture::artifact_name;
use super::change::{lsn_text, parse_lsn, Lsn, RowImage, WalEvent};
use super::copy::replica_role;
use super::env::JobEnv;
use super::error::{shard_error, SplitError};
use super::filter::RangeFilter;
use super::job::Job;
use super::progress::CatchUpProgress;
use super::purge::purge_range;

/// How a table's rows are identified on the target.
#[derive(Debug, Clone)]
struct ApplyTable {
    filter: RangeFilter,
    /// Column → type name (`format_type(atttypid, NULL)`), the target's
    /// stored columns.
    types: HashMap<String, String>,
    /// Identity columns; empty: the whole row (`REPLICA IDENTITY FULL`
    /// without a key).
    identity: Vec<String>,
}

/// What applying one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Nothing to report (a change inside a transaction, or an event the
    /// apply ignores).
    Nothing,
    /// A source transaction ended and is held for the next target commit
    /// (group commit): call [`Applier::flush`] when no further event is at
    /// hand.
    Held,
    /// The held source transactions ended at `end_lsn` (committed on the
    /// target in one transaction if they had changes in the range);
    /// `fence` is the content of a message with the job's fence prefix one
    /// of them carried.
    Committed {
        /// Position just past the last source commit record.
        end_lsn: Lsn,
        /// The last source commit time, µs since the Unix epoch.
        commit_time_us: i64,
        /// The job's fence message in these transactions, if any.
        fence: Option<Vec<u8>>,
    },
}

/// Most changes sent in one pipeline; larger groups are applied statement
/// by statement. A group is committed once it holds this many.
const MAX_PIPELINED: usize = 10_000;

/// Most source transactions held for one target commit.
const MAX_GROUP: usize = 4096;

/// Records the source position (`$1` end LSN, `$2` commit time µs, as
/// text) with the open target transaction (PostgreSQL docs, "Replication
/// Management Functions": `pg_replication_origin_xact_setup`).
const ORIGIN_SETUP: &str = "select pg_catalog.pg_replication_origin_xact_setup($1::pg_lsn, \
                            to_timestamp($2::float8 / 1e6))";

/// The prefix of job `id`'s fence messages (`pg_logical_emit_message`).
pub fn fence_prefix(id: i64) -> String {
    format!("{}_fence", artifact_name(id))
}

/// The source transaction being received.
struct Txn {
    commit_time_us: i64,
    /// Its changes, applied with its group.
    changes: Vec<WalEvent>,
    /// Already applied before a restart.
    skip: bool,
    fence: Option<Vec<u8>>,
}

/// Source transactions that committed on the source and wait for one
/// target transaction (group commit).
#[derive(Default)]
struct Group {
    /// Each held transaction's changes, in source commit order (not those
    /// applied before a restart).
    txns: Vec<Vec<WalEvent>>,
    /// Changes in `txns`.
    changes: usize,
    /// A change in `txns` is a TRUNCATE.
    truncates: bool,
    /// Some transaction is held (possibly one with nothing to apply).
    held: bool,
    end_lsn: Lsn,
    commit_time_us: i64,
    fence: Option<Vec<u8>>,
}

/// Applies the source's change stream to the target (see the module
/// docs).
pub struct Applier {
    job_id: i64,
    target: Target,
    source: Client,
    source_shard: String,
    origin: String,
    tables: HashMap<String, ApplyTable>,
    /// The target owns no other range of the keyspace: TRUNCATE is replayed
    /// as TRUNCATE.
    truncate_whole: bool,
    /// Transactions committed below this position were applied before.
    skip_before: Lsn,
    /// The snapshot's consistent point: the target has everything before
    /// it from the copy.
    consistent: Lsn,
    txn: Option<Txn>,
    group: Group,
    /// A target transaction is open (or BEGIN is queued).
    open: bool,
    /// Counters, for the job row and the terminal.
    pub progress: CatchUpProgress,
}

impl Applier {
    /// Opens the apply of `job`: its own connections to target and source,
    /// the target session in `session_replication_role = replica` with the
    /// job's replication origin (created if missing), and each keyspace
    /// table's columns (target) and identity (source).
    ///
    /// Errors: [`SplitError::Shard`] (e.g. the role may not use replication
    /// origins: superuser or `GRANT EXECUTE` on them is needed),
    /// [`SplitError::Apply`] for a table without a usable identity.
    pub async fn open(env: JobEnv<'_>, job: &Job) -> Result<Applier, SplitError> {
        let tshard = env.target_info.name.clone();
        let sshard = env.source_info.name.clone();
        let app = super::shards::job_application_name(job.id);
        let target = env.access.connect_as(env.target_info, &app).await?;
        let source = env.access.connect(env.source_info).await?;
        replica_role(&target, &tshard).await?;
        let origin = artifact_name(job.id);
        target
            .execute(
                "select pg_catalog.pg_replication_origin_create($1) \
                  where not exists (select 1 from pg_catalog.pg_replication_origin where roname = $1)",
                &[&origin],
            )
            .await
            .map_err(|e| shard_error(&tshard, format!("creating replication origin '{origin}'"), e))?;
        target
            .execute(
                "select pg_catalog.pg_replication_origin_session_setup($1)",
                &[&origin],
            )
            .await
            .map_err(|e| shard_error(&tshard, format!("using replication origin '{origin}'"), e))?;
        let done: String = target
            .query_one(
                "select coalesce(pg_catalog.pg_replication_origin_progress($1, true), '0/0')::text",
                &[&origin],
            )
            .await
            .map_err(|e| shard_error(&tshard, format!("reading replication origin '{origin}'"), e))?
            .get(0);
        let skip_before = parse_lsn(&done).unwrap_or(0);
        let mut tables = HashMap::new();
        for t in env.catalog.tables.values() {
            if t.keyspace != job.spec.keyspace {
                continue;
            }
            let filter = RangeFilter::new(t, job.spec.range);
            let types = target_types(&target, &tshard, &t.name).await?;
            let identity = identity_columns(&source, &sshard, &t.name).await?;
            tables.insert(
                t.name.clone(),
                ApplyTable {
                    filter,
                    types,
                    identity,
                },
            );
        }
        let truncate_whole = !env
            .catalog
            .keyspaces
            .get(&job.spec.keyspace)
            .is_some_and(|k| k.routing.shards().contains(&tshard));
        Ok(Applier {
            job_id: job.id,
            target: Target::new(target, tshard),
            source,
            source_shard: sshard,
            origin,
            tables,
            truncate_whole,
            skip_before,
            consistent: job.snapshot_lsn.as_deref().and_then(parse_lsn).unwrap_or(0),
            txn: None,
            group: Group::default(),
            open: false,
            progress: CatchUpProgress {
                applied_lsn: (skip_before > 0).then(|| lsn_text(skip_before)),
                ..CatchUpProgress::default()
            },
        })
    }

    /// The source position the target holds everything before: the last
    /// applied commit's end, at least the snapshot's consistent point (0:
    /// neither known).
    pub fn applied(&self) -> Lsn {
        self.skip_before.max(self.consistent)
    }

    /// Applies one event. A source commit is held ([`Applied::Held`]) for
    /// group commit, or commits the group at once when it is full, carries
    /// the job's fence or truncates ([`Applied::Committed`]).
    ///
    /// Errors: [`SplitError::Shard`] (a statement failed on the target:
    /// its transaction is rolled back), [`SplitError::Apply`] (a change the
    /// apply cannot place: no key value, a column the target lacks, a
    /// change outside a transaction).
    pub async fn apply(&mut self, event: WalEvent) -> Result<Applied, SplitError> {
        match event {
            WalEvent::Begin {
                final_lsn,
                commit_time_us,
            } => {
                self.txn = Some(Txn {
                    commit_time_us,
                    changes: Vec::new(),
                    skip: final_lsn < self.skip_before,
                    fence: None,
                });
                Ok(Applied::Nothing)
            }
            WalEvent::Commit {
                end_lsn,
                commit_time_us,
                ..
            } => self.hold(end_lsn, commit_time_us).await,
            WalEvent::Message { prefix, content } => {
                if prefix == fence_prefix(self.job_id) {
                    if let Some(t) = self.txn.as_mut() {
                        t.fence = Some(content);
                    }
                }
                Ok(Applied::Nothing)
            }
            change => match self.txn.as_mut() {
                Some(t) if t.skip => Ok(Applied::Nothing),
                Some(t) => {
                    t.changes.push(change);
                    Ok(Applied::Nothing)
                }
                // pgoutput sends every change inside BEGIN … COMMIT.
                None => Err(SplitError::Apply {
                    table: change_table(&change),
                    message: "a change arrived outside a transaction".into(),
                }),
            },
        }
    }

    /// A source transaction has begun and not yet committed.
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// Source transactions are held for the next [`Applier::flush`].
    pub fn holding(&self) -> bool {
        self.group.held
    }

    /// The replication origin on the target (named like the slot).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Adds the transaction ending at `end_lsn` to the group.
    async fn hold(&mut self, end_lsn: Lsn, commit_time_us: i64) -> Result<Applied, SplitError> {
        let Some(t) = self.txn.take() else {
            return Ok(Applied::Nothing);
        };
        let g = &mut self.group;
        if t.skip {
            self.progress.skipped += 1;
        } else {
            g.changes += t.changes.len();
            g.truncates |= t
                .changes
                .iter()
                .any(|c| matches!(c, WalEvent::Truncate { .. }));
            g.txns.push(t.changes);
        }
        g.held = true;
        g.end_lsn = g.end_lsn.max(end_lsn);
        g.commit_time_us = g.commit_time_us.max(t.commit_time_us).max(commit_time_us);
        if t.fence.is_some() {
            g.fence = t.fence;
        }
        if g.fence.is_some()
            || g.truncates
            || g.changes >= MAX_PIPELINED
            || g.txns.len() >= MAX_GROUP
        {
            return self.flush().await;
        }
        Ok(Applied::Held)
    }

    /// Commits the held source transactions on the target in one
    /// transaction, with the replication origin's position at the last
    /// one's end; [`Applied::Committed`] (or [`Applied::Nothing`] when
    /// nothing was held).
    ///
    /// Errors: as [`Applier::apply`]; the group is dropped (a restart
    /// replays it from the slot's confirmed position).
    pub async fn flush(&mut self) -> Result<Applied, SplitError> {
        if !self.group.held {
            return Ok(Applied::Nothing);
        }
        let g = std::mem::take(&mut self.group);
        let started = std::time::Instant::now();
        let applied = self
            .apply_group(
                &g.txns,
                g.changes,
                g.truncates,
                (g.end_lsn, g.commit_time_us),
            )
            .await;
        if applied.is_err() && self.open {
            // Best effort: the error is what matters to the caller.
            let _ = self.target.client.batch_execute("ROLLBACK").await;
        }
        self.open = false;
        applied?;
        tracing::debug!(
            transactions = g.txns.len(),
            changes = g.changes,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "group applied"
        );
        if g.end_lsn > self.skip_before {
            self.skip_before = g.end_lsn;
        }
        self.progress.applied_lsn = Some(lsn_text(self.skip_before));
        Ok(Applied::Committed {
            end_lsn: g.end_lsn,
            commit_time_us: g.commit_time_us,
            fence: g.fence,
        })
    }

    /// Opens the target transaction on the first applied change, and
    /// counts the change.
    async fn begin(&mut self) -> Result<(), SplitError> {
        self.progress.changes += 1;
        if !self.open {
            if !self.target.queueing() {
                self.target
                    .client
                    .batch_execute("BEGIN")
                    .await
                    .map_err(|e| shard_error(&self.target.shard, "BEGIN".into(), e))?;
            }
            // Otherwise BEGIN goes out with the queued statements.
            self.open = true;
        }
        Ok(())
    }

    /// Applies a group's transactions (`changes` changes in all) in one
    /// target transaction and commits it with the replication origin's
    /// position `origin` = (end LSN, commit time µs): pipelined (BEGIN,
    /// every statement and the origin's position in one round trip, then
    /// COMMIT) unless it truncates or is very large; statement by
    /// statement when an UPDATE matched no row in the pipeline (a row
    /// moving into the range needs an INSERT in its place). No target
    /// transaction when no change is in the range.
    async fn apply_group(
        &mut self,
        txns: &[Vec<WalEvent>],
        changes: usize,
        truncates: bool,
        origin: (Lsn, i64),
    ) -> Result<(), SplitError> {
        let (lsn, time) = (lsn_text(origin.0), origin.1.to_string());
        if changes <= MAX_PIPELINED && !truncates {
            let counted = self.progress.clone();
            self.target.start_queue();
            let queued = self.apply_txns(txns).await;
            if queued.is_err() || !self.open {
                // Nothing was sent, BEGIN included.
                self.target.flush_discard();
                self.open = false;
                return queued;
            }
            self.target
                .run(ORIGIN_SETUP.into(), &[Some(&lsn), Some(&time)], false)
                .await?;
            match self.target.flush().await? {
                Flushed::Ok => return self.commit_target().await,
                Flushed::Unmatched => {
                    // Rolled back: apply it again, statement by statement.
                    self.progress = counted;
                    self.open = false;
                }
            }
        }
        self.apply_txns(txns).await?;
        if self.open {
            self.target
                .run(ORIGIN_SETUP.into(), &[Some(&lsn), Some(&time)], false)
                .await?;
            self.commit_target().await?;
        }
        Ok(())
    }

    /// Applies (or queues) each transaction's changes, counting the
    /// transactions with a change in the range.
    async fn apply_txns(&mut self, txns: &[Vec<WalEvent>]) -> Result<(), SplitError> {
        for changes in txns {
            let before = self.progress.changes;
            for c in changes {
                self.change(c).await?;
            }
            if self.progress.changes > before {
                self.progress.transactions += 1;
            } else {
                self.progress.skipped += 1;
            }
        }
        Ok(())
    }

    async fn commit_target(&mut self) -> Result<(), SplitError> {
        self.target
            .client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| shard_error(&self.target.shard, "COMMIT".into(), e))?;
        self.open = false;
        self.progress.commits += 1;
        Ok(())
    }

    async fn change(&mut self, change: &WalEvent) -> Result<(), SplitError> {
        match change {
            WalEvent::Insert { table, new } => {
                let Some(t) = self.tables.get(table).cloned() else {
                    return Ok(());
                };
                let key = key_of(&t, new, None)?;
                if t.filter.text(key).map_err(|e| key_error(&t, e))? {
                    self.begin().await?;
                    self.insert(&t, new).await?;
                }
            }
            WalEvent::Update { table, old, new } => {
                let Some(t) = self.tables.get(table).cloned() else {
                    return Ok(());
                };
                let key = key_of(&t, new, old.as_ref())?;
                let inside = t.filter.text(key).map_err(|e| key_error(&t, e))?;
                let ident_row = old.as_ref().unwrap_or(new);
                self.begin().await?;
                if inside {
                    let set = typed(&t, &new.0)?;
                    let (ident, vals) = identity(&t, ident_row)?;
                    let sql =
                        apply_sql::update(&t.filter.table, &set, &ident, t.identity.is_empty());
                    let mut params: Vec<Option<&str>> =
                        new.0.iter().map(|(_, v)| v.as_deref()).collect();
                    params.extend(vals.iter().copied());
                    let n = self.target.run(sql, &params, true).await?;
                    if n == 0 {
                        // Moved into the range: insert it.
                        let full = self.complete(&t, new).await?;
                        if let Some(full) = full {
                            self.insert(&t, &full).await?;
                        }
                    }
                } else {
                    self.delete(&t, ident_row).await?;
                }
            }
            WalEvent::Delete { table, old } => {
                let Some(t) = self.tables.get(table).cloned() else {
                    return Ok(());
                };
                if let Some(k) = old.get(&t.filter.key_column) {
                    if !t.filter.text(k).map_err(|e| key_error(&t, e))? {
                        return Ok(());
                    }
                }
                self.begin().await?;
                self.delete(&t, old).await?;
            }
            WalEvent::Truncate { tables } => {
                for name in tables {
                    let Some(t) = self.tables.get(name).cloned() else {
                        continue;
                    };
                    self.begin().await?;
                    if self.truncate_whole {
                        let sql = format!("TRUNCATE {}", quote_ident(&t.filter.table));
                        self.target.client.batch_execute(&sql).await.map_err(|e| {
                            shard_error(&self.target.shard, format!("running `{sql}`"), e)
                        })?;
                    } else {
                        purge_range(&self.target.client, &self.target.shard, &t.filter, 1000)
                            .await?;
                    }
                }
            }
            WalEvent::Begin { .. } | WalEvent::Commit { .. } | WalEvent::Message { .. } => {}
        }
        Ok(())
    }

    async fn insert(&mut self, t: &ApplyTable, row: &RowImage) -> Result<(), SplitError> {
        let cols = typed(t, &row.0)?;
        let sql = apply_sql::insert(&t.filter.table, &cols);
        let params: Vec<Option<&str>> = row.0.iter().map(|(_, v)| v.as_deref()).collect();
        self.target.run(sql, &params, false).await?;
        Ok(())
    }

    async fn delete(&mut self, t: &ApplyTable, old: &RowImage) -> Result<(), SplitError> {
        let (ident, vals) = identity(t, old)?;
        let sql = apply_sql::delete(&t.filter.table, &ident, t.identity.is_empty());
        self.target.run(sql, &vals, false).await?;
        Ok(())
    }

    /// `new` with the columns it lacks (unchanged TOASTed values) read from
    /// the source by identity; None if the row is gone there (its DELETE
    /// follows in the stream).
    async fn complete(
        &mut self,
        t: &ApplyTable,
        new: &RowImage,
    ) -> Result<Option<RowImage>, SplitError> {
        let missing: Vec<&str> = t
            .types
            .keys()
            .map(String::as_str)
            .filter(|c| new.get(c).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(Some(new.clone()));
        }
        let (ident, vals) = identity(t, new)?;
        let sql = apply_sql::select(&t.filter.table, &missing, &ident, t.identity.is_empty());
        let stmt = self
            .source
            .prepare_typed(&sql, &vec![Type::TEXT; vals.len()])
            .await
            .map_err(|e| shard_error(&self.source_shard, format!("preparing `{sql}`"), e))?;
        let p: Vec<&(dyn ToSql + Sync)> = vals.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let row = self
            .source
            .query_opt(&stmt, &p)
            .await
            .map_err(|e| shard_error(&self.source_shard, format!("running `{sql}`"), e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut full = new.clone();
        for (i, c) in missing.iter().enumerate() {
            full.0
                .push((c.to_string(), row.get::<_, Option<String>>(i)));
        }
        Ok(Some(full))
    }
}

/// The table a row change names (for an error).
fn change_table(change: &WalEvent) -> String {
    match change {
        WalEvent::Insert { table, .. }
        | WalEvent::Update { table, .. }
        | WalEvent::Delete { table, .. } => table.clone(),
        WalEvent::Truncate { tables } => tables.join(", "),
        WalEvent::Begin { .. } | WalEvent::Commit { .. } | WalEvent::Message { .. } => {
            String::new()
        }
    }
}

/// The sharding key of a change: from the new image, or the old one when
/// the new lacks it.
fn key_of<'a>(
    t: &ApplyTable,
    new: &'a RowImage,
    old: Option<&'a RowImage>,
) -> Result<Option<&'a str>, SplitError> {
    let k = &t.filter.key_column;
    new.get(k)
        .or_else(|| old.and_then(|o| o.get(k)))
        .ok_or_else(|| SplitError::Apply {
            table: t.filter.table.clone(),
            message: format!("the change carries no value of sharding key column '{k}'"),
        })
}

fn key_error(t: &ApplyTable, e: crate::vindex::VindexError) -> SplitError {
    SplitError::Apply {
        table: t.filter.table.clone(),
        message: format!("a sharding key the router cannot read: {e}"),
    }
}

/// `row`'s columns with their target types.
fn typed<'a>(
    t: &'a ApplyTable,
    row: &'a [(String, Option<String>)],
) -> Result<Vec<(&'a str, &'a str)>, SplitError> {
    row.iter()
        .map(|(c, _)| match t.types.get(c) {
            Some(ty) => Ok((c.as_str(), ty.as_str())),
            None => Err(SplitError::Apply {
                table: t.filter.table.clone(),
                message: format!("column '{c}' is not a stored column of the target's table"),
            }),
        })
        .collect()
}

/// The identity columns (typed) and their values in `row`; for a
/// whole-row identity, every column `row` carries.
#[allow(clippy::type_complexity)]
fn identity<'a>(
    t: &'a ApplyTable,
    row: &'a RowImage,
) -> Result<(Vec<(&'a str, &'a str)>, Vec<Option<&'a str>>), SplitError> {
    if t.identity.is_empty() {
        let cols = typed(t, &row.0)?;
        let vals = row.0.iter().map(|(_, v)| v.as_deref()).collect();
        return Ok((cols, vals));
    }
    let mut cols = Vec::new();
    let mut vals = Vec::new();
    for c in &t.identity {
        let Some(v) = row.get(c) else {
            return Err(SplitError::Apply {
                table: t.filter.table.clone(),
                message: format!("the change carries no value of identity column '{c}'"),
            });
        };
        let ty = t.types.get(c).map(String::as_str).unwrap_or("text");
        cols.push((c.as_str(), ty));
        vals.push(v);
    }
    Ok((cols, vals))
}

async fn target_types(
    c: &Client,
    shard: &str,
    table: &str,
) -> Result<HashMap<String, String>, SplitError> {
    let rows = c
        .query(
            "select attname::text, pg_catalog.format_type(atttypid, null) \
               from pg_catalog.pg_attribute \
              where attrelid = to_regclass($1) and attnum > 0 and not attisdropped \
                and attgenerated = ''",
            &[&quote_ident(table)],
        )
        .await
        .map_err(|e| shard_error(shard, format!("reading the columns of '{table}'"), e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The columns identifying a row of `table` on the source: its primary
/// key, else its replica identity index; empty for `REPLICA IDENTITY FULL`
/// without either.
async fn identity_columns(c: &Client, shard: &str, table: &str) -> Result<Vec<String>, SplitError> {
    let rows = c
        .query(
            "select a.attname::text \
               from pg_catalog.pg_index i \
               join pg_catalog.pg_class r on r.oid = i.indrelid \
               cross join lateral unnest(i.indkey) with ordinality k(attnum, n) \
               join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum \
              where i.indrelid = to_regclass($1) \
                and i.indexrelid = coalesce( \
                      (select indexrelid from pg_catalog.pg_index \
                        where indrelid = r.oid and indisprimary), \
                      (select indexrelid from pg_catalog.pg_index \
                        where indrelid = r.oid and indisreplident and r.relreplident = 'i')) \
              order by k.n",
            &[&quote_ident(table)],
        )
        .await
        .map_err(|e| shard_error(shard, format!("reading the identity of '{table}'"), e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Drops job `id`'s replication origin on the target (absent is fine).
/// Only a session of the job holds it (the apply's): callers end those
/// first ([`super::shards::end_job_sessions`]), or the drop fails with
/// SQLSTATE 55006.
///
/// Errors: [`SplitError::Shard`] (e.g. a session still uses it).
pub async fn drop_origin(target: &Client, shard: &str, id: i64) -> Result<(), SplitError> {
    let origin = artifact_name(id);
    target
        .execute(
            "select pg_catalog.pg_replication_origin_drop(roname) \
               from pg_catalog.pg_replication_origin where roname = $1",
            &[&origin],
        )
        .await
        .map_err(|e| shard_error(shard, format!("dropping replication origin '{origin}'"), e))?;
    Ok(())
}
