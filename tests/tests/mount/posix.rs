//! POSIX details through the mount that the tools tests do not pin down:
//! rename flags, links, special files, xattrs, statfs, setattr, partial
//! overwrites of committed files and reading one's own uncommitted writes.

use crate::common::{blocking, enabled, sh, TestMount};
use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use tests::procs::ProcFederation;
use tests::{pattern, with_timeout};

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn renameat2(a: &Path, b: &Path, flags: u32) -> std::io::Result<()> {
    // SAFETY: valid NUL-terminated paths, AT_FDCWD.
    let r = unsafe {
        libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, c(a).as_ptr(), libc::AT_FDCWD, c(b).as_ptr(), flags)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn posix_checks(root: &Path) {
    let f = |n: &str| root.join(n);
    std::fs::write(f("a"), b"A").unwrap();
    std::fs::write(f("b"), b"B").unwrap();
    // RENAME_NOREPLACE refuses an existing target; RENAME_EXCHANGE swaps.
    let e = renameat2(&f("a"), &f("b"), libc::RENAME_NOREPLACE).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    renameat2(&f("a"), &f("b"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(std::fs::read(f("a")).unwrap(), b"B");
    assert_eq!(std::fs::read(f("b")).unwrap(), b"A");
    renameat2(&f("a"), &f("c"), libc::RENAME_NOREPLACE).unwrap();
    assert!(!f("a").exists());

    // Hard links share the inode and count; symlinks read back.
    std::fs::hard_link(f("c"), f("c2")).unwrap();
    let (m1, m2) = (std::fs::metadata(f("c")).unwrap(), std::fs::metadata(f("c2")).unwrap());
    assert_eq!((m1.ino(), m1.nlink()), (m2.ino(), 2));
    std::os::unix::fs::symlink("c", f("sym")).unwrap();
    assert_eq!(std::fs::read_link(f("sym")).unwrap(), Path::new("c"));
    assert_eq!(std::fs::read(f("sym")).unwrap(), b"B");
    std::fs::remove_file(f("c2")).unwrap();
    assert_eq!(std::fs::metadata(f("c")).unwrap().nlink(), 1, "link count follows an unlink at once");

    // FIFOs and sockets.
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(c(&f("fifo")).as_ptr(), 0o640) }, 0);
    assert!(std::fs::metadata(f("fifo")).unwrap().file_type().is_fifo());
    let sock = std::os::unix::net::UnixListener::bind(f("sock"));
    assert!(sock.is_ok(), "binding a unix socket on the mount: {sock:?}");
    assert!(std::fs::symlink_metadata(f("sock")).unwrap().file_type().is_socket());

    // xattrs: set, get, list, remove; missing ones are ENODATA.
    let name = CString::new("user.comment").unwrap();
    // SAFETY: valid pointers and lengths.
    unsafe {
        assert_eq!(libc::setxattr(c(&f("c")).as_ptr(), name.as_ptr(), b"hi".as_ptr().cast(), 2, 0), 0);
        let mut buf = [0u8; 16];
        let n = libc::getxattr(c(&f("c")).as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
        assert_eq!(&buf[..n as usize], b"hi");
        let n = libc::listxattr(c(&f("c")).as_ptr(), buf.as_mut_ptr().cast(), buf.len());
        assert_eq!(&buf[..n as usize], b"user.comment\0");
        assert_eq!(libc::removexattr(c(&f("c")).as_ptr(), name.as_ptr()), 0);
        assert_eq!(libc::getxattr(c(&f("c")).as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()), -1);
        assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::ENODATA));
    }

    // statfs reports the servers' capacity.
    // SAFETY: zeroed statvfs is a valid out-parameter.
    let mut sv: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c(root).as_ptr(), &mut sv) }, 0);
    assert!(sv.f_blocks > 0 && sv.f_bsize > 0);

    // chmod, chown (to ourselves), truncate, utimens.
    std::fs::set_permissions(f("c"), std::fs::Permissions::from_mode(0o604)).unwrap();
    assert_eq!(std::fs::metadata(f("c")).unwrap().mode() & 0o7777, 0o604);
    let md = std::fs::metadata(f("c")).unwrap();
    std::os::unix::fs::chown(f("c"), Some(md.uid()), Some(md.gid())).unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    std::fs::File::options().write(true).open(f("c")).unwrap().set_modified(t).unwrap();
    assert_eq!(std::fs::metadata(f("c")).unwrap().mtime(), 1_000_000_000);

    // A partial overwrite of a committed file keeps the rest; reads see
    // uncommitted writes; truncate shrinks and extends with zeros.
    let data = pattern(5 << 20, 9);
    std::fs::write(f("big"), &data).unwrap();
    let mut fh = std::fs::File::options().read(true).write(true).open(f("big")).unwrap();
    fh.seek(SeekFrom::Start(1_000_000)).unwrap();
    fh.write_all(b"OVERWRITE").unwrap();
    let mut back = vec![0u8; 20];
    fh.seek(SeekFrom::Start(999_995)).unwrap();
    fh.read_exact(&mut back).unwrap();
    assert_eq!(&back[5..14], b"OVERWRITE", "own writes visible before close");
    assert_eq!(&back[..5], &data[999_995..1_000_000]);
    drop(fh);
    let mut want = data.clone();
    want[1_000_000..1_000_009].copy_from_slice(b"OVERWRITE");
    assert_eq!(std::fs::read(f("big")).unwrap(), want);
    let fh = std::fs::File::options().write(true).open(f("big")).unwrap();
    fh.set_len(10).unwrap();
    fh.set_len(20).unwrap();
    drop(fh);
    let mut short = want[..10].to_vec();
    short.resize(20, 0);
    assert_eq!(std::fs::read(f("big")).unwrap(), short);

    // Directories: rmdir of a non-empty one fails, of an empty one works.
    std::fs::create_dir(f("d")).unwrap();
    std::fs::write(f("d/x"), b"").unwrap();
    assert_eq!(std::fs::remove_dir(f("d")).unwrap_err().raw_os_error(), Some(libc::ENOTEMPTY));
    std::fs::remove_file(f("d/x")).unwrap();
    std::fs::remove_dir(f("d")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn posix_operations_through_the_mount() {
    if !enabled("posix_operations_through_the_mount") {
        return;
    }
    with_timeout(180, async {
        let fed = ProcFederation::up(1).await;
        let c = fed.client(None).await;
        c.mkdir("/sub", false, 0o755).await.unwrap();
        // Mount a remote directory, not the root.
        let m = TestMount::new(&fed, None, "/sub", "").await;
        let root = m.path.clone();
        blocking(move || posix_checks(&root)).await;
        m.unmount().await;
        // What the mount made is in the federation under /sub.
        let listing: Vec<String> = c.list("/sub").await.unwrap().into_iter().map(|e| e.name).collect();
        assert!(listing.contains(&"big".to_string()) && listing.contains(&"fifo".to_string()), "{listing:?}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_sequential_write_streams_in_one_session() {
    if !enabled("a_large_sequential_write_streams_in_one_session") {
        return;
    }
    with_timeout(180, async {
        let fed = ProcFederation::up(1).await;
        // Write-behind is for files that exist at the meta server; a new
        // file under a directory lease goes in a bundle instead (see
        // mount/bundle.rs), so bundling is off here.
        let m = TestMount::new(&fed, None, "/", "nobundle").await;
        let data = pattern(40 << 20, 11);
        let before = m.counters.snapshot();
        let path = m.join("stream.bin");
        // Written by a child process (`dd`, 1 MiB writes, fsync at the
        // end), not by this one: the mount is served in this process, whose
        // other tests fork and exec meanwhile; each fork copies the open
        // descriptor and closing the copy at exec is a FUSE flush, which
        // commits what was streamed so far (a second session followed in
        // CI under load, and here when tests ran side by side).
        let src = tempfile::NamedTempFile::new().expect("tempfile");
        std::fs::write(src.path(), &data).unwrap();
        sh(&m.path, &format!("dd if={} of=stream.bin bs=1M conv=fsync status=none", src.path().display())).await;
        let after = m.counters.snapshot();
        let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
        // The bytes travel once, while they are written: one write session
        // (write-behind), never given up. The mount counts each upload it
        // gives up by cause (`data.upload_dropped.*`: a write below what was
        // streamed, the session broke, a truncation, ...).
        let (sessions, sent) = (delta("data.write"), delta("data.bytes_out"));
        eprintln!("{sessions} write sessions, {sent} bytes sent for {} bytes: {after:?}", data.len());
        let dropped: Vec<(&str, u64)> = after
            .iter()
            .filter(|(k, _)| k.starts_with("data.upload_dropped."))
            .map(|(k, _)| (*k, delta(k)))
            .filter(|(_, n)| *n > 0)
            .collect();
        assert!(dropped.is_empty(), "the upload was given up: {dropped:?}: {after:?}");
        assert_eq!(
            (sessions, sent),
            (1, data.len() as u64),
            "a file written from the start in order is streamed once (write-behind): {after:?}"
        );
        assert_eq!(blocking(move || std::fs::read(path)).await.unwrap(), data);
        m.unmount().await;
        let c = fed.client(None).await;
        assert_eq!(c.get_bytes("/stream.bin").await.unwrap(), data);
    })
    .await
}

/// As `uid` (a child process): `sh -c script`; whether it succeeded.
fn sh_as(uid: u32, script: &str) -> bool {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("sh").arg("-c").arg(script).uid(uid).gid(uid).status().is_ok_and(|s| s.success())
}

/// Symlink targets are strings: a 256-byte component and a 4,095-byte
/// target (PATH_MAX - 1) are fine, PATH_MAX is ENAMETOOLONG (issue 13).
fn symlink_targets(root: &Path) {
    let comp = "c".repeat(256);
    let long: String = std::iter::repeat_n("d".repeat(255), 16).collect::<Vec<_>>().join("/")[..4095].to_string();
    for (name, target) in [("comp256", comp.as_str()), ("long4095", long.as_str())] {
        std::os::unix::fs::symlink(target, root.join(name)).unwrap_or_else(|e| panic!("symlink {name}: {e}"));
        assert_eq!(std::fs::read_link(root.join(name)).unwrap().as_os_str().len(), target.len(), "{name}");
    }
    let e = std::os::unix::fs::symlink("e".repeat(4096), root.join("long4096")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn privileges_cleared_by_other_writers_and_long_symlink_targets() {
    if !enabled("privileges_cleared_by_other_writers_and_long_symlink_targets") {
        return;
    }
    with_timeout(180, async {
        let fed = ProcFederation::up(1).await;
        let c = fed.client(None).await;
        c.mkdir("/shared", false, 0o777).await.unwrap();
        // Callers' own credentials (as pjdfstest runs), others allowed in.
        let m = TestMount::new(&fed, None, "/shared", "cred,allow_other").await;
        let root = m.path.clone();
        blocking(move || {
            let f = root.join("priv");
            let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
            let set = |m: u32| std::fs::set_permissions(&f, std::fs::Permissions::from_mode(m)).unwrap();
            std::fs::write(&f, b"x").unwrap();
            let nobody = 65534;
            let p = f.display();
            // A write by someone else succeeds and clears set-user-id...
            set(0o4777);
            assert!(sh_as(nobody, &format!("echo more >> {p}")), "a write by another user succeeds");
            assert_eq!(mode(&f), 0o777);
            // ... and set-group-id when group executable (then also on truncate).
            set(0o2777);
            assert!(sh_as(nobody, &format!("truncate -s 1 {p}")));
            assert_eq!(mode(&f), 0o777);
            // Without group execute, set-group-id marks locking: it stays.
            set(0o2767);
            assert!(sh_as(nobody, &format!("echo x >> {p}")));
            assert_eq!(mode(&f), 0o2767);
            // Root (CAP_FSETID) keeps the bits.
            set(0o4777);
            std::fs::OpenOptions::new().append(true).open(&f).unwrap().write_all(b"root").unwrap();
            assert_eq!(mode(&f), 0o4777);
            assert_eq!(std::fs::read(&f).unwrap(), b"xx\nroot", "truncated to 1 byte, then appended");
            symlink_targets(&root.join("."));
        })
        .await;
        m.unmount().await;
        // The same through bundles (a default mount creating in a leased
        // directory).
        let m = TestMount::new(&fed, None, "/", "").await;
        let dir = m.join("bundled");
        blocking(move || {
            std::fs::create_dir(&dir).unwrap();
            symlink_targets(&dir);
        })
        .await;
        m.unmount().await;
    })
    .await
}

/// A set-group-id directory whose group the mount's user is not in: what
/// the mount creates there under its write lease (acknowledged locally,
/// committed in a bundle) gets the directory's group; a new directory
/// inherits the bit and a new file loses it (its creator is not in its
/// group), the same before and after the commit, since the mount and the
/// meta server apply one copy of the rules (`fs_proto::mode`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_entries_in_a_setgid_directory_get_its_group_locally_and_committed() {
    if !enabled("new_entries_in_a_setgid_directory_get_its_group_locally_and_committed") {
        return;
    }
    with_timeout(180, async {
        const GROUP: u32 = 4242;
        let fed = ProcFederation::up(1).await;
        let c = fed.client(None).await;
        let dir = c.mkdir("/sg", false, 0o777).await.unwrap();
        // The federation admin acting as root gives it a group its user is
        // not in, and the set-group-id bit.
        let root = c.meta().with_cred(Some(fs_proto::Cred { uid: 0, gid: 0, groups: Vec::new() }));
        let set = fs_proto::meta::SetAttr { gid: Some(GROUP), ..Default::default() };
        root.setattr(dir.ino, set).await.unwrap();
        let set = fs_proto::meta::SetAttr { perm: Some(0o2777), ..Default::default() };
        root.setattr(dir.ino, set).await.unwrap();
        let m = TestMount::new(&fed, None, "/sg", "").await;
        let base = m.path.clone();
        let local = blocking(move || {
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
            let old = unsafe { libc::umask(0o022) };
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o2755).open(base.join("f")).unwrap();
            std::fs::DirBuilder::new().mode(0o755).create(base.join("d")).unwrap();
            unsafe { libc::umask(old) };
            let st = |n: &str| {
                let md = std::fs::metadata(base.join(n)).unwrap();
                (md.mode() & 0o7777, md.gid())
            };
            (st("f"), st("d"))
        })
        .await;
        assert_eq!(local, ((0o755, GROUP), (0o2755, GROUP)), "as the mount acknowledged them");
        // Both were made under the directory's lease, not by the meta server.
        assert_eq!((m.counters.get("create"), m.counters.get("mkdir")), (0, 0), "created locally");
        assert_eq!(m.counters.get("lease_dir"), 1);
        m.unmount().await;
        let f = c.stat("/sg/f").await.unwrap();
        let d = c.stat("/sg/d").await.unwrap();
        assert_eq!(((f.perm, f.gid), (d.perm, d.gid)), local, "as the meta server committed them");
    })
    .await
}
