//! Sequential read and write of one large file through the FUSE mount,
//! beside `renkei put/get` and sshfs on localhost, in one run (issue 3,
//! acceptance 6). Reported as ratios; medians of several rounds.
//!
//! Every method moves the same bytes between the same local file and the
//! remote side: a write copies the local file in (1 MiB writes) and ends
//! when the copy is durable (close of the mount commits; `put` returns when
//! the server has it; sshfs is fsynced); a read copies the remote file to a
//! local file and fsyncs it, after dropping the page cache so every read is
//! cold. sshfs talks to an sshd started for the run on a free high port of
//! 127.0.0.1 with a throwaway host key and client key in the scratch
//! directory, and stopped afterwards.

use crate::putget::make_file;
use crate::sshfs::{self, unmount, wait_for, Killed, Place, SshfsSpec};
use anyhow::Context;
use fs_client::local::{self, LocalSpec};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Debug, Clone)]
pub struct MountBenchOptions {
    /// Bytes in the file.
    pub size: u64,
    /// Rounds (medians are reported).
    pub rounds: usize,
    /// Scratch directory.
    pub dir: PathBuf,
    /// Directory of renkei, renkei-meta and renkei-server.
    pub bin_dir: PathBuf,
    /// Skip sshfs (when it or sshd is not installed).
    pub no_sshfs: bool,
}

/// Medians in MB/s (10^6 bytes per second).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MountBenchReport {
    /// File size.
    pub size: u64,
    /// Rounds.
    pub rounds: usize,
    /// Write through the renkei mount.
    pub mount_write: f64,
    /// Read through the renkei mount.
    pub mount_read: f64,
    /// `renkei put`.
    pub put: f64,
    /// `renkei get`.
    pub get: f64,
    /// Write through sshfs (None if skipped).
    pub sshfs_write: Option<f64>,
    /// Read through sshfs.
    pub sshfs_read: Option<f64>,
}

impl MountBenchReport {
    /// A markdown table.
    pub fn markdown(&self) -> String {
        let r = |a: f64, b: Option<f64>| b.map(|b| format!("{:.2}", a / b)).unwrap_or_else(|| "-".into());
        let v = |x: Option<f64>| x.map(|x| format!("{x:.0}")).unwrap_or_else(|| "skipped".into());
        format!(
            "## sequential {} MiB through the mount, on loopback (medians of {})\n\n\
             | work | mount MB/s | put/get MB/s | sshfs MB/s | mount / put-get | mount / sshfs |\n\
             |---|---|---|---|---|---|\n\
             | write | {:.0} | {:.0} | {} | {:.2} | {} |\n\
             | read (cold) | {:.0} | {:.0} | {} | {:.2} | {} |\n",
            self.size >> 20,
            self.rounds,
            self.mount_write,
            self.put,
            v(self.sshfs_write),
            self.mount_write / self.put.max(1e-9),
            r(self.mount_write, self.sshfs_write),
            self.mount_read,
            self.get,
            v(self.sshfs_read),
            self.mount_read / self.get.max(1e-9),
            r(self.mount_read, self.sshfs_read),
        )
    }
}

fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Copy `src` to a new `dst` in 1 MiB pieces and fsync it; the time taken.
fn copy(src: &Path, dst: &Path) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut i = std::fs::File::open(src).with_context(|| format!("open {}", src.display()))?;
    let mut o = std::fs::File::create(dst).with_context(|| format!("create {}", dst.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = i.read(&mut buf)?;
        if n == 0 {
            break;
        }
        o.write_all(&buf[..n])?;
    }
    o.sync_all()?;
    drop(o);
    Ok(t.elapsed())
}

/// Drop the page cache so the next read is cold (root only; best effort).
pub(crate) fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

pub(crate) fn mounted(mp: &Path) -> bool {
    let want = mp.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&want))
}

/// Run the benchmark.
pub async fn run(opts: &MountBenchOptions) -> anyhow::Result<MountBenchReport> {
    std::fs::create_dir_all(&opts.dir)?;
    let src = opts.dir.join("src.bin");
    eprintln!("writing a {} MiB test file", opts.size >> 20);
    make_file(&src, opts.size)?;
    let fed_dir = opts.dir.join("federation");
    let spec = LocalSpec {
        dir: fed_dir.clone(),
        sites: 1,
        servers_per_site: 1,
        user: "bench".into(),
        bin_dir: Some(opts.bin_dir.clone()),
        env: Vec::new(),
        meta_toml: String::new(),
        ha: false,
    };
    let state = local::up(&spec, Duration::from_secs(30)).await?;
    let mp = opts.dir.join("mnt");
    std::fs::create_dir_all(&mp)?;
    let log = std::fs::File::create(opts.dir.join("mount.log"))?;
    let mount = Killed(
        Command::new(opts.bin_dir.join("renkei"))
            .env("RENKEI_CONFIG", &state.client_config)
            .arg("mount")
            .arg("-f")
            .arg(&mp)
            .arg("-o")
            .arg(format!("spill_dir={}", opts.dir.display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?,
    );
    let result = async {
        wait_for("renkei mount", Duration::from_secs(20), || mounted(&mp))?;
        let sshfs = if opts.no_sshfs {
            None
        } else {
            let remote = opts.dir.join("sshfs-remote");
            std::fs::create_dir_all(&remote)?;
            let mp = opts.dir.join("sshfs");
            Some(sshfs::start(&SshfsSpec {
                dir: &opts.dir,
                remote: &remote,
                mp: &mp,
                server: (Place::Local, std::net::Ipv4Addr::LOCALHOST),
                client: Place::Local,
            })?)
        };
        let client = fs_client::Client::connect(fs_client::ClientConfig::load(&state.client_config)?).await?;
        let out = opts.dir.join("out.bin");
        let mut m = [Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for round in 0..opts.rounds {
            let w = copy(&src, &mp.join("m.bin"))?;
            drop_caches();
            let r = copy(&mp.join("m.bin"), &out)?;
            m[0].push(mb_s(opts.size, w));
            m[1].push(mb_s(opts.size, r));
            let t = Instant::now();
            client.put_file(&src, "/p.bin", &|_| {}).await?;
            m[2].push(mb_s(opts.size, t.elapsed()));
            drop_caches();
            let t = Instant::now();
            client.get_file("/p.bin", &out, &|_| {}).await?;
            m[3].push(mb_s(opts.size, t.elapsed()));
            if let Some(s) = &sshfs {
                let w = copy(&src, &s.mp.join("s.bin"))?;
                drop_caches();
                let r = copy(&s.mp.join("s.bin"), &out)?;
                m[4].push(mb_s(opts.size, w));
                m[5].push(mb_s(opts.size, r));
            }
            let _ = std::fs::remove_file(&out);
            eprintln!(
                "round {}: mount write {:.0} read {:.0}; put {:.0} get {:.0}; sshfs write {:?} read {:?} (MB/s)",
                round + 1,
                m[0][round],
                m[1][round],
                m[2][round],
                m[3][round],
                m[4].get(round).map(|x| x.round()),
                m[5].get(round).map(|x| x.round()),
            );
        }
        let [mw, mr, p, g, sw, sr] = m;
        let opt = |v: Vec<f64>| (!v.is_empty()).then(|| median(v));
        anyhow::Ok(MountBenchReport {
            size: opts.size,
            rounds: opts.rounds,
            mount_write: median(mw),
            mount_read: median(mr),
            put: median(p),
            get: median(g),
            sshfs_write: opt(sw),
            sshfs_read: opt(sr),
        })
    }
    .await;
    unmount(&mp);
    drop(mount);
    local::down(&fed_dir)?;
    let _ = std::fs::remove_dir_all(&fed_dir);
    let _ = std::fs::remove_file(&src);
    result
}
