//! Running external tools and inspecting a postmaster process.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::error::ClusterError;

/// Runs `cmd` to completion, capturing its output.
///
/// # Errors
/// [`ClusterError::Io`] if it cannot be spawned, [`ClusterError::CommandFailed`]
/// (with its stdout and stderr) if it exits unsuccessfully.
pub(crate) fn run(cmd: &mut Command) -> Result<Output, ClusterError> {
    let line = describe(cmd);
    tracing::debug!("running {line}");
    let out = cmd
        .output()
        .map_err(|e| ClusterError::io(format!("running {line}"), e))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(ClusterError::CommandFailed {
            command: line,
            status: out.status.to_string(),
            output: combined_output(&out),
        })
    }
}

/// stdout then stderr, lossily decoded and trimmed.
pub(crate) fn combined_output(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(err.trim());
    }
    text
}

/// The command line of `cmd`, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// The pid of the postmaster serving `data_dir`, if one is running: the pid
/// in `<data_dir>/postmaster.pid` names a live, non-zombie process whose
/// working directory is `data_dir` (checked when readable), so a stale pid
/// file or a recycled pid does not count.
pub(crate) fn running_postmaster(data_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    if pid <= 0 || !pid_alive(pid) {
        return None;
    }
    match std::fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(cwd) => same_dir(&cwd, data_dir).then_some(pid),
        Err(_) => Some(pid),
    }
}

/// True if `pid` exists and is not a zombie.
pub(crate) fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Format: "pid (comm) S ..."; comm may contain spaces and parens.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    a == b
        || match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
}

/// SIGKILLs the process group led by `pid` (a postmaster leads its own group:
/// pg_ctl starts it with `setsid`, and its children stay in that group).
pub(crate) fn kill_group(pid: i32) -> Result<(), nix::Error> {
    match killpg(Pid::from_raw(pid), Signal::SIGKILL) {
        Err(nix::Error::ESRCH) => Ok(()),
        other => other,
    }
}

/// Polls `done` every 20 ms until it is true or `timeout` passes; returns its
/// last value.
pub(crate) fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True if any process other than a zombie belongs to process group `pgid`.
pub(crate) fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // Fields after "(comm)": state ppid pgrp ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|s| s.parse::<i32>().ok());
        pgrp == Some(pgid) && state != Some("Z") && state != Some("X")
    })
}
