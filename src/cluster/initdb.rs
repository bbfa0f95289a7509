//! Running `initdb`: its arguments, the command, and the private (0700)
//! directory it runs in.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use super::error::ClusterError;
use super::os_user::RunAs;
use super::process;

/// `initdb` arguments after `-D <dir>`: superuser `postgres`, trust auth, no
/// fsync of the new files, UTF8, and the C locale (byte-order text sorting,
/// identical on every machine).
pub(crate) const INITDB_ARGS: [&str; 8] = [
    "-U",
    "postgres",
    "-A",
    "trust",
    "--no-sync",
    "-E",
    "UTF8",
    "--locale=C",
];

/// Runs initdb into `data_dir` (which must be missing or empty and, when we
/// switch users, owned by `run_as`).
///
/// # Errors
/// [`ClusterError::CommandFailed`] with initdb's output.
pub(crate) fn initdb(data_dir: &Path, bin_dir: &Path, run_as: &RunAs) -> Result<(), ClusterError> {
    let mut cmd = run_as.command(&bin_dir.join("initdb"));
    cmd.arg("-D")
        .arg(data_dir)
        .args(INITDB_ARGS)
        .current_dir(data_dir);
    process::run(&mut cmd)?;
    Ok(())
}

/// Creates `dir` if missing, with mode 0700, owned by `run_as`.
///
/// # Errors
/// [`ClusterError::Io`].
pub(crate) fn make_private_dir(dir: &Path, run_as: &RunAs) -> Result<(), ClusterError> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| ClusterError::io(format!("creating {}", dir.display()), e))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| ClusterError::io(format!("chmod 0700 {}", dir.display()), e))?;
    run_as.chown(dir)
}
