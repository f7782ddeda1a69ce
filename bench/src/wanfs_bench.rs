//! `renkei-bench wanfs`: issue 5's acceptance measured side by side in one
//! run on the WAN emulator. Three sites, every pair at the same RTT and rate
//! (default 10 ms, 1 Gbit/s): the meta server at `a`, file servers at `b`
//! and `c`. The Montage-like set ([`crate::dataset`], scaled) is
//!
//! 1. sent as one tar stream from `b` to `a` over one TCP connection,
//!    unpacked and synced there (the baseline);
//! 2. `cp -r`'d into the renkei mount at `b` (bundling on), then unmounted:
//!    the time ends when the mount, stopped like Ctrl-C, has exited: after every
//!    bundle is stored on the file server and committed in metadata;
//! 3. the same with `-o nobundle` (every create and commit a round trip);
//! 4. the same into sshfs at `b` through an sshd at `a` (ends after `sync
//!    -f` of the sshd's directory);
//! 5. `cp -r`'d out of a fresh mount at `c` (cold) onto local disk, then
//!    `sync -f` (ends after the sync), and compared with the source; then
//!    the same from another fresh mount with `-o noopenlease` (every open
//!    asks the meta server).
//!
//! Then a 10,000-entry directory is listed with `ls -l` from a fresh mount
//! at `c` (cold, then warm), counting the mount's requests, and one large
//! file is put and got over a second test bed of two sites at 50 ms RTT
//! ([`crate::wan_transfer`]). The emulator's own limit is measured last.

use crate::dataset;
use crate::mount_bench::drop_caches;
use crate::sshfs::{self, Place, SshfsSpec};
use crate::tar_stream::tar_between_sites;
use crate::wan::{iperf, LinkParams, SiteSpec, Topology, Wan};
use crate::wan_transfer::{self, TransferOptions, TransferReport};
use crate::wanfed::{WanFedSpec, WanFederation};
use crate::wanfs_ls::{self, LsResult};
use crate::wanfs_mount::BinMount;
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct WanFsOptions {
    /// Fraction of the Montage-like set.
    pub scale: f64,
    /// Dataset seed.
    pub seed: u64,
    /// RTT between every two sites, ms.
    pub rtt_ms: f64,
    /// Rate of every link, Mbit/s.
    pub rate_mbit: f64,
    /// MTU of the sites.
    pub mtu: u32,
    /// Entries of the `ls -l` directory (0: skip).
    pub ls_entries: usize,
    /// Size of the large file, bytes (0: skip).
    pub big_size: u64,
    /// RTT of the large-file link, ms.
    pub big_rtt_ms: f64,
    /// Run sshfs.
    pub sshfs: bool,
    /// Run iperf3 beside the large file.
    pub iperf: bool,
    /// Measure the emulator's own limit.
    pub limit: bool,
    /// Directory of renkei, renkei-meta and renkei-server.
    pub bin_dir: PathBuf,
    /// Scratch directory.
    pub scratch: PathBuf,
}

/// One timed copy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Copy {
    /// What ran.
    pub name: String,
    /// Seconds.
    pub secs: f64,
    /// When the clock stopped.
    pub ends: String,
    /// Requests the renkei mount sent, per kind (renkei copies).
    pub requests: Option<BTreeMap<String, u64>>,
}

/// Everything measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WanFsReport {
    /// Options as run.
    pub scale: f64,
    /// Files in the set.
    pub files: usize,
    /// Bytes in the set.
    pub bytes: u64,
    /// Link RTT, ms.
    pub rtt_ms: f64,
    /// Link rate, Mbit/s.
    pub rate_mbit: f64,
    /// MTU.
    pub mtu: u32,
    /// UTC date and time of the start.
    pub started: String,
    /// /proc/loadavg before and after.
    pub load: (String, String),
    /// Copies; the tar baseline first.
    pub copies: Vec<Copy>,
    /// Whether the set copied out at `c` equals the source.
    pub read_back_identical: Option<bool>,
    /// The `ls -l` measurement.
    pub ls: Option<LsResult>,
    /// The large file.
    pub big: Option<TransferReport>,
    /// Emulator's own forwarding limit (MTU, bit/s).
    pub limit: Option<(u32, f64)>,
    /// Sections left out and why.
    pub skipped: Vec<String>,
}

fn topology(o: &WanFsOptions) -> anyhow::Result<Topology> {
    let topo = Topology {
        mtu: o.mtu,
        seed: None,
        rate_scale: 1.0,
        sites: ["a", "b", "c"].iter().map(|n| SiteSpec { name: n.to_string() }).collect(),
        links: Vec::new(),
        default_link: Some(LinkParams {
            delay_ms: o.rtt_ms / 2.0,
            rate_mbit: Some(o.rate_mbit),
            queue_kib: None,
            loss_percent: 0.0,
        }),
    };
    topo.resolve()?;
    Ok(topo)
}

fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    anyhow::ensure!(st.success(), "{cmd:?} failed: {st}");
    Ok(())
}

fn cp_r(src: &Path, dst: &Path) -> anyhow::Result<()> {
    sh(Command::new("cp").arg("-r").arg(src).arg(dst))
}

fn sync_f(p: &Path) -> anyhow::Result<()> {
    sh(Command::new("sync").arg("-f").arg(p))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
}

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// `cp -r` of the set into a renkei mount at `site` with `options`; the
/// clock stops when the unmounted mount process has exited.
fn copy_into_mount(
    wan: &Wan,
    fed: &WanFederation,
    o: &WanFsOptions,
    set: &Path,
    options: &str,
    dir: &str,
) -> anyhow::Result<(f64, Option<BTreeMap<String, u64>>)> {
    let (_, cfg) = fed.client_config("b", "bench")?;
    let mp = o.scratch.join(format!("mnt-b-{dir}"));
    let mut m = BinMount::start(&wan.site("b")?, &o.bin_dir, &cfg, &mp, options, &o.scratch)?;
    drop_caches();
    let t = Instant::now();
    cp_r(set, &mp.join(dir)).with_context(|| m.log_tail())?;
    let clean = m.stop(Duration::from_secs(300));
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(clean, "the mount did not exit after unmount: {}", m.log_tail());
    Ok((secs, m.requests()))
}

/// What a client at `site` sees under `/dir`: (files, bytes), walking the
/// tree. Untimed; it also waits out any directory lease a finished mount
/// still holds (the meta server recalls it first, bounded).
async fn census(client: &fs_client::Client, dir: &str) -> anyhow::Result<(usize, u64)> {
    let (mut files, mut bytes) = (0usize, 0u64);
    let mut todo = vec![dir.to_string()];
    while let Some(d) = todo.pop() {
        for e in client.list(&d).await.with_context(|| format!("listing {d}"))? {
            let p = format!("{d}/{}", e.name);
            match e.kind {
                fs_proto::FileKind::Directory => todo.push(p),
                _ => {
                    files += 1;
                    bytes += e.attr.map(|a| a.size).unwrap_or(0);
                }
            }
        }
    }
    Ok((files, bytes))
}

/// Check that `/dir` holds the whole set, as a client at site `c` sees it.
fn check_copy(
    rt: &tokio::runtime::Runtime,
    wan: &Wan,
    fed: &WanFederation,
    dir: &str,
    files: usize,
    bytes: u64,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let got = rt.block_on(async {
        let c = fed.client(wan, "c", "bench").await?;
        census(&c, dir).await
    })?;
    anyhow::ensure!(
        got == (files, bytes),
        "{dir} holds {got:?} (files, bytes) as seen from c; expected {:?}",
        (files, bytes)
    );
    if t.elapsed() > Duration::from_secs(2) {
        eprintln!("note: checking {dir} from c took {:.1} s (a directory lease recalled?)", t.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Run the whole benchmark.
pub fn run(o: &WanFsOptions) -> anyhow::Result<WanFsReport> {
    let started = now_utc();
    let load_before = loadavg();
    let files = dataset::plan(o.scale, o.seed);
    let bytes = dataset::total_bytes(&files);
    std::fs::create_dir_all(&o.scratch)?;
    let set = o.scratch.join("set");
    eprintln!("writing the Montage-like set: factor {}, {} files, {:.2} GB", o.scale, files.len(), bytes as f64 / 1e9);
    dataset::write(&set, &files).context("writing the dataset")?;
    let rt = tokio::runtime::Runtime::new()?;
    let mut skipped = Vec::new();
    let mut copies = Vec::new();
    let mut read_back_identical = None;
    let mut ls = None;
    {
        let wan = Wan::start(topology(o)?)?;
        let spec = WanFedSpec {
            meta_site: "a".into(),
            server_sites: vec!["b".into(), "c".into()],
            bin_dir: o.bin_dir.clone(),
            heartbeat_ms: 1000,
        };
        let fed = WanFederation::start(&wan, spec)?;
        rt.block_on(fed.wait_alive(&wan, "b", Duration::from_secs(60)))?;

        eprintln!("tar b -> a");
        drop_caches();
        let secs = tar_between_sites(&wan, "b", "a", &set, &o.scratch.join("tar-dst"))?;
        copies.push(Copy {
            name: "one tar stream b -> a (TCP)".into(),
            secs,
            ends: "untarred and `sync -f`".into(),
            requests: None,
        });

        eprintln!("cp -r into the mount at b (bundling on)");
        let (secs, requests) = copy_into_mount(&wan, &fed, o, &set, "", "bundled")?;
        check_copy(&rt, &wan, &fed, "/bundled", files.len(), bytes)?;
        copies.push(Copy {
            name: "`cp -r` into renkei mount at b".into(),
            secs,
            ends: "mount stopped (SIGTERM: unmount, commit all) and exited".into(),
            requests,
        });

        eprintln!("cp -r into the mount at b (-o nobundle)");
        let (secs, requests) = copy_into_mount(&wan, &fed, o, &set, "nobundle", "perfile")?;
        check_copy(&rt, &wan, &fed, "/perfile", files.len(), bytes)?;
        copies.push(Copy {
            name: "`cp -r` into renkei mount at b, `-o nobundle`".into(),
            secs,
            ends: "mount stopped (SIGTERM: unmount, commit all) and exited".into(),
            requests,
        });

        if o.sshfs {
            eprintln!("cp -r into sshfs at b (sshd at a)");
            let remote = o.scratch.join("sshfs-remote");
            let _ = std::fs::remove_dir_all(&remote);
            std::fs::create_dir_all(&remote)?;
            let (a, b) = (wan.site("a")?, wan.site("b")?);
            let mp = o.scratch.join("sshfs-mnt");
            let s = sshfs::start(&SshfsSpec {
                dir: &o.scratch,
                remote: &remote,
                mp: &mp,
                server: (Place::Site(&a), a.addr()),
                client: Place::Site(&b),
            })?;
            drop_caches();
            let t = Instant::now();
            cp_r(&set, &s.mp.join("set"))?;
            sync_f(&remote)?;
            let secs = t.elapsed().as_secs_f64();
            drop(s);
            let _ = std::fs::remove_dir_all(&remote);
            copies.push(Copy {
                name: "`cp -r` into sshfs at b (sshd at a)".into(),
                secs,
                ends: "sshd's disk `sync -f`".into(),
                requests: None,
            });
        } else {
            skipped.push("sshfs (`--no-sshfs`)".to_string());
        }

        // The read side, default and with `-o noopenlease`, each from a fresh
        // (cold) mount; the default copy is also compared with the source.
        let out = o.scratch.join("out-c");
        for (opts, name) in [
            ("", "`cp -r` out of renkei mount at c (cold; files at b)"),
            ("noopenlease", "`cp -r` out of renkei mount at c, `-o noopenlease`"),
        ] {
            eprintln!("{name}");
            let (_, cfg) = fed.client_config("c", "bench")?;
            let _ = std::fs::remove_dir_all(&out);
            let mut m = BinMount::start(&wan.site("c")?, &o.bin_dir, &cfg, &o.scratch.join("mnt-c"), opts, &o.scratch)?;
            drop_caches();
            let t = Instant::now();
            cp_r(&m.mp.join("bundled"), &out).with_context(|| m.log_tail())?;
            sync_f(&out)?;
            let secs = t.elapsed().as_secs_f64();
            m.stop(Duration::from_secs(60));
            copies.push(Copy { name: name.into(), secs, ends: "local copy `sync -f`".into(), requests: m.requests() });
            if read_back_identical.is_none() {
                let same = Command::new("diff").arg("-rq").arg(&set).arg(&out).status()?.success();
                read_back_identical = Some(same);
            }
        }
        let _ = std::fs::remove_dir_all(&out);

        if o.ls_entries > 0 {
            eprintln!("ls -l of {} entries from a fresh mount at c", o.ls_entries);
            ls = Some(wanfs_ls::run(&rt, &wan, &fed, o.ls_entries, o.rtt_ms, &o.scratch)?);
        } else {
            skipped.push("`ls -l` (`--ls-entries 0`)".to_string());
        }
    }
    let big = if o.big_size > 0 {
        eprintln!("one {} MiB file over {} ms RTT", o.big_size >> 20, o.big_rtt_ms);
        let t = TransferOptions {
            rtt_ms: o.big_rtt_ms,
            rate_mbit: o.rate_mbit,
            size: o.big_size,
            mtu: o.mtu,
            bin_dir: o.bin_dir.clone(),
            scratch: o.scratch.join("big"),
            tcp_baseline: o.iperf,
        };
        if !o.iperf {
            skipped.push("iperf3 beside the large file (`--no-iperf`)".to_string());
        }
        Some(rt.block_on(wan_transfer::run(&t))?)
    } else {
        skipped.push("large file (`--big-mib 0`)".to_string());
        None
    };
    let limit = if o.limit {
        eprintln!("the emulator's own limit at MTU {}", o.mtu);
        iperf::forwarding_limit(&[o.mtu], 5)?.into_iter().next()
    } else {
        skipped.push("emulator limit (`--no-limit`)".to_string());
        None
    };
    Ok(WanFsReport {
        scale: o.scale,
        files: files.len(),
        bytes,
        rtt_ms: o.rtt_ms,
        rate_mbit: o.rate_mbit,
        mtu: o.mtu,
        started,
        load: (load_before, loadavg()),
        copies,
        read_back_identical,
        ls,
        big,
        limit,
        skipped,
    })
}
