//! Many open files at once: a program that keeps hundreds of files open
//! after reading a little of each (fsx does, leaking a mapping per mapped
//! read) must not stall the mount. Each handle's read stream is pushed ahead
//! of the reads, and its undelivered bytes hold the connection's
//! flow-control credit; before read streams were parked in a bounded lot,
//! such handles used up the 96 MiB window and every later transfer with
//! that file server, commits included, waited until the commit bound (EIO).

use crate::common::{blocking, enabled, TestMount};
use std::io::{Read, Seek, SeekFrom, Write};
use tests::procs::ProcFederation;
use tests::{pattern, with_timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundreds_of_partly_read_open_files_do_not_stall_the_mount() {
    if !enabled("hundreds_of_partly_read_open_files_do_not_stall_the_mount") {
        return;
    }
    with_timeout(180, async {
        let fed = ProcFederation::up(1).await;
        // Written by a client, so the mount reads them from the file server.
        let c = fed.client(None).await;
        let files = 24;
        let body = pattern(1 << 20, 3);
        for i in 0..files {
            c.put_bytes(&body, &format!("/big{i}")).await.unwrap();
        }
        let m = TestMount::new(&fed, None, "/", "").await;
        let root = m.join("");
        let counters = m.counters.clone();
        blocking(move || {
            // 600 handles, each read 4 KiB at its own place (no kernel
            // read-ahead, no page another handle read): each handle's
            // stream asks for 256 KiB ahead (~150 MiB in all).
            let mut open = Vec::new();
            for h in 0..600usize {
                let mut f = std::fs::File::open(root.join(format!("big{}", h % files))).unwrap();
                // SAFETY: a valid descriptor; advice only.
                unsafe { libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(&f), 0, 0, libc::POSIX_FADV_RANDOM) };
                let at = (h / files * 8) as u64 * 4096;
                f.seek(SeekFrom::Start(at)).unwrap();
                let mut buf = [0u8; 4096];
                f.read_exact(&mut buf).unwrap();
                assert_eq!(&buf[..], &body[at as usize..at as usize + 4096], "handle {h} read wrong bytes");
                open.push(f);
            }
            eprintln!(
                "read streams opened: {}, bytes in: {}",
                counters.get("data.read"),
                counters.get("data.bytes_in")
            );
            // A commit through the same connection completes (it waited
            // for the commit bound and failed with EIO before).
            let t = std::time::Instant::now();
            let mut w = std::fs::File::create(root.join("after")).unwrap();
            w.write_all(&pattern(300_000, 9)).unwrap();
            w.sync_all().expect("fsync with hundreds of partly read files open");
            eprintln!("fsync with {} open handles took {:?}", open.len(), t.elapsed());
            // Every handle still reads on.
            for (h, f) in open.iter_mut().enumerate() {
                let mut buf = [0u8; 4096];
                f.read_exact(&mut buf).unwrap();
                let at = (h / files * 8) * 4096 + 4096;
                assert_eq!(&buf[..], &body[at..at + 4096], "handle {h} read wrong bytes later");
            }
        })
        .await;
        assert!(
            fs_client::mount::reader::parked() <= fs_client::mount::reader::PARKED_MAX,
            "parked read streams are bounded"
        );
        m.unmount().await;
    })
    .await
}
