//! What this router knows of online resharding ([`SplitBoard`]): the
//! recent split jobs as the lease task last read them from the catalog
//! (about once a second; `SHOW SPLITS` and the `pgrouter_split_*` gauges),
//! and the write-block windows this router itself saw (a histogram: a
//! block installed here → writes to its source admitted again here).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use prometheus_client::metrics::histogram::Histogram;
use tokio_postgres::Client;

use crate::topology::KeyRange;

/// How often the lease task reads the jobs.
pub const READ_EVERY: Duration = Duration::from_secs(1);

/// Jobs listed: every active one and those that ended within this long.
const ENDED_WITHIN: &str = "1 day";

/// At most this many jobs listed.
const MAX_JOBS: i64 = 20;

/// One split job (`pgrouter.split_jobs`), as last read.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitJobRow {
    /// Job id.
    pub id: i64,
    /// Keyspace.
    pub keyspace: String,
    /// Source shard.
    pub source: String,
    /// Target shard.
    pub target: String,
    /// The moving key range, as [`KeyRange`] prints it.
    pub key_range: String,
    /// Phase (`created` … `completed`, `failed`, `rolled_back`).
    pub phase: String,
    /// Rows copied in step 3 (all tables).
    pub rows_copied: i64,
    /// Catch-up lag, bytes of source WAL (None before step 4).
    pub lag_bytes: Option<i64>,
    /// The recorded write-block window, ms (None before the cutover).
    pub cutover_window_ms: Option<f64>,
    /// Last change of the job row (catalog time, text).
    pub updated_at: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl SplitJobRow {
    /// Whether the job has not ended.
    pub fn active(&self) -> bool {
        !matches!(self.phase.as_str(), "completed" | "failed" | "rolled_back")
    }
}

/// See the module docs.
pub struct SplitBoard {
    jobs: ArcSwap<Vec<SplitJobRow>>,
    read_at: Mutex<Option<Instant>>,
    /// Blocks holding writes here: (job, epoch) → installed at.
    holding: Mutex<HashMap<(i64, i64), Instant>>,
    windows: Histogram,
}

impl Default for SplitBoard {
    fn default() -> Self {
        SplitBoard {
            jobs: ArcSwap::from_pointee(Vec::new()),
            read_at: Mutex::new(None),
            holding: Mutex::new(HashMap::new()),
            // 5 ms … ~10 s.
            windows: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.005, 2.0, 12,
            )),
        }
    }
}

impl SplitBoard {
    /// The jobs as last read (newest first).
    pub fn jobs(&self) -> Arc<Vec<SplitJobRow>> {
        self.jobs.load_full()
    }

    /// The write-block windows seen here, seconds.
    pub fn windows(&self) -> &Histogram {
        &self.windows
    }

    /// Whether the jobs are due for a read (none within [`READ_EVERY`]).
    pub fn due(&self) -> bool {
        self.read_at
            .lock()
            .is_none_or(|t| t.elapsed() >= READ_EVERY)
    }

    /// Reads the jobs from the catalog.
    ///
    /// Errors: the catalog's (the previous list stays).
    pub async fn read(&self, client: &Client) -> Result<(), tokio_postgres::Error> {
        *self.read_at.lock() = Some(Instant::now());
        let rows = client
            .query(
                &format!(
                    "select id, keyspace, source, target, start_id::text, end_id::text, \
                            phase, \
                            coalesce((select sum((v ->> 'rows_copied')::bigint) \
                                        from jsonb_each(progress -> 'copy') e(k, v)), 0)::bigint, \
                            lag_bytes, cutover_window_ms, updated_at::text, error \
                       from pgrouter.split_jobs \
                      where phase not in ('completed', 'failed', 'rolled_back') \
                         or updated_at > now() - interval '{ENDED_WITHIN}' \
                      order by id desc limit {MAX_JOBS}"
                ),
                &[],
            )
            .await?;
        let jobs = rows
            .iter()
            .map(|r| SplitJobRow {
                id: r.get(0),
                keyspace: r.get(1),
                source: r.get(2),
                target: r.get(3),
                key_range: key_range(r.get(4), r.get(5)),
                phase: r.get(6),
                rows_copied: r.get(7),
                lag_bytes: r.get(8),
                cutover_window_ms: r.get(9),
                updated_at: r.get(10),
                error: r.get(11),
            })
            .collect();
        self.jobs.store(Arc::new(jobs));
        Ok(())
    }

    /// The blocks (job id, epoch) that hold writes here now: new ones
    /// start a window, those gone end theirs (observed in the histogram).
    pub fn holding(&self, now_holding: &[(i64, i64)]) {
        let mut h = self.holding.lock();
        let now = Instant::now();
        h.retain(|k, since| {
            let keep = now_holding.contains(k);
            if !keep {
                self.windows
                    .observe(now.saturating_duration_since(*since).as_secs_f64());
            }
            keep
        });
        for k in now_holding {
            h.entry(*k).or_insert(now);
        }
    }
}

/// `start_id`, `end_id` (numeric text) as a [`KeyRange`]'s text.
fn key_range(start: String, end: Option<String>) -> String {
    match start.parse::<u64>() {
        Ok(start) => KeyRange {
            start,
            // 2^64 (or anything past u64) is the end of the id space.
            end: end.and_then(|e| e.parse::<u64>().ok()),
        }
        .to_string(),
        Err(_) => format!("[{start}, {})", end.unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::EncodeMetric;

    #[test]
    fn windows_start_and_end_with_the_blocks() {
        let b = SplitBoard::default();
        b.holding(&[(1, 10)]);
        b.holding(&[(1, 10), (2, 20)]);
        std::thread::sleep(Duration::from_millis(10));
        b.holding(&[(2, 20)]);
        b.holding(&[]);
        let mut out = String::new();
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register("w", "w", b.windows.clone());
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(out.contains("w_count 2"), "{out}");
        let _ = b.windows.metric_type();
        assert!(b.due());
        assert_eq!(
            key_range(
                "4611686018427387904".into(),
                Some("9223372036854775808".into())
            ),
            "[0x4000000000000000, 0x8000000000000000)"
        );
        assert!(key_range("0".into(), None).ends_with("0xffffffffffffffff]"));
    }
}
