//! The status page's listener: bounds what HTTP clients may hold in the
//! meta server process. At most [`MAX_CONNECTIONS`] connections are open at
//! once (beyond, new ones wait in the kernel's backlog, costing the process
//! nothing), and each ends when it has been silent for [`IDLE`] or open for
//! [`LIFETIME`], so a client that opens connections and sends nothing, or a
//! byte at a time, cannot exhaust the process's file descriptors or keep
//! the page from everyone else for long.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Most connections open at once.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection silent this long is closed.
pub const IDLE: Duration = Duration::from_secs(10);
/// No connection lives longer (a browser reconnects).
pub const LIFETIME: Duration = Duration::from_secs(60);

/// How many connections the page holds open, announced on every change.
pub type OpenCount = Arc<tokio::sync::watch::Sender<usize>>;

/// A listener admitting a bounded number of bounded connections.
pub struct Guarded {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    open: OpenCount,
}

impl Guarded {
    /// Guard `inner`, counting the connections it holds in `open`.
    pub fn new(inner: TcpListener, open: OpenCount) -> Self {
        Guarded { inner, slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)), open }
    }
}

impl axum::serve::Listener for Guarded {
    type Io = Bounded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Bounded, SocketAddr) {
        loop {
            // A slot first: at the bound, nothing more is accepted.
            let Ok(permit) = self.slots.clone().acquire_owned().await else {
                // Never closed; wait for the task to end instead of spinning.
                std::future::pending::<()>().await;
                continue;
            };
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (Bounded::new(stream, permit, self.open.clone()), addr);
                }
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::debug!("status page accept failed: {e}");
                    drop(permit);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection that ends when silent for [`IDLE`] or open for [`LIFETIME`];
/// it holds its slot until dropped.
pub struct Bounded {
    stream: TcpStream,
    idle: Pin<Box<Sleep>>,
    end: Instant,
    _slot: OwnedSemaphorePermit,
    open: OpenCount,
}

impl Drop for Bounded {
    fn drop(&mut self) {
        self.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Bounded {
    fn new(stream: TcpStream, slot: OwnedSemaphorePermit, open: OpenCount) -> Self {
        let now = Instant::now();
        open.send_modify(|n| *n += 1);
        Bounded { stream, idle: Box::pin(tokio::time::sleep(IDLE)), end: now + LIFETIME, _slot: slot, open }
    }

    /// After progress: the idle clock restarts (never past the lifetime).
    fn progressed(&mut self) {
        let at = (Instant::now() + IDLE).min(self.end);
        self.idle.as_mut().reset(at);
    }

    /// While waiting: whether the connection's time is up.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.idle.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "status page connection idle or open too long")
}

impl AsyncRead for Bounded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        match Pin::new(&mut me.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                me.progressed();
                Poll::Ready(r)
            }
            Poll::Pending if me.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        match Pin::new(&mut me.stream).poll_write(cx, buf) {
            Poll::Ready(r) => {
                me.progressed();
                Poll::Ready(r)
            }
            Poll::Pending if me.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        match Pin::new(&mut me.stream).poll_flush(cx) {
            Poll::Pending if me.expired(cx) => Poll::Ready(Err(timed_out())),
            r => r,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
