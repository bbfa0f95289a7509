//! The source shard's write-ahead log as the split job uses it, behind
//! [`WalSource`]: a logical replication slot (`pgoutput`) created with an
//! exported snapshot (PostgreSQL docs §55.4 "Streaming Replication
//! Protocol", `CREATE_REPLICATION_SLOT … LOGICAL pgoutput (SNAPSHOT
//! 'export')`). Implemented with the `pg_walstream` crate (pinned, libpq
//! connection layer) in [`PgWalSource`]; nothing else in the router names
//! that crate.
//!
//! The exported snapshot is valid only while the replication connection
//! that created the slot is open and runs no other command: the initial
//! copy reads under it (`SET TRANSACTION SNAPSHOT`) before streaming
//! starts on the same connection.

use std::future::Future;
use std::time::Duration;

use pg_walstream::{LogicalReplicationStream, ReplicationSlotOptions, ReplicationStreamConfig};

use super::error::SplitError;

/// What the split job needs of the source's replication protocol.
pub trait WalSource {
    /// Creates logical replication slot `slot` with output plugin
    /// `pgoutput` for `publication`, exporting a snapshot that stays valid
    /// while `self` lives and issues no other command; returns the
    /// snapshot's name (for `SET TRANSACTION SNAPSHOT`). Waits as PostgreSQL
    /// does for transactions with an xid that were running when it started
    /// (prepared ones included); the caller bounds the wait.
    ///
    /// Errors: [`SplitError::Wal`] naming the shard (connection refused, slot
    /// exists, `wal_level` below `logical`, no free slot).
    fn create_slot(
        &mut self,
        slot: &str,
        publication: &str,
    ) -> impl Future<Output = Result<String, SplitError>> + Send;
}

/// A libpq parameter value: single-quoted, `\` and `'` escaped.
fn quote_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// libpq connection parameters (`key=value` pairs, PostgreSQL docs §34.1.2)
/// of a SQL connection to database `dbname` on `host:port` as `user`;
/// values quoted and escaped.
pub fn conninfo(host: &str, port: u16, dbname: &str, user: &str, application_name: &str) -> String {
    let q = quote_value;
    format!(
        "host={} port={port} dbname={} user={} application_name={}",
        q(host),
        q(dbname),
        q(user),
        q(application_name)
    )
}

/// libpq connection parameters (`key=value` pairs, PostgreSQL docs §34.1.2)
/// for a replication connection to database `dbname` on `host:port` as
/// `user`, with an optional password; values are quoted and escaped.
pub fn replication_conninfo(
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
    password: Option<&str>,
    application_name: &str,
) -> String {
    let mut s = conninfo(host, port, dbname, user, application_name) + " replication=database";
    if let Some(p) = password {
        s.push_str(" password=");
        s.push_str(&quote_value(p));
    }
    s
}

/// [`WalSource`] over one `pg_walstream` replication connection.
pub struct PgWalSource {
    shard: String,
    conninfo: String,
    connect_timeout: Duration,
    stream: Option<LogicalReplicationStream>,
}

impl PgWalSource {
    /// A source for shard `shard` reached with `conninfo` (see
    /// [`replication_conninfo`]); connects on first use, giving up after
    /// `connect_timeout`.
    pub fn new(shard: &str, conninfo: String, connect_timeout: Duration) -> PgWalSource {
        PgWalSource {
            shard: shard.to_string(),
            conninfo,
            connect_timeout,
            stream: None,
        }
    }

    fn wal_error(&self, what: &str, e: impl std::fmt::Display) -> SplitError {
        SplitError::Wal {
            shard: self.shard.clone(),
            message: format!("{what}: {e}"),
        }
    }
}

impl WalSource for PgWalSource {
    async fn create_slot(&mut self, slot: &str, publication: &str) -> Result<String, SplitError> {
        let config = ReplicationStreamConfig::builder(slot, publication)
            .with_protocol_version(1)
            .with_connection_timeout(self.connect_timeout)
            .with_slot_options(ReplicationSlotOptions {
                snapshot: Some("export".into()),
                ..ReplicationSlotOptions::default()
            })
            .with_existing_slot_required(false);
        let mut stream = LogicalReplicationStream::new(&self.conninfo, config)
            .await
            .map_err(|e| self.wal_error("opening a replication connection", e))?;
        stream
            .ensure_replication_slot()
            .await
            .map_err(|e| self.wal_error(&format!("creating replication slot '{slot}'"), e))?;
        let Some(snapshot) = stream.exported_snapshot_name().map(str::to_string) else {
            // The crate treats an existing slot as success without a
            // snapshot: a consistent copy is impossible from it.
            return Err(SplitError::Wal {
                shard: self.shard.clone(),
                message: format!(
                    "replication slot '{slot}' already exists (no snapshot exported); drop it or roll the job back"
                ),
            });
        };
        self.stream = Some(stream);
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_quotes_values() {
        let s = replication_conninfo("127.0.0.1", 5432, "db x", "o'brien", Some(r"p\w"), "pgr");
        assert_eq!(
            s,
            r"host='127.0.0.1' port=5432 dbname='db x' user='o\'brien' application_name='pgr' replication=database password='p\\w'"
        );
    }
}
