//! QUIC endpoints with mutual TLS, built from federation identities.
//!
//! Every renkei connection requires both sides to present a certificate of
//! the federation CA; the ALPN carries the protocol version. Transport windows
//! default to sizes that fill a long fat pipe (1 Gbit/s at 100 ms) without
//! any sysctl tuning: quinn's defaults (1.25 MB per stream) would cap one
//! stream at ~125 MB/s at 10 ms, the hand-tuned-TCP-buffer problem again.

use crate::identity::{Identity, IdentityError};
use crate::version::ALPN;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Paths of the PEM files that make up a node's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The federation CA certificate (trust anchor).
    pub ca: PathBuf,
    /// This node's certificate.
    pub cert: PathBuf,
    /// This node's private key (PKCS#8 PEM).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Resolve relative paths against `base` (the directory of the config file).
    pub fn resolve(&mut self, base: &Path) {
        for p in [&mut self.ca, &mut self.cert, &mut self.key] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
}

/// Failures setting up TLS or QUIC.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Certificate or key trouble.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The TLS config is unusable for QUIC.
    #[error("QUIC crypto configuration: {0}")]
    QuicCrypto(String),
    /// Binding the UDP socket failed.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The peer presented no certificate or one that is not a renkei identity.
    #[error("peer identity: {0}")]
    Peer(String),
}

/// Congestion controller choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    /// CUBIC (the default, as in quinn).
    #[default]
    Cubic,
    /// BBR: paces at the measured bottleneck rate and does not mistake
    /// random loss for congestion (quinn marks it experimental).
    Bbr,
    /// NewReno.
    NewReno,
}

/// The smallest initial window accepted: RFC 9002's two datagrams' worth.
const MIN_INITIAL_WINDOW: u64 = 2 * 1200;

/// Transport tuning, shared by every role. Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tuning {
    /// Bytes one stream may have in flight towards us (flow-control window).
    pub stream_window: u64,
    /// Bytes all streams of a connection may have in flight towards us.
    pub connection_window: u64,
    /// Bytes we keep buffered for sending on one connection.
    pub send_window: u64,
    /// Keepalive interval (ms) so NATs and idle detection see traffic.
    pub keep_alive_ms: u64,
    /// A connection silent this long (ms) is dead; requests on it fail.
    pub idle_timeout_ms: u64,
    /// Concurrent requests (bidirectional streams) a peer may open.
    pub max_streams: u32,
    /// Congestion controller.
    pub congestion: Congestion,
    /// Initial congestion window (bytes): what a fresh connection may send
    /// in its first round trip before acknowledgements open the window
    /// further. quinn's default, ten 1,200-byte datagrams, makes a 150 KB
    /// reply (a compressed 10,000-entry listing) on a fresh connection wait
    /// four round trips of slow start; sending is paced over the round trip,
    /// so a larger first window is spread out rather than burst.
    pub initial_window: u64,
    /// Upper bound for path MTU discovery (bytes of UDP payload).
    pub max_mtu: u16,
    /// Kernel receive and send buffer of the UDP socket. A burst that
    /// finds the receive buffer full is lost, which a congestion controller
    /// reads as congestion; the kernel default (~208 KiB) holds under 2 ms
    /// of 1 Gbit/s. Set with SO_RCVBUFFORCE/SO_SNDBUFFORCE where permitted
    /// (root or CAP_NET_ADMIN), else as large as `net.core.*mem_max` allows:
    /// no sysctl tuning either way.
    pub socket_buffer: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            // 1 Gbit/s x 100 ms = 12.5 MB; twice that for slack.
            stream_window: 24 << 20,
            connection_window: 96 << 20,
            send_window: 96 << 20,
            keep_alive_ms: 2_000,
            idle_timeout_ms: 10_000,
            max_streams: 4096,
            congestion: Congestion::Cubic,
            initial_window: 64 << 10,
            max_mtu: 8952,
            socket_buffer: 32 << 20,
        }
    }
}

impl Tuning {
    /// The quinn transport configuration.
    pub fn transport(&self) -> TransportConfig {
        let mut t = TransportConfig::default();
        t.stream_receive_window(VarInt::from_u64(self.stream_window).unwrap_or(VarInt::MAX))
            .receive_window(VarInt::from_u64(self.connection_window).unwrap_or(VarInt::MAX))
            .send_window(self.send_window)
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(self.max_streams))
            .keep_alive_interval(Some(Duration::from_millis(self.keep_alive_ms)))
            .max_idle_timeout(IdleTimeout::try_from(Duration::from_millis(self.idle_timeout_ms)).ok());
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(self.max_mtu.max(1200));
        t.mtu_discovery_config(Some(mtu));
        let iw = self.initial_window.max(MIN_INITIAL_WINDOW);
        match self.congestion {
            Congestion::Cubic => {
                let mut c = quinn::congestion::CubicConfig::default();
                c.initial_window(iw);
                t.congestion_controller_factory(Arc::new(c));
            }
            Congestion::Bbr => {
                let mut c = quinn::congestion::BbrConfig::default();
                c.initial_window(iw);
                t.congestion_controller_factory(Arc::new(c));
            }
            Congestion::NewReno => {
                let mut c = quinn::congestion::NewRenoConfig::default();
                c.initial_window(iw);
                t.congestion_controller_factory(Arc::new(c));
            }
        }
        t
    }
}

/// A node's loaded identity: trust anchor, certificate chain and key.
pub struct TlsIdentity {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// Who this node is, read from its own certificate.
    pub identity: Identity,
    /// The revocation list beside the CA file ([`crate::revocation`]).
    crl: std::path::PathBuf,
    /// The certificate handshakes present, re-read when renewed.
    own: Arc<OwnCert>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        TlsIdentity {
            roots: self.roots.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            identity: self.identity.clone(),
            crl: self.crl.clone(),
            own: self.own.clone(),
        }
    }
}

/// This node's certificate as its handshakes present it (as server and as
/// client): the certificate file is looked at at most once per
/// [`crate::revocation::CHECK_EVERY`] and re-read when it changed, so a
/// certificate renewed in place (`renkei ca renew`: same identity, same
/// key) is presented by new connections without a restart. A file that
/// names someone else or holds another key is not taken (a new key would
/// no longer match the key a meta server signs capabilities with): the
/// node goes on with the certificate it has and says so.
#[derive(Debug)]
struct OwnCert {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    identity: Identity,
    key_der: Vec<u8>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    state: std::sync::Mutex<OwnState>,
}

#[derive(Debug)]
struct OwnState {
    checked: std::time::Instant,
    mtime: Option<std::time::SystemTime>,
    current: Arc<rustls::sign::CertifiedKey>,
}

impl OwnCert {
    fn current(&self) -> Arc<rustls::sign::CertifiedKey> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.checked.elapsed() >= crate::revocation::CHECK_EVERY {
            st.checked = std::time::Instant::now();
            let mtime = std::fs::metadata(&self.cert).and_then(|m| m.modified()).ok();
            if mtime.is_some() && mtime != st.mtime {
                st.mtime = mtime;
                match self.reload() {
                    Ok(ck) => {
                        tracing::info!(cert = %self.cert.display(), "own certificate renewed: new connections present it");
                        st.current = ck;
                    }
                    Err(e) => tracing::warn!(cert = %self.cert.display(), "keeping the certificate in use: {e}"),
                }
            }
        }
        st.current.clone()
    }

    fn reload(&self) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
        let chain = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| e.to_string())?;
        let first = chain.first().ok_or("no certificate in the file")?;
        let id = Identity::from_cert_der(first).map_err(|e| e.to_string())?;
        if id.name != self.identity.name || id.role != self.identity.role {
            return Err(format!("the file now holds {id}, not {}", self.identity));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| e.to_string())?;
        if key.secret_der() != self.key_der.as_slice() {
            return Err("the key changed: a new key takes a restart (renew keeps the key)".into());
        }
        rustls::sign::CertifiedKey::from_der(chain, key, &self.provider).map(Arc::new).map_err(|e| e.to_string())
    }
}

impl rustls::server::ResolvesServerCert for OwnCert {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for OwnCert {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn parse_err(path: &Path, e: impl std::fmt::Display) -> IdentityError {
    IdentityError::Parse { what: path.display().to_string(), detail: e.to_string() }
}

/// Load the trust anchors of a CA file.
pub fn load_roots(ca: &Path) -> Result<Arc<RootCertStore>, EndpointError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| parse_err(ca, e))? {
        let cert = cert.map_err(|e| parse_err(ca, e))?;
        roots.add(cert).map_err(|e| parse_err(ca, e))?;
    }
    if roots.is_empty() {
        return Err(parse_err(ca, "no certificate in CA file").into());
    }
    Ok(Arc::new(roots))
}

impl TlsIdentity {
    /// Load from PEM files.
    pub fn load(files: &TlsFiles) -> Result<Self, EndpointError> {
        let roots = load_roots(&files.ca)?;
        let chain = CertificateDer::pem_file_iter(&files.cert)
            .map_err(|e| parse_err(&files.cert, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| parse_err(&files.cert, e))?;
        let first = chain.first().ok_or_else(|| parse_err(&files.cert, "no certificate in file"))?;
        let identity = Identity::from_cert_der(first)?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| parse_err(&files.key, e))?;
        let provider = Self::provider();
        let current = Arc::new(
            rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)
                .map_err(|e| parse_err(&files.key, e))?,
        );
        let own = Arc::new(OwnCert {
            cert: files.cert.clone(),
            key: files.key.clone(),
            identity: identity.clone(),
            key_der: key.secret_der().to_vec(),
            provider,
            state: std::sync::Mutex::new(OwnState {
                checked: std::time::Instant::now(),
                mtime: std::fs::metadata(&files.cert).and_then(|m| m.modified()).ok(),
                current,
            }),
        });
        Ok(TlsIdentity { roots, chain, key, identity, crl: crate::revocation::crl_path(&files.ca), own })
    }

    /// PKCS#8 DER of the private key (what capability signing uses).
    pub fn key_der(&self) -> &[u8] {
        self.key.secret_der()
    }

    /// DER of this node's own certificate.
    pub fn cert_der(&self) -> &[u8] {
        &self.chain[0]
    }

    /// The trust anchors.
    pub fn roots(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// rustls server configuration that requires a client certificate from
    /// the federation CA, not revoked.
    pub fn server_crypto(&self) -> Result<rustls::ServerConfig, EndpointError> {
        let base = rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots.clone(), Self::provider())
            .build()
            .map_err(|e| EndpointError::QuicCrypto(e.to_string()))?;
        let verifier = Arc::new(crate::revocation::RevokingVerifier::new(base, self.crl.clone()));
        let mut cfg = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.own.clone());
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        cfg.max_early_data_size = 0;
        Ok(cfg)
    }

    /// rustls client configuration presenting this identity.
    pub fn client_crypto(&self) -> Result<rustls::ClientConfig, EndpointError> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots.clone())
            .with_client_cert_resolver(self.own.clone());
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }
}

/// A client configuration that presents no certificate (only useful to show
/// that servers refuse it).
pub fn anonymous_client_config(
    roots: Arc<RootCertStore>,
    tuning: &Tuning,
) -> Result<quinn::ClientConfig, EndpointError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    quic_client_config(cfg, tuning)
}

fn quic_client_config(cfg: rustls::ClientConfig, tuning: &Tuning) -> Result<quinn::ClientConfig, EndpointError> {
    let crypto = QuicClientConfig::try_from(cfg).map_err(|e| EndpointError::QuicCrypto(e.to_string()))?;
    let mut c = quinn::ClientConfig::new(Arc::new(crypto));
    c.transport_config(Arc::new(tuning.transport()));
    Ok(c)
}

/// The quinn client configuration for an identity.
pub fn client_config(id: &TlsIdentity, tuning: &Tuning) -> Result<quinn::ClientConfig, EndpointError> {
    quic_client_config(id.client_crypto()?, tuning)
}

/// The quinn server configuration for an identity.
pub fn server_config(id: &TlsIdentity, tuning: &Tuning) -> Result<quinn::ServerConfig, EndpointError> {
    let crypto =
        QuicServerConfig::try_from(id.server_crypto()?).map_err(|e| EndpointError::QuicCrypto(e.to_string()))?;
    let mut s = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    s.transport_config(Arc::new(tuning.transport()));
    Ok(s)
}

/// Bind a UDP socket with the buffers `tuning` asks for.
pub fn bind_socket(bind: SocketAddr, tuning: &Tuning) -> Result<std::net::UdpSocket, EndpointError> {
    let err = |source| EndpointError::Bind { addr: bind, source };
    let domain = if bind.is_ipv6() { socket2::Domain::IPV6 } else { socket2::Domain::IPV4 };
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP)).map_err(err)?;
    if bind.is_ipv6() {
        let _ = sock.set_only_v6(false);
    }
    sock.bind(&bind.into()).map_err(err)?;
    let socket: std::net::UdpSocket = sock.into();
    size_buffers(&socket, tuning.socket_buffer);
    Ok(socket)
}

/// Grow a socket's kernel buffers to `bytes`: forced where the process may
/// (root or CAP_NET_ADMIN), else up to the system's maximum.
fn size_buffers(socket: &std::net::UdpSocket, bytes: usize) {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let val = bytes.min(i32::MAX as usize) as libc::c_int;
    for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
        let set = |opt| {
            // SAFETY: setsockopt on a valid descriptor with a pointer to a c_int of the stated size.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    &val as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        if set(force) != 0 {
            set(plain);
        }
    }
}

/// The endpoint configuration. A server's stateless-reset key is derived
/// from its private key, so a server restarted on the same address answers
/// packets of connections its previous run held with a stateless reset: a
/// peer learns of the restart within one round trip and dials again,
/// instead of waiting out the idle timeout on a dead connection (RFC 9000
/// §10.3). Dial-only endpoints keep a random key.
fn endpoint_config(server_id: Option<&TlsIdentity>) -> quinn::EndpointConfig {
    let mut c = match server_id {
        Some(id) => {
            let secret = blake3::derive_key("renkei 2026 quic stateless reset key", id.key.secret_der());
            let mut c = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret)));
            // The connection IDs it issued must still pass its check, or the
            // packets are dropped unanswered.
            let cid_key = u64::from_le_bytes(secret[..8].try_into().expect("8 bytes"));
            c.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
            c
        }
        None => quinn::EndpointConfig::default(),
    };
    // Accept datagrams as large as UDP allows; path MTU discovery decides
    // what actually fits (jumbo frames, loopback).
    let _ = c.max_udp_payload_size(65_527);
    c
}

fn endpoint_on(
    socket: std::net::UdpSocket,
    server: Option<quinn::ServerConfig>,
    id: &TlsIdentity,
    tuning: &Tuning,
) -> Result<Endpoint, EndpointError> {
    let addr = socket
        .local_addr()
        .map_err(|source| EndpointError::Bind { addr: SocketAddr::from(([0, 0, 0, 0], 0)), source })?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| EndpointError::QuicCrypto("no async runtime to drive the endpoint".into()))?;
    let socket = runtime.wrap_udp_socket(socket).map_err(|source| EndpointError::Bind { addr, source })?;
    let socket = crate::udp::GsoCapped::wrap(socket, tuning.max_mtu);
    let config = endpoint_config(server.is_some().then_some(id));
    let mut ep = Endpoint::new_with_abstract_socket(config, server, socket, runtime)
        .map_err(|source| EndpointError::Bind { addr, source })?;
    ep.set_default_client_config(client_config(id, tuning)?);
    Ok(ep)
}

/// An endpoint that accepts connections (and can also dial out, presenting
/// the same identity).
pub fn server_endpoint(bind: SocketAddr, id: &TlsIdentity, tuning: &Tuning) -> Result<Endpoint, EndpointError> {
    endpoint_on(bind_socket(bind, tuning)?, Some(server_config(id, tuning)?), id, tuning)
}

/// An endpoint that only dials out.
pub fn client_endpoint(bind: SocketAddr, id: &TlsIdentity, tuning: &Tuning) -> Result<Endpoint, EndpointError> {
    endpoint_on(bind_socket(bind, tuning)?, None, id, tuning)
}

/// A dial-only endpoint on a socket the caller made: e.g. one bound inside
/// another network namespace (a test site), which stays there for good.
pub fn client_endpoint_on(
    socket: std::net::UdpSocket,
    id: &TlsIdentity,
    tuning: &Tuning,
) -> Result<Endpoint, EndpointError> {
    size_buffers(&socket, tuning.socket_buffer);
    endpoint_on(socket, None, id, tuning)
}

/// The verified identity and certificate of the peer of a connection.
pub fn peer_identity(conn: &quinn::Connection) -> Result<(Identity, CertificateDer<'static>), EndpointError> {
    let any = conn.peer_identity().ok_or_else(|| EndpointError::Peer("peer presented no certificate".into()))?;
    let chain = any
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| EndpointError::Peer("peer identity is not a certificate chain".into()))?;
    let first = chain.first().cloned().ok_or_else(|| EndpointError::Peer("empty certificate chain".into()))?;
    let id = Identity::from_cert_der(&first)?;
    Ok((id, first))
}

/// Explain a connection failure in words a user can act on.
pub fn explain_connection_error(e: &quinn::ConnectionError) -> String {
    use quinn::ConnectionError as C;
    let raw = e.to_string();
    let hint = if raw.contains("UnknownIssuer")
        || raw.contains("unknown issuer")
        || raw.contains("UnknownCA")
        || raw.contains("unknown CA")
    {
        " (the certificate was not issued by this federation's CA)"
    } else if raw.contains("Revoked") || raw.contains("revoked") {
        " (this certificate has been revoked: ask the federation's administrator for a new one)"
    } else if raw.contains("Expired") || raw.contains("expired") {
        " (a certificate has expired: issue a new one with `renkei ca issue`)"
    } else if raw.contains("CertificateRequired")
        || raw.contains("certificate required")
        || raw.contains("NoCertificatesPresented")
    {
        " (a client certificate is required: set cert/key in the client config)"
    } else if raw.contains("no application protocol") || raw.contains("NoApplicationProtocol") {
        return format!("{raw} (protocol version mismatch: this build speaks {})", crate::version::ALPN_STR);
    } else if matches!(e, C::TimedOut) {
        " (no answer: is the peer running and the address right?)"
    } else {
        ""
    };
    format!("{raw}{hint}")
}
