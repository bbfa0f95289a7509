//! Failpoints: named places in the commit protocol and in the split job
//! where a test can make the process crash (abort, like `kill -9`) or
//! stall.
//!
//! Configured once per process by the environment variable
//! `PGROUTER_FAILPOINT` = `NAME[=ACTION][@N]`:
//! - `NAME`: one of [`Failpoint`]'s names (`after_prepare_some`,
//!   `after_decision`, `after_commit_some`; `split_after_capture`,
//!   `split_after_bootstrap`, `split_in_copy`, `split_in_catchup`,
//!   `split_in_cutover`, `split_after_routing`, `split_in_cleanup`);
//! - `ACTION`: `crash` (default; `std::process::abort`) or `sleep:MS`
//!   (stall the transaction for MS milliseconds, then go on);
//! - `N`: act on the N-th time the point is reached (default 1), counted
//!   across all sessions; `crash` acts once, `sleep` from the N-th time on.
//!
//! Unset (production), a failpoint costs one relaxed atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// A place in the two-phase commit protocol or the split job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failpoint {
    /// PREPARE TRANSACTION succeeded on the first writing participant; the
    /// others may or may not have prepared; no decision is logged.
    AfterPrepareSome,
    /// The commit decision is durable in the catalog; no COMMIT PREPARED
    /// has been sent.
    AfterDecision,
    /// COMMIT PREPARED succeeded on the first participant; the others are
    /// still prepared.
    AfterCommitSome,
    /// Split step 1 done: slot and publication on the source.
    SplitAfterCapture,
    /// Split step 2 done: the target has the keyspace's tables.
    SplitAfterBootstrap,
    /// Split step 3: the first table copied, others maybe not.
    SplitInCopy,
    /// Split step 4: a source transaction committed on the target, the
    /// slot not yet confirmed past it.
    SplitInCatchUp,
    /// Split step 5: every router acknowledged the write block; no
    /// routing update yet.
    SplitInCutover,
    /// Split step 6 committed (the point of no return); routers maybe not
    /// serving it yet, the block still in the catalog.
    SplitAfterRouting,
    /// Split step 7: the slot dropped, the first table's moved rows
    /// deleted from the source.
    SplitInCleanup,
}

/// Every failpoint, for parsing.
const ALL: [Failpoint; 10] = [
    Failpoint::AfterPrepareSome,
    Failpoint::AfterDecision,
    Failpoint::AfterCommitSome,
    Failpoint::SplitAfterCapture,
    Failpoint::SplitAfterBootstrap,
    Failpoint::SplitInCopy,
    Failpoint::SplitInCatchUp,
    Failpoint::SplitInCutover,
    Failpoint::SplitAfterRouting,
    Failpoint::SplitInCleanup,
];

impl Failpoint {
    /// The name used in `PGROUTER_FAILPOINT`.
    pub fn name(self) -> &'static str {
        match self {
            Failpoint::AfterPrepareSome => "after_prepare_some",
            Failpoint::AfterDecision => "after_decision",
            Failpoint::AfterCommitSome => "after_commit_some",
            Failpoint::SplitAfterCapture => "split_after_capture",
            Failpoint::SplitAfterBootstrap => "split_after_bootstrap",
            Failpoint::SplitInCopy => "split_in_copy",
            Failpoint::SplitInCatchUp => "split_in_catchup",
            Failpoint::SplitInCutover => "split_in_cutover",
            Failpoint::SplitAfterRouting => "split_after_routing",
            Failpoint::SplitInCleanup => "split_in_cleanup",
        }
    }

    fn parse(s: &str) -> Option<Failpoint> {
        ALL.into_iter().find(|f| f.name() == s)
    }
}

/// What an armed failpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Abort the process at once (no cleanup, sockets reset by the kernel).
    Crash,
    /// Sleep this long (ms) before going on.
    Sleep(u64),
}

/// A parsed `PGROUTER_FAILPOINT` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Where.
    pub point: Failpoint,
    /// What.
    pub action: Action,
    /// On the N-th hit (1-based).
    pub nth: u64,
}

/// Parses `NAME[=ACTION][@N]`; None (with a warning logged by the caller)
/// if it is malformed.
pub fn parse_setting(s: &str) -> Option<Setting> {
    let (rest, nth) = match s.rsplit_once('@') {
        Some((r, n)) => (r, n.trim().parse::<u64>().ok().filter(|n| *n >= 1)?),
        None => (s, 1),
    };
    let (name, action) = match rest.split_once('=') {
        Some((n, a)) => (n, a.trim()),
        None => (rest, "crash"),
    };
    let action = match action {
        "crash" => Action::Crash,
        a => Action::Sleep(a.strip_prefix("sleep:")?.trim().parse().ok()?),
    };
    Some(Setting {
        point: Failpoint::parse(name.trim())?,
        action,
        nth,
    })
}

static SETTING: OnceLock<Option<Setting>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn setting() -> Option<Setting> {
    *SETTING.get_or_init(|| {
        let v = std::env::var("PGROUTER_FAILPOINT").ok()?;
        let s = parse_setting(&v);
        match s {
            Some(s) => tracing::warn!(failpoint = v, "failpoint armed: {s:?}"),
            None => tracing::error!(failpoint = v, "ignoring malformed PGROUTER_FAILPOINT"),
        }
        s
    })
}

/// True if `PGROUTER_FAILPOINT` names `p`: the coordinator then contacts
/// the first participant of that step alone before the others, so a crash
/// there leaves exactly "some participants done".
pub fn armed(p: Failpoint) -> bool {
    setting().is_some_and(|s| s.point == p)
}

/// Reaches failpoint `p`: crashes or sleeps if it is armed and due.
pub async fn hit(p: Failpoint) {
    let Some(s) = setting() else { return };
    if s.point != p {
        return;
    }
    let n = HITS.fetch_add(1, Ordering::Relaxed) + 1;
    match s.action {
        Action::Crash if n == s.nth => {
            eprintln!(
                "pg-router: failpoint {} reached (hit {n}): aborting",
                p.name()
            );
            std::process::abort();
        }
        Action::Sleep(ms) if n >= s.nth => tokio::time::sleep(Duration::from_millis(ms)).await,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings() {
        assert_eq!(
            parse_setting("after_decision"),
            Some(Setting {
                point: Failpoint::AfterDecision,
                action: Action::Crash,
                nth: 1
            })
        );
        assert_eq!(
            parse_setting("after_commit_some=sleep:250@3"),
            Some(Setting {
                point: Failpoint::AfterCommitSome,
                action: Action::Sleep(250),
                nth: 3
            })
        );
        assert_eq!(
            parse_setting("after_prepare_some=crash@20").map(|s| s.nth),
            Some(20)
        );
        for f in ALL {
            assert_eq!(parse_setting(f.name()).map(|s| s.point), Some(f));
        }
        for bad in [
            "",
            "nope",
            "after_decision@0",
            "after_decision=boom",
            "after_decision=sleep:x",
        ] {
            assert_eq!(parse_setting(bad), None, "{bad}");
        }
    }
}
