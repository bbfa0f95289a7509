//! The two-phase commit decision log: rows of `pgrouter.twopc_decisions`
//! in the catalog database (migration 0002).
//!
//! The coordinator's commit point is the commit of
//! `INSERT ... VALUES (gid, 'c') ON CONFLICT DO NOTHING`; the recovery loop
//! decides ABORT for an expired prepared transaction with the same INSERT
//! of `'a'`. The primary key on `gid` makes the two exclusive: the second
//! INSERT inserts nothing and its writer reads the first one's decision.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};
use parking_lot::Mutex;
use tokio_postgres::Client;

/// Outcome recorded for a distributed transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Commit on every participant.
    Commit,
    /// Roll back on every participant.
    Abort,
}

impl Decision {
    fn from_char(c: i8) -> Option<Decision> {
        match c as u8 {
            b'c' => Some(Decision::Commit),
            b'a' => Some(Decision::Abort),
            _ => None,
        }
    }
}

/// Failure to record a decision.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Nothing was recorded (connect failed, or the server rejected the
    /// statement): the transaction can be rolled back.
    #[error("cannot write the commit decision to the catalog: {0}")]
    NotWritten(String),
    /// The connection was lost after the INSERT was sent: the decision may
    /// or may not be durable; only the recovery loop can tell.
    #[error("lost the catalog connection while writing the commit decision: {0}")]
    Unknown(String),
}

/// The coordinator's connections to the catalog for decision writes:
/// `n` tokio-postgres clients used round-robin (each pipelines the INSERTs
/// of concurrent sessions; several connections let PostgreSQL group-commit
/// them), connected lazily on the control runtime and reconnected after a
/// failure.
pub struct DecisionLog {
    dsn: String,
    router_id: String,
    clients: Vec<Mutex<Option<Arc<Client>>>>,
    rr: AtomicUsize,
    rt: tokio::runtime::Handle,
}

impl DecisionLog {
    /// A log writing to catalog `dsn` as router `router_id` over `n` (≥ 1)
    /// connections whose I/O runs on runtime `rt`.
    pub fn new(dsn: String, router_id: String, n: usize, rt: tokio::runtime::Handle) -> Self {
        DecisionLog {
            dsn,
            router_id,
            clients: (0..n.max(1)).map(|_| Mutex::new(None)).collect(),
            rr: AtomicUsize::new(0),
            rt,
        }
    }

    async fn client(&self) -> Result<Arc<Client>, String> {
        let slot = &self.clients[self.rr.fetch_add(1, Ordering::Relaxed) % self.clients.len()];
        if let Some(c) = slot.lock().as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let dsn = self.dsn.clone();
        let c = self
            .rt
            .spawn(async move {
                let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::warn!("decision log connection: {e}");
                    }
                });
                Ok::<_, tokio_postgres::Error>(client)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let c = Arc::new(c);
        *slot.lock() = Some(c.clone());
        Ok(c)
    }

    /// Records COMMIT for `gid` (prepared on `shards`) durably: the commit
    /// point. Returns the decision in force: `Commit`, or `Abort` when the
    /// recovery loop decided first (the caller must roll back).
    ///
    /// Errors: [`LogError::NotWritten`] or [`LogError::Unknown`].
    pub async fn decide_commit(&self, gid: &str, shards: &[String]) -> Result<Decision, LogError> {
        let c = self.client().await.map_err(LogError::NotWritten)?;
        let r = c
            .query(
                "insert into pgrouter.twopc_decisions (gid, decision, router_id, shards) \
                 values ($1, 'c', $2, $3) on conflict (gid) do nothing returning decision",
                &[&gid, &self.router_id, &shards],
            )
            .await;
        match r {
            Ok(rows) if !rows.is_empty() => Ok(Decision::Commit),
            // The only other writer of a gid is recovery, deciding abort.
            Ok(_) => Ok(Decision::Abort),
            Err(e) if e.as_db_error().is_some() => Err(LogError::NotWritten(e.to_string())),
            Err(e) => Err(LogError::Unknown(e.to_string())),
        }
    }
}

/// Decides ABORT for `gid` unless a decision exists; returns the decision
/// in force afterwards.
pub async fn decide_abort(
    c: &Client,
    gid: &str,
    router_id: &str,
) -> Result<Decision, tokio_postgres::Error> {
    c.execute(
        "insert into pgrouter.twopc_decisions (gid, decision, router_id) \
         values ($1, 'a', $2) on conflict (gid) do nothing",
        &[&gid, &router_id],
    )
    .await?;
    let row = c
        .query_one(
            "select decision from pgrouter.twopc_decisions where gid = $1",
            &[&gid],
        )
        .await?;
    Ok(Decision::from_char(row.try_get(0)?).unwrap_or(Decision::Abort))
}

/// One decision row.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRow {
    /// The prepared transaction identifier.
    pub gid: String,
    /// Its decision.
    pub decision: Decision,
    /// Age of the row, in seconds (catalog clock).
    pub age_s: f64,
}

/// Every decision row, by gid.
pub async fn all_decisions(
    c: &Client,
) -> Result<HashMap<String, DecisionRow>, tokio_postgres::Error> {
    let rows = c
        .query(
            "select gid, decision, extract(epoch from now() - decided_at)::float8 \
             from pgrouter.twopc_decisions",
            &[],
        )
        .await?;
    let mut m = HashMap::with_capacity(rows.len());
    for r in rows {
        let gid: String = r.try_get(0)?;
        let Some(decision) = Decision::from_char(r.try_get(1)?) else {
            continue;
        };
        let age_s: f64 = r.try_get(2)?;
        m.insert(
            gid.clone(),
            DecisionRow {
                gid,
                decision,
                age_s,
            },
        );
    }
    Ok(m)
}

/// Deletes the decision rows of `gids`; returns how many were deleted.
pub async fn forget(c: &Client, gids: &[String]) -> Result<u64, tokio_postgres::Error> {
    if gids.is_empty() {
        return Ok(0);
    }
    c.execute(
        "delete from pgrouter.twopc_decisions where gid = any($1)",
        &[&gids],
    )
    .await
}
