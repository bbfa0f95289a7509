//! The jobs' durable state: rows of the catalog's `pgrouter.split_jobs`
//! (migration 5). Every step records its result here before the next one
//! starts, so a restarted `pg-router split` resumes from the last durable
//! phase and the reconciler reads the same state.
//!
//! Phase changes are compare-and-set (`where phase = <expected>`): two
//! processes driving one job cannot both advance it.

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Row};

use crate::topology::KeyRange;

use super::error::{Context, SplitError};
use super::job::{Job, Phase};
use super::spec::MoveSpec;

/// The partial unique index allowing one active job per keyspace.
const ONE_ACTIVE: &str = "split_jobs_one_active_per_keyspace";

const COLUMNS: &str = "id, keyspace, source, target, start_id::text, end_id::text, generation, \
     phase, slot_name, publication, snapshot_lsn::text, error, \
     array(select jsonb_array_elements_text(coalesce(progress->'created', '[]'))), \
     array(select jsonb_array_elements_text(coalesce(progress->'reference_created', '[]')))";

/// Records a new job for `spec` in phase [`Phase::Created`].
///
/// Errors: [`SplitError::JobRunning`] when the keyspace has an active job
/// (named); [`SplitError::StalePlan`] when the keyspace's generation is no
/// longer `spec.generation`; [`SplitError::UnknownShard`] for a source or
/// target not in `pgrouter.shards`; [`SplitError::Db`] otherwise.
pub async fn create(c: &Client, spec: &MoveSpec) -> Result<Job, SplitError> {
    create_owned(c, spec, None).await
}

/// [`create`], recording `owner` (e.g. the uid of the Kubernetes object
/// the job is for) in `progress.owner` in the same statement, so the owner
/// finds its job again ([`owned_by`]) whatever happened after the insert.
///
/// Errors: as [`create`].
pub async fn create_owned(
    c: &Client,
    spec: &MoveSpec,
    owner: Option<&str>,
) -> Result<Job, SplitError> {
    for shard in [&spec.source, &spec.target] {
        let known = c
            .query_opt("select 1 from pgrouter.shards where name = $1", &[shard])
            .await
            .context(|| format!("reading shard '{shard}'"))?;
        if known.is_none() {
            return Err(SplitError::UnknownShard(shard.clone()));
        }
    }
    let start = spec.range.start.to_string();
    let end = spec.range.end.map(|e| e.to_string());
    let inserted = c
        .query_opt(
            "insert into pgrouter.split_jobs \
                 (keyspace, source, target, start_id, end_id, generation, progress) \
             select $1, $2, $3, $4::text::numeric, $5::text::numeric, $6, \
                    case when $7::text is null then '{}'::jsonb \
                         else jsonb_build_object('owner', $7::text) end \
               from pgrouter.keyspaces where name = $1 and generation = $6 \
             returning id",
            &[
                &spec.keyspace,
                &spec.source,
                &spec.target,
                &start,
                &end,
                &spec.generation,
                &owner,
            ],
        )
        .await;
    let row = match inserted {
        Ok(r) => r,
        Err(e) if is_one_active_violation(&e) => {
            let running = match active(c, &spec.keyspace).await? {
                Some(j) => j.describe(),
                None => format!("another split job of keyspace '{}'", spec.keyspace),
            };
            return Err(SplitError::JobRunning { running });
        }
        Err(e) => {
            return Err(SplitError::Db {
                context: format!("recording a split job for keyspace '{}'", spec.keyspace),
                source: e,
            })
        }
    };
    let Some(row) = row else {
        let found = c
            .query_opt(
                "select generation from pgrouter.keyspaces where name = $1",
                &[&spec.keyspace],
            )
            .await
            .context(|| format!("reading keyspace '{}'", spec.keyspace))?
            .map_or_else(
                || "none (no such keyspace)".to_string(),
                |r| r.get::<_, i64>(0).to_string(),
            );
        return Err(SplitError::StalePlan {
            keyspace: spec.keyspace.clone(),
            planned: spec.generation,
            found,
        });
    };
    let id: i64 = row.get(0);
    load(c, id).await?.ok_or(SplitError::NoSuchJob(id))
}

fn is_one_active_violation(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|d| {
        *d.code() == SqlState::UNIQUE_VIOLATION && d.constraint() == Some(ONE_ACTIVE)
    })
}

/// The latest job recorded with `owner` ([`create_owned`]), if any.
///
/// Errors: [`SplitError::Db`], [`SplitError::BadRow`].
pub async fn owned_by(c: &Client, owner: &str) -> Result<Option<Job>, SplitError> {
    let row = c
        .query_opt(
            "select id from pgrouter.split_jobs where progress ->> 'owner' = $1 \
              order by id desc limit 1",
            &[&owner],
        )
        .await
        .context(|| format!("finding the split job of owner {owner}"))?;
    match row {
        Some(r) => load(c, r.get(0)).await,
        None => Ok(None),
    }
}

/// The job with id `id`, if any.
///
/// Errors: [`SplitError::Db`], [`SplitError::BadRow`].
pub async fn load(c: &Client, id: i64) -> Result<Option<Job>, SplitError> {
    let row = c
        .query_opt(
            &format!("select {COLUMNS} from pgrouter.split_jobs where id = $1"),
            &[&id],
        )
        .await
        .context(|| format!("reading split job {id}"))?;
    row.map(|r| job_of(&r)).transpose()
}

/// The keyspace's active job (not completed, failed or rolled back), if any.
///
/// Errors: [`SplitError::Db`], [`SplitError::BadRow`].
pub async fn active(c: &Client, keyspace: &str) -> Result<Option<Job>, SplitError> {
    let row = c
        .query_opt(
            &format!(
                "select {COLUMNS} from pgrouter.split_jobs \
                 where keyspace = $1 and phase not in ('completed', 'failed', 'rolled_back')"
            ),
            &[&keyspace],
        )
        .await
        .context(|| format!("reading the active split job of keyspace '{keyspace}'"))?;
    row.map(|r| job_of(&r)).transpose()
}

/// Every job, newest first.
///
/// Errors: [`SplitError::Db`], [`SplitError::BadRow`].
pub async fn list(c: &Client) -> Result<Vec<Job>, SplitError> {
    let rows = c
        .query(
            &format!("select {COLUMNS} from pgrouter.split_jobs order by id desc"),
            &[],
        )
        .await
        .context(|| "reading pgrouter.split_jobs".to_string())?;
    rows.iter().map(job_of).collect()
}

/// Moves job `id` from phase `from` to `to` and clears its error, only if it
/// is still in `from`.
///
/// Errors: [`SplitError::PhaseChanged`] (naming the phase found),
/// [`SplitError::NoSuchJob`], [`SplitError::Db`].
pub async fn advance(c: &Client, id: i64, from: Phase, to: Phase) -> Result<(), SplitError> {
    let n = c
        .execute(
            "update pgrouter.split_jobs set phase = $3, error = null, updated_at = now() \
             where id = $1 and phase = $2",
            &[&id, &from.as_str(), &to.as_str()],
        )
        .await
        .context(|| format!("moving split job {id} to phase {to}"))?;
    if n == 1 {
        return Ok(());
    }
    Err(changed(c, id, from).await)
}

/// Ends job `id` in phase `to` ([`Phase::Failed`] or [`Phase::RolledBack`])
/// from phase `from`, recording `error` (None keeps the last one).
///
/// Errors: [`SplitError::PhaseChanged`], [`SplitError::NoSuchJob`],
/// [`SplitError::Db`].
pub async fn end(
    c: &Client,
    id: i64,
    from: Phase,
    to: Phase,
    error: Option<&str>,
) -> Result<(), SplitError> {
    let n = c
        .execute(
            "update pgrouter.split_jobs \
                set phase = $3, error = coalesce($4, error), updated_at = now() \
              where id = $1 and phase = $2",
            &[&id, &from.as_str(), &to.as_str(), &error],
        )
        .await
        .context(|| format!("ending split job {id} ({to})"))?;
    if n == 1 {
        return Ok(());
    }
    Err(changed(c, id, from).await)
}

/// Records step 1's result on job `id` (phase [`Phase::Capture`]): the slot,
/// the publication and the slot's consistent point (`pg_lsn` text).
///
/// Errors: [`SplitError::PhaseChanged`], [`SplitError::NoSuchJob`],
/// [`SplitError::Db`] (also for an LSN PostgreSQL does not parse).
pub async fn record_capture(
    c: &Client,
    id: i64,
    slot: &str,
    publication: &str,
    lsn: &str,
) -> Result<(), SplitError> {
    let n = c
        .execute(
            "update pgrouter.split_jobs \
                set slot_name = $2, publication = $3, snapshot_lsn = $4::text::pg_lsn, \
                    updated_at = now() \
              where id = $1 and phase = 'capture'",
            &[&id, &slot, &publication, &lsn],
        )
        .await
        .context(|| format!("recording the capture of split job {id}"))?;
    if n == 1 {
        return Ok(());
    }
    Err(changed(c, id, Phase::Capture).await)
}

/// Records step 2's result on job `id` and moves it from
/// [`Phase::Capture`] to [`Phase::Bootstrap`]: the tables it created on the
/// target (`progress.created`).
///
/// Errors: [`SplitError::PhaseChanged`], [`SplitError::NoSuchJob`],
/// [`SplitError::Db`].
pub async fn record_bootstrap(
    c: &Client,
    id: i64,
    created: &[String],
    reference_created: &[String],
) -> Result<(), SplitError> {
    let n = c
        .execute(
            "update pgrouter.split_jobs \
                set phase = 'bootstrap', error = null, updated_at = now(), \
                    progress = progress || jsonb_build_object(\
                        'created', to_jsonb($2::text[]), 'reference_created', to_jsonb($3::text[])) \
              where id = $1 and phase = 'capture'",
            &[&id, &created, &reference_created],
        )
        .await
        .context(|| format!("recording the bootstrap of split job {id}"))?;
    if n == 1 {
        return Ok(());
    }
    Err(changed(c, id, Phase::Capture).await)
}

/// Sets `progress -> key` of job `id` to `value` (a JSON document), in any
/// phase but a terminal one.
///
/// Errors: [`SplitError::NoSuchJob`], [`SplitError::Db`].
pub async fn record_progress(
    c: &Client,
    id: i64,
    key: &str,
    value: &serde_json::Value,
) -> Result<(), SplitError> {
    let n = c
        .execute(
            "update pgrouter.split_jobs \
                set progress = jsonb_set(progress, array[$2::text], $3::text::jsonb), \
                    updated_at = now() \
              where id = $1",
            &[&id, &key, &value.to_string()],
        )
        .await
        .context(|| format!("recording the {key} progress of split job {id}"))?;
    if n == 1 {
        Ok(())
    } else {
        Err(SplitError::NoSuchJob(id))
    }
}

/// Records job `id`'s catch-up position: the last source commit applied
/// (`confirmed_lsn`, `pg_lsn` text) and the lag behind the source (bytes).
///
/// Errors: [`SplitError::NoSuchJob`], [`SplitError::Db`].
pub async fn record_lag(
    c: &Client,
    id: i64,
    confirmed_lsn: Option<&str>,
    lag_bytes: i64,
) -> Result<(), SplitError> {
    let n = c
        .execute(
            "update pgrouter.split_jobs \
                set confirmed_lsn = coalesce($2::text::pg_lsn, confirmed_lsn), \
                    lag_bytes = $3, updated_at = now() \
              where id = $1",
            &[&id, &confirmed_lsn, &lag_bytes],
        )
        .await
        .context(|| format!("recording the lag of split job {id}"))?;
    if n == 1 {
        Ok(())
    } else {
        Err(SplitError::NoSuchJob(id))
    }
}

/// Records job `id` (in phase `from`) as [`Phase::Created`] again with
/// nothing of steps 1 to 3 recorded (slot, publication, LSNs, progress,
/// error), after [`super::rollback::restart`] removed what they made.
///
/// Errors: [`SplitError::PhaseChanged`], [`SplitError::NoSuchJob`],
/// [`SplitError::Db`].
pub async fn reset(c: &Client, id: i64, from: Phase) -> Result<(), SplitError> {
    let n = c
        .execute(
            "update pgrouter.split_jobs \
                set phase = 'created', slot_name = null, publication = null, \
                    snapshot_lsn = null, confirmed_lsn = null, lag_bytes = null, \
                    progress = '{}', error = null, updated_at = now() \
              where id = $1 and phase = $2",
            &[&id, &from.as_str()],
        )
        .await
        .context(|| format!("resetting split job {id}"))?;
    if n == 1 {
        return Ok(());
    }
    Err(changed(c, id, from).await)
}

/// Records `error` as job `id`'s last error (the phase stays).
///
/// Errors: [`SplitError::NoSuchJob`], [`SplitError::Db`].
pub async fn set_error(c: &Client, id: i64, error: &str) -> Result<(), SplitError> {
    let n = c
        .execute(
            "update pgrouter.split_jobs set error = $2, updated_at = now() where id = $1",
            &[&id, &error],
        )
        .await
        .context(|| format!("recording the error of split job {id}"))?;
    if n == 1 {
        Ok(())
    } else {
        Err(SplitError::NoSuchJob(id))
    }
}

/// The error for a compare-and-set that matched no row.
async fn changed(c: &Client, id: i64, expected: Phase) -> SplitError {
    match load(c, id).await {
        Ok(Some(j)) => SplitError::PhaseChanged {
            id,
            expected,
            found: j.phase,
        },
        Ok(None) => SplitError::NoSuchJob(id),
        Err(e) => e,
    }
}

fn job_of(r: &Row) -> Result<Job, SplitError> {
    let id: i64 = r.get(0);
    let bad = |what: String| SplitError::BadRow { id, what };
    let start: String = r.get(4);
    let end: Option<String> = r.get(5);
    let start = crate::catalog::keyid::parse_start(&start).map_err(bad)?;
    let end = crate::catalog::keyid::parse_end(end.as_deref()).map_err(bad)?;
    let phase: String = r.get(7);
    let phase = Phase::parse(&phase).ok_or_else(|| bad(format!("unknown phase '{phase}'")))?;
    Ok(Job {
        id,
        spec: MoveSpec {
            keyspace: r.get(1),
            source: r.get(2),
            target: r.get(3),
            range: KeyRange { start, end },
            generation: r.get(6),
        },
        phase,
        slot_name: r.get(8),
        publication: r.get(9),
        snapshot_lsn: r.get(10),
        error: r.get(11),
        created_tables: r.get(12),
        reference_created: r.get(13),
    })
}
