//! Calling a peer: a cache of QUIC connections by peer (dialled on demand,
//! re-dialled after they die), and the request/reply exchange on one stream.
//!
//! Every call has a bound: connecting is bounded by [`Dialer`]'s connect
//! timeout, a dead connection is noticed by QUIC keepalive and idle timeout,
//! and [`call`] bounds the whole exchange. Nothing waits forever.
//!
//! A federation may run several meta servers (one leads, the others stand
//! by and refuse connections): [`MetaAddrs`] is how configurations list
//! them and [`MetaPeers`] which one callers use now, moving on to the next
//! when one cannot be reached.

use crate::endpoint::explain_connection_error;
use crate::error::{ProtoError, RemoteError};
use crate::frame::{read_msg, write_msg};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a peer is and the name its certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerAddr {
    /// UDP address.
    pub addr: SocketAddr,
    /// Host name (TLS server name).
    pub name: String,
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.addr)
    }
}

/// The meta servers a configuration names: one address (`meta = { addr =
/// "...", name = "meta" }`) or several (`meta = [{ ... }, { ... }]`, the
/// active/standby meta servers on one etcd cluster; they share one
/// certificate, so one name). Written back as one table when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaAddrs(Vec<PeerAddr>);

impl MetaAddrs {
    /// Several addresses (at least one).
    pub fn new(addrs: Vec<PeerAddr>) -> Result<Self, String> {
        if addrs.is_empty() {
            return Err("meta: at least one address".into());
        }
        Ok(MetaAddrs(addrs))
    }

    /// The first address listed.
    pub fn first(&self) -> &PeerAddr {
        &self.0[0]
    }

    /// Every address, in order.
    pub fn all(&self) -> &[PeerAddr] {
        &self.0
    }
}

impl From<PeerAddr> for MetaAddrs {
    fn from(p: PeerAddr) -> Self {
        MetaAddrs(vec![p])
    }
}

impl std::fmt::Display for MetaAddrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&all.join(", "))
    }
}

impl Serialize for MetaAddrs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for MetaAddrs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(PeerAddr),
            Many(Vec<PeerAddr>),
        }
        match OneOrMany::deserialize(d).map_err(|_| {
            serde::de::Error::custom("meta: expected { addr = \"HOST:PORT\", name = \"NAME\" } or a list of them")
        })? {
            OneOrMany::One(p) => Ok(MetaAddrs(vec![p])),
            OneOrMany::Many(v) => MetaAddrs::new(v).map_err(serde::de::Error::custom),
        }
    }
}

/// The meta servers in use: which one callers talk to now, shared by every
/// clone. A caller that cannot reach it says so ([`Self::failed`]) and the
/// next address is used from then on: that is how clients, file servers and
/// agents follow the leader of an active/standby group.
#[derive(Debug, Clone)]
pub struct MetaPeers {
    list: Arc<[PeerAddr]>,
    current: Arc<std::sync::atomic::AtomicUsize>,
}

impl MetaPeers {
    /// Start with the first address.
    pub fn new(addrs: &MetaAddrs) -> Self {
        MetaPeers { list: addrs.0.clone().into(), current: Default::default() }
    }

    /// The meta server to talk to now.
    pub fn current(&self) -> PeerAddr {
        let i = self.current.load(std::sync::atomic::Ordering::Acquire) % self.list.len();
        self.list[i].clone()
    }

    /// Every address.
    pub fn all(&self) -> &[PeerAddr] {
        &self.list
    }

    /// `peer` could not be reached (or refused: a standby): use the next
    /// address, unless another caller moved on already. True if there is
    /// another address to try.
    pub fn failed(&self, peer: &PeerAddr) -> bool {
        if self.list.len() < 2 {
            return false;
        }
        if let Some(i) = self.list.iter().position(|p| p == peer) {
            let next = (i + 1) % self.list.len();
            use std::sync::atomic::Ordering;
            if self.current.compare_exchange(i, next, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                tracing::info!(from = %peer, to = %self.list[next], "meta server unreachable, trying the next one");
            }
        }
        true
    }

    /// Call the current meta server; one that cannot be reached is skipped
    /// for the next, each address tried at most once. A request that was
    /// sent and then lost is not sent again here (the caller knows whether
    /// it may be).
    pub async fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        dialer: &Dialer,
        req: &Q,
        timeout: Duration,
    ) -> Result<A, CallError> {
        let mut left = self.list.len();
        loop {
            let peer = self.current();
            match dialer.call(&peer, req, timeout).await {
                Err(e @ CallError::Connect { .. }) => {
                    left -= 1;
                    if left == 0 || !self.failed(&peer) {
                        return Err(e);
                    }
                }
                Err(e) => {
                    if e.connection_lost() || matches!(e, CallError::Timeout { .. }) {
                        // Sent, answer lost: the next call tries the next.
                        self.failed(&peer);
                    }
                    return Err(e);
                }
                Ok(a) => return Ok(a),
            }
        }
    }
}

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Could not reach or authenticate to the peer.
    #[error("cannot connect to {peer}: {reason}")]
    Connect {
        /// Who.
        peer: String,
        /// Why, in words a user can act on.
        reason: String,
    },
    /// The exchange failed at the transport or framing level.
    #[error("request to {peer} failed: {}", describe(source))]
    Proto {
        /// Who.
        peer: String,
        /// Cause.
        source: ProtoError,
    },
    /// The peer answered with an error.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// No answer within the bound.
    #[error("no answer from {peer} within {secs} s")]
    Timeout {
        /// Who.
        peer: String,
        /// Bound.
        secs: u64,
    },
}

impl CallError {
    /// The remote error code, if the peer answered with one.
    pub fn code(&self) -> Option<crate::ErrorCode> {
        match self {
            CallError::Remote(r) => Some(r.code),
            _ => None,
        }
    }

    /// True when the connection died under the call (the peer restarted and
    /// reset it, closed it, or went silent past the idle timeout): the
    /// request may or may not have been served, so only a request that
    /// changes nothing may simply be sent again.
    pub fn connection_lost(&self) -> bool {
        matches!(
            self,
            CallError::Proto {
                source: ProtoError::Read(quinn::ReadError::ConnectionLost(_))
                    | ProtoError::Write(quinn::WriteError::ConnectionLost(_))
                    | ProtoError::Connection(_),
                ..
            }
        )
    }

    /// True when the peer could not be reached at all (worth trying another).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, CallError::Connect { .. } | CallError::Timeout { .. } | CallError::Proto { .. })
    }
}

/// A transport failure in words a user can act on: when the connection was
/// lost, say why (e.g. the TLS alert the peer sent).
pub fn describe(e: &ProtoError) -> String {
    let lost = match e {
        ProtoError::Read(quinn::ReadError::ConnectionLost(c)) => Some(c),
        ProtoError::Write(quinn::WriteError::ConnectionLost(c)) => Some(c),
        ProtoError::Connection(c) => Some(c),
        _ => None,
    };
    match lost {
        Some(c) => format!("connection lost: {}", explain_connection_error(c)),
        None => e.to_string(),
    }
}

/// Open a stream and send a request frame (the send side stays open for any
/// raw bytes the caller streams after it).
pub async fn request<Q: Serialize>(
    conn: &quinn::Connection,
    req: &Q,
) -> Result<(quinn::SendStream, quinn::RecvStream), ProtoError> {
    let (mut send, recv) = conn.open_bi().await?;
    write_msg(&mut send, req).await?;
    Ok((send, recv))
}

/// Read a reply frame (`Result<A, RemoteError>`).
pub async fn reply<A: DeserializeOwned>(recv: &mut quinn::RecvStream) -> Result<Result<A, RemoteError>, ProtoError> {
    read_msg::<Result<A, RemoteError>>(recv).await
}

/// One request, one reply, on a fresh stream.
pub async fn call<Q: Serialize, A: DeserializeOwned>(
    conn: &quinn::Connection,
    peer: &str,
    req: &Q,
    timeout: Duration,
) -> Result<A, CallError> {
    let fut = async {
        let (mut send, mut recv) = request(conn, req).await?;
        send.finish()?;
        reply::<A>(&mut recv).await
    };
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(CallError::Timeout { peer: peer.to_string(), secs: timeout.as_secs() }),
        Ok(Err(source)) => Err(CallError::Proto { peer: peer.to_string(), source }),
        Ok(Ok(r)) => Ok(r?),
    }
}

/// One request answered by a stream of reply frames (`Result<A,
/// RemoteError>`, e.g. the pages of a `ListDir`). `on_page` takes each page
/// as it arrives and says whether more follow (or refuses it); each wait for
/// a page is bounded by `idle`. A remote error ends the call; so does the
/// stream ending before `on_page` said the last page came (truncated).
pub async fn call_paged<Q: Serialize, A: DeserializeOwned>(
    conn: &quinn::Connection,
    peer: &str,
    req: &Q,
    idle: Duration,
    mut on_page: impl FnMut(A) -> Result<bool, CallError>,
) -> Result<(), CallError> {
    let timeout = || CallError::Timeout { peer: peer.to_string(), secs: idle.as_secs() };
    let proto = |source: ProtoError| CallError::Proto { peer: peer.to_string(), source };
    let (mut send, mut recv) =
        tokio::time::timeout(idle, request(conn, req)).await.map_err(|_| timeout())?.map_err(proto)?;
    send.finish().map_err(|e| proto(e.into()))?;
    loop {
        let page = match tokio::time::timeout(idle, reply::<A>(&mut recv)).await.map_err(|_| timeout())? {
            Err(ProtoError::Eof) => return Err(proto(ProtoError::Truncated)),
            other => other.map_err(proto)??,
        };
        if !on_page(page)? {
            return Ok(());
        }
    }
}

/// One request answered by a header reply and then a stream of event
/// frames until the peer finishes its side (e.g. a copy order reporting
/// each file as it completes). `on_event` sees every event as it arrives;
/// each wait (for the header, for the next event) is bounded by `idle`.
/// Returns the header once the stream ended cleanly.
pub async fn call_streaming<Q: Serialize, A: DeserializeOwned, E: DeserializeOwned>(
    conn: &quinn::Connection,
    peer: &str,
    req: &Q,
    idle: Duration,
    mut on_event: impl FnMut(E),
) -> Result<A, CallError> {
    let timeout = || CallError::Timeout { peer: peer.to_string(), secs: idle.as_secs() };
    let proto = |source: ProtoError| CallError::Proto { peer: peer.to_string(), source };
    let (mut send, mut recv) = request(conn, req).await.map_err(proto)?;
    send.finish().map_err(|e| proto(e.into()))?;
    let head = tokio::time::timeout(idle, reply::<A>(&mut recv)).await.map_err(|_| timeout())?.map_err(proto)??;
    loop {
        match tokio::time::timeout(idle, read_msg::<E>(&mut recv)).await.map_err(|_| timeout())? {
            Ok(ev) => on_event(ev),
            Err(ProtoError::Eof) => return Ok(head),
            Err(e) => return Err(proto(e)),
        }
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

/// A cache of connections to peers, dialled on demand.
#[derive(Clone)]
pub struct Dialer {
    endpoint: quinn::Endpoint,
    slots: Arc<Mutex<HashMap<PeerAddr, Slot>>>,
    connect_timeout: Duration,
}

impl Dialer {
    /// Dial through `endpoint` (whose default client config carries our identity).
    pub fn new(endpoint: quinn::Endpoint, connect_timeout: Duration) -> Self {
        Dialer { endpoint, slots: Arc::new(Mutex::new(HashMap::new())), connect_timeout }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    fn slot(&self, peer: &PeerAddr) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(peer.clone()).or_default().clone()
    }

    /// A live connection to `peer`, dialling if needed.
    pub async fn connect(&self, peer: &PeerAddr) -> Result<quinn::Connection, CallError> {
        let slot = self.slot(peer);
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let err = |reason: String| CallError::Connect { peer: peer.to_string(), reason };
        let connecting = self.endpoint.connect(peer.addr, &peer.name).map_err(|e| err(e.to_string()))?;
        let conn = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Err(_) => return Err(err(format!("no answer within {} s", self.connect_timeout.as_secs()))),
            Ok(Err(e)) => return Err(err(explain_connection_error(&e))),
            Ok(Ok(c)) => c,
        };
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// The cached live connection to `peer`, without dialling.
    pub async fn cached(&self, peer: &PeerAddr) -> Option<quinn::Connection> {
        let slot = self.slot(peer);
        let guard = slot.lock().await;
        guard.as_ref().filter(|c| c.close_reason().is_none()).cloned()
    }

    /// UDP bytes (received, sent) over every live cached connection: what
    /// this dialler's owner really moved, for tests and benchmarks that
    /// assert where bytes went.
    pub async fn traffic(&self) -> (u64, u64) {
        let slots: Vec<Slot> = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.values().cloned().collect()
        };
        let (mut rx, mut tx) = (0, 0);
        for slot in slots {
            if let Some(c) = slot.lock().await.as_ref() {
                let s = c.stats();
                rx += s.udp_rx.bytes;
                tx += s.udp_tx.bytes;
            }
        }
        (rx, tx)
    }

    /// Close every cached connection (the owner is done): peers end what
    /// they keep for them (e.g. a callback session) at once instead of
    /// waiting out the idle timeout. Waits, at most `bound`, until the
    /// endpoint has nothing left to send.
    pub async fn close_all(&self, bound: Duration) {
        let slots: Vec<Slot> = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.values().cloned().collect()
        };
        for slot in slots {
            if let Some(c) = slot.lock().await.take() {
                c.close(crate::error::quic_codes::OK, b"done");
            }
        }
        let _ = tokio::time::timeout(bound, self.endpoint.wait_idle()).await;
    }

    /// Drop the cached connection to `peer` (after it failed).
    pub async fn forget(&self, peer: &PeerAddr) {
        let slot = self.slot(peer);
        let mut guard = slot.lock().await;
        if let Some(c) = guard.take() {
            c.close(crate::error::quic_codes::OK, b"reconnecting");
        }
    }

    /// Drop `conn`, a connection to `peer` that failed, from the cache if
    /// it is still the cached one, and close it. Unlike [`Self::forget`], a
    /// connection another request dialled since stays: forgetting late
    /// (from a spawned task) would otherwise close it under that request.
    pub async fn forget_conn(&self, peer: &PeerAddr, conn: &quinn::Connection) {
        let slot = self.slot(peer);
        let mut guard = slot.lock().await;
        if guard.as_ref().is_some_and(|c| c.stable_id() == conn.stable_id()) {
            guard.take();
        }
        conn.close(crate::error::quic_codes::OK, b"reconnecting");
    }

    /// Connect (re-dialling a dead connection once) and call.
    pub async fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        peer: &PeerAddr,
        req: &Q,
        timeout: Duration,
    ) -> Result<A, CallError> {
        let conn = self.connect(peer).await?;
        match call(&conn, &peer.name, req, timeout).await {
            Err(CallError::Proto { source: ProtoError::Connection(_), .. }) => {
                // The cached connection was dead before the request left;
                // dial again once.
                self.forget_conn(peer, &conn).await;
                let conn = self.connect(peer).await?;
                call(&conn, &peer.name, req, timeout).await
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MetaAddrs, MetaPeers, PeerAddr};

    #[derive(serde::Deserialize, serde::Serialize)]
    struct Cfg {
        meta: MetaAddrs,
    }

    #[test]
    fn meta_is_one_address_or_a_list_and_peers_move_on() {
        let one: Cfg = toml::from_str("meta = { addr = \"127.0.0.1:7470\", name = \"meta\" }").unwrap();
        assert_eq!(one.meta.all().len(), 1);
        // Written back as it was: one table.
        assert!(toml::to_string(&one).unwrap().contains("[meta]"));
        let two: Cfg = toml::from_str(
            "meta = [{ addr = \"127.0.0.1:7470\", name = \"meta\" }, { addr = \"127.0.0.2:7470\", name = \"meta\" }]",
        )
        .unwrap();
        assert_eq!(two.meta.all().len(), 2);
        assert!(toml::from_str::<Cfg>("meta = []").is_err(), "at least one address");
        let peers = MetaPeers::new(&two.meta);
        let first: PeerAddr = peers.current();
        assert_eq!(first, two.meta.all()[0]);
        assert!(peers.failed(&first));
        assert_eq!(peers.current(), two.meta.all()[1]);
        // A second caller reporting the same failure does not skip the leader.
        peers.failed(&first);
        assert_eq!(peers.current(), two.meta.all()[1]);
        assert!(!MetaPeers::new(&one.meta).failed(&first), "nothing else to try");
    }
}
