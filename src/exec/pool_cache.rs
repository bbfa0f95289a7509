//! A session's cache of the pools it checks connections out of: the
//! fast path finds its shard's pool with a short linear scan instead of
//! the router-wide map (a read lock, a string hash and two reference
//! count updates) on every checkout. Emptied when the router's pools
//! change ([`RouterState::pools_epoch`]).

use std::sync::Arc;

use crate::backend::ShardPool;
use crate::state::RouterState;

/// The pools one session used since the pools last changed (one per shard
/// it used; a handful at most).
#[derive(Default)]
pub struct PoolCache {
    epoch: u64,
    pools: Vec<Arc<ShardPool>>,
}

impl PoolCache {
    /// Session worker `worker`'s pool for `shard`, None when the shard is
    /// not configured.
    pub fn get(
        &mut self,
        state: &RouterState,
        shard: &str,
        worker: usize,
    ) -> Option<&Arc<ShardPool>> {
        let epoch = state.pools_epoch();
        if epoch != self.epoch {
            self.pools.clear();
            self.epoch = epoch;
        }
        let i = match self.pools.iter().position(|p| p.target.name == shard) {
            Some(i) => i,
            None => {
                self.pools.push(state.pool(shard, worker)?);
                self.pools.len() - 1
            }
        };
        self.pools.get(i)
    }
}
