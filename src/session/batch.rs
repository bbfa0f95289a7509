//! An extended-protocol batch that is not a single-shard fast-path batch,
//! run message by message: each Bind/Describe/Execute/Close goes to its own
//! route (one shard, several shards merged, the gather executor, the
//! router's own transaction control, SET or COPY) followed by Flush, and
//! Sync reaches every held connection at the end (PostgreSQL docs §55.2.3).

use std::collections::VecDeque;

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend as fe;

use crate::exec::concat::MergeMode;
use crate::exec::exchange::{Expect, Slot};
use crate::exec::gather::GatherEnds;
use crate::exec::message::{effective, Item, Route};
use crate::exec::End;
use crate::plan::Plan;
use crate::protocol::error::codes;
use crate::protocol::frontend::{Bind, Execute, Target};
use crate::protocol::{synth, PgError};
use crate::state::Routing;

use super::Session;

impl Session {
    pub(super) async fn batch_slow(
        &mut self,
        routing: &Routing,
        items: Vec<Item>,
    ) -> Result<(), End> {
        let mut failed = false;
        // Portals of merged results suspended by a row limit in this batch.
        let mut suspended: Vec<String> = Vec::new();
        // A Describe of a gather's portal left to the Execute right after it.
        let mut describe_next = false;
        // Shards the last gather synced (its Execute came right before Sync).
        let mut synced: Vec<std::sync::Arc<str>> = Vec::new();
        let n = items.len();
        let items: Vec<Item> = items;
        for i in 0..n {
            let it = &items[i];
            if failed && !matches!(it, Item::Sync) {
                continue;
            }
            let ok = match it {
                Item::Fail(e) => {
                    self.ctx.send_error(e);
                    false
                }
                Item::FailFrame(f) => {
                    self.ctx.out.buf.extend_from_slice(f);
                    self.ctx.note_error();
                    false
                }
                Item::Parse(_) => {
                    synth_frame(&mut self.ctx.out.buf, synth::PARSE_COMPLETE);
                    true
                }
                Item::CloseStmt => {
                    synth_frame(&mut self.ctx.out.buf, synth::CLOSE_COMPLETE);
                    true
                }
                Item::Flush => {
                    self.ctx.out.flush().await?;
                    true
                }
                Item::DescribeStmt { stmt, .. } if matches!(*stmt.plan, Plan::SequenceFn(_)) => {
                    // No parameters; one bigint column.
                    if let Plan::SequenceFn(call) = &*stmt.plan {
                        synth_frame(&mut self.ctx.out.buf, &[b't', 0, 0, 0, 6, 0, 0]);
                        synth::int8_row_description(&mut self.ctx.out.buf, &call.column, 0);
                    }
                    true
                }
                Item::DescribeStmt { stmt, frame } => {
                    // Route like the next routed message, else any shard.
                    let next = items[i + 1..].iter().find_map(|x| x.route()).cloned();
                    let next = match next {
                        Some(Route::Owned(o)) => o.shards.first().map(|s| Route::Shard(s.into())),
                        other => other,
                    };
                    match next {
                        Some(Route::Txn(..))
                        | Some(Route::Copy(..))
                        | Some(Route::CopyQuery(..))
                        | Some(Route::Set { .. }) => {
                            // No parameters, no rows.
                            let mut b = BytesMut::new();
                            b.put_u8(b't');
                            b.put_i32(6);
                            b.put_i16(0);
                            self.ctx.out.buf.extend_from_slice(&b);
                            synth_frame(&mut self.ctx.out.buf, synth::NO_DATA);
                            true
                        }
                        other => {
                            let shard = match other {
                                Some(Route::Shard(s)) => s.to_string(),
                                Some(Route::Multi(v, _)) if !v.is_empty() => v[0].clone(),
                                Some(Route::Gather { shards, .. }) if !shards.is_empty() => {
                                    shards[0].clone()
                                }
                                _ => match self.ctx.any_shard() {
                                    Ok(s) => s,
                                    Err(e) => {
                                        self.ctx.send_error(&e);
                                        failed = true;
                                        continue;
                                    }
                                },
                            };
                            let stmt = stmt.clone();
                            match stmt.gather() {
                                // A gather's description hides its extra columns.
                                Some(plan) => {
                                    self.ctx
                                        .describe_as_portal(&shard, plan.hidden, &stmt, None)
                                        .await?
                                }
                                None => {
                                    let frame = frame.clone();
                                    self.ctx
                                        .one_message(
                                            &shard,
                                            Some(&stmt),
                                            &frame,
                                            Expect::DescribeStatement,
                                        )
                                        .await?
                                }
                            }
                        }
                    }
                }
                Item::Bind { stmt, frame, route } => {
                    // A portal bound again is a new portal.
                    if let Ok(portal) = Bind::portal_name(frame.get(5..).unwrap_or_default()) {
                        suspended.retain(|p| p != portal);
                    }
                    match self.bind_route(routing, route).await? {
                        None => false,
                        Some(Route::Txn(..))
                        | Some(Route::Copy(..))
                        | Some(Route::CopyQuery(..))
                        | Some(Route::Set { .. })
                        | Some(Route::Gather { .. })
                        | Some(Route::SplitInsert(_))
                        | Some(Route::InsertSelect(_))
                        | Some(Route::Answered(_)) => {
                            synth_frame(&mut self.ctx.out.buf, synth::BIND_COMPLETE);
                            true
                        }
                        Some(Route::Shard(s)) => {
                            let (stmt, frame) = (stmt.clone(), frame.clone());
                            self.ctx
                                .one_message(&s, Some(&stmt), &frame, Expect::Bind)
                                .await?
                        }
                        Some(Route::Lookup(_))
                        | Some(Route::Generated(_))
                        | Some(Route::Sequence(_))
                        | Some(Route::Exhausted) => {
                            self.ctx.send_error(&PgError::new(
                                codes::INTERNAL_ERROR,
                                "unresolved lookup route",
                            ));
                            false
                        }
                        Some(Route::Multi(shards, _)) => {
                            let (stmt, frame) = (stmt.clone(), frame.clone());
                            self.ctx
                                .many_message(
                                    &shards,
                                    Some(&stmt),
                                    &frame,
                                    Expect::Bind,
                                    MergeMode::FirstOnly,
                                )
                                .await?
                        }
                        Some(Route::Owned(o)) => {
                            let (stmt, frame) = (stmt.clone(), frame.clone());
                            self.ctx
                                .many_message(
                                    &o.shards,
                                    Some(&stmt),
                                    &frame,
                                    Expect::Bind,
                                    MergeMode::FirstOnly,
                                )
                                .await?
                        }
                    }
                }
                Item::DescribePortal { frame, route } | Item::ClosePortal { frame, route } => {
                    let expect = if matches!(it, Item::ClosePortal { .. }) {
                        Expect::Close
                    } else {
                        Expect::DescribePortal
                    };
                    match effective(route.as_ref()) {
                        Some(Route::Gather { plan, .. })
                            if expect == Expect::DescribePortal
                                && plan.finish.is_none()
                                && executes_next(&items, i, frame, &suspended) =>
                        {
                            // The Execute sends the RowDescription it gets
                            // from the shards: no round trip of its own.
                            describe_next = true;
                            true
                        }
                        Some(Route::Gather {
                            shards,
                            plan,
                            stmt,
                            bind,
                        }) if expect == Expect::DescribePortal => {
                            let formats = Bind::decode(bind.get(5..).unwrap_or_default())
                                .map(|b| b.result_formats)
                                .unwrap_or_default();
                            let (shard, plan, stmt) = (
                                shards.first().cloned().unwrap_or_default(),
                                plan.clone(),
                                stmt.clone(),
                            );
                            self.ctx
                                .describe_as_portal(
                                    &shard,
                                    plan.hidden,
                                    &stmt,
                                    Some(formats.to_vec()),
                                )
                                .await?
                        }
                        Some(Route::SplitInsert(p)) if expect == Expect::DescribePortal => {
                            let shard = p.parts.first().map(|x| x.0.clone()).unwrap_or_default();
                            self.ctx
                                .describe_as_portal(
                                    &shard,
                                    0,
                                    &p.stmt,
                                    Some(p.result_formats.clone()),
                                )
                                .await?
                        }
                        Some(Route::InsertSelect(p)) if expect == Expect::DescribePortal => {
                            match self.ctx.any_shard() {
                                Ok(shard) => {
                                    self.ctx
                                        .describe_as_portal(
                                            &shard,
                                            0,
                                            &p.stmt,
                                            Some(p.result_formats.clone()),
                                        )
                                        .await?
                                }
                                Err(e) => {
                                    self.ctx.send_error(&e);
                                    false
                                }
                            }
                        }
                        Some(Route::Answered(a)) if expect == Expect::DescribePortal => {
                            synth::int8_row_description(
                                &mut self.ctx.out.buf,
                                &a.call.column,
                                a.format,
                            );
                            true
                        }
                        Some(Route::Shard(s)) => {
                            let frame = frame.clone();
                            self.ctx.one_message(&s, None, &frame, expect).await?
                        }
                        Some(Route::Multi(shards, _)) => {
                            let frame = frame.clone();
                            self.ctx
                                .many_message(&shards, None, &frame, expect, MergeMode::FirstOnly)
                                .await?
                        }
                        Some(Route::Owned(o)) => {
                            let frame = frame.clone();
                            self.ctx
                                .many_message(&o.shards, None, &frame, expect, MergeMode::FirstOnly)
                                .await?
                        }
                        _ => {
                            let b = if expect == Expect::Close {
                                synth::CLOSE_COMPLETE
                            } else {
                                synth::NO_DATA
                            };
                            synth_frame(&mut self.ctx.out.buf, b);
                            true
                        }
                    }
                }
                Item::Execute { frame, route } => match effective(route.as_ref()) {
                    Some(Route::Shard(s)) => {
                        let frame = frame.clone();
                        self.ctx
                            .one_message(&s, None, &frame, Expect::Execute)
                            .await?
                    }
                    Some(Route::Multi(shards, mode)) => {
                        let frame = frame.clone();
                        self.ctx
                            .many_message(&shards, None, &frame, Expect::Execute, mode)
                            .await?
                    }
                    Some(Route::Owned(o)) => {
                        let frame = frame.clone();
                        self.ctx.owned_execute(routing, &o, &frame).await?
                    }
                    Some(Route::Gather {
                        shards,
                        plan,
                        stmt,
                        bind,
                    }) => {
                        let (portal, max_rows) =
                            Execute::decode(frame.get(5..).unwrap_or_default())
                                .map(|e| (e.portal.to_string(), e.max_rows))
                                .unwrap_or_default();
                        if suspended.contains(&portal) {
                            self.ctx.send_error(&exhausted());
                            false
                        } else {
                            self.ctx.portal_suspended = false;
                            // Right before the batch's closing Sync, outside
                            // a transaction block, the shards get Sync now.
                            let ends = GatherEnds {
                                describe: std::mem::take(&mut describe_next),
                                sync: i + 2 == n
                                    && matches!(items[i + 1], Item::Sync)
                                    && self.ctx.block.is_none()
                                    && !self.ctx.cur_write,
                            };
                            let ok = self
                                .ctx
                                .gather_extended(&shards, &plan, &stmt, &bind, max_rows, ends)
                                .await?;
                            synced = std::mem::take(&mut self.ctx.gather_synced);
                            if std::mem::take(&mut self.ctx.portal_suspended) {
                                suspended.push(portal);
                            }
                            ok
                        }
                    }
                    Some(Route::SplitInsert(p)) => {
                        let max_rows = Execute::decode(frame.get(5..).unwrap_or_default())
                            .map(|e| e.max_rows)
                            .unwrap_or(0);
                        self.ctx.split_insert_execute(&p, max_rows).await?
                    }
                    Some(Route::Answered(a)) => {
                        self.ctx
                            .write_sequence_value(&a.call, a.value, a.format, false);
                        true
                    }
                    Some(Route::InsertSelect(p)) => self.insert_select_execute(routing, &p).await?,
                    Some(Route::Txn(t, sql)) => self.ctx.txn_command(&t, &sql).await?,
                    Some(Route::CopyQuery(c, sql)) => {
                        let routing = self.ctx.state.routing();
                        self.ctx.copy_query(&routing, &sql, &c).await?
                    }
                    Some(Route::Copy(c, sql)) => {
                        let routing = self.ctx.state.routing();
                        self.ctx.copy(&mut self.reader, &routing, &sql, &c).await?
                    }
                    Some(Route::Set {
                        sql,
                        local,
                        reset_all,
                    }) => self.ctx.set_command(&sql, local, reset_all).await?,
                    Some(Route::Exhausted) => {
                        self.ctx.send_error(&exhausted());
                        false
                    }
                    Some(Route::Lookup(_))
                    | Some(Route::Generated(_))
                    | Some(Route::Sequence(_))
                    | None => {
                        // A pending route whose Bind failed.
                        self.ctx.send_error(&PgError::new(
                            codes::INVALID_CURSOR_NAME,
                            "portal was not bound",
                        ));
                        false
                    }
                },
                Item::Sync => {
                    let parts: Vec<_> = self
                        .ctx
                        .held
                        .iter()
                        .filter(|h| !synced.contains(&h.conn.shard))
                        .map(|h| {
                            let mut b = BytesMut::new();
                            fe::sync(&mut b);
                            (
                                h.conn.shard.to_string(),
                                b.freeze(),
                                VecDeque::from([Slot::Swallow(Expect::Sync)]),
                            )
                        })
                        .collect();
                    if !parts.is_empty() {
                        self.ctx.exchange_many(parts, MergeMode::FirstOnly).await?;
                    }
                    true
                }
            };
            if !ok {
                failed = true;
                self.skip_until_sync = true;
            }
        }
        for p in suspended {
            // A later batch's Execute of it is refused the same way.
            self.portals.insert(p, Route::Exhausted);
        }
        Ok(())
    }

    /// The route a Bind runs with: a pending lookup route is resolved now
    /// (the lookup table is read in batch order, after the batch's earlier
    /// statements), generated key values are drawn now. None if that
    /// failed (error sent).
    async fn bind_route(&mut self, routing: &Routing, route: &Route) -> Result<Option<Route>, End> {
        match route {
            Route::Lookup(p) => {
                let p = p.clone();
                self.ctx.resolve_lookup(routing, &p).await
            }
            Route::Generated(p) => {
                let p = p.clone();
                self.ctx.resolve_generated(routing, &p).await
            }
            Route::Sequence(p) => {
                let p = p.clone();
                self.ctx.resolve_sequence(routing, &p).await
            }
            r => Ok(Some(r.clone())),
        }
    }
}

/// Whether item `i` of `items`, a Describe of a portal (`frame`), is
/// followed right away by an Execute of that portal that will run (not
/// suspended by an earlier row limit in this batch).
fn executes_next(items: &[Item], i: usize, frame: &[u8], suspended: &[String]) -> bool {
    let Ok(described) = Target::decode(frame.get(5..).unwrap_or_default()) else {
        return false;
    };
    match items.get(i + 1) {
        Some(Item::Execute { frame, .. }) => Execute::decode(frame.get(5..).unwrap_or_default())
            .is_ok_and(|e| e.portal == described.name && !suspended.iter().any(|p| p == e.portal)),
        _ => false,
    }
}

/// 0A000 for an Execute of a merged result's portal after a row limit
/// suspended it: the rest of its rows was not kept.
fn exhausted() -> PgError {
    PgError::unsupported(
        "fetching more rows of a merged multi-shard result after an Execute with a row limit is not supported yet",
    )
    .with_hint("fetch all rows at once (Execute without a row limit) or use a single-shard query")
}

fn synth_frame(out: &mut BytesMut, b: &[u8]) {
    out.extend_from_slice(b);
}
