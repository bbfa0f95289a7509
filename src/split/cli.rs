//! The `pg-router split` subcommand: start, resume, watch and steer online
//! resharding jobs (`docs/resharding.md` has the walkthrough).

use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::topology::KeyRange;

use super::capture::CaptureSettings;
use super::catchup::CatchUpSettings;
use super::cutover::CutoverSettings;
use super::error::{Context, SplitError};
use super::job::Job;
use super::run::{drive, JobContext, RunSettings};
use super::shards::{ShardAccess, ShardTls};
use super::spec::{plan, RangeChoice};
use super::store;
use super::terminal::Bars;

/// `pg-router split`: online resharding jobs.
#[derive(clap::Args, Debug, Clone)]
pub struct SplitArgs {
    /// Catalog database DSN (libpq `key=value` or URL form). No TLS.
    #[arg(long, env = "PGROUTER_CATALOG")]
    pub catalog: String,
    /// Role on the shards (superuser, or replication + replication-origin
    /// rights), unless a shard's catalog row names one.
    #[arg(long, default_value = "postgres", env = "PGROUTER_BACKEND_USER")]
    pub user: String,
    /// Its password.
    #[arg(long, env = "PGROUTER_BACKEND_PASSWORD")]
    pub password: Option<String>,
    /// TLS to the shards, as the routers' `backend.tls`: `disable`, or
    /// `verify-full` (every shard connection of the job — SQL, replication,
    /// pg_dump, psql — encrypted, the certificate checked against
    /// `--tls-ca-file` and the shard's host).
    #[arg(
        long,
        value_enum,
        default_value = "disable",
        env = "PGROUTER_BACKEND_TLS"
    )]
    pub tls: TlsMode,
    /// PEM file of the CA certificates trusted for shards (`backend.tls_ca_file`).
    #[arg(long, env = "PGROUTER_BACKEND_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: SplitCommand,
}

/// `--tls`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plaintext.
    Disable,
    /// TLS, certificate verified against `--tls-ca-file` and the host.
    VerifyFull,
}

/// How a job runs (`start` and `resume`).
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Wait for `pg-router split cutover` before the cutover.
    #[arg(long)]
    pub manual_cutover: bool,
    /// Skip the verification before the cutover.
    #[arg(long)]
    pub no_verify: bool,
    /// Tables copied at the same time.
    #[arg(long, default_value_t = 2)]
    pub parallel_tables: usize,
    /// Catch-up lag (bytes) below which a cutover is attempted.
    #[arg(long, default_value_t = 64 << 10)]
    pub lag_threshold: u64,
    /// Longest write block before the routing update, ms (then the attempt
    /// is abandoned and retried).
    #[arg(long, default_value_t = 1000)]
    pub max_window_ms: u64,
    /// Cutover attempts before the job fails.
    #[arg(long, default_value_t = 10)]
    pub attempts: usize,
    /// Longest wait for the replication slot's creation, ms.
    #[arg(long, default_value_t = 30_000)]
    pub slot_timeout_ms: u64,
    /// PostgreSQL bin dir (pg_dump, psql); default: PG_BIN_DIR, PATH, the
    /// usual install locations.
    #[arg(long)]
    pub pg_bin: Option<PathBuf>,
}

/// The `pg-router split` subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum SplitCommand {
    /// Plan and run a move of a key range from one shard to another.
    Start {
        /// Keyspace.
        #[arg(long)]
        keyspace: String,
        /// Shard owning the range now.
        #[arg(long)]
        source: String,
        /// Shard receiving it (registered with `pg-router meta add-shard`).
        #[arg(long)]
        target: String,
        /// Move `[ID, end of its range)` (keyspace id, decimal or 0x hex);
        /// default: the upper half of the source's largest range.
        #[arg(long, conflicts_with = "range")]
        at: Option<String>,
        /// Move exactly `LO-HI` (`HI` empty = to the end of the id space).
        #[arg(long)]
        range: Option<String>,
        /// How it runs.
        #[command(flatten)]
        run: RunArgs,
    },
    /// Run a job from its last durable phase (after its process died).
    Resume {
        /// Job id (default: the only active job).
        #[arg(long)]
        job: Option<i64>,
        /// How it runs.
        #[command(flatten)]
        run: RunArgs,
    },
    /// Show a job (default: the active one, else the latest).
    Status {
        /// Job id.
        #[arg(long)]
        job: Option<i64>,
        /// The whole job row as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Let a job started with --manual-cutover cut over.
    Cutover {
        /// Job id (default: the only active job).
        #[arg(long)]
        job: Option<i64>,
    },
    /// Roll a job back (before its routing update).
    Rollback {
        /// Job id (default: the only active job).
        #[arg(long)]
        job: Option<i64>,
    },
    /// Ask the running job (waiting for a manual cutover) to verify now;
    /// prints the result.
    Verify {
        /// Job id (default: the only active job).
        #[arg(long)]
        job: Option<i64>,
    },
}

/// Runs `pg-router split`.
///
/// Errors: a message for the terminal.
pub async fn run_split(args: SplitArgs) -> Result<(), String> {
    let cat = connect(&args.catalog).await?;
    crate::catalog::migrate(&cat)
        .await
        .map_err(|e| format!("catalog: {e}"))?;
    let tls = match (args.tls, &args.tls_ca_file) {
        (TlsMode::Disable, _) => None,
        (TlsMode::VerifyFull, None) => return Err("--tls verify-full needs --tls-ca-file".into()),
        (TlsMode::VerifyFull, Some(f)) => Some(ShardTls::load(f)?),
    };
    let access = ShardAccess {
        user: args.user.clone(),
        password: args.password.clone(),
        connect_timeout: Duration::from_secs(5),
        tls,
    };
    let s = |e: SplitError| e.to_string();
    match args.command {
        SplitCommand::Start {
            keyspace,
            source,
            target,
            at,
            range,
            run,
        } => {
            let catalog = crate::catalog::load(&cat)
                .await
                .map_err(|e| format!("catalog: {e}"))?;
            let ks = catalog
                .keyspaces
                .get(&keyspace)
                .ok_or_else(|| format!("keyspace '{keyspace}' does not exist"))?;
            let choice = match (at, range) {
                (Some(a), _) => RangeChoice::At(parse_id(&a)?),
                (None, Some(r)) => RangeChoice::Range(parse_range(&r)?),
                (None, None) => RangeChoice::UpperHalf,
            };
            let spec = plan(&ks.routing, &source, &target, choice).map_err(|e| e.to_string())?;
            let job = store::create(&cat, &spec).await.map_err(s)?;
            eprintln!("{} started", job.describe());
            finish(cat, access, job, &run).await
        }
        SplitCommand::Resume { job, run } => {
            let job = pick(&cat, job).await?;
            finish(cat, access, job, &run).await
        }
        SplitCommand::Status { job, json } => {
            let job = pick_any(&cat, job).await?;
            print_status(&cat, &job, json).await
        }
        SplitCommand::Cutover { job } => {
            let job = pick(&cat, job).await?;
            store::record_progress(&cat, job.id, "cutover_requested", &true.into())
                .await
                .map_err(s)?;
            eprintln!("cutover requested for {}", job.describe());
            Ok(())
        }
        SplitCommand::Rollback { job } => {
            let job = pick_any(&cat, job).await?;
            let ctx = JobContext::open(cat, access, &job).await.map_err(s)?;
            super::run::claim(&ctx.cat, job.id).await.map_err(s)?;
            super::rollback::rollback(ctx.env(), &job, None)
                .await
                .map_err(s)?;
            eprintln!("{} rolled back", job.describe());
            Ok(())
        }
        SplitCommand::Verify { job } => {
            let job = pick(&cat, job).await?;
            let before = verification(&cat, job.id).await?;
            store::record_progress(&cat, job.id, "verify_requested", &true.into())
                .await
                .map_err(s)?;
            for _ in 0..600 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = verification(&cat, job.id).await?;
                if now != before {
                    println!("{}", now.unwrap_or_default());
                    return Ok(());
                }
            }
            Err(format!(
                "{} did not verify within 5 minutes: is a `pg-router split start --manual-cutover` (or resume) process running it?",
                job.describe()
            ))
        }
    }
}

async fn finish(cat: Client, access: ShardAccess, job: Job, run: &RunArgs) -> Result<(), String> {
    let pg_bin = match &run.pg_bin {
        Some(p) => p.clone(),
        None => crate::cluster::find_pg_bin_dir().map_err(|e| e.to_string())?,
    };
    let settings = RunSettings {
        capture: CaptureSettings {
            slot_timeout: Duration::from_millis(run.slot_timeout_ms),
            ..CaptureSettings::default()
        },
        parallel_tables: run.parallel_tables,
        pg_bin,
        catchup: CatchUpSettings::default(),
        cutover: CutoverSettings {
            max_window: Duration::from_millis(run.max_window_ms),
            lag_threshold_bytes: run.lag_threshold,
            attempts: run.attempts,
            ..CutoverSettings::default()
        },
        verify: !run.no_verify,
        manual_cutover: run.manual_cutover,
    };
    let id = job.id;
    let ctx = JobContext::open(cat, access, &job).await.map_err(|e| {
        format!(
            "{}: {e}; the job is kept where it was: fix this and run \
             `pg-router split resume --job {id}`, or `pg-router split rollback --job {id}`",
            job.describe()
        )
    })?;
    let bars = Bars::new();
    let phase = drive(&ctx, id, &settings, &bars)
        .await
        .map_err(|e| format!("split job {id}: {e}"))?;
    let job = store::load(&ctx.cat, id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("split job {id} disappeared"))?;
    print_status(&ctx.cat, &job, false).await?;
    if phase == super::Phase::Completed {
        Ok(())
    } else {
        Err(format!("{} ended in phase {phase}", job.describe()))
    }
}

async fn connect(dsn: &str) -> Result<Client, String> {
    let (client, conn) = tokio_postgres::connect(dsn, NoTls)
        .await
        .map_err(|e| format!("cannot connect to the catalog: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The job `id`, or the only active one.
async fn pick(cat: &Client, id: Option<i64>) -> Result<Job, String> {
    let jobs = store::list(cat).await.map_err(|e| e.to_string())?;
    match id {
        Some(id) => jobs
            .into_iter()
            .find(|j| j.id == id)
            .ok_or_else(|| format!("split job {id} does not exist")),
        None => {
            let mut active: Vec<Job> = jobs
                .into_iter()
                .filter(|j| !j.phase.is_terminal())
                .collect();
            match (active.pop(), active.len()) {
                (Some(j), 0) => Ok(j),
                (None, _) => Err("no split job is active (name one with --job)".into()),
                (Some(_), n) => Err(format!(
                    "{} split jobs are active: name one with --job",
                    n + 1
                )),
            }
        }
    }
}

/// The job `id`, the active one, or the latest.
async fn pick_any(cat: &Client, id: Option<i64>) -> Result<Job, String> {
    if id.is_some() {
        return pick(cat, id).await;
    }
    match pick(cat, None).await {
        Ok(j) => Ok(j),
        Err(_) => store::list(cat)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .max_by_key(|j| j.id)
            .ok_or_else(|| "no split job has been recorded".to_string()),
    }
}

async fn verification(cat: &Client, id: i64) -> Result<Option<String>, String> {
    cat.query_one(
        "select verification::text from pgrouter.split_jobs where id = $1",
        &[&id],
    )
    .await
    .context(|| format!("reading split job {id}"))
    .map(|r| r.get(0))
    .map_err(|e| e.to_string())
}

async fn print_status(cat: &Client, job: &Job, json: bool) -> Result<(), String> {
    let row = cat
        .query_one(
            "select to_jsonb(j)::text, coalesce(lag_bytes, 0), cutover_window_ms, \
                    coalesce((verification ->> 'ok')::bool::text, 'not run'), \
                    coalesce((select sum((v ->> 'rows_copied')::bigint) \
                                from jsonb_each(j.progress -> 'copy') as e(k, v)), 0)::int8 \
               from pgrouter.split_jobs j where id = $1",
            &[&job.id],
        )
        .await
        .map_err(|e| format!("reading split job {}: {e}", job.id))?;
    if json {
        println!("{}", row.get::<_, String>(0));
        return Ok(());
    }
    let lag: i64 = row.get(1);
    let window: Option<f64> = row.get(2);
    let verified: String = row.get(3);
    let copied: i64 = row.get(4);
    println!("{}", job.describe());
    println!("  rows copied:    {copied}");
    println!("  lag:            {lag} bytes");
    println!("  verified:       {verified}");
    match window {
        Some(w) => println!("  cutover window: {w:.1} ms"),
        None => println!("  cutover window: -"),
    }
    if let Some(e) = &job.error {
        println!("  last error:     {e}");
    }
    Ok(())
}

/// A keyspace id: decimal or `0x` hex.
fn parse_id(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse(),
    };
    r.map_err(|_| format!("'{s}' is not a keyspace id (decimal or 0x hex, below 2^64)"))
}

/// `LO-HI` with `HI` empty for the end of the id space.
fn parse_range(s: &str) -> Result<KeyRange, String> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("'{s}' is not a range LO-HI"))?;
    let start = parse_id(lo)?;
    let end = if hi.trim().is_empty() {
        None
    } else {
        Some(parse_id(hi)?)
    };
    if end.is_some_and(|e| e <= start) {
        return Err(format!("range '{s}' is empty"));
    }
    Ok(KeyRange { start, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_ranges() {
        assert_eq!(parse_id("0x8000000000000000"), Ok(1 << 63));
        assert_eq!(parse_id("42"), Ok(42));
        assert!(parse_id("-1").is_err() && parse_id("0x1_0000_0000_0000_0000").is_err());
        assert_eq!(
            parse_range("0x10-"),
            Ok(KeyRange {
                start: 16,
                end: None
            })
        );
        assert_eq!(
            parse_range("1-2"),
            Ok(KeyRange {
                start: 1,
                end: Some(2)
            })
        );
        assert!(parse_range("2-1").is_err() && parse_range("5").is_err());
    }
}
