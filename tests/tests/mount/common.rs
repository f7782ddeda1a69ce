//! Shared by the mount tests: the gate, a federation of real processes with
//! mounts served in this process (so tests can read the request counters),
//! and running commands against a mount.

use fs_client::mount::{self, MountOptions};
use fs_client::ClientConfig;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;
use tests::procs::ProcFederation;

/// Whether FUSE tests run here: `RENKEI_TEST_FUSE=1`. When they cannot run
/// (the flag is missing, no /dev/fuse, no fusermount3), that is a failure
/// under `RENKEI_TEST_STRICT=1` and a printed skip otherwise.
pub fn enabled(test: &str) -> bool {
    if std::env::var("RENKEI_TEST_FUSE").as_deref() != Ok("1") {
        let why = "set RENKEI_TEST_FUSE=1 to run FUSE mount tests (needs root, /dev/fuse, fuse3)";
        assert!(!strict(), "{test} cannot run: {why} (RENKEI_TEST_STRICT=1)");
        eprintln!("skipping {test}: {why}");
        return false;
    }
    let missing = if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse is missing")
    } else if !tool("fusermount3") {
        Some("fusermount3 is not installed (Debian package fuse3)")
    } else {
        None
    };
    match missing {
        None => true,
        Some(why) if strict() => panic!("{test}: {why} (RENKEI_TEST_STRICT=1)"),
        Some(why) => {
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

pub use tests::strict;

/// Whether a program is on PATH.
pub fn tool(name: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().is_ok_and(|o| o.status.success())
}

/// A mount served by this process.
pub struct TestMount {
    /// The mount point.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
    /// Requests sent by this mount.
    pub counters: Arc<fs_client::counters::Counters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestMount {
    /// Mount `remote` of the federation as its client at `site` with `-o opts`.
    pub async fn new(fed: &ProcFederation, site: Option<&str>, remote: &str, opts: &str) -> TestMount {
        let cfg = match site {
            Some(s) => fed.dir().join(format!("client-{s}.toml")),
            None => fed.state.client_config.clone(),
        };
        let config = ClientConfig::load(&cfg).expect("client config");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).expect("mount point");
        let mut o = MountOptions::new(remote.to_string(), path.clone());
        o.apply(opts).expect("options");
        o.spill_dir = dir.path().to_path_buf();
        let mounted = mount::mount(config, o).await.expect("mount");
        let counters = mounted.counters();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            if let Err(e) = mounted
                .serve(async {
                    let _ = rx.await;
                })
                .await
            {
                eprintln!("mount ended: {e}");
            }
        });
        TestMount { path, _dir: dir, counters, stop: Some(tx), task: Some(task) }
    }

    /// A path inside the mount.
    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p.trim_start_matches('/'))
    }

    /// Metadata requests sent so far.
    pub fn meta_requests(&self) -> u64 {
        self.counters.meta_requests()
    }

    /// Unmount and wait for the session to end.
    pub async fn unmount(mut self) {
        self.stop_now().await;
    }

    async fn stop_now(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let ended = tokio::time::timeout(Duration::from_secs(30), t).await;
            if ended.is_err() || in_mount_table(&self.path) {
                let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&self.path).output();
            }
            assert!(ended.is_ok(), "the mount did not end within 30 s of unmounting");
        }
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        if self.task.is_some() {
            // Not unmounted by the test (it panicked): do not leave a mount behind.
            let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&self.path).output();
        }
    }
}

/// Run blocking file system work off the runtime's threads (the mount's
/// operations run on them).
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// Run `bash -c script` in `dir` (bounded by `timeout`), asserting success.
pub async fn sh(dir: &Path, script: &str) -> String {
    let out = sh_out(dir, script).await;
    assert!(
        out.status.success(),
        "`{script}` failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `bash -c script` in `dir` (bounded), returning its output.
pub async fn sh_out(dir: &Path, script: &str) -> Output {
    let dir = dir.to_path_buf();
    let script = script.to_string();
    blocking(move || {
        Command::new("timeout")
            .arg("300")
            .arg("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(&dir)
            .output()
            .expect("run bash")
    })
    .await
}

/// Whether `path` is in the mount table.
pub fn in_mount_table(path: &Path) -> bool {
    let want = path.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Wait (at most `bound`) until `path` is in the mount table. The kernel
/// marks /proc/self/mountinfo with a priority event at every mount or
/// unmount, so this looks again at each change of the table, not on a timer.
pub fn wait_mounted(path: &Path, bound: Duration) {
    use std::os::fd::AsRawFd;
    // Opened before the first look, so a mount between the look and the
    // poll is still an event.
    let info = std::fs::File::open("/proc/self/mountinfo").expect("open /proc/self/mountinfo");
    let until = std::time::Instant::now() + bound;
    while !in_mount_table(path) {
        let left = until.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "{} not mounted within {bound:?}", path.display());
        let mut pfd = libc::pollfd { fd: info.as_raw_fd(), events: libc::POLLPRI, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        assert!(n >= 0 || std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted, "poll mountinfo");
    }
}

/// A mount served by a `renkei mount -f` child process (to kill -9), its
/// mount point `dir/mnt`, spill directory `dir/spill` and log
/// `dir/mount.log` (`RUST_LOG` from `MOUNT_LOG`, default warn).
pub struct ChildMount {
    pub child: std::process::Child,
    pub path: std::path::PathBuf,
}

impl ChildMount {
    /// Start it with client config `cfg`; returns once it is mounted.
    pub fn start(cfg: &Path, dir: &Path) -> ChildMount {
        let path = dir.join("mnt");
        let spill = dir.join("spill");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::create_dir_all(&spill).unwrap();
        let log = std::fs::File::create(dir.join("mount.log")).unwrap();
        let child = Command::new(tests::procs::bin_dir().join("renkei"))
            .env("RENKEI_CONFIG", cfg)
            .env("RUST_LOG", std::env::var("MOUNT_LOG").unwrap_or_else(|_| "warn".into()))
            .args(["mount", "-f", "-o"])
            .arg(format!("spill_dir={}", spill.display()))
            .arg("/")
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("renkei mount");
        wait_mounted(&path, Duration::from_secs(20));
        ChildMount { child, path }
    }

    /// SIGKILL the mount process and clear its dead mount point.
    pub fn kill9(&mut self) {
        // SAFETY: killing our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = Command::new(tests::procs::bin_dir().join("renkei")).arg("umount").arg(&self.path).output();
        let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&self.path).output();
    }
}

impl Drop for ChildMount {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill9();
        }
    }
}
