//! Federation identities, the GSI analogue: one CA per federation (made with
//! rcgen), host certificates for the meta server, file servers and VM agents,
//! and user certificates that sign a user into every PoP.
//!
//! A certificate's subject says who its holder is: `CN` is the name, `OU` the
//! role (`host` or `user`), `L` the site of a host and `O` the federation.
//! Host certificates also carry their name as a DNS subject alternative name,
//! which is what TLS checks when a peer dials that host.
//!
//! On disk a CA directory holds `ca.pem`, `ca.key` (0600), and the issued
//! `hosts/NAME.{pem,key}` and `users/NAME.{pem,key}`.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// What a certificate holder is allowed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// A federation service (meta server, file server, VM agent or manager).
    Host,
    /// A person (or a robot account) using the federation.
    User,
}

impl Role {
    fn as_ou(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::User => "user",
        }
    }
}

/// Who a peer proved to be, read from its verified certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// Certificate common name: host name or federation user name.
    pub name: String,
    /// Host or user.
    pub role: Role,
    /// Site of a host (None for users).
    pub site: Option<String>,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.role, &self.site) {
            (Role::Host, Some(site)) => write!(f, "host {}@{}", self.name, site),
            (Role::Host, None) => write!(f, "host {}", self.name),
            (Role::User, _) => write!(f, "user {}", self.name),
        }
    }
}

/// Failures of CA and certificate handling.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// File system trouble, with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// rcgen failed to build or sign.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A PEM or DER object did not parse.
    #[error("{what}: {detail}")]
    Parse {
        /// What was being parsed.
        what: String,
        /// Why it failed.
        detail: String,
    },
    /// The CA exists already (refusing to overwrite it).
    #[error("a federation CA already exists in {0} (refusing to overwrite it)")]
    CaExists(PathBuf),
    /// The name is unusable in a certificate.
    #[error("invalid name {0:?}: use letters, digits, '-', '_' and '.' (1-63 characters)")]
    BadName(String),
    /// The name belongs to an identity of the other role already.
    #[error("{name:?} is already the name of a {} certificate of this CA: users and hosts need different names", if *role == Role::Host { "host" } else { "user" })]
    NameTaken {
        /// The name.
        name: String,
        /// Whose it is.
        role: Role,
    },
    /// The certificate lacks the fields renkei expects.
    #[error("certificate is not a renkei identity: {0}")]
    NotRenkei(String),
    /// Renewing a revoked certificate (its key stays revoked: issue a new
    /// one instead).
    #[error("the certificate of {0} is revoked: renewing keeps its key (and serial), so issue a new one")]
    Revoked(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io { path: path.to_path_buf(), source }
}

/// Names must be safe as file names, DNS labels and certificate subjects.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(['.', '-'])
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Default validity of issued certificates (days): short, with renewal
/// (`renkei ca renew`) picked up by running services.
pub const DEFAULT_VALID_DAYS: i64 = 30;

/// Paths of a CA directory.
#[derive(Debug, Clone)]
pub struct CaDir {
    dir: PathBuf,
}

/// What to put into a new certificate.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// Common name (host or user name).
    pub name: String,
    /// Role.
    pub role: Role,
    /// Site of a host.
    pub site: Option<String>,
    /// Start of validity (defaults to one hour ago, to tolerate clock skew).
    pub not_before: Option<OffsetDateTime>,
    /// Days of validity from `not_before`.
    pub valid_days: i64,
}

/// Paths of an issued certificate and key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedFiles {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM PKCS#8 private key (mode 0600).
    pub key: PathBuf,
}

impl CaDir {
    /// A CA directory at `dir` (not necessarily existing yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CaDir { dir: dir.into() }
    }

    /// `ca.pem`.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `ca.key`.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// Where an identity's files go.
    pub fn issued_paths(&self, role: Role, name: &str) -> IssuedFiles {
        let sub = match role {
            Role::Host => "hosts",
            Role::User => "users",
        };
        IssuedFiles {
            cert: self.dir.join(sub).join(format!("{name}.pem")),
            key: self.dir.join(sub).join(format!("{name}.key")),
        }
    }

    /// Create a new federation CA (valid 10 years). Refuses to overwrite.
    pub fn init(&self, federation: &str) -> Result<(), IdentityError> {
        if self.cert_path().exists() || self.key_path().exists() {
            return Err(IdentityError::CaExists(self.dir.clone()));
        }
        std::fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, format!("{federation} federation CA"));
        params.distinguished_name.push(DnType::OrganizationName, federation);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        let cert = params.self_signed(&key)?;
        write_private(&self.key_path(), key.serialize_pem().as_bytes())?;
        std::fs::write(self.cert_path(), cert.pem()).map_err(io_err(&self.cert_path()))?;
        Ok(())
    }

    /// Issue a host or user certificate signed by this CA.
    pub fn issue(&self, req: &IssueRequest) -> Result<IssuedFiles, IdentityError> {
        self.make(req, None)
    }

    /// Issue (with a new key) or renew (with `renew`, the existing key).
    fn make(&self, req: &IssueRequest, renew: Option<KeyPair>) -> Result<IssuedFiles, IdentityError> {
        if !valid_name(&req.name) {
            return Err(IdentityError::BadName(req.name.clone()));
        }
        if let Some(site) = &req.site {
            if !valid_name(site) {
                return Err(IdentityError::BadName(site.clone()));
            }
        }
        // Capabilities name their principal; a user must never share a
        // name with a host (its capabilities would be the user's too).
        let other = if req.role == Role::Host { Role::User } else { Role::Host };
        if self.issued_paths(other, &req.name).cert.exists() {
            return Err(IdentityError::NameTaken { name: req.name.clone(), role: other });
        }
        let ca_pem = read_to_string(&self.cert_path())?;
        let ca_key = KeyPair::from_pem(&read_to_string(&self.key_path())?)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
        let federation = federation_of(&ca_pem)?;

        let sans = match req.role {
            Role::Host => vec![req.name.clone()],
            Role::User => Vec::new(),
        };
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, req.name.as_str());
        params.distinguished_name.push(DnType::OrganizationalUnitName, req.role.as_ou());
        params.distinguished_name.push(DnType::OrganizationName, federation.as_str());
        if let Some(site) = &req.site {
            params.distinguished_name.push(DnType::LocalityName, site.as_str());
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let not_before = req.not_before.unwrap_or_else(|| OffsetDateTime::now_utc() - Duration::hours(1));
        params.not_before = not_before;
        params.not_after = not_before + Duration::days(req.valid_days);
        let files = self.issued_paths(req.role, &req.name);
        if let Some(parent) = files.cert.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        match renew {
            Some(key) => {
                // Same key, so the same serial (rcgen derives it from the
                // key) and the same capability-signing key for a meta
                // server; the new certificate replaces the old in one step.
                let cert = params.signed_by(&key, &issuer)?;
                let tmp = files.cert.with_extension("pem.tmp");
                std::fs::write(&tmp, cert.pem()).map_err(io_err(&tmp))?;
                std::fs::rename(&tmp, &files.cert).map_err(io_err(&files.cert))?;
            }
            None => {
                let key = KeyPair::generate()?;
                let cert = params.signed_by(&key, &issuer)?;
                write_private(&files.key, key.serialize_pem().as_bytes())?;
                std::fs::write(&files.cert, cert.pem()).map_err(io_err(&files.cert))?;
            }
        }
        Ok(files)
    }

    /// Renew the certificate this CA issued to `name`: a new certificate
    /// for the same key, identity and site, valid `valid_days` from now,
    /// written over the old one. Services that use these files pick the new
    /// certificate up without a restart ([`crate::endpoint`]); a revoked
    /// certificate is not renewed.
    pub fn renew(&self, role: Role, name: &str, valid_days: i64) -> Result<IssuedFiles, IdentityError> {
        let files = self.issued_paths(role, name);
        let pem = read_to_string(&files.cert)?;
        let der = pem_to_der(&pem, &files.cert.display().to_string())?;
        let id = Identity::from_cert_der(&der)?;
        if id.role != role || id.name != name {
            return Err(IdentityError::NotRenkei(format!("{} holds {id}", files.cert.display())));
        }
        let crl = crate::revocation::crl_path(&self.cert_path());
        if crl.exists() && crate::revocation::read_serials(&crl)?.contains(&crate::revocation::serial_of(&der)?) {
            return Err(IdentityError::Revoked(id.to_string()));
        }
        let key = KeyPair::from_pem(&read_to_string(&files.key)?)?;
        let req = IssueRequest { name: name.to_string(), role, site: id.site, not_before: None, valid_days };
        self.make(&req, Some(key))
    }
}

fn read_to_string(path: &Path) -> Result<String, IdentityError> {
    std::fs::read_to_string(path).map_err(io_err(path))
}

/// Write a file readable only by its owner.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))
}

fn federation_of(ca_pem: &str) -> Result<String, IdentityError> {
    let der = pem_to_der(ca_pem, "CA certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| IdentityError::Parse { what: "CA certificate".into(), detail: e.to_string() })?;
    let org = cert.subject().iter_organization().next().and_then(|a| a.as_str().ok()).unwrap_or("renkei");
    Ok(org.to_string())
}

fn pem_to_der(pem: &str, what: &str) -> Result<Vec<u8>, IdentityError> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| IdentityError::Parse { what: what.into(), detail: e.to_string() })
}

impl Identity {
    /// Read the identity from a (verified) DER certificate.
    pub fn from_cert_der(der: &[u8]) -> Result<Identity, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::Parse { what: "peer certificate".into(), detail: e.to_string() })?;
        let subject = cert.subject();
        let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
            it.next().and_then(|a| a.as_str().ok()).map(str::to_string)
        };
        let name =
            first(&mut subject.iter_common_name()).ok_or_else(|| IdentityError::NotRenkei("no common name".into()))?;
        let role = match first(&mut subject.iter_organizational_unit()).as_deref() {
            Some("host") => Role::Host,
            Some("user") => Role::User,
            other => return Err(IdentityError::NotRenkei(format!("role (OU) is {other:?}, expected host or user"))),
        };
        let site = first(&mut subject.iter_locality());
        Ok(Identity { name, role, site })
    }

    /// Read the identity from a PEM certificate file.
    pub fn from_cert_file(path: &Path) -> Result<Identity, IdentityError> {
        let der = pem_to_der(&read_to_string(path)?, &path.display().to_string())?;
        Identity::from_cert_der(&der)
    }
}

/// The raw subject public key (for ECDSA, the uncompressed point) of a DER
/// certificate; used to verify capabilities signed by the meta server.
pub fn public_key_of(der: &[u8]) -> Result<Vec<u8>, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| IdentityError::Parse { what: "certificate".into(), detail: e.to_string() })?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_and_read_back() {
        let dir = tempfile_dir();
        let ca = CaDir::new(&dir);
        ca.init("testfed").unwrap();
        assert!(matches!(ca.init("again"), Err(IdentityError::CaExists(_))));
        let files = ca
            .issue(&IssueRequest {
                name: "pop1".into(),
                role: Role::Host,
                site: Some("osaka".into()),
                not_before: None,
                valid_days: 30,
            })
            .unwrap();
        let id = Identity::from_cert_file(&files.cert).unwrap();
        assert_eq!(id, Identity { name: "pop1".into(), role: Role::Host, site: Some("osaka".into()) });
        let user = ca
            .issue(&IssueRequest {
                name: "alice".into(),
                role: Role::User,
                site: None,
                not_before: None,
                valid_days: 30,
            })
            .unwrap();
        assert_eq!(Identity::from_cert_file(&user.cert).unwrap().role, Role::User);
        assert!(matches!(
            ca.issue(&IssueRequest {
                name: "../x".into(),
                role: Role::User,
                site: None,
                not_before: None,
                valid_days: 1
            }),
            Err(IdentityError::BadName(_))
        ));
        // A user may not take a host's name, nor a host a user's: a
        // capability for host pop1 would otherwise be user pop1's too.
        let as_user =
            IssueRequest { name: "pop1".into(), role: Role::User, site: None, not_before: None, valid_days: 1 };
        assert!(matches!(ca.issue(&as_user), Err(IdentityError::NameTaken { role: Role::Host, .. })));
        let as_host = IssueRequest {
            name: "alice".into(),
            role: Role::Host,
            site: Some("x".into()),
            not_before: None,
            valid_days: 1,
        };
        let e = ca.issue(&as_host).unwrap_err();
        assert!(e.to_string().contains("users and hosts need different names"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("renkei-id-test-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rand_suffix() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    }
}
