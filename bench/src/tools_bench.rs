//! `renkei-bench tools`: the tools people run on a tree of small files,
//! side by side in one run (issue 20): `tar x` as a user and as root,
//! `rsync -a`, `cp -a`, `chmod -R`, `chown -R`, `mv` of a tree, `rm -rf`,
//! `git clone` + `checkout` of another branch, `make -j2` of a small C
//! project, and a warm `ls -l` of a 10,000-entry directory.
//!
//! On loopback each runs on local disk, in a renkei mount and in sshfs
//! (through an sshd on 127.0.0.1). With `--wan`, three sites of the WAN
//! emulator (meta server at `a`, the file server and every tool at `b`,
//! every pair `--rtt-ms` apart at `--rate-mbit`) and the baselines are one
//! tar stream of the same bytes from `b` to `a` and sshfs at `b` through an
//! sshd at `a`.
//!
//! Every renkei run uses a fresh `renkei mount` (so its request counters,
//! logged at unmount, are the tool's alone); the tool's own time is the
//! headline, and the time until the mount has exited after unmounting
//! (everything committed at the meta server) is reported beside it. sshfs
//! is synchronous: its time is its committed time.

use crate::mount_bench::drop_caches;
use crate::sshfs::{self, Place, SshfsSpec};
use crate::tar_stream::tar_between_sites;
use crate::wan::{LinkParams, SiteSpec, Topology, Wan};
use crate::wanfed::{WanFedSpec, WanFederation};
use crate::wanfs_mount::BinMount;
use anyhow::Context;
use fs_client::local::{self, LocalSpec};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct ToolsOptions {
    /// Files in the tree (spread over `dirs` directories, ~1.5 KB each).
    pub files: usize,
    /// Directories of the tree.
    pub dirs: usize,
    /// Entries of the `ls -l` directory (0: skip).
    pub ls_entries: usize,
    /// Across the WAN emulator instead of loopback.
    pub wan: bool,
    /// RTT between sites (ms), with `wan`.
    pub rtt_ms: f64,
    /// Link rate (Mbit/s), with `wan`.
    pub rate_mbit: f64,
    /// Run sshfs.
    pub sshfs: bool,
    /// Directory of renkei, renkei-meta and renkei-server.
    pub bin_dir: PathBuf,
    /// Scratch directory.
    pub scratch: PathBuf,
}

/// One tool on one target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    /// The tool.
    pub tool: String,
    /// `local`, `renkei` or `sshfs`.
    pub target: String,
    /// Seconds the tool took.
    pub secs: f64,
    /// Seconds until everything was committed (renkei: the mount exited
    /// after unmounting).
    pub committed_secs: f64,
    /// Metadata requests per kind (renkei).
    pub requests: Option<BTreeMap<String, u64>>,
    /// Metadata requests per file of the tree (renkei).
    pub per_file: Option<f64>,
}

/// The whole run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ToolsReport {
    /// When it ran (UTC).
    pub started: String,
    /// Load average before.
    pub load_before: String,
    /// `loopback` or `wan`.
    pub mode: String,
    /// RTT and rate of the emulated links (wan).
    pub link: Option<(f64, f64)>,
    /// Files and bytes of the tree.
    pub files: usize,
    /// Bytes of the tree.
    pub bytes: u64,
    /// One tar stream of the tree's bytes from b to a (wan), seconds.
    pub tar_stream_secs: Option<f64>,
    /// Every measurement.
    pub runs: Vec<Run>,
    /// Warm `ls -l` of the big directory: (target, seconds).
    pub ls_warm: Vec<(String, f64)>,
    /// What was left out, and why.
    pub skipped: Vec<String>,
}

/// The tools, as bash scripts run in the target's root. `$SRC` is the tree,
/// `$TAR` its tarball, `$REPO` a git repository of it with a second branch,
/// `$PROJ` a small C project.
const TOOLS: &[(&str, &str)] = &[
    ("tar x (user)", "mkdir t1 && tar xf \"$TAR\" --no-same-owner --no-same-permissions -C t1"),
    ("tar x (root)", "mkdir t2 && tar xf \"$TAR\" -C t2"),
    ("rsync -a", "rsync -a \"$SRC\"/ r/"),
    ("cp -a", "cp -a \"$SRC\" c"),
    ("chmod -R", "chmod -R g+w c"),
    ("chown -R", "chown -R root:root c"),
    ("mv (tree)", "mkdir m && mv c m/"),
    ("rm -rf", "rm -rf t1"),
    ("git clone + checkout", "git clone -q \"$REPO\" g && git -C g checkout -q other"),
    ("make -j2", "cp -r \"$PROJ\" p && make -s -C p -j2"),
];

fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).lines().take(5).collect::<Vec<_>>().join("\n")
    );
    Ok(())
}

/// Deterministic bytes (xorshift) for the tree's files.
pub(crate) fn bytes_of(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The tree, its tarball, the git repository and the C project, in `dir`.
fn prepare(o: &ToolsOptions, dir: &Path) -> anyhow::Result<u64> {
    let src = dir.join("src");
    let mut bytes = 0u64;
    let per_dir = o.files.div_ceil(o.dirs.max(1));
    for i in 0..o.files {
        let d = src.join(format!("d{:02}", i / per_dir));
        std::fs::create_dir_all(&d)?;
        let data = bytes_of(1000 + (i * 7919) % 1000, i as u64);
        bytes += data.len() as u64;
        std::fs::write(d.join(format!("f{:04}", i % per_dir)), data)?;
    }
    sh(Command::new("tar").arg("cf").arg(dir.join("src.tar")).arg("-C").arg(&src).arg("."))?;
    let repo = dir.join("repo");
    let git = |args: &[&str]| {
        let mut c = Command::new("git");
        c.arg("-C").arg(&repo).args(["-c", "user.email=b@renkei", "-c", "user.name=bench"]).args(args);
        c
    };
    sh(Command::new("cp").arg("-r").arg(&src).arg(&repo))?;
    sh(&mut git(&["init", "-q"]))?;
    sh(&mut git(&["add", "-A"]))?;
    sh(&mut git(&["commit", "-qm", "first"]))?;
    sh(&mut git(&["checkout", "-qb", "other"]))?;
    // The other branch: a tenth of the files changed, some removed, some new.
    for i in (0..o.files).step_by(10) {
        let f = repo.join(format!("d{:02}/f{:04}", i / per_dir, i % per_dir));
        if i % 20 == 0 {
            std::fs::remove_file(&f)?;
        } else {
            std::fs::write(&f, format!("changed {i}\n"))?;
        }
    }
    for i in 0..o.files / 20 {
        std::fs::write(repo.join(format!("d00/new{i:04}")), format!("new {i}\n"))?;
    }
    sh(&mut git(&["add", "-A"]))?;
    sh(&mut git(&["commit", "-qm", "other"]))?;
    sh(&mut git(&["checkout", "-q", "-"]))?;
    let proj = dir.join("proj");
    std::fs::create_dir_all(&proj)?;
    let mut objs = Vec::new();
    for i in 0..40 {
        std::fs::write(
            proj.join(format!("m{i}.c")),
            format!("#include <stdio.h>\nint f{i}(int x) {{ int s = 0; for (int k = 0; k < x; k++) s += k * {i}; return s; }}\n"),
        )?;
        objs.push(format!("m{i}.o"));
    }
    let calls: String = (0..40).map(|i| format!("f{i}(3)+")).collect();
    std::fs::write(
        proj.join("main.c"),
        format!(
            "{}\nint main(void) {{ return ({}0) == 0; }}\n",
            (0..40).map(|i| format!("int f{i}(int);")).collect::<Vec<_>>().join("\n"),
            calls
        ),
    )?;
    std::fs::write(
        proj.join("Makefile"),
        format!("prog: main.o {o}\n\tcc -o prog main.o {o}\n%.o: %.c\n\tcc -O1 -c $< -o $@\n", o = objs.join(" ")),
    )?;
    Ok(bytes)
}

/// A directory of `n` entries (created through `root`, untimed).
fn make_listing(root: &Path, n: usize) -> anyhow::Result<()> {
    let d = root.join("big");
    std::fs::create_dir_all(&d)?;
    for i in 0..n {
        std::fs::write(d.join(format!("entry-{i:05}")), b"x")?;
    }
    Ok(())
}

fn timed(place: Place<'_>, root: &Path, env: &[(&str, &Path)], script: &str) -> anyhow::Result<f64> {
    let mut c = place.command("bash");
    c.arg("-c").arg(script).current_dir(root);
    for (k, v) in env {
        c.env(k, v);
    }
    let t = Instant::now();
    sh(&mut c)?;
    Ok(t.elapsed().as_secs_f64())
}

fn meta_requests(r: &BTreeMap<String, u64>) -> u64 {
    r.iter().filter(|(k, _)| fs_client::counters::is_meta_request(k)).map(|(_, v)| v).sum()
}

/// The load average (1, 5, 15 min) from `/proc/loadavg`.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
}

/// Now, as `YYYY-MM-DD HH:MM UTC`.
pub(crate) fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Where the renkei runs happen: the client config and the place.
struct RenkeiAt<'a> {
    place: Place<'a>,
    config: PathBuf,
}

/// Every tool through fresh renkei mounts at `at`; each mount is stopped
/// after its tool and its exit (everything committed) is timed.
fn renkei_runs(o: &ToolsOptions, at: &RenkeiAt<'_>, env: &[(&str, &Path)], runs: &mut Vec<Run>) -> anyhow::Result<()> {
    let mp = o.scratch.join("mnt-renkei");
    // The federation's own first steps (its first bundle target, its first
    // lease, sled's first writes) are not the first tool's.
    let mut warm = BinMount::start_at(at.place, &o.bin_dir, &at.config, &mp, "", &o.scratch)?;
    timed(at.place, &warm.mp, env, "mkdir warm-up && echo warm > warm-up/f && rm -r warm-up")?;
    warm.stop(Duration::from_secs(60));
    for (tool, script) in TOOLS {
        eprintln!("renkei: {tool}");
        let mut m = BinMount::start_at(at.place, &o.bin_dir, &at.config, &mp, "", &o.scratch)?;
        drop_caches();
        let t = Instant::now();
        let secs = timed(at.place, &m.mp, env, script).with_context(|| format!("{tool}: {}", m.log_tail()))?;
        let clean = m.stop(Duration::from_secs(600));
        let committed_secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(clean, "the mount did not exit after unmount: {}", m.log_tail());
        let requests = m.requests();
        let per_file = requests.as_ref().map(|r| meta_requests(r) as f64 / o.files as f64);
        runs.push(Run { tool: tool.to_string(), target: "renkei".into(), secs, committed_secs, requests, per_file });
    }
    Ok(())
}

/// Every tool in `root` (local disk or an sshfs mount) at `place`.
fn plain_runs(
    target: &str,
    place: Place<'_>,
    root: &Path,
    env: &[(&str, &Path)],
    sync: Option<&Path>,
    runs: &mut Vec<Run>,
) -> anyhow::Result<()> {
    for (tool, script) in TOOLS {
        eprintln!("{target}: {tool}");
        drop_caches();
        let t = Instant::now();
        let secs = timed(place, root, env, script).with_context(|| tool.to_string())?;
        if let Some(p) = sync {
            sh(Command::new("sync").arg("-f").arg(p))?;
        }
        let committed_secs = t.elapsed().as_secs_f64();
        runs.push(Run {
            tool: tool.to_string(),
            target: target.into(),
            secs,
            committed_secs,
            requests: None,
            per_file: None,
        });
    }
    Ok(())
}

/// Warm `ls -l` of `root/big` (the second of two), seconds.
fn ls_warm(place: Place<'_>, root: &Path) -> anyhow::Result<f64> {
    timed(place, root, &[], "ls -l big > /dev/null")?;
    timed(place, root, &[], "ls -l big > /dev/null")
}

/// Run the benchmark.
pub fn run(o: &ToolsOptions) -> anyhow::Result<ToolsReport> {
    let started = now_utc();
    let load_before = loadavg();
    std::fs::create_dir_all(&o.scratch)?;
    let data = o.scratch.join("data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    eprintln!("preparing {} files in {} directories, a tarball, a git repository and a C project", o.files, o.dirs);
    let bytes = prepare(o, &data)?;
    let (src, tar, repo, proj) = (data.join("src"), data.join("src.tar"), data.join("repo"), data.join("proj"));
    let env: Vec<(&str, &Path)> = vec![("SRC", &src), ("TAR", &tar), ("REPO", &repo), ("PROJ", &proj)];
    let mut runs = Vec::new();
    let mut ls = Vec::new();
    let mut skipped = Vec::new();
    let mut tar_stream_secs = None;
    if o.wan {
        let topo = Topology {
            mtu: 1500,
            seed: None,
            rate_scale: 1.0,
            sites: ["a", "b"].iter().map(|n| SiteSpec { name: n.to_string() }).collect(),
            links: Vec::new(),
            default_link: Some(LinkParams {
                delay_ms: o.rtt_ms / 2.0,
                rate_mbit: Some(o.rate_mbit),
                queue_kib: None,
                loss_percent: 0.0,
            }),
        };
        topo.resolve()?;
        let wan = Wan::start(topo)?;
        let spec = WanFedSpec {
            meta_site: "a".into(),
            server_sites: vec!["b".into()],
            bin_dir: o.bin_dir.clone(),
            heartbeat_ms: 1000,
        };
        let fed = WanFederation::start(&wan, spec)?;
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(fed.wait_alive(&wan, "b", Duration::from_secs(60)))?;
        eprintln!("one tar stream b -> a");
        drop_caches();
        tar_stream_secs = Some(tar_between_sites(&wan, "b", "a", &src, &o.scratch.join("tar-dst"))?);
        if o.ls_entries > 0 {
            // The acceptance's yardstick for a warm listing: the same
            // listing on local disk.
            let local_root = o.scratch.join("local-ls");
            let _ = std::fs::remove_dir_all(&local_root);
            std::fs::create_dir_all(&local_root)?;
            make_listing(&local_root, o.ls_entries)?;
            ls.push(("local".to_string(), ls_warm(Place::Local, &local_root)?));
            let _ = std::fs::remove_dir_all(&local_root);
        }
        let b = wan.site("b")?;
        let (_, config) = fed.client_config("b", "bench")?;
        let at = RenkeiAt { place: Place::Site(&b), config };
        renkei_runs(o, &at, &env, &mut runs)?;
        if o.ls_entries > 0 {
            let mut m =
                BinMount::start_at(at.place, &o.bin_dir, &at.config, &o.scratch.join("mnt-renkei"), "", &o.scratch)?;
            make_listing(&m.mp, o.ls_entries)?;
            m.stop(Duration::from_secs(300));
            let m =
                BinMount::start_at(at.place, &o.bin_dir, &at.config, &o.scratch.join("mnt-renkei"), "", &o.scratch)?;
            ls.push(("renkei".to_string(), ls_warm(at.place, &m.mp)?));
        }
        if o.sshfs {
            let remote = o.scratch.join("sshfs-remote");
            let _ = std::fs::remove_dir_all(&remote);
            std::fs::create_dir_all(&remote)?;
            let a = wan.site("a")?;
            let mp = o.scratch.join("sshfs-mnt");
            let s = sshfs::start(&SshfsSpec {
                dir: &o.scratch,
                remote: &remote,
                mp: &mp,
                server: (Place::Site(&a), a.addr()),
                client: Place::Site(&b),
            })?;
            plain_runs("sshfs", Place::Site(&b), &s.mp, &env, Some(&remote), &mut runs)?;
            drop(s);
            let _ = std::fs::remove_dir_all(&remote);
        } else {
            skipped.push("sshfs (--no-sshfs)".into());
        }
    } else {
        let local_root = o.scratch.join("local");
        let _ = std::fs::remove_dir_all(&local_root);
        std::fs::create_dir_all(&local_root)?;
        plain_runs("local", Place::Local, &local_root, &env, Some(&local_root), &mut runs)?;
        if o.ls_entries > 0 {
            make_listing(&local_root, o.ls_entries)?;
            ls.push(("local".to_string(), ls_warm(Place::Local, &local_root)?));
        }
        let _ = std::fs::remove_dir_all(&local_root);
        let fed_dir = o.scratch.join("federation");
        let _ = local::down(&fed_dir);
        let _ = std::fs::remove_dir_all(&fed_dir);
        let spec = LocalSpec {
            dir: fed_dir.clone(),
            sites: 1,
            servers_per_site: 1,
            user: "bench".into(),
            bin_dir: Some(o.bin_dir.clone()),
            env: Vec::new(),
            meta_toml: String::new(),
            ha: false,
        };
        let rt = tokio::runtime::Runtime::new()?;
        let state = rt.block_on(local::up(&spec, Duration::from_secs(30)))?;
        let at = RenkeiAt { place: Place::Local, config: state.client_config.clone() };
        let r = (|| {
            renkei_runs(o, &at, &env, &mut runs)?;
            if o.ls_entries > 0 {
                let mp = o.scratch.join("mnt-renkei");
                let mut m = BinMount::start_at(Place::Local, &o.bin_dir, &at.config, &mp, "", &o.scratch)?;
                make_listing(&m.mp, o.ls_entries)?;
                m.stop(Duration::from_secs(300));
                let m = BinMount::start_at(Place::Local, &o.bin_dir, &at.config, &mp, "", &o.scratch)?;
                ls.push(("renkei".to_string(), ls_warm(Place::Local, &m.mp)?));
            }
            anyhow::Ok(())
        })();
        let _ = local::down(&fed_dir);
        r?;
        if o.sshfs {
            let remote = o.scratch.join("sshfs-remote");
            let _ = std::fs::remove_dir_all(&remote);
            std::fs::create_dir_all(&remote)?;
            let mp = o.scratch.join("sshfs-mnt");
            let s = sshfs::start(&SshfsSpec {
                dir: &o.scratch,
                remote: &remote,
                mp: &mp,
                server: (Place::Local, std::net::Ipv4Addr::LOCALHOST),
                client: Place::Local,
            })?;
            plain_runs("sshfs", Place::Local, &s.mp, &env, Some(&remote), &mut runs)?;
            if o.ls_entries > 0 {
                make_listing(&s.mp, o.ls_entries)?;
                ls.push(("sshfs".to_string(), ls_warm(Place::Local, &s.mp)?));
            }
            drop(s);
            let _ = std::fs::remove_dir_all(&remote);
        } else {
            skipped.push("sshfs (--no-sshfs)".into());
        }
    }
    Ok(ToolsReport {
        started,
        load_before,
        mode: if o.wan { "wan".into() } else { "loopback".into() },
        link: o.wan.then_some((o.rtt_ms, o.rate_mbit)),
        files: o.files,
        bytes,
        tar_stream_secs,
        runs,
        ls_warm: ls,
        skipped,
    })
}

impl ToolsReport {
    fn secs(&self, tool: &str, target: &str) -> Option<&Run> {
        self.runs.iter().find(|r| r.tool == tool && r.target == target)
    }

    /// A markdown report.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let where_ = match self.link {
            Some((rtt, rate)) => {
                format!("across the WAN emulator ({rtt} ms RTT, {rate} Mbit/s; meta at a, file server and tools at b)")
            }
            None => "on loopback".into(),
        };
        let _ = writeln!(
            s,
            "## renkei-bench tools {where_}\n\n{} files, {:.1} MB; run {}, load before {}\n",
            self.files,
            self.bytes as f64 / 1e6,
            self.started,
            self.load_before
        );
        if let Some(t) = self.tar_stream_secs {
            let _ = writeln!(s, "One tar stream of the same bytes b -> a: {t:.2} s.\n");
        }
        let base = if self.link.is_some() { "of tar stream" } else { "local disk s" };
        let _ = writeln!(
            s,
            "| tool | renkei s (committed) | sshfs s | renkei vs sshfs | {base} | metadata requests per file |\n|---|---|---|---|---|---|"
        );
        for (tool, _) in TOOLS {
            let Some(r) = self.secs(tool, "renkei") else { continue };
            let sshfs = self.secs(tool, "sshfs");
            let vs = sshfs.map(|x| format!("{:.1}x", x.committed_secs / r.secs.max(1e-9))).unwrap_or("-".into());
            let third = match (self.tar_stream_secs, self.secs(tool, "local")) {
                (Some(t), _) => format!("{:.0} %", 100.0 * t / r.secs.max(1e-9)),
                (None, Some(l)) => format!("{:.2}", l.secs),
                _ => "-".into(),
            };
            let _ = writeln!(
                s,
                "| {tool} | {:.2} ({:.2}) | {} | {vs} | {third} | {} |",
                r.secs,
                r.committed_secs,
                sshfs.map(|x| format!("{:.2}", x.committed_secs)).unwrap_or("-".into()),
                r.per_file.map(|p| format!("{p:.4}")).unwrap_or("-".into())
            );
        }
        if !self.ls_warm.is_empty() {
            let l: Vec<String> = self.ls_warm.iter().map(|(t, x)| format!("{t} {x:.3} s")).collect();
            let _ = writeln!(s, "\nWarm `ls -l` of a 10,000-entry directory: {}.", l.join(", "));
        }
        if let (Some((rtt, _)), Some(r)) = (self.link, self.secs("rm -rf", "renkei")) {
            let n = r.requests.as_ref().map(meta_requests).unwrap_or(0);
            let _ = writeln!(
                s,
                "\n`rm -rf`: {n} metadata requests, so at most {n} round trips waited for; {:.2} s in all, \
                 {:.0} RTT of wall time (the rest is the mount's and rm's own work).",
                r.secs,
                r.secs * 1000.0 / rtt
            );
        }
        for k in &self.skipped {
            let _ = writeln!(s, "\nskipped: {k}");
        }
        s
    }
}
