//! The `pg-router` binary: `dev` (embedded throwaway cluster + router),
//! `serve` (router against existing shards), `meta` (catalog admin).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use pg_router::catalog::cli::MetaArgs;

#[derive(Parser)]
#[command(
    name = "pg-router",
    version,
    about = "A distributed-SQL proxy for PostgreSQL"
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "pg_router=debug"
    /// (the replication library's per-read notes are kept at warn).
    #[arg(
        long,
        env = "PGROUTER_LOG",
        default_value = "info,pg_walstream=warn",
        global = true
    )]
    log: String,
    /// Log line format: human-readable text, or one JSON object per line
    /// (fields: timestamp, level, target, fields, spans).
    #[arg(long, env = "PGROUTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Start local throwaway shards and a catalog from the installed
    /// PostgreSQL binaries, seed the catalog for pgbench, and run the router.
    Dev(pg_router::dev::DevArgs),
    /// Run the router against existing shards and catalog.
    Serve {
        /// Path of the TOML configuration file.
        #[arg(long, default_value = "router-config/router.toml")]
        config: PathBuf,
    },
    /// Inspect and edit the shard metadata catalog.
    Meta(MetaArgs),
    /// Online resharding: move a key range to another shard while clients
    /// keep reading and writing.
    Split(pg_router::split::cli::SplitArgs),
    /// The Kubernetes reconciler (built with the `operator` feature).
    #[cfg(feature = "operator")]
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Print a users-file line for USER with a SCRAM-SHA-256 verifier (or an
    /// MD5 hash) of the password read from the first line of stdin.
    Secret {
        /// User name.
        user: String,
        /// Secret format: "scram-sha-256" or "md5".
        #[arg(long, default_value = "scram-sha-256")]
        method: String,
    },
}

/// `pg-router operator ...`.
#[cfg(feature = "operator")]
#[derive(Subcommand)]
enum OperatorCommand {
    /// Print the CRDs (PostgresCluster, ShardRange, ShardSplitJob) as YAML,
    /// as checked in under charts/pg-router/crds/.
    Crds,
    /// Run the reconciler (in-cluster credentials, or the kubeconfig).
    Run {
        /// Watch only this namespace (default: every namespace).
        #[arg(long, env = "PGROUTER_WATCH_NAMESPACE")]
        namespace: Option<String>,
        /// Address of its /metrics and /healthz endpoint.
        #[arg(
            long,
            env = "PGROUTER_OPERATOR_METRICS",
            default_value = "0.0.0.0:9931"
        )]
        metrics_listen: String,
        /// Elect one leader among the replicas on the Lease
        /// `pg-router-operator` in this namespace (the chart passes the
        /// pod's own); unset = reconcile without election (one replica).
        #[arg(long, env = "PGROUTER_LEADER_ELECTION_NAMESPACE")]
        leader_election_namespace: Option<String>,
    },
}

/// `pg-router secret`: a users-file line (`"user" "secret"`) for the
/// password on stdin's first line; the plaintext never leaves this process.
fn secret_line(user: &str, method: &str) -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err("empty password on stdin".into());
    }
    let secret = match method {
        "scram-sha-256" => postgres_protocol::password::scram_sha_256(password.as_bytes()),
        "md5" => postgres_protocol::password::md5(password.as_bytes(), user),
        m => return Err(format!("unknown --method {m:?}: use scram-sha-256 or md5")),
    };
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    Ok(format!("{} {}", q(user), q(&secret)))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match tracing_subscriber::EnvFilter::try_new(&cli.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "pg-router: invalid --log / PGROUTER_LOG filter {:?}: {e}",
                cli.log
            );
            return ExitCode::FAILURE;
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pg-router: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), String> = rt.block_on(async {
        match cli.command {
            Command::Dev(args) => pg_router::dev::run(args).await.map_err(|e| e.to_string()),
            Command::Serve { config } => pg_router::dev::serve(&config)
                .await
                .map_err(|e| e.to_string()),
            Command::Meta(args) => pg_router::catalog::cli::run_meta(args)
                .await
                .map_err(|e| e.to_string()),
            Command::Split(args) => pg_router::split::cli::run_split(args).await,
            #[cfg(feature = "operator")]
            Command::Operator(OperatorCommand::Crds) => pg_router::reconciler::crds::crds_yaml()
                .map(|y| print!("{y}"))
                .map_err(|e| e.to_string()),
            #[cfg(feature = "operator")]
            Command::Operator(OperatorCommand::Run {
                namespace,
                metrics_listen,
                leader_election_namespace,
            }) => {
                pg_router::reconciler::run::run(
                    namespace,
                    &metrics_listen,
                    leader_election_namespace,
                )
                .await
            }
            Command::Secret { user, method } => {
                secret_line(&user, &method).map(|l| println!("{l}"))
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pg-router: {e}");
            ExitCode::FAILURE
        }
    }
}
