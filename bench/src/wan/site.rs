//! Launching processes at a site: a [`Site`] hands out `std::process::Command`s whose child enters
//! the site's network namespace (via `setns` between `fork` and `exec`) before running, so any
//! unchanged program (renkei, iperf3, ping, sshfs) sees only the site's interfaces.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;

use super::error::WanError;
use super::netns;

/// Environment variable carrying the site name into processes started there.
pub const ENV_SITE: &str = "RENKEI_SITE";
/// Environment variable carrying the site's address into processes started there.
pub const ENV_SITE_ADDR: &str = "RENKEI_SITE_ADDR";

/// A handle on one site of a running test bed. Cheap to clone; valid while the test bed lives.
#[derive(Debug, Clone)]
pub struct Site {
    pub(super) name: String,
    pub(super) addr: Ipv4Addr,
    pub(super) netns: String,
    pub(super) ns_fd: Arc<OwnedFd>,
}

impl Site {
    /// The site's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The site's address in the emulated subnet; other sites reach it there.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Name of the site's network namespace (for `ip netns exec`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Run `f` on a short-lived thread inside this site's namespace and return its result. Sockets
    /// made there belong to the site for good, whichever thread uses them later: this is how an
    /// in-process client (a quinn endpoint, say) can live at a site.
    ///
    /// ```no_run
    /// # fn demo(site: &bench::wan::Site) -> Result<(), bench::wan::WanError> {
    /// let socket = site.run_in(|| std::net::UdpSocket::bind((site.addr(), 0)))?;
    /// # Ok(()) }
    /// ```
    pub fn run_in<R: Send>(&self, f: impl FnOnce() -> std::io::Result<R> + Send) -> Result<R, WanError> {
        let what = format!("running in site {}", self.name);
        netns::run_in(&self.ns_fd, || f().map_err(|e| WanError::io(what, e)))
    }

    /// A command that runs `program` inside this site. Configure and spawn it as usual; the test
    /// bed kills whatever is still running in the site when it is torn down.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        command_in(self.ns_fd.clone(), &self.name, self.addr, program)
    }
}

/// A command whose child enters the namespace `ns_fd` before `exec`.
pub fn command_in(ns_fd: Arc<OwnedFd>, site: &str, addr: Ipv4Addr, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env(ENV_SITE, site).env(ENV_SITE_ADDR, addr.to_string());
    // SAFETY: the closure only calls setns(2), which is async-signal-safe, on a descriptor that the
    // Arc keeps open until the Command is dropped.
    unsafe {
        cmd.pre_exec(move || netns::enter(&*ns_fd).map_err(std::io::Error::from));
    }
    cmd
}
