//! Faults in the middle of an operation, with real processes (issue 13,
//! acceptance 5): the meta server killed with a rename durable and
//! unanswered, or while its background worker has a destination copying;
//! the source server killed in the middle of a file of `renkei rep`;
//! `renkei put -r` killed with a bundle committed and others on their way.
//! Each kill is decided by an event (a crash point, see
//! `fs_proto::process::crash_point`), never by a timer. Afterwards nothing
//! acknowledged is lost, `renkei fsck` is clean and no server keeps a spool
//! file nobody registered once it restarts.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;
use tests::procs::ProcFederation;
use tests::{pattern, with_timeout};

/// The meta server restarted with crash point `point` armed.
async fn arm_meta(fed: &ProcFederation, point: &str) {
    fed.kill("meta");
    fed.restart_with(&[("RENKEI_CRASH_AT", point)]).await;
}

/// `renkei` run off the runtime's threads with client config `cfg`.
async fn renkei_bg(cfg: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let cfg = cfg.to_path_buf();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(tests::procs::bin_dir().join("renkei"));
        cmd.env("RENKEI_CONFIG", cfg).args(&args).envs(env);
        cmd.output().expect("run renkei")
    })
    .await
    .expect("renkei task")
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meta_server_killed_with_a_rename_durable_keeps_it_whole() {
    with_timeout(120, async {
        let fed = ProcFederation::up(1).await;
        let c = fed.client(None).await;
        c.mkdir("/a/sub", true, 0o755).await.unwrap();
        c.mkdir("/dst", false, 0o755).await.unwrap();
        let files: Vec<(String, Vec<u8>)> =
            (0..6).map(|i| (format!("sub/f{i}"), pattern(1 + i * 50_000, i as u64))).collect();
        for (name, data) in &files {
            c.put_bytes(data, &format!("/a/{name}")).await.unwrap();
        }
        arm_meta(&fed, "meta.rename.flushed").await;
        let mv = renkei_bg(&fed.state.client_config, &[], &["mv", "/a", "/dst/b"]).await;
        fed.wait_dead("meta", Duration::from_secs(30)).await;
        assert!(
            fed.log("meta").contains("crash point meta.rename.flushed reached"),
            "the meta server died in the rename"
        );
        eprintln!("mv with the meta server killed after its flush: {} {}", mv.status, text(&mv).trim());
        fed.restart().await;
        let c = fed.client(None).await;
        // Durable before the crash: the whole tree is at its new name, none
        // of it at the old one.
        let gone = c.stat("/a").await.expect_err("/a was renamed before the crash");
        assert_eq!(gone.errno(), libc::ENOENT, "{gone}");
        for (name, data) in &files {
            let p = format!("/dst/b/{name}");
            let got = c.get_bytes(&p).await.unwrap_or_else(|e| panic!("{p} lost with the crash: {e}"));
            assert!(&got == data, "{p} differs");
        }
        let listed: Vec<String> = c.list("/dst").await.unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(listed, ["b"]);
        // And the namespace goes on: the rename back is answered.
        c.rename("/dst/b", "/a").await.expect("rename after the restart");
        fed.assert_fsck_clean();
    })
    .await
}

/// A local tree of 4 directories of small files: 2,500 entries, three
/// bundles of at most 1,024.
fn local_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for d in 0..4usize {
        std::fs::create_dir_all(root.join(format!("d{d}"))).unwrap();
        for i in 0..624usize {
            let rel = format!("d{d}/f{i:03}");
            let data = pattern(1 + (i * 7919 + d * 104_729) % 20_000, (d * 1000 + i) as u64 + 1);
            std::fs::write(root.join(&rel), &data).unwrap();
            files.push((rel, data));
        }
    }
    files
}

/// How many of `files` are under `/tree`, each whole (the others absent).
async fn whole_or_absent(c: &fs_client::Client, files: &[(String, Vec<u8>)]) -> usize {
    use futures::stream::{self, StreamExt};
    let found: Vec<bool> = stream::iter(files)
        .map(|(rel, data)| async move {
            let p = format!("/tree/{rel}");
            match c.get_bytes(&p).await {
                Ok(got) => {
                    assert!(&got == data, "{p} is torn");
                    true
                }
                Err(e) => {
                    assert_eq!(e.errno(), libc::ENOENT, "{p}: {e}");
                    false
                }
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    found.iter().filter(|f| **f).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_r_killed_after_a_bundle_commit_leaves_whole_files_and_no_orphans() {
    with_timeout(180, async {
        let fed = ProcFederation::up(1).await;
        let tmp = tempfile::tempdir().unwrap();
        // `put -r .../tree /` makes /tree, and the same command run again
        // goes on into it (cp's rule: an existing directory receives the
        // tree by name).
        let files = local_tree(&tmp.path().join("tree"));
        let src = tmp.path().join("tree").to_str().unwrap().to_string();
        // Two bundles in flight at once: when the first is committed the
        // second is on its way and the third not sent.
        let mut cfg = fs_client::ClientConfig::load(&fed.state.client_config).unwrap();
        cfg.parallel = 2;
        let two = fed.dir().join("client-two-bundles.toml");
        std::fs::write(&two, toml::to_string(&cfg).unwrap()).unwrap();
        let out = renkei_bg(&two, &[("RENKEI_CRASH_AT", "client.put_tree.committed")], &["put", "-r", &src, "/"]).await;
        assert_eq!(out.status.signal(), Some(libc::SIGKILL), "put -r died at its crash point: {}", text(&out));
        let c = fed.client(None).await;
        let there = whole_or_absent(&c, &files).await;
        eprintln!("put -r killed after a bundle commit: {there} of {} files there", files.len());
        assert!(there > 0 && there < files.len(), "the kill fell between the first commit and the last ({there})");
        fed.assert_fsck_clean();
        fed.assert_no_orphans_after_restart("pop1").await;
        // The same command again completes the tree.
        let out = renkei_bg(&fed.state.client_config, &[], &["put", "-r", &src, "/"]).await;
        assert!(out.status.success(), "put -r again: {}", text(&out));
        let c = fed.client(None).await;
        assert_eq!(whole_or_absent(&c, &files).await, files.len(), "every file there after the second put -r");
        fed.assert_fsck_clean();
        fed.assert_no_orphans_after_restart("pop1").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rep_whose_source_dies_mid_file_registers_only_whole_copies() {
    with_timeout(180, async {
        const FILES: usize = 12;
        let fed = ProcFederation::up(2).await;
        let c = fed.client(None).await;
        c.mkdir("/big", false, 0o755).await.unwrap();
        let mut inos = Vec::new();
        for i in 0..FILES {
            inos.push(c.put_bytes(&pattern(3 << 20, i as u64), &format!("/big/f{i:02}")).await.unwrap().ino);
        }
        fed.kill("pop1");
        fed.restart_with(&[("RENKEI_CRASH_AT", "server.read_many.mid_file")]).await;
        let rep = {
            let cfg = fed.state.client_config.clone();
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(tests::procs::bin_dir().join("renkei"))
                    .env("RENKEI_CONFIG", cfg)
                    .args(["rep", "-D", "site2", "-j", "1", "--batch-files", "4", "--json", "/big"])
                    .output()
                    .expect("run renkei rep")
            })
        };
        fed.wait_dead("pop1", Duration::from_secs(60)).await;
        assert!(fed.log("pop1").contains("crash point server.read_many.mid_file reached"), "the source died mid-file");
        // Back at once: its stateless reset tells pop2 the old connection
        // is gone (no idle timeout to wait).
        fed.restart().await;
        let rep = rep.await.unwrap();
        assert!(!rep.status.success(), "rep cut at its source reports failure: {}", text(&rep));
        let c = fed.client(None).await;
        let on_pop2 =
            |reps: &[fs_proto::ReplicaInfo], gen| reps.iter().any(|r| r.server.host == "pop2" && r.gen == gen);
        let mut copied = 0;
        for i in 0..FILES {
            let (a, reps) = c.where_is(&format!("/big/f{i:02}")).await.unwrap();
            copied += on_pop2(&reps, a.gen) as usize;
        }
        eprintln!("rep cut at its source: {copied} of {FILES} copies registered");
        assert!(copied < FILES, "the cut copy was not registered");
        // pop2 was not restarted: the cut copy left nothing behind there.
        let (orphans, tmp) = fed.spool_orphans("pop2").await;
        assert!(tmp.is_empty(), "pop2 keeps the cut copy's unfinished file: {tmp:?}");
        assert!(orphans.is_empty(), "pop2 keeps copies nobody registered: {orphans:?}");
        fed.assert_fsck_clean();
        // Run again: the rest is copied.
        let again = renkei_bg(&fed.state.client_config, &[], &["rep", "-D", "site2", "/big"]).await;
        assert!(again.status.success(), "rep again: {}", text(&again));
        for i in 0..FILES {
            let (a, reps) = c.where_is(&format!("/big/f{i:02}")).await.unwrap();
            assert!(on_pop2(&reps, a.gen), "f{i:02} on site2 after the second run");
        }
        fed.assert_fsck_clean();
        fed.assert_no_orphans_after_restart("pop1").await;
        fed.assert_no_orphans_after_restart("pop2").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meta_server_killed_while_its_worker_copies_finishes_the_copy_count() {
    with_timeout(180, async {
        const FILES: usize = 16;
        let fed = ProcFederation::up(2).await;
        let c = fed.client(None).await;
        c.mkdir("/keep", false, 0o755).await.unwrap();
        let mut written = Vec::new();
        for i in 0..FILES {
            let (p, data) = (format!("/keep/f{i:02}"), pattern(400_000 + i * 1000, i as u64));
            c.put_bytes(&data, &p).await.unwrap();
            written.push((p, data));
        }
        arm_meta(&fed, "meta.replication.copied").await;
        let c = fed.client(None).await;
        // The worker orders copies to pop2 for the new copy count; the
        // meta server dies as the first one is reported.
        c.set_ncopy("/keep", 2, true).await.unwrap();
        fed.wait_dead("meta", Duration::from_secs(60)).await;
        assert!(fed.log("meta").contains("crash point meta.replication.copied reached"), "died while copying");
        fed.restart().await;
        let c = fed.client(None).await;
        // The restarted worker completes the copy count (looked at again
        // whenever a process logs: a copy order, a heartbeat).
        fed.wait_until(Duration::from_secs(60), "2 copies of every file", || async {
            let mut short = Vec::new();
            for (p, _) in &written {
                let (a, reps) = c.where_is(p).await.unwrap();
                let sites: std::collections::BTreeSet<_> =
                    reps.iter().filter(|r| r.gen == a.gen && r.alive).map(|r| r.server.site.clone()).collect();
                if sites.len() < 2 {
                    short.push(p.clone());
                }
            }
            if short.is_empty() {
                Ok(())
            } else {
                Err(format!("still short of 2 copies: {short:?}"))
            }
        })
        .await;
        for (p, data) in &written {
            assert!(c.get_bytes(p).await.unwrap() == *data, "{p} differs");
        }
        fed.assert_fsck_clean();
        fed.assert_no_orphans_after_restart("pop2").await;
        fed.assert_no_orphans_after_restart("pop1").await;
    })
    .await
}
