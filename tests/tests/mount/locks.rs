//! Locks across mounts (issue 13): `fcntl` byte-range locks and `flock`
//! taken through one mount hold against processes on a mount at another
//! site, a
//! waiter is woken when the holder lets go and then reads what the holder
//! wrote, a dead mount's locks go with its session, and two sqlite
//! processes on two mounts share one database without corrupting it.

use crate::common::{blocking, enabled, in_mount_table, sh_out, tool, TestMount};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tests::procs::ProcFederation;
use tests::with_timeout;

/// `fcntl` lock command `cmd` (F_SETLK, F_SETLKW, F_GETLK) of `typ` on
/// `len` bytes from `start`; the flock struct as the kernel left it.
fn fcntl_lock(f: &File, cmd: i32, typ: i32, start: i64, len: i64) -> std::io::Result<libc::flock> {
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    // SAFETY: a valid descriptor and a flock struct that lives across the call.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), cmd, &mut fl) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(fl)
    }
}

fn flock(f: &File, op: i32) -> std::io::Result<()> {
    // SAFETY: a valid descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), op) } < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn rw(p: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(p).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fcntl_and_flock_locks_hold_across_mounts() {
    if !enabled("fcntl_and_flock_locks_hold_across_mounts") {
        return;
    }
    with_timeout(120, async {
        let fed = ProcFederation::up(2).await;
        let m1 = TestMount::new(&fed, Some("site1"), "/", "").await;
        let m2 = TestMount::new(&fed, Some("site2"), "/", "").await;
        let (p1, p2) = (m1.join("shared.db"), m2.join("shared.db"));
        blocking(move || {
            std::fs::write(&p1, b"0000000000").unwrap();
            let (a, b) = (rw(&p1), rw(&p2));

            // A write lock through mount 1 stands in the way on mount 2.
            fcntl_lock(&a, libc::F_SETLK, libc::F_WRLCK, 0, 10).expect("lock through mount 1");
            let seen = fcntl_lock(&b, libc::F_GETLK, libc::F_WRLCK, 0, 10).unwrap();
            assert_eq!(seen.l_type as i32, libc::F_WRLCK, "F_GETLK through mount 2 sees the lock");
            assert_eq!((seen.l_start, seen.l_len), (0, 10));
            assert_eq!(seen.l_pid as u32, std::process::id());
            let e = fcntl_lock(&b, libc::F_SETLK, libc::F_WRLCK, 5, 1).unwrap_err();
            assert!(matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)), "{e}");
            // Other bytes are free.
            fcntl_lock(&b, libc::F_SETLK, libc::F_RDLCK, 20, 10).expect("a range nobody holds");
            let free = fcntl_lock(&a, libc::F_GETLK, libc::F_RDLCK, 100, 10).unwrap();
            assert_eq!(free.l_type as i32, libc::F_UNLCK);

            // A waiter on mount 2 gets the lock only once mount 1 lets go,
            // and then reads what mount 1 wrote under it.
            let released = Arc::new(AtomicBool::new(false));
            let waiter = std::thread::spawn({
                let released = released.clone();
                let mut b = b;
                move || {
                    fcntl_lock(&b, libc::F_SETLKW, libc::F_WRLCK, 0, 10).expect("F_SETLKW");
                    let was_released = released.load(Ordering::SeqCst);
                    let mut s = String::new();
                    b.seek(SeekFrom::Start(0)).unwrap();
                    b.read_to_string(&mut s).unwrap();
                    (was_released, s)
                }
            });
            let mut a = a;
            a.seek(SeekFrom::Start(0)).unwrap();
            a.write_all(b"1111111111").unwrap();
            released.store(true, Ordering::SeqCst);
            fcntl_lock(&a, libc::F_SETLK, libc::F_UNLCK, 0, 10).expect("unlock");
            let (was_released, s) = waiter.join().unwrap();
            assert!(was_released, "the waiter got the lock while mount 1 held it");
            assert_eq!(s, "1111111111", "the new holder reads what the old one wrote");
            drop(a);

            // flock: exclusive across mounts, given back on close.
            let (f1, f2) = (rw(&p1), rw(&p2));
            flock(&f1, libc::LOCK_EX).expect("flock through mount 1");
            let e = flock(&f2, libc::LOCK_EX | libc::LOCK_NB).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EWOULDBLOCK), "{e}");
            drop(f1);
            // FUSE gives a flock back with the release, which the kernel
            // sends after close() returned: wait for it, not for a time.
            flock(&f2, libc::LOCK_EX).expect("free once mount 1 closed its file");
        })
        .await;
        m1.unmount().await;
        m2.unmount().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_mounts_locks_go_with_its_session() {
    if !enabled("a_dead_mounts_locks_go_with_its_session") {
        return;
    }
    with_timeout(120, async {
        let fed = ProcFederation::up(1).await;
        let tmp = tempfile::tempdir().unwrap();
        let mp = tmp.path().join("mnt");
        std::fs::create_dir(&mp).unwrap();
        let (mut child, holder) = blocking({
            let (cfg, mp) = (fed.state.client_config.clone(), mp.clone());
            move || {
                let child = crate::crash::mount_process(cfg, mp.clone());
                std::fs::write(mp.join("f"), b"x").unwrap();
                let f = rw(&mp.join("f"));
                fcntl_lock(&f, libc::F_SETLK, libc::F_WRLCK, 0, 0).expect("lock through the doomed mount");
                (child, f)
            }
        })
        .await;
        let m2 = TestMount::new(&fed, None, "/", "").await;
        let p2 = m2.join("f");
        let b = blocking(move || rw(&p2)).await;
        let b = blocking(move || {
            let e = fcntl_lock(&b, libc::F_SETLK, libc::F_WRLCK, 0, 0).unwrap_err();
            assert!(matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)), "{e}");
            b
        })
        .await;
        child.kill().unwrap();
        child.wait().unwrap();
        let t = Instant::now();
        // The meta server hears nothing more from the dead mount; its
        // session, and the lock, end with the connection's idle bound.
        blocking(move || fcntl_lock(&b, libc::F_SETLKW, libc::F_WRLCK, 0, 0).expect("the lock comes free")).await;
        let took = t.elapsed();
        eprintln!("the dead mount's lock came free {took:?} after the kill");
        assert!(took < Duration::from_secs(30), "held {took:?}");
        drop(holder);
        if in_mount_table(&mp) {
            crate::crash::umount(&mp);
        }
        m2.unmount().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_at_two_sites_shares_one_database() {
    if !enabled("sqlite_at_two_sites_shares_one_database") {
        return;
    }
    if !tool("sqlite3") {
        assert!(!tests::strict(), "sqlite3 is not installed (apt-get install sqlite3)");
        eprintln!("skipped: sqlite3 is not installed");
        return;
    }
    with_timeout(300, async {
        let fed = ProcFederation::up(2).await;
        let m1 = TestMount::new(&fed, Some("site1"), "/", "").await;
        let m2 = TestMount::new(&fed, Some("site2"), "/", "").await;
        let setup = sh_out(&m1.path, "sqlite3 db.sqlite 'CREATE TABLE t (who TEXT, n INTEGER)'").await;
        assert!(setup.status.success(), "{}", String::from_utf8_lossy(&setup.stderr));
        // Each site inserts ROWS rows, one transaction each, at the same time (rollback journal: every transaction takes and gives back the file locks).
        const ROWS: usize = 1000;
        let writer = |who: &str| {
            format!(
                "for i in $(seq 1 {ROWS}); do echo \"BEGIN IMMEDIATE; INSERT INTO t VALUES ('{who}', $i); COMMIT;\"; done \
                 | sqlite3 -cmd '.timeout 60000' db.sqlite"
            )
        };
        let (wa, wb) = (writer("a"), writer("b"));
        let (a, b) = tokio::join!(sh_out(&m1.path, &wa), sh_out(&m2.path, &wb));
        for (who, out) in [("a", a), ("b", b)] {
            assert!(out.status.success(), "writer {who}: {}", String::from_utf8_lossy(&out.stderr));
        }
        for m in [&m1, &m2] {
            let out = sh_out(&m.path, "sqlite3 db.sqlite 'PRAGMA integrity_check; SELECT who, count(*), sum(n) FROM t GROUP BY who ORDER BY who;'").await;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let want = format!("ok\na|{ROWS}|{}\nb|{ROWS}|{}\n", ROWS * (ROWS + 1) / 2, ROWS * (ROWS + 1) / 2);
            assert_eq!(text, want, "{}", String::from_utf8_lossy(&out.stderr));
        }
        m1.unmount().await;
        m2.unmount().await;
    })
    .await
}
