//! Router configuration (`router-config/router.toml`), read with serde/toml.

use std::path::Path;

use serde::Deserialize;

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML is invalid or a key has the wrong type; the message names the key.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File path.
        path: String,
        /// toml's message (names the key and line).
        message: String,
    },
    /// A value is out of range.
    #[error("invalid config value for `{key}`: {message}")]
    Value {
        /// Dotted key name.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Top-level router configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Address to listen on for PostgreSQL clients, e.g. "127.0.0.1:6432".
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Catalog database connection string (libpq key=value or URL); env
    /// `PGROUTER_CATALOG_PASSWORD` adds a password to a key=value string
    /// that has none.
    pub catalog: String,
    /// Session worker threads (one single-threaded runtime each); 0 = one
    /// per CPU.
    #[serde(default)]
    pub workers: usize,
    /// Backend (shard) connection settings.
    #[serde(default)]
    pub backend: BackendConfig,
    /// Limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Distributed transactions (commit protocol, 2PC recovery).
    #[serde(default)]
    pub transactions: crate::txn::TxnConfig,
    /// Client authentication (methods, users).
    #[serde(default)]
    pub auth: crate::auth::AuthConfig,
    /// Address of the HTTP endpoint serving `/metrics`, `/healthz` and
    /// `/readyz` (e.g. "0.0.0.0:9930"); unset = no endpoint.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// Client-facing TLS.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Online resharding: the catalog lease and cutover write blocks.
    #[serde(default)]
    pub resharding: ReshardingConfig,
}

/// How this router takes part in split cutovers (`docs/resharding.md`,
/// "Cutover across routers").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReshardingConfig {
    /// Lifetime of the router's catalog lease, ms: a router that could not
    /// renew it for this long refuses writes (25006), and a split job
    /// passes it after this long.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_ms: u64,
    /// How often the lease is renewed, ms (well below `lease_ttl_ms`).
    #[serde(default = "default_lease_renew")]
    pub lease_renew_ms: u64,
    /// Longest wait of a write held by a cutover block or a missing lease,
    /// ms; then it fails (57014 for a block, 25006 without a lease).
    #[serde(default = "default_write_wait")]
    pub write_wait_ms: u64,
}

fn default_lease_ttl() -> u64 {
    5000
}
fn default_lease_renew() -> u64 {
    500
}
fn default_write_wait() -> u64 {
    10_000
}

impl Default for ReshardingConfig {
    fn default() -> Self {
        ReshardingConfig {
            lease_ttl_ms: default_lease_ttl(),
            lease_renew_ms: default_lease_renew(),
            write_wait_ms: default_write_wait(),
        }
    }
}

/// Client-facing TLS (PostgreSQL's SSLRequest, protocol docs §55.2.10).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (server certificate first); with `key_file`
    /// turns TLS on. Relative paths are relative to the config file.
    #[serde(default)]
    pub cert_file: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate.
    #[serde(default)]
    pub key_file: Option<std::path::PathBuf>,
    /// Refuse clients that do not negotiate TLS (28000), like a
    /// `hostssl`-only pg_hba.conf.
    #[serde(default)]
    pub require: bool,
}

/// How the router connects to shards.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Role used on shards unless the catalog names one per shard.
    #[serde(default = "default_user")]
    pub user: String,
    /// Password for that role (or env `PGROUTER_BACKEND_PASSWORD`).
    #[serde(default)]
    pub password: Option<String>,
    /// Maximum connections per shard.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// TCP connect + startup timeout, ms.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// How long a client waits for a free pooled connection, ms.
    #[serde(default = "default_checkout_timeout")]
    pub checkout_timeout_ms: u64,
    /// How often a shard that is up gets a `SELECT 1` health check over a
    /// kept connection, ms (0 = only after a connection to it broke).
    #[serde(default = "default_health_check_interval")]
    pub health_check_interval_ms: u64,
    /// Longest wait between reconnect attempts to a shard that is down, ms
    /// (attempts start 100 ms apart and double).
    #[serde(default = "default_retry_backoff_max")]
    pub retry_backoff_max_ms: u64,
    /// TLS to the shards: "disable" (default) or "verify-full" (the
    /// shard's certificate must chain to `tls_ca_file` and name its host).
    #[serde(default)]
    pub tls: BackendTlsMode,
    /// PEM file of the CA certificates trusted for shards (relative to the
    /// config file).
    #[serde(default)]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// A simple-protocol statement that runs on one shard is sent there as
    /// a prepared statement of its normalized text, the literals as
    /// parameters typed as PostgreSQL types them (the shard parses it once
    /// per connection, as for the extended protocol); false = sent as
    /// written. Like any prepared statement, it may get a generic plan
    /// after five executions (the shard's `plan_cache_mode`).
    #[serde(default = "default_true")]
    pub prepare_simple_queries: bool,
}

fn default_true() -> bool {
    true
}

/// `backend.tls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendTlsMode {
    /// Plaintext connections to the shards.
    #[default]
    Disable,
    /// TLS, certificate verified against `backend.tls_ca_file` and the
    /// shard's host (libpq `sslmode=verify-full`).
    VerifyFull,
}

impl BackendConfig {
    /// The TLS client configuration for shards, None when `tls` is
    /// `disable`.
    ///
    /// Errors: a message naming `backend.tls_ca_file` (missing, unreadable,
    /// no usable certificate).
    pub fn tls_config(&self) -> Result<Option<crate::backend::tls::BackendTls>, String> {
        match (self.tls, &self.tls_ca_file) {
            (BackendTlsMode::Disable, _) => Ok(None),
            (BackendTlsMode::VerifyFull, None) => {
                Err("backend.tls = \"verify-full\" needs backend.tls_ca_file".into())
            }
            (BackendTlsMode::VerifyFull, Some(f)) => {
                crate::backend::tls::BackendTls::load(f).map(Some)
            }
        }
    }
}

/// Resource limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest client message accepted, bytes.
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    /// Plan cache entries (statement shapes) kept.
    #[serde(default = "default_plan_cache")]
    pub plan_cache_capacity: usize,
    /// Most client connections at once; more are refused with 53300.
    #[serde(default = "default_max_clients")]
    pub max_client_connections: usize,
    /// Longest a client may take from connecting to authenticated, ms.
    #[serde(default = "default_auth_timeout")]
    pub auth_timeout_ms: u64,
    /// A client idle inside a transaction longer than this is disconnected
    /// (25P03) and its transaction rolled back, ms; 0 = no limit.
    #[serde(default)]
    pub idle_in_transaction_timeout_ms: u64,
    /// On SIGTERM, how long open transactions may run before every client
    /// is closed, ms.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_ms: u64,
    /// Generated sharding keys: values this router reserves from a table's
    /// distributed sequence in the catalog at a time (1..=1,000,000; a
    /// restart loses at most this many, like a sequence's CACHE).
    #[serde(default = "default_sequence_block")]
    pub sequence_block: u32,
    /// Largest intermediate result a multi-shard SELECT may pass to its
    /// final step in PostgreSQL (the shards' partial aggregates or raw
    /// rows, bytes of binary values); beyond it the statement fails with
    /// 54000.
    #[serde(default = "default_intermediate_result_bytes")]
    pub intermediate_result_bytes: u64,
}

fn default_listen() -> String {
    "127.0.0.1:6432".into()
}
fn default_user() -> String {
    "postgres".into()
}
fn default_pool_size() -> usize {
    20
}
fn default_connect_timeout() -> u64 {
    5000
}
fn default_checkout_timeout() -> u64 {
    10_000
}
fn default_health_check_interval() -> u64 {
    5000
}
fn default_retry_backoff_max() -> u64 {
    2000
}
fn default_max_message() -> usize {
    256 << 20
}
fn default_plan_cache() -> usize {
    10_000
}
fn default_max_clients() -> usize {
    10_000
}
fn default_auth_timeout() -> u64 {
    60_000
}
fn default_shutdown_timeout() -> u64 {
    25_000
}
fn default_sequence_block() -> u32 {
    1000
}
fn default_intermediate_result_bytes() -> u64 {
    64 << 20
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            user: default_user(),
            password: None,
            pool_size: default_pool_size(),
            connect_timeout_ms: default_connect_timeout(),
            checkout_timeout_ms: default_checkout_timeout(),
            health_check_interval_ms: default_health_check_interval(),
            retry_backoff_max_ms: default_retry_backoff_max(),
            tls: BackendTlsMode::Disable,
            tls_ca_file: None,
            prepare_simple_queries: true,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_bytes: default_max_message(),
            plan_cache_capacity: default_plan_cache(),
            max_client_connections: default_max_clients(),
            auth_timeout_ms: default_auth_timeout(),
            idle_in_transaction_timeout_ms: 0,
            shutdown_timeout_ms: default_shutdown_timeout(),
            sequence_block: default_sequence_block(),
            intermediate_result_bytes: default_intermediate_result_bytes(),
        }
    }
}

impl RouterConfig {
    /// Session workers to run: `workers`, or one per CPU when it is 0.
    pub fn effective_workers(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }

    /// Reads and validates a TOML file; relative `auth.users_file`,
    /// `tls.cert_file` and `tls.key_file` are made relative to the file's
    /// directory.
    ///
    /// Errors: [`ConfigError`] naming the file and the offending key.
    pub fn load(path: &Path) -> Result<RouterConfig, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        let mut c = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: p, message },
            other => other,
        })?;
        if let Some(dir) = path.parent() {
            for f in [
                &mut c.auth.users_file,
                &mut c.tls.cert_file,
                &mut c.tls.key_file,
                &mut c.backend.tls_ca_file,
            ]
            .into_iter()
            .flatten()
            {
                if f.is_relative() {
                    *f = dir.join(&*f);
                }
            }
        }
        Ok(c)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<RouterConfig, ConfigError> {
        let mut c: RouterConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: String::new(),
            message: e.to_string(),
        })?;
        if c.backend.password.is_none() {
            c.backend.password = std::env::var("PGROUTER_BACKEND_PASSWORD").ok();
        }
        if let Ok(p) = std::env::var("PGROUTER_CATALOG_PASSWORD") {
            c.catalog = with_password(&c.catalog, &p);
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Value {
                key: "listen",
                message: format!("{:?} is not an ip:port address", self.listen),
            });
        }
        if let Some(m) = &self.metrics_listen {
            if m.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::Value {
                    key: "metrics_listen",
                    message: format!("{m:?} is not an ip:port address"),
                });
            }
        }
        let r = &self.resharding;
        if r.lease_renew_ms == 0 || r.lease_renew_ms * 2 > r.lease_ttl_ms {
            return Err(ConfigError::Value {
                key: "resharding.lease_renew_ms",
                message: format!(
                    "must be above 0 and at most half of resharding.lease_ttl_ms ({})",
                    r.lease_ttl_ms
                ),
            });
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(ConfigError::Value {
                key: "tls.cert_file",
                message: "tls.cert_file and tls.key_file go together".into(),
            });
        }
        if self.backend.tls == BackendTlsMode::VerifyFull && self.backend.tls_ca_file.is_none() {
            return Err(ConfigError::Value {
                key: "backend.tls_ca_file",
                message: "backend.tls = \"verify-full\" needs a CA file".into(),
            });
        }
        if self.tls.require && self.tls.cert_file.is_none() {
            return Err(ConfigError::Value {
                key: "tls.require",
                message: "needs tls.cert_file and tls.key_file".into(),
            });
        }
        if !(1..=1_000_000).contains(&self.limits.sequence_block) {
            return Err(ConfigError::Value {
                key: "limits.sequence_block",
                message: format!("{} is not within 1..=1000000", self.limits.sequence_block),
            });
        }
        if self.backend.pool_size == 0 {
            return Err(ConfigError::Value {
                key: "backend.pool_size",
                message: "must be at least 1".into(),
            });
        }
        if self.workers > 1024 {
            return Err(ConfigError::Value {
                key: "workers",
                message: format!("{} is more than 1024", self.workers),
            });
        }
        if self.transactions.decision_log_connections == 0 {
            return Err(ConfigError::Value {
                key: "transactions.decision_log_connections",
                message: "must be at least 1".into(),
            });
        }
        if self.transactions.recovery_interval_ms == 0 {
            return Err(ConfigError::Value {
                key: "transactions.recovery_interval_ms",
                message: "must be at least 1".into(),
            });
        }
        if self.limits.max_client_connections == 0 {
            return Err(ConfigError::Value {
                key: "limits.max_client_connections",
                message: "must be at least 1".into(),
            });
        }
        if self.limits.auth_timeout_ms == 0 {
            return Err(ConfigError::Value {
                key: "limits.auth_timeout_ms",
                message: "must be at least 1".into(),
            });
        }
        if self.limits.max_message_bytes < 1024 {
            return Err(ConfigError::Value {
                key: "limits.max_message_bytes",
                message: "must be at least 1024".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses() {
        let c = RouterConfig::parse(include_str!("../router-config/router.toml")).unwrap();
        assert_eq!(c.transactions.mode, crate::txn::TransactionMode::Twopc);
        assert_eq!(c.transactions.decision_log_connections, 4);
    }

    #[test]
    fn defaults_and_errors() {
        let c = RouterConfig::parse("catalog = \"host=x\"").unwrap();
        assert_eq!(c.listen, "127.0.0.1:6432");
        assert_eq!(c.backend.pool_size, 20);
        let e = RouterConfig::parse("catalog = \"x\"\n[backend]\npool_size = 0").unwrap_err();
        assert!(e.to_string().contains("backend.pool_size"), "{e}");
        let e = RouterConfig::parse("catalog = \"x\"\nlisten = 5").unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
        assert_eq!(c.transactions.mode, crate::txn::TransactionMode::Twopc);
        let c =
            RouterConfig::parse("catalog = \"x\"\n[transactions]\nmode = \"best_effort\"").unwrap();
        assert_eq!(c.transactions.mode, crate::txn::TransactionMode::BestEffort);
        let e = RouterConfig::parse("catalog = \"x\"\n[transactions]\nmode = \"3pc\"").unwrap_err();
        assert!(e.to_string().contains("mode"), "{e}");
        let e = RouterConfig::parse("catalog = \"x\"\nbogus = 1").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }
}

/// `dsn` (libpq key=value form) with `password` added, quoted as libpq
/// reads it (single quotes, `\\` and `\'` escaped), unless it already
/// sets one or is a URL (`postgres://...`, which then must carry it).
pub fn with_password(dsn: &str, password: &str) -> String {
    let url = dsn.starts_with("postgres://") || dsn.starts_with("postgresql://");
    let has = dsn
        .split_whitespace()
        .any(|kv| kv.trim_start().starts_with("password="));
    if url || has {
        return dsn.to_string();
    }
    let quoted = password.replace('\\', "\\\\").replace('\'', "\\'");
    format!("{dsn} password='{quoted}'")
}

#[cfg(test)]
mod password_tests {
    use super::with_password;

    #[test]
    fn catalog_password_is_added_once() {
        assert_eq!(
            with_password("host=h user=postgres", "p'w\\x"),
            "host=h user=postgres password='p\\'w\\\\x'"
        );
        assert_eq!(with_password("host=h password=a", "b"), "host=h password=a");
        assert_eq!(with_password("postgres://u@h/db", "b"), "postgres://u@h/db");
        let cfg: tokio_postgres::Config = with_password("host=h user=u", "it's")
            .parse()
            .expect("parses");
        assert_eq!(cfg.get_password(), Some(&b"it's"[..]));
    }
}
