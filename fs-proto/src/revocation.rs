//! Certificate revocation. `renkei ca revoke` adds a certificate to the
//! CA's revocation list, `crl.pem` beside `ca.pem` (a standard X.509 CRL
//! signed by the CA key; the revoked serials are kept in `revoked.json` in
//! the CA directory). Every service that accepts connections reads the list
//! beside the CA file it trusts, at most once per [`CHECK_EVERY`] and only
//! when the file changed, without a restart: a revoked certificate fails the
//! handshake, and connections it opened earlier are closed within about
//! [`CHECK_EVERY`]. Distribute `crl.pem` to every host as `ca.pem` is; the
//! list is trusted as the CA file beside it is (whoever can write one can
//! write the other).

use crate::identity::{CaDir, IdentityError, Role};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

/// How often a service looks at its revocation list.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The revocation list that goes with the CA file `ca`.
pub fn crl_path(ca: &Path) -> PathBuf {
    ca.with_file_name("crl.pem")
}

/// The serial number of a DER certificate.
pub fn serial_of(der: &[u8]) -> Result<Vec<u8>, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| IdentityError::Parse { what: "certificate".into(), detail: e.to_string() })?;
    Ok(cert.tbs_certificate.raw_serial().to_vec())
}

/// The serials a PEM CRL file lists.
pub fn read_serials(path: &Path) -> Result<HashSet<Vec<u8>>, IdentityError> {
    use rustls::pki_types::pem::PemObject;
    let mut out = HashSet::new();
    let what = || path.display().to_string();
    for der in rustls::pki_types::CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| IdentityError::Parse { what: what(), detail: e.to_string() })?
    {
        let der = der.map_err(|e| IdentityError::Parse { what: what(), detail: e.to_string() })?;
        let (_, crl) = x509_parser::parse_x509_crl(&der)
            .map_err(|e| IdentityError::Parse { what: what(), detail: e.to_string() })?;
        out.extend(crl.iter_revoked_certificates().map(|r| r.raw_serial().to_vec()));
    }
    Ok(out)
}

/// One revoked certificate, as `revoked.json` records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Revoked {
    /// Serial number, hex.
    pub serial: String,
    /// Whose certificate it was.
    pub name: String,
    /// Host or user.
    pub role: Role,
    /// When it was revoked (seconds since the epoch).
    pub at: i64,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

impl CaDir {
    /// Revoke the certificate this CA issued to `name` (the one in its
    /// `hosts/` or `users/` directory) and rewrite `crl.pem`. Revoking twice
    /// is harmless. Returns the revocation.
    pub fn revoke(&self, role: Role, name: &str) -> Result<Revoked, IdentityError> {
        let cert = self.issued_paths(role, name).cert;
        let der = {
            use rustls::pki_types::pem::PemObject;
            CertificateDer::from_pem_file(&cert)
                .map_err(|e| IdentityError::Parse { what: cert.display().to_string(), detail: e.to_string() })?
        };
        let serial = hex(&serial_of(&der)?);
        let list_path = self.cert_path().with_file_name("revoked.json");
        let mut list: Vec<Revoked> = match std::fs::read(&list_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| IdentityError::Parse { what: list_path.display().to_string(), detail: e.to_string() })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(IdentityError::Io { path: list_path, source: e }),
        };
        let now = time::OffsetDateTime::now_utc();
        let this = match list.iter().find(|r| r.serial == serial) {
            Some(r) => r.clone(),
            None => {
                let r = Revoked { serial, name: name.to_string(), role, at: now.unix_timestamp() };
                list.push(r.clone());
                r
            }
        };
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update: now + time::Duration::days(3650),
            crl_number: rcgen::SerialNumber::from((now.unix_timestamp_nanos() / 1_000_000) as u64),
            issuing_distribution_point: None,
            revoked_certs: list
                .iter()
                .filter_map(|r| {
                    Some(rcgen::RevokedCertParams {
                        serial_number: rcgen::SerialNumber::from_slice(&unhex(&r.serial)?),
                        revocation_time: time::OffsetDateTime::from_unix_timestamp(r.at).ok()?,
                        reason_code: None,
                        invalidity_date: None,
                    })
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let ca_pem = std::fs::read_to_string(self.cert_path())
            .map_err(|e| IdentityError::Io { path: self.cert_path(), source: e })?;
        let ca_key = std::fs::read_to_string(self.key_path())
            .map_err(|e| IdentityError::Io { path: self.key_path(), source: e })?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, rcgen::KeyPair::from_pem(&ca_key)?)?;
        let crl = params.signed_by(&issuer)?;
        let json = serde_json::to_vec_pretty(&list).expect("revocations serialise");
        write_atomically(&list_path, &json)?;
        write_atomically(&crl_path(&self.cert_path()), crl.pem()?.as_bytes())?;
        Ok(this)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| IdentityError::Io { path: tmp.clone(), source: e })?;
    std::fs::rename(&tmp, path).map_err(|e| IdentityError::Io { path: path.to_path_buf(), source: e })
}

/// A service's view of one revocation list, re-read when the file changes.
#[derive(Debug)]
pub struct RevocationList {
    path: PathBuf,
    state: Mutex<ListState>,
}

#[derive(Debug, Default)]
struct ListState {
    checked: Option<Instant>,
    mtime: Option<SystemTime>,
    serials: HashSet<Vec<u8>>,
}

impl RevocationList {
    /// The list at `path` (which need not exist: nothing is revoked then).
    pub fn new(path: PathBuf) -> Arc<Self> {
        let list = Arc::new(RevocationList { path, state: Mutex::new(ListState::default()) });
        ACTIVE.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::downgrade(&list));
        list
    }

    /// Whether `serial` is revoked (looking at the file if it was last
    /// looked at more than [`CHECK_EVERY`] ago).
    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.checked.is_none_or(|t| t.elapsed() >= CHECK_EVERY) {
            st.checked = Some(Instant::now());
            let mtime = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
            if mtime != st.mtime {
                match mtime.map(|_| read_serials(&self.path)).transpose() {
                    Ok(serials) => {
                        let serials = serials.unwrap_or_default();
                        if serials != st.serials {
                            tracing::info!(path = %self.path.display(), revoked = serials.len(), "revocation list loaded");
                        }
                        st.serials = serials;
                        st.mtime = mtime;
                    }
                    // A half-written or broken list: keep the last good one.
                    Err(e) => tracing::warn!("revocation list unreadable, keeping the previous one: {e}"),
                }
            }
        }
        st.serials.contains(serial)
    }
}

/// Lists in use by this process (services built from a CA file).
static ACTIVE: Mutex<Vec<Weak<RevocationList>>> = Mutex::new(Vec::new());

/// Whether any list this process uses revokes `serial`.
pub fn revoked_anywhere(serial: &[u8]) -> bool {
    let lists: Vec<Arc<RevocationList>> = {
        let mut active = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
        active.retain(|w| w.strong_count() > 0);
        active.iter().filter_map(Weak::upgrade).collect()
    };
    lists.iter().any(|l| l.is_revoked(serial))
}

/// Close `conn` (an accepted peer whose certificate has `serial`) once its
/// certificate is revoked; ends with the connection.
pub async fn watch_connection(conn: quinn::Connection, serial: Vec<u8>) {
    loop {
        tokio::select! {
            _ = conn.closed() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {
                if revoked_anywhere(&serial) {
                    tracing::warn!(peer = %conn.remote_address(), "closing the connection of a revoked certificate");
                    conn.close(crate::error::quic_codes::FORBIDDEN, b"refused: certificate revoked");
                    return;
                }
            }
        }
    }
}

/// A client-certificate verifier that also refuses revoked certificates.
#[derive(Debug)]
pub struct RevokingVerifier {
    base: Arc<dyn ClientCertVerifier>,
    list: Arc<RevocationList>,
}

impl RevokingVerifier {
    /// `base` plus the list at `crl`.
    pub fn new(base: Arc<dyn ClientCertVerifier>, crl: PathBuf) -> Self {
        RevokingVerifier { base, list: RevocationList::new(crl) }
    }
}

impl ClientCertVerifier for RevokingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.base.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.base.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.base.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self.base.verify_client_cert(end_entity, intermediates, now)?;
        let serial = serial_of(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
        if self.list.is_revoked(&serial) {
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked));
        }
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.base.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.base.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.base.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IssueRequest;

    #[test]
    fn a_revoked_certificate_is_listed_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CaDir::new(dir.path());
        ca.init("t").unwrap();
        let issue = |name: &str| {
            let req = IssueRequest { name: name.into(), role: Role::User, site: None, not_before: None, valid_days: 1 };
            let files = ca.issue(&req).unwrap();
            use rustls::pki_types::pem::PemObject;
            serial_of(&CertificateDer::from_pem_file(&files.cert).unwrap()).unwrap()
        };
        let (alice, bob) = (issue("alice"), issue("bob"));
        let list = RevocationList::new(crl_path(&ca.cert_path()));
        assert!(!list.is_revoked(&bob), "no list: nothing revoked");
        let r = ca.revoke(Role::User, "bob").unwrap();
        assert_eq!(r.name, "bob");
        assert_eq!(ca.revoke(Role::User, "bob").unwrap(), r, "twice is once");
        let serials = read_serials(&crl_path(&ca.cert_path())).unwrap();
        assert!(serials.contains(&bob) && !serials.contains(&alice));
        assert!(ca.revoke(Role::User, "carol").is_err(), "no such certificate");
    }

    #[test]
    fn renewal_keeps_key_identity_and_serial_and_refuses_a_revoked_certificate() {
        use rustls::pki_types::pem::PemObject;
        let dir = tempfile::tempdir().unwrap();
        let ca = CaDir::new(dir.path());
        ca.init("t").unwrap();
        let req = IssueRequest {
            name: "pop1".into(),
            role: Role::Host,
            site: Some("s1".into()),
            not_before: None,
            valid_days: 1,
        };
        let files = ca.issue(&req).unwrap();
        let read = || {
            let der = CertificateDer::from_pem_file(&files.cert).unwrap();
            let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
            let not_after = c.validity().not_after.timestamp();
            (serial_of(&der).unwrap(), crate::identity::Identity::from_cert_der(&der).unwrap(), not_after)
        };
        let key = std::fs::read(&files.key).unwrap();
        let (serial, id, until) = read();
        let renewed = ca.renew(Role::Host, "pop1", 30).unwrap();
        assert_eq!(renewed, files);
        let (serial2, id2, until2) = read();
        assert_eq!((serial2, id2), (serial, id), "same serial and identity (site included)");
        assert!(until2 - until > 28 * 86_400, "30 days from now instead of 1");
        assert_eq!(std::fs::read(&files.key).unwrap(), key, "same key");
        assert!(ca.renew(Role::User, "pop1", 30).is_err(), "no user pop1");
        ca.revoke(Role::Host, "pop1").unwrap();
        let e = ca.renew(Role::Host, "pop1", 30).unwrap_err();
        assert!(matches!(e, IdentityError::Revoked(_)), "{e}");
    }
}
