//! Random exercisers on a mount (issue 13): the `fsx` file system exerciser
//! (writes, mmap writes, reads, mmap reads, truncates, fsyncs and
//! close/reopen on one file, every read checked against its model) for
//! several seeds at once; and our own exerciser across two mounts: random
//! writes and truncates at one mount, and after each close the whole file
//! read at the other mount must equal the model (close-to-open).
//!
//! `fsx` comes from `cargo install fsx` (the test command installs it and
//! sets `RENKEI_FSX`); `RENKEI_FSX_OPS` sets the operations per seed
//! (default 100,000).

use crate::common::{blocking, enabled, strict, TestMount};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use tests::procs::ProcFederation;
use tests::with_timeout;

/// fsx's configuration: every operation it has, close/reopen and fsync
/// included (fsync and msync commit a generation through the file server).
/// fsx 0.3.2 never unmaps a mapped read (`domapread` has no `munmap`): each
/// one leaks a mapping, and with it an open file, for the rest of the run
/// (the mount must cope: `handles.rs`). Every truncation and invalidation
/// then walks all those mappings in the kernel, so the run slows down
/// quadratically with them; mapped reads are weighted down to keep 100,000
/// operations within minutes.
const FSX_TOML: &str = "\
flen = 262144
[opsize]
max = 65536
[weights]
close_open = 1
read = 10
write = 10
mapread = 3
mapwrite = 10
invalidate = 1
truncate = 2
fsync = 1
";

/// Seeds run side by side, each on its own file.
const SEEDS: [u64; 3] = [42, 7, 1234];

fn fsx_binary() -> Option<PathBuf> {
    match std::env::var_os("RENKEI_FSX") {
        Some(p) if PathBuf::from(&p).exists() => Some(PathBuf::from(p)),
        _ => {
            let why = "fsx is missing: cargo install fsx and set RENKEI_FSX to its path";
            assert!(!strict(), "{why} (RENKEI_TEST_STRICT=1)");
            eprintln!("skipping fsx: {why}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fsx_passes_for_several_seeds() {
    if !enabled("fsx_passes_for_several_seeds") {
        return;
    }
    let Some(fsx) = fsx_binary() else { return };
    let ops: u64 = std::env::var("RENKEI_FSX_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    with_timeout(1_800, async {
        let fed = ProcFederation::up(1).await;
        let m = TestMount::new(&fed, None, "/", "").await;
        let dir = m.join("fsx");
        std::fs::create_dir(&dir).unwrap();
        let work = tempfile::tempdir().unwrap();
        let conf = work.path().join("fsx.toml");
        std::fs::write(&conf, FSX_TOML).unwrap();
        let mut runs = Vec::new();
        for seed in SEEDS {
            let (fsx, conf, file, art) =
                (fsx.clone(), conf.clone(), dir.join(format!("f{seed}")), work.path().join(format!("art{seed}")));
            std::fs::create_dir(&art).unwrap();
            runs.push(blocking(move || {
                let out = std::process::Command::new(&fsx)
                    .arg("-N")
                    .arg(ops.to_string())
                    .arg("-S")
                    .arg(seed.to_string())
                    .arg("-f")
                    .arg(&conf)
                    .arg("-P")
                    .arg(&art)
                    .arg(&file)
                    .output()
                    .expect("run fsx");
                (seed, out)
            }));
        }
        for r in runs {
            let (seed, out) = r.await;
            let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
            let tail: Vec<&str> = text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
            assert!(
                out.status.success() && text.contains("All operations completed A-OK!"),
                "fsx seed {seed} ({ops} operations) failed on the mount ({}):\n{}",
                out.status,
                tail.join("\n")
            );
            eprintln!("fsx seed {seed}: {ops} operations A-OK");
        }
        m.unmount().await;
    })
    .await
}

/// xorshift64*: the exerciser's own reproducible randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One close-to-open cycle at `a`: open, a few random writes and truncates
/// (recorded in `model`), close. Returns a description of the ops.
fn cycle(path: &std::path::Path, model: &mut Vec<u8>, rng: &mut Rng) -> String {
    const FLEN: u64 = 256 << 10;
    let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).unwrap();
    let mut ops = Vec::new();
    for _ in 0..1 + rng.below(8) {
        if rng.below(5) == 0 {
            let size = rng.below(FLEN);
            f.set_len(size).unwrap();
            model.resize(size as usize, 0);
            ops.push(format!("truncate {size:#x}"));
        } else {
            let off = rng.below(FLEN);
            let len = 1 + rng.below(32 << 10);
            let fill = (rng.next() & 0xff) as u8;
            let data: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
            f.write_all_at(&data, off).unwrap();
            let end = (off + len) as usize;
            if model.len() < end {
                model.resize(end, 0);
            }
            model[off as usize..end].copy_from_slice(&data);
            ops.push(format!("write {off:#x}+{len:#x}"));
        }
    }
    drop(f);
    ops.join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_mount_reads_what_each_close_left() {
    if !enabled("a_second_mount_reads_what_each_close_left") {
        return;
    }
    with_timeout(600, async {
        let fed = ProcFederation::up(2).await;
        let a = TestMount::new(&fed, Some("site1"), "/", "").await;
        let b = TestMount::new(&fed, Some("site2"), "/", "").await;
        let (pa, pb) = (a.join("exercised"), b.join("exercised"));
        for seed in [3u64, 99] {
            let (pa, pb) = (pa.clone(), pb.clone());
            blocking(move || {
                let _ = std::fs::remove_file(&pa);
                let mut model = Vec::new();
                let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
                for i in 0..300 {
                    let ops = cycle(&pa, &mut model, &mut rng);
                    let seen = std::fs::read(&pb).unwrap();
                    assert!(
                        seen.len() == model.len(),
                        "seed {seed} cycle {i} ({ops}): the other mount sees {} bytes, {} were closed",
                        seen.len(),
                        model.len()
                    );
                    if let Some(at) = seen.iter().zip(&model).position(|(x, y)| x != y) {
                        panic!("seed {seed} cycle {i} ({ops}): the other mount differs at byte {at:#x}");
                    }
                }
            })
            .await;
        }
        a.unmount().await;
        b.unmount().await;
    })
    .await
}
