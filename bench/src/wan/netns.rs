//! Named network namespaces (iproute2's `/run/netns/NAME` convention): create, configure the
//! site's interfaces, enter from a thread or a child process, find and kill the processes inside,
//! delete. iproute2 does the netlink work; this module only sequences it.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{debug, warn};

use super::error::WanError;

/// Where iproute2 keeps the bind mounts that name namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Run `ip ARGS...` and return its stdout.
pub fn ip(args: &[&str]) -> Result<String, WanError> {
    let out =
        Command::new("ip").args(args).output().map_err(|e| WanError::io("running `ip` (is iproute2 installed?)", e))?;
    if !out.status.success() {
        return Err(WanError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Names of all named network namespaces on this machine.
pub fn list() -> Result<Vec<String>, WanError> {
    let dir = match std::fs::read_dir(NETNS_DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(WanError::io(format!("listing {NETNS_DIR}"), e)),
    };
    let mut names: Vec<String> = dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
    names.sort();
    Ok(names)
}

/// One named network namespace.
#[derive(Debug, Clone)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Create a new, empty namespace with `lo` up.
    pub fn create(name: &str) -> Result<Self, WanError> {
        ip(&["netns", "add", name])?;
        let ns = Netns { name: name.to_string() };
        ip(&["-n", name, "link", "set", "dev", "lo", "up"])?;
        debug!(netns = name, "created");
        Ok(ns)
    }

    /// Refer to an existing namespace by name (it need not exist).
    pub fn named(name: &str) -> Self {
        Netns { name: name.to_string() }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the bind mount that names it.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// Whether the namespace still exists.
    pub fn exists(&self) -> bool {
        self.path().exists()
    }

    /// Open the namespace; the descriptor can be given to [`enter`] (also after `fork`).
    pub fn open(&self) -> Result<OwnedFd, WanError> {
        File::open(self.path()).map(OwnedFd::from).map_err(|e| WanError::io(format!("opening netns {}", self.name), e))
    }

    /// Give interface `dev` (already in this namespace) an address in the emulated subnet, an MTU,
    /// and bring it up, so the whole subnet is routed through it.
    pub fn configure_interface(&self, dev: &str, addr_cidr: &str, mtu: u32) -> Result<(), WanError> {
        let n = self.name.as_str();
        let mtu = mtu.to_string();
        // A deep driver queue keeps the kernel from dropping before our modelled queue does.
        ip(&["-n", n, "link", "set", "dev", dev, "mtu", &mtu, "txqueuelen", "10000", "up"])?;
        ip(&["-n", n, "addr", "add", addr_cidr, "dev", dev])?;
        Ok(())
    }

    /// Processes whose network namespace is this one.
    pub fn pids(&self) -> Vec<Pid> {
        match ip(&["netns", "pids", &self.name]) {
            Ok(out) => out.split_whitespace().filter_map(|p| p.parse::<i32>().ok()).map(Pid::from_raw).collect(),
            Err(e) => {
                debug!(netns = %self.name, error = %e, "listing pids");
                Vec::new()
            }
        }
    }

    /// SIGTERM every process inside, wait up to `grace` for them to go, then SIGKILL the rest.
    /// Returns how many processes were found.
    pub fn kill_all(&self, grace: Duration) -> usize {
        let me = Pid::this();
        let first: Vec<Pid> = self.pids().into_iter().filter(|p| *p != me).collect();
        if first.is_empty() {
            return 0;
        }
        for p in &first {
            let _ = kill(*p, Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !self.pids().iter().all(|p| *p == me) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for p in self.pids().into_iter().filter(|p| *p != me) {
            warn!(netns = %self.name, pid = p.as_raw(), "process ignored SIGTERM; killing");
            let _ = kill(p, Signal::SIGKILL);
        }
        first.len()
    }

    /// Remove the namespace's name (it disappears once no process or descriptor holds it).
    pub fn delete(&self) -> Result<(), WanError> {
        if !self.exists() {
            return Ok(());
        }
        ip(&["netns", "delete", &self.name])?;
        debug!(netns = %self.name, "deleted");
        Ok(())
    }
}

/// Run `f` on a short-lived thread inside the namespace `ns_fd` refers to; the caller's own
/// namespace is untouched. For work that acts on "the current namespace" (creating a TUN device,
/// writing `/proc/sys/net`).
pub fn run_in<R: Send>(ns_fd: &OwnedFd, f: impl FnOnce() -> Result<R, WanError> + Send) -> Result<R, WanError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns_fd.as_fd()).map_err(|e| WanError::errno("entering site netns", e))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(WanError::State("namespace worker thread panicked".into())))
    })
}

/// Switch IPv6 off for interfaces created from now on in the current thread's namespace (sites are
/// IPv4-only; this keeps router solicitations off the emulated links). No-op without IPv6.
pub fn disable_ipv6_for_new_interfaces() {
    let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
}

/// Move the calling thread into the namespace `fd` refers to. Async-signal-safe: usable in
/// `pre_exec` between `fork` and `exec`.
pub fn enter(fd: impl AsFd) -> Result<(), nix::errno::Errno> {
    setns(fd, CloneFlags::CLONE_NEWNET)
}
