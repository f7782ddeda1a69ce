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

/// The end of validity (seconds since the epoch) of the certificate the
/// service at `addr` (named `name`) presents to a new connection.
async fn presented_until(addr: std::net::SocketAddr, name: &str, tls: &fs_proto::endpoint::TlsFiles) -> i64 {
    let conn = tests::raw::connect(addr, name, tls).await.expect("connect");
    let (_, der) = fs_proto::endpoint::peer_identity(&conn).expect("peer certificate");
    conn.close(0u32.into(), b"done");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("certificate");
    cert.validity().not_after.timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_presented_without_a_restart() {
    with_timeout(60, async {
        let cluster = Cluster::builder().sites(1).start().await;
        cluster.wait_alive(1, Duration::from_secs(10)).await;
        let alice = cluster.client("alice", "site1").await;
        alice.put_bytes(b"before", "/before").await.unwrap();
        let tls = cluster.client_config("alice", "site1").tls;
        let pop1 = cluster.meta_service().hosts.live_loc("pop1").expect("pop1 alive");
        let services = [(cluster.meta_addr(), "meta"), (pop1.addr, "pop1")];
        let mut was = Vec::new();
        for (addr, name) in services {
            was.push(presented_until(addr, name, &tls).await);
        }

        // The meta server's and pop1's certificates renewed in place, for
        // 90 days instead of the cluster's 30.
        for (_, name) in services {
            cluster.ca().renew(Role::Host, name, 90).expect("renew");
        }
        // time is the subject: a service looks at its certificate file on a
        // handshake at most once per CHECK_EVERY, so the first handshake once
        // that much has run since the renewal must present the renewed one.
        tokio::time::sleep(fs_proto::revocation::CHECK_EVERY).await;
        for ((addr, name), was) in services.into_iter().zip(was) {
            let now = presented_until(addr, name, &tls).await;
            assert!(
                now > was + 50 * 86_400,
                "{name} still presents its old certificate {:?} after the renewal",
                fs_proto::revocation::CHECK_EVERY
            );
        }
        // Same key: capabilities the meta server signs still verify at the
        // file server, and the federation serves on.
        assert_eq!(alice.get_bytes("/before").await.unwrap(), b"before");
        let fresh = fs_client::Client::connect(cluster.client_config("alice", "site1")).await.unwrap();
        fresh.put_bytes(b"after", "/after").await.unwrap();
        assert_eq!(fresh.get_bytes("/after").await.unwrap(), b"after");

        // `renkei ca issue` issues for 30 days by default; `ca renew`
        // renews; a revoked certificate is not renewed.
        let bin = std::env::var_os("RENKEI_BIN_DIR").map(std::path::PathBuf::from);
        if let Some(renkei) = bin.map(|b| b.join("renkei")).filter(|p| p.exists()) {
            let ca = cluster.dir().join("ca");
            let run = |args: &[&str]| {
                std::process::Command::new(&renkei).args(["ca"]).args(args).arg("--dir").arg(&ca).output().unwrap()
            };
            let out = run(&["issue", "--user", "carol"]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let until = |cluster: &Cluster| {
                use rustls_pki_types::pem::PemObject;
                let path = cluster.ca().issued_paths(Role::User, "carol").cert;
                let der = rustls_pki_types::CertificateDer::from_pem_file(path).unwrap();
                let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
                c.validity().not_after.timestamp() - c.validity().not_before.timestamp()
            };
            // (Valid from an hour ago, for clock skew.)
            assert_eq!(until(&cluster), 30 * 86_400);
            let out = run(&["renew", "--user", "carol", "--days", "7"]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(until(&cluster), 7 * 86_400);
            cluster.ca().revoke(Role::User, "carol").unwrap();
            let out = run(&["renew", "--user", "carol"]);
            assert!(!out.status.success());
            assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"));
        }
        cluster.shutdown().await;
    })
    .await
}
