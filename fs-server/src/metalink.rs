//! The file server's link to the meta server: calls over a re-dialled
//! connection, and the capability verifier built from the meta server's own
//! certificate (learnt over that mutually authenticated connection).

use fs_proto::endpoint::peer_identity;
use fs_proto::identity::public_key_of;
use fs_proto::meta::{MetaCall, MetaRequest, MetaResponse};
use fs_proto::rpc::{CallError, Dialer, PeerAddr};
use fs_proto::{CapabilityVerifier, Role};
use std::sync::RwLock;
use std::time::Duration;

/// Calls to the meta server.
pub struct MetaLink {
    dialer: Dialer,
    meta: PeerAddr,
    verifier: RwLock<Option<(usize, CapabilityVerifier)>>,
    timeout: Duration,
}

impl MetaLink {
    /// A link through `dialer` to `meta`.
    pub fn new(dialer: Dialer, meta: PeerAddr, timeout: Duration) -> Self {
        MetaLink { dialer, meta, verifier: RwLock::new(None), timeout }
    }

    /// The meta server's address.
    pub fn peer(&self) -> &PeerAddr {
        &self.meta
    }

    /// The verifier for capabilities, once the meta server has been reached.
    pub fn verifier(&self) -> Option<CapabilityVerifier> {
        self.verifier.read().unwrap_or_else(|p| p.into_inner()).as_ref().map(|(_, v)| v.clone())
    }

    async fn learn_key(&self) -> Result<(), CallError> {
        let conn = self.dialer.connect(&self.meta).await?;
        let id = conn.stable_id();
        if matches!(&*self.verifier.read().unwrap_or_else(|p| p.into_inner()), Some((known, _)) if *known == id) {
            return Ok(());
        }
        let bad = |reason: String| CallError::Connect { peer: self.meta.to_string(), reason };
        let (ident, cert) = peer_identity(&conn).map_err(|e| bad(e.to_string()))?;
        if ident.role != Role::Host || ident.name != self.meta.name {
            return Err(bad(format!("peer is {ident}, expected meta host {}", self.meta.name)));
        }
        let key = public_key_of(&cert).map_err(|e| bad(e.to_string()))?;
        *self.verifier.write().unwrap_or_else(|p| p.into_inner()) = Some((id, CapabilityVerifier::new(key)));
        Ok(())
    }

    /// Call the meta server.
    pub async fn call(&self, req: MetaRequest) -> Result<MetaResponse, CallError> {
        self.learn_key().await?;
        self.dialer.call(&self.meta, &MetaCall { cred: None, req }, self.timeout).await
    }
}
