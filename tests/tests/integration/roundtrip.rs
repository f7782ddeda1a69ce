//! put/get round trips, stat, where, listing (issue 2, acceptance 3).

use fs_proto::{hash_hex, FileKind};
use tests::cluster::Cluster;
use tests::{pattern, with_timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_sizes_are_byte_identical() {
    with_timeout(120, async {
        let cluster = Cluster::builder().sites(2).start().await;
        let c = cluster.client("alice", "site2").await;
        for (i, size) in [0usize, 1, 64 * 1024, 100 << 20].into_iter().enumerate() {
            let data = pattern(size, i as u64 + 1);
            let path = format!("/f{size}");
            let attr = c.put_bytes(&data, &path).await.expect("put");
            assert_eq!(attr.size, size as u64);
            let back = c.get_bytes(&path).await.expect("get");
            assert!(back == data, "{size} bytes differ after the round trip");

            // Through a local file too (what `renkei get` does).
            let local = cluster.dir().join(format!("out{size}"));
            let n = c.get_file(&path, &local, &|_| {}).await.expect("get_file");
            assert_eq!(n, size as u64);
            assert!(std::fs::read(&local).unwrap() == data);

            let st = c.stat(&path).await.expect("stat");
            assert_eq!(st.size, size as u64);
            assert_eq!(st.hash.map(|h| hash_hex(&h)), Some(blake3::hash(&data).to_hex().to_string()));
            if size > 0 {
                let (_, reps) = c.where_is(&path).await.expect("where");
                assert_eq!(reps.len(), 1);
                assert_eq!(reps[0].server.site, "site2", "a write lands at the writer's site");
            }
        }
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_of_a_thousand_files_round_trips() {
    with_timeout(180, async {
        let cluster = Cluster::builder().sites(2).start().await;
        let c = cluster.client("alice", "site1").await;
        let src = cluster.dir().join("src");
        let mut expect = Vec::new();
        for i in 0..1000 {
            let d = src.join(format!("d{}", i % 10)).join(format!("e{}", i % 3));
            std::fs::create_dir_all(&d).unwrap();
            let data = pattern(i * 37 % 5000, i as u64);
            let p = d.join(format!("file{i}.dat"));
            std::fs::write(&p, &data).unwrap();
            expect.push((p, data));
        }
        let (files, _) = c.put_tree(&src, "/tree", &|_| {}).await.expect("put -r");
        assert_eq!(files, 1000);
        let dst = cluster.dir().join("dst");
        let (files, _) = c.get_tree("/tree", &dst, &|_| {}).await.expect("get -r");
        assert_eq!(files, 1000);
        for (p, data) in &expect {
            let rel = p.strip_prefix(&src).unwrap();
            let got = std::fs::read(dst.join(rel)).unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
            assert!(&got == data, "{} differs", rel.display());
        }
        let listing = c.list("/tree/d3/e1").await.expect("ls");
        assert!(listing.iter().all(|e| e.kind == FileKind::Regular && e.attr.is_some()));
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_operations() {
    with_timeout(60, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let c = cluster.client("alice", "site1").await;
        c.mkdir("/a/b/c", true, 0o755).await.expect("mkdir -p");
        c.mkdir("/a/b/c", true, 0o755).await.expect("mkdir -p is idempotent");
        assert_eq!(c.mkdir("/a", false, 0o755).await.unwrap_err().errno(), libc::EEXIST);
        c.put_bytes(b"one", "/a/b/c/x").await.unwrap();
        c.put_bytes(b"two", "/a/b/c/x").await.expect("overwrite");
        assert_eq!(c.get_bytes("/a/b/c/x").await.unwrap(), b"two");
        c.rename("/a/b/c/x", "/a/y").await.expect("mv");
        assert_eq!(c.get_bytes("/a/y").await.unwrap(), b"two");
        assert_eq!(c.stat("/a/b/c/x").await.unwrap_err().errno(), libc::ENOENT);
        c.rename("/a/y", "/a/b").await.expect("mv into a directory");
        assert_eq!(c.get_bytes("/a/b/y").await.unwrap(), b"two");
        let st = c.chmod("/a/b/y", 0o600).await.expect("chmod");
        assert_eq!(st.perm, 0o600);
        assert_eq!(c.remove("/a", false).await.unwrap_err().errno(), libc::ENOTEMPTY);
        c.remove("/a", true).await.expect("rm -r");
        assert_eq!(c.stat("/a").await.unwrap_err().errno(), libc::ENOENT);
        let df = c.df().await.expect("df");
        assert_eq!(df.servers, 1);
        assert!(df.capacity > 0 && df.free > 0);
        cluster.shutdown().await;
    })
    .await
}
