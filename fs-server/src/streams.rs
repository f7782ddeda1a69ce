//! What one peer may hold of a file server, so that no client can stall it
//! for everyone else (issue 12, finding 5: a few hundred idle streams used
//! to pin the whole blocking pool while the server still heartbeated
//! healthy).
//!
//! - Streams are served by async code; disk work goes to the blocking pool
//!   one bounded step at a time (a batch written, a piece read), so a
//!   stream waiting for its peer holds no blocking thread.
//! - Every wait for the peer is bounded by [`StreamLimits::idle_ms`]: the
//!   request frame, each later frame or piece of data, and the credit to
//!   send more. A stream silent longer is answered with an error (or reset
//!   when even that cannot be sent) and its resources released: its
//!   temporary files are removed, nothing committed is touched.
//! - One connection is served at most [`StreamLimits::per_connection`]
//!   streams at once: its further streams are not accepted until one ends,
//!   so they wait at the peer (QUIC flow control) and cost the server
//!   nothing.
//! - One identity proven by its certificate (role and name) is served at
//!   most [`StreamLimits::per_user`] streams at once over all of its
//!   connections; a stream beyond waits up to [`StreamLimits::wait_ms`] for
//!   one of them to end, then is refused with `Unavailable` and a message
//!   saying why. Other users keep being served.

use fs_proto::identity::Role;
use fs_proto::{ErrorCode, Identity, RemoteError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The QUIC code of a stream reset because its peer stayed silent (or took
/// no data) for longer than the idle bound.
pub const IDLE_RESET: quinn::VarInt = quinn::VarInt::from_u32(0x1d1e);

/// Identities whose counters are kept while idle before the table is swept.
const KEEP_IDLE_USERS: usize = 1024;

/// Per-stream, per-connection and per-user bounds (`[streams]` in the
/// server's configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamLimits {
    /// A stream whose peer sends nothing (or takes nothing it is sent) for
    /// this long (ms) is closed.
    pub idle_ms: u64,
    /// Streams of one connection served at once; further ones wait at the
    /// peer until one ends.
    pub per_connection: usize,
    /// Streams of one identity served at once over all its connections.
    pub per_user: usize,
    /// How long (ms) a stream beyond `per_user` waits for a slot before it
    /// is refused.
    pub wait_ms: u64,
}

impl Default for StreamLimits {
    fn default() -> Self {
        // Far below tokio's 512 blocking threads, and no stream pins one
        // while idle anyway.
        StreamLimits { idle_ms: 30_000, per_connection: 128, per_user: 256, wait_ms: 10_000 }
    }
}

impl StreamLimits {
    /// The idle bound.
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms.max(1))
    }
}

/// The error of a stream closed for silence.
pub fn idle_error(what: &str, idle: Duration) -> RemoteError {
    RemoteError::new(
        ErrorCode::Interrupted,
        format!("{what}: nothing from the peer for {} ms; stream closed", idle.as_millis()),
    )
}

/// Await `fut` for at most `idle`: None if the peer let it wait longer.
pub async fn within<T>(idle: Duration, fut: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(idle, fut).await.ok()
}

/// Admission of streams: the per-user counters and what was refused.
pub struct Admission {
    limits: StreamLimits,
    users: Mutex<HashMap<(Role, String), Arc<Semaphore>>>,
    refused: AtomicU64,
}

/// A stream's place among its user's streams, held while it is served.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Admission {
    /// Admission under `limits`.
    pub fn new(limits: StreamLimits) -> Self {
        Admission { limits, users: Mutex::new(HashMap::new()), refused: AtomicU64::new(0) }
    }

    /// The limits.
    pub fn limits(&self) -> &StreamLimits {
        &self.limits
    }

    /// The idle bound.
    pub fn idle(&self) -> Duration {
        self.limits.idle()
    }

    /// Streams refused so far because their user had too many.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The slots of one connection.
    pub fn connection_slots(&self) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(self.limits.per_connection.max(1)))
    }

    fn user(&self, peer: &Identity) -> Arc<Semaphore> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if users.len() > KEEP_IDLE_USERS {
            // Forget identities with nothing in progress.
            let max = self.limits.per_user.max(1);
            users.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < max);
        }
        users
            .entry((peer.role, peer.name.clone()))
            .or_insert_with(|| Arc::new(Semaphore::new(self.limits.per_user.max(1))))
            .clone()
    }

    /// A slot for a new stream of `peer`: at once if it has fewer than
    /// `per_user` streams in progress, else when one ends within `wait_ms`,
    /// else an error saying why.
    pub async fn admit(&self, peer: &Identity) -> Result<Slot, RemoteError> {
        let sem = self.user(peer);
        if let Ok(p) = sem.clone().try_acquire_owned() {
            return Ok(Slot { _permit: p });
        }
        let wait = Duration::from_millis(self.limits.wait_ms);
        match tokio::time::timeout(wait, sem.acquire_owned()).await {
            Ok(Ok(p)) => Ok(Slot { _permit: p }),
            _ => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(RemoteError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "{peer} has {} requests in progress on this file server, the most one user may have; \
                         this one waited {} ms and is refused: try again once some have finished",
                        self.limits.per_user,
                        wait.as_millis()
                    ),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> Identity {
        Identity { name: name.into(), role: Role::User, site: None }
    }

    #[tokio::test]
    async fn a_user_over_the_limit_waits_then_is_refused_and_others_are_not() {
        let a = Admission::new(StreamLimits { idle_ms: 1_000, per_connection: 4, per_user: 2, wait_ms: 50 });
        let m1 = a.admit(&id("mallory")).await.unwrap();
        let _m2 = a.admit(&id("mallory")).await.unwrap();
        let e = a.admit(&id("mallory")).await.err().expect("third refused");
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(e.message.contains("user mallory"), "{e}");
        assert_eq!(a.refused(), 1);
        // Another user is not affected, nor a host of the same name.
        let _a1 = a.admit(&id("alice")).await.unwrap();
        let _h = a.admit(&Identity { name: "mallory".into(), role: Role::Host, site: None }).await.unwrap();
        // A slot that ends lets a waiting stream in.
        let waiting = tokio::spawn(async move {
            let a = a;
            a.admit(&id("mallory")).await.map(|_| ())
        });
        drop(m1);
        waiting.await.unwrap().unwrap();
    }
}
