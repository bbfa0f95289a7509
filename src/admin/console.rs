//! The admin console, in the PgBouncer style: a client that connects to
//! database `pgrouter` as one of `auth.admin_users` gets this session
//! instead of a routed one. It accepts simple queries only:
//!
//! | Command | Rows |
//! |---|---|
//! | `SHOW HELP` | the commands |
//! | `SHOW SHARDS` | shard, host, port, database, user, state, down_ms, reason |
//! | `SHOW POOLS` | shard, size, in_use, idle, waiting, opened |
//! | `SHOW CLIENTS` | id, addr, user, database, application_name, connected_at, state, tls |
//! | `SHOW STATS` | route, requests, p50_ms, p90_ms, p99_ms, p999_ms (since start) |
//! | `SHOW ROUTING` | keyspace, vindex, generation, key_range, shard |
//! | `SHOW TRANSACTIONS` | in-doubt transactions: shard, gid, prepared, age_s, database |
//! | `SHOW SPLITS` | split jobs (active, or ended within a day): id, keyspace, source, target, key_range, phase, rows_copied, lag_bytes, window_ms, updated_at, error |
//! | `RELOAD` | re-reads the configuration file (as SIGHUP) |
//! | `PAUSE` | new transactions wait; returns when no backend connection is in use |
//! | `RESUME` | undoes PAUSE |
//!
//! Every value is text (type `text`); results end with CommandComplete
//! `SHOW` (or the command's name) and ReadyForQuery `I`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;

use crate::backend::BackendConn;
use crate::protocol::error::codes;
use crate::protocol::{synth, FrameReader, PgError, ProtocolError};
use crate::state::{Phase, RouterState};

use crate::protocol::client_io::ClientOut;
use crate::state::clients::{activity_label, CancelSlot};

/// Database name that selects the admin console.
pub const ADMIN_DATABASE: &str = "pgrouter";

/// A command's result: column names and text rows, and the command tag.
struct Table {
    columns: &'static [&'static str],
    rows: Vec<Vec<String>>,
    tag: &'static str,
}

/// Runs an admin console session until the client leaves (or the router
/// drains).
pub async fn run<R: tokio::io::AsyncRead + Unpin>(
    state: Arc<RouterState>,
    mut reader: FrameReader<R>,
    mut out: ClientOut,
    slot: Arc<CancelSlot>,
) {
    let mut skip_until_sync = false;
    loop {
        if !out.buf.is_empty() && out.flush().await.is_err() {
            return;
        }
        let f = loop {
            if state.phase() != Phase::Running {
                synth::error(&mut out.buf, &PgError::admin_shutdown());
                let _ = out.flush().await;
                return;
            }
            tokio::select! {
                r = reader.next() => break r,
                _ = slot.wake.wait() => continue,
            }
        };
        let f = match f {
            Ok(f) => f,
            Err(ProtocolError::Eof) => return,
            Err(e) => {
                synth::error(
                    &mut out.buf,
                    &PgError::fatal(codes::PROTOCOL_VIOLATION, e.to_string()),
                );
                let _ = out.flush().await;
                return;
            }
        };
        match f.tag {
            b'Q' => {
                let sql = crate::protocol::frontend::Cursor::new(f.body())
                    .cstr()
                    .unwrap_or_default();
                match execute(&state, sql).await {
                    Ok(Some(t)) => write_table(&mut out.buf, &t),
                    Ok(None) => synth::empty_query(&mut out.buf),
                    Err(e) => synth::error(&mut out.buf, &e),
                }
                synth::ready(&mut out.buf, b'I');
            }
            b'X' => return,
            b'S' => {
                if skip_until_sync {
                    skip_until_sync = false;
                } else {
                    synth::error(&mut out.buf, &extended_refused());
                }
                synth::ready(&mut out.buf, b'I');
            }
            b'P' | b'B' | b'D' | b'E' | b'C' | b'H' if !skip_until_sync => {
                synth::error(&mut out.buf, &extended_refused());
                skip_until_sync = true;
            }
            _ => {}
        }
    }
}

fn extended_refused() -> PgError {
    PgError::unsupported("the pg-router admin console accepts simple queries only")
        .with_hint("use psql, or the simple query protocol of your driver")
}

fn write_table(buf: &mut BytesMut, t: &Table) {
    if !t.columns.is_empty() {
        synth::text_row_description(buf, t.columns);
        for r in &t.rows {
            let vals: Vec<Option<&[u8]>> = r.iter().map(|v| Some(v.as_bytes())).collect();
            synth::data_row(buf, &vals);
        }
    }
    synth::command_complete(buf, t.tag);
}

/// Runs one admin command. `Ok(None)` for an empty query.
///
/// Errors: 42601 for an unknown command; what the command itself returns.
async fn execute(state: &Arc<RouterState>, sql: &str) -> Result<Option<Table>, PgError> {
    let words: Vec<String> = sql
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    Ok(Some(match words.as_slice() {
        [] => return Ok(None),
        ["SHOW", "HELP"] => help(),
        ["SHOW", "SHARDS"] => shards(state),
        ["SHOW", "POOLS"] => pools(state),
        ["SHOW", "CLIENTS"] => clients(state),
        ["SHOW", "STATS"] => stats(state),
        ["SHOW", "ROUTING"] => routing(state),
        ["SHOW", "TRANSACTIONS"] => transactions(state).await,
        ["SHOW", "SPLITS"] => splits(state),
        ["RELOAD"] => reload(state)?,
        ["PAUSE"] => pause(state).await?,
        ["RESUME"] => {
            state.resume();
            Table {
                columns: &[],
                rows: Vec::new(),
                tag: "RESUME",
            }
        }
        _ => {
            return Err(PgError::new(
                codes::SYNTAX_ERROR,
                format!("unknown admin command: {}", sql.trim()),
            )
            .with_hint("SHOW HELP lists the commands"))
        }
    }))
}

fn help() -> Table {
    let cmds = [
        (
            "SHOW SHARDS",
            "shards, their address and whether they are up",
        ),
        ("SHOW POOLS", "backend connection pools per shard"),
        ("SHOW CLIENTS", "connected clients"),
        ("SHOW STATS", "requests and latency quantiles by route kind"),
        (
            "SHOW ROUTING",
            "key ranges of every keyspace and their shards",
        ),
        (
            "SHOW TRANSACTIONS",
            "in-doubt (prepared) distributed transactions",
        ),
        (
            "SHOW SPLITS",
            "online resharding jobs: phase, rows copied, lag, cutover window",
        ),
        ("RELOAD", "re-read the configuration file, as SIGHUP"),
        (
            "PAUSE",
            "hold new transactions; wait until no backend connection is in use",
        ),
        ("RESUME", "undo PAUSE"),
    ];
    Table {
        columns: &["command", "description"],
        rows: cmds
            .iter()
            .map(|(c, d)| vec![c.to_string(), d.to_string()])
            .collect(),
        tag: "SHOW",
    }
}

fn shards(state: &RouterState) -> Table {
    let routing = state.routing();
    let health: std::collections::HashMap<_, _> = state.shard_health().into_iter().collect();
    let rows = routing
        .catalog
        .shards
        .values()
        .map(|s| {
            let down = health.get(&s.name).cloned().flatten();
            vec![
                s.name.clone(),
                s.host.clone(),
                s.port.to_string(),
                s.dbname.clone(),
                s.user.clone().unwrap_or_default(),
                if down.is_some() { "down" } else { "up" }.to_string(),
                down.as_ref()
                    .map(|d| d.for_.as_millis().to_string())
                    .unwrap_or_default(),
                down.map(|d| d.reason).unwrap_or_default(),
            ]
        })
        .collect();
    Table {
        columns: &[
            "shard", "host", "port", "database", "user", "state", "down_ms", "reason",
        ],
        rows,
        tag: "SHOW",
    }
}

fn pools(state: &RouterState) -> Table {
    let mut stats = state.pool_stats();
    stats.sort_by(|a, b| a.shard.cmp(&b.shard));
    Table {
        columns: &["shard", "size", "in_use", "idle", "waiting", "opened"],
        rows: stats
            .into_iter()
            .map(|p| {
                vec![
                    p.shard,
                    p.size.to_string(),
                    p.in_use.to_string(),
                    p.idle.to_string(),
                    p.waiting.to_string(),
                    p.opened.to_string(),
                ]
            })
            .collect(),
        tag: "SHOW",
    }
}

fn clients(state: &RouterState) -> Table {
    let rows = state
        .cancels
        .list()
        .into_iter()
        .filter_map(|(pid, slot)| {
            let info = slot.info.get()?.clone();
            let activity = slot.activity.load(std::sync::atomic::Ordering::Relaxed);
            let since = info
                .connected_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            Some(vec![
                pid.to_string(),
                info.addr.map(|a| a.to_string()).unwrap_or_default(),
                info.user,
                info.database,
                info.application_name,
                since.to_string(),
                activity_label(activity).to_string(),
                info.tls.to_string(),
            ])
        })
        .collect();
    Table {
        columns: &[
            "id",
            "addr",
            "user",
            "database",
            "application_name",
            "connected_at",
            "state",
            "tls",
        ],
        rows,
        tag: "SHOW",
    }
}

fn stats(state: &RouterState) -> Table {
    let snap = state.metrics.snapshot();
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| {
        if h.is_empty() {
            String::new()
        } else {
            format!("{:.3}", h.value_at_quantile(q) as f64 / 1000.0)
        }
    };
    let rows = crate::metrics::RouteKind::ALL
        .iter()
        .map(|k| {
            let i = *k as usize;
            let h = &snap.stats.latency[i];
            vec![
                k.label().to_string(),
                snap.stats.requests[i].to_string(),
                ms(h, 0.5),
                ms(h, 0.9),
                ms(h, 0.99),
                ms(h, 0.999),
            ]
        })
        .collect();
    Table {
        columns: &["route", "requests", "p50_ms", "p90_ms", "p99_ms", "p999_ms"],
        rows,
        tag: "SHOW",
    }
}

fn routing(state: &RouterState) -> Table {
    let routing = state.routing();
    let mut keyspaces: Vec<_> = routing.catalog.keyspaces.values().collect();
    keyspaces.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rows = Vec::new();
    for k in keyspaces {
        for r in k.routing.ranges() {
            rows.push(vec![
                k.name.clone(),
                k.vindex.as_str().to_string(),
                k.generation.to_string(),
                r.range.to_string(),
                r.shard.clone(),
            ]);
        }
    }
    Table {
        columns: &["keyspace", "vindex", "generation", "key_range", "shard"],
        rows,
        tag: "SHOW",
    }
}

/// Prepared transactions of pg-router (gid `pgr_...`) on every shard,
/// read live from `pg_prepared_xacts` (a shard that cannot be read gets a
/// row saying so).
async fn transactions(state: &RouterState) -> Table {
    let mut rows = Vec::new();
    for (shard, _) in state.shard_health() {
        let Some(pool) = state.pool(&shard, 0) else {
            continue;
        };
        let t = pool.target.clone();
        let sql = "SELECT gid, prepared::text, extract(epoch FROM now() - prepared)::bigint::text, database \
                   FROM pg_prepared_xacts WHERE gid LIKE 'pgr\\_%' ORDER BY prepared";
        let res = async {
            let mut c = BackendConn::connect(&t).await.map_err(|e| e.to_string())?;
            let r = c.simple_rows(sql).await.map_err(|e| e.to_string())?;
            c.terminate().await;
            r.map_err(|(code, m)| format!("{m} (SQLSTATE {code})"))
        };
        match tokio::time::timeout(t.connect_timeout * 2, res).await {
            Ok(Ok(found)) => {
                for r in found {
                    let mut row = vec![shard.clone()];
                    row.extend(r.into_iter().map(Option::unwrap_or_default));
                    rows.push(row);
                }
            }
            Ok(Err(e)) => rows.push(vec![shard.clone(), format!("(unreadable: {e})")]),
            Err(_) => rows.push(vec![shard.clone(), "(unreadable: timed out)".into()]),
        }
    }
    for r in &mut rows {
        r.resize(5, String::new());
    }
    Table {
        columns: &["shard", "gid", "prepared", "age_s", "database"],
        rows,
        tag: "SHOW",
    }
}

/// The split jobs as the lease task last read them (at most a second old
/// while this router reaches the catalog).
fn splits(state: &RouterState) -> Table {
    let opt = |v: Option<String>| v.unwrap_or_default();
    let rows = state
        .splits
        .jobs()
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                j.keyspace.clone(),
                j.source.clone(),
                j.target.clone(),
                j.key_range.clone(),
                j.phase.clone(),
                j.rows_copied.to_string(),
                opt(j.lag_bytes.map(|b| b.to_string())),
                opt(j.cutover_window_ms.map(|w| format!("{w:.1}"))),
                j.updated_at.clone(),
                opt(j.error.clone()),
            ]
        })
        .collect();
    Table {
        columns: &[
            "id",
            "keyspace",
            "source",
            "target",
            "key_range",
            "phase",
            "rows_copied",
            "lag_bytes",
            "window_ms",
            "updated_at",
            "error",
        ],
        rows,
        tag: "SHOW",
    }
}

fn reload(state: &RouterState) -> Result<Table, PgError> {
    match state.reload_config() {
        Some(Ok(restart)) => Ok(Table {
            columns: &["needs_restart"],
            rows: restart.into_iter().map(|k| vec![k.to_string()]).collect(),
            tag: "RELOAD",
        }),
        Some(Err(e)) => Err(PgError::new(codes::INVALID_PARAMETER_VALUE, e)
            .with_detail("the running configuration stays in force")),
        None => Err(PgError::new(
            codes::OBJECT_NOT_IN_PREREQUISITE_STATE,
            "this router has no configuration file to reload (pg-router dev)",
        )),
    }
}

/// PAUSE: new transactions wait until RESUME; returns once no backend
/// connection is in use, or fails with 57014 after
/// `limits.shutdown_timeout_ms` (the router stays paused).
async fn pause(state: &RouterState) -> Result<Table, PgError> {
    state.pause();
    let limit = Duration::from_millis(state.limits().shutdown_timeout_ms);
    let t0 = Instant::now();
    loop {
        let in_use: usize = state.pool_stats().iter().map(|p| p.in_use).sum();
        if in_use == 0 {
            return Ok(Table {
                columns: &[],
                rows: Vec::new(),
                tag: "PAUSE",
            });
        }
        if t0.elapsed() >= limit {
            return Err(PgError::new(
                codes::QUERY_CANCELED,
                format!(
                    "PAUSE timed out after {} ms: {in_use} backend connections are still in use",
                    limit.as_millis()
                ),
            )
            .with_hint("new transactions stay paused; RESUME undoes PAUSE"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_command() {
        let t = help();
        for c in [
            "SHOW SHARDS",
            "SHOW POOLS",
            "SHOW CLIENTS",
            "SHOW STATS",
            "SHOW ROUTING",
            "SHOW TRANSACTIONS",
            "SHOW SPLITS",
            "RELOAD",
            "PAUSE",
            "RESUME",
        ] {
            assert!(t.rows.iter().any(|r| r[0] == c), "{c}");
        }
    }
}
