//! Running external tools (qemu-img, qemu) with a deadline.
//!
//! Every child gets its output captured into temporary files (no pipe can
//! fill up and block it) and is killed if it outlives its deadline, so no
//! caller ever waits without bound.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tracing::debug;

use crate::error::CommandError;

/// How often a running child is polled.
const POLL: Duration = Duration::from_millis(10);

/// The captured result of a successful run.
#[derive(Debug)]
pub struct Output {
    /// What the tool printed on stdout.
    pub stdout: String,
}

fn program_name(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

/// Runs `cmd` to completion, killing it after `timeout`. A non-zero exit is an error.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output, CommandError> {
    let program = program_name(cmd);
    let io = |source| CommandError::Io { program: program.clone(), source };
    let mut out = tempfile::tempfile().map_err(io)?;
    let mut err = tempfile::tempfile().map_err(io)?;
    cmd.stdin(Stdio::null()).stdout(out.try_clone().map_err(io)?).stderr(err.try_clone().map_err(io)?);
    debug!(?cmd, "running");
    let mut child = die_with_parent(cmd).spawn().map_err(|source| CommandError::spawn(&program, source))?;
    let status = match wait_bounded(&mut child, timeout).map_err(io)? {
        Some(status) => status,
        None => return Err(CommandError::Timeout { program, timeout }),
    };
    let read_all = |f: &mut fs::File| -> std::io::Result<String> {
        let mut s = String::new();
        f.seek(SeekFrom::Start(0))?;
        f.read_to_string(&mut s)?;
        Ok(s)
    };
    let stdout = read_all(&mut out).map_err(io)?;
    if !status.success() {
        let stderr = read_all(&mut err).unwrap_or_default();
        let tail: String = stderr.trim().chars().rev().take(800).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(CommandError::Failed { program, status: status.to_string(), stderr: tail });
    }
    Ok(Output { stdout })
}

/// Waits for `child` at most `timeout`; on expiry kills and reaps it and returns `None`.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> std::io::Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            kill_and_reap(child);
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

/// Makes the child of `cmd` die with the thread that spawns it, so a
/// killed agent leaves no probe guest or qemu-img behind. The spawning
/// thread must wait for the child (every caller here does).
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Kills `child` and waits for it (SIGKILL cannot be ignored, so this is bounded).
pub fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_stdout_and_reports_failures() {
        let out = run(Command::new("sh").args(["-c", "echo hi"]), Duration::from_secs(5)).unwrap();
        assert_eq!(out.stdout.trim(), "hi");
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"]), Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
    }

    #[test]
    fn kills_a_child_past_its_deadline() {
        let start = Instant::now();
        let err = run(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, CommandError::Timeout { .. }));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_missing_tool_names_its_package() {
        let err = run(&mut Command::new("/nonexistent/qemu-img"), Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, CommandError::Missing { package: "qemu-utils", .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "/nonexistent/qemu-img is not installed on this host (install the Debian package qemu-utils)"
        );
    }
}
