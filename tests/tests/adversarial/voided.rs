//! Finding 11, the rest: a chmod that takes access away ends the
//! capabilities handed out before it. bob opens alice's readable (and
//! writable) file and keeps the capabilities; alice chmods it 0600; within
//! about a heartbeat every file server refuses bob's kept capabilities for
//! a new read or write stream, saying why, while alice (the owner, with a
//! capability from before as well) goes on reading.

use fs_proto::rpc::{reply, request};
use fs_proto::server::{ServerRequest, ServerResponse};
use fs_proto::{ErrorCode, SignedCapability};
use std::time::Duration;
use tests::cluster::Cluster;
use tests::with_timeout;

/// How soon a chmod must void kept capabilities (file servers heartbeat
/// once a second).
const BOUND: Duration = Duration::from_secs(5);

/// Open a stream for `req` to file server `host` as `user` and read the
/// first answer: Ok(bytes read) for a read, Ok(empty) for any other
/// success, Err(code, message) for a refusal.
async fn present(
    cluster: &Cluster,
    user: &str,
    host: &str,
    req: &ServerRequest,
) -> Result<Vec<u8>, (ErrorCode, String)> {
    let loc = cluster.meta_service().hosts.live_loc(host).expect("server alive");
    let tls = cluster.client_config(user, "site1").tls;
    let conn = tests::raw::connect(loc.addr, host, &tls).await.expect("connect");
    let (mut send, mut recv) = request(&conn, req).await.expect("request");
    send.finish().expect("finish");
    let out = match reply::<ServerResponse>(&mut recv).await.expect("reply frame") {
        Ok(ServerResponse::Reading { .. }) => Ok(recv.read_to_end(1 << 20).await.expect("bytes")),
        Ok(_) => Ok(Vec::new()),
        Err(e) => Err((e.code, e.message)),
    };
    conn.close(0u32.into(), b"done");
    out
}

fn read(cap: &SignedCapability) -> ServerRequest {
    ServerRequest::Read { cap: cap.clone(), offset: 0, len: u64::MAX }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chmod_voids_capabilities_handed_out_before_it() {
    with_timeout(90, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let alice = cluster.client("alice", "site1").await;
        let bob = cluster.client("bob", "site1").await;
        alice.put_bytes(b"alice's notes", "/notes").await.unwrap();
        alice.chmod("/notes", 0o666).await.unwrap();
        let ino = alice.stat("/notes").await.unwrap().ino;

        // bob opens it while he may, and keeps the capabilities.
        let kept_read = bob.meta().open_read(ino).await.expect("bob may read");
        let kept_write = bob.meta().open_write(ino, "site1").await.expect("bob may write");
        let host = kept_read.replicas[0].host.clone();
        let read_cap = kept_read.cap.clone().expect("a capability");
        assert_eq!(present(&cluster, "bob", &host, &read(&read_cap)).await.unwrap(), b"alice's notes");
        let alices = alice.meta().open_read(ino).await.unwrap().cap.expect("a capability");

        // alice takes group and other access away.
        alice.chmod("/notes", 0o600).await.unwrap();
        // The file server learns of the voiding from a heartbeat answer:
        // wait for that (each answer it takes in wakes the wait), then bob's
        // kept read capability opens nothing.
        let server = cluster.server_ctx(cluster.server_index(&host));
        let kept = read_cap.peek().expect("a capability statement");
        assert!(
            server.voids.wait_until(BOUND, |v| v.check(&kept).is_err()).await,
            "{host} did not learn of the chmod within {BOUND:?}"
        );
        let refusal = present(&cluster, "bob", &host, &read(&read_cap))
            .await
            .expect_err("bob's kept capability still read alice's file after its server learned of the chmod");
        assert_eq!(refusal.0, ErrorCode::BadCapability, "{}", refusal.1);
        assert!(
            refusal.1.contains("mode or owner changed") && refusal.1.contains("open the file again"),
            "{}",
            refusal.1
        );
        // Nor may his kept write capability start a new generation.
        let write = ServerRequest::Write { cap: kept_write.cap.clone(), base: kept_write.base.clone() };
        let (code, msg) = present(&cluster, "bob", &kept_write.target.host, &write).await.unwrap_err();
        assert_eq!(code, ErrorCode::BadCapability, "{msg}");
        assert!(msg.contains("mode or owner changed"), "{msg}");
        // Opening again is checked anew, and refused.
        let e = bob.meta().open_read(ino).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::PermissionDenied), "{e}");
        assert_eq!(bob.get_bytes("/notes").await.unwrap_err().errno(), libc::EACCES);

        // alice, the owner, reads on: with her capability from before, and
        // by opening again. Nothing was lost; bob's own files are his.
        assert_eq!(present(&cluster, "alice", &host, &read(&alices)).await.unwrap(), b"alice's notes");
        assert_eq!(alice.get_bytes("/notes").await.unwrap(), b"alice's notes");
        bob.put_bytes(b"bob's", "/bobs").await.unwrap();
        assert_eq!(bob.get_bytes("/bobs").await.unwrap(), b"bob's");

        // Made readable again, bob opens it anew; a change that takes
        // nothing away (0644 -> 0664) voids nothing, so his new capability
        // reads on.
        alice.chmod("/notes", 0o644).await.unwrap();
        let fresh = bob.meta().open_read(ino).await.unwrap().cap.expect("a capability");
        let voided = || cluster.meta_service().ns.voids.since(0, |_| None).entries.len();
        let before = voided();
        alice.chmod("/notes", 0o664).await.unwrap();
        assert_eq!(voided(), before, "adding access voids nothing");
        assert_eq!(present(&cluster, "bob", &host, &read(&fresh)).await.unwrap(), b"alice's notes");
        cluster.shutdown().await;
    })
    .await
}
