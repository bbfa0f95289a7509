//! Creating an instance's data directory: reuse, copy of a template, or
//! `initdb`.

use std::path::Path;

use super::error::ClusterError;
use super::initdb::{initdb, make_private_dir};
use super::os_user::RunAs;
use super::template::Template;

/// What [`prepare`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prepared {
    /// `PG_VERSION` was already there: existing cluster reused.
    Reused,
    /// Copied from the initdb template.
    Copied,
    /// Ran `initdb`.
    Initdb,
}

/// Makes `data_dir` hold a cluster: reused if it has `PG_VERSION`, else
/// copied from `template` (see `template.rs`) when given, else created with
/// `initdb`. A failed copy falls back to `initdb`.
///
/// # Errors
/// [`ClusterError::Io`] for filesystem failures,
/// [`ClusterError::CommandFailed`] with initdb's output if initdb fails.
pub(crate) fn prepare(
    data_dir: &Path,
    bin_dir: &Path,
    run_as: &RunAs,
    template: Option<&Template>,
) -> Result<Prepared, ClusterError> {
    if data_dir.join("PG_VERSION").exists() {
        return Ok(Prepared::Reused);
    }
    make_private_dir(data_dir, run_as)?;
    if let Some(template) = template {
        match template.copy_to(data_dir, run_as) {
            Ok(()) => return Ok(Prepared::Copied),
            Err(e) => {
                tracing::warn!(
                    "copying template into {} failed ({e}); running initdb",
                    data_dir.display()
                );
                empty_dir(data_dir)?;
            }
        }
    }
    initdb(data_dir, bin_dir, run_as)?;
    Ok(Prepared::Initdb)
}

/// Removes everything inside `dir`, keeping `dir`.
fn empty_dir(dir: &Path) -> Result<(), ClusterError> {
    let io = |e| ClusterError::io(format!("emptying {}", dir.display()), e);
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path).map_err(io)?;
        } else {
            std::fs::remove_file(&path).map_err(io)?;
        }
    }
    Ok(())
}
