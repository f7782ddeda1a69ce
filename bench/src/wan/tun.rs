//! TUN devices: create one inside a site's namespace and keep its descriptor, which reads the IP
//! packets the site sends into the emulated subnet and writes packets to be received by the site.
//! The device is not persistent: it disappears when the last descriptor closes, so a router that
//! dies (even by SIGKILL) leaves no interface behind.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use super::error::WanError;
use super::netns;

/// Name of the TUN interface inside every site namespace.
pub const TUN_NAME: &str = "wan0";

/// An open TUN device (layer 3, no packet-info header).
#[derive(Debug)]
pub struct Tun {
    fd: OwnedFd,
}

impl Tun {
    /// Create the TUN device `name` inside the namespace `ns_fd` refers to. The calling thread's own
    /// namespace is not changed. IPv6 is switched off for it: sites are IPv4-only.
    pub fn create_in(ns_fd: &OwnedFd, name: &str) -> Result<Tun, WanError> {
        netns::run_in(ns_fd, || {
            netns::disable_ipv6_for_new_interfaces();
            Tun::create_here(name)
        })
    }

    /// Create the TUN device `name` in the calling thread's namespace, non-blocking.
    fn create_here(name: &str) -> Result<Tun, WanError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|e| WanError::io("opening /dev/net/tun", e))?;
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        if name.len() >= req.ifr_name.len() {
            return Err(WanError::State(format!("interface name {name:?} too long")));
        }
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which lives for the whole call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut libc::ifreq) };
        if rc < 0 {
            return Err(WanError::io(format!("TUNSETIFF {name}"), io::Error::last_os_error()));
        }
        let fd = OwnedFd::from(file);
        let flags = fcntl(&fd, FcntlArg::F_GETFL).map_err(|e| WanError::errno("F_GETFL on TUN", e))?;
        fcntl(&fd, FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK))
            .map_err(|e| WanError::errno("F_SETFL O_NONBLOCK on TUN", e))?;
        Ok(Tun { fd })
    }

    /// The descriptor (non-blocking).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Read one packet into `buf`; `Ok(None)` when none is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match nix::unistd::read(&self.fd, buf) {
            Ok(n) => Ok(Some(n)),
            Err(nix::errno::Errno::EAGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Inject one packet, as if it had arrived on the interface.
    pub fn send(&self, packet: &[u8]) -> io::Result<()> {
        nix::unistd::write(&self.fd, packet).map(drop).map_err(io::Error::from)
    }
}
