//! Finding 10: roles. A host certificate used to act as uid 0 and could
//! assert any credentials; any host could act as a file server; a
//! capability named its principal by name alone, so a user named like a
//! host could present the host's. Now a host has only the rights of its
//! function: a file server acts in the namespace as nobody and as a file
//! server only under its own name (and only if `file_servers` lists it);
//! root is an explicit grant (`admin_hosts`); capabilities name the role.

use fs_proto::identity::{CaDir, IdentityError, IssueRequest, Role};
use fs_proto::meta::{HeartbeatReport, MetaRequest, MetaResponse, SetAttr};
use fs_proto::replication::{CopyGoal, ReplicationQuery};
use fs_proto::rpc::{reply, request};
use fs_proto::server::{ServerRequest, ServerResponse};
use fs_proto::{Cred, ErrorCode, SignedCapability};
use tests::cluster::Cluster;
use tests::with_timeout;

/// A client of `cluster` at `site` holding the host certificate of `host`
/// (issued now unless the CA has it already): what a rogue operator of
/// that host has.
async fn as_host(cluster: &Cluster, host: &str, site: &str) -> fs_client::Client {
    let files = cluster.ca().issued_paths(Role::Host, host);
    if !files.cert.exists() {
        tests::cluster::issue(cluster.ca(), host, Role::Host, Some(site));
    }
    let mut cfg = cluster.client_config("harness", site);
    cfg.tls.cert = files.cert;
    cfg.tls.key = files.key;
    fs_client::Client::connect(cfg).await.expect("host client")
}

/// The error code and message of a meta request.
async fn refused(c: &fs_client::Client, req: MetaRequest) -> (ErrorCode, String) {
    match c.meta().call(req).await {
        Ok(MetaResponse::Batch(mut v)) => match v.pop().expect("one answer") {
            Ok(ok) => panic!("answered {ok:?}"),
            Err(e) => (e.code, e.message),
        },
        Ok(ok) => panic!("answered {ok:?}"),
        Err(e) => (e.code().unwrap_or(ErrorCode::Internal), e.to_string()),
    }
}

/// Present `cap` to file server `host` for reading, with `tls`.
async fn read_with(
    cluster: &Cluster,
    tls: &fs_proto::endpoint::TlsFiles,
    host: &str,
    cap: SignedCapability,
) -> Result<Vec<u8>, (ErrorCode, String)> {
    let loc = cluster.meta_service().hosts.live_loc(host).expect("server alive");
    let conn = tests::raw::connect(loc.addr, host, tls).await.expect("connect");
    let (mut send, mut recv) = request(&conn, &ServerRequest::Read { cap, offset: 0, len: u64::MAX }).await.unwrap();
    send.finish().unwrap();
    match reply::<ServerResponse>(&mut recv).await.expect("reply frame") {
        Ok(ServerResponse::Reading { .. }) => Ok(recv.read_to_end(1 << 20).await.expect("bytes")),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(e) => Err((e.code, e.message)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_servers_certificate_has_no_rights_over_users_files() {
    with_timeout(120, async {
        let cluster = Cluster::builder().sites(2).meta_config(|c| c.admin_hosts = vec!["vpe".into()]).start().await;
        let alice = cluster.client("alice", "site1").await;
        alice.mkdir("/a", false, 0o700).await.unwrap();
        alice.put_bytes(b"alice's secret", "/a/secret").await.unwrap();
        alice.chmod("/a/secret", 0o600).await.unwrap();
        let dir = alice.stat("/a").await.unwrap().ino;
        let secret = alice.stat("/a/secret").await.unwrap();
        let me = alice.meta().whoami().await.unwrap();

        // pop2's certificate, used as a client by whoever runs pop2.
        let pop2 = as_host(&cluster, "pop2", "site2").await;
        let who = pop2.meta().whoami().await.unwrap();
        assert_eq!((who.uid, who.gid, who.admin), (65_534, 65_534, false), "a file server acts as nobody");
        assert_eq!(pop2.get_bytes("/a/secret").await.unwrap_err().errno(), libc::EACCES);
        use MetaRequest as Q;
        let chmod = SetAttr { perm: Some(0o777), ..Default::default() };
        let attacks = vec![
            ("open_read", Q::OpenRead { ino: secret.ino }),
            ("getattr", Q::GetAttr { ino: secret.ino }),
            ("unlink", Q::Unlink { parent: dir, name: "secret".into() }),
            ("setattr", Q::SetAttr { ino: secret.ino, set: chmod.clone() }),
            (
                "rename",
                Q::Rename {
                    parent: dir,
                    name: "secret".into(),
                    new_parent: 1,
                    new_name: "x".into(),
                    flags: Default::default(),
                },
            ),
            ("open_write", Q::OpenWrite { ino: secret.ino, site: "site2".into() }),
            ("batch", Q::Batch(vec![Q::Unlink { parent: dir, name: "secret".into() }])),
        ];
        for (what, q) in attacks.clone() {
            let (code, msg) = refused(&pop2, q).await;
            assert_eq!(code, ErrorCode::PermissionDenied, "{what}: {msg}");
        }
        // Asserting alice's credentials (or root's) is refused, and says why.
        for cred in [Cred { uid: me.uid, gid: me.gid, groups: vec![] }, Cred { uid: 0, gid: 0, groups: vec![] }] {
            let as_other = pop2.meta().with_cred(Some(cred));
            for (what, q) in attacks.clone() {
                let e = as_other.call(q).await.unwrap_err();
                assert_eq!(e.code(), Some(ErrorCode::NotPermitted), "{what}: {e}");
                assert!(e.to_string().contains("may not assert credentials"), "{what}: {e}");
            }
        }
        // Nor may it set quotas, or see anyone's.
        let e = pop2.meta().call(Q::GetQuota { user: None, all: true }).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::NotPermitted), "{e}");

        // Nothing lost; the federation serves alice and others.
        assert_eq!(alice.get_bytes("/a/secret").await.unwrap(), b"alice's secret");
        assert_eq!(alice.stat("/a/secret").await.unwrap().perm, 0o600);
        let bob = cluster.client("bob", "site2").await;
        bob.put_bytes(b"bob's", "/b").await.unwrap();
        assert_eq!(bob.get_bytes("/b").await.unwrap(), b"bob's");
        // pop2 still serves as a file server (it heartbeats under its own name).
        cluster.wait_alive(2, std::time::Duration::from_secs(10)).await;

        // Root is an explicit grant: the VM manager's host, listed in
        // `admin_hosts`, reads what the manager needs to.
        let vpe = as_host(&cluster, "vpe", "site1").await;
        assert!(vpe.meta().whoami().await.unwrap().admin);
        assert_eq!(vpe.get_bytes("/a/secret").await.unwrap(), b"alice's secret");
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_hosts_act_as_file_servers_and_each_only_as_itself() {
    with_timeout(120, async {
        let cluster = Cluster::builder()
            .sites(2)
            .meta_config(|c| c.file_servers = Some(vec!["pop1".into(), "pop2".into()]))
            .start()
            .await;
        let alice = cluster.client("alice", "site1").await;
        alice.put_bytes(b"alice's data", "/f").await.unwrap();
        let f = alice.stat("/f").await.unwrap();

        // A host certificate that is not a file server's (a VM agent's, say)
        // tries to join as one at site1, where it would take writes.
        let rogue = as_host(&cluster, "rogue", "site1").await;
        let report = HeartbeatReport {
            addr: "127.0.0.1:9".parse().unwrap(),
            capacity: 1 << 40,
            free: 1 << 40,
            load: 0.0,
            deleted: vec![],
            problems: vec![],
            bytes_in: 0,
            bytes_out: 0,
            voids_seen: 0,
        };
        use MetaRequest as Q;
        for (what, q) in [
            ("heartbeat", Q::Heartbeat(report.clone())),
            ("inventory", Q::Inventory { replicas: vec![], done: true }),
            ("report_bad", Q::ReportBadReplica { ino: f.ino, gen: f.gen, reason: "rogue".into() }),
        ] {
            let (code, msg) = refused(&rogue, q).await;
            assert_eq!(code, ErrorCode::NotPermitted, "{what}: {msg}");
            assert!(msg.contains("reserved for file servers") && msg.contains("rogue"), "{what}: {msg}");
        }
        assert!(cluster.meta_service().hosts.live_loc("rogue").is_none(), "the rogue host is no file server");

        // A listed file server registers only copies issued to it: pop1
        // presents the copy capability alice's plan issued to pop2.
        let plan = alice
            .meta()
            .call(Q::PlanReplication(ReplicationQuery {
                inos: vec![f.ino],
                goal: CopyGoal::Copies(1),
                from: None,
                to: Some("site2".into()),
                dry_run: false,
            }))
            .await
            .unwrap();
        let MetaResponse::ReplicationPlan(plan) = plan else { panic!("unexpected {plan:?}") };
        let item = plan.orders[0].items[0].clone();
        assert_eq!(plan.orders[0].target.host, "pop2");
        let pop1 = as_host(&cluster, "pop1", "site1").await;
        let (code, msg) =
            refused(&pop1, Q::RegisterReplica { cap: item.cap.clone(), size: item.size, hash: item.hash }).await;
        assert_eq!(code, ErrorCode::BadCapability, "{msg}");
        assert!(msg.contains("issued to host pop2, registered by host pop1"), "{msg}");
        // A user may do none of it.
        let (code, msg) = refused(&alice, Q::Heartbeat(report)).await;
        assert_eq!(code, ErrorCode::NotPermitted, "{msg}");

        // Nothing lost: one replica, on pop1, readable; writes go on.
        let (_, replicas) = alice.where_is("/f").await.unwrap();
        assert_eq!(replicas.iter().map(|r| r.server.host.as_str()).collect::<Vec<_>>(), ["pop1"]);
        assert_eq!(alice.get_bytes("/f").await.unwrap(), b"alice's data");
        alice.put_bytes(b"more", "/g").await.unwrap();
        assert_eq!(alice.where_is("/g").await.unwrap().1[0].server.host, "pop1");
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_named_like_a_host_is_not_issued_and_cannot_use_the_hosts_capability() {
    with_timeout(120, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let req = |name: &str, role| IssueRequest {
            name: name.into(),
            role,
            site: (role == Role::Host).then(|| "site1".to_string()),
            not_before: None,
            valid_days: 1,
        };
        // `renkei ca issue` refuses a user named like a host, and the reverse.
        let e = cluster.ca().issue(&req("pop1", Role::User)).unwrap_err();
        assert!(matches!(e, IdentityError::NameTaken { role: Role::Host, .. }), "{e}");
        assert!(e.to_string().contains("users and hosts need different names"), "{e}");
        let alice = cluster.client("alice", "site1").await;
        let e = cluster.ca().issue(&req("alice", Role::Host)).unwrap_err();
        assert!(matches!(e, IdentityError::NameTaken { role: Role::User, .. }), "{e}");
        let bin = std::env::var_os("RENKEI_BIN_DIR").map(std::path::PathBuf::from);
        if let Some(renkei) = bin.map(|b| b.join("renkei")).filter(|p| p.exists()) {
            let out = std::process::Command::new(renkei)
                .args(["ca", "issue", "--dir"])
                .arg(cluster.dir().join("ca"))
                .args(["--user", "pop1"])
                .output()
                .expect("renkei ca issue");
            assert!(!out.status.success());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("already the name of a host certificate"), "{err}");
        }

        // A copy of the CA elsewhere (a second administrator's) knows no
        // hosts and issues a user "pop1" anyway.
        let copy = CaDir::new(cluster.dir().join("ca-copy"));
        std::fs::create_dir_all(cluster.dir().join("ca-copy")).unwrap();
        std::fs::copy(cluster.ca().cert_path(), copy.cert_path()).unwrap();
        std::fs::copy(cluster.ca().key_path(), copy.key_path()).unwrap();
        let user = copy.issue(&req("pop1", Role::User)).expect("the copy does not know pop1");
        let mut cfg = cluster.client_config("harness", "site1");
        cfg.tls.cert = user.cert;
        cfg.tls.key = user.key;
        let impostor = fs_client::Client::connect(cfg.clone()).await.expect("user pop1");

        // alice's drop box: others may write, not read.
        alice.put_bytes(b"for alice's eyes", "/drop").await.unwrap();
        alice.chmod("/drop", 0o622).await.unwrap();
        assert_eq!(impostor.get_bytes("/drop").await.unwrap_err().errno(), libc::EACCES);
        // Opening it for writing hands the writer a read capability for the
        // current bytes, issued to the file server that will write (pop1),
        // which used to be any peer named "pop1".
        let ino = alice.stat("/drop").await.unwrap().ino;
        let grant = impostor.meta().open_write(ino, "site1").await.expect("write permission");
        assert_eq!(grant.target.host, "pop1");
        let base = grant.base.expect("a base to copy from");
        let (code, msg) = read_with(&cluster, &cfg.tls, "pop1", base.cap).await.unwrap_err();
        assert_eq!(code, ErrorCode::BadCapability, "{msg}");
        assert!(msg.contains("issued to host pop1, presented by user pop1"), "{msg}");

        // Nothing lost; others go on.
        assert_eq!(alice.get_bytes("/drop").await.unwrap(), b"for alice's eyes");
        alice.put_bytes(b"new", "/n").await.unwrap();
        assert_eq!(alice.get_bytes("/n").await.unwrap(), b"new");
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vpe_hosts_root_ends_at_vpe() {
    with_timeout(120, async {
        let cluster = Cluster::builder()
            .sites(1)
            .meta_config(|c| {
                c.admin_hosts = vec!["vpe".into()];
                c.vpe_hosts = vec!["pop1".into()];
            })
            .start()
            .await;
        // The VM store as `vpe serve` lays it out: root's, a private image.
        let vpe = as_host(&cluster, "vpe", "site1").await;
        vpe.mkdir("/vpe", false, 0o755).await.unwrap();
        vpe.mkdir("/vpe/images", false, 0o755).await.unwrap();
        vpe.mkdir("/vpe/images/private", false, 0o700).await.unwrap();
        vpe.put_bytes(b"root's disk", "/vpe/images/private/disk").await.unwrap();
        vpe.chmod("/vpe/images/private/disk", 0o600).await.unwrap();
        let alice = cluster.client("alice", "site1").await;
        alice.mkdir("/a", false, 0o700).await.unwrap();
        alice.put_bytes(b"alice's secret", "/a/secret").await.unwrap();
        alice.chmod("/a/secret", 0o600).await.unwrap();
        let secret = alice.stat("/a/secret").await.unwrap();
        let a = alice.stat("/a").await.unwrap().ino;

        // pop1's agent does its job under /vpe: reads a private image,
        // writes a saved one (root's).
        let pop1 = as_host(&cluster, "pop1", "site1").await;
        assert_eq!(pop1.get_bytes("/vpe/images/private/disk").await.unwrap(), b"root's disk");
        pop1.mkdir("/vpe/images/saved", false, 0o700).await.unwrap();
        pop1.put_bytes(b"saved disk", "/vpe/images/saved/disk").await.unwrap();
        assert_eq!(alice.stat("/vpe/images/saved/disk").await.unwrap_err().errno(), libc::EACCES);
        assert_eq!(vpe.stat("/vpe/images/saved/disk").await.unwrap().uid, 0);
        assert_eq!(vpe.get_bytes("/vpe/images/saved/disk").await.unwrap(), b"saved disk");

        // Outside /vpe it is nobody, and no admin.
        let who = pop1.meta().whoami().await.unwrap();
        assert_eq!((who.uid, who.admin), (65_534, false));
        assert_eq!(pop1.get_bytes("/a/secret").await.unwrap_err().errno(), libc::EACCES);
        assert_eq!(pop1.get_bytes("/vpe/../a/secret").await.unwrap_err().errno(), libc::EACCES);
        let saved = pop1.stat("/vpe/images/saved").await.unwrap().ino;
        use MetaRequest as Q;
        let chmod = SetAttr { perm: Some(0o777), ..Default::default() };
        for (what, q) in [
            ("open_read", Q::OpenRead { ino: secret.ino }),
            ("setattr", Q::SetAttr { ino: secret.ino, set: chmod }),
            ("unlink", Q::Unlink { parent: a, name: "secret".into() }),
            // Pulling alice's file into /vpe, or an image out of it.
            ("link in", Q::Link { ino: secret.ino, new_parent: saved, new_name: "stolen".into() }),
            (
                "rename out",
                Q::Rename {
                    parent: saved,
                    name: "disk".into(),
                    new_parent: 1,
                    new_name: "disk".into(),
                    flags: Default::default(),
                },
            ),
            ("batch", Q::Batch(vec![Q::GetAttr { ino: saved }, Q::OpenRead { ino: secret.ino }])),
        ] {
            let (code, msg) = refused(&pop1, q).await;
            assert_eq!(code, ErrorCode::PermissionDenied, "{what}: {msg}");
        }
        let e = pop1.meta().call(Q::GetQuota { user: None, all: true }).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::NotPermitted), "{e}");
        let as_root = pop1.meta().with_cred(Some(Cred { uid: 0, gid: 0, groups: vec![] }));
        let e = as_root.call(Q::OpenRead { ino: secret.ino }).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::NotPermitted), "{e}");

        // Nothing lost; alice goes on.
        assert_eq!(alice.get_bytes("/a/secret").await.unwrap(), b"alice's secret");
        assert_eq!(vpe.get_bytes("/vpe/images/saved/disk").await.unwrap(), b"saved disk");
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_file_server_list_any_host_heartbeats_but_only_as_itself() {
    with_timeout(120, async {
        let cluster = Cluster::builder().sites(1).meta_config(|c| c.admin_hosts = vec!["vpe".into()]).start().await;
        let report = |port: u16| HeartbeatReport {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            capacity: 1 << 30,
            free: 1 << 30,
            load: 0.0,
            deleted: vec![],
            problems: vec![],
            bytes_in: 0,
            bytes_out: 0,
            voids_seen: 0,
        };
        let hosts = || cluster.meta_service().hosts.list(&Default::default());
        // An admin host heartbeats as a file server, under its own name,
        // whatever credentials it asserts.
        let vpe = as_host(&cluster, "vpe", "site1").await;
        let as_alice = vpe.meta().with_cred(Some(Cred { uid: 10_000, gid: 10_000, groups: vec![] }));
        for c in [vpe.meta().clone(), as_alice] {
            match c.call(MetaRequest::Heartbeat(report(9))).await.unwrap() {
                MetaResponse::HeartbeatAck { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let vpe_loc = cluster.meta_service().hosts.live_loc("vpe").expect("vpe is a file server now");
        assert_eq!(vpe_loc.addr.port(), 9);
        // A host without any grant heartbeats too, as itself only: pop1's
        // record stays pop1's.
        let pop1_before = cluster.meta_service().hosts.live_loc("pop1").expect("pop1 alive");
        let other = as_host(&cluster, "other", "site1").await;
        other.meta().call(MetaRequest::Heartbeat(report(10))).await.unwrap();
        assert_eq!(cluster.meta_service().hosts.live_loc("other").unwrap().addr.port(), 10);
        assert_eq!(cluster.meta_service().hosts.live_loc("pop1").unwrap(), pop1_before);
        let names: Vec<String> = hosts().into_iter().map(|h| h.host).collect();
        for n in ["pop1", "vpe", "other"] {
            assert!(names.iter().any(|h| h == n), "{n} in {names:?}");
        }
        // A user may not.
        let alice = cluster.client("alice", "site1").await;
        let (code, msg) = refused(&alice, MetaRequest::Heartbeat(report(11))).await;
        assert_eq!(code, ErrorCode::NotPermitted, "{msg}");
        cluster.shutdown().await;
    })
    .await
}
