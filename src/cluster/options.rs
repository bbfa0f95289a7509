//! What [`LocalCluster::start`](super::LocalCluster::start) should start.

use std::path::PathBuf;

/// Options for [`LocalCluster::start`](super::LocalCluster::start).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of shard instances ("shard0".."shard{N-1}"); default 2. The
    /// catalog instance comes on top.
    pub shards: usize,
    /// Extra shard instances started after the shards (named on from
    /// `shard{N}`), for online resharding to move key ranges to; `dev`
    /// registers them in the catalog without key ranges. Default 0.
    pub spare_shards: usize,
    /// Root holding one data dir per instance (`<root>/shard0`, ...,
    /// `<root>/catalog`). Existing clusters there are reused without initdb
    /// and kept on stop. `None` (default): a fresh temp dir, removed on stop.
    pub data_dir: Option<PathBuf>,
    /// `false` (default): `fsync`, `synchronous_commit` and
    /// `full_page_writes` off for speed (a machine crash can lose data).
    /// `true`: all three on.
    pub durable: bool,
    /// Extra `postgresql.conf` settings as (name, value), applied after (and
    /// so overriding) ours, e.g. `("log_statement", "all")`. Values are
    /// written quoted; names must look like GUC names.
    pub extra_settings: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            shards: 2,
            spare_shards: 0,
            data_dir: None,
            durable: false,
            extra_settings: Vec::new(),
        }
    }
}
