//! Where temporary data roots and the initdb template go.
//!
//! A fresh data dir is ~1,000 files; on a VM's disk-backed ext4 creating
//! them costs ~1 ms each (≈1.2 s per instance), on tmpfs ~40 µs. So
//! throwaway clusters go to `/dev/shm` (RAM) when it has room, else to the
//! system temp dir. `PG_ROUTER_TMPDIR` overrides the choice.

use std::path::{Path, PathBuf};

use super::error::ClusterError;
use super::os_user::RunAs;

/// Free bytes `/dev/shm` must have to be used (shared_buffers and
/// PostgreSQL's dynamic shared memory live there too).
const MIN_SHM_FREE: u64 = 4 << 30;

/// The directory for temporary data roots and the template: the
/// `PG_ROUTER_TMPDIR` environment variable if set; else `/dev/shm` if it has
/// at least 4 GiB free; else [`std::env::temp_dir`], else `/tmp`. Candidates
/// the PostgreSQL user cannot enter are skipped.
///
/// # Errors
/// [`ClusterError::InvalidOption`] if `PG_ROUTER_TMPDIR` is unusable or no
/// candidate is.
pub(crate) fn temp_base(run_as: &RunAs) -> Result<PathBuf, ClusterError> {
    if let Some(dir) = std::env::var_os("PG_ROUTER_TMPDIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if !dir.is_dir() {
            return Err(ClusterError::InvalidOption(format!(
                "PG_ROUTER_TMPDIR={} is not a directory",
                dir.display()
            )));
        }
        return match run_as.untraversable(&dir) {
            None => Ok(dir),
            Some(bad) => Err(ClusterError::InvalidOption(format!(
                "PG_ROUTER_TMPDIR={}: user {} cannot enter {}",
                dir.display(),
                run_as.name(),
                bad.display()
            ))),
        };
    }
    let shm = Path::new("/dev/shm");
    let mut candidates = Vec::new();
    if shm.is_dir() && free_bytes(shm).is_some_and(|free| free >= MIN_SHM_FREE) {
        candidates.push(shm.to_path_buf());
    }
    candidates.push(std::env::temp_dir());
    candidates.push(PathBuf::from("/tmp"));
    candidates
        .into_iter()
        .find(|dir| dir.is_dir() && writable(dir) && run_as.untraversable(dir).is_none())
        .ok_or_else(|| {
            ClusterError::InvalidOption(format!(
                "no temp dir that user {} can enter (tried /dev/shm, {}, /tmp); set \
                 PG_ROUTER_TMPDIR",
                run_as.name(),
                std::env::temp_dir().display()
            ))
        })
}

/// Bytes available to unprivileged users on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    #[allow(clippy::unnecessary_cast)] // the field types vary by platform
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// True if we may create entries in `dir`.
fn writable(dir: &Path) -> bool {
    nix::unistd::access(
        dir,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .is_ok()
}
