//! Lookup vindexes in the extended query protocol: routing a Bind through
//! the lookup table ([`PendingRoute`], resolved when the Bind runs) and
//! writes to owner tables ([`OwnedRoute`]): the client's Bind is forwarded
//! as usual, the lookup maintenance runs at Execute around the client's
//! Execute, with the client's parameters (see `docs/lookup-vindexes.md`).

use std::sync::Arc;

use bytes::BytesMut;

use crate::plan::{OwnedKind, Plan, SqlPiece};
use crate::protocol::error::codes;
use crate::protocol::frontend::{Bind, Execute};
use crate::protocol::PgError;
use crate::state::Routing;

use super::block::Block;
use super::concat::MergeMode;
use super::context::{End, ExecCtx};
use super::exchange::Expect;
use super::inject::Params;
use super::lookup::owned_begin;
use super::message::{scatter_route, OwnedRoute, PendingRoute, Route};
use super::route::Values;

/// The Bind message `frame` (tag and length included), decoded.
fn decode_bind(frame: &[u8]) -> Result<Bind<'_>, PgError> {
    Bind::decode(frame.get(5..).unwrap_or_default())
        .map_err(|e| PgError::new(codes::PROTOCOL_VIOLATION, e.to_string()))
}

fn internal(what: &str) -> PgError {
    PgError::new(codes::INTERNAL_ERROR, what.to_string())
}

/// The text of an extended-protocol plan's SQL pieces (all verbatim: the
/// extended planner keeps the client's placeholders and literals).
fn pieces_text(pieces: &[SqlPiece]) -> Option<String> {
    let mut s = String::new();
    for p in pieces {
        match p {
            SqlPiece::Text(t) => s.push_str(t),
            _ => return None,
        }
    }
    Some(s)
}

impl ExecCtx {
    /// Resolves a pending route when its Bind runs: reads the lookup table
    /// with the Bind's parameters (see [`ExecCtx::lookup_shards`]) and
    /// records the route in `p`. None on failure (error sent).
    pub async fn resolve_lookup(
        &mut self,
        routing: &Routing,
        p: &PendingRoute,
    ) -> Result<Option<Route>, End> {
        let b = match decode_bind(&p.bind) {
            Ok(b) => b,
            Err(e) => {
                self.send_error(&e);
                return Ok(None);
            }
        };
        let values = Values::Bind(&b);
        let cat = &*routing.catalog;
        let (scan, owned) = match &*p.stmt.plan {
            Plan::Owned { inner, .. } => (&**inner, true),
            plan => (plan, false),
        };
        let Plan::Scatter {
            table,
            lookup: Some(l),
            merge,
            ..
        } = scan
        else {
            self.send_error(&internal("pending route without a lookup key"));
            return Ok(None);
        };
        let Some(shards) = self.lookup_shards(cat, table, l, &values).await? else {
            return Ok(None);
        };
        let route = if owned {
            Route::Owned(Arc::new(OwnedRoute {
                shards,
                stmt: p.stmt.clone(),
                bind: p.bind.clone(),
            }))
        } else {
            scatter_route(shards.into(), merge, &p.stmt, &p.bind)
        };
        let _ = p.resolved.set(route.clone());
        Ok(Some(route))
    }

    /// Executes a bound write to an owner table (`frame` is the client's
    /// Execute): INSERT → lookup rows first; UPDATE/DELETE → the pre-select
    /// (the statement's WHERE with the client's parameters, typed as the
    /// shard inferred them for the client's statement) locks the rows and
    /// their lookup rows are deleted; then the client's Execute on every
    /// shard of the route (CommandComplete held back), the row-count guard
    /// (40001), and an UPDATE's new lookup rows. False on failure (error
    /// sent; the batch's block fails). Execute with a row limit: 0A000.
    pub async fn owned_execute(
        &mut self,
        routing: &Routing,
        o: &OwnedRoute,
        frame: &[u8],
    ) -> Result<bool, End> {
        let cat = &*routing.catalog;
        let prepared = (|| {
            let Plan::Owned { inner, write } = &*o.stmt.plan else {
                return Err(internal("owned route without an owned plan"));
            };
            let max_rows = Execute::decode(frame.get(5..).unwrap_or_default())
                .map(|e| e.max_rows)
                .unwrap_or(0);
            if max_rows > 0 {
                return Err(PgError::unsupported(format!(
                    "Execute with a row limit on a write to \"{}\", which owns lookup vindexes, is not supported",
                    write.table
                )));
            }
            let shard = o
                .shards
                .first()
                .ok_or_else(|| internal("owned route without shards"))?;
            Ok((
                inner.clone(),
                write.clone(),
                shard.clone(),
                decode_bind(&o.bind)?,
            ))
        })();
        let (inner, write, first, b) = match prepared {
            Ok(x) => x,
            Err(e) => {
                self.send_error(&e);
                return Ok(false);
            }
        };
        if self.block.is_none() {
            // The batch's implicit block ended (a COMMIT earlier in the
            // batch): the maintenance and the write still need one.
            let repeatable = matches!(write.kind, OwnedKind::Rows { .. });
            self.block = Some(Block::new(owned_begin(repeatable), true));
        }
        let values = Values::Bind(&b);
        let mut ksids = Vec::new();
        match (&write.kind, &*inner) {
            (OwnedKind::Insert { values: vals }, Plan::Insert { rows, .. }) => {
                if !self.lookup_insert(cat, &write, rows, vals, &values).await? {
                    return Ok(false);
                }
            }
            (OwnedKind::Rows { select, .. }, _) => {
                let Some(text) = pieces_text(select) else {
                    self.send_error(&internal("pre-select with literal placeholders"));
                    return Ok(false);
                };
                let Some(types) = self.statement_param_types(&first, &o.stmt).await? else {
                    return Ok(false);
                };
                let section = o
                    .bind
                    .get(5 + b.after_names..5 + b.params_end)
                    .unwrap_or_default();
                let params = Params {
                    types: &types,
                    section,
                };
                let mut found = Vec::new();
                for shard in &o.shards {
                    let Some(rows) = self.injected_with(shard, &text, params).await? else {
                        return Ok(false);
                    };
                    if !self.owner_rows(cat, &write, rows, &mut found) {
                        return Ok(false);
                    }
                }
                match self.lookup_delete(cat, &write, found).await? {
                    Some(k) => ksids = k,
                    None => return Ok(false),
                }
            }
            _ => {
                self.send_error(&internal(
                    "unexpected plan for a write to a table owning lookup vindexes",
                ));
                return Ok(false);
            }
        }
        self.deferred = Some(BytesMut::new());
        let ok = self
            .many_message(&o.shards, None, frame, Expect::Execute, MergeMode::Concat)
            .await?;
        let held_back = self.deferred.take().unwrap_or_default();
        if !ok {
            self.out.buf.extend_from_slice(&held_back);
            return Ok(false);
        }
        if matches!(write.kind, OwnedKind::Rows { .. }) && !self.row_count_guard(ksids.len()) {
            return Ok(false);
        }
        if !self
            .lookup_update_insert(cat, &write, &ksids, &values)
            .await?
        {
            return Ok(false);
        }
        self.out.buf.extend_from_slice(&held_back);
        Ok(true)
    }
}

/// Whether a Bind of `plan` must open an implicit block outside a
/// transaction block, and with which isolation: Some(true) for an owner
/// UPDATE/DELETE (REPEATABLE READ: pre-select and write see the same
/// rows), Some(false) for an owner INSERT, None otherwise.
pub(crate) fn owned_block(plan: &Plan) -> Option<bool> {
    match plan {
        Plan::Owned { write, .. } => Some(matches!(write.kind, OwnedKind::Rows { .. })),
        _ => None,
    }
}

/// True when a Bind of `plan` is routed through a lookup table (a
/// [`PendingRoute`]).
pub(crate) fn needs_lookup(plan: &Plan) -> bool {
    let scan = match plan {
        Plan::Owned { inner, .. } => &**inner,
        p => p,
    };
    matches!(
        scan,
        Plan::Scatter {
            lookup: Some(_),
            ..
        }
    )
}
