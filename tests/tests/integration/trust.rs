//! Identities, permissions and capabilities (issue 2, acceptance 4): user B
//! cannot read or overwrite user A's 0600 file, not by replaying A's
//! capability, an expired one, or a forged one; peers without a federation
//! certificate are refused.

use fs_proto::endpoint::{anonymous_client_config, load_roots, TlsIdentity, Tuning};
use fs_proto::identity::{CaDir, IssueRequest, Role};
use fs_proto::rpc::{reply, request};
use fs_proto::server::{ServerRequest, ServerResponse};
use fs_proto::{Capability, CapabilitySigner, ErrorCode, SignedCapability, Timestamp};
use tests::cluster::{issue, Cluster};
use tests::with_timeout;

/// Present `cap` to the file server holding the file, as `user`.
async fn read_with(cluster: &Cluster, user: &str, host: &str, cap: SignedCapability) -> Result<Vec<u8>, ErrorCode> {
    let cfg = cluster.client_config(user, "site1");
    let loc = cluster.meta_service().hosts.live_loc(host).expect("server alive");
    let conn = tests::raw::connect(loc.addr, host, &cfg.tls).await.expect("connect");
    let (mut send, mut recv) = request(&conn, &ServerRequest::Read { cap, offset: 0, len: u64::MAX }).await.unwrap();
    send.finish().unwrap();
    match reply::<ServerResponse>(&mut recv).await.expect("reply frame") {
        Ok(ServerResponse::Reading { .. }) => Ok(recv.read_to_end(1 << 20).await.expect("bytes")),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(e) => Err(e.code),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_cannot_read_or_overwrite_a_private_file() {
    with_timeout(60, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let alice = cluster.client("alice", "site1").await;
        let bob = cluster.client("bob", "site1").await;
        alice.mkdir("/home-alice", false, 0o755).await.unwrap();
        alice.put_bytes(b"alice's secret", "/home-alice/secret").await.unwrap();
        alice.chmod("/home-alice/secret", 0o600).await.unwrap();

        // Plain access through the meta server.
        assert_eq!(bob.get_bytes("/home-alice/secret").await.unwrap_err().errno(), libc::EACCES);
        assert_eq!(bob.put_bytes(b"overwritten", "/home-alice/secret").await.unwrap_err().errno(), libc::EACCES);
        assert_eq!(bob.remove("/home-alice/secret", false).await.unwrap_err().errno(), libc::EACCES);
        assert_eq!(alice.get_bytes("/home-alice/secret").await.unwrap(), b"alice's secret");

        // Replaying alice's capability as bob.
        let ino = alice.stat("/home-alice/secret").await.unwrap().ino;
        let grant = alice.meta().open_read(ino).await.unwrap();
        let cap = grant.cap.clone().expect("a capability");
        let host = grant.replicas[0].host.clone();
        assert_eq!(read_with(&cluster, "alice", &host, cap.clone()).await.unwrap(), b"alice's secret");
        assert_eq!(read_with(&cluster, "bob", &host, cap.clone()).await.unwrap_err(), ErrorCode::BadCapability);

        // Forged: alice's capability re-addressed to bob (signature no longer matches).
        let mut c: Capability = cap.peek().unwrap();
        c.principal = fs_proto::Principal::user("bob");
        let forged = SignedCapability { body: fs_proto::frame::encode(&c)[4..].to_vec(), sig: cap.sig.clone() };
        assert_eq!(read_with(&cluster, "bob", &host, forged).await.unwrap_err(), ErrorCode::BadCapability);

        // Forged: signed by bob's own key.
        let bob_tls = TlsIdentity::load(&cluster.client_config("bob", "site1").tls).unwrap();
        let own = CapabilitySigner::from_pkcs8(bob_tls.key_der()).unwrap().sign(&c);
        assert_eq!(read_with(&cluster, "bob", &host, own).await.unwrap_err(), ErrorCode::BadCapability);

        // Expired: alice's own capability, signed by the meta server's key,
        // whose lifetime ended a moment ago (made so rather than waited for).
        let meta_key = TlsIdentity::load(&cluster.meta_tls()).unwrap();
        let meta_signer = CapabilitySigner::from_pkcs8(meta_key.key_der()).unwrap();
        let mut old: Capability = cap.peek().unwrap();
        old.expires_ms = Timestamp::now().as_millis() - 1;
        let expired = meta_signer.sign(&old);
        assert_eq!(read_with(&cluster, "alice", &host, expired).await.unwrap_err(), ErrorCode::BadCapability);
        // The same capability, unexpired, is alice's to use: the refusal above
        // was the expiry alone.
        let mut fresh: Capability = cap.peek().unwrap();
        fresh.expires_ms = Timestamp::now().as_millis() + 60_000;
        let fresh = meta_signer.sign(&fresh);
        assert_eq!(read_with(&cluster, "alice", &host, fresh).await.unwrap(), b"alice's secret");
        cluster.shutdown().await;
    })
    .await
}

async fn expect_refused(cluster: &Cluster, tls: fs_proto::endpoint::TlsFiles, what: &str) -> String {
    let mut cfg = cluster.client_config("probe", "site1");
    cfg.tls = tls;
    let client = fs_client::Client::connect(cfg).await.expect("local setup works");
    let err = client.hosts().await.expect_err(&format!("{what} must be refused"));
    eprintln!("{what}: {err}");
    err.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_or_expired_certificates_are_refused() {
    with_timeout(60, async {
        let cluster = Cluster::builder().sites(1).start().await;

        // A certificate from another CA.
        let other = CaDir::new(cluster.dir().join("other-ca"));
        other.init("intruders").unwrap();
        let mut foreign = issue(&other, "mallory", Role::User, None);
        foreign.ca = cluster.ca().cert_path();
        let msg = expect_refused(&cluster, foreign, "another CA's certificate").await;
        assert!(msg.contains("certificate") || msg.contains("CA"), "unclear error: {msg}");

        // An expired certificate of the right CA.
        let files = cluster
            .ca()
            .issue(&IssueRequest {
                name: "late".into(),
                role: Role::User,
                site: None,
                not_before: Some(time::OffsetDateTime::now_utc() - time::Duration::days(10)),
                valid_days: 1,
            })
            .unwrap();
        let tls = fs_proto::endpoint::TlsFiles { ca: cluster.ca().cert_path(), cert: files.cert, key: files.key };
        let msg = expect_refused(&cluster, tls, "an expired certificate").await;
        assert!(msg.to_lowercase().contains("expired"), "unclear error: {msg}");

        // No certificate at all.
        let roots = load_roots(&cluster.ca().cert_path()).unwrap();
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(anonymous_client_config(roots, &Tuning::default()).unwrap());
        let conn = ep.connect(cluster.meta_addr(), "meta").unwrap().await;
        let err = match conn {
            Err(e) => fs_proto::endpoint::explain_connection_error(&e),
            Ok(c) => {
                let r = tests::raw::send_raw(
                    &c,
                    &fs_proto::frame::encode(&fs_proto::meta::MetaCall {
                        cred: None,
                        req: fs_proto::meta::MetaRequest::WhoAmI,
                    }),
                )
                .await;
                match r {
                    Ok(bytes) => panic!("anonymous peer got an answer: {bytes:?}"),
                    Err(e) => e,
                }
            }
        };
        assert!(err.to_lowercase().contains("certificate"), "unclear error: {err}");

        // And a proper user still works.
        cluster.client("alice", "site1").await.hosts().await.expect("alice is served");
        cluster.shutdown().await;
    })
    .await
}
