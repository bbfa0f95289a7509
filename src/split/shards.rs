//! How the split job reaches shards ([`ShardAccess`]): each shard's address
//! from the catalog (`pgrouter.shards`), the role and password of the
//! router's `[backend]` settings (or the CLI's), and TLS as the router's
//! `backend.tls = "verify-full"` ([`ShardTls`]): every connection the job
//! makes to a shard — SQL sessions, the replication stream, `pg_dump` and
//! `psql` — is then encrypted and checks the shard's certificate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::backend::tls::BackendTls;
use crate::backend::ShardTarget;
use crate::catalog::ShardInfo;

use super::error::SplitError;
use super::wal;

/// Credentials and timeouts for the split job's shard connections.
#[derive(Debug, Clone)]
pub struct ShardAccess {
    /// Role to connect as when the shard's catalog row names none.
    pub user: String,
    /// Password, if the shards ask for one.
    pub password: Option<String>,
    /// TCP connect + startup timeout.
    pub connect_timeout: Duration,
    /// TLS to the shards (None: plaintext, `sslmode=disable`).
    pub tls: Option<ShardTls>,
}

/// TLS with certificate verification for the split job's shard
/// connections: the rustls client configuration for its own sessions and
/// the CA file handed to libpq (`sslmode=verify-full sslrootcert=…`,
/// PostgreSQL docs §34.19) for the replication stream, `pg_dump` and `psql`.
#[derive(Debug, Clone)]
pub struct ShardTls {
    connector: BackendTls,
    ca_file: PathBuf,
}

impl ShardTls {
    /// Trusts the CA certificates of the PEM file `ca_file` (made absolute,
    /// as libpq resolves it in the tools' working directory).
    ///
    /// Errors: a message naming the file (unreadable, no certificate, one
    /// rustls cannot use).
    pub fn load(ca_file: &Path) -> Result<ShardTls, String> {
        let ca_file = std::path::absolute(ca_file)
            .map_err(|e| format!("TLS CA file {}: {e}", ca_file.display()))?;
        Ok(ShardTls {
            connector: BackendTls::load(&ca_file)?,
            ca_file,
        })
    }
}

/// `application_name` of the split job's connections (visible in
/// `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "pg-router split";

/// `application_name` of job `job`'s replication connections and of every
/// session that writes on its target (copy, apply, `psql` restores):
/// `pg-router split <job>` (how a stuck one, or one a killed job process
/// left running, is found and ended: [`end_job_sessions`]).
pub fn job_application_name(job: i64) -> String {
    format!("{APPLICATION_NAME} {job}")
}

impl ShardAccess {
    /// The role used for shard `info`.
    pub fn user_for<'a>(&'a self, info: &'a ShardInfo) -> &'a str {
        info.user.as_deref().unwrap_or(&self.user)
    }

    /// The router's connection target for `info` (used by 2PC recovery).
    pub fn target(&self, info: &ShardInfo) -> ShardTarget {
        ShardTarget {
            name: info.name.clone(),
            host: info.host.clone(),
            port: info.port,
            dbname: info.dbname.clone(),
            user: self.user_for(info).to_string(),
            password: self.password.clone(),
            connect_timeout: self.connect_timeout,
            tls: self.tls.as_ref().map(|t| t.connector.clone()),
            application_name: APPLICATION_NAME.to_string(),
        }
    }

    /// A SQL connection to `info` (its connection task is spawned on the
    /// current runtime).
    ///
    /// Errors: [`SplitError::Shard`] naming the shard.
    pub async fn connect(&self, info: &ShardInfo) -> Result<Client, SplitError> {
        self.connect_as(info, APPLICATION_NAME).await
    }

    /// [`ShardAccess::connect`] with `application_name` `app`; over TLS
    /// when [`ShardAccess::tls`] is set (SSLRequest and a verified
    /// handshake first, PostgreSQL protocol docs §55.2.10), the whole of it
    /// within [`ShardAccess::connect_timeout`].
    ///
    /// Errors: [`SplitError::Shard`] naming the shard (refused, timed out,
    /// authentication); [`SplitError::Connect`] when TLS cannot be set up.
    pub async fn connect_as(&self, info: &ShardInfo, app: &str) -> Result<Client, SplitError> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&info.host)
            .port(info.port)
            .dbname(&info.dbname)
            .user(self.user_for(info))
            .application_name(app)
            .connect_timeout(self.connect_timeout);
        if let Some(p) = &self.password {
            cfg.password(p);
        }
        let db_error = |source| SplitError::Shard {
            shard: info.name.clone(),
            context: "connecting".into(),
            source,
        };
        let Some(tls) = &self.tls else {
            let (client, conn) = cfg.connect(NoTls).await.map_err(db_error)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            return Ok(client);
        };
        let connect_error = |message: String| SplitError::Connect {
            shard: info.name.clone(),
            message,
        };
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((info.host.as_str(), info.port))
                .await
                .map_err(|e| connect_error(format!("{}:{}: {e}", info.host, info.port)))?;
            let _ = tcp.set_nodelay(true);
            let stream = tls
                .connector
                .connect(tcp, &info.host)
                .await
                .map_err(connect_error)?;
            // The stream is encrypted already: no second SSLRequest.
            cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
            cfg.connect_raw(stream, NoTls).await.map_err(db_error)
        };
        let (client, conn) = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| {
                connect_error(format!(
                    "no TLS session within {} ms",
                    self.connect_timeout.as_millis()
                ))
            })??;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// libpq parameters of a SQL connection to `info` with
    /// `application_name` `app` (for `pg_dump` and `psql`; the password is
    /// passed in the environment, see [`ShardAccess::password`]).
    pub fn conninfo(&self, info: &ShardInfo, app: &str) -> String {
        wal::conninfo(
            &info.host,
            info.port,
            &info.dbname,
            self.user_for(info),
            app,
            self.libpq_ca_file(),
        )
    }

    /// The CA file libpq verifies shards with (None: no TLS).
    fn libpq_ca_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca_file.as_path())
    }

    /// libpq parameters of job `job`'s replication connection to `info`
    /// (`application_name` [`job_application_name`]).
    pub fn replication_conninfo(&self, info: &ShardInfo, job: i64) -> String {
        wal::replication_conninfo(
            &info.host,
            info.port,
            &info.dbname,
            self.user_for(info),
            self.password.as_deref(),
            &job_application_name(job),
            self.libpq_ca_file(),
        )
    }
}

/// How long [`end_job_sessions`] waits for the sessions it ended to exit.
const SESSION_EXIT_WAIT: Duration = Duration::from_secs(30);

/// Ends every session of job `job` ([`job_application_name`]) in the
/// database `client` is connected to, other than `client`'s own, and waits until
/// their backends have exited (polled every 50 ms, up to 30 s).
///
/// A job process that was killed leaves its backends running until they
/// next touch the socket: a `COPY … FROM STDIN` whose data and CopyDone
/// were already sent still commits, after the process is gone. Removing
/// what the job wrote (rollback, start over) is only safe once no such
/// backend is left, or a purge could run before that commit and miss its
/// rows.
///
/// Errors: [`SplitError::Shard`] when the query fails;
/// [`SplitError::SessionsLeft`] when a session is still there after the
/// wait.
pub async fn end_job_sessions(client: &Client, shard: &str, job: i64) -> Result<(), SplitError> {
    let app = job_application_name(job);
    let started = std::time::Instant::now();
    loop {
        let left: i64 = client
            .query_one(
                "select count(pg_catalog.pg_terminate_backend(pid)) \
                   from pg_catalog.pg_stat_activity \
                  where application_name = $1 and pid <> pg_catalog.pg_backend_pid() \
                    and datname = pg_catalog.current_database()",
                &[&app],
            )
            .await
            .map_err(|source| SplitError::Shard {
                shard: shard.to_string(),
                context: format!("ending the sessions of split job {job}"),
                source,
            })?
            .get(0);
        if left == 0 {
            return Ok(());
        }
        if started.elapsed() >= SESSION_EXIT_WAIT {
            return Err(SplitError::SessionsLeft {
                shard: shard.to_string(),
                job,
                count: left,
                waited_s: SESSION_EXIT_WAIT.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
