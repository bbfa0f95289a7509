//! The target side of the CDC apply ([`Target`]): one connection, its
//! prepared statements, and pipelining — the statements of one source
//! transaction can be queued and sent together with their BEGIN
//! ([`Target::flush`]), one round trip instead of one per change
//! (tokio-postgres sends requests in the order their futures are first
//! polled, and the server runs them in that order).

use std::collections::HashMap;

use futures_util::future::{join, join_all};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

use super::error::{shard_error, SplitError};

/// Prepared statements kept per connection (cleared when full).
const MAX_STATEMENTS: usize = 1024;

struct Queued {
    stmt: Statement,
    sql: String,
    params: Vec<Option<String>>,
    must_match: bool,
}

/// See the module docs.
pub(super) struct Target {
    pub(super) client: Client,
    pub(super) shard: String,
    statements: HashMap<String, Statement>,
    /// Some while statements are queued instead of run.
    queue: Option<Vec<Queued>>,
}

/// What [`Target::flush`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flushed {
    /// Every statement ran, each that had to match a row did: the
    /// transaction is open.
    Ok,
    /// A statement that had to match a row matched none: rolled back
    /// (apply the transaction statement by statement instead).
    Unmatched,
}

impl Target {
    pub(super) fn new(client: Client, shard: String) -> Target {
        Target {
            client,
            shard,
            statements: HashMap::new(),
            queue: None,
        }
    }

    /// Queue statements from now on until [`Target::flush`].
    pub(super) fn start_queue(&mut self) {
        self.queue = Some(Vec::new());
    }

    /// Statements are being queued.
    pub(super) fn queueing(&self) -> bool {
        self.queue.is_some()
    }

    /// Runs `sql` with text parameters (prepared once per connection); its
    /// row count. While queueing, it is queued and 1 returned;
    /// `must_match`: the flush fails over when it affects no row.
    ///
    /// Errors: [`SplitError::Shard`].
    pub(super) async fn run(
        &mut self,
        sql: String,
        params: &[Option<&str>],
        must_match: bool,
    ) -> Result<u64, SplitError> {
        let stmt = match self.statements.get(&sql) {
            Some(s) => s.clone(),
            None => {
                let s = self
                    .client
                    .prepare_typed(&sql, &vec![Type::TEXT; params.len()])
                    .await
                    .map_err(|e| shard_error(&self.shard, format!("preparing `{sql}`"), e))?;
                if self.statements.len() >= MAX_STATEMENTS {
                    self.statements.clear();
                }
                self.statements.insert(sql.clone(), s.clone());
                s
            }
        };
        if let Some(q) = self.queue.as_mut() {
            q.push(Queued {
                stmt,
                sql,
                params: params.iter().map(|p| p.map(str::to_string)).collect(),
                must_match,
            });
            return Ok(1);
        }
        let p: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        self.client
            .execute(&stmt, &p)
            .await
            .map_err(|e| shard_error(&self.shard, format!("running `{sql}`"), e))
    }

    /// Drops the queued statements unsent and stops queueing.
    pub(super) fn flush_discard(&mut self) {
        self.queue = None;
    }

    /// Sends BEGIN and the queued statements in one pipeline and stops
    /// queueing.
    ///
    /// Errors: [`SplitError::Shard`] for the first statement that failed
    /// (the transaction is rolled back).
    pub(super) async fn flush(&mut self) -> Result<Flushed, SplitError> {
        let queued = self.queue.take().unwrap_or_default();
        let params: Vec<Vec<&(dyn ToSql + Sync)>> = queued
            .iter()
            .map(|q| q.params.iter().map(|v| v as &(dyn ToSql + Sync)).collect())
            .collect();
        let client = &self.client;
        let (begun, results) = join(
            client.batch_execute("BEGIN"),
            join_all(
                queued
                    .iter()
                    .zip(&params)
                    .map(|(q, p)| client.execute(&q.stmt, p)),
            ),
        )
        .await;
        let mut outcome = begun
            .map(|()| Flushed::Ok)
            .map_err(|e| shard_error(&self.shard, "BEGIN".into(), e));
        if outcome.is_ok() {
            for (q, r) in queued.iter().zip(results) {
                match r {
                    Ok(0) if q.must_match => {
                        outcome = Ok(Flushed::Unmatched);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        outcome = Err(shard_error(&self.shard, format!("running `{}`", q.sql), e));
                        break;
                    }
                }
            }
        }
        if !matches!(outcome, Ok(Flushed::Ok)) {
            self.client
                .batch_execute("ROLLBACK")
                .await
                .map_err(|e| shard_error(&self.shard, "ROLLBACK".into(), e))?;
        }
        outcome
    }
}
