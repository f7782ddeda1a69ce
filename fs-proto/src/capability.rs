//! Capabilities: short-lived permissions the meta server signs so that a file
//! server can check a data request without calling back.
//!
//! A capability names one file (inode and generation), the access it grants,
//! the principal (certificate role and name) allowed to use it and an expiry. The meta
//! server signs it with the key of its own host certificate (ECDSA P-256); a
//! file server verifies with the public key of the meta server's certificate,
//! learnt over the mutually authenticated connection it heartbeats on. A
//! capability presented by anyone but its principal is refused, so replaying
//! another user's capability does not work, nor presenting a host's
//! capability with a user certificate of the same name (or the reverse).
//!
//! A capability also carries the stamp it was issued at (the meta server's
//! capability clock, strictly increasing). A change of a file's mode or
//! owner that may take access away voids the users' capabilities for that
//! file issued before it ([`CapVoid`]); the meta server hands the voidings
//! to every file server with its heartbeat answer ([`CapVoids`]), so a
//! capability obtained before a `chmod 600` opens no new stream within
//! about one heartbeat (streams already open go on, as an open file
//! descriptor does).

use crate::bundle::InoRange;
use crate::error::{ErrorCode, RemoteError};
use crate::identity::{Identity, Role};
use crate::types::{Gen, Hash, Ino};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// What a capability allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    /// Read the replica of exactly this generation.
    Read,
    /// Create the replica of exactly this (new) generation.
    Write,
    /// Copy exactly this existing generation onto the principal's (a file
    /// server's) own spool: read it from peers holding it and register the
    /// copy. Carries the size and hash the copy must have in `expect`.
    Replicate,
    /// Send bundles of new files (see [`crate::bundle`]) to file servers,
    /// which store them and forward the commit. `ino` is 0; `gen` names the
    /// callback session whose directory leases the bundles act under (0:
    /// none); `inos` lists the inode ranges its bundles may create.
    Bundle,
}

/// Who may present a capability: a certificate's role and name. A user and
/// a host of the same name are different principals.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Principal {
    /// User or host.
    pub role: Role,
    /// Certificate common name.
    pub name: String,
}

impl Principal {
    /// The user `name`.
    pub fn user(name: impl Into<String>) -> Self {
        Principal { role: Role::User, name: name.into() }
    }

    /// The host `name`.
    pub fn host(name: impl Into<String>) -> Self {
        Principal { role: Role::Host, name: name.into() }
    }

    /// The principal a peer's verified certificate proves.
    pub fn of(id: &Identity) -> Self {
        Principal { role: id.role, name: id.name.clone() }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.role {
            Role::User => write!(f, "user {}", self.name),
            Role::Host => write!(f, "host {}", self.name),
        }
    }
}

/// The signed statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    /// File.
    pub ino: Ino,
    /// Generation the access applies to.
    pub gen: Gen,
    /// Read or write.
    pub access: Access,
    /// The only peer allowed to present it (role and certificate name).
    pub principal: Principal,
    /// Expiry, milliseconds since the epoch.
    pub expires_ms: u64,
    /// When it was issued: the meta server's capability clock
    /// (microseconds since the epoch, strictly increasing), compared with
    /// the stamps of [`CapVoid`]s.
    pub issued: u64,
    /// For writes: the generation whose bytes the new one may start from.
    pub base_gen: Option<Gen>,
    /// For reads: the size and hash the replica must have.
    pub expect: Option<(u64, Hash)>,
    /// For bundles: the inode numbers leased to the principal that the
    /// bundles may create. A file server stores only entries whose inode is
    /// in one of these ranges.
    pub inos: Vec<InoRange>,
    /// What the owner's quota lets this capability add (None: no quota):
    /// for a write, the largest size the new generation may have; for
    /// bundles, the most a file server reserves under it.
    pub room: Option<u64>,
}

impl Capability {
    /// Whether a bundle under this capability may create inode `ino`.
    pub fn covers(&self, ino: Ino) -> bool {
        self.inos.iter().any(|r| r.contains(ino))
    }
}

/// Users' capabilities for one file that a change of its mode or owner
/// voided: every read or write capability for `ino` issued to a user
/// before `before`, except the owner's (who may change the mode back
/// anyway).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapVoid {
    /// The file.
    pub ino: Ino,
    /// Capabilities issued before this stamp are void.
    pub before: u64,
    /// The owner's user name after the change (its capabilities stay).
    pub owner: Option<String>,
}

/// What a heartbeat answer tells a file server about voided capabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapVoids {
    /// Voidings newer than the stamp the server reported having
    /// (`HeartbeatReport::voids_seen`), oldest first.
    pub entries: Vec<CapVoid>,
    /// The stamp the server has all voidings up to after applying these
    /// (what it reports next time).
    pub upto: u64,
    /// Every user capability issued before this stamp is void (the meta
    /// server forgot voidings older than what it keeps, so it voids them
    /// all; 0: none).
    pub floor: u64,
    /// How long a capability lives (ms): a voiding older than this voids
    /// nothing any more, and the server forgets it.
    pub hold_ms: u64,
}

/// A capability with the meta server's signature over its encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCapability {
    /// postcard encoding of a [`Capability`].
    pub body: Vec<u8>,
    /// ECDSA P-256 / SHA-256 signature (ASN.1 DER) over `body`.
    pub sig: Vec<u8>,
}

impl SignedCapability {
    /// Read the statement without checking the signature: for the holder's
    /// own information (e.g. the expected hash of a base to fetch), never for
    /// granting access.
    pub fn peek(&self) -> Option<Capability> {
        postcard::from_bytes(&self.body).ok()
    }
}

/// Signs capabilities (meta server side).
pub struct CapabilitySigner {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl CapabilitySigner {
    /// Build from the PKCS#8 DER of the meta server's host key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, RemoteError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng).map_err(|e| {
            RemoteError::new(ErrorCode::Internal, format!("capability key is not ECDSA P-256 PKCS#8: {e}"))
        })?;
        Ok(CapabilitySigner { key, rng })
    }

    /// The raw public key (uncompressed EC point), as in the certificate.
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// Sign a capability.
    pub fn sign(&self, cap: &Capability) -> SignedCapability {
        let body = postcard::to_allocvec(cap).expect("postcard encode into Vec");
        // Signing with a valid key pair only fails if the system RNG does.
        let sig = self.key.sign(&self.rng, &body).map(|s| s.as_ref().to_vec()).unwrap_or_default();
        SignedCapability { body, sig }
    }
}

/// Verifies capabilities (file server side).
#[derive(Clone)]
pub struct CapabilityVerifier {
    public_key: Vec<u8>,
}

impl CapabilityVerifier {
    /// Build from the meta server's raw public key (uncompressed EC point).
    pub fn new(public_key: Vec<u8>) -> Self {
        CapabilityVerifier { public_key }
    }

    /// Check only that the meta server signed this capability (not who holds
    /// it, nor its expiry): what the meta server itself needs when a file
    /// server registers the replica a long upload produced.
    pub fn check_signature(&self, signed: &SignedCapability) -> Result<Capability, RemoteError> {
        let key = UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &self.public_key);
        key.verify(&signed.body, &signed.sig).map_err(|_| {
            RemoteError::new(ErrorCode::BadCapability, "signature does not verify with the meta server's key")
        })?;
        postcard::from_bytes(&signed.body)
            .map_err(|e| RemoteError::new(ErrorCode::BadCapability, format!("undecodable capability: {e}")))
    }

    /// Check signature, principal and expiry; return the capability.
    pub fn verify(
        &self,
        signed: &SignedCapability,
        principal: &Principal,
        now_ms: u64,
    ) -> Result<Capability, RemoteError> {
        let cap = self.check_signature(signed)?;
        if cap.principal != *principal {
            return Err(RemoteError::new(
                ErrorCode::BadCapability,
                format!("capability was issued to {}, presented by {principal}", cap.principal),
            ));
        }
        if cap.expires_ms <= now_ms {
            return Err(RemoteError::new(
                ErrorCode::BadCapability,
                format!("capability expired {} ms ago", now_ms - cap.expires_ms),
            ));
        }
        Ok(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> CapabilitySigner {
        let kp = rcgen::KeyPair::generate().unwrap();
        CapabilitySigner::from_pkcs8(&kp.serialize_der()).unwrap()
    }

    fn cap(principal: &str, expires_ms: u64) -> Capability {
        Capability {
            ino: 7,
            gen: 3,
            access: Access::Read,
            principal: Principal::user(principal),
            expires_ms,
            issued: 1,
            base_gen: None,
            expect: None,
            inos: Vec::new(),
            room: None,
        }
    }

    #[test]
    fn verifies_and_refuses() {
        let s = signer();
        let v = CapabilityVerifier::new(s.public_key().to_vec());
        let signed = s.sign(&cap("alice", 2_000));
        assert_eq!(v.verify(&signed, &Principal::user("alice"), 1_000).unwrap().ino, 7);
        // replay by someone else
        assert_eq!(v.verify(&signed, &Principal::user("bob"), 1_000).unwrap_err().code, ErrorCode::BadCapability);
        // a host of the user's name
        let e = v.verify(&signed, &Principal::host("alice"), 1_000).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadCapability);
        assert!(e.message.contains("issued to user alice, presented by host alice"), "{e}");
        // expired
        assert_eq!(v.verify(&signed, &Principal::user("alice"), 3_000).unwrap_err().code, ErrorCode::BadCapability);
        // forged: body altered after signing
        let mut forged = signed.clone();
        forged.body = postcard::to_allocvec(&cap("alice", u64::MAX)).unwrap();
        assert_eq!(v.verify(&forged, &Principal::user("alice"), 1_000).unwrap_err().code, ErrorCode::BadCapability);
        // signed by another key
        let other = signer().sign(&cap("alice", 2_000));
        assert_eq!(v.verify(&other, &Principal::user("alice"), 1_000).unwrap_err().code, ErrorCode::BadCapability);
    }
}
