//! Admission of writes through the router's write gate
//! ([`crate::state::gate::WriteGate`]): a request that writes enters the
//! gate before its statements are routed and leaves it when it is done
//! ([`ExecCtx::leave_gate`]). While a split cutover blocks writes, or the
//! router holds no catalog lease, the request waits — and, once admitted
//! after a wait, is routed with the routing then in force (the caller
//! plans again), so a write held across a routing update goes to the new
//! owner of its key.

use std::time::{Duration, Instant};

use crate::protocol::error::codes;
use crate::protocol::PgError;
use crate::state::gate::Admit;

use super::context::{no_lease, ExecCtx};

/// Re-check interval of a held write (a routing reload lifts a routed
/// block without a gate notification).
const RECHECK: Duration = Duration::from_millis(2);

impl ExecCtx {
    /// Admits the current request's writes; returns true if it waited
    /// (the caller must route with a fresh routing snapshot).
    ///
    /// Errors: 57014 when a cutover block held it longer than
    /// `resharding.write_wait_ms`; 25006 when the router had no valid
    /// catalog lease for that long.
    pub async fn admit_write(&mut self) -> Result<bool, PgError> {
        self.enter_gate();
        if !self.state.gate.maybe_closed() {
            return Ok(false);
        }
        let state = self.state.clone();
        let max = Duration::from_millis(state.resharding.write_wait_ms);
        let started = Instant::now();
        let mut waited = false;
        loop {
            let routing = state.routing();
            let verdict = state.gate.admit(
                |s| self.held.iter().any(|h| h.wrote && *h.conn.shard == *s),
                |k| routing.catalog.keyspaces.get(k).map_or(0, |k| k.generation),
            );
            if verdict == Admit::Go {
                return Ok(waited);
            }
            // Out of the gate while waiting: the block's acknowledgement
            // waits for admitted writes only.
            self.leave_gate();
            if started.elapsed() >= max {
                return Err(match verdict {
                    Admit::NoLease => no_lease(),
                    _ => PgError::new(
                        codes::QUERY_CANCELED,
                        format!(
                            "write held {} ms by a resharding cutover (resharding.write_wait_ms)",
                            started.elapsed().as_millis()
                        ),
                    ),
                });
            }
            waited = true;
            state.gate.changed(RECHECK).await;
            self.enter_gate();
        }
    }

    /// Enters the write gate's current grace period (once per request):
    /// before routing anything that may write.
    pub fn enter_gate(&mut self) {
        if self.gate_period.is_none() {
            self.gate_period = Some(self.state.gate.enter());
        }
    }

    /// The request is done (or writes nothing): leaves the write gate if it
    /// entered.
    pub fn leave_gate(&mut self) {
        if let Some(p) = self.gate_period.take() {
            self.state.gate.leave(p);
        }
    }
}

impl Drop for ExecCtx {
    fn drop(&mut self) {
        self.leave_gate();
    }
}
