//! [`LocalCluster`]: N shard instances plus a catalog instance, started in
//! parallel and always torn down.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::bin_dir::find_pg_bin_dir;
use super::conf;
use super::data_dir::{self, Prepared};
use super::error::ClusterError;
use super::instance::{PgInstance, StopMode};
use super::options::ClusterOptions;
use super::os_user::RunAs;
use super::ports;
use super::process;
use super::reap;
use super::template::Template;
use super::tmp_base::temp_base;

/// Local PostgreSQL servers for development and tests: `shards` plus one
/// `catalog`, each on its own free 127.0.0.1 port.
///
/// Dropping it stops every instance and removes a temporary data root, also
/// while unwinding from a panic. Blocking; from async code call
/// [`LocalCluster::start`] and drop it inside `spawn_blocking` (or accept
/// that the drop blocks the current thread for ~0.2 s).
#[derive(Debug)]
pub struct LocalCluster {
    /// Shard instances, "shard0".."shard{N-1}", in order.
    pub shards: Vec<PgInstance>,
    /// The catalog instance ("catalog").
    pub catalog: PgInstance,
    bin_dir: PathBuf,
    data_root: PathBuf,
    /// Set when the data root is ours to delete.
    temp_root: Option<TempDir>,
}

impl LocalCluster {
    /// Starts `opts.shards + opts.spare_shards` shard instances and one
    /// catalog instance in
    /// parallel and waits until all accept connections.
    ///
    /// Data dirs are `<root>/shard0`, ..., `<root>/catalog`, where `<root>`
    /// is `opts.data_dir` or a fresh temp dir. Missing clusters are created
    /// (initdb, C locale, UTF8, trust auth, superuser `postgres`); existing
    /// ones are reused. Every start picks new free ports. If any instance
    /// fails, the others are stopped (and a temp root removed) before the
    /// error is returned.
    ///
    /// # Errors
    /// [`ClusterError::BinariesNotFound`], [`ClusterError::NoServiceUser`],
    /// [`ClusterError::InvalidOption`] (bad extra setting, unusable data dir),
    /// [`ClusterError::Io`], [`ClusterError::CommandFailed`] (initdb), or
    /// [`ClusterError::StartFailed`] with the tail of the instance's log.
    pub fn start(opts: &ClusterOptions) -> Result<LocalCluster, ClusterError> {
        let began = Instant::now();
        conf::validate_extra(&opts.extra_settings)?;
        let bin_dir = find_pg_bin_dir()?;
        let run_as = RunAs::resolve()?;
        let base = temp_base(&run_as)?;
        let (data_root, temp_root) = match &opts.data_dir {
            Some(dir) => (user_root(dir, &run_as)?, None),
            None => {
                reap::reap_stale(&base);
                let temp = temp_root(&base)?;
                let path = canonical(temp.path())?;
                (path, Some(temp))
            }
        };

        let names = (0..opts.shards + opts.spare_shards)
            .map(|i| format!("shard{i}"))
            .chain(["catalog".to_string()]);
        let instances = names
            .map(|name| PgInstance::new(&name, data_root.join(&name), &bin_dir, &run_as))
            .collect::<Result<Vec<_>, _>>()?;

        let template = if instances
            .iter()
            .any(|i| !i.data_dir.join("PG_VERSION").exists())
        {
            Template::ensure(&bin_dir, &run_as, &base).unwrap_or_else(|e| {
                tracing::warn!("no initdb template ({e}); running initdb per instance");
                None
            })
        } else {
            None
        };

        let results = parallel_map(instances, |mut inst| {
            let started = data_dir::prepare(&inst.data_dir, &bin_dir, &run_as, template.as_ref())
                .and_then(|how| {
                    if how == Prepared::Reused {
                        tracing::info!(
                            "{}: reusing cluster in {}",
                            inst.name,
                            inst.data_dir.display()
                        );
                    }
                    inst.start_on_free_port(
                        opts.durable,
                        &opts.extra_settings,
                        &mut ports::pick_free_port,
                    )
                });
            (inst, started)
        });

        let mut instances = Vec::new();
        let mut first_error = None;
        for result in results {
            match result {
                Some((inst, Ok(()))) => instances.push(inst),
                // A failed start cleans up after itself; a server it found
                // already running on the data dir is not ours to stop.
                Some((_, Err(e))) => {
                    first_error.get_or_insert(e);
                }
                None => {
                    first_error.get_or_insert(ClusterError::Internal(
                        "an instance start thread panicked".into(),
                    ));
                }
            }
        }
        if let Some(err) = first_error {
            stop_all(&mut instances);
            if let Some(temp) = temp_root {
                // Everything in a temp root is ours: leave nothing behind.
                kill_leftovers(temp.path());
                drop(temp); // removes the temp data root
            }
            return Err(err);
        }
        let Some(catalog) = instances.pop() else {
            return Err(ClusterError::Internal("no catalog instance".into()));
        };
        tracing::info!(
            "local cluster ({} shards + catalog) up in {:.2?}, data in {}",
            instances.len(),
            began.elapsed(),
            data_root.display()
        );
        Ok(LocalCluster {
            shards: instances,
            catalog,
            bin_dir,
            data_root,
            temp_root,
        })
    }

    /// Stops every instance (fast mode, escalating to immediate and then
    /// SIGKILL; in parallel) and removes a temporary data root. Idempotent;
    /// [`Drop`] calls it. Instances of a user-given `data_dir` keep their data
    /// and can be started again.
    ///
    /// # Errors
    /// The first [`ClusterError::StopFailed`] or [`ClusterError::Io`] (temp
    /// dir removal); every instance is still attempted.
    pub fn stop(&mut self) -> Result<(), ClusterError> {
        let began = Instant::now();
        let all: Vec<&mut PgInstance> = self.shards.iter_mut().chain([&mut self.catalog]).collect();
        let results = parallel_map(all, |inst: &mut PgInstance| inst.stop(StopMode::Fast));
        let mut first_error = results.into_iter().find_map(|r| match r {
            Some(Ok(())) => None,
            Some(Err(e)) => Some(e),
            None => Some(ClusterError::Internal(
                "an instance stop thread panicked".into(),
            )),
        });
        if let Some(temp) = self.temp_root.take() {
            let path = temp.path().to_path_buf();
            if let Err(e) = temp.close() {
                first_error
                    .get_or_insert(ClusterError::io(format!("removing {}", path.display()), e));
            }
        }
        tracing::debug!("local cluster stopped in {:.2?}", began.elapsed());
        first_error.map_or(Ok(()), Err)
    }

    /// Path of the PostgreSQL program `name` (e.g. "pgbench", "psql") in the
    /// bin dir this cluster runs from. Not checked for existence.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// The directory holding the per-instance data dirs.
    pub fn data_root(&self) -> &Path {
        &self.data_root
    }

    /// All instances: the shards in order, then the catalog.
    pub fn instances(&self) -> impl Iterator<Item = &PgInstance> {
        self.shards.iter().chain(std::iter::once(&self.catalog))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!(
                "stopping local cluster in {}: {e}",
                self.data_root.display()
            );
        }
    }
}

/// SIGKILLs any server still running in a subdirectory of `root`.
fn kill_leftovers(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        if let Some(pid) = process::running_postmaster(&entry.path()) {
            let _ = process::kill_group(pid);
            process::wait_until(Duration::from_secs(5), || !process::group_alive(pid));
        }
    }
}

/// Best-effort stop of instances after a failed start.
fn stop_all(instances: &mut [PgInstance]) {
    for inst in instances {
        if let Err(e) = inst.stop(StopMode::Immediate) {
            tracing::error!("{e}");
        }
    }
}

/// A fresh temp root, mode 0755 so the PostgreSQL user can enter it.
fn temp_root(base: &Path) -> Result<TempDir, ClusterError> {
    let dir = tempfile::Builder::new()
        .prefix(&reap::own_prefix())
        .tempdir_in(base)
        .map_err(|e| ClusterError::io(format!("creating a temp dir in {}", base.display()), e))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| ClusterError::io(format!("chmod 0755 {}", dir.path().display()), e))?;
    Ok(dir)
}

/// Creates (mode 0755) or checks a user-given data root.
fn user_root(dir: &Path, run_as: &RunAs) -> Result<PathBuf, ClusterError> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| ClusterError::io(format!("creating {}", dir.display()), e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| ClusterError::io(format!("chmod 0755 {}", dir.display()), e))?;
    }
    let root = canonical(dir)?;
    if let Some(bad) = run_as.untraversable(&root) {
        return Err(ClusterError::InvalidOption(format!(
            "user {} cannot enter {}, so PostgreSQL cannot use data dir {}; `chmod o+x` it or choose another",
            run_as.name(),
            bad.display(),
            root.display()
        )));
    }
    Ok(root)
}

fn canonical(path: &Path) -> Result<PathBuf, ClusterError> {
    std::fs::canonicalize(path)
        .map_err(|e| ClusterError::io(format!("resolving {}", path.display()), e))
}

/// Applies `f` to every item on up to max(4, 2 × cores) threads (the calling
/// thread included) and returns the results in order; `None` for an item
/// whose thread panicked.
fn parallel_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<Option<R>> {
    let n = items.len();
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
    let workers = n.min((2 * cores).max(4));
    let queue = Mutex::new(items.into_iter().enumerate());
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..n).map(|_| None).collect());
    let work = || loop {
        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
        let Some((i, item)) = next else { break };
        let r = f(item);
        if let Some(slot) = results.lock().unwrap_or_else(|e| e.into_inner()).get_mut(i) {
            *slot = Some(r);
        }
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..workers)
            .filter_map(|k| {
                std::thread::Builder::new()
                    .name(format!("pg-cluster-{k}"))
                    .spawn_scoped(s, work)
                    .ok()
            })
            .collect();
        work();
        for h in handles {
            let _ = h.join();
        }
    });
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}
