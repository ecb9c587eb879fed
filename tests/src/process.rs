//! A daemon the rig runs as a child process: its output goes to a log file, every wait on it is
//! bounded, and it never outlives the test that started it.

use std::{
    fmt,
    fs::{self, File},
    io,
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

/// How long a daemon gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How often readiness and exit are polled.
const POLL: Duration = Duration::from_millis(50);

/// How many log lines a startup failure quotes.
const TAIL_LINES: usize = 40;

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped, and killed by the kernel
/// if the thread that spawned it dies first.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

/// A daemon that did not become ready; the message quotes the end of its log.
#[derive(Debug)]
pub struct StartError {
    pub daemon: String,
    pub reason: String,
    pub log: PathBuf,
    pub log_tail: String,
}

// === impl Daemon ===

impl Daemon {
    /// Spawns `command` with stdin closed and stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> io::Result<Daemon> {
        let out = File::options().create(true).append(true).open(log)?;
        command.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent. The death
        // signal keeps a daemon from outliving a test process that was killed before its drops ran.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        Ok(Daemon {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id while the daemon has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status if the process has exited (it is reaped then), `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Sends `signal` (a `libc::SIG*` number) to the running process.
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| io::Error::other(format!("{} is not running", self.name)))?;
        send_signal(pid, signal)
    }

    /// Waits at most `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            } else {
                return None;
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    /// SIGTERM, then SIGKILL after [`STOP_GRACE`]. Returns the exit status, or `None` if the
    /// daemon had already been reaped.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let pid = self.pid()?;
        let _ = send_signal(pid, libc::SIGTERM);
        if let Some(status) = self.wait_exit(STOP_GRACE) {
            return Some(status);
        }
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// Replaces a stopped daemon's process with a new one started by `command`.
    pub fn respawn(&mut self, command: Command) -> io::Result<()> {
        self.stop();
        *self = Daemon::spawn(&self.name, command, &self.log)?;
        Ok(())
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the daemon wrote so far.
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Polls `probe` until it answers true, the process exits, or `timeout` passes.
    pub async fn wait_ready(
        &mut self,
        what: &str,
        timeout: Duration,
        mut probe: impl AsyncFnMut() -> bool,
    ) -> Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Err(self.start_error(format!("exited with {status} before {what}")));
            }
            if probe().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.start_error(format!("{what} did not happen within {timeout:?}")));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A startup failure of this daemon for `reason`, with its log tail.
    pub fn start_error(&self, reason: String) -> StartError {
        let tail = self.log_tail(TAIL_LINES);
        StartError {
            daemon: self.name.clone(),
            reason,
            log: self.log.clone(),
            log_tail: if tail.is_empty() {
                "(the log is empty)".to_owned()
            } else {
                tail
            },
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

// === impl StartError ===

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} did not start: {}\n--- last lines of {} ---\n{}",
            self.daemon,
            self.reason,
            self.log.display(),
            self.log_tail
        )
    }
}

impl std::error::Error for StartError {}

/// A TCP port on 127.0.0.1 that was free a moment ago. Another process may take it before the
/// daemon binds it, so callers retry on "address already in use".
pub fn free_local_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn send_signal(pid: u32, signal: i32) -> io::Result<()> {
    let pid = i32::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: kill(2) has no memory effects; the pid is our own unreaped child, so it cannot
    // have been recycled for another process.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `name` on PATH (or the path itself when it is absolute), for tests that need a system tool
/// scripts/setup.sh installs. In CI (`CI=true`) a missing tool fails the test; elsewhere the test
/// says what is missing, and the caller returns without checking anything.
pub fn required_tool(name: &str) -> Option<PathBuf> {
    let found = if name.starts_with('/') {
        Some(PathBuf::from(name)).filter(|p| p.is_file())
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
    };
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is not installed; scripts/setup.sh installs it"
        );
        eprintln!("SKIPPED: {name} is not installed (scripts/setup.sh installs it)");
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[tokio::test]
    async fn exit_before_ready_quotes_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut daemon = Daemon::spawn("failing", sh("echo boom; exit 3"), &dir.path().join("log")).unwrap();
        let err = daemon
            .wait_ready("ready", Duration::from_secs(5), async || false)
            .await
            .unwrap_err();
        assert!(err.reason.contains("exit status: 3"), "{err}");
        assert_eq!(err.log_tail, "boom");
        assert!(
            err.to_string()
                .starts_with("failing did not start: exited with exit status: 3"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn wait_ready_is_bounded_and_stop_terminates() {
        let dir = tempfile::tempdir().unwrap();
        let mut daemon = Daemon::spawn("sleeper", sh("exec sleep 60"), &dir.path().join("log")).unwrap();
        let started = Instant::now();
        let err = daemon
            .wait_ready("ready", Duration::from_millis(200), async || false)
            .await
            .unwrap_err();
        assert!(err.reason.contains("did not happen within"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        let status = daemon.stop().expect("was running");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM)
        );
        assert!(daemon.stop().is_none(), "already reaped");
    }

    #[test]
    fn a_daemon_dies_with_the_thread_that_spawned_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let pid = thread::spawn(move || {
            let daemon = Daemon::spawn("orphan", sh("exec sleep 60"), &log).unwrap();
            let pid = daemon.pid().unwrap();
            // Skip Drop, as if the test process died before its destructors ran.
            std::mem::forget(daemon);
            pid
        })
        .join()
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let dead = loop {
            // A killed, unreaped child is a zombie: state `Z` in /proc/PID/stat.
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.rsplit(") ").next().is_some_and(|rest| rest.starts_with('Z')) {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            thread::sleep(POLL);
        };
        assert!(dead, "the child of an exited thread must get SIGKILL");
    }
}
