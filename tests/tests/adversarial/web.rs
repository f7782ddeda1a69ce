//! Finding 12, in part: the status page served HTTP with no bound on
//! connections or their time, in the meta server's own process. A client
//! opening hundreds of connections and sending nothing held a file
//! descriptor each for ever. Now the page holds at most
//! `MAX_CONNECTIONS` at once (the rest wait in the kernel's backlog) and
//! closes one silent for `IDLE`; the meta server goes on serving.

use fs_meta::monitor::guard::{IDLE, MAX_CONNECTIONS};
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tests::cluster::Cluster;
use tests::with_timeout;

/// Connections the server side of `port` has accepted: established sockets
/// on that local port that a process holds (one still in the accept queue
/// has no inode in /proc/net/tcp). Counted per port, so other tests running
/// in this process do not disturb it.
fn accepted(port: u16) -> usize {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 9
                && f[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port)
                && f[3] == "01"
                && f[9] != "0"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_http_connections_cannot_pile_up_in_the_meta_server() {
    with_timeout(120, async {
        let cluster = Cluster::builder()
            .sites(1)
            .meta_config(|c| c.monitor.web = Some("127.0.0.1:0".parse().expect("addr")))
            .start()
            .await;
        let addr = cluster.meta_service().monitor.web_addr().expect("page served");
        let alice = cluster.client("alice", "site1").await;
        alice.put_bytes(b"still here", "/f").await.unwrap();
        let port = addr.port();
        const ATTACK: usize = 300;
        let conns = tokio::task::spawn_blocking(move || {
            (0..ATTACK).map(|_| TcpStream::connect(addr).expect("connect (kernel backlog)")).collect::<Vec<_>>()
        })
        .await
        .unwrap();
        // The server accepts what it may: wait until it holds its bound (it
        // announces every connection it takes or lets go)...
        let mut open = cluster.meta_service().monitor.web_connections();
        let took =
            tokio::time::timeout(Duration::from_secs(10), open.wait_for(|n| *n >= MAX_CONNECTIONS)).await.is_ok();
        assert!(took, "the page took only {} connections within 10 s", *open.borrow());
        assert!(accepted(port) >= MAX_CONNECTIONS, "the page accepted only {} connections", accepted(port));
        // ...and no more while the meta server goes on answering.
        for _ in 0..20 {
            assert_eq!(alice.get_bytes("/f").await.unwrap(), b"still here", "the meta server serves on");
        }
        let held = accepted(port);
        assert!(held <= MAX_CONNECTIONS, "the page holds {held} connections; the rest must wait in the backlog");

        // A silent connection is closed by the server within its bound.
        let first = conns[0].try_clone().unwrap();
        let t = Instant::now();
        let closed = tokio::task::spawn_blocking(move || {
            let mut first = first;
            first.set_read_timeout(Some(IDLE * 3)).unwrap();
            let mut b = [0u8; 16];
            matches!(first.read(&mut b), Ok(0) | Err(_))
        })
        .await
        .unwrap();
        assert!(closed && t.elapsed() < IDLE * 3, "closed after {:?}", t.elapsed());
        drop(conns);

        // With the attackers gone the page serves again.
        let got = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            loop {
                let out = std::process::Command::new("curl")
                    .args([
                        "-s",
                        "-m",
                        "5",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        &format!("http://{addr}/api/status"),
                    ])
                    .output()
                    .expect("curl");
                if out.stdout == b"200" || t.elapsed() > Duration::from_secs(30) {
                    return String::from_utf8_lossy(&out.stdout).into_owned();
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(got, "200");
        cluster.shutdown().await;
    })
    .await
}
