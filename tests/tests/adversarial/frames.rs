//! Finding 12, the frame-level attacks: a peer that declares huge frames and
//! sends nothing, and a frame that carries thousands of capabilities, each
//! an ECDSA verification.
//!
//! - `read_msg` used to allocate the length a frame declared before its
//!   bytes arrived: 256 streams declaring 16 MiB each made the meta server
//!   reserve 4 GiB. The buffer now grows with the bytes that arrive.
//! - A `ReadMany` frame's capabilities used to be checked on the async
//!   worker that read it: a few such frames took every worker of the file
//!   server for seconds, and everyone else's requests waited. They are now
//!   checked on the blocking pool.

use fs_proto::endpoint::Tuning;
use fs_proto::frame::read_msg;
use fs_proto::meta::{MetaRequest, MetaResponse};
use fs_proto::rpc::request;
use fs_proto::server::{ServerReply, ServerRequest};
use fs_proto::version::MAX_FRAME;
use std::time::{Duration, Instant};
use tests::cluster::Cluster;
use tests::procs::ProcFederation;
use tests::{pattern, with_timeout};

/// The virtual memory size of process `pid` in bytes (`VmSize`).
fn vm_size(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in status");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_declare_a_length_and_send_nothing_reserve_no_memory() {
    with_timeout(180, async {
        let fed = ProcFederation::up(1).await;
        let meta_pid = fed.pid("meta").expect("meta runs");
        let cfg = fs_client::config::ClientConfig::load(&fed.state.client_config).expect("client config");
        let alice = fed.client(None).await;
        alice.put_bytes(b"before", "/before").await.unwrap();
        let before = vm_size(meta_pid);

        // The attack: 4 connections x 64 streams, each declaring a frame of
        // the largest length and sending 1 KiB of it.
        const CONNS: usize = 4;
        const STREAMS: usize = 64;
        let mut conns = Vec::new();
        let mut held = Vec::new();
        for _ in 0..CONNS {
            let conn =
                tests::raw::connect_with(cfg.meta.first().addr, &cfg.meta.first().name, &cfg.tls, &Tuning::default())
                    .await
                    .expect("connected");
            for _ in 0..STREAMS {
                let (mut send, recv) = conn.open_bi().await.expect("stream");
                let mut head = (MAX_FRAME as u32).to_be_bytes().to_vec();
                head.extend_from_slice(&[0u8; 1024]);
                send.write_all(&head).await.expect("sent the declared length");
                held.push((send, recv));
            }
            conns.push(conn);
        }
        let declared = (CONNS * STREAMS * MAX_FRAME) as u64;

        // alice is served meanwhile, and the meta server holds about what
        // arrived, not what was declared.
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), alice.put_bytes(b"during", "/during"))
            .await
            .expect("alice is served within 5 s during the attack")
            .unwrap();
        assert_eq!(alice.get_bytes("/before").await.unwrap(), b"before");
        let grew = vm_size(meta_pid).saturating_sub(before);
        eprintln!(
            "{} streams declared {} MiB; the meta server's address space grew by {} MiB; alice served in {:?}",
            held.len(),
            declared >> 20,
            grew >> 20,
            t.elapsed()
        );
        assert!(
            grew < declared / 8,
            "the meta server reserved {} MiB for {} MiB of declared frames it never received",
            grew >> 20,
            declared >> 20
        );
        drop(held);
        for c in conns {
            c.close(0u32.into(), b"done");
        }
        assert_eq!(alice.get_bytes("/during").await.unwrap(), b"during");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_capabilities_in_one_frame_stall_no_one_else() {
    with_timeout(240, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let alice = cluster.client("alice", "site1").await;
        let mallory = cluster.client("mallory", "site1").await;
        let data = pattern(64 << 10, 3);
        alice.put_bytes(&data, "/alice").await.unwrap();

        // mallory's one legitimate read capability, repeated to fill a frame:
        // each copy costs the server a signature verification.
        let mine = mallory.put_bytes(b"mine", "/m").await.unwrap();
        let grant = match mallory.meta().call(MetaRequest::OpenRead { ino: mine.ino }).await.unwrap() {
            MetaResponse::Read(r) => r,
            other => panic!("unexpected {other:?}"),
        };
        let cap = grant.cap.clone().expect("a read capability");
        let server = grant.replicas[0].clone();
        let one = fs_proto::frame::encode(&ServerRequest::ReadMany { caps: vec![cap.clone()] }).len();
        let n = (MAX_FRAME - 4096) / one;
        let req = ServerRequest::ReadMany { caps: vec![cap; n] };

        // Two such frames at once (the server runs two async workers here).
        let files = cluster.client_config("mallory", "site1").tls;
        let conn = tests::raw::connect_with(server.addr, &server.host, &files, &Tuning::default())
            .await
            .expect("connected");
        let started = Instant::now();
        let mut frames = Vec::new();
        for _ in 0..2 {
            let (send, mut recv) = request(&conn, &req).await.expect("sent");
            frames.push(tokio::spawn(async move {
                // The first answer comes once every capability was checked.
                let first = read_msg::<ServerReply>(&mut recv).await;
                drop(send);
                (first.is_ok(), started.elapsed())
            }));
        }

        // alice reads meanwhile.
        let got = tokio::time::timeout(Duration::from_secs(30), alice.get_bytes("/alice"))
            .await
            .expect("alice's read within 30 s")
            .unwrap_or_else(|e| panic!("alice's read failed during the attack: {e}"));
        let alice_took = started.elapsed();
        assert!(got == data, "alice reads her file");
        let mut checked = Vec::new();
        for f in frames {
            let (answered, took) = f.await.expect("waiter");
            assert!(answered, "mallory's frame was answered");
            checked.push(took);
        }
        let first_checked = checked.iter().min().copied().expect("two frames");
        eprintln!(
            "{n} capabilities per frame; mallory's frames were checked after {checked:?}; alice read in {alice_took:?}"
        );
        assert!(
            alice_took < first_checked,
            "alice waited for mallory's checks: read after {alice_took:?}, the first frame checked after {first_checked:?}"
        );
        conn.close(0u32.into(), b"done");
        cluster.shutdown().await;
    })
    .await
}
