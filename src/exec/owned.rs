//! Targets of single-statement writes in the simple protocol (keyed
//! statement → shard, multi-row INSERT split by shard, scatter with shard
//! pruning or a lookup vindex), and the execution of writes to tables that
//! own lookup vindexes ([`Plan::Owned`]): lookup maintenance and the write
//! in one transaction.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::frontend as fe;

use crate::catalog::Catalog;
use crate::plan::{
    self, KeyExpr, KeyRef, KeySet, Literals, LookupKey, OwnedKind, OwnedWrite, Plan,
};
use crate::protocol::error::codes;
use crate::protocol::PgError;
use crate::state::Routing;

use super::concat::MergeMode;
use super::context::{End, ExecCtx};
use super::exchange::{Expect, Slot};
use super::route::{key_shard, part_order, rows_by_shard, scatter_shards, ShardList, Values};

/// The shard of a keyed statement: every key must map to the same shard;
/// None when every key is NULL (the statement matches no row: any shard).
/// Allocation-free (the fast path).
///
/// Errors: 0A000 for keys on different shards; errors of [`key_shard`].
pub(crate) fn keyed_shard<'c>(
    cat: &'c Catalog,
    keys: &[KeyRef],
    values: &Values<'_, '_>,
) -> Result<Option<&'c str>, PgError> {
    let mut target: Option<&str> = None;
    for k in keys {
        if let Some(s) = key_shard(cat, &k.table, &k.key, values)? {
            if target.is_some_and(|t| t != s) {
                return Err(PgError::unsupported(
                    "statement references rows on different shards; joins across shards are not supported yet",
                ));
            }
            target = Some(s);
        }
    }
    Ok(target)
}

/// Where an INSERT ... VALUES goes.
pub enum InsertTargets<'c> {
    /// Every row to this shard: the client's statement as is.
    One(&'c str),
    /// Rows on several shards: (shard, Query message with its rows), and
    /// for each VALUES row the index of its part (see
    /// [`MergeMode::Interleave`]).
    Split(Vec<(String, Bytes)>, std::sync::Arc<[u32]>),
}

impl ExecCtx {
    /// Where an INSERT ... VALUES into `table` goes: one shard (the
    /// client's statement is sent as is), or the VALUES rows split by
    /// shard into per-shard Query messages (in shard name order). None if
    /// it cannot run (error sent: 23502 for a NULL key, key errors, 0A000).
    pub fn insert_parts<'c>(
        &mut self,
        cat: &'c Catalog,
        table: &str,
        rows: &[KeyExpr],
        sql: &str,
        lits: &Literals,
    ) -> Option<InsertTargets<'c>> {
        let values = Values::Simple { sql, lits };
        let by_shard = match rows_by_shard(cat, table, rows, &values) {
            Ok(m) => m,
            Err(e) => {
                self.send_error(&e);
                return None;
            }
        };
        match by_shard.len() {
            0 => {
                self.send_error(&PgError::unsupported("INSERT without rows"));
                return None;
            }
            1 => return by_shard.keys().next().map(|s| InsertTargets::One(s)),
            _ => {}
        }
        let Some(spans) = plan::insert_values_spans(sql) else {
            self.send_error(&PgError::unsupported(
                "could not split this multi-row INSERT by shard",
            ));
            return None;
        };
        let order = part_order(&by_shard, rows.len());
        let mut parts = Vec::with_capacity(by_shard.len());
        for (shard, idxs) in by_shard {
            let mut text = String::with_capacity(sql.len());
            text.push_str(&sql[..spans.prefix_end]);
            for (n, i) in idxs.iter().enumerate() {
                if n > 0 {
                    text.push_str(", ");
                }
                if let Some(r) = spans.rows.get(*i) {
                    text.push_str(&sql[r.clone()]);
                }
            }
            text.push_str(&sql[spans.suffix_start..]);
            let mut b = BytesMut::new();
            let _ = fe::query(&text, &mut b);
            parts.push((shard.to_string(), b.freeze()));
        }
        Some(InsertTargets::Split(parts, order))
    }

    /// The shards a scattered statement on `table` runs on: those the
    /// lookup vindex lists for the value (see [`ExecCtx::lookup_shards`]),
    /// else [`scatter_shards`]. None on failure (error sent).
    pub async fn scatter_targets(
        &mut self,
        cat: &Catalog,
        table: &str,
        prune: Option<&KeySet>,
        lookup: Option<&LookupKey>,
        values: &Values<'_, '_>,
    ) -> Result<Option<ShardList>, End> {
        if let Some(l) = lookup {
            let shards = self.lookup_shards(cat, table, l, values).await?;
            return Ok(shards.map(ShardList::from));
        }
        match scatter_shards(cat, table, prune, values) {
            Ok(s) => Ok(Some(s)),
            Err(e) => {
                self.send_error(&e);
                Ok(None)
            }
        }
    }

    /// Runs a write to a table owning lookup vindexes (simple protocol), in
    /// the client's block or an implicit one: INSERT → lookup rows, then
    /// the rows; UPDATE/DELETE → pre-select (rows locked), their lookup
    /// rows deleted, the statement, then (UPDATE) the new lookup rows.
    /// `msg` is the client's Query message. False if it failed (error
    /// sent; an implicit block is rolled back).
    pub async fn owned_simple(
        &mut self,
        routing: &Routing,
        sql: &str,
        lits: &Literals,
        inner: &Plan,
        write: &OwnedWrite,
        msg: Bytes,
    ) -> Result<bool, End> {
        let cat = &*routing.catalog;
        let values = Values::Simple { sql, lits };
        let implicit = self.open_owned_block(matches!(write.kind, OwnedKind::Rows { .. }));
        let ok = self
            .owned_steps(cat, sql, lits, inner, write, msg, &values)
            .await?;
        self.close_write_block(implicit, ok).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn owned_steps(
        &mut self,
        cat: &Catalog,
        sql: &str,
        lits: &Literals,
        inner: &Plan,
        write: &OwnedWrite,
        msg: Bytes,
        values: &Values<'_, '_>,
    ) -> Result<bool, End> {
        let mut mode = MergeMode::Concat;
        let parts: Vec<(String, Bytes)> = match inner {
            Plan::Insert { table, rows } => match self.insert_parts(cat, table, rows, sql, lits) {
                Some(InsertTargets::One(s)) => vec![(s.to_string(), msg)],
                Some(InsertTargets::Split(p, order)) => {
                    mode = MergeMode::Interleave(order);
                    p
                }
                None => return Ok(false),
            },
            Plan::Keyed { keys, .. } => match keyed_shard(cat, keys, values)
                .map(|s| s.map(str::to_string))
                .and_then(|s| s.map_or_else(|| self.any_shard(), Ok))
            {
                Ok(s) => vec![(s, msg)],
                Err(e) => {
                    self.send_error(&e);
                    return Ok(false);
                }
            },
            Plan::Scatter {
                table,
                prune,
                lookup,
                ..
            } => {
                let Some(shards) = self
                    .scatter_targets(cat, table, prune.as_ref(), lookup.as_deref(), values)
                    .await?
                else {
                    return Ok(false);
                };
                shards.iter().map(|s| (s.clone(), msg.clone())).collect()
            }
            _ => {
                self.send_error(&PgError::new(
                    codes::INTERNAL_ERROR,
                    "unexpected plan for a write to a table owning lookup vindexes",
                ));
                return Ok(false);
            }
        };
        let mut ksids = Vec::new();
        match (&write.kind, inner) {
            (OwnedKind::Insert { values: vals }, Plan::Insert { rows, .. })
                if !self.lookup_insert(cat, write, rows, vals, values).await? =>
            {
                return Ok(false);
            }
            (OwnedKind::Rows { select, .. }, _) => {
                let shards: Vec<String> = parts.iter().map(|(s, _)| s.clone()).collect();
                let Some(found) = self
                    .pre_select_simple(cat, write, select, &shards, sql, lits)
                    .await?
                else {
                    return Ok(false);
                };
                match self.lookup_delete(cat, write, found).await? {
                    Some(k) => ksids = k,
                    None => return Ok(false),
                }
            }
            _ => {}
        }
        let parts: Vec<_> = parts
            .into_iter()
            .map(|(s, m)| (s, m, VecDeque::from([Slot::Forward(Expect::Query)])))
            .collect();
        if !self.exchange_many(parts, mode).await? {
            return Ok(false);
        }
        if let OwnedKind::Rows { .. } = write.kind {
            if !self.row_count_guard(ksids.len()) {
                return Ok(false);
            }
        }
        self.lookup_update_insert(cat, write, &ksids, values).await
    }
}

impl ExecCtx {
    /// Checks that an owner UPDATE/DELETE changed exactly the `expected`
    /// rows its pre-select locked (and whose lookup rows were deleted):
    /// more means a row committed by another transaction after the
    /// pre-select matched (READ COMMITTED), or a volatile WHERE. On a
    /// mismatch the held-back CommandComplete is dropped and 40001 sent.
    pub fn row_count_guard(&mut self, expected: usize) -> bool {
        let changed = self.last_count.unwrap_or(0);
        if changed == expected as u64 {
            return true;
        }
        if let Some(d) = &mut self.deferred {
            d.clear();
        }
        self.send_error(
            &PgError::new(
                "40001",
                "could not maintain the lookup vindexes: the rows changed between the router's pre-select and the statement",
            )
            .with_detail(format!(
                "pre-select found {expected} row(s), the statement changed {changed}"
            ))
            .with_hint("retry the transaction"),
        );
        false
    }
}
