//! Finding 7, in part: sizes a file server accepts. A write session could
//! set any length: a 16 TiB sparse `SetLen` made the finish hash every
//! byte of it (hours of CPU) and build a ~2 GB chunk table. Now no file may
//! be larger than the file system that stores it, and the refusal is
//! immediate and says why.

use fs_proto::frame::write_msg;
use fs_proto::rpc::{reply, request, PeerAddr};
use fs_proto::server::{ServerRequest, ServerResponse, WriteFrame};
use fs_proto::{ErrorCode, FileKind, ROOT_INO};
use std::time::{Duration, Instant};
use tests::cluster::Cluster;
use tests::with_timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_larger_than_the_spool_is_refused_at_once() {
    with_timeout(60, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let mallory = cluster.client("mallory", "site1").await;
        let attr = mallory.meta().create(ROOT_INO, "huge", FileKind::Regular, 0o644, true).await.unwrap();
        let (huge, tail) = (16u64 << 40, 4u64 << 40);
        for frame in [WriteFrame::SetLen { size: huge }, WriteFrame::Data { offset: tail, len: 1 }] {
            let grant = mallory.meta().open_write(attr.ino, "site1").await.unwrap();
            let peer = PeerAddr { addr: grant.target.addr, name: grant.target.host.clone() };
            let conn = mallory.data().dialer().connect(&peer).await.unwrap();
            let t = Instant::now();
            let (mut send, mut recv) =
                request(&conn, &ServerRequest::Write { cap: grant.cap.clone(), base: None }).await.unwrap();
            write_msg(&mut send, &frame).await.unwrap();
            if let WriteFrame::Data { .. } = frame {
                let _ = send.write_all(b"x").await;
            }
            let _ = write_msg(&mut send, &WriteFrame::Commit).await;
            let _ = send.finish();
            match reply::<ServerResponse>(&mut recv).await.expect("an answer") {
                Err(e) => {
                    assert_eq!(e.code, ErrorCode::TooLarge, "{frame:?}: {e}");
                    assert!(e.message.contains("larger than this server's spool"), "{e}");
                }
                Ok(r) => panic!("{frame:?} accepted: {r:?}"),
            }
            assert!(t.elapsed() < Duration::from_secs(5), "{frame:?} refused only after {:?}", t.elapsed());
        }
        // Nothing was stored; an honest write still works.
        assert_eq!(mallory.stat("/huge").await.unwrap().size, 0);
        mallory.put_bytes(b"small", "/huge").await.unwrap();
        assert_eq!(mallory.get_bytes("/huge").await.unwrap(), b"small");
        cluster.shutdown().await;
    })
    .await
}

/// Free bytes of the file system holding `p`.
fn free_bytes(p: &std::path::Path) -> u64 {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and out-pointer.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cannot_reserve_all_the_free_space() {
    use crate::common::lease;
    use fs_proto::rpc::call;
    with_timeout(60, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let mallory = cluster.client("mallory", "site1").await;
        let alice = cluster.client("alice", "site1").await;
        let reserve = |c: fs_client::Client, bytes: u64| async move {
            let g = lease(&c, None, 0).await;
            let peer = PeerAddr { addr: g.target.addr, name: g.target.host.clone() };
            let conn = c.data().dialer().connect(&peer).await.unwrap();
            let ask = ServerRequest::Reserve { cap: g.cap.clone(), bytes };
            call::<_, ServerResponse>(&conn, &peer.name, &ask, Duration::from_secs(5)).await
        };
        let free = free_bytes(cluster.dir());
        // All of it (minus a little): refused, with the reason.
        let e = reserve(mallory.clone(), free / 10 * 9).await.expect_err("most of the disk");
        assert!(e.to_string().contains("at most half"), "{e}");
        // Less than half: granted; more on another connection: refused.
        reserve(mallory.clone(), free / 100 * 45).await.expect("under half");
        let e = reserve(mallory.clone(), free / 100 * 20).await.expect_err("her total would pass half");
        assert!(e.to_string().contains("at most half"), "{e}");
        // alice still reserves what a copy needs.
        match reserve(alice.clone(), 256 << 20).await {
            Ok(ServerResponse::Reserved { bytes }) => assert_eq!(bytes, 256 << 20),
            other => panic!("alice's reservation: {other:?}"),
        }
        cluster.shutdown().await;
    })
    .await
}
