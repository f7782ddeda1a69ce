//! Nothing acknowledged is lost when a process dies mid-copy (issue 19),
//! with real processes: a file server or the meta server killed right
//! after committing a bundle (before the mount hears), a mount killed
//! holding a directory lease, and each of the three killed at a seeded
//! moment of a copy. Exact moments come from crash points
//! (`RENKEI_CRASH_AT`, see `fs_proto::process::crash_point`), the others
//! from the copy's own progress.

use crate::common::{blocking, enabled, wait_mounted, TestMount};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tests::procs::{bin_dir, ProcFederation};
use tests::{pattern, with_timeout};

/// Write `files` into the new directory `dir` (each closed), then fsync the
/// directory, which returns once they are committed.
fn write_and_fsync_dir(dir: PathBuf, files: Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    std::fs::create_dir(&dir)?;
    for (name, data) in &files {
        std::fs::write(dir.join(name), data)?;
    }
    std::fs::File::open(&dir)?.sync_all()
}

fn small_files(n: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    (0..n).map(|i| (format!("f{i:03}"), pattern(1 + (i * 7919 + seed as usize) % 40_000, seed + i as u64))).collect()
}

/// Every file reads back whole through a fresh client, and fsck is clean.
async fn all_there(fed: &ProcFederation, dir: &str, files: &[(String, Vec<u8>)]) {
    let c = fed.client(None).await;
    for (name, data) in files {
        let p = format!("{dir}/{name}");
        let got = c.get_bytes(&p).await.unwrap_or_else(|e| panic!("{p}, closed before the crash, is lost: {e}"));
        assert!(&got == data, "{p} differs");
    }
    fsck_clean(fed);
}

fn fsck_clean(fed: &ProcFederation) {
    let out = fed.renkei(None, &["fsck", "/"]);
    assert!(
        out.status.success(),
        "fsck / is not clean:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The process `victim` dies at `point` (right after the meta server
/// committed a bundle, before the mount hears); every file whose close
/// returned is there once it is back.
async fn killed_after_a_commit(victim: &str, point: &str) {
    let t0 = Instant::now();
    let fed = ProcFederation::up(1).await;
    let m = TestMount::new(&fed, None, "/", "").await;
    fed.kill(victim);
    fed.restart_with(&[("RENKEI_CRASH_AT", point)]).await;
    let files = small_files(40, 1);
    let writer = tokio::spawn(blocking({
        let (d, f) = (m.join("copy"), files.clone());
        move || write_and_fsync_dir(d, f)
    }));
    fed.wait_dead(victim, Duration::from_secs(30)).await;
    eprintln!("{victim} died at {point} {:?}", t0.elapsed());
    fed.restart().await;
    writer.await.unwrap().expect("fsync returns once the bundle is committed after the restart");
    m.unmount().await;
    all_there(&fed, "/copy", &files).await;
    assert!(fed.log(victim).contains(&format!("crash point {point} reached")), "the crash happened where meant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_server_killed_after_a_commit_destroys_no_committed_replica() {
    if !enabled("a_file_server_killed_after_a_commit_destroys_no_committed_replica") {
        return;
    }
    with_timeout(180, killed_after_a_commit("pop1", "server.bundle.committed")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_meta_server_killed_after_a_commit_loses_no_closed_file() {
    if !enabled("a_meta_server_killed_after_a_commit_loses_no_closed_file") {
        return;
    }
    with_timeout(180, killed_after_a_commit("meta", "meta.commit_bundle.flushed")).await
}

/// `renkei mount -f` with client config `cfg` at `mp`, as a child process
/// (so it can be killed), once mounted (blocking).
pub(crate) fn mount_process(cfg: PathBuf, mp: PathBuf) -> std::process::Child {
    let child = std::process::Command::new(bin_dir().join("renkei"))
        .env("RENKEI_CONFIG", cfg)
        .arg("mount")
        .arg("-f")
        .arg(&mp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_mounted(&mp, Duration::from_secs(20));
    child
}

pub(crate) fn umount(mp: &Path) {
    let out = std::process::Command::new(bin_dir().join("renkei")).arg("umount").arg(mp).output().unwrap();
    assert!(out.status.success(), "renkei umount: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_mount_gives_up_its_directory_lease_within_the_bound() {
    if !enabled("a_killed_mount_gives_up_its_directory_lease_within_the_bound") {
        return;
    }
    with_timeout(120, async {
        let fed = ProcFederation::up(1).await;
        let tmp = tempfile::tempdir().unwrap();
        let mp = tmp.path().join("mnt");
        std::fs::create_dir(&mp).unwrap();
        let mut child = blocking({
            let (cfg, mp) = (fed.state.client_config.clone(), mp.clone());
            move || {
                let child = mount_process(cfg, mp.clone());
                // A file created and fsync'ed in a new directory: the mount
                // holds the directory's write lease (kept after commits).
                std::fs::create_dir(mp.join("d")).unwrap();
                std::fs::File::create(mp.join("d/x")).unwrap().write_all(b"x").unwrap();
                std::fs::File::open(mp.join("d")).unwrap().sync_all().unwrap();
                child
            }
        })
        .await;
        child.kill().unwrap();
        child.wait().unwrap();
        umount(&mp);
        // A new mount looks into the directory: the meta server recalls the
        // dead mount's lease, hears no acknowledgement, and ends its session
        // after RECALL_ACK_BOUND (2 s), instead of the recall timeout (10 s).
        let t = Instant::now();
        let m = TestMount::new(&fed, None, "/", "").await;
        let listed = blocking({
            let d = m.join("d");
            move || std::fs::read_dir(d).map(|d| d.map(|e| e.unwrap().file_name()).collect::<Vec<_>>())
        })
        .await;
        let took = t.elapsed();
        eprintln!("a new mount was up and had listed /d {took:?} after the old one was killed: {listed:?}");
        assert_eq!(listed.unwrap(), ["x"], "what the killed mount fsync'ed is there");
        assert!(took >= Duration::from_millis(1_500), "the lease was held and recalled ({took:?})");
        assert!(took < Duration::from_secs(3), "the dead mount's lease held the new mount up for {took:?}");
        m.unmount().await;
    })
    .await
}

/// Which process dies during the copy.
#[derive(Debug, Clone, Copy)]
enum Victim {
    Meta,
    Server,
    Mount,
}

/// One run: a tree copied in and fsync'ed, then a second copy during which
/// `victim` is killed after `after` files were closed; the victim comes back
/// and everything is checked.
async fn kill_during_copy(victim: Victim, seed: u64) {
    let fed = ProcFederation::up(1).await;
    let tmp = tempfile::tempdir().unwrap();
    let mp = tmp.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let mut child = blocking({
        let (cfg, mp) = (fed.state.client_config.clone(), mp.clone());
        move || mount_process(cfg, mp)
    })
    .await;
    let kept = small_files(30, seed);
    blocking({
        let (d, f) = (mp.join("kept"), kept.clone());
        move || write_and_fsync_dir(d, f)
    })
    .await
    .expect("the first copy is fsync'ed");
    let files: Vec<(String, Vec<u8>)> = (0..60usize)
        .map(|i| {
            (format!("g{i:03}"), pattern(1 + (i * 104_729 + seed as usize * 31) % 600_000, seed * 1000 + i as u64))
        })
        .collect();
    let after = 5 + (seed as usize * 17) % 40;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let copier = tokio::spawn(blocking({
        let (d, f) = (mp.join("copy"), files.clone());
        move || {
            let mut tx = Some(tx);
            let mut closed = Vec::new();
            let _ = std::fs::create_dir(&d);
            for (i, (name, data)) in f.iter().enumerate() {
                if std::fs::write(d.join(name), data).is_ok() {
                    closed.push(name.clone());
                }
                if i + 1 == after {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
            closed
        }
    }));
    rx.await.unwrap();
    match victim {
        Victim::Meta => fed.kill("meta"),
        Victim::Server => fed.kill("pop1"),
        Victim::Mount => {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
    eprintln!("seed {seed}: {victim:?} killed after {after} files closed");
    if !matches!(victim, Victim::Mount) {
        fed.restart().await;
    }
    let closed = copier.await.unwrap();
    match victim {
        Victim::Mount => umount(&mp),
        _ => {
            // A live mount holds what it acknowledged: unmounting commits it.
            umount(&mp);
            let _ = child.wait();
        }
    }
    let c = fed.client(None).await;
    for (name, data) in &kept {
        assert!(c.get_bytes(&format!("/kept/{name}")).await.unwrap() == *data, "fsync'ed /kept/{name} damaged");
    }
    for (name, data) in &files {
        let p = format!("/copy/{name}");
        match c.get_bytes(&p).await {
            Ok(got) => assert!(&got == data, "seed {seed}, {victim:?}: {p} is torn"),
            Err(e) if matches!(victim, Victim::Mount) || !closed.contains(name) => {
                assert_eq!(e.errno(), libc::ENOENT, "seed {seed}, {victim:?}: {p}: {e}")
            }
            Err(e) => panic!("seed {seed}, {victim:?}: {p} was closed without error and is lost: {e}"),
        }
    }
    eprintln!("seed {seed}, {victim:?}: {} of {} files closed, all closed ones whole", closed.len(), files.len());
    fsck_clean(&fed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_process_killed_during_a_copy_loses_nothing_it_acknowledged() {
    if !enabled("each_process_killed_during_a_copy_loses_nothing_it_acknowledged") {
        return;
    }
    with_timeout(900, async {
        for seed in [1u64, 2, 3] {
            for victim in [Victim::Meta, Victim::Server, Victim::Mount] {
                kill_during_copy(victim, seed).await;
            }
        }
    })
    .await
}
