//! Malformed, truncated and oversized frames (issue 2, acceptance 5): the
//! offending connection is closed with an error and the service keeps
//! serving everyone else.

use tests::cluster::Cluster;
use tests::raw::{connect, send_raw};
use tests::with_timeout;

fn bad_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[1, 2, 3]);
    let mut garbage = 5u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0xff; 5]);
    // A body flagged compressed that is not zstd, and a zstd body that would
    // decompress to four times the frame limit.
    let mut not_zstd = (fs_proto::frame::COMPRESSED | 5).to_be_bytes().to_vec();
    not_zstd.extend_from_slice(&[0xff; 5]);
    let bomb = zstd::bulk::compress(&vec![0u8; 4 * fs_proto::version::MAX_FRAME], 3).expect("compress");
    let mut bomb_frame = (fs_proto::frame::COMPRESSED | bomb.len() as u32).to_be_bytes().to_vec();
    bomb_frame.extend_from_slice(&bomb);
    vec![
        ("oversized length prefix", u32::MAX.to_be_bytes().to_vec()),
        ("compressed flag on a body that is not zstd", not_zstd),
        ("decompression bomb", bomb_frame),
        ("truncated frame", truncated),
        ("undecodable body", garbage),
        ("half a length prefix", vec![0, 0]),
    ]
}

async fn check_service(cluster: &Cluster, addr: std::net::SocketAddr, name: &str) {
    let tls = cluster.client_config("mallory", "site1").tls;
    for (what, bytes) in bad_inputs() {
        let conn = connect(addr, name, &tls).await.expect("connect");
        let res = send_raw(&conn, &bytes).await;
        assert!(res.is_err() || res.as_ref().is_ok_and(|b| b.is_empty()), "{name}: {what} got an answer {res:?}");
        let closed = tokio::time::timeout(std::time::Duration::from_secs(5), conn.closed()).await;
        let reason = closed.unwrap_or_else(|_| panic!("{name}: connection not closed after {what}"));
        let text = reason.to_string();
        assert!(
            text.contains("protocol violation") || text.contains("closed by peer"),
            "{name}: {what}: unclear close reason {text}"
        );
        // Everyone else is still served.
        let c = cluster.client("alice", "site1").await;
        c.hosts().await.unwrap_or_else(|e| panic!("{name} stopped serving after {what}: {e}"));
        c.put_bytes(b"still fine", "/probe").await.expect("file server still serves");
        assert_eq!(c.get_bytes("/probe").await.unwrap(), b"still fine");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_only_that_connection() {
    with_timeout(60, async {
        let cluster = Cluster::builder().sites(1).start().await;
        check_service(&cluster, cluster.meta_addr(), "meta").await;
        let loc = cluster.meta_service().hosts.live_loc("pop1").expect("pop1 alive");
        check_service(&cluster, loc.addr, "pop1").await;
        cluster.shutdown().await;
    })
    .await
}
