//! Finding 11, acceptance 3: a revoked user certificate is refused by the
//! meta server and by every file server within a bounded time, without
//! restarting any of them: its open connections are closed and new
//! handshakes fail with a reason that says so. Other users go on.

use fs_proto::identity::Role;
use fs_proto::rpc::PeerAddr;
use std::collections::HashMap;
use std::time::Duration;
use tests::cluster::Cluster;
use tests::with_timeout;

/// How soon a revocation must take effect (services look once a second).
const BOUND: Duration = Duration::from_secs(5);

/// Why a new connection was refused: the handshake failed, or (QUIC's
/// client may finish before the server has judged its certificate) the
/// connection was closed right after it.
async fn refusal(attempt: Result<quinn::Connection, String>) -> String {
    match attempt {
        Err(e) => e,
        Ok(conn) => match tokio::time::timeout(BOUND, conn.closed()).await {
            Ok(why) => fs_proto::endpoint::explain_connection_error(&why),
            Err(_) => panic!("a revoked certificate's new connection stayed open"),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_cut_off_everywhere_without_a_restart() {
    with_timeout(60, async {
        let cluster = Cluster::builder().sites(2).start().await;
        cluster.wait_alive(2, Duration::from_secs(10)).await;
        let alice = cluster.client("alice", "site1").await;
        let mallory = cluster.client("mallory", "site1").await;
        mallory.put_bytes(b"mallory's", "/m").await.unwrap();
        let servers = cluster.meta_service().hosts.list(&HashMap::new());
        assert_eq!(servers.len(), 2);

        // mallory's open connections: to meta, and to every file server.
        let meta = PeerAddr { addr: cluster.meta_addr(), name: "meta".into() };
        let mut open = vec![mallory.data().dialer().connect(&meta).await.expect("meta connection")];
        let tls = cluster.client_config("mallory", "site1").tls;
        for s in &servers {
            open.push(tests::raw::connect(s.addr, &s.host, &tls).await.expect("file server connection"));
        }

        let r = cluster.ca().revoke(Role::User, "mallory").expect("revoke");
        assert_eq!(r.name, "mallory");

        // Each open connection is closed by its service, saying why.
        for conn in &open {
            let why = tokio::time::timeout(BOUND, conn.closed())
                .await
                .unwrap_or_else(|_| panic!("{} kept a revoked certificate's connection", conn.remote_address()));
            assert!(why.to_string().contains("revoked"), "{why}");
        }
        // New handshakes are refused, with the reason in words.
        let e = refusal(tests::raw::connect(cluster.meta_addr(), "meta", &tls).await).await;
        assert!(e.contains("revoked"), "{e}");
        for s in &servers {
            let e = refusal(tests::raw::connect(s.addr, &s.host, &tls).await).await;
            assert!(e.contains("revoked"), "{}: {e}", s.host);
        }
        let e = fs_client::Client::connect(cluster.client_config("mallory", "site1")).await;
        match e {
            Ok(c) => assert!(c.get_bytes("/m").await.is_err(), "a fresh client of mallory's is refused"),
            Err(e) => assert!(e.to_string().contains("revoked"), "{e}"),
        }

        // Everyone else goes on, mallory's file included.
        alice.put_bytes(b"alice's", "/a").await.unwrap();
        assert_eq!(alice.get_bytes("/m").await.unwrap(), b"mallory's");
        cluster.shutdown().await;
    })
    .await
}
