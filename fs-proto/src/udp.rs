//! The UDP socket under every endpoint, with segmentation offload kept
//! inside what the kernel accepts.
//!
//! quinn sends up to 10 datagrams of the path MTU in one `sendmsg` (UDP GSO).
//! The kernel refuses a GSO batch whose total exceeds the 64 KiB an IP
//! packet may hold (`EMSGSIZE`), and quinn-udp treats `EMSGSIZE` as an MTU
//! probe that did not fit: the whole batch vanishes silently. Once path MTU
//! discovery reaches jumbo sizes (8,952 bytes: 8 of them are 70 KiB) every
//! full batch is lost, the congestion controller sees losses of 8 packets at
//! a time, and one connection crawls at a few percent of a 1 Gbit/s link.
//! [`GsoCapped`] caps the batch at what fits.

use quinn::{AsyncUdpSocket, UdpPoller};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Largest UDP payload of one IP packet, the kernel's bound on a GSO batch.
const MAX_GSO_BYTES: usize = 65_535 - 20 - 8;

/// A socket that never offers quinn more segments per batch than fit
/// in one IP packet at the largest MTU path discovery may reach.
pub(crate) struct GsoCapped {
    inner: Arc<dyn AsyncUdpSocket>,
    max_segments: usize,
}

impl GsoCapped {
    /// Wrap `inner` for datagrams of at most `max_mtu` bytes.
    pub(crate) fn wrap(inner: Arc<dyn AsyncUdpSocket>, max_mtu: u16) -> Arc<dyn AsyncUdpSocket> {
        let max_segments = (MAX_GSO_BYTES / usize::from(max_mtu.max(1200))).max(1);
        Arc::new(GsoCapped { inner, max_segments })
    }
}

impl fmt::Debug for GsoCapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GsoCapped").field("inner", &self.inner).field("max_segments", &self.max_segments).finish()
    }
}

impl AsyncUdpSocket for GsoCapped {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit<'_>) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments().min(self.max_segments)
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_never_exceeds_one_ip_packet() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let Some(rt) = quinn::default_runtime() else { panic!("no runtime") };
        let inner = rt.wrap_udp_socket(sock).unwrap();
        let offered = inner.max_transmit_segments();
        for mtu in [1200u16, 1452, 8952, 65000] {
            let capped =
                GsoCapped::wrap(rt.wrap_udp_socket(std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap(), mtu);
            let n = capped.max_transmit_segments();
            assert!(n >= 1 && n <= offered, "mtu {mtu}: {n} segments (socket offers {offered})");
            assert!(n == 1 || n * usize::from(mtu) <= MAX_GSO_BYTES, "mtu {mtu}: {n} segments exceed 64 KiB");
        }
    }
}
