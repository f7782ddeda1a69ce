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
