//! `INSERT ... SELECT` whose rows the router routes
//! ([`crate::plan::Plan::InsertSelect`], `exec/insert_select.rs`) in the
//! extended query protocol: at Execute, in batch order, the Bind's values
//! are written into the statement as typed literals (read back as text by
//! PostgreSQL, `session/subqueries_ext.rs`) and the text runs as in the
//! simple protocol, its response kept by the router and passed on as the
//! portal's: the command tag, and RETURNING rows, which the shards' own
//! INSERTs return in the client's result formats. BindComplete is the
//! router's; Describe of the portal is answered by a shard from the
//! client's statement.

use crate::exec::message::PendingInsertSelect;
use crate::exec::End;
use crate::plan::Plan;
use crate::protocol::backend::frames as frames_of;
use crate::protocol::frontend::Bind;
use crate::protocol::PgError;
use crate::state::Routing;

use super::Session;

impl Session {
    /// Runs the portal's INSERT ... SELECT (see the module docs). Returns
    /// false if it failed (error sent).
    pub(super) async fn insert_select_execute(
        &mut self,
        routing: &Routing,
        p: &PendingInsertSelect,
    ) -> Result<bool, End> {
        let body = p.bind.get(5..).unwrap_or_default();
        let b = match Bind::decode(body) {
            Ok(b) => b,
            Err(e) => {
                self.ctx.send_error(&PgError::new(
                    crate::protocol::error::codes::PROTOCOL_VIOLATION,
                    e.to_string(),
                ));
                return Ok(false);
            }
        };
        let section = body
            .get(b.after_names..b.params_end)
            .unwrap_or_default()
            .to_vec();
        let n = b.params.len();
        let Some((text, _)) = self
            .bind_text(routing, &p.stmt.query, &p.stmt.param_types, n, &section)
            .await?
        else {
            return Ok(false);
        };
        let (plan, lits) = routing.planner.plan_simple(&text, routing);
        if !matches!(*plan, Plan::InsertSelect(_) | Plan::Error { .. }) {
            self.ctx.send_error(&PgError::new(
                crate::protocol::error::codes::INTERNAL_ERROR,
                "an INSERT ... SELECT given its parameter values was planned differently",
            ));
            return Ok(false);
        }
        // The statement runs as in the simple protocol; its response is
        // passed on without the row description (Describe gave it).
        // RETURNING rows come from the shards in the client's formats.
        let was = std::mem::replace(&mut self.ctx.in_extended, false);
        self.ctx.returning_formats = p.result_formats.clone();
        self.ctx.out.begin_capture(usize::MAX);
        let ran = Box::pin(self.exec_simple(routing, &text, &plan, &lits, None, None)).await;
        let captured = self.ctx.out.end_capture();
        self.ctx.in_extended = was;
        self.ctx.returning_formats.clear();
        let ok = ran?;
        for f in frames_of(&captured.unwrap_or_default()) {
            if matches!(f.first(), Some(b'D' | b'C' | b'E' | b'N')) {
                self.ctx.out.buf.extend_from_slice(f);
            }
        }
        Ok(ok)
    }
}
