//! [`Bars`]: the CLI's [`Observer`], progress bars on a terminal
//! (`indicatif`): one bar per table during the copy (bytes read of the
//! table's size, rows copied), a line for catch-up lag, a printed line per
//! step. Without a terminal on stderr the bars are hidden and steps are
//! printed as plain lines.

use std::collections::HashMap;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use parking_lot::Mutex;

use super::progress::{CatchUpProgress, Observer, TableProgress};

/// Progress bars on stderr.
pub struct Bars {
    multi: MultiProgress,
    tables: Mutex<HashMap<String, ProgressBar>>,
    lag: Mutex<Option<ProgressBar>>,
}

impl Default for Bars {
    fn default() -> Self {
        Bars::new()
    }
}

impl Bars {
    /// Bars drawn on stderr (hidden when it is not a terminal).
    pub fn new() -> Bars {
        Bars {
            multi: MultiProgress::new(),
            tables: Mutex::new(HashMap::new()),
            lag: Mutex::new(None),
        }
    }

    fn println(&self, line: &str) {
        if self.multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }
}

impl Observer for Bars {
    fn copy(&self, p: &TableProgress) {
        let mut tables = self.tables.lock();
        let bar = tables.entry(p.table.clone()).or_insert_with(|| {
            let b = self.multi.add(ProgressBar::new(p.source_bytes.max(1)));
            b.set_style(
                ProgressStyle::with_template("{prefix:>20} [{bar:30}] {bytes}/{total_bytes} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b.set_prefix(p.table.clone());
            b
        });
        bar.set_position(p.bytes_read.min(bar.length().unwrap_or(u64::MAX)));
        bar.set_message(format!("{} rows copied", p.rows_copied));
        if p.done {
            bar.finish_with_message(format!("{} of {} rows copied", p.rows_copied, p.rows_read));
        }
    }

    fn catch_up(&self, p: &CatchUpProgress) {
        let mut lag = self.lag.lock();
        let bar = lag.get_or_insert_with(|| {
            let b = self.multi.add(ProgressBar::new_spinner());
            b.set_style(
                ProgressStyle::with_template("{prefix:>20} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_prefix("catch-up");
            b
        });
        bar.set_message(format!(
            "lag {} bytes, {:.1} s; {} transactions, {} changes applied",
            p.lag_bytes, p.lag_seconds, p.transactions, p.changes
        ));
        bar.tick();
    }

    fn step(&self, message: &str) {
        self.println(message);
    }
}
