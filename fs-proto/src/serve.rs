//! The accepting side of every renkei service: authenticate each incoming
//! connection by its certificate, then read one request frame per stream,
//! closing the whole connection when a peer breaks the framing.

use crate::endpoint::{explain_connection_error, peer_identity};
use crate::error::quic_codes;
use crate::frame::read_msg;
use crate::identity::Identity;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tracing::{debug, warn};

/// How long a peer may take to send a complete request frame.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Finish the handshake of an incoming connection and read the peer's
/// identity; refusals are logged (with the reason in words) and yield None.
pub async fn accept(incoming: quinn::Incoming) -> Option<(quinn::Connection, Identity)> {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            warn!(%remote, "refused connection: {}", explain_connection_error(&e));
            return None;
        }
    };
    match peer_identity(&conn) {
        Ok((id, cert)) => {
            // Revoked later: the connection is closed then.
            if let Ok(serial) = crate::revocation::serial_of(&cert) {
                tokio::spawn(crate::revocation::watch_connection(conn.clone(), serial));
            }
            Some((conn, id))
        }
        Err(e) => {
            warn!(%remote, "refused connection: {e}");
            conn.close(quic_codes::FORBIDDEN, format!("refused: {e}").as_bytes());
            None
        }
    }
}

/// Read the request frame of a new stream. A protocol violation closes the
/// connection (the peer is broken or hostile; other peers are unaffected); a
/// peer too slow to send its frame gets the stream reset.
pub async fn read_request<T: DeserializeOwned>(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> Option<T> {
    match tokio::time::timeout(REQUEST_READ_TIMEOUT, read_msg(recv)).await {
        Ok(Ok(r)) => Some(r),
        Ok(Err(e)) if e.is_protocol_violation() => {
            warn!("closing connection: {e}");
            conn.close(quic_codes::PROTOCOL, format!("protocol violation: {e}").as_bytes());
            None
        }
        Ok(Err(e)) => {
            debug!("request stream failed: {e}");
            None
        }
        Err(_) => {
            warn!("request frame not received within {REQUEST_READ_TIMEOUT:?}; resetting the stream");
            let _ = send.reset(quic_codes::PROTOCOL);
            None
        }
    }
}
