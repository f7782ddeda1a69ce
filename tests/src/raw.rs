//! Raw access to a service for malformed-input tests: a mutually
//! authenticated connection on which the test writes whatever bytes it likes.

use fs_proto::endpoint::{client_endpoint, TlsFiles, TlsIdentity, Tuning};
use std::net::SocketAddr;

/// Connect to `addr` (certificate name `name`) as the identity in `files`.
pub async fn connect(addr: SocketAddr, name: &str, files: &TlsFiles) -> Result<quinn::Connection, String> {
    connect_with(addr, name, files, &Tuning::default()).await
}

/// [`connect`] with a transport of the caller's choosing (a rogue client
/// may, say, offer a receive window of a few bytes and never read).
pub async fn connect_with(
    addr: SocketAddr,
    name: &str,
    files: &TlsFiles,
    tuning: &Tuning,
) -> Result<quinn::Connection, String> {
    let tls = TlsIdentity::load(files).map_err(|e| e.to_string())?;
    let ep =
        client_endpoint("127.0.0.1:0".parse().map_err(|e| format!("{e}"))?, &tls, tuning).map_err(|e| e.to_string())?;
    let connecting = ep.connect(addr, name).map_err(|e| e.to_string())?;
    connecting.await.map_err(|e| fs_proto::endpoint::explain_connection_error(&e))
}

/// Send `bytes` on a new stream (then finish it) and read whatever comes back.
pub async fn send_raw(conn: &quinn::Connection, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let why = |e: String| match conn.close_reason() {
        Some(r) => format!("{e}: {}", fs_proto::endpoint::explain_connection_error(&r)),
        None => e,
    };
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| why(e.to_string()))?;
    send.write_all(bytes).await.map_err(|e| why(e.to_string()))?;
    let _ = send.finish();
    recv.read_to_end(1 << 20).await.map_err(|e| why(e.to_string()))
}

/// A callback subscription opened by hand on `conn` (a client's connection
/// to the meta server, so the client's replies lease to it). Every frame
/// after `Subscribed` arrives on the receiver (which closes when the stream
/// ends); each `Invalidate` batch is acknowledged after `ack_after`, as a
/// mount does, or never if None.
pub async fn subscribe(
    conn: &quinn::Connection,
    ack_after: Option<std::time::Duration>,
) -> tokio::sync::mpsc::UnboundedReceiver<fs_proto::callback::CallbackFrame> {
    use fs_proto::callback::{CallbackAck, CallbackFrame};
    use fs_proto::frame::{read_msg, write_msg};
    use fs_proto::meta::{MetaCall, MetaRequest};
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    write_msg(&mut send, &MetaCall { cred: None, req: MetaRequest::Subscribe }).await.expect("subscribe");
    let first: CallbackFrame = read_msg(&mut recv).await.expect("subscribed");
    assert!(matches!(first, CallbackFrame::Subscribed { .. }), "{first:?}");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(frame) = read_msg::<CallbackFrame>(&mut recv).await {
            let seq = match &frame {
                CallbackFrame::Invalidate { seq, .. } => Some(*seq),
                _ => None,
            };
            if tx.send(frame).is_err() {
                break;
            }
            if let (Some(seq), Some(d)) = (seq, ack_after) {
                // time is the subject: a slow acknowledgement, as a busy mount's.
                tokio::time::sleep(d).await;
                if write_msg(&mut send, &CallbackAck { seq }).await.is_err() {
                    break;
                }
            }
        }
    });
    rx
}
