//! `/etc/fstab` through mount(8) (issue 17): a `renkei` line in an fstab
//! (`mount -T FILE`, so the machine's own is untouched), mount(8) running
//! `/sbin/mount.renkei` (a symlink to the built `renkei`, made and removed
//! by the test), a file written and read through the mount, `umount` and
//! the mount process gone; `mount -a` mounting the line once (a second
//! `mount -a` sees it mounted); a line whose configuration is missing
//! failing with a message that says so.

use crate::common::{blocking, enabled, in_mount_table, strict, tool};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;
use tests::procs::{bin_dir, ProcFederation};
use tests::with_timeout;

/// Where mount(8) looks for helpers (util-linux: /sbin, /sbin/fs.d, /sbin/fs).
const HELPER: &str = "/sbin/mount.renkei";

/// `/sbin/mount.renkei` -> the `renkei` under test, removed on drop.
struct Helper;

impl Helper {
    /// None (after a printed skip) when the place is taken by something
    /// this test did not put there (an installed renkei package).
    fn install() -> Option<Helper> {
        let path = Path::new(HELPER);
        if let Ok(target) = std::fs::read_link(path) {
            // A symlink into a build tree is a leftover of an interrupted run.
            let leftover =
                target.file_name().is_some_and(|n| n == "renkei") && target.to_string_lossy().contains("/target/");
            if !leftover {
                let why = format!("{HELPER} exists (-> {}); not replacing it", target.display());
                assert!(!strict(), "{why} (RENKEI_TEST_STRICT=1)");
                eprintln!("skipping the fstab test: {why}");
                return None;
            }
            std::fs::remove_file(path).expect("remove a leftover mount.renkei symlink");
        } else if path.exists() {
            let why = format!("{HELPER} is an installed program; not replacing it");
            assert!(!strict(), "{why} (RENKEI_TEST_STRICT=1)");
            eprintln!("skipping the fstab test: {why}");
            return None;
        }
        std::os::unix::fs::symlink(bin_dir().join("renkei"), path).expect("symlink /sbin/mount.renkei");
        Some(Helper)
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(HELPER);
    }
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new("timeout").arg("60").arg(cmd).args(args).output().unwrap_or_else(|e| panic!("run {cmd}: {e}"))
}

fn text(o: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn assert_ok(what: &str, o: &Output) -> String {
    assert!(o.status.success(), "{what} failed ({}):\n{}", o.status, text(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The mount process's pid from mount.renkei's `-v` line.
fn daemon_pid(out: &str) -> i32 {
    out.split("(process ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no `(process PID` in mount's output:\n{out}"))
}

/// This mount point's line of /proc/self/mountinfo: (type, source).
fn mount_entry(mp: &Path) -> Option<(String, String)> {
    let want = mp.to_string_lossy().to_string();
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        if f.get(4) != Some(&want.as_str()) {
            return None;
        }
        let sep = f.iter().position(|x| *x == "-")?;
        Some((f.get(sep + 1)?.to_string(), f.get(sep + 2)?.to_string()))
    })
}

/// `umount DIR`, then the mount process must end (bounded).
fn umount_and_wait(mnt: &Path, pid: i32) {
    assert_ok("umount", &run("umount", &[mnt.to_str().unwrap()]));
    assert!(!in_mount_table(mnt), "{} still mounted after umount", mnt.display());
    let gone = fs_client::local::wait_pid_gone(pid, Duration::from_secs(30)).expect("watch the mount process");
    assert!(gone, "the mount process {pid} did not exit within 30 s of umount");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fstab_line_mounts_with_mount_and_unmounts_with_umount() {
    if !enabled("fstab_line_mounts_with_mount_and_unmounts_with_umount") {
        return;
    }
    if !tool("mount") || !tool("umount") {
        assert!(!strict(), "mount(8) and umount(8) are needed (Debian package mount)");
        eprintln!("skipping: no mount(8)");
        return;
    }
    let Some(_helper) = Helper::install() else { return };
    with_timeout(240, async {
        let fed = ProcFederation::up(1).await;
        fed.renkei_ok(None, &["mkdir", "/fstab"]);
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        let spill = dir.path().join("spill");
        std::fs::create_dir_all(&mnt).unwrap();
        std::fs::create_dir_all(&spill).unwrap();
        let fstab = dir.path().join("fstab");
        let line = |cfg: &Path, opts: &str| {
            format!(
                "# a renkei line as an admin writes it\nrenkei:/fstab {} renkei _netdev,nofail,config={},log={},spill_dir={}{opts} 0 0\n",
                mnt.display(),
                cfg.display(),
                dir.path().join("mount.log").display(),
                spill.display()
            )
        };
        std::fs::write(&fstab, line(&fed.state.client_config, ",nowriteback")).unwrap();
        let (fstab_s, mnt_s) = (fstab.to_str().unwrap().to_string(), mnt.to_str().unwrap().to_string());

        // mount -T FSTAB DIR: the helper returns once the mount is live.
        let out = blocking({
            let (f, m) = (fstab_s.clone(), mnt_s.clone());
            move || run("mount", &["-v", "-T", &f, &m])
        })
        .await;
        let said = assert_ok("mount -T fstab DIR", &out);
        let pid = daemon_pid(&said);
        let (fstype, source) = mount_entry(&mnt).expect("mounted");
        assert!(fstype == "fuse" || fstype == "fuse.renkei", "mounted as {fstype}");
        assert_eq!(source, "renkei:/fstab", "the fstab line's source is the mount's (mount -a matches on it)");

        let data = tests::pattern(300_000, 17);
        blocking({
            let (m, d) = (mnt.clone(), data.clone());
            move || {
                std::fs::write(m.join("hello.bin"), &d).unwrap();
                assert_eq!(std::fs::read(m.join("hello.bin")).unwrap(), d);
            }
        })
        .await;
        blocking({
            let m = mnt.clone();
            move || umount_and_wait(&m, pid)
        })
        .await;
        // What was written through the fstab mount is in the namespace.
        let got = dir.path().join("got.bin");
        fed.renkei_ok(None, &["get", "/fstab/hello.bin", got.to_str().unwrap()]);
        assert_eq!(std::fs::read(&got).unwrap(), data);

        // mount -a mounts the line; a second mount -a finds it mounted.
        let out = blocking({
            let f = fstab_s.clone();
            move || run("mount", &["-a", "-v", "-T", &f])
        })
        .await;
        let said = assert_ok("mount -a", &out);
        let pid = daemon_pid(&said);
        assert!(in_mount_table(&mnt), "mount -a did not mount {}", mnt.display());
        let again = blocking({
            let f = fstab_s.clone();
            move || run("mount", &["-a", "-v", "-T", &f])
        })
        .await;
        assert_ok("a second mount -a", &again);
        assert!(!text(&again).contains("(process "), "a second mount -a mounted again:\n{}", text(&again));
        assert_eq!(std::fs::read(mnt.join("hello.bin")).unwrap(), data);
        blocking({
            let m = mnt.clone();
            move || umount_and_wait(&m, pid)
        })
        .await;

        // A line naming a configuration that is not there fails and says so.
        std::fs::write(&fstab, line(Path::new("/nonexistent/client.toml"), "")).unwrap();
        let out = blocking(move || run("mount", &["-T", &fstab_s, &mnt_s])).await;
        assert!(!out.status.success(), "mounted with a missing configuration:\n{}", text(&out));
        assert!(text(&out).contains("/nonexistent/client.toml"), "the failure does not name the config:\n{}", text(&out));
        assert!(!in_mount_table(&mnt));
    })
    .await;
}
