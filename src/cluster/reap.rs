//! Cleaning up temporary clusters whose owning process died without
//! stopping them (SIGKILL, abort, a test runner timeout).
//!
//! Temporary data roots are named `pg-router-cluster-<pidns>-<pid>-<random>`.
//! Before creating one we look for roots of the same pid namespace whose
//! owner `<pid>` is gone, kill their servers and delete them. Roots given by
//! the user (`ClusterOptions::data_dir`) are never touched.

use std::path::Path;
use std::time::Duration;

use super::process;

/// Prefix of temporary data root names.
pub(crate) const ROOT_PREFIX: &str = "pg-router-cluster-";

/// The name prefix for a temp root owned by this process.
pub(crate) fn own_prefix() -> String {
    format!("{ROOT_PREFIX}{}-{}-", pid_namespace(), std::process::id())
}

/// The inode of this process's pid namespace (0 if unknown), so that roots
/// made in other containers sharing the temp dir are left alone.
fn pid_namespace() -> u64 {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|p| {
            let s = p.to_string_lossy().into_owned();
            s.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
        })
        .unwrap_or(0)
}

/// Kills the servers of, and removes, temp roots in `base` left by dead
/// processes of our pid namespace. Best effort: failures are logged.
pub(crate) fn reap_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let ours = format!("{ROOT_PREFIX}{}-", pid_namespace());
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&ours)) else {
            continue;
        };
        let Some(owner) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if u32::try_from(owner).is_ok_and(|o| o == std::process::id()) || process::pid_alive(owner)
        {
            continue;
        }
        let root = entry.path();
        tracing::warn!(
            "removing cluster {} left by dead process {owner}",
            root.display()
        );
        if let Ok(instances) = std::fs::read_dir(&root) {
            for inst in instances.filter_map(Result::ok) {
                if let Some(pid) = process::running_postmaster(&inst.path()) {
                    let _ = process::kill_group(pid);
                    process::wait_until(Duration::from_secs(5), || !process::group_alive(pid));
                }
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&root) {
            tracing::warn!("could not remove {}: {e}", root.display());
        }
    }
}
