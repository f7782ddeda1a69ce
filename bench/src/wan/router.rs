//! The userspace router: moves IP packets between the sites' TUN devices through the link models.
//!
//! Threads, all named and all stopping within [`POLL`] of [`Router::stop`]:
//! - one *ingress* thread per site reads every packet the site sends, finds the destination site by
//!   address, asks that directed link's [`LinkModel`] for a verdict and, unless it is dropped, hands
//!   the packet with its delivery instant to the link's delay line;
//! - one *delay line* thread per directed link holds packets until their instant (they are already
//!   in order: the link is FIFO) and writes them into the destination site's TUN device.
//!
//! Each link's packets in flight are bounded in bytes, so a sender can never make the router grow
//! without limit; overflow counts as a drop.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::error::WanError;
use super::link::{LinkModel, Verdict};
use super::topology::{Resolved, Topology};
use super::tun::Tun;

/// Longest a thread blocks before it looks at the stop flag again.
pub const POLL: Duration = Duration::from_millis(100);
/// A packet due within this much is written now rather than after another sleep: one wake-up then
/// serves several packets at high rates, at the cost of delivering up to this much early.
const EARLY: Duration = Duration::from_micros(100);
/// How far behind schedule a delay line may fall (when the machine is too busy to keep up) before
/// the link drops packets rather than letting its memory grow.
const LAG_ALLOWANCE: Duration = Duration::from_millis(50);
/// In-flight budget of a link without a rate limit.
const UNLIMITED_BUDGET: usize = 64 << 20;

/// Counters of one directed link.
#[derive(Debug, Default)]
struct LinkCounters {
    packets: AtomicU64,
    bytes: AtomicU64,
    drop_queue: AtomicU64,
    drop_loss: AtomicU64,
    drop_overflow: AtomicU64,
    write_errors: AtomicU64,
    drop_cut: AtomicU64,
    /// The link is cut: every packet is dropped ([`Router::set_cut`]).
    cut: AtomicBool,
}

/// A snapshot of one directed link's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStats {
    /// Sending site.
    pub from: String,
    /// Receiving site.
    pub to: String,
    /// Packets delivered.
    pub packets: u64,
    /// IP bytes delivered.
    pub bytes: u64,
    /// Packets dropped because the bottleneck queue was full.
    pub drop_queue: u64,
    /// Packets dropped by configured random loss.
    pub drop_loss: u64,
    /// Packets dropped because the link's in-flight budget was exhausted (should stay 0).
    pub drop_overflow: u64,
    /// Packets the destination TUN refused.
    pub write_errors: u64,
    /// Packets dropped while the link was cut.
    #[serde(default)]
    pub drop_cut: u64,
}

/// One packet on its way.
struct InFlight {
    at: Instant,
    data: Vec<u8>,
}

/// Sending half of one directed link, owned by the source site's ingress thread.
struct LinkIn {
    model: LinkModel,
    tx: Sender<InFlight>,
    in_flight: Arc<AtomicUsize>,
    budget: usize,
    counters: Arc<LinkCounters>,
}

/// The running router.
pub struct Router {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    links: Vec<(String, String, Arc<LinkCounters>)>,
    unroutable: Arc<AtomicU64>,
}

impl Router {
    /// Start forwarding between `tuns` (one per site, in site order) as `topo` says.
    pub fn start(topo: &Resolved, tuns: &[Arc<Tun>], seed: u64) -> Result<Router, WanError> {
        let n = topo.names.len();
        let stop = Arc::new(AtomicBool::new(false));
        let unroutable = Arc::new(AtomicU64::new(0));
        let mut router = Router { stop: stop.clone(), threads: Vec::new(), links: Vec::new(), unroutable };
        let mut ingress: Vec<Vec<Option<LinkIn>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        for (a, row) in topo.links.iter().enumerate() {
            for (b, params) in row.iter().enumerate() {
                let Some(params) = params else { continue };
                let model = LinkModel::new(params, topo.mtu);
                let budget = match params.rate_bytes_per_sec() {
                    Some(rate) => {
                        let span = 2.0 * model.delay().as_secs_f64() + LAG_ALLOWANCE.as_secs_f64();
                        model.queue_limit() + (rate * span) as usize + 16 * topo.mtu as usize
                    }
                    None => UNLIMITED_BUDGET,
                };
                let (tx, rx) = channel();
                let counters = Arc::new(LinkCounters::default());
                let in_flight = Arc::new(AtomicUsize::new(0));
                let line = DelayLine {
                    rx,
                    dst: tuns[b].clone(),
                    in_flight: in_flight.clone(),
                    counters: counters.clone(),
                    stop: stop.clone(),
                };
                let name = format!("wan-{}-{}", topo.names[a], topo.names[b]);
                router.spawn(name, move || line.run())?;
                router.links.push((topo.names[a].clone(), topo.names[b].clone(), counters.clone()));
                ingress[a][b] = Some(LinkIn { model, tx, in_flight, budget, counters });
            }
        }
        for (a, links) in ingress.into_iter().enumerate() {
            let site = Ingress {
                site: a,
                tun: tuns[a].clone(),
                links,
                rng: SmallRng::seed_from_u64(seed.wrapping_add(a as u64)),
                unroutable: router.unroutable.clone(),
                stop: stop.clone(),
                mtu: topo.mtu,
            };
            router.spawn(format!("wan-rx-{}", topo.names[a]), move || site.run())?;
        }
        debug!(sites = n, threads = router.threads.len(), "router started");
        Ok(router)
    }

    fn spawn(&mut self, name: String, f: impl FnOnce() + Send + 'static) -> Result<(), WanError> {
        let handle = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                prioritise_this_thread();
                f()
            })
            .map_err(|e| WanError::io(format!("spawning router thread {name}"), e))?;
        self.threads.push(handle);
        Ok(())
    }

    /// Counters of every directed link.
    pub fn stats(&self) -> Vec<LinkStats> {
        self.links
            .iter()
            .map(|(from, to, c)| LinkStats {
                from: from.clone(),
                to: to.clone(),
                packets: c.packets.load(Ordering::Relaxed),
                bytes: c.bytes.load(Ordering::Relaxed),
                drop_queue: c.drop_queue.load(Ordering::Relaxed),
                drop_loss: c.drop_loss.load(Ordering::Relaxed),
                drop_overflow: c.drop_overflow.load(Ordering::Relaxed),
                write_errors: c.write_errors.load(Ordering::Relaxed),
                drop_cut: c.drop_cut.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Cut the link `from -> to` (every packet dropped from now on, as a
    /// pulled cable or a dead router would) or restore it. Packets already
    /// on the wire are still delivered. `false` if there is no such link.
    pub fn set_cut(&self, from: &str, to: &str, cut: bool) -> bool {
        let link = self.links.iter().find(|(f, t, _)| f == from && t == to);
        if let Some((_, _, c)) = link {
            c.cut.store(cut, Ordering::Relaxed);
        }
        link.is_some()
    }

    /// Packets that arrived for an address no site has (or that were not IPv4).
    pub fn unroutable(&self) -> u64 {
        self.unroutable.load(Ordering::Relaxed)
    }

    /// Stop every thread and wait for them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let name = t.thread().name().unwrap_or("?").to_string();
            if t.join().is_err() {
                warn!(thread = name, "router thread panicked");
            }
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The router is the network: give its threads a real-time (round-robin, lowest) priority so busy
/// applications at the sites cannot starve it and distort delays. Its threads block whenever there
/// is nothing to forward, and the kernel's real-time throttling bounds them anyway. Falls back to
/// normal scheduling where that is not allowed.
fn prioritise_this_thread() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: plain syscall on the calling thread (pid 0) with a valid parameter block.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) };
    if rc != 0 {
        debug!(error = %std::io::Error::last_os_error(), "no real-time priority for router thread");
    }
}

/// Reads one site's outgoing packets.
struct Ingress {
    site: usize,
    tun: Arc<Tun>,
    links: Vec<Option<LinkIn>>,
    rng: SmallRng,
    unroutable: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    mtu: u32,
}

impl Ingress {
    fn run(mut self) {
        let mut buf = vec![0u8; self.mtu as usize + 64];
        let mut errors = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            match self.tun.recv(&mut buf) {
                Ok(Some(len)) => self.forward(&buf[..len]),
                Ok(None) => {
                    let mut fds = [PollFd::new(self.tun.fd().as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::from(POLL.as_millis() as u16));
                }
                Err(e) => {
                    errors += 1;
                    if errors.is_power_of_two() {
                        warn!(site = self.site, error = %e, errors, "reading TUN");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    fn forward(&mut self, packet: &[u8]) {
        let n_sites = self.links.len();
        let dst = ipv4_destination(packet).and_then(|d| Topology::index_of_addr(d, n_sites));
        let Some(link) = dst.and_then(|d| self.links.get_mut(d)).and_then(Option::as_mut) else {
            self.unroutable.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if link.counters.cut.load(Ordering::Relaxed) {
            link.counters.drop_cut.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = Instant::now();
        match link.model.admit(now, packet.len(), self.rng.random::<f64>()) {
            Verdict::DropQueue => {
                link.counters.drop_queue.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::DropLoss => {
                link.counters.drop_loss.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Deliver(at) => {
                if link.in_flight.load(Ordering::Relaxed) + packet.len() > link.budget {
                    link.counters.drop_overflow.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                link.in_flight.fetch_add(packet.len(), Ordering::Relaxed);
                // The delay line only goes away when stopping; then the packet may be lost.
                let _ = link.tx.send(InFlight { at, data: packet.to_vec() });
            }
        }
    }
}

/// Destination address of an IPv4 packet.
fn ipv4_destination(packet: &[u8]) -> Option<std::net::Ipv4Addr> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    Some(std::net::Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]))
}

/// Holds one link's packets until they are due.
struct DelayLine {
    rx: Receiver<InFlight>,
    dst: Arc<Tun>,
    in_flight: Arc<AtomicUsize>,
    counters: Arc<LinkCounters>,
    stop: Arc<AtomicBool>,
}

impl DelayLine {
    fn run(self) {
        // Sleep as precisely as the kernel can: the default 50 us slack is a third of a LAN RTT.
        if let Err(e) = nix::sys::prctl::set_timerslack(1) {
            debug!(error = %e, "PR_SET_TIMERSLACK");
        }
        // While packets keep coming (a burst), one due within EARLY goes out with the one before;
        // the first packet after an idle spell always waits for its exact instant.
        let mut in_burst = false;
        while !self.stop.load(Ordering::Relaxed) {
            let next = if in_burst {
                self.rx.try_recv().map_err(|_| RecvTimeoutError::Timeout)
            } else {
                self.rx.recv_timeout(POLL)
            };
            let packet = match next {
                Ok(p) => p,
                Err(RecvTimeoutError::Timeout) if in_burst => {
                    in_burst = false;
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if !self.wait_until(packet.at, if in_burst { EARLY } else { Duration::ZERO }) {
                break;
            }
            in_burst = true;
            let len = packet.data.len();
            match self.dst.send(&packet.data) {
                Ok(()) => {
                    self.counters.packets.fetch_add(1, Ordering::Relaxed);
                    self.counters.bytes.fetch_add(len as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    if self.counters.write_errors.fetch_add(1, Ordering::Relaxed).is_power_of_two() {
                        debug!(error = %e, "writing TUN");
                    }
                }
            }
            self.in_flight.fetch_sub(len, Ordering::Relaxed);
        }
    }

    /// Sleep until `at` less `early`; false if told to stop meanwhile.
    fn wait_until(&self, at: Instant, early: Duration) -> bool {
        loop {
            let now = Instant::now();
            if at <= now + early {
                return true;
            }
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep((at - now).min(POLL));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ipv4_destinations_only() {
        let mut p = [0u8; 20];
        p[0] = 0x45;
        p[16..20].copy_from_slice(&[10, 77, 0, 2]);
        assert_eq!(ipv4_destination(&p), Some(std::net::Ipv4Addr::new(10, 77, 0, 2)));
        p[0] = 0x60;
        assert_eq!(ipv4_destination(&p), None);
        assert_eq!(ipv4_destination(&p[..19]), None);
    }
}
