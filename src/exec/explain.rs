//! `EXPLAIN (ROUTER) statement`: the router describes how it would run the
//! statement for these literal values — the shards targeted (after shard
//! pruning), the merge steps done at the router and, for a merged SELECT,
//! the statement sent to the shards. Nothing is sent to any shard.
//!
//! Answered as one text column "QUERY PLAN" (like PostgreSQL's EXPLAIN), in
//! the simple query protocol.

use crate::plan::{KeySet, Literals, Merge, OwnedKind, Plan, TxnStmt};
use crate::protocol::PgError;
use crate::state::Routing;

use super::gather::simple_shard_sql;
use super::route::{key_shard, scatter_shards, Values};

/// The lines of the router's plan for `plan` of the simple-protocol text
/// `sql`. Errors: the statement's own refusal, or a routing error (e.g. an
/// invalid key value).
pub(crate) fn explain_lines(
    routing: &Routing,
    plan: &Plan,
    sql: &str,
    lits: &Literals,
) -> Result<Vec<String>, PgError> {
    let cat = &routing.catalog;
    let values = Values::Simple { sql, lits };
    let mut out = Vec::new();
    match plan {
        Plan::Error {
            sqlstate,
            message,
            hint,
        } => {
            let mut e = PgError::new(sqlstate, message.clone());
            e.hint = hint.clone();
            return Err(e);
        }
        Plan::Transaction(t) => out.push(match t {
            TxnStmt::Begin { .. } => {
                "Transaction control: BEGIN (sent lazily to each shard the transaction touches)"
                    .into()
            }
            TxnStmt::Commit => "Transaction control: COMMIT on every participant".into(),
            TxnStmt::Rollback => "Transaction control: ROLLBACK on every participant".into(),
            TxnStmt::Savepoint => {
                "Transaction control: savepoint forwarded to every participant".into()
            }
        }),
        Plan::Set { .. } => out.push(
            "Session setting: recorded by the router, replayed on every backend connection".into(),
        ),
        Plan::AnyShard => out.push("Any one shard (no sharded table)".into()),
        Plan::AllShards => out.push(format!("All shards: {}", cat.shard_names().join(", "))),
        Plan::Broadcast { table } => {
            let shards = cat.shard_names();
            out.push(format!(
                "Broadcast write to reference table {table}: all {} shard(s): {}",
                shards.len(),
                shards.join(", ")
            ));
            out.push("  Result: the first shard's response (every copy is identical)".into());
        }
        Plan::Keyed { keys, .. } => {
            let mut shard = None;
            for k in keys {
                if let Some(s) = key_shard(cat, &k.table, &k.key, &values)? {
                    shard = Some(s);
                }
            }
            let tables: Vec<&str> = keys.iter().map(|k| &*k.table).collect();
            out.push(format!(
                "Single shard (fast path): {} (by the sharding key of {})",
                shard.unwrap_or("any shard (NULL key)"),
                tables.join(", ")
            ));
        }
        Plan::Insert { table, rows } => {
            let mut shards: Vec<&str> = Vec::new();
            for k in rows {
                if let Some(s) = key_shard(cat, table, k, &values)? {
                    if !shards.contains(&s) {
                        shards.push(s);
                    }
                }
            }
            out.push(format!(
                "Insert into {table}: {} row(s) routed by key to {}",
                rows.len(),
                shards.join(", ")
            ));
        }
        Plan::Copy(c) => out.push(format!(
            "COPY {} {}: rows split by key (FROM) or gathered from every shard (TO)",
            c.table,
            if c.from_stdin {
                "FROM STDIN"
            } else {
                "TO STDOUT"
            }
        )),
        Plan::RouterExplain(_) => out.push("EXPLAIN (ROUTER)".into()),
        Plan::Subqueries { .. } => {
            out.push("Subqueries first: each subquery below that runs on its own is run and merged like a statement, its rows written into the text, then the statement is planned again".into());
            for g in crate::plan::query_groups(sql) {
                out.push(format!("  Subquery: {}", sql.get(g.range).unwrap_or_default().trim()));
            }
        }
        Plan::InsertSelect(p) => {
            out = explain_lines(routing, &p.source, sql, lits)?;
            out.push(format!(
                "  INSERT into {}: the SELECT's rows kept by the router (binary), grouped by the shard their {} names, inserted there from arrays in one transaction",
                p.table,
                if p.generator.is_some() { "generated key" } else { "key" }
            ));
        }
        Plan::CopyQuery(c) => {
            let inner = sql.get(c.query.clone()).unwrap_or_default();
            let scatter = Plan::Scatter {
                table: c.table.clone(),
                prune: c.prune.clone(),
                lookup: None,
                merge: c.merge.clone(),
                read_only: true,
            };
            out = explain_lines(routing, &scatter, inner, &Literals::default())?;
            out.push(match c.merge {
                crate::plan::Merge::Gather(_) => "  COPY: the merged rows encoded as COPY data by the router".into(),
                _ => "  COPY: each shard runs the COPY; streams concatenated (one header)".into(),
            });
        }
        Plan::SequenceFn(c) => out.push(match &c.func {
            crate::plan::SequenceFn::Nextval { sequence, table } => format!(
                "Answered by the router: nextval of {sequence}, the distributed sequence pgrouter.sequences['{table}']"
            ),
            crate::plan::SequenceFn::Currval(s) => format!(
                "Answered by the router: the value this session last got from {s} (else sent to any shard)"
            ),
            crate::plan::SequenceFn::Lastval => {
                "Answered by the router: the generated key value this session last got (else sent to any shard)".into()
            }
        }),
        Plan::NeedSchema { table } => out.push(format!(
            "Needs the columns of {table}: read from its shards at the first execution, then planned again"
        )),
        Plan::GenerateKey(g) => {
            out.push(format!(
                "Insert into {}: {} row(s); sharding key {} generated from the distributed sequence pgrouter.sequences['{}'], then routed by key",
                g.table, g.rows, g.key, g.table
            ));
        }
        Plan::Owned { inner, write } => {
            out = explain_lines(routing, inner, sql, lits)?;
            let names: Vec<String> = write
                .lookups
                .iter()
                .map(|l| format!("{}.{} → {}", write.table, l.column, l.lookup_table))
                .collect();
            out.push(format!(
                "  Lookup vindex maintenance ({}), in the same transaction: {}",
                names.join(", "),
                match &write.kind {
                    OwnedKind::Insert { .. } => "lookup rows inserted first",
                    OwnedKind::Rows { new: None, .. } =>
                        "rows locked by a pre-select, their lookup rows deleted",
                    OwnedKind::Rows { new: Some(_), .. } =>
                        "rows locked by a pre-select, their old lookup rows deleted and new ones inserted",
                }
            ));
        }
        Plan::Scatter {
            table,
            prune,
            merge,
            lookup,
            ..
        } => {
            let all = cat
                .table(table)
                .and_then(|t| cat.keyspace_of(t))
                .map(|k| k.routing.shards().len())
                .unwrap_or(0);
            let shards = scatter_shards(cat, table, prune.as_ref(), &values)?;
            out.push(format!(
                "Scatter-gather on {table}: {} of {all} shard(s): {}",
                shards.len(),
                shards.join(", ")
            ));
            if let Some(l) = lookup {
                out.push(format!(
                    "  Lookup vindex: {table}.{} = <value> → keyspace ids from {}; runs only on the shards owning them (resolved at execution)",
                    l.column, l.lookup_table
                ));
            }
            if let Some(p) = prune {
                out.push(match p {
                    KeySet::List(v) => {
                        format!("  Shard pruning: {} key value(s) in IN (...)", v.len())
                    }
                    KeySet::Array(_) => "  Shard pruning: key = ANY(array)".into(),
                    KeySet::Range { .. } => "  Shard pruning: key range (range vindex only)".into(),
                });
            }
            match merge {
                Merge::Concat => out.push("  Merge: concatenate rows".into()),
                Merge::NeedsText => {}
                Merge::Gather(g) => {
                    for s in &g.steps {
                        out.push(format!("  Merge: {s}"));
                    }
                    if g.hidden > 0 {
                        out.push(format!(
                            "  Hidden columns: {} (binary, stripped before the client)",
                            g.hidden
                        ));
                    }
                    out.push(format!("  Shard SQL: {}", simple_shard_sql(g, sql, lits)?));
                    if let Some(f) = &g.finish {
                        out.push(format!(
                            "  Final SQL (on the first shard, over the shards' rows as arrays): {}",
                            crate::exec::gather::explain_final_sql(f, g.hidden, sql, lits)?
                        ));
                    }
                }
            }
        }
    }
    Ok(out)
}
