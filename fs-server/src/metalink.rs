//! The file server's link to the meta server: calls over a re-dialled
//! connection, and the capability verifier built from the meta server's own
//! certificate (learnt over that mutually authenticated connection).
//! With several meta servers listed (active/standby on etcd) the link
//! follows the one that leads: an address that cannot be reached, or
//! refuses (a standby), is skipped for the next. They share one
//! certificate and key, so capabilities verify whichever leads.

use fs_proto::endpoint::peer_identity;
use fs_proto::identity::public_key_of;
use fs_proto::meta::{MetaCall, MetaRequest, MetaResponse};
use fs_proto::rpc::{CallError, Dialer, MetaAddrs, MetaPeers, PeerAddr};
use fs_proto::{CapabilityVerifier, Role};
use std::sync::RwLock;
use std::time::Duration;

/// Calls to the meta server.
pub struct MetaLink {
    dialer: Dialer,
    meta: MetaPeers,
    verifier: RwLock<Option<(usize, CapabilityVerifier)>>,
    timeout: Duration,
}

impl MetaLink {
    /// A link through `dialer` to the meta servers `meta`.
    pub fn new(dialer: Dialer, meta: &MetaAddrs, timeout: Duration) -> Self {
        MetaLink { dialer, meta: MetaPeers::new(meta), verifier: RwLock::new(None), timeout }
    }

    /// The address of the meta server in use now.
    pub fn peer(&self) -> PeerAddr {
        self.meta.current()
    }

    /// The verifier for capabilities, once the meta server has been reached.
    pub fn verifier(&self) -> Option<CapabilityVerifier> {
        self.verifier.read().unwrap_or_else(|p| p.into_inner()).as_ref().map(|(_, v)| v.clone())
    }

    async fn learn_key(&self) -> Result<(), CallError> {
        let mut left = self.meta.all().len();
        let (peer, conn) = loop {
            let peer = self.meta.current();
            match self.dialer.connect(&peer).await {
                Ok(c) => break (peer, c),
                Err(e) => {
                    left -= 1;
                    if left == 0 || !self.meta.failed(&peer) {
                        return Err(e);
                    }
                }
            }
        };
        let id = conn.stable_id();
        if matches!(&*self.verifier.read().unwrap_or_else(|p| p.into_inner()), Some((known, _)) if *known == id) {
            return Ok(());
        }
        let bad = |reason: String| CallError::Connect { peer: peer.to_string(), reason };
        let (ident, cert) = peer_identity(&conn).map_err(|e| bad(e.to_string()))?;
        if ident.role != Role::Host || ident.name != peer.name {
            return Err(bad(format!("peer is {ident}, expected meta host {}", peer.name)));
        }
        let key = public_key_of(&cert).map_err(|e| bad(e.to_string()))?;
        *self.verifier.write().unwrap_or_else(|p| p.into_inner()) = Some((id, CapabilityVerifier::new(key)));
        Ok(())
    }

    /// Call the meta server.
    pub async fn call(&self, req: MetaRequest) -> Result<MetaResponse, CallError> {
        self.learn_key().await?;
        self.meta.call(&self.dialer, &MetaCall { cred: None, req }, self.timeout).await
    }
}
