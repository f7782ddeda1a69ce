//! `ls -l` of a 10,000-entry directory through a mount 10 ms from the meta
//! server (issue 5, acceptance 3): cold, a handful of round trips (one
//! listing stream carries every entry's attributes and xattr names, so the
//! per-entry `security.selinux` probes are answered locally); warm, no
//! request at all.
//!
//! Cold is two requests: `Lookup` of the directory and one `ListDir`
//! stream (the mount root's attributes were leased when it mounted). The
//! target is at most 5 RTT of waiting; this machine measures about 4 RTT
//! (printed): 1 for the lookup, 1 for the listing's request and reply, ~2
//! for the meta server building ten 1,000-entry pages (~2 ms each, sent as
//! each is built), the last page's bytes and their decoding. The reply is
//! ~100 KB (zstd-compressed from ~700 KB) and the connection's initial
//! congestion window 64 KiB, so slow start costs about one round trip
//! (quinn's default 12 KB window made it ~6 RTT). The bound asserted is
//! 5 RTT plus a generous [`WAIT_SLACK`]; the request counts are the
//! protocol facts.
//!
//! Gated by `RENKEI_TEST_NETNS=1` and `RENKEI_TEST_FUSE=1` (root, /dev/fuse).

use crate::site_mount::{fuse_enabled, SiteMount};
use bench::wan::{preset, Wan};
use bench::wanfed::{WanFedSpec, WanFederation};
use fs_proto::meta::{MetaRequest, MetaResponse, XattrFlags};
use fs_proto::FileKind;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tests::{tier_enabled, with_timeout};

const RTT_MS: f64 = 10.0;
const ENTRIES: usize = 10_000;
/// Slack beyond the 5 RTT target for the cold waiting: a generous bound,
/// since two busy cores (CI, other tests of this binary) slow the meta
/// server's page building and the mount's decoding; the benchmark
/// (`renkei-bench wanfs`) measures the waiting itself.
const WAIT_SLACK: Duration = Duration::from_millis(150);

/// Run `ls -l DIR` (bounded; `ls` also probes DIR's own xattrs); (lines
/// of output, wall time).
async fn ls_l(dir: &Path) -> (usize, Duration) {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let out =
            Command::new("timeout").args(["60", "ls", "-l"]).arg(&dir).env("LC_ALL", "C").output().expect("run ls");
        let took = t.elapsed();
        assert!(out.status.success(), "ls -l failed: {}", String::from_utf8_lossy(&out.stderr));
        (out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count(), took)
    })
    .await
    .expect("ls task")
}

/// An xattr of a path through the mount, read with getxattr(2).
fn getxattr(path: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let n = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    let mut buf = vec![0u8; 256];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ls_l_of_10000_entries_over_10ms_rtt() {
    if !tier_enabled("RENKEI_TEST_NETNS", true) || !fuse_enabled() {
        return;
    }
    tests::init_logs();
    with_timeout(300, async {
        let wan = Wan::start(preset::pair(RTT_MS, Some(1000.0), 0.0).expect("pair")).expect("start the WAN emulator");
        let spec = WanFedSpec {
            meta_site: "a".into(),
            server_sites: vec!["a".into()],
            bin_dir: tests::procs::bin_dir(),
            heartbeat_ms: 500,
        };
        let fed = WanFederation::start(&wan, spec).expect("start the federation");
        fed.wait_alive(&wan, "a", Duration::from_secs(30)).await.expect("servers alive");
        let rtt = Duration::from_secs_f64(RTT_MS / 1000.0);

        // The entries are made next to the meta server, in batches.
        let at_a = fed.client(&wan, "a", "alice").await.expect("client at a");
        let dir = at_a.mkdir("/big", false, 0o755).await.expect("mkdir");
        for start in (0..ENTRIES).step_by(1000) {
            let reqs = (start..start + 1000)
                .map(|i| {
                    let kind = if i % 100 == 0 { FileKind::Fifo } else { FileKind::Regular };
                    MetaRequest::Create {
                        parent: dir.ino,
                        name: format!("entry-{i:05}"),
                        kind,
                        perm: 0o644,
                        rdev: 0,
                        exclusive: true,
                    }
                })
                .collect();
            match at_a.meta().call(MetaRequest::Batch(reqs)).await.expect("batch of creates") {
                MetaResponse::Batch(r) => assert!(r.iter().all(|r| r.is_ok()), "a create failed"),
                other => panic!("unexpected {other:?}"),
            }
        }
        let tagged = at_a.stat("/big/entry-00007").await.expect("stat");
        let set = MetaRequest::SetXattr {
            ino: tagged.ino,
            name: "user.tag".into(),
            value: b"blue".to_vec(),
            flags: XattrFlags::default(),
        };
        at_a.meta().call(set).await.expect("setxattr");

        let m = SiteMount::new(&fed, &wan, "b", "alice", "/", "").await;
        let d = m.path.join("big");
        let before = m.counters.snapshot();
        let waited = m.counters.meta_wait();
        let (lines, cold) = ls_l(&d).await;
        let waited = m.counters.meta_wait() - waited;
        let after = m.counters.snapshot();
        assert_eq!(lines, ENTRIES + 1, "a total line and every entry");
        let sent: u64 =
            after.iter().filter(|(k, _)| fs_client::counters::is_meta_request(k)).map(|(_, v)| v).sum::<u64>()
                - before.iter().filter(|(k, _)| fs_client::counters::is_meta_request(k)).map(|(_, v)| v).sum::<u64>();
        let (_, warm) = ls_l(&d).await;
        let in_rtt = |d: Duration| d.as_secs_f64() / rtt.as_secs_f64();
        eprintln!(
            "RTT {rtt:?}: cold ls -l of {ENTRIES} entries: {sent} requests {after:?}, waited for the meta server \
             {waited:?} ({:.1} RTT); wall {cold:?} ({:.1} RTT), the same ls -l warm {warm:?}",
            in_rtt(waited),
            in_rtt(cold),
        );
        // The protocol fact: the lookup of `big` and one listing stream; no
        // per-entry request (no getxattr, no getattr, no lookup), not even
        // the mount root's attributes (leased at mount time).
        assert_eq!(after.get("listdir").copied().unwrap_or(0), 1, "one listing stream: {after:?}");
        assert_eq!(after.get("getxattr").copied().unwrap_or(0), 0, "no xattr probe went out: {after:?}");
        assert_eq!(after.get("getattr").copied().unwrap_or(0), 0, "the root's attributes were leased: {after:?}");
        assert!(sent <= 2, "cold ls -l sent {sent} requests: {after:?}");
        // The waiting, with slack for a loaded 2-core machine.
        assert!(waited < rtt * 5 + WAIT_SLACK, "cold ls -l waited {waited:?} at RTT {rtt:?}");

        // Warm: nothing goes out, even after the kernel's own cache expired.
        // time is the subject: the kernel's own 1 s attr_timeout runs out.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let before = m.counters.meta_requests();
        let (lines, warm) = ls_l(&d).await;
        assert_eq!(lines, ENTRIES + 1);
        assert_eq!(m.counters.meta_requests(), before, "warm ls -l sent requests: {:?}", m.counters.snapshot());
        eprintln!("warm ls -l: {warm:?}, no request");

        // Present names are still read from the meta server; absent ones
        // are answered locally.
        let p = d.join("entry-00007");
        let v = tokio::task::spawn_blocking(move || getxattr(&p, "user.tag")).await.expect("task");
        assert_eq!(v.expect("user.tag"), b"blue");
        let p = d.join("entry-00008");
        let e = tokio::task::spawn_blocking(move || getxattr(&p, "user.tag")).await.expect("task");
        assert_eq!(e.err().and_then(|e| e.raw_os_error()), Some(libc::ENODATA));
        m.unmount().await;
    })
    .await
}
