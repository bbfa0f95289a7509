//! Progress of a job's long steps, for the job row (`split_jobs.progress`,
//! read by `pg-router split status` and the reconciler) and for a terminal
//! ([`Observer`], which the CLI implements with progress bars).

use serde::Serialize;

/// Copy progress of one table (step 3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TableProgress {
    /// Table name.
    pub table: String,
    /// Rows of the table read on the source (all ranges).
    pub rows_read: u64,
    /// Rows of the moving range written to the target.
    pub rows_copied: u64,
    /// Bytes of those rows in binary COPY format.
    pub bytes_copied: u64,
    /// Bytes read from the source (binary COPY format, all ranges).
    pub bytes_read: u64,
    /// The table's size on the source when the copy started
    /// (`pg_table_size`, bytes): the denominator of a progress bar.
    pub source_bytes: u64,
    /// The table's copy committed on the target.
    pub done: bool,
}

/// CDC catch-up progress (step 4).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CatchUpProgress {
    /// Source transactions applied on the target (those with a change in
    /// the range).
    pub transactions: u64,
    /// Target transactions committed (group commit: one holds every source
    /// transaction received while the previous one was applied).
    pub commits: u64,
    /// Row changes applied.
    pub changes: u64,
    /// Source transactions skipped (no change in the range, or applied
    /// before a restart).
    pub skipped: u64,
    /// Last source commit applied (`pg_lsn` text), if any.
    pub applied_lsn: Option<String>,
    /// WAL bytes between the source's current position and the applied
    /// position.
    pub lag_bytes: u64,
    /// Seconds between the last applied commit's timestamp and now (0 when
    /// nothing is pending).
    pub lag_seconds: f64,
}

/// Receives progress as a step makes it (a terminal's progress bars; the
/// job row is written by the steps themselves).
pub trait Observer: Send + Sync {
    /// A table's copy progressed (called at most every few hundred ms per
    /// table, and once when it is done).
    fn copy(&self, _progress: &TableProgress) {}
    /// Catch-up progressed.
    fn catch_up(&self, _progress: &CatchUpProgress) {}
    /// A step started (a line for the terminal).
    fn step(&self, _message: &str) {}
}

/// An [`Observer`] that ignores everything.
pub struct Quiet;

impl Observer for Quiet {}
