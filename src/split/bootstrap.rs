//! Step 2, bootstrap the target: the keyspace's tables and the reference
//! tables exist on the target shard with the source's columns.
//!
//! - A sharded table of the keyspace missing on the target is created from
//!   the source's definition: `pg_dump --schema-only --section=pre-data`
//!   (the table, its sequences and defaults), restored with `psql` in one
//!   transaction; its indexes and constraints (`post-data`) are built after
//!   the initial copy. The job records which tables it created (rollback
//!   drops exactly those).
//! - A table already on the target must have the source's columns (names,
//!   types, order), and, when the target owns no key range of the keyspace,
//!   no rows; otherwise the job is refused, the tables named.
//! - A reference table missing on the target is copied whole (definition
//!   and rows, `pg_dump`): the routers write reference tables on every
//!   registered shard, so once it exists there it stays in step.
//!
//! `pg_dump` and `psql` come from the PostgreSQL bin dir
//! ([`crate::cluster::find_pg_bin_dir`] or [`BootstrapSettings::pg_bin`]).

use std::path::PathBuf;

use tokio_postgres::Client;

use crate::catalog::ShardInfo;
use crate::plan::quote_ident;

use super::capture::keyspace_tables;
use super::env::JobEnv;
use super::error::SplitError;
use super::job::{Job, Phase};
use super::shards::{job_application_name, ShardAccess, APPLICATION_NAME};
use super::store;

/// Settings of step 2.
#[derive(Debug, Clone)]
pub struct BootstrapSettings {
    /// Directory holding `pg_dump` and `psql`.
    pub pg_bin: PathBuf,
}

/// What step 2 did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bootstrapped {
    /// Sharded tables created on the target (their post-data follows the
    /// copy).
    pub created: Vec<String>,
    /// Reference tables copied to the target.
    pub reference_copied: Vec<String>,
}

/// Runs step 2 of `job` (phase [`Phase::Capture`] with its capture
/// recorded) and moves it to [`Phase::Bootstrap`].
///
/// Errors: [`SplitError::TargetRefused`] (rows on a rangeless target,
/// different columns), [`SplitError::Tool`] (`pg_dump`/`psql` failed, with
/// their output), [`SplitError::Shard`], [`SplitError::PhaseChanged`].
pub async fn run(
    env: JobEnv<'_>,
    job: &Job,
    settings: &BootstrapSettings,
) -> Result<Bootstrapped, SplitError> {
    let JobEnv {
        cat,
        catalog,
        access,
        source_info,
        target_info,
        source,
        target,
    } = env;
    if job.phase != Phase::Capture || job.snapshot_lsn.is_none() {
        return Err(SplitError::PhaseChanged {
            id: job.id,
            expected: Phase::Capture,
            found: job.phase,
        });
    }
    let tables = keyspace_tables(catalog, &job.spec.keyspace);
    let target_owns_range = catalog
        .keyspaces
        .get(&job.spec.keyspace)
        .is_some_and(|k| k.routing.shards().contains(&target_info.name));
    let mut refused = Vec::new();
    let mut missing = Vec::new();
    for t in &tables {
        let want = columns(source, &source_info.name, t).await?;
        match columns(target, &target_info.name, t).await? {
            None => missing.push(t.clone()),
            Some(have) => {
                if Some(&have) != want.as_ref() {
                    refused.push(format!(
                        "'{t}': columns differ (source: {}; target: {have})",
                        want.as_deref().unwrap_or("missing")
                    ));
                } else if !target_owns_range && has_rows(target, &target_info.name, t).await? {
                    refused.push(format!(
                        "'{t}': already holds rows on a shard that owns no key range of keyspace '{}'",
                        job.spec.keyspace
                    ));
                }
            }
        }
    }
    if !refused.is_empty() {
        return Err(SplitError::TargetRefused {
            shard: target_info.name.clone(),
            tables: refused,
        });
    }
    let mut reference_missing = Vec::new();
    let mut refs: Vec<&String> = catalog.reference_tables.iter().collect();
    refs.sort();
    for r in refs {
        if columns(target, &target_info.name, r).await?.is_none()
            && columns(source, &source_info.name, r).await?.is_some()
        {
            reference_missing.push(r.clone());
        }
    }
    // Recorded first: a process killed while `psql` runs leaves tables that
    // a rollback must find named.
    store::record_bootstrap(cat, job.id, &missing, &reference_missing).await?;
    if !missing.is_empty() {
        let dump = pg_dump(
            access,
            source_info,
            settings,
            &["--schema-only", "--section=pre-data"],
            &missing,
        )
        .await?;
        psql(access, target_info, settings, job.id, &dump).await?;
    }
    if !reference_missing.is_empty() {
        let dump = pg_dump(access, source_info, settings, &[], &reference_missing).await?;
        psql(access, target_info, settings, job.id, &dump).await?;
    }
    Ok(Bootstrapped {
        created: missing,
        reference_copied: reference_missing,
    })
}

/// Table `t`'s columns as `name type, …` in order, or None if it does not
/// exist.
async fn columns(c: &Client, shard: &str, t: &str) -> Result<Option<String>, SplitError> {
    let row = c
        .query_one(
            "select to_regclass($1) is not null, \
                    (select string_agg(quote_ident(attname) || ' ' || \
                              pg_catalog.format_type(atttypid, atttypmod), ', ' order by attnum) \
                       from pg_catalog.pg_attribute \
                      where attrelid = to_regclass($1) and attnum > 0 and not attisdropped)",
            &[&quote_ident(t)],
        )
        .await
        .map_err(|source| SplitError::Shard {
            shard: shard.to_string(),
            context: format!("reading the columns of '{t}'"),
            source,
        })?;
    let exists: bool = row.get(0);
    Ok(exists.then(|| row.get::<_, Option<String>>(1).unwrap_or_default()))
}

async fn has_rows(c: &Client, shard: &str, t: &str) -> Result<bool, SplitError> {
    let row = c
        .query_one(
            &format!("select exists (select 1 from {})", quote_ident(t)),
            &[],
        )
        .await
        .map_err(|source| SplitError::Shard {
            shard: shard.to_string(),
            context: format!("looking for rows in '{t}'"),
            source,
        })?;
    Ok(row.get(0))
}

/// Runs `pg_dump` against `info` for `tables` with `args`; returns the SQL.
pub(super) async fn pg_dump(
    access: &ShardAccess,
    info: &ShardInfo,
    settings: &BootstrapSettings,
    args: &[&str],
    tables: &[String],
) -> Result<Vec<u8>, SplitError> {
    let mut cmd = tokio::process::Command::new(settings.pg_bin.join("pg_dump"));
    cmd.args(args)
        .args([
            "--no-owner",
            "--no-privileges",
            "--no-publications",
            "--no-subscriptions",
        ])
        .arg("-d")
        .arg(access.conninfo(info, APPLICATION_NAME));
    for t in tables {
        // A quoted name: a table, not a pattern.
        cmd.arg("-t").arg(quote_ident(t));
    }
    run_tool(cmd, access, &info.name, "pg_dump", None).await
}

/// Runs `sql` on `info` with `psql` in one transaction, stopping at the
/// first error, as a session of job `job` (its `application_name`, so a
/// rollback can end it: [`super::shards::end_job_sessions`]).
pub(super) async fn psql(
    access: &ShardAccess,
    info: &ShardInfo,
    settings: &BootstrapSettings,
    job: i64,
    sql: &[u8],
) -> Result<(), SplitError> {
    let mut cmd = tokio::process::Command::new(settings.pg_bin.join("psql"));
    cmd.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "--single-transaction",
        "-f",
        "-",
    ])
    .arg("-d")
    .arg(access.conninfo(info, &job_application_name(job)));
    run_tool(cmd, access, &info.name, "psql", Some(sql)).await?;
    Ok(())
}

async fn run_tool(
    mut cmd: tokio::process::Command,
    access: &ShardAccess,
    shard: &str,
    tool: &str,
    stdin: Option<&[u8]>,
) -> Result<Vec<u8>, SplitError> {
    use tokio::io::AsyncWriteExt;
    if let Some(p) = &access.password {
        cmd.env("PGPASSWORD", p);
    }
    cmd.env(
        "PGCONNECT_TIMEOUT",
        access.connect_timeout.as_secs().max(1).to_string(),
    )
    .stdin(if stdin.is_some() {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    })
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    let fail = |message: String| SplitError::Tool {
        shard: shard.to_string(),
        tool: tool.to_string(),
        message,
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    if let (Some(data), Some(mut input)) = (stdin, child.stdin.take()) {
        input
            .write_all(data)
            .await
            .map_err(|e| fail(format!("writing its input: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| fail(format!("waiting for it: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(fail(format!("{} ({})", err.trim(), out.status)));
    }
    Ok(out.stdout)
}
