//! Which OS user runs the PostgreSQL programs.
//!
//! PostgreSQL refuses to run as root. When we are root, `initdb`, `pg_ctl`
//! and `postgres` run as the `postgres` system user (or `pgrouter`, created
//! with `useradd` when neither exists); otherwise as ourselves.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use nix::unistd::{Gid, Uid, User};

use super::error::ClusterError;

/// Existing users we are happy to run PostgreSQL as, in order of preference.
const CANDIDATES: [&str; 2] = ["postgres", FALLBACK_USER];

/// The unprivileged system user created when no candidate exists.
const FALLBACK_USER: &str = "pgrouter";

/// Serialises `useradd` calls within this process.
static CREATE_LOCK: Mutex<()> = Mutex::new(());

/// The OS identity to run PostgreSQL programs as.
#[derive(Debug, Clone)]
pub(crate) struct RunAs {
    /// `Some` when we are root and must switch to this uid/gid.
    switch_to: Option<(Uid, Gid)>,
    /// The user's name (for messages).
    name: String,
}

impl RunAs {
    /// Picks the user: ourselves when not root; else `postgres`, else
    /// `pgrouter` (created with `useradd --system` if needed).
    ///
    /// # Errors
    /// [`ClusterError::NoServiceUser`] when we are root and no user exists or
    /// can be created.
    pub(crate) fn resolve() -> Result<RunAs, ClusterError> {
        if !Uid::effective().is_root() {
            let name = User::from_uid(Uid::effective())
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| Uid::effective().to_string());
            return Ok(RunAs {
                switch_to: None,
                name,
            });
        }
        if let Some(user) = find_candidate() {
            return Ok(Self::from_user(user));
        }
        let _guard = CREATE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(user) = find_candidate() {
            return Ok(Self::from_user(user));
        }
        tracing::info!("creating system user {FALLBACK_USER} to run PostgreSQL as");
        let created = Command::new("useradd")
            .args(["--system", "--no-create-home", "--user-group"])
            .args(["--shell", "/usr/sbin/nologin", FALLBACK_USER])
            .stdin(Stdio::null())
            .output();
        // Look up again whatever useradd said: another process may have won.
        if let Some(user) = find_candidate() {
            return Ok(Self::from_user(user));
        }
        let why = match created {
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Err(e) => format!("could not run useradd: {e}"),
        };
        Err(ClusterError::NoServiceUser(format!(
            "running as root, no `postgres` or `{FALLBACK_USER}` user exists, and \
             `useradd --system {FALLBACK_USER}` failed: {why}; create an unprivileged \
             user named postgres, or run as a non-root user"
        )))
    }

    fn from_user(user: User) -> RunAs {
        RunAs {
            switch_to: Some((user.uid, user.gid)),
            name: user.name,
        }
    }

    /// The user's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// A command for `program` that runs as this user, with stdin closed, the
    /// `C` locale (English, parseable messages) and no libpq/PG environment
    /// that could redirect it (`PGDATA`, `PGPORT`, ...).
    pub(crate) fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.stdin(Stdio::null()).env("LC_ALL", "C").env("LANG", "C");
        for var in [
            "PGDATA",
            "PGPORT",
            "PGHOST",
            "PGUSER",
            "PGDATABASE",
            "PGOPTIONS",
        ] {
            cmd.env_remove(var);
        }
        if let Some((uid, gid)) = self.switch_to {
            // std drops supplementary groups when switching away from root.
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        cmd
    }

    /// Gives `path` to this user (no-op when not switching users).
    ///
    /// # Errors
    /// [`ClusterError::Io`] if `chown` fails.
    pub(crate) fn chown(&self, path: &Path) -> Result<(), ClusterError> {
        if let Some((uid, gid)) = self.switch_to {
            std::os::unix::fs::chown(path, Some(uid.as_raw()), Some(gid.as_raw())).map_err(
                |e| ClusterError::io(format!("chown {} to {}", path.display(), self.name), e),
            )?;
        }
        Ok(())
    }

    /// The first directory among `dir` and its ancestors that this user may
    /// not enter (lacks the execute bit that applies to it), if any.
    pub(crate) fn untraversable(&self, dir: &Path) -> Option<std::path::PathBuf> {
        let (uid, gid) = self.switch_to?;
        dir.ancestors()
            .find(|d| {
                let Ok(meta) = std::fs::metadata(d) else {
                    return true;
                };
                let mode = meta.permissions().mode();
                let bit = if meta.uid() == uid.as_raw() {
                    0o100
                } else if meta.gid() == gid.as_raw() {
                    0o010
                } else {
                    0o001
                };
                mode & bit == 0
            })
            .map(Path::to_path_buf)
    }
}

fn find_candidate() -> Option<User> {
    CANDIDATES
        .iter()
        .find_map(|name| User::from_name(name).ok().flatten())
        .filter(|u| !u.uid.is_root())
}
