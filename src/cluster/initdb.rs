//! Creating an instance's data directory: reuse, copy of a template, or
//! `initdb`.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use super::error::ClusterError;
use super::os_user::RunAs;
use super::process;
use super::template::Template;

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
/// copied from `template` (see `template.rs`) when given, else created with `initdb`. A failed copy falls back to `initdb`.
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

/// Files and bytes in a copied tree (checked against the template manifest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TreeSize {
    /// Regular files.
    pub files: u64,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// Copies the contents of `src` into the existing directory `dst`, keeping
/// permission bits and giving every entry to `run_as`. Only directories and
/// regular files are supported.
///
/// # Errors
/// [`ClusterError::Io`], also for any other kind of entry (e.g. a symlink).
pub(crate) fn copy_tree(src: &Path, dst: &Path, run_as: &RunAs) -> Result<TreeSize, ClusterError> {
    let mut size = TreeSize::default();
    copy_into(src, dst, run_as, &mut size)?;
    Ok(size)
}

fn copy_into(
    src: &Path,
    dst: &Path,
    run_as: &RunAs,
    size: &mut TreeSize,
) -> Result<(), ClusterError> {
    let io = |what: &str, p: &Path, e| ClusterError::io(format!("{what} {}", p.display()), e);
    for entry in std::fs::read_dir(src).map_err(|e| io("reading", src, e))? {
        let entry = entry.map_err(|e| io("reading", src, e))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&from).map_err(|e| io("stat", &from, e))?;
        if meta.is_dir() {
            std::fs::create_dir(&to).map_err(|e| io("creating", &to, e))?;
            std::fs::set_permissions(&to, meta.permissions()).map_err(|e| io("chmod", &to, e))?;
            run_as.chown(&to)?;
            copy_into(&from, &to, run_as, size)?;
        } else if meta.is_file() {
            size.bytes += std::fs::copy(&from, &to).map_err(|e| io("copying to", &to, e))?;
            size.files += 1;
            run_as.chown(&to)?;
        } else {
            return Err(io(
                "copying",
                &from,
                std::io::Error::new(std::io::ErrorKind::Unsupported, "not a file or directory"),
            ));
        }
    }
    Ok(())
}
