//! The mount across failures (acceptance 5): the meta server killed and
//! restarted under a mounted client, an open file read across it, `stat`
//! failing within the bound while it is down; and a killed mount process
//! leaving nothing behind after `renkei umount`.

use crate::common::{blocking, enabled, in_mount_table, wait_mounted, TestMount};
use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};
use tests::procs::{bin_dir, ProcFederation};
use tests::{pattern, with_timeout};

/// `-o timeout=` used here; a metadata operation fails within about this
/// plus one call timeout (the same value) while the meta server is down.
const TIMEOUT_SECS: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mount_survives_a_meta_restart_and_open_files_keep_reading() {
    if !enabled("mount_survives_a_meta_restart_and_open_files_keep_reading") {
        return;
    }
    with_timeout(240, async {
        let fed = ProcFederation::up(1).await;
        let m = TestMount::new(&fed, None, "/", &format!("timeout={TIMEOUT_SECS}")).await;
        let data = pattern(3 << 20, 7);
        let f = m.join("kept.bin");
        blocking({
            let (f, d) = (f.clone(), data.clone());
            move || std::fs::write(f, d)
        })
        .await
        .unwrap();
        let (mut file, head) = blocking({
            let f = f.clone();
            move || {
                let mut file = std::fs::File::open(f).unwrap();
                let mut head = vec![0u8; 4096];
                file.read_exact(&mut head).unwrap();
                (file, head)
            }
        })
        .await;
        assert_eq!(head, data[..4096]);

        fed.kill("meta");
        let t = Instant::now();
        let missing = blocking({
            let p = m.join("never-looked-up");
            move || std::fs::symlink_metadata(p)
        })
        .await;
        let took = t.elapsed();
        assert!(missing.is_err(), "stat of an unknown name cannot succeed while meta is down");
        let bound = Duration::from_secs(2 * TIMEOUT_SECS + 3);
        assert!(took < bound, "stat took {took:?} with the meta server down (bound {bound:?})");
        eprintln!("stat failed after {took:?} with the meta server down: {missing:?}");

        // The open file reads on while meta is down: its bytes come from the file server.
        let (file_back, rest) = blocking(move || {
            let mut rest = Vec::new();
            file.read_to_end(&mut rest).unwrap();
            (file, rest)
        })
        .await;
        file = file_back;
        assert_eq!(rest, data[4096..], "the open file read to the end with meta down");

        let subscribed = m.counters.get("cache.subscribed");
        fed.restart().await;
        // Without remounting, the mount works again once it has re-dialled
        // and subscribed to the new meta server's callbacks.
        let t = Instant::now();
        assert!(
            m.counters.wait_until(Duration::from_secs(30), |c| c.get("cache.subscribed") > subscribed).await,
            "the mount did not subscribe again within 30 s of the restart: {:?}",
            m.counters.snapshot()
        );
        let r = blocking({
            let p = m.join("after-restart.txt");
            move || std::fs::write(&p, b"after").and_then(|_| std::fs::read(&p))
        })
        .await;
        assert_eq!(r.expect("write and read back once subscribed again"), b"after");
        eprintln!("mount working again {:?} after the meta server was back", t.elapsed());
        let again = blocking(move || {
            file.seek(SeekFrom::Start(0)).unwrap();
            let mut all = Vec::new();
            file.read_to_end(&mut all).unwrap();
            all
        })
        .await;
        assert_eq!(again, data, "the file held open across the restart still reads");
        let mut listed = blocking({
            let d = m.path.clone();
            move || {
                std::fs::read_dir(d)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            }
        })
        .await;
        // `/vpe` is the VM service's tree, made by its manager when it (re)connects.
        listed.retain(|n| n != "vpe");
        listed.sort();
        assert_eq!(listed, ["after-restart.txt", "kept.bin"], "the root lists what was written, nothing else");
        m.unmount().await;
        let c = fed.client(None).await;
        assert_eq!(c.get_bytes("/kept.bin").await.unwrap(), data, "committed data intact");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mount_process_leaves_no_stale_mount_after_umount() {
    if !enabled("killed_mount_process_leaves_no_stale_mount_after_umount") {
        return;
    }
    with_timeout(120, async {
        let fed = ProcFederation::up(1).await;
        let dir = tempfile::tempdir().unwrap();
        let mp = dir.path().join("mnt");
        std::fs::create_dir(&mp).unwrap();
        let mut child = std::process::Command::new(bin_dir().join("renkei"))
            .env("RENKEI_CONFIG", &fed.state.client_config)
            .arg("mount")
            .arg("-f")
            .arg(&mp)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        blocking({
            let mp = mp.clone();
            move || wait_mounted(&mp, Duration::from_secs(20))
        })
        .await;
        let data = pattern(200_000, 3);
        // Committed means fsync returned: a close alone may still sit in a
        // bundle (see mount/bundle.rs), which a killed mount loses whole.
        blocking({
            let (p, d) = (mp.join("committed.bin"), data.clone());
            move || {
                let mut f = std::fs::File::create(p)?;
                std::io::Write::write_all(&mut f, &d)?;
                f.sync_all()
            }
        })
        .await
        .unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(in_mount_table(&mp), "the kernel keeps the dead mount until it is unmounted");
        let out = std::process::Command::new(bin_dir().join("renkei")).arg("umount").arg(&mp).output().unwrap();
        assert!(out.status.success(), "renkei umount: {}", String::from_utf8_lossy(&out.stderr));
        assert!(!in_mount_table(&mp), "no stale mount after renkei umount");
        assert!(std::fs::read_dir(&mp).unwrap().next().is_none(), "the mount point is an empty directory again");
        let c = fed.client(None).await;
        assert_eq!(c.get_bytes("/committed.bin").await.unwrap(), data, "committed data is not damaged");
    })
    .await
}
