//! Fetching a bundle of read-ahead files: one `ServerRequest::ReadMany`
//! stream per file server holding them, the files arriving one after
//! another in the order asked, each kept only if it has its grant's size
//! and BLAKE3.

use super::{Prefetch, Wanted};
use crate::counters::Counters;
use crate::error::ClientError;
use bytes::Bytes;
use fs_proto::rpc::{reply, request, CallError, Dialer, PeerAddr};
use fs_proto::server::{ServerRequest, ServerResponse};
use fs_proto::ServerLoc;
use std::sync::Arc;
use std::time::Duration;

/// A bundle stream may take this long plus its bytes at 4 MiB/s.
const BOUND: Duration = Duration::from_secs(10);

/// How long a bundle of `bytes` may take.
pub fn bound(bytes: u64) -> Duration {
    BOUND + Duration::from_secs(bytes / (4 << 20))
}

/// Fetch a bundle: the files go to the first replica each grant names (the
/// nearest), one `ReadMany` per server, the servers' streams in parallel.
/// A file that cannot be fetched is dropped from the store: its reader
/// reads it the usual way.
#[tracing::instrument(skip_all, fields(files = wanted.len()))]
pub async fn fetch(prefetch: Arc<Prefetch>, dialer: Dialer, counters: Arc<Counters>, wanted: Vec<Wanted>) {
    let mut groups: Vec<(ServerLoc, Vec<Wanted>)> = Vec::new();
    for w in wanted {
        let Some(loc) = w.grant.replicas.first().cloned() else {
            prefetch.failed(w);
            continue;
        };
        match groups.iter_mut().find(|(l, _)| l.host == loc.host) {
            Some((_, g)) => g.push(w),
            None => groups.push((loc, vec![w])),
        }
    }
    let streams = groups.into_iter().map(|(loc, group)| {
        let (prefetch, dialer, counters) = (prefetch.clone(), dialer.clone(), counters.clone());
        async move {
            let bytes: u64 = group.iter().map(|w| w.grant.attr.size).sum();
            let mut left = group.into_iter();
            let work = read_many(&loc, &dialer, &counters, &prefetch, &mut left);
            match tokio::time::timeout(bound(bytes), work).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(host = %loc.host, "prefetch stream failed: {e}"),
                Err(_) => tracing::debug!(host = %loc.host, "prefetch stream took too long"),
            }
            for w in left {
                prefetch.failed(w);
            }
        }
    });
    futures::future::join_all(streams).await;
}

async fn read_many(
    loc: &ServerLoc,
    dialer: &Dialer,
    counters: &Counters,
    prefetch: &Prefetch,
    left: &mut std::vec::IntoIter<Wanted>,
) -> Result<(), ClientError> {
    let caps = left.as_slice().iter().filter_map(|w| w.grant.cap.clone()).collect::<Vec<_>>();
    let peer = PeerAddr { addr: loc.addr, name: loc.host.clone() };
    let proto = |e: &dyn std::fmt::Display| {
        ClientError::Call(CallError::Connect { peer: loc.host.clone(), reason: e.to_string() })
    };
    let conn = dialer.connect(&peer).await?;
    counters.bump("data.read_many");
    let (mut send, mut recv) = request(&conn, &ServerRequest::ReadMany { caps }).await.map_err(|e| proto(&e))?;
    let _ = send.finish();
    for w in left.by_ref() {
        let a = w.grant.attr.clone();
        let len = match reply::<ServerResponse>(&mut recv).await.map_err(|e| proto(&e))? {
            Ok(ServerResponse::Reading { len, .. }) => len,
            Ok(other) => return Err(ClientError::Unexpected(format!("{other:?}"))),
            Err(e) => {
                tracing::debug!(ino = a.ino, "not prefetched: {e}");
                prefetch.failed(w);
                continue;
            }
        };
        if len != a.size {
            prefetch.failed(w);
            return Err(ClientError::Integrity(format!("inode {} came with {len} bytes, not {}", a.ino, a.size)));
        }
        let mut buf = vec![0u8; len as usize];
        if let Err(e) = recv.read_exact(&mut buf).await {
            prefetch.failed(w);
            return Err(proto(&e));
        }
        counters.add("data.bytes_in", len);
        if Some(*blake3::hash(&buf).as_bytes()) != a.hash {
            prefetch.failed(w);
            return Err(ClientError::Integrity(format!("inode {} failed its end-to-end hash check", a.ino)));
        }
        tracing::debug!(ino = a.ino, gen = a.gen, len, "prefetched");
        let _ = w.tx.send(Some(Some(Bytes::from(buf))));
    }
    Ok(())
}
