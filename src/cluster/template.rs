//! A cached initdb'd data directory, copied into new instances.
//!
//! `initdb` takes ~0.7 s of CPU per instance; copying its ~40 MB result to
//! tmpfs takes ~0.1 s. The first start on a machine runs initdb once into
//! `<temp base>/pg-router-initdb-template-<key>/data` (see `tmp_base.rs`;
//! key: the PostgreSQL binaries,
//! the initdb arguments and the OS user), later starts — in any process —
//! copy it. A template is published by an atomic rename, so it is either
//! complete or absent; a `manifest` of its file count and byte total is
//! checked after each copy, and a template that no longer matches (e.g. a tmp
//! cleaner ate files) is deleted and the instance falls back to initdb.
//! Set `PG_ROUTER_INITDB_TEMPLATE=off` to always run initdb.

use std::hash::{Hash, Hasher};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::error::ClusterError;
use super::initdb::{self, INITDB_ARGS};
use super::os_user::RunAs;

/// Bump when the template layout or contents change.
const FORMAT: u32 = 1;

/// Prefix of template directory names in the temp base.
const PREFIX: &str = "pg-router-initdb-template-";

/// Serialises template builds within this process.
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// A complete initdb'd data dir to copy.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    /// `<root>/data`.
    data: PathBuf,
    /// The template's directory (removed if found damaged).
    root: PathBuf,
    /// What a full copy must add up to.
    expected: TreeSize,
}

impl Template {
    /// Returns the template for these binaries and user under `base`,
    /// building it if missing. `None` when disabled by
    /// `PG_ROUTER_INITDB_TEMPLATE=off`.
    ///
    /// # Errors
    /// Any failure to build it (callers fall back to plain initdb).
    pub(crate) fn ensure(
        bin_dir: &Path,
        run_as: &RunAs,
        base: &Path,
    ) -> Result<Option<Template>, ClusterError> {
        if std::env::var("PG_ROUTER_INITDB_TEMPLATE").is_ok_and(|v| v == "off" || v == "0") {
            return Ok(None);
        }
        let root = base.join(format!("{PREFIX}{:016x}", key(bin_dir, run_as)));
        if let Some(t) = Self::load(&root) {
            return Ok(Some(t));
        }
        let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = Self::load(&root) {
            return Ok(Some(t));
        }
        build(bin_dir, run_as, base, &root)?;
        Self::load(&root).map(Some).ok_or_else(|| {
            ClusterError::InvalidOption(format!(
                "template {} unreadable after build",
                root.display()
            ))
        })
    }

    /// Reads a published template, if complete.
    fn load(root: &Path) -> Option<Template> {
        let manifest = std::fs::read_to_string(root.join("manifest")).ok()?;
        let expected = parse_manifest(&manifest)?;
        let data = root.join("data");
        data.join("PG_VERSION").exists().then(|| Template {
            data,
            root: root.to_path_buf(),
            expected,
        })
    }

    /// Copies the template into the existing empty directory `dst`.
    ///
    /// # Errors
    /// Copy failures, or a copy that does not match the manifest (the
    /// template is then deleted so the next start rebuilds it).
    pub(crate) fn copy_to(&self, dst: &Path, run_as: &RunAs) -> Result<(), ClusterError> {
        let got = copy_tree(&self.data, dst, run_as)?;
        if got != self.expected {
            tracing::warn!(
                "initdb template {} is damaged; removing it",
                self.root.display()
            );
            let _ = std::fs::remove_dir_all(&self.root);
            return Err(ClusterError::InvalidOption(format!(
                "initdb template {} changed: expected {:?}, copied {got:?}",
                self.root.display(),
                self.expected
            )));
        }
        Ok(())
    }
}

/// Builds a template in a scratch dir beside `root` and renames it into place.
fn build(bin_dir: &Path, run_as: &RunAs, base: &Path, root: &Path) -> Result<(), ClusterError> {
    let io = |what: &str, p: &Path, e| ClusterError::io(format!("{what} {}", p.display()), e);
    let scratch = tempfile::Builder::new()
        .prefix(&format!(".{PREFIX}building-"))
        .tempdir_in(base)
        .map_err(|e| io("creating a temp dir in", base, e))?;
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io("chmod", scratch.path(), e))?;
    let data = scratch.path().join("data");
    initdb::make_private_dir(&data, run_as)?;
    initdb::initdb(&data, bin_dir, run_as)?;
    let size = tree_size(&data).map_err(|e| io("measuring", &data, e))?;
    let manifest = scratch.path().join("manifest");
    std::fs::write(
        &manifest,
        format!("files={} bytes={}\n", size.files, size.bytes),
    )
    .map_err(|e| io("writing", &manifest, e))?;

    let built = scratch.keep();
    if let Err(e) = std::fs::rename(&built, root) {
        let _ = std::fs::remove_dir_all(&built);
        // Another process may have published the same template first.
        if !root.join("manifest").exists() {
            return Err(io("publishing template", root, e));
        }
    } else {
        tracing::info!("built initdb template {}", root.display());
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

/// Files and bytes under `dir` (regular files only).
fn tree_size(dir: &Path) -> std::io::Result<TreeSize> {
    let mut size = TreeSize::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let sub = tree_size(&entry.path())?;
            size.files += sub.files;
            size.bytes += sub.bytes;
        } else if meta.is_file() {
            size.files += 1;
            size.bytes += meta.len();
        }
    }
    Ok(size)
}

fn parse_manifest(text: &str) -> Option<TreeSize> {
    let mut size = TreeSize::default();
    for field in text.split_whitespace() {
        match field.split_once('=')? {
            ("files", n) => size.files = n.parse().ok()?,
            ("bytes", n) => size.bytes = n.parse().ok()?,
            _ => return None,
        }
    }
    Some(size)
}

/// Identifies the binaries (path, size, mtime of initdb and postgres), the
/// initdb arguments and the user, so any change yields a fresh template.
fn key(bin_dir: &Path, run_as: &RunAs) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    FORMAT.hash(&mut h);
    std::fs::canonicalize(bin_dir)
        .unwrap_or_else(|_| bin_dir.to_path_buf())
        .hash(&mut h);
    for prog in ["initdb", "postgres"] {
        if let Ok(m) = std::fs::metadata(bin_dir.join(prog)) {
            (m.len(), m.mtime(), m.mtime_nsec(), m.ino()).hash(&mut h);
        }
    }
    INITDB_ARGS.hash(&mut h);
    run_as.name().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn manifest_round_trip() {
        let s = super::parse_manifest("files=992 bytes=40000000\n").unwrap();
        assert_eq!((s.files, s.bytes), (992, 40_000_000));
        assert!(super::parse_manifest("files=x").is_none());
    }
}
