//! `COPY (query) TO STDOUT` over several shards ([`CopyQuery`]): when the
//! query's rows need no merging, every shard runs the COPY and the streams
//! are concatenated (one CSV/text header line, one binary file header and
//! trailer); otherwise the query runs as a merged SELECT (the gather, with
//! its final step where needed) and the client writer encodes its rows as
//! COPY data (`protocol/copy_out.rs`), text and CSV from text values,
//! binary tuples from binary values.

use std::collections::VecDeque;

use bytes::BytesMut;
use postgres_protocol::message::frontend as fe;

use crate::plan::{CopyQuery, Literals, Merge};
use crate::protocol::copy_out::{CopyOutEncoder, CopyOutFormat};
use crate::protocol::PgError;
use crate::state::Routing;

use super::concat::{MergeMode, MergeState};
use super::context::{End, ExecCtx};
use super::exchange::{Expect, Slot};
use super::route::{scatter_shards, Values};

impl ExecCtx {
    /// Runs `COPY (query) TO STDOUT` (`sql`, simple protocol) planned as
    /// `c`. Returns false if it failed (the error was sent: the shards',
    /// the gather's, or 0A000 for an option the router would have to apply
    /// itself but does not, e.g. ENCODING, with a merged query).
    pub async fn copy_query(
        &mut self,
        routing: &Routing,
        sql: &str,
        c: &CopyQuery,
    ) -> Result<bool, End> {
        let inner = sql.get(c.query.clone()).unwrap_or_default();
        let lits = Literals::default();
        let values = Values::Simple {
            sql: inner,
            lits: &lits,
        };
        let shards = match scatter_shards(&routing.catalog, &c.table, c.prune.as_ref(), &values) {
            Ok(s) => s,
            Err(e) => {
                self.send_error(&e);
                return Ok(false);
            }
        };
        let binary = c.out.format == CopyOutFormat::Binary;
        if let Merge::Gather(plan) = &c.merge {
            if let Some(o) = &c.unapplied {
                self.send_error(&PgError::unsupported(format!(
                    "COPY option {o} with a query whose rows the router merges (ORDER BY, LIMIT, aggregates, DISTINCT) is not supported"
                )));
                return Ok(false);
            }
            self.out.begin_copy_out(CopyOutEncoder::new(c.out.clone()));
            let ok = self
                .gather_simple_as(&shards, plan, inner, &lits, binary)
                .await;
            self.out.end_copy_out();
            return ok;
        }
        let mut q = BytesMut::new();
        let _ = fe::query(sql, &mut q);
        let q = q.freeze();
        let parts = shards
            .iter()
            .map(|s| {
                (
                    s.clone(),
                    q.clone(),
                    VecDeque::from([Slot::Forward(Expect::Query)]),
                )
            })
            .collect();
        let mut merge = MergeState::new(MergeMode::Concat);
        merge.copy_header = c.out.header && !binary;
        merge.copy_binary = binary;
        self.exchange_many_with(parts, merge).await
    }
}
