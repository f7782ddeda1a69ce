//! `ListDir` (issue 5, batched readdir-plus): a whole directory in one
//! request answered by a stream of pages, large pages zstd-compressed on the
//! wire; errors end the stream with an error frame; not allowed in a batch.

use fs_proto::frame::{decode_framed, write_msg, COMPRESSED};
use fs_proto::meta::{MetaCall, MetaReply, MetaRequest, MetaResponse, LISTDIR_PAGE};
use fs_proto::{ErrorCode, FileKind};
use tests::cluster::Cluster;
use tests::raw::connect;
use tests::with_timeout;

const ENTRIES: usize = 2_500;

/// Read one frame off `recv` by hand: (compressed?, the decoded reply).
async fn raw_frame(recv: &mut quinn::RecvStream) -> Option<(bool, MetaReply)> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.ok()?;
    let prefix = u32::from_be_bytes(len);
    let mut body = vec![0u8; (prefix & !COMPRESSED) as usize];
    recv.read_exact(&mut body).await.expect("frame body");
    Some((prefix & COMPRESSED != 0, decode_framed(prefix, &body).expect("decodes")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_lists_in_one_stream_of_compressed_pages() {
    with_timeout(120, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let c = cluster.client("alice", "site1").await;
        let dir = c.mkdir("/big", false, 0o755).await.expect("mkdir");
        for start in (0..ENTRIES).step_by(500) {
            let reqs = (start..(start + 500).min(ENTRIES))
                .map(|i| MetaRequest::Create {
                    parent: dir.ino,
                    name: format!("entry-{i:05}"),
                    kind: FileKind::Regular,
                    perm: 0o644,
                    rdev: 0,
                    exclusive: true,
                })
                .collect();
            match c.meta().call(MetaRequest::Batch(reqs)).await.expect("batch of creates") {
                MetaResponse::Batch(r) => assert!(r.iter().all(|r| r.is_ok()), "a create failed"),
                other => panic!("unexpected {other:?}"),
            }
        }

        // Through the client library: one request, every entry, sorted,
        // each with its attributes.
        let before = c.counters().snapshot();
        let all = c.meta().readdir_all(dir.ino, true).await.expect("listing");
        let after = c.counters().snapshot();
        assert_eq!(all.len(), ENTRIES);
        assert!(all.windows(2).all(|w| w[0].name < w[1].name), "sorted by name");
        assert!(all.iter().all(|e| e.attr.as_ref().is_some_and(|a| a.ino == e.ino)), "attributes with every entry");
        let sent: u64 = after.values().sum::<u64>() - before.values().sum::<u64>();
        assert_eq!(sent, 1, "one request: {after:?}");

        // On the wire: pages of LISTDIR_PAGE entries, the last one saying
        // so, large ones compressed.
        let tls = cluster.client_config("alice", "site1").tls;
        let conn = connect(cluster.meta_addr(), "meta", &tls).await.expect("connect");
        let (mut send, mut recv) = conn.open_bi().await.expect("stream");
        let call = MetaCall { cred: None, req: MetaRequest::ListDir { ino: dir.ino, plus: true } };
        write_msg(&mut send, &call).await.expect("request");
        send.finish().expect("finish");
        let mut pages = Vec::new();
        while let Some((compressed, reply)) = raw_frame(&mut recv).await {
            match reply {
                Ok(MetaResponse::Entries { entries, more }) => pages.push((compressed, entries.len(), more)),
                other => panic!("unexpected page {other:?}"),
            }
        }
        let want = ENTRIES.div_ceil(LISTDIR_PAGE as usize);
        assert_eq!(pages.len(), want, "{pages:?}");
        assert!(pages.iter().all(|(c, _, _)| *c), "every full page is compressed: {pages:?}");
        assert_eq!(pages.iter().map(|(_, n, _)| n).sum::<usize>(), ENTRIES);
        assert!(pages[..want - 1].iter().all(|(_, _, more)| *more) && !pages[want - 1].2, "{pages:?}");
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_errors_end_the_stream_and_batches_refuse_it() {
    with_timeout(60, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let c = cluster.client("alice", "site1").await;
        let file = c.put_bytes(b"not a directory", "/f").await.expect("put");
        let e = c.meta().readdir_all(file.ino, true).await.expect_err("listing a file");
        assert_eq!(e.errno(), libc::ENOTDIR, "{e}");
        let e = c.meta().readdir_all(987_654, true).await.expect_err("listing a missing inode");
        assert_eq!(e.errno(), libc::ENOENT, "{e}");
        let root = c.stat("/").await.expect("stat /");
        let batch = MetaRequest::Batch(vec![MetaRequest::ListDir { ino: root.ino, plus: false }]);
        match c.meta().call(batch).await.expect("batch") {
            MetaResponse::Batch(r) => {
                let err = r[0].as_ref().expect_err("ListDir inside a batch");
                assert_eq!(err.code, ErrorCode::InvalidArgument, "{err}");
            }
            other => panic!("unexpected {other:?}"),
        }
        cluster.shutdown().await;
    })
    .await
}
