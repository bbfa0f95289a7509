//! A multi-row `INSERT ... VALUES` with parameters whose rows belong to
//! several shards (the extended protocol: drivers' bulk inserts, e.g.
//! SQLAlchemy's insertmanyvalues or pgjdbc's `reWriteBatchedInserts`).
//!
//! At Bind the rows are grouped by shard and each shard gets its own
//! statement holding only its rows, placeholders renumbered
//! ([`crate::plan::insert_part`]), with the matching subset of the client's
//! parameter values and formats. At Execute every part runs as an unnamed
//! statement and portal (Parse, Bind, Execute, Flush; PostgreSQL protocol
//! docs §55.2.3) inside the batch's transaction, which spans the shards (a
//! 2PC transaction at Sync outside a block): the command tags are added and
//! RETURNING rows come back in the client's VALUES order
//! ([`MergeMode::Interleave`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::message::frontend as fe;

use crate::plan::{insert_part, insert_values_spans};
use crate::protocol::error::codes;
use crate::protocol::frontend::Bind;
use crate::protocol::PgError;

use super::concat::MergeMode;
use super::context::{End, ExecCtx};
use super::exchange::{Expect, Slot};
use super::route::part_order;
use super::statement::ClientStmt;

/// A multi-row INSERT split by shard, bound and ready to run at Execute.
#[derive(Debug)]
pub struct SplitInsert {
    /// Per shard, in shard name order: the shard and its encoded Parse +
    /// Bind (unnamed statement and portal).
    pub parts: Vec<(String, Bytes)>,
    /// For each VALUES row of the client's statement, the index of its
    /// part.
    pub order: Arc<[u32]>,
    /// The client's statement (a Describe of the portal describes it).
    pub stmt: Arc<ClientStmt>,
    /// The client's result-column format codes.
    pub result_formats: Vec<i16>,
    /// The statement has a RETURNING clause.
    pub returning: bool,
}

/// Splits the bound INSERT `stmt` (its query text has `$n` placeholders)
/// into one part per shard; `by_shard` lists, per shard, the indexes of the
/// VALUES rows it owns (at least two shards).
///
/// Errors: 0A000 when the statement's VALUES rows cannot be found in its
/// text; 08P01 when the Bind `b` supplies fewer parameters than the
/// statement uses, or a parameter-format count that is neither 0, 1 nor the
/// number of parameters (PostgreSQL's own Bind checks).
pub fn split_insert(
    stmt: &Arc<ClientStmt>,
    b: &Bind<'_>,
    by_shard: BTreeMap<&str, Vec<usize>>,
    rows: usize,
) -> Result<SplitInsert, PgError> {
    split_insert_text(stmt, &stmt.query, b, by_shard, rows)
}

/// [`split_insert`] of `sql`, the client's statement `stmt` with values
/// written in (generated sharding keys): the same placeholders and
/// parameter types, the same result columns. One shard is allowed.
pub fn split_insert_text(
    stmt: &Arc<ClientStmt>,
    sql: &str,
    b: &Bind<'_>,
    by_shard: BTreeMap<&str, Vec<usize>>,
    rows: usize,
) -> Result<SplitInsert, PgError> {
    let spans = insert_values_spans(sql)
        .filter(|s| s.rows.len() == rows)
        .ok_or_else(|| PgError::unsupported("could not split this multi-row INSERT by shard"))?;
    let nparams = b.params.len();
    if !matches!(b.param_formats.len(), 0 | 1) && b.param_formats.len() != nparams {
        return Err(PgError::new(
            codes::PROTOCOL_VIOLATION,
            format!(
                "bind message has {} parameter formats but {nparams} parameters",
                b.param_formats.len()
            ),
        ));
    }
    let order = part_order(&by_shard, rows);
    let mut parts = Vec::with_capacity(by_shard.len());
    for (shard, idxs) in by_shard {
        let part = insert_part(sql, &spans, &idxs).ok_or_else(|| {
            PgError::unsupported("could not split this multi-row INSERT by shard")
        })?;
        if let Some(&missing) = part.params.iter().find(|&&i| i >= nparams) {
            return Err(PgError::new(
                codes::PROTOCOL_VIOLATION,
                format!(
                    "bind message supplies {nparams} parameters, but prepared statement requires at least {}",
                    missing + 1
                ),
            ));
        }
        let mut out = BytesMut::new();
        let types = part
            .params
            .iter()
            .map(|&i| stmt.param_types.get(i).copied().unwrap_or(0));
        fe::parse("", &part.sql, types, &mut out)
            .map_err(|e| PgError::new(codes::PROGRAM_LIMIT_EXCEEDED, e.to_string()))?;
        encode_bind(&mut out, b, &part.params);
        parts.push((shard.to_string(), out.freeze()));
    }
    let suffix = sql.get(spans.suffix_start..).unwrap_or_default();
    Ok(SplitInsert {
        parts,
        order,
        stmt: stmt.clone(),
        result_formats: b.result_formats.to_vec(),
        returning: crate::plan::has_word(suffix, "returning"),
    })
}

/// Bind of the unnamed portal to the unnamed statement with the client's
/// parameters `params` (0-based indexes into `b.params`), their formats and
/// the client's result formats (PostgreSQL protocol docs §55.7, Bind).
fn encode_bind(out: &mut BytesMut, b: &Bind<'_>, params: &[usize]) {
    let start = out.len();
    out.put_u8(b'B');
    out.put_i32(0);
    out.put_u8(0);
    out.put_u8(0);
    if b.param_formats.len() > 1 {
        out.put_i16(params.len() as i16);
        for &i in params {
            out.put_i16(b.param_formats.get(i).copied().unwrap_or(0));
        }
    } else {
        out.put_i16(b.param_formats.len() as i16);
        for &f in &b.param_formats {
            out.put_i16(f);
        }
    }
    out.put_i16(params.len() as i16);
    for &i in params {
        match b.params.get(i).copied().flatten() {
            Some(v) => {
                out.put_i32(v.len() as i32);
                out.put_slice(v);
            }
            None => out.put_i32(-1),
        }
    }
    out.put_i16(b.result_formats.len() as i16);
    for &f in &b.result_formats {
        out.put_i16(f);
    }
    let len = (out.len() - start - 1) as i32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

impl ExecCtx {
    /// Runs a split INSERT at the client's Execute (`max_rows`: its row
    /// limit). Returns false if it failed (the error was sent; the batch's
    /// transaction is then rolled back by the caller's block handling).
    ///
    /// Errors sent: 0A000 for a row limit on a statement with RETURNING
    /// (the rows of several shards cannot be fetched in batches yet), the
    /// shards' errors (shard named in DETAIL).
    pub async fn split_insert_execute(
        &mut self,
        s: &SplitInsert,
        max_rows: i32,
    ) -> Result<bool, End> {
        // Each VALUES row returns at most one row: a limit at least the
        // row count suspends nothing.
        if max_rows > 0 && s.returning && s.order.len() > max_rows as usize {
            self.send_error(&PgError::unsupported(
                "fetching the RETURNING rows of a multi-row INSERT spanning shards in batches (Execute with a row limit) is not supported yet",
            ));
            return Ok(false);
        }
        let parts = s
            .parts
            .iter()
            .map(|(shard, msgs)| {
                let mut m = BytesMut::with_capacity(msgs.len() + 16);
                m.extend_from_slice(msgs);
                let _ = fe::execute("", 0, &mut m);
                fe::flush(&mut m);
                let slots = VecDeque::from([
                    Slot::Swallow(Expect::Parse(None)),
                    Slot::Swallow(Expect::Bind),
                    Slot::Forward(Expect::Execute),
                ]);
                (shard.clone(), m.freeze(), slots)
            })
            .collect();
        self.exchange_many(parts, MergeMode::Interleave(s.order.clone()))
            .await
    }
}
