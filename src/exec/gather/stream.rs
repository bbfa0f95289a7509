//! The gather's merge loops over the shards' streams: the k-way merge of
//! sorted rows or concatenation with DISTINCT ON and OFFSET/LIMIT
//! ([`ExecCtx::merge_rows`]), and the hash aggregation of groups
//! ([`ExecCtx::merge_groups`]).

use crate::plan::GatherPlan;
use crate::protocol::backend::data_row;
use crate::protocol::client_io::CLIENT_FLUSH_BYTES;
use crate::protocol::error::codes;
use crate::protocol::{synth, Frame, PgError};

use super::merge::{cmp_sort, row_sort_values, Groups, Layout, SortValues, Take, Window};
use super::shard_io::{next_event, row_or_end, Merged, Phase};
use crate::exec::context::{End, ExecCtx};

impl ExecCtx {
    /// Ungrouped merge: k-way merge on the sort keys (or concatenation),
    /// DISTINCT ON, OFFSET/LIMIT, streaming.
    pub(super) async fn merge_rows(
        &mut self,
        idxs: &[usize],
        shards: &[String],
        plan: &GatherPlan,
        layout: &Layout,
        phase: &mut [Phase],
        window: &mut Window,
    ) -> Result<Merged, End> {
        // Next row of each shard (None: not read yet) with its sort values,
        // filled in place (no per-row allocation or move of the values).
        let mut heads: Vec<(Option<Frame>, SortValues)> =
            vec![(None, SortValues::new()); idxs.len()];
        let mut last_on: Option<SortValues> = None;
        let ordered = !plan.order.is_empty();
        let mut cur = 0usize;
        loop {
            if window.full() {
                return Ok(Merged::Ok);
            }
            // Fill heads (all shards when ordered, the current one when not).
            let range = if ordered { 0..idxs.len() } else { cur..cur + 1 };
            for n in range {
                if heads[n].0.is_some() || phase[n] != Phase::Open {
                    continue;
                }
                let ev = next_event!(self, idxs[n]);
                let f = match row_or_end(ev, &mut phase[n], idxs[n], &shards[n]) {
                    Ok(Some(f)) => f,
                    Ok(None) => continue,
                    Err(m) => return Ok(m),
                };
                if let Err(e) = row_sort_values(plan, layout, f.body(), &mut heads[n].1) {
                    return Ok(Merged::Failed(e));
                }
                heads[n].0 = Some(f);
            }
            // Pick the next row.
            let pick = if ordered {
                // Every shard must have a head or be finished before picking.
                if heads
                    .iter()
                    .zip(phase.iter())
                    .any(|(h, p)| h.0.is_none() && *p == Phase::Open)
                {
                    continue;
                }
                let mut best: Option<usize> = None;
                for n in 0..heads.len() {
                    if heads[n].0.is_none() {
                        continue;
                    }
                    best = match best {
                        Some(b)
                            if cmp_sort(&plan.order, &heads[n].1, &heads[b].1)
                                != std::cmp::Ordering::Less =>
                        {
                            Some(b)
                        }
                        _ => Some(n),
                    };
                }
                best
            } else if heads[cur].0.is_some() {
                Some(cur)
            } else if phase[cur] != Phase::Open {
                cur += 1;
                if cur >= idxs.len() {
                    None
                } else {
                    continue;
                }
            } else {
                continue;
            };
            let Some(n) = pick else { return Ok(Merged::Ok) };
            let Some(f) = heads[n].0.take() else {
                return Ok(Merged::Ok);
            };
            if plan.distinct_on > 0 {
                let sv = &heads[n].1;
                let key = &sv[..plan.distinct_on.min(sv.len())];
                let keys = &plan.order[..plan.distinct_on.min(plan.order.len())];
                if let Some(prev) = &last_on {
                    if cmp_sort(keys, prev, key) == std::cmp::Ordering::Equal {
                        continue;
                    }
                }
                last_on = Some(key.iter().cloned().collect());
            }
            match window.take() {
                Take::Skip => {}
                Take::Emit => self.emit_visible(&f, layout.visible, plan.hidden).await?,
                Take::Done => return Ok(Merged::Ok),
            }
        }
    }

    /// Grouped merge: every shard row is folded into its group; then the
    /// groups are filtered by HAVING, sorted, windowed and sent.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn merge_groups(
        &mut self,
        idxs: &[usize],
        shards: &[String],
        plan: &GatherPlan,
        layout: &Layout,
        phase: &mut [Phase],
        window: &mut Window,
        having: &[(usize, Option<String>)],
    ) -> Result<Merged, End> {
        let Some(g) = &plan.grouping else {
            return Ok(Merged::Ok);
        };
        let mut groups = Groups::new(g);
        for n in 0..idxs.len() {
            while phase[n] == Phase::Open {
                let ev = next_event!(self, idxs[n]);
                let f = match row_or_end(ev, &mut phase[n], idxs[n], &shards[n]) {
                    Ok(Some(f)) => f,
                    Ok(None) => continue,
                    Err(m) => return Ok(m),
                };
                let r = data_row(f.body())
                    .map_err(|e| PgError::new(codes::INTERNAL_ERROR, e.to_string()))
                    .and_then(|vals| groups.add(layout, &vals));
                if let Err(e) = r {
                    return Ok(Merged::Failed(e));
                }
            }
        }
        let param = |i: usize| -> Result<Option<String>, PgError> {
            Ok(having
                .iter()
                .find(|(j, _)| *j == i)
                .and_then(|(_, v)| v.clone()))
        };
        let rows = match groups.finish(plan, layout, &param) {
            Ok(r) => r,
            Err(e) => return Ok(Merged::Failed(e)),
        };
        for (_, row) in rows {
            match window.take() {
                Take::Skip => continue,
                Take::Done => break,
                Take::Emit => {
                    let refs: Vec<Option<&[u8]>> = row.iter().map(|v| v.as_deref()).collect();
                    synth::data_row(&mut self.out.buf, &refs);
                    if self.out.buf.len() >= CLIENT_FLUSH_BYTES {
                        self.out.flush().await?;
                    }
                }
            }
        }
        Ok(Merged::Ok)
    }
}
