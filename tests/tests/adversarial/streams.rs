//! Finding 5: exhausting a file server's blocking pool. Write sessions,
//! bundles and reads each held a blocking thread until their stream ended,
//! only the first frame had a timeout, and one connection could open 4,096
//! streams: ~512 idle streams stalled the server for everyone while it still
//! heartbeated healthy. mallory now opens 600 such streams over three
//! connections and leaves them idle; alice must still write and read at
//! once, and every one of mallory's streams must be closed by the server
//! (idle bound, or refused for being over her per-user limit), leaving no
//! temporary file behind.

use super::common::{file_entry, lease};
use fs_proto::bundle::BundleOp;
use fs_proto::endpoint::Tuning;
use fs_proto::frame::read_msg;
use fs_proto::meta::{MetaRequest, MetaResponse};
use fs_proto::rpc::request;
use fs_proto::server::{ServerReply, ServerRequest, ServerResponse};
use fs_proto::{ErrorCode, ServerLoc, ROOT_INO};
use fs_server::streams::IDLE_RESET;
use std::time::{Duration, Instant};
use tests::cluster::Cluster;
use tests::{pattern, with_timeout};

/// The server's idle bound in this test.
const IDLE_MS: u64 = 2_000;
/// Streams of each kind mallory opens.
const EACH: usize = 200;

/// How one of mallory's streams ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// Answered with an error saying it went silent.
    Idle,
    /// Reset with the idle code (a read whose reader took nothing).
    IdleReset,
    /// Refused: mallory had as many streams in progress as one user may.
    OverLimit,
    /// Anything else.
    Other(String),
}

/// A connection to `server` as mallory, with a small receive window per
/// stream (so a read she does not take stalls the server's writes at once).
async fn rogue_connection(cluster: &Cluster, server: &ServerLoc) -> quinn::Connection {
    let files = cluster.client_config("mallory", "site1").tls;
    let tuning = Tuning { stream_window: 64 << 10, ..Tuning::default() };
    tests::raw::connect_with(server.addr, &server.host, &files, &tuning).await.expect("connected")
}

/// Wait until the server ends `recv`'s stream and say how: the reply frame,
/// then (for a read, whose data is never taken) the reset.
async fn ended(mut recv: quinn::RecvStream) -> End {
    match read_msg::<ServerReply>(&mut recv).await {
        Ok(Ok(ServerResponse::Reading { .. })) => match recv.received_reset().await {
            Ok(Some(code)) if code == IDLE_RESET => End::IdleReset,
            other => End::Other(format!("read stream: {other:?}")),
        },
        Ok(Err(e)) if e.code == ErrorCode::Interrupted && e.message.contains("nothing from the peer") => End::Idle,
        Ok(Err(e)) if e.code == ErrorCode::Unavailable && e.message.contains("requests in progress") => End::OverLimit,
        other => End::Other(format!("{other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_of_one_user_neither_stall_a_file_server_nor_outlive_the_idle_bound() {
    with_timeout(240, async {
        let cluster = Cluster::builder()
            .sites(1)
            .server_config(|c| {
                c.streams.idle_ms = IDLE_MS;
                c.streams.wait_ms = 1_000;
            })
            .start()
            .await;
        let alice = cluster.client("alice", "site1").await;
        let mallory = cluster.client("mallory", "site1").await;

        // What mallory may legitimately ask for: a write capability for her
        // own (empty) file, a read capability for a larger one, and a bundle
        // capability with one inode.
        mallory.put_bytes(b"", "/m-write").await.unwrap();
        let big = mallory.put_bytes(&pattern(4 << 20, 7), "/m-read").await.unwrap();
        let w = match mallory
            .meta()
            .call(MetaRequest::OpenWrite { ino: mallory.stat("/m-write").await.unwrap().ino, site: "site1".into() })
            .await
            .unwrap()
        {
            MetaResponse::Write(w) => w,
            other => panic!("unexpected {other:?}"),
        };
        let r = match mallory.meta().call(MetaRequest::OpenRead { ino: big.ino }).await.unwrap() {
            MetaResponse::Read(r) => r,
            other => panic!("unexpected {other:?}"),
        };
        let g = lease(&mallory, None, 1).await;
        let ino = g.inos.expect("a range").first;
        let server = w.target.clone();
        assert_eq!(g.target.addr, server.addr, "one file server");
        let temp = cluster.servers[0].spool.join("tmp");
        let temp_files = || std::fs::read_dir(&temp).map(|d| d.count()).unwrap_or(0);
        assert_eq!(temp_files(), 0);

        // The attack: 600 streams, a request each and then silence.
        let kinds: [(&str, ServerRequest); 3] = [
            (
                "bundle",
                ServerRequest::WriteBundle {
                    cap: g.cap.clone(),
                    ops: vec![BundleOp::Create(file_entry(ROOT_INO, "never", ino, 1 << 20))],
                },
            ),
            ("write", ServerRequest::Write { cap: w.cap.clone(), base: None }),
            ("read", ServerRequest::Read { cap: r.cap.clone().expect("a read capability"), offset: 0, len: u64::MAX }),
        ];
        let opened = Instant::now();
        let mut waits = Vec::new();
        let mut conns = Vec::new();
        for (kind, req) in &kinds {
            let conn = rogue_connection(&cluster, &server).await;
            for _ in 0..EACH {
                let (send, recv) = request(&conn, req).await.expect("stream opened");
                let kind = *kind;
                waits.push(tokio::spawn(async move {
                    let end = ended(recv).await;
                    drop(send);
                    (kind, end, opened.elapsed())
                }));
            }
            conns.push(conn);
        }
        eprintln!("mallory opened {} idle streams in {:?}", waits.len(), opened.elapsed());

        // alice is served within normal bounds meanwhile.
        let data = pattern(3 << 20, 11);
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), alice.put_bytes(&data, "/alice"))
            .await
            .expect("alice's write within 5 s while mallory's streams are open")
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), alice.get_bytes("/alice"))
            .await
            .expect("alice's read within 5 s while mallory's streams are open")
            .unwrap();
        assert!(got == data, "alice reads what she wrote");
        eprintln!("alice wrote and read 3 MiB in {:?}", t.elapsed());

        // Every one of mallory's streams is ended by the server: after the
        // idle bound, or refused while she has the most one user may.
        let mut ends: Vec<(&str, End, Duration)> = Vec::new();
        for w in waits {
            ends.push(w.await.expect("waiter"));
        }
        let count = |kind: &str, end: End| ends.iter().filter(|(k, e, _)| *k == kind && *e == end).count();
        for kind in ["bundle", "write", "read"] {
            let idle = if kind == "read" { End::IdleReset } else { End::Idle };
            eprintln!(
                "{kind}: {} closed idle, {} refused over the per-user limit",
                count(kind, idle.clone()),
                count(kind, End::OverLimit)
            );
            assert!(count(kind, idle) > 0, "some {kind} streams were served, then closed for silence");
        }
        let others: Vec<_> = ends.iter().filter(|(_, e, _)| matches!(e, End::Other(_))).collect();
        assert!(others.is_empty(), "every stream ended for silence or its user's limit: {others:?}");
        assert!(ends.iter().any(|(_, e, _)| *e == End::OverLimit), "600 streams are over one user's limit");
        let first = ends.iter().map(|(_, _, d)| *d).min().expect("some");
        let last = ends.iter().map(|(_, _, d)| *d).max().expect("some");
        eprintln!("mallory's streams ended between {first:?} and {last:?} after opening");
        assert!(first >= Duration::from_millis(900), "nothing ended before its bound: {first:?}");

        // The server removed every temporary file those streams created
        // (removal follows the answer; wait for it, bounded).
        let tmp = temp.clone();
        tokio::task::spawn_blocking(move || tests::wait_dir_empty(&tmp, Duration::from_secs(10)))
            .await
            .expect("temporary files removed");
        assert!(mallory.stat("/never").await.is_err(), "nothing of the bundle was committed");
        // mallory's own ordinary use works again once her streams are gone.
        mallory.put_bytes(b"fine", "/m-after").await.unwrap();
        assert_eq!(mallory.get_bytes("/m-after").await.unwrap(), b"fine");
        drop(conns);
        cluster.shutdown().await;
    })
    .await
}
