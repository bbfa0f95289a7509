//! Distributed sequences: the values of generated sharding keys
//! (`docs/generated-keys.md`). Each sharded table whose key the router
//! fills in has a row in `pgrouter.sequences` (migration 7); a router
//! reserves blocks of values from it (`limits.sequence_block` at a time,
//! more for a larger INSERT) and hands them out in increasing order. As in
//! Vitess's sequence tables: values are unique across routers and shards,
//! increasing within one router, not ordered across routers, and a block
//! a router did not use up (restart) is a gap.
//!
//! Sessions run on their own worker runtimes; the catalog session lives in
//! a task on the control runtime ([`spawn`]) that serves reservations
//! through a channel. The same task declares the tables that keyspace
//! rules shard ([`Sequences::declare_by_rule`]), since both are the
//! router's own writes to the catalog.

use std::time::Duration;

use foldhash::{HashMap, HashMapExt};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config, NoTls};

use crate::protocol::error::codes;
use crate::protocol::PgError;
use crate::vindex::KeyType;

/// `application_name` of the sequence session.
pub const APPLICATION_NAME: &str = "pg-router-sequences";

/// Longest a reservation may take (connecting included) before the INSERT
/// that needs it fails.
const RESERVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Reserves `[v, v + $2)` of sequence `$1` and returns `v`.
const RESERVE_SQL: &str = "insert into pgrouter.sequences as s (table_name, next_value) \
     values ($1::text, 1 + $2::int8) on conflict (table_name) do update \
     set next_value = s.next_value + $2::int8, updated_at = now() \
     returning s.next_value - $2::int8";

/// One request to the catalog task.
enum Request {
    /// Reserve `count` values of `table`'s sequence.
    Reserve {
        table: String,
        count: i64,
        reply: oneshot::Sender<Result<i64, String>>,
    },
    /// Declare `table` by the rule of `column` (true: declared now or
    /// before; false: no rule, or a reference table).
    Declare {
        table: String,
        column: String,
        key_type: KeyType,
        reply: oneshot::Sender<Result<bool, String>>,
    },
}

/// The values this router holds, per table: `[next, end)`.
#[derive(Debug, Clone, Copy)]
struct Block {
    next: i64,
    end: i64,
}

/// This router's reserved blocks and the channel to the catalog task.
pub struct Sequences {
    blocks: Mutex<HashMap<String, Block>>,
    tx: Mutex<Option<mpsc::UnboundedSender<Request>>>,
}

impl Default for Sequences {
    fn default() -> Self {
        Sequences {
            blocks: Mutex::new(HashMap::new()),
            tx: Mutex::new(None),
        }
    }
}

impl Sequences {
    /// `n` fresh values of `table`'s sequence, increasing, each at most
    /// `max` (the key column type's largest value) and named `sequence` in
    /// the error past it. Reserves a block of `max(n, block)` values from
    /// the catalog when the held one runs out.
    ///
    /// Errors: 2200H (sequence_generator_limit_exceeded, PostgreSQL's
    /// message) past `max`; 08006 when the catalog cannot be reached in
    /// 5 s or no catalog task runs.
    pub async fn draw(
        &self,
        table: &str,
        n: usize,
        block: u32,
        max: i64,
        sequence: &str,
    ) -> Result<Vec<i64>, PgError> {
        let mut out = Vec::with_capacity(n);
        self.take(table, n, &mut out);
        while out.len() < n {
            let want = (n - out.len()).max(block as usize) as i64;
            let start = self.reserve(table, want).await?;
            let mut blocks = self.blocks.lock();
            let b = blocks.entry(table.to_string()).or_insert(Block {
                next: start,
                end: start,
            });
            // A block reserved meanwhile by another session of this router
            // is kept only if this one is newer; values never repeat.
            if start >= b.end {
                *b = Block {
                    next: start,
                    end: start.saturating_add(want),
                };
            }
            drop(blocks);
            self.take(table, n - out.len(), &mut out);
        }
        if out.last().is_some_and(|&v| v > max) {
            return Err(PgError::new(
                codes::SEQUENCE_LIMIT,
                format!("nextval: reached maximum value of sequence \"{sequence}\" ({max})"),
            ));
        }
        Ok(out)
    }

    fn take(&self, table: &str, n: usize, out: &mut Vec<i64>) {
        let mut blocks = self.blocks.lock();
        if let Some(b) = blocks.get_mut(table) {
            while out.len() < n && b.next < b.end {
                out.push(b.next);
                b.next += 1;
            }
        }
    }

    async fn reserve(&self, table: &str, count: i64) -> Result<i64, PgError> {
        let unreachable = |why: String| {
            PgError::new(
                codes::CONNECTION_FAILURE,
                format!("cannot generate key values for \"{table}\": {why}"),
            )
            .with_hint(
                "generated sharding keys are reserved from pgrouter.sequences in the catalog",
            )
        };
        self.ask(|reply| Request::Reserve {
            table: table.to_string(),
            count,
            reply,
        })
        .await
        .map_err(unreachable)
    }

    /// Declares `table` sharded by `column` (of key type `key_type`) in
    /// the keyspace of `column`'s rule, in the catalog
    /// ([`crate::catalog::declare_by_rule`]). True if the table is now
    /// declared (by this call or before it).
    ///
    /// Errors: 08006 naming the table when the catalog cannot be reached in
    /// 5 s or refuses the declaration (the catalog's message).
    pub async fn declare_by_rule(
        &self,
        table: &str,
        column: &str,
        key_type: KeyType,
    ) -> Result<bool, PgError> {
        self.ask(|reply| Request::Declare {
            table: table.to_string(),
            column: column.to_string(),
            key_type,
            reply,
        })
        .await
        .map_err(|why| {
            PgError::new(
                codes::CONNECTION_FAILURE,
                format!("cannot declare table \"{table}\" by the keyspace rule of column \"{column}\": {why}"),
            )
            .with_hint("nothing was created; declare it with pg-router meta add-table, or retry")
        })
    }

    /// Sends the request `make` builds to the catalog task and waits (5 s
    /// at most) for its answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Request,
    ) -> Result<T, String> {
        let tx = self
            .tx
            .lock()
            .clone()
            .ok_or_else(|| "no catalog connection".to_string())?;
        let (reply, rx) = oneshot::channel();
        tx.send(make(reply))
            .map_err(|_| "the catalog task ended".to_string())?;
        match tokio::time::timeout(RESERVE_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the catalog task ended".into()),
            Err(_) => Err("the catalog did not answer within 5 s".into()),
        }
    }
}

/// Spawns the task serving `seq`'s reservations against the catalog at
/// `dsn` (libpq `key=value` or URL form, no TLS), on the current runtime.
/// It connects on first use and again after a failure; a reservation that
/// fails is answered with the error. Ends when the runtime does.
pub fn spawn(seq: &Sequences, dsn: String) -> JoinHandle<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Request>();
    *seq.tx.lock() = Some(tx);
    tokio::spawn(async move {
        let config = match crate::catalog::session_config(&dsn, APPLICATION_NAME, RESERVE_TIMEOUT) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "sequences: invalid catalog DSN; generated keys fail");
                return;
            }
        };
        let mut client: Option<Client> = None;
        while let Some(r) = rx.recv().await {
            match r {
                Request::Reserve {
                    table,
                    count,
                    reply,
                } => {
                    let res = reserve_once(&config, &mut client, &table, count).await;
                    if res.is_err() {
                        client = None;
                    }
                    let _ = reply.send(res);
                }
                Request::Declare {
                    table,
                    column,
                    key_type,
                    reply,
                } => {
                    let res = declare_once(&config, &mut client, &table, &column, key_type).await;
                    if res.is_err() {
                        client = None;
                    }
                    let _ = reply.send(res);
                }
            }
        }
    })
}

/// The catalog session, connected if it is not.
async fn connected<'a>(
    config: &Config,
    client: &'a mut Option<Client>,
) -> Result<&'a Client, String> {
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        let (c, conn) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        *client = Some(c);
    }
    client
        .as_ref()
        .ok_or_else(|| "no catalog connection".into())
}

async fn reserve_once(
    config: &Config,
    client: &mut Option<Client>,
    table: &str,
    count: i64,
) -> Result<i64, String> {
    let c = connected(config, client).await?;
    let row = c
        .query_one(RESERVE_SQL, &[&table, &count])
        .await
        .map_err(|e| e.to_string())?;
    row.try_get::<_, i64>(0).map_err(|e| e.to_string())
}

async fn declare_once(
    config: &Config,
    client: &mut Option<Client>,
    table: &str,
    column: &str,
    key_type: KeyType,
) -> Result<bool, String> {
    let c = connected(config, client).await?;
    crate::catalog::declare_by_rule(c, table, column, key_type)
        .await
        .map(|t| t.is_some())
        .map_err(|e| e.to_string())
}
