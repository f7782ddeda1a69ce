//! Raw access to a service for malformed-input tests: a mutually
//! authenticated connection on which the test writes whatever bytes it likes.

use fs_proto::endpoint::{client_endpoint, TlsFiles, TlsIdentity, Tuning};
use std::net::SocketAddr;

/// Connect to `addr` (certificate name `name`) as the identity in `files`.
pub async fn connect(addr: SocketAddr, name: &str, files: &TlsFiles) -> Result<quinn::Connection, String> {
    let tls = TlsIdentity::load(files).map_err(|e| e.to_string())?;
    let ep = client_endpoint("127.0.0.1:0".parse().map_err(|e| format!("{e}"))?, &tls, &Tuning::default())
        .map_err(|e| e.to_string())?;
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
