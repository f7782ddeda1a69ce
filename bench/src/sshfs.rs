//! A throwaway sshd and an sshfs mount through it, for side-by-side
//! comparisons (`mount_bench` on loopback, `wanfs_bench` across the WAN
//! emulator). Host key and client key live in a scratch directory; the sshd
//! runs for one benchmark and is killed when the [`Sshfs`] is dropped.

use crate::wan::Site;
use anyhow::Context;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where a program runs: this machine's own network, or inside a site of
/// the WAN emulator.
#[derive(Clone, Copy)]
pub enum Place<'a> {
    /// The caller's network namespace.
    Local,
    /// A site of the emulator.
    Site(&'a Site),
}

impl Place<'_> {
    /// A command running `program` here.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match self {
            Place::Local => Command::new(program),
            Place::Site(s) => s.command(program),
        }
    }

    /// Whether a TCP connection from here to `addr` succeeds.
    fn can_connect(&self, addr: SocketAddr) -> bool {
        let try_it = move || TcpStream::connect_timeout(&addr, Duration::from_millis(500));
        match self {
            Place::Local => try_it().is_ok(),
            Place::Site(s) => s.run_in(try_it).is_ok(),
        }
    }
}

/// Poll `ok` every 50 ms until it holds or `bound` passes.
pub fn wait_for(what: &str, bound: Duration, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let t = Instant::now();
    while !ok() {
        anyhow::ensure!(t.elapsed() < bound, "{what} not ready within {bound:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Unmount a FUSE mount point (best effort).
pub fn unmount(mp: &Path) {
    let _ = Command::new("fusermount3").arg("-u").arg(mp).stderr(Stdio::null()).status();
}

/// An sshd for one run, and sshfs mounted through it. Dropping it unmounts
/// and stops the sshd.
pub struct Sshfs {
    _sshd: Killed,
    /// The local mount point.
    pub mp: PathBuf,
}

impl Drop for Sshfs {
    fn drop(&mut self) {
        unmount(&self.mp);
    }
}

/// Where the two ends go.
pub struct SshfsSpec<'a> {
    /// Scratch directory for keys and sshd_config.
    pub dir: &'a Path,
    /// Directory the sshd serves.
    pub remote: &'a Path,
    /// Local mount point.
    pub mp: &'a Path,
    /// Where sshd runs, and the address it listens on.
    pub server: (Place<'a>, Ipv4Addr),
    /// Where sshfs runs.
    pub client: Place<'a>,
}

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Start the sshd and mount sshfs (default sshfs options, as a user would).
pub fn start(spec: &SshfsSpec<'_>) -> anyhow::Result<Sshfs> {
    let ssh = spec.dir.join("ssh");
    std::fs::create_dir_all(&ssh)?;
    for key in ["host_key", "id"] {
        let p = ssh.join(key);
        if !p.exists() {
            let st = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&p).status()?;
            anyhow::ensure!(st.success(), "ssh-keygen failed");
        }
    }
    std::fs::copy(ssh.join("id.pub"), ssh.join("authorized_keys"))?;
    let (server, listen) = spec.server;
    // A site has a namespace of its own: any port is free there.
    let port = match server {
        Place::Local => free_tcp_port()?,
        Place::Site(_) => 2222,
    };
    let config = ssh.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress {listen}\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPidFile {pid}\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n",
            hk = ssh.join("host_key").display(),
            ak = ssh.join("authorized_keys").display(),
            pid = ssh.join("sshd.pid").display(),
        ),
    )?;
    let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"].into_iter().find(|p| Path::new(p).exists()).unwrap_or("sshd");
    // sshd insists on its privilege separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let child = server
        .command(sshd)
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting sshd")?;
    let sshd = Killed(child);
    let addr = SocketAddr::from((listen, port));
    wait_for("sshd", Duration::from_secs(10), || spec.client.can_connect(addr))?;
    std::fs::create_dir_all(spec.mp)?;
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let st = spec
        .client
        .command("timeout")
        .arg("30")
        .arg("sshfs")
        .arg(format!("{user}@{listen}:{}", spec.remote.display()))
        .arg(spec.mp)
        .arg("-o")
        .arg(format!(
            "port={port},IdentityFile={},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,LogLevel=ERROR",
            ssh.join("id").display()
        ))
        .status()
        .context("running sshfs")?;
    anyhow::ensure!(st.success(), "sshfs mount failed");
    Ok(Sshfs { _sshd: sshd, mp: spec.mp.to_path_buf() })
}
