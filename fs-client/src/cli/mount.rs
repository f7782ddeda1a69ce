//! `renkei mount`, `renkei umount` and `mount.renkei` (mount(8)'s helper
//! for `/etc/fstab`, see [`helper_main`]).
//!
//! Without `-f` the mount runs in a background process (this program again
//! with `-f`, in its own session, logging to `--log`); the command returns
//! once the mount point is live, or fails with the background process's
//! last words.

use crate::mount::{self, MountOptions};
use crate::ClientConfig;
use clap::{Args, Parser};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `mount` arguments.
#[derive(Args, Debug)]
pub struct MountArgs {
    /// Remote directory to mount [default: /], then the local mount point.
    #[arg(num_args = 1..=2, value_name = "[REMOTE_DIR] MOUNTPOINT", required = true)]
    paths: Vec<String>,
    /// Options, comma-separated: ro, allow_other, cred (pass each caller's
    /// uid/gid/groups; admin certificates only), idmap=user|none,
    /// attr_timeout=SECS (kernel cache, default 1), timeout=SECS (bound of an
    /// operation before EIO, default 10), max_write=BYTES (default 1 MiB),
    /// spill_dir=DIR (dirty data past 256 KiB of a file before commit, default $TMPDIR), fsname=NAME,
    /// nobundle (no small-file bundling on write), noprefetch (no read-ahead
    /// of a directory's files in bundles), noopenlease (every open asks the
    /// meta server, even for a file read ahead under a live lease),
    /// nowriteback (unlink, rename, chmod, ... go to the meta server one by
    /// one instead of being answered here under directory leases).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Stay in the foreground (log to stderr; Ctrl-C unmounts).
    #[arg(short = 'f', long)]
    foreground: bool,
    /// Log file of the background process [default: $TMPDIR/renkei-mount-<pid>.log].
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
}

/// `umount` arguments.
#[derive(Args, Debug)]
pub struct UmountArgs {
    /// The mount point.
    mountpoint: PathBuf,
}

fn parse(a: &MountArgs) -> anyhow::Result<MountOptions> {
    let (remote, mp) = match a.paths.as_slice() {
        [mp] => ("/".to_string(), mp.clone()),
        [remote, mp] => (remote.clone(), mp.clone()),
        _ => anyhow::bail!("expected [REMOTE_DIR] MOUNTPOINT"),
    };
    let mp = std::path::absolute(&mp)?;
    if !mp.is_dir() {
        anyhow::bail!("mount point {} is not a directory", mp.display());
    }
    let mut o = MountOptions::new(remote, mp);
    for list in &a.options {
        o.apply(list)?;
    }
    Ok(o)
}

/// Whether `mp` is a renkei FUSE mount (from /proc/self/mountinfo: type
/// `fuse.renkei`, or `fuse` with a `renkei:` source when mounted directly).
pub fn is_mounted(mp: &Path) -> bool {
    is_mounted_as(mp, "renkei")
}

/// Whether `mp` is a FUSE mount of type `fuse.renkei`, or `fuse` with a
/// source starting with `source` (an fstab line's source, or `renkei`).
fn is_mounted_as(mp: &Path, source_prefix: &str) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = mp.to_string_lossy().replace(' ', "\\040");
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-");
        let fstype = sep.and_then(|i| f.get(i + 1)).copied().unwrap_or("");
        let source = sep.and_then(|i| f.get(i + 2)).copied().unwrap_or("");
        f.get(4) == Some(&want.as_str())
            && (fstype == "fuse.renkei" || (fstype == "fuse" && source.starts_with(source_prefix)))
    })
}

pub(crate) async fn run(config: ClientConfig, a: &MountArgs) -> anyhow::Result<()> {
    let opts = parse(a)?;
    if !a.foreground {
        return background(a, &opts);
    }
    let mounted = mount::mount(config, opts).await?;
    mounted.serve(fs_proto::process::shutdown_signal()).await?;
    Ok(())
}

fn background(a: &MountArgs, opts: &MountOptions) -> anyhow::Result<()> {
    let log = a.log.clone().unwrap_or_else(default_log);
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    args.push("-f".into());
    let (pid, log) = daemonise(&args, opts, &log)?;
    println!("mounted at {} (process {pid}, log {})", opts.mountpoint.display(), log.display());
    Ok(())
}

fn default_log() -> PathBuf {
    std::env::temp_dir().join(format!("renkei-mount-{}.log", std::process::id()))
}

/// Start this program with `args` (a foreground mount of `opts`) in its
/// own session, logging to `log`; return its pid once the mount point is
/// live, or fail with the process's last words.
fn daemonise(args: &[String], opts: &MountOptions, log: &Path) -> anyhow::Result<(u32, PathBuf)> {
    use anyhow::Context;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening the mount's log {}", log.display()))?;
    let err = out.try_clone()?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .context("starting the mount process")?;
    let start = Instant::now();
    let bound = opts.timeout * 2 + Duration::from_secs(5);
    while start.elapsed() < bound {
        if is_mounted_as(&opts.mountpoint, &opts.fsname) {
            return Ok((child.id(), log.to_path_buf()));
        }
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            anyhow::bail!("mount failed ({status}): {}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::process::Command::new("fusermount3").arg("-u").arg(&opts.mountpoint).output();
    anyhow::bail!("mount did not come up within {} s (see {})", bound.as_secs(), log.display())
}

pub(crate) fn umount(a: &UmountArgs) -> anyhow::Result<()> {
    let mp = std::path::absolute(&a.mountpoint)?;
    mount::unmount(&mp)?;
    Ok(())
}

/// mount.renkei: mount a renkei namespace from /etc/fstab (mount(8)'s helper).
///
/// mount(8) runs `mount.renkei SOURCE DIR [-sfnv] [-o OPTIONS]` for a line
/// of type `renkei`, e.g.
///
///   renkei:/data  /mnt/data  renkei  _netdev,config=/etc/renkei/client.toml,allow_other  0 0
///
/// SOURCE is `renkei:REMOTE_DIR` (`renkei` or `renkei:` alone: the whole
/// namespace). The mount runs as a background process (as `renkei mount`
/// without -f); this returns once the mount point is live, or fails (exit
/// status 32) with that process's last words. `umount DIR` unmounts it and
/// the process exits once everything written is committed.
///
/// `renkei` installed (or symlinked) as /sbin/mount.renkei behaves as this
/// program; `renkei mount.renkei ...` is the same.
#[derive(Parser, Debug)]
#[command(name = "mount.renkei", version, about, long_about, verbatim_doc_comment)]
pub struct HelperArgs {
    /// `renkei:REMOTE_DIR`, or `renkei` for the whole namespace.
    source: String,
    /// The mount point.
    dir: PathBuf,
    /// Options, comma-separated. renkei's own: config=FILE (the client
    /// configuration; default --config, else $RENKEI_CONFIG, else
    /// /etc/renkei/client.toml),
    /// log=FILE (the mount process's log; default
    /// $TMPDIR/renkei-mount-PID.log), and every option of `renkei mount -o`
    /// (ro, rw, allow_other, cred, idmap=, attr_timeout=, timeout=,
    /// max_write=, spill_dir=, fsname=, nobundle, noprefetch, noopenlease,
    /// nowriteback). mount(8)'s own are accepted and left to it: defaults,
    /// _netdev, auto, noauto, nofail, user, users, nouser, owner, group,
    /// x-* and comment=*, and atime flags (atime, noatime, relatime, ...).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Sloppy: ignore options renkei does not know instead of failing.
    #[arg(short = 's')]
    sloppy: bool,
    /// Fake: check the options and configuration, mount nothing.
    #[arg(short = 'f')]
    fake: bool,
    /// Do not write /etc/mtab (accepted: the kernel's table is the only one).
    #[arg(short = 'n')]
    no_mtab: bool,
    /// Say what is done.
    #[arg(short = 'v')]
    verbose: bool,
    /// The file system type mount(8) matched (accepted, must be renkei).
    #[arg(short = 't', value_name = "TYPE")]
    fstype: Option<String>,
}

/// Whether mount(8) consumes `opt` itself (or it only labels the fstab line).
fn mount8_option(opt: &str) -> bool {
    let key = opt.split('=').next().unwrap_or(opt);
    matches!(
        key,
        "defaults"
            | "_netdev"
            | "auto"
            | "noauto"
            | "nofail"
            | "user"
            | "users"
            | "nouser"
            | "owner"
            | "group"
            | "comment"
            | "atime"
            | "noatime"
            | "relatime"
            | "norelatime"
            | "strictatime"
            | "nostrictatime"
            | "diratime"
            | "nodiratime"
            | "lazytime"
            | "nolazytime"
            | "silent"
            | "loud"
            | "async"
    ) || key.starts_with("x-")
}

/// What a helper invocation asks for.
#[derive(Debug)]
struct HelperPlan {
    config: PathBuf,
    log: Option<PathBuf>,
    /// Options for `renkei mount -o`.
    mount_options: Vec<String>,
    opts: MountOptions,
    ignored: Vec<String>,
}

fn helper_plan(a: &HelperArgs, config_arg: Option<&Path>) -> anyhow::Result<HelperPlan> {
    if let Some(t) = a.fstype.as_deref().filter(|t| !matches!(*t, "renkei" | "fuse.renkei")) {
        anyhow::bail!("mount.renkei mounts file systems of type renkei, not {t}");
    }
    let remote = match a.source.strip_prefix("renkei") {
        Some("") => "/".to_string(),
        Some(rest) => match rest.strip_prefix(':') {
            Some("") => "/".to_string(),
            Some(r) if r.starts_with('/') => r.to_string(),
            _ => anyhow::bail!("source {:?}: expected renkei:/REMOTE_DIR (or renkei for /)", a.source),
        },
        None if a.source.starts_with('/') => a.source.clone(),
        None => anyhow::bail!("source {:?}: expected renkei:/REMOTE_DIR (or renkei for /)", a.source),
    };
    let mp = std::path::absolute(&a.dir)?;
    if !mp.is_dir() {
        anyhow::bail!("mount point {} is not a directory", mp.display());
    }
    let mut config = None;
    let mut log = None;
    let mut mount_options = Vec::new();
    let mut ignored = Vec::new();
    // mount(8) matches an fstab line with the kernel's table by source:
    // show the source as written there.
    let mut opts = MountOptions::new(remote, mp);
    opts.fsname = a.source.clone();
    for opt in a.options.iter().flat_map(|l| l.split(',')).map(str::trim).filter(|o| !o.is_empty()) {
        if let Some(v) = opt.strip_prefix("config=") {
            config = Some(PathBuf::from(v));
        } else if let Some(v) = opt.strip_prefix("log=") {
            log = Some(PathBuf::from(v));
        } else if mount8_option(opt) {
            ignored.push(opt.to_string());
        } else {
            match opts.apply(opt) {
                Ok(()) => mount_options.push(opt.to_string()),
                Err(_) if a.sloppy => ignored.push(opt.to_string()),
                Err(e) => return Err(e.into()),
            }
        }
    }
    if !mount_options.iter().any(|o| o.starts_with("fsname=")) {
        mount_options.push(format!("fsname={}", a.source));
    }
    let config = config
        .or_else(|| config_arg.map(Path::to_path_buf))
        .or_else(|| std::env::var_os("RENKEI_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/renkei/client.toml"));
    Ok(HelperPlan { config, log, mount_options, opts, ignored })
}

/// `mount.renkei` (this program under that name, or `renkei mount.renkei`):
/// the process exit code, as mount(8) expects of a helper (1: bad usage or
/// configuration, 32: the mount failed).
pub fn helper_main(a: &HelperArgs, config: Option<&Path>) -> i32 {
    let plan = match helper_plan(a, config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mount.renkei: {e:#}");
            return 1;
        }
    };
    if let Err(e) = ClientConfig::load(&plan.config) {
        eprintln!("mount.renkei: {e} (name it with -o config=FILE)");
        return 1;
    }
    if a.verbose && !plan.ignored.is_empty() {
        eprintln!("mount.renkei: left to mount(8) or ignored: {}", plan.ignored.join(","));
    }
    if is_mounted(&plan.opts.mountpoint) {
        eprintln!("mount.renkei: {} is already a renkei mount", plan.opts.mountpoint.display());
        return 32;
    }
    if a.fake {
        return 0;
    }
    let mut args = vec![
        "--config".to_string(),
        plan.config.display().to_string(),
        "mount".into(),
        "-f".into(),
        "-o".into(),
        plan.mount_options.join(","),
        plan.opts.remote_dir.clone(),
        plan.opts.mountpoint.display().to_string(),
    ];
    let log = plan.log.clone().unwrap_or_else(default_log);
    args.extend(["--log".into(), log.display().to_string()]);
    match daemonise(&args, &plan.opts, &log) {
        Ok((pid, log)) => {
            if a.verbose {
                println!(
                    "mount.renkei: {} mounted at {} (process {pid}, log {})",
                    a.source,
                    plan.opts.mountpoint.display(),
                    log.display()
                );
            }
            0
        }
        Err(e) => {
            eprintln!("mount.renkei: {} on {}: {e:#}", a.source, plan.opts.mountpoint.display());
            32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> anyhow::Result<HelperPlan> {
        let dir = std::env::temp_dir();
        let mut v = vec!["mount.renkei"];
        v.extend_from_slice(args);
        let v: Vec<String> = v.into_iter().map(|s| s.replace("DIR", dir.to_str().unwrap())).collect();
        helper_plan(&HelperArgs::try_parse_from(v)?, None)
    }

    #[test]
    fn fstab_options_are_split_between_mount8_and_renkei() {
        let p = plan(&[
            "renkei:/data",
            "DIR",
            "-o",
            "rw,_netdev,noauto,nofail,config=/etc/r.toml,allow_other,nowriteback,x-systemd.automount",
        ])
        .unwrap();
        assert_eq!(p.opts.remote_dir, "/data");
        assert_eq!(p.config, PathBuf::from("/etc/r.toml"));
        assert!(p.opts.allow_other && !p.opts.writeback && !p.opts.read_only);
        assert_eq!(p.mount_options, ["rw", "allow_other", "nowriteback", "fsname=renkei:/data"]);
        assert_eq!(p.ignored, ["_netdev", "noauto", "nofail", "x-systemd.automount"]);
        assert_eq!(p.opts.fsname, "renkei:/data");
    }

    #[test]
    fn sources_and_refusals() {
        assert_eq!(plan(&["renkei", "DIR"]).unwrap().opts.remote_dir, "/");
        assert_eq!(plan(&["renkei:", "DIR", "-o", "ro"]).unwrap().opts.remote_dir, "/");
        assert!(plan(&["renkei", "DIR", "-o", "ro"]).unwrap().opts.read_only);
        assert!(plan(&["nfs:/x", "DIR"]).is_err());
        assert!(plan(&["renkei:/x", "DIR", "-o", "bogus"]).is_err());
        let p = plan(&["renkei:/x", "DIR", "-s", "-o", "bogus", "-n", "-v"]).unwrap();
        assert_eq!(p.ignored, ["bogus"]);
        assert!(plan(&["renkei:/x", "DIR", "-t", "nfs"]).is_err());
        assert!(plan(&["renkei:/x", "/nonexistent/mnt"]).is_err());
    }
}
