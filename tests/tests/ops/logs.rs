//! `--log-file` on the services: the log goes to the file, and SIGHUP (what
//! logrotate's `postrotate` sends) makes the service reopen it by path
//! after the old one was moved away, without stopping the service.

use std::process::{Command, Stdio};
use std::time::Duration;
use tests::procs::{bin_dir, ProcFederation};
use tests::with_timeout;

/// Wait (bounded) until `path` holds `needle`: the file is read again on
/// every write in its directory (an inotify event), never on a timer.
async fn wait_for(path: &std::path::Path, needle: &str, bound: Duration) {
    let (path, want) = (path.to_path_buf(), needle.to_string());
    let dir = path.parent().expect("a log directory").to_path_buf();
    let held = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            tests::wait_inotify(&dir, libc::IN_MODIFY | libc::IN_CREATE | libc::IN_MOVED_TO, bound, || {
                std::fs::read_to_string(&path).unwrap_or_default().contains(want.as_str())
            })
        }
    })
    .await
    .expect("log wait task");
    assert!(held, "{} did not get {needle:?} within {bound:?}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_file_is_reopened_on_sighup() {
    with_timeout(120, async {
        let fed = ProcFederation::up(1).await;
        // Run the meta server ourselves, logging to a file.
        fed.kill("meta");
        let log = fed.dir().join("meta-own.log");
        let mut meta = Command::new(bin_dir().join("renkei-meta"))
            .args(["--config", &fed.dir().join("meta.toml").to_string_lossy(), "--log-file", &log.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start renkei-meta");
        wait_for(&log, "meta server serving", Duration::from_secs(30)).await;

        // logrotate moves the file away, then signals.
        let rotated = fed.dir().join("meta-own.log.1");
        std::fs::rename(&log, &rotated).unwrap();
        // SAFETY: signalling the process this test started.
        unsafe { libc::kill(meta.id() as i32, libc::SIGHUP) };
        wait_for(&log, "log file reopened", Duration::from_secs(10)).await;
        assert!(meta.try_wait().unwrap().is_none(), "SIGHUP did not stop the meta server");
        // It keeps serving, logging to the new file only.
        fed.renkei_ok(None, &["user", "add", "logged"]);
        wait_for(&log, "user added", Duration::from_secs(10)).await;
        assert!(!std::fs::read_to_string(&rotated).unwrap().contains("user added"));

        // SAFETY: as above.
        unsafe { libc::kill(meta.id() as i32, libc::SIGKILL) };
        meta.wait().unwrap();
    })
    .await
}
