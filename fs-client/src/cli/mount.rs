//! `renkei mount` and `renkei umount`.
//!
//! Without `-f` the mount runs in a background process (this program again
//! with `-f`, in its own session, logging to `--log`); the command returns
//! once the mount point is live, or fails with the background process's
//! last words.

use crate::mount::{self, MountOptions};
use crate::ClientConfig;
use clap::Args;
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
    /// spill_dir=DIR (dirty data before commit, default $TMPDIR), fsname=NAME,
    /// nobundle (no small-file bundling on write), noprefetch (no read-ahead
    /// of a directory's files in bundles), noopenlease (every open asks the
    /// meta server, even for a file read ahead under a live lease).
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
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = mp.to_string_lossy().replace(' ', "\\040");
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-");
        let fstype = sep.and_then(|i| f.get(i + 1)).copied().unwrap_or("");
        let source = sep.and_then(|i| f.get(i + 2)).copied().unwrap_or("");
        f.get(4) == Some(&want.as_str())
            && (fstype == "fuse.renkei" || (fstype == "fuse" && source.starts_with("renkei")))
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
    let log =
        a.log.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("renkei-mount-{}.log", std::process::id())));
    let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
    let err = out.try_clone()?;
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    args.push("-f".into());
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()?;
    let start = Instant::now();
    let bound = opts.timeout * 2 + Duration::from_secs(5);
    while start.elapsed() < bound {
        if is_mounted(&opts.mountpoint) {
            println!("mounted at {} (process {}, log {})", opts.mountpoint.display(), child.id(), log.display());
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
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
