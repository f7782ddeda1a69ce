//! Metadata calls from the mount: counted per kind, bounded, retried while
//! the meta server is unreachable, and tagged with a cache [`Ticket`] when
//! the reply came over the connection that holds the callback subscription.
//!
//! Bounds: one round trip may take [`MountOptions::call_timeout`]; a request
//! that changes nothing is retried (re-dialling) until
//! [`MountOptions::timeout`] has passed since the operation started, then it
//! fails (EIO). A mutation is retried only if it could not have been sent.
//! With several meta servers listed (active/standby), a failed attempt
//! moves on to the next address ([`MetaPeers`]); the retries reach the
//! standby that took over.

use super::cache::{Cache, Ticket};
use super::options::MountOptions;
use crate::counters::Counters;
use crate::error::ClientError;
use fs_proto::meta::{MetaCall, MetaRequest, MetaResponse};
use fs_proto::rpc::{call, call_paged, CallError, Dialer, MetaAddrs, MetaPeers, PeerAddr};
use fs_proto::{Cred, DirEntry, Ino};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// The mount's metadata caller.
#[derive(Clone)]
pub struct Remote {
    dialer: Dialer,
    peers: MetaPeers,
    counters: Arc<Counters>,
    cache: Arc<Cache>,
    call_timeout: Duration,
    timeout: Duration,
    /// The last call found the meta server unreachable.
    down: Arc<AtomicBool>,
    /// Bundling: local entries a request names are committed first.
    bundler: Arc<std::sync::OnceLock<std::sync::Weak<super::bundler::Bundler>>>,
    /// The mount's site: replicas there are read first.
    site: String,
}

impl Remote {
    /// A caller of the meta servers `meta` through `dialer`.
    pub fn new(
        dialer: Dialer,
        meta: &MetaAddrs,
        site: String,
        counters: Arc<Counters>,
        cache: Arc<Cache>,
        o: &MountOptions,
    ) -> Self {
        Remote {
            site,
            dialer,
            peers: MetaPeers::new(meta),
            counters,
            cache,
            call_timeout: o.call_timeout,
            timeout: o.timeout,
            down: Arc::new(AtomicBool::new(false)),
            bundler: Default::default(),
        }
    }

    /// Let the bundler see every request before it goes out (see
    /// [`super::bundler::Bundler::before`]).
    pub fn set_bundler(&self, b: &Arc<super::bundler::Bundler>) {
        let _ = self.bundler.set(Arc::downgrade(b));
    }

    /// The meta server in use now.
    pub fn peer(&self) -> PeerAddr {
        self.peers.current()
    }

    /// The meta servers (the one in use, and the others to try).
    pub fn peers(&self) -> &MetaPeers {
        &self.peers
    }

    /// The dialer (shared with the data path and the subscription).
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// Whether the last call found the meta server unreachable (callers
    /// with a local answer, e.g. attributes of an open file, use it then).
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// The bound of one operation.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Send `req` as `cred`; the reply and, if it may be cached, its ticket.
    pub async fn call(
        &self,
        cred: Option<&Cred>,
        req: MetaRequest,
    ) -> Result<(MetaResponse, Option<Ticket>), ClientError> {
        let (r, t) = self.call_t(cred, req).await;
        r.map(|r| (r, t))
    }

    /// Like [`Self::call`], with the ticket also for a remote error (a
    /// missing name may be cached as absent).
    pub async fn call_t(
        &self,
        cred: Option<&Cred>,
        req: MetaRequest,
    ) -> (Result<MetaResponse, ClientError>, Option<Ticket>) {
        let (r, t) = self.exchange(cred, req).await;
        let r = r.and_then(|a| match a {
            Answer::One(mut r) => {
                // Every read grant the mount gets names the nearest replica first.
                crate::data::nearest_first_in(&mut r, &self.site);
                Ok(*r)
            }
            Answer::Listing(_) => Err(ClientError::Unexpected("a listing stream".into())),
        });
        (r, t)
    }

    /// Every entry of directory `dir` with attributes, in one
    /// `MetaRequest::ListDir` stream; the ticket covers the whole listing.
    pub async fn list_dir(
        &self,
        cred: Option<&Cred>,
        dir: Ino,
    ) -> Result<(Vec<DirEntry>, Option<Ticket>), ClientError> {
        match self.exchange(cred, MetaRequest::ListDir { ino: dir, plus: true }).await {
            (Ok(Answer::Listing(entries)), t) => Ok((entries, t)),
            (Ok(Answer::One(other)), _) => Err(ClientError::Unexpected(format!("{other:?}"))),
            (Err(e), _) => Err(e),
        }
    }

    /// One exchange with the meta server, retried as the module docs say.
    async fn exchange(&self, cred: Option<&Cred>, req: MetaRequest) -> (Result<Answer, ClientError>, Option<Ticket>) {
        if let Some(b) = self.bundler.get().and_then(|w| w.upgrade()) {
            // Boxed: giving a lease back sends a request itself.
            Box::pin(b.before(&req)).await;
        }
        let kind = req.kind();
        let mutation = req.is_mutation();
        let listing = matches!(req, MetaRequest::ListDir { .. });
        let msg = MetaCall { cred: cred.cloned(), req };
        let deadline = Instant::now() + self.timeout;
        let span = tracing::debug_span!("meta", kind);
        // Instrumented, never entered: a guard held across an await would
        // leave the span entered on whatever task the worker polls next.
        async move {
            let mut pause = Duration::from_millis(50);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let ticket = self.cache.ticket();
                let mut used: Option<quinn::Connection> = None;
                let peer = self.peers.current();
                let attempt = async {
                    let conn = self.dialer.connect(&peer).await?;
                    used = Some(conn.clone());
                    self.counters.bump(kind);
                    let t = ticket.filter(|t| t.conn == conn.stable_id());
                    let bound = self.call_timeout.min(left);
                    let r = if listing {
                        read_listing(&conn, &peer.name, &msg, bound).await.map(Answer::Listing)
                    } else {
                        call::<_, MetaResponse>(&conn, &peer.name, &msg, bound).await.map(|r| Answer::One(Box::new(r)))
                    };
                    Ok::<_, CallError>((r, t))
                };
                let sent = Instant::now();
                // A listing is bounded per page (it may be long, and moves while
                // pages arrive); anything else by what is left of the operation.
                let done = if listing { Ok(attempt.await) } else { tokio::time::timeout(left, attempt).await };
                let waited = sent.elapsed();
                self.counters.add_meta_wait(waited);
                tracing::debug!(kind, waited_us = waited.as_micros() as u64, "meta reply");
                let err = match done {
                    Ok(Ok((Ok(r), t))) => {
                        self.down.store(false, Ordering::Relaxed);
                        return (Ok(r), t);
                    }
                    Ok(Ok((Err(CallError::Remote(e)), t))) => {
                        self.down.store(false, Ordering::Relaxed);
                        return (Err(ClientError::Call(CallError::Remote(e))), t);
                    }
                    Ok(Ok((Err(e), _))) | Ok(Err(e)) => e,
                    Err(_) => CallError::Timeout { peer: peer.name.clone(), secs: self.timeout.as_secs() },
                };
                // Not sent: no connection, or no stream could be opened on
                // it (the request never left).
                let unsent = matches!(
                    err,
                    CallError::Connect { .. } | CallError::Proto { source: fs_proto::ProtoError::Connection(_), .. }
                );
                if let Some(conn) = used.take() {
                    // The connection may be dead without knowing it yet: dial
                    // anew. Not waited for: a dial in progress holds the slot.
                    // Only this connection is dropped: another request may
                    // have dialled a new one by the time this runs, and
                    // closing that one under it failed it (a mkdir answered
                    // EIO right after the meta server came back).
                    let (dialer, peer) = (self.dialer.clone(), peer.clone());
                    tokio::spawn(async move { dialer.forget_conn(&peer, &conn).await });
                }
                // Unreachable, refused (a standby) or silent: the next
                // attempt goes to the next meta server listed.
                self.peers.failed(&peer);
                if (mutation && !unsent) || Instant::now() + pause >= deadline {
                    self.down.store(true, Ordering::Relaxed);
                    tracing::warn!(kind, "meta call failed: {err}");
                    return (Err(ClientError::Call(err)), None);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
        .instrument(span)
        .await
    }
}

/// What one exchange brought back.
enum Answer {
    One(Box<MetaResponse>),
    Listing(Vec<DirEntry>),
}

/// Read a `ListDir` stream to its last page; each page must arrive within
/// `idle`.
async fn read_listing(
    conn: &quinn::Connection,
    peer: &str,
    msg: &MetaCall,
    idle: Duration,
) -> Result<Vec<DirEntry>, CallError> {
    let mut out = Vec::new();
    call_paged(conn, peer, msg, idle, |page| fs_proto::meta::listing_page(page, &mut out)).await?;
    Ok(out)
}
