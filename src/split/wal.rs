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
use std::time::{Duration, Instant};

use pg_walstream::{
    CancellationToken, ChangeEvent, EventType, LogicalReplicationStream, ReplicationSlotOptions,
    ReplicationStreamConfig, RowData,
};

use super::change::{table_name, Lsn, RowImage, WalEvent};
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
        temporary: bool,
    ) -> impl Future<Output = Result<String, SplitError>> + Send;

    /// Starts streaming slot `slot` of `publication` (with logical decoding
    /// messages) from its confirmed position: on the connection that
    /// created it, or on a new one for a slot made by an earlier process.
    ///
    /// Errors: [`SplitError::Wal`] (no such slot, slot in use, connection).
    fn start(
        &mut self,
        slot: &str,
        publication: &str,
    ) -> impl Future<Output = Result<(), SplitError>> + Send;

    /// The next event, waiting at most `wait`; None when nothing arrived.
    /// With a zero `wait`, only an event already received (or readable
    /// without waiting) is returned.
    ///
    /// Errors: [`SplitError::Wal`] (connection lost, protocol error).
    fn next(
        &mut self,
        wait: Duration,
    ) -> impl Future<Output = Result<Option<WalEvent>, SplitError>> + Send;

    /// Confirms that everything up to `lsn` is applied and durable on the
    /// target: the source may recycle that WAL and a restart resumes there
    /// (standby status update, PostgreSQL docs §55.4).
    ///
    /// Errors: [`SplitError::Wal`] when the status update cannot be sent.
    fn confirm(&mut self, lsn: Lsn) -> impl Future<Output = Result<(), SplitError>> + Send;

    /// Like [`WalSource::next`], but stops before the first transaction
    /// committed at or past `boundary`: [`Before::Reached`] once every
    /// transaction committed below it has been delivered (the next one is
    /// kept for the following read).
    ///
    /// Errors: [`SplitError::Wal`].
    fn next_before(
        &mut self,
        boundary: Lsn,
        wait: Duration,
    ) -> impl Future<Output = Result<Before, SplitError>> + Send;

    /// The furthest source position received (changes or keepalives); 0
    /// before streaming.
    fn received(&self) -> Lsn;
}

/// What [`WalSource::next_before`] returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Before {
    /// An event of a transaction committed below the boundary.
    Event(WalEvent),
    /// Every transaction committed below the boundary has been delivered.
    Reached,
    /// Nothing arrived in time.
    Idle,
}

/// A libpq parameter value: single-quoted, `\` and `'` escaped.
fn quote_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// libpq connection parameters (`key=value` pairs, PostgreSQL docs §34.1.2)
/// of a SQL connection to database `dbname` on `host:port` as `user`;
/// values quoted and escaped. With `ca_file`, TLS that verifies the
/// shard's certificate against it and its host (`sslmode=verify-full`,
/// §34.19); without, plaintext (`sslmode=disable`, as the job's own
/// sessions).
pub fn conninfo(
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
    application_name: &str,
    ca_file: Option<&std::path::Path>,
) -> String {
    let q = quote_value;
    let ssl = match ca_file {
        Some(f) => format!(
            "sslmode=verify-full sslrootcert={}",
            q(&f.to_string_lossy())
        ),
        None => "sslmode=disable".into(),
    };
    format!(
        "host={} port={port} dbname={} user={} application_name={} {ssl}",
        q(host),
        q(dbname),
        q(user),
        q(application_name)
    )
}

/// libpq connection parameters (`key=value` pairs, PostgreSQL docs §34.1.2)
/// for a replication connection to database `dbname` on `host:port` as
/// `user`, with an optional password; values are quoted and escaped; TLS
/// as [`conninfo`].
pub fn replication_conninfo(
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
    password: Option<&str>,
    application_name: &str,
    ca_file: Option<&std::path::Path>,
) -> String {
    let mut s =
        conninfo(host, port, dbname, user, application_name, ca_file) + " replication=database";
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
    last_feedback: Option<Instant>,
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
            last_feedback: None,
        }
    }

    fn config(&self, slot: &str, publication: &str) -> ReplicationStreamConfig {
        ReplicationStreamConfig::builder(slot, publication)
            .with_protocol_version(1)
            .with_messages(true)
            .with_connection_timeout(self.connect_timeout)
    }

    fn wal_error(&self, what: &str, e: impl std::fmt::Display) -> SplitError {
        SplitError::Wal {
            shard: self.shard.clone(),
            message: format!("{what}: {e}"),
        }
    }
}

impl WalSource for PgWalSource {
    async fn create_slot(
        &mut self,
        slot: &str,
        publication: &str,
        temporary: bool,
    ) -> Result<String, SplitError> {
        let config = self
            .config(slot, publication)
            .with_slot_options(ReplicationSlotOptions {
                snapshot: Some("export".into()),
                temporary,
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

    async fn start(&mut self, slot: &str, publication: &str) -> Result<(), SplitError> {
        let mut stream = match self.stream.take() {
            Some(s) => s,
            None => {
                let config = self
                    .config(slot, publication)
                    .with_existing_slot_required(true);
                LogicalReplicationStream::new(&self.conninfo, config)
                    .await
                    .map_err(|e| self.wal_error("opening a replication connection", e))?
            }
        };
        stream
            .start(None)
            .await
            .map_err(|e| self.wal_error(&format!("streaming replication slot '{slot}'"), e))?;
        self.stream = Some(stream);
        Ok(())
    }

    async fn next(&mut self, wait: Duration) -> Result<Option<WalEvent>, SplitError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Err(self.wal_error("reading changes", "streaming has not started"));
            };
            let token = CancellationToken::new();
            let event = {
                let read = stream.next_event(&token);
                tokio::pin!(read);
                tokio::select! {
                    // An event already at hand wins over an elapsed wait.
                    biased;
                    r = &mut read => r,
                    _ = tokio::time::sleep_until(deadline) => {
                        // The read waits on the socket inside libpq's
                        // buffering: cancelling it loses nothing.
                        token.cancel();
                        read.await
                    }
                }
            };
            match event {
                Ok(e) => {
                    if let Some(e) = convert(e) {
                        return Ok(Some(e));
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
                Err(e) if e.is_cancelled() => return Ok(None),
                Err(e) => return Err(self.wal_error("reading changes", e)),
            }
        }
    }

    async fn next_before(&mut self, boundary: Lsn, wait: Duration) -> Result<Before, SplitError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Err(self.wal_error("reading changes", "streaming has not started"));
            };
            let token = CancellationToken::new();
            let event = {
                let read = stream.next_event_before(pg_walstream::Lsn(boundary), &token);
                tokio::pin!(read);
                tokio::select! {
                    // An event already at hand wins over an elapsed wait.
                    biased;
                    r = &mut read => r,
                    _ = tokio::time::sleep_until(deadline) => {
                        token.cancel();
                        read.await
                    }
                }
            };
            match event {
                Ok(None) => return Ok(Before::Reached),
                Ok(Some(e)) => {
                    if let Some(e) = convert(e) {
                        return Ok(Before::Event(e));
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Ok(Before::Idle);
                    }
                }
                Err(e) if e.is_cancelled() => return Ok(Before::Idle),
                Err(e) => return Err(self.wal_error("reading changes", e)),
            }
        }
    }

    async fn confirm(&mut self, lsn: Lsn) -> Result<(), SplitError> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        stream.shared_lsn_feedback.update_applied_lsn(lsn);
        // At most one explicit status update a second; the stream sends
        // them on its own as well.
        if self
            .last_feedback
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.last_feedback = Some(Instant::now());
            stream
                .send_feedback()
                .await
                .map_err(|e| self.wal_error("confirming the applied position", e))?;
        }
        Ok(())
    }

    fn received(&self) -> Lsn {
        self.stream.as_ref().map_or(0, |s| s.current_lsn())
    }
}

/// Our event for a decoded change; None for events the apply ignores
/// (relation and type definitions, origins, two-phase and streaming
/// messages, which protocol version 1 without `two_phase` does not send).
fn convert(e: ChangeEvent) -> Option<WalEvent> {
    let row = |r: &RowData| {
        RowImage(
            r.iter()
                .map(|(c, v)| {
                    let v =
                        (!v.is_null()).then(|| String::from_utf8_lossy(v.as_bytes()).into_owned());
                    (c.to_string(), v)
                })
                .collect(),
        )
    };
    Some(match e.event_type {
        EventType::Begin {
            final_lsn,
            commit_timestamp,
            ..
        } => WalEvent::Begin {
            final_lsn: final_lsn.0,
            commit_time_us: commit_timestamp.timestamp_micros(),
        },
        EventType::Commit {
            commit_timestamp,
            commit_lsn,
            end_lsn,
        } => WalEvent::Commit {
            commit_lsn: commit_lsn.0,
            end_lsn: end_lsn.0,
            commit_time_us: commit_timestamp.timestamp_micros(),
        },
        EventType::Insert {
            schema,
            table,
            data,
            ..
        } => WalEvent::Insert {
            table: table_name(&schema, &table),
            new: row(&data),
        },
        EventType::Update {
            schema,
            table,
            old_data,
            new_data,
            ..
        } => WalEvent::Update {
            table: table_name(&schema, &table),
            old: old_data.as_ref().map(row),
            new: row(&new_data),
        },
        EventType::Delete {
            schema,
            table,
            old_data,
            ..
        } => WalEvent::Delete {
            table: table_name(&schema, &table),
            old: row(&old_data),
        },
        EventType::Truncate { tables, .. } => WalEvent::Truncate {
            tables: tables
                .iter()
                .map(|t| match t.split_once('.') {
                    Some((s, n)) => table_name(s, n),
                    None => t.to_string(),
                })
                .collect(),
        },
        EventType::Message {
            prefix, content, ..
        } => WalEvent::Message {
            prefix: prefix.to_string(),
            content: content.to_vec(),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_quotes_values() {
        let s = replication_conninfo(
            "127.0.0.1",
            5432,
            "db x",
            "o'brien",
            Some(r"p\w"),
            "pgr",
            None,
        );
        assert_eq!(
            s,
            r"host='127.0.0.1' port=5432 dbname='db x' user='o\'brien' application_name='pgr' sslmode=disable replication=database password='p\\w'"
        );
        let ca = std::path::Path::new("/etc/ca's.pem");
        let s = conninfo("h", 1, "d", "u", "a", Some(ca));
        assert_eq!(
            s,
            r"host='h' port=1 dbname='d' user='u' application_name='a' sslmode=verify-full sslrootcert='/etc/ca\'s.pem'"
        );
    }
}
