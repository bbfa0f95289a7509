//! Locating the PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`).

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::error::ClusterError;

/// The server programs a bin dir must hold.
const REQUIRED: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// Where Debian's `postgresql` package installs versioned server binaries:
/// `<root>/<version>/bin`.
const DEBIAN_LIB_ROOT: &str = "/usr/lib/postgresql";

const INSTALL_HINT: &str = "install them with `apt-get install postgresql` (Debian/Ubuntu), \
     or set PG_BIN_DIR to a directory holding initdb, pg_ctl and postgres";

/// Finds the directory holding the PostgreSQL server binaries.
///
/// Order: the `PG_BIN_DIR` environment variable if set and non-empty (it must
/// then hold `initdb`, `pg_ctl` and `postgres`); else the directory of the
/// first `pg_ctl` on `PATH` if it holds all three (for a symlinked `pg_ctl`,
/// as in `/usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin/pg_ctl`, the
/// directory it links to is preferred, as it also holds psql and pgbench);
/// else the highest version `/usr/lib/postgresql/<version>/bin` holding all
/// three.
///
/// # Errors
/// [`ClusterError::BinariesNotFound`] naming each place looked at, what it
/// lacked, and how to install the binaries.
pub fn find_pg_bin_dir() -> Result<PathBuf, ClusterError> {
    find_in(
        std::env::var_os("PG_BIN_DIR"),
        std::env::var_os("PATH"),
        Path::new(DEBIAN_LIB_ROOT),
    )
}

/// [`find_pg_bin_dir`] with its inputs explicit (for tests).
pub(crate) fn find_in(
    pg_bin_dir: Option<OsString>,
    path: Option<OsString>,
    lib_root: &Path,
) -> Result<PathBuf, ClusterError> {
    if let Some(dir) = pg_bin_dir.filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        let missing = missing_in(&dir);
        if missing.is_empty() {
            return Ok(dir);
        }
        return Err(ClusterError::BinariesNotFound(format!(
            "PG_BIN_DIR={} lacks {}; {INSTALL_HINT}",
            dir.display(),
            missing.join(", ")
        )));
    }

    let mut notes = vec!["PG_BIN_DIR is not set".to_string()];

    match path.as_ref().and_then(|p| first_on_path(p, "pg_ctl")) {
        Some(pg_ctl) => {
            // A symlinked pg_ctl (e.g. /usr/local/bin/pg_ctl ->
            // /usr/lib/postgresql/15/bin/pg_ctl) is followed first: the real
            // directory also holds psql, pgbench, ...
            let real_dir = std::fs::canonicalize(&pg_ctl)
                .ok()
                .and_then(|real| real.parent().map(Path::to_path_buf));
            let dir = pg_ctl.parent().map(Path::to_path_buf).unwrap_or_default();
            for candidate in real_dir.iter().chain([&dir]) {
                if missing_in(candidate).is_empty() {
                    return Ok(candidate.clone());
                }
            }
            notes.push(format!(
                "pg_ctl is on PATH at {} but {} lacks {}",
                pg_ctl.display(),
                dir.display(),
                missing_in(&dir).join(", ")
            ));
        }
        None => notes.push("pg_ctl is not on PATH".to_string()),
    }

    match highest_versioned(lib_root) {
        Some(dir) => return Ok(dir),
        None => notes.push(format!(
            "no {}/<version>/bin holds {}",
            lib_root.display(),
            REQUIRED.join(", ")
        )),
    }

    Err(ClusterError::BinariesNotFound(format!(
        "{}; {INSTALL_HINT}",
        notes.join("; ")
    )))
}

/// The required programs that `dir` lacks (empty if it has them all).
fn missing_in(dir: &Path) -> Vec<&'static str> {
    REQUIRED
        .iter()
        .copied()
        .filter(|name| !is_executable(&dir.join(name)))
        .collect()
}

/// True if `path` is (or links to) a regular file with an execute bit.
fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The first executable `name` in the `PATH`-style list `path`.
fn first_on_path(path: &OsString, name: &str) -> Option<PathBuf> {
    std::env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// The `<lib_root>/<version>/bin` with the highest version that holds all
/// required programs. Versions compare numerically by dot-separated parts
/// ("9.6" < "10" < "15"); non-numeric directory names are skipped.
fn highest_versioned(lib_root: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(lib_root).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = parse_version(entry.file_name().to_str()?)?;
            let bin = entry.path().join("bin");
            missing_in(&bin).is_empty().then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// `"15"` -> `[15]`, `"9.6"` -> `[9, 6]`; `None` if any part is not a number.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// Creates `dir` holding executable stubs named `names`.
    fn fake_bin(dir: &Path, names: &[&str]) {
        fs::create_dir_all(dir).unwrap();
        for name in names {
            let p = dir.join(name);
            fs::write(&p, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn env_var_wins_and_reports_missing() {
        let t = tempfile::tempdir().unwrap();
        let good = t.path().join("good");
        fake_bin(&good, &REQUIRED);
        assert_eq!(
            find_in(Some(good.clone().into()), None, t.path()).unwrap(),
            good
        );

        let bad = t.path().join("bad");
        fake_bin(&bad, &["pg_ctl"]);
        let err = find_in(Some(bad.into()), None, t.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("initdb, postgres"), "{err}");
        assert!(err.contains("apt-get install postgresql"), "{err}");
    }

    #[test]
    fn path_then_symlink_then_highest_version() {
        let t = tempfile::tempdir().unwrap();
        let lib = t.path().join("lib");
        fake_bin(&lib.join("9.6/bin"), &REQUIRED);
        fake_bin(&lib.join("15/bin"), &REQUIRED);
        fake_bin(&lib.join("16/bin"), &["pg_ctl"]); // incomplete: skipped
        fake_bin(&lib.join("notaversion/bin"), &REQUIRED);

        // Nothing on PATH: highest complete version.
        let empty = t.path().join("empty");
        fs::create_dir_all(&empty).unwrap();
        assert_eq!(
            find_in(None, Some(empty.clone().into()), &lib).unwrap(),
            lib.join("15/bin")
        );

        // Complete dir on PATH wins.
        let onpath = t.path().join("onpath");
        fake_bin(&onpath, &REQUIRED);
        let path = std::env::join_paths([empty.clone(), onpath.clone()]).unwrap();
        assert_eq!(find_in(None, Some(path), &lib).unwrap(), onpath);

        // A symlinked pg_ctl alone on PATH resolves to its real dir.
        let links = t.path().join("links");
        fs::create_dir_all(&links).unwrap();
        std::os::unix::fs::symlink(lib.join("9.6/bin/pg_ctl"), links.join("pg_ctl")).unwrap();
        let found = find_in(None, Some(links.into()), &lib).unwrap();
        assert_eq!(found, fs::canonicalize(lib.join("9.6/bin")).unwrap());
    }

    #[test]
    fn nothing_found_names_everything() {
        let t = tempfile::tempdir().unwrap();
        let err = find_in(None, Some(t.path().into()), &t.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("PG_BIN_DIR is not set"), "{err}");
        assert!(err.contains("pg_ctl is not on PATH"), "{err}");
        assert!(err.contains("apt-get install postgresql"), "{err}");
    }
}
