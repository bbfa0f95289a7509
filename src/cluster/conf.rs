//! The server settings we add to an instance's `postgresql.conf`.
//!
//! They live in `<data_dir>/pg_router.conf`, rewritten on each
//! [`LocalCluster::start`](super::LocalCluster::start) (the port changes), and
//! pulled in by one `include` line appended to `postgresql.conf`. Later lines
//! win, so `extra_settings` override ours.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::error::ClusterError;
use super::os_user::RunAs;

/// Name of the settings file inside the data dir.
pub(crate) const INCLUDE_FILE: &str = "pg_router.conf";

/// The line appended to `postgresql.conf` (path relative to its directory).
const INCLUDE_LINE: &str = "include 'pg_router.conf'";

/// Renders the settings file for an instance listening on 127.0.0.1:`port`
/// with its unix socket in `socket_dir`.
///
/// # Errors
/// [`ClusterError::InvalidOption`] for an unusable extra setting (see
/// [`validate_extra`]) or a non-UTF-8 socket directory.
pub(crate) fn render(
    port: u16,
    socket_dir: &Path,
    durable: bool,
    extra: &[(String, String)],
) -> Result<String, ClusterError> {
    validate_extra(extra)?;
    let socket_dir = socket_dir.to_str().ok_or_else(|| {
        ClusterError::InvalidOption(format!("data dir {} is not UTF-8", socket_dir.display()))
    })?;
    let on_off = if durable { "on" } else { "off" };
    let port = port.to_string();
    let ours: [(&str, &str); 14] = [
        ("listen_addresses", "127.0.0.1"),
        ("port", &port),
        ("unix_socket_directories", socket_dir),
        ("max_connections", "300"),
        ("max_prepared_transactions", "150"),
        ("wal_level", "logical"),
        ("max_wal_senders", "10"),
        ("max_replication_slots", "10"),
        ("shared_buffers", "128MB"),
        ("logging_collector", "off"),
        ("fsync", on_off),
        ("synchronous_commit", on_off),
        ("full_page_writes", on_off),
        ("log_line_prefix", "%m [%p] %q%u@%d "),
    ];
    let mut text =
        String::from("# Written by pg-router's local cluster; rewritten on each start.\n");
    let extra = extra.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    for (key, value) in ours.into_iter().chain(extra) {
        text.push_str(&format!("{key} = '{}'\n", quote(value)));
    }
    Ok(text)
}

/// Checks that each extra setting name looks like a GUC name
/// (`[A-Za-z_][A-Za-z0-9_.]*`) and each value is on one line.
///
/// # Errors
/// [`ClusterError::InvalidOption`] naming the bad setting.
pub(crate) fn validate_extra(extra: &[(String, String)]) -> Result<(), ClusterError> {
    for (key, value) in extra {
        let mut chars = key.chars();
        let name_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !name_ok {
            return Err(ClusterError::InvalidOption(format!(
                "bad setting name {key:?}"
            )));
        }
        if value.contains(['\n', '\r', '\0']) {
            return Err(ClusterError::InvalidOption(format!(
                "value of setting {key} contains a line break or NUL"
            )));
        }
    }
    Ok(())
}

/// Escapes a value for a single-quoted postgresql.conf string.
fn quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "''")
}

/// Writes `text` to `<data_dir>/pg_router.conf` (owned by `run_as`, mode
/// 0600) and makes sure `postgresql.conf` includes it.
///
/// # Errors
/// [`ClusterError::Io`] on any filesystem failure.
pub(crate) fn install(data_dir: &Path, run_as: &RunAs, text: &str) -> Result<(), ClusterError> {
    let path = data_dir.join(INCLUDE_FILE);
    std::fs::write(&path, text)
        .map_err(|e| ClusterError::io(format!("writing {}", path.display()), e))?;
    run_as.chown(&path)?;

    let main = data_dir.join("postgresql.conf");
    let current = std::fs::read_to_string(&main)
        .map_err(|e| ClusterError::io(format!("reading {}", main.display()), e))?;
    if !current.lines().any(|l| l.trim() == INCLUDE_LINE) {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .mode(0o600)
            .open(&main)
            .map_err(|e| ClusterError::io(format!("opening {}", main.display()), e))?;
        writeln!(file, "\n# pg-router local cluster settings\n{INCLUDE_LINE}")
            .map_err(|e| ClusterError::io(format!("appending to {}", main.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_extra_settings_come_last() {
        let extra = vec![("work_mem".to_string(), "it's".to_string())];
        let text = render(5433, Path::new("/tmp/x"), false, &extra).unwrap();
        assert!(text.contains("port = '5433'\n"));
        assert!(text.contains("unix_socket_directories = '/tmp/x'\n"));
        assert!(text.contains("max_prepared_transactions = '150'\n"));
        assert!(text.contains("fsync = 'off'\n"));
        assert!(text.trim_end().ends_with("work_mem = 'it''s'"));
        let durable = render(1, Path::new("/d"), true, &[]).unwrap();
        assert!(durable.contains("synchronous_commit = 'on'\n"));
    }

    #[test]
    fn rejects_bad_settings() {
        for (k, v) in [
            ("bad name", "1"),
            ("", "1"),
            ("1x", "1"),
            ("ok", "a\nport = 1"),
        ] {
            let err = validate_extra(&[(k.to_string(), v.to_string())]);
            assert!(
                matches!(err, Err(ClusterError::InvalidOption(_))),
                "{k:?}={v:?}"
            );
        }
        assert!(validate_extra(&[("auto_explain.log_min_duration".into(), "0".into())]).is_ok());
    }
}
