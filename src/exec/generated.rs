//! Generated sharding keys ([`crate::plan::Plan::GenerateKey`]): values
//! drawn from the table's distributed sequence (`state/sequences.rs`) and
//! written into the INSERT's text, which is then planned again and routed
//! by them like any keyed INSERT.

use std::sync::Arc;

use crate::plan::{with_generated_keys, GeneratedInsert, Plan, SequenceCall, SequenceFn};
use crate::protocol::error::codes;
use crate::protocol::frontend::Bind;
use crate::protocol::{synth, PgError};
use crate::state::Routing;

use super::context::{End, ExecCtx};
use super::message::{Answered, PendingGenerated, PendingSequence, Route};
use super::route::{rows_by_shard, Values};
use super::split_insert::split_insert_text;

impl ExecCtx {
    /// `sql` (planned as `g`) with one fresh key value per row, the values
    /// also recorded for `currval`/`lastval` ([`ExecCtx::generated`]).
    /// None after sending an error: 2200H past the key type's range, 08006
    /// when the catalog cannot reserve values, 0A000 when the text cannot
    /// be rewritten (`OVERRIDING USER VALUE`).
    pub async fn generate_keys(&mut self, sql: &str, g: &GeneratedInsert) -> Option<String> {
        let block = self.state.limits().sequence_block;
        let name = g
            .generator
            .sequence
            .clone()
            .unwrap_or_else(|| format!("{}_{}_seq", g.table, g.key));
        let values = match self
            .state
            .sequences
            .draw(&g.table, g.rows, block, g.generator.max, &name)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                self.send_error(&e);
                return None;
            }
        };
        let Some(text) = with_generated_keys(sql, g, &values) else {
            self.send_error(&PgError::unsupported(format!(
                "this INSERT into \"{}\" cannot be given generated values for its sharding key \"{}\"",
                g.table, g.key
            )).with_hint("name the columns and omit the key, or give the key a value; OVERRIDING USER VALUE is not supported"));
            return None;
        };
        if let Some(&last) = values.last() {
            self.generated.note(&name, last);
        }
        Some(text)
    }
}

impl ExecCtx {
    /// Resolves a Bind of an INSERT that omits its generated sharding key
    /// (extended protocol): draws the values, writes them into the
    /// statement text and splits it by shard (one part per shard, the
    /// client's parameters passed on). The route is also recorded in `p`
    /// for the portal's later messages. None after sending an error (those
    /// of [`ExecCtx::generate_keys`]; 0A000 for a table owning lookup
    /// vindexes; the Bind's and routing errors).
    pub async fn resolve_generated(
        &mut self,
        routing: &Routing,
        p: &PendingGenerated,
    ) -> Result<Option<Route>, End> {
        let Some(text) = self.generate_keys(&p.stmt.query, &p.plan).await else {
            return Ok(None);
        };
        let route = match split_generated(routing, p, &text) {
            Ok(r) => r,
            Err(e) => {
                self.send_error(&e);
                return Ok(None);
            }
        };
        let _ = p.resolved.set(route.clone());
        Ok(Some(route))
    }
}

/// The split INSERT of `text` (`p`'s statement with generated values).
fn split_generated(routing: &Routing, p: &PendingGenerated, text: &str) -> Result<Route, PgError> {
    let b = Bind::decode(p.bind.get(5..).unwrap_or_default())
        .map_err(|e| PgError::new(codes::PROTOCOL_VIOLATION, e.to_string()))?;
    match routing.planner.plan_extended_once(text, routing) {
        Plan::Insert { table, rows } => {
            let by_shard = rows_by_shard(&routing.catalog, &table, &rows, &Values::Bind(&b))?;
            let split = split_insert_text(&p.stmt, text, &b, by_shard, rows.len())?;
            Ok(Route::SplitInsert(Arc::new(split)))
        }
        Plan::Owned { .. } => Err(PgError::unsupported(format!(
            "generated sharding keys for \"{}\", a table owning lookup vindexes, are supported in the simple query protocol only",
            p.plan.table
        ))
        .with_hint("give the key a value")),
        Plan::Error {
            sqlstate,
            message,
            hint,
        } => {
            let mut e = PgError::new(sqlstate, message);
            e.hint = hint;
            Err(e)
        }
        _ => Err(PgError::new(
            codes::INTERNAL_ERROR,
            "an INSERT given generated keys was not planned as an INSERT",
        )),
    }
}

/// What the router makes of a sequence function call
/// ([`Plan::SequenceFn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceAnswer {
    /// The router answers with this value.
    Value(i64),
    /// The router has no value of its own: the shards answer.
    Forward,
    /// An error was sent.
    Failed,
}

impl ExecCtx {
    /// The answer to `call`: `currval`/`lastval` from the values this
    /// session's INSERTs (and `nextval` calls) got, else forwarded;
    /// `nextval` drawn from the table's distributed sequence (its errors:
    /// see [`crate::state::sequences::Sequences::draw`]).
    pub async fn sequence_fn(&mut self, routing: &Routing, call: &SequenceCall) -> SequenceAnswer {
        match &call.func {
            SequenceFn::Currval(seq) => match self.generated.currval(seq) {
                Ok(v) => SequenceAnswer::Value(v),
                Err(_) => SequenceAnswer::Forward,
            },
            SequenceFn::Lastval => match self.generated.lastval() {
                Ok(v) => SequenceAnswer::Value(v),
                Err(_) => SequenceAnswer::Forward,
            },
            SequenceFn::Nextval { sequence, table } => {
                let generator = routing.catalog.table(table).and_then(|t| {
                    routing
                        .schemas
                        .read()
                        .get(table.as_str())
                        .and_then(|s| s.key_generator(&t.key_column))
                });
                let Some(g) = generator else {
                    // Columns forgotten since planning (DDL): the shards'.
                    return SequenceAnswer::Forward;
                };
                let block = self.state.limits().sequence_block;
                match self
                    .state
                    .sequences
                    .draw(table, 1, block, g.max, sequence)
                    .await
                {
                    Ok(v) => match v.first() {
                        Some(&v) => {
                            self.generated.note(sequence, v);
                            SequenceAnswer::Value(v)
                        }
                        None => SequenceAnswer::Forward,
                    },
                    Err(e) => {
                        self.send_error(&e);
                        SequenceAnswer::Failed
                    }
                }
            }
        }
    }

    /// Resolves a Bind of a sequence function call (extended protocol):
    /// the router's value, or any shard when the shards answer. Recorded
    /// in `p` for the portal's later messages. None if an error was sent.
    pub async fn resolve_sequence(
        &mut self,
        routing: &Routing,
        p: &PendingSequence,
    ) -> Result<Option<Route>, End> {
        let route = match self.sequence_fn(routing, &p.call).await {
            SequenceAnswer::Value(value) => Route::Answered(Arc::new(Answered {
                call: p.call.clone(),
                value,
                format: p.format,
            })),
            SequenceAnswer::Failed => return Ok(None),
            SequenceAnswer::Forward => match self.any_shard() {
                Ok(s) => Route::Shard(s),
                Err(e) => {
                    self.send_error(&e);
                    return Ok(None);
                }
            },
        };
        let _ = p.resolved.set(route.clone());
        Ok(Some(route))
    }

    /// Writes the router's answer `value` to `call` as a one-row result:
    /// RowDescription (unless `describe` is false: the client described
    /// the portal already), DataRow in `format` (0 text, 1 binary int8),
    /// CommandComplete `SELECT 1`.
    pub fn write_sequence_value(
        &mut self,
        call: &SequenceCall,
        value: i64,
        format: i16,
        describe: bool,
    ) {
        let buf = &mut self.out.buf;
        if describe {
            synth::int8_row_description(buf, &call.column, format);
        }
        let bytes = if format == 1 {
            value.to_be_bytes().to_vec()
        } else {
            value.to_string().into_bytes()
        };
        synth::data_row(buf, &[Some(&bytes)]);
        synth::command_complete(buf, "SELECT 1");
    }
}
