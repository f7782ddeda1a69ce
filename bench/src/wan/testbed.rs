//! [`Wan`]: one running test bed. Starting it sweeps dead runs, creates one namespace and TUN device
//! per site and starts the router; dropping it (also while a test panics) kills every process left
//! in its sites, stops the router, and deletes its namespaces and run lock.

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::error::WanError;
use super::netns::Netns;
use super::router::{LinkStats, Router};
use super::site::Site;
use super::sweep::{self, RunLock};
use super::topology::{Resolved, Topology, SUBNET_PREFIX};
use super::tun::{Tun, TUN_NAME};

/// How long processes left in a site get between SIGTERM and SIGKILL at teardown.
const KILL_GRACE: Duration = Duration::from_secs(2);

struct SiteEntry {
    site: Site,
    netns: Netns,
}

/// A running emulated WAN.
///
/// ```no_run
/// use bench::wan::{preset, Wan};
/// # fn main() -> anyhow::Result<()> {
/// let wan = Wan::start(preset::pair(10.0, Some(100.0), 0.0)?)?;
/// let b = wan.addr_of("b")?;
/// let out = wan.site("a")?.command("ping").args(["-c", "3", &b.to_string()]).output()?;
/// assert!(out.status.success());
/// # Ok(()) }
/// ```
pub struct Wan {
    topology: Topology,
    resolved: Resolved,
    sites: Vec<SiteEntry>,
    tuns: Vec<Arc<Tun>>,
    router: Option<Router>,
    lock: Option<RunLock>,
}

impl Wan {
    /// Bring `topology` up. Needs root. Leftovers of dead runs are swept first.
    pub fn start(topology: Topology) -> Result<Wan, WanError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(WanError::NotRoot);
        }
        let resolved = topology.resolve()?;
        sweep::sweep_stale()?;
        let lock = RunLock::acquire()?;
        let seed = topology.seed.unwrap_or_else(rand::random);
        let mut wan = Wan { topology, resolved, sites: Vec::new(), tuns: Vec::new(), router: None, lock: Some(lock) };
        let run = wan.run_id().to_string();
        // On any error below, dropping `wan` removes what was made so far.
        for (i, name) in wan.resolved.names.clone().iter().enumerate() {
            let ns_name = sweep::netns_name(&run, name);
            let netns = Netns::create(&ns_name)?;
            let ns_fd: Arc<OwnedFd> = Arc::new(netns.open()?);
            let addr = Topology::addr_of_index(i);
            wan.sites.push(SiteEntry {
                site: Site { name: name.clone(), addr, netns: ns_name, ns_fd: ns_fd.clone() },
                netns: netns.clone(),
            });
            let tun = Tun::create_in(&ns_fd, TUN_NAME)?;
            wan.tuns.push(Arc::new(tun));
            netns.configure_interface(TUN_NAME, &format!("{addr}/{SUBNET_PREFIX}"), wan.resolved.mtu)?;
        }
        wan.router = Some(Router::start(&wan.resolved, &wan.tuns, seed)?);
        info!(run, sites = wan.sites.len(), mtu = wan.resolved.mtu, "WAN up");
        Ok(wan)
    }

    /// This run's id (part of every namespace name).
    pub fn run_id(&self) -> &str {
        self.lock.as_ref().map_or("", |l| l.id())
    }

    /// The topology this test bed runs.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Handle on the site called `name`.
    pub fn site(&self, name: &str) -> Result<Site, WanError> {
        self.sites
            .iter()
            .find(|s| s.site.name == name)
            .map(|s| s.site.clone())
            .ok_or_else(|| WanError::NoSuchSite(name.to_string()))
    }

    /// Every site, in address order.
    pub fn sites(&self) -> Vec<Site> {
        self.sites.iter().map(|s| s.site.clone()).collect()
    }

    /// Address of the site called `name`.
    pub fn addr_of(&self, name: &str) -> Result<Ipv4Addr, WanError> {
        self.site(name).map(|s| s.addr())
    }

    /// Counters of every directed link.
    pub fn stats(&self) -> Vec<LinkStats> {
        self.router.as_ref().map(Router::stats).unwrap_or_default()
    }

    /// Counters of the link `from -> to`.
    pub fn link_stats(&self, from: &str, to: &str) -> Option<LinkStats> {
        self.stats().into_iter().find(|s| s.from == from && s.to == to)
    }

    /// Cut the links between sites `a` and `b`, both directions, while
    /// everything keeps running; [`Wan::restore`] puts them back.
    pub fn cut(&self, a: &str, b: &str) -> Result<(), WanError> {
        self.set_cut(a, b, true)
    }

    /// Restore the links between `a` and `b` after [`Wan::cut`].
    pub fn restore(&self, a: &str, b: &str) -> Result<(), WanError> {
        self.set_cut(a, b, false)
    }

    fn set_cut(&self, a: &str, b: &str, cut: bool) -> Result<(), WanError> {
        let router = self.router.as_ref().ok_or_else(|| WanError::NoSuchSite(format!("{a}/{b} (router stopped)")))?;
        for (from, to) in [(a, b), (b, a)] {
            if !router.set_cut(from, to, cut) {
                return Err(WanError::NoSuchSite(format!("no link {from} -> {to}")));
            }
        }
        info!(a, b, cut, "link state changed");
        Ok(())
    }

    /// Tear down now (what dropping does, spelled out).
    pub fn shutdown(self) {}

    fn teardown(&mut self) {
        for s in &self.sites {
            let killed = s.netns.kill_all(KILL_GRACE);
            if killed > 0 {
                info!(site = %s.site.name, killed, "stopped processes left in site");
            }
        }
        if let Some(mut router) = self.router.take() {
            router.stop();
        }
        self.tuns.clear();
        for s in self.sites.drain(..) {
            if let Err(e) = s.netns.delete() {
                warn!(netns = %s.netns.name(), error = %e, "deleting namespace");
            }
        }
        if let Some(lock) = self.lock.take() {
            info!(run = lock.id(), "WAN down");
            lock.release();
        }
    }
}

impl Drop for Wan {
    fn drop(&mut self) {
        self.teardown();
    }
}
