//! Protocol and on-disk format versions.

/// ALPN protocol name for the current wire version. A peer speaking another
/// version fails the TLS handshake with "no application protocol" instead of
/// misreading frames. Version 2: large frames may be zstd-compressed
/// ([`crate::frame`]). Version 3: bundle capabilities name the inode
/// ranges they may create. Version 4: a capability's principal names its
/// role (user or host) beside its name. Version 5: site administration
/// requests (users, groups, draining hosts, dropping a replica). Version 6:
/// capabilities carry the stamp they were issued at, and heartbeat answers
/// the capabilities a change of permissions voided
/// ([`crate::capability::CapVoids`]).
pub const ALPN: &[u8] = b"renkei/6";

/// Human-readable form of [`ALPN`], for messages.
pub const ALPN_STR: &str = "renkei/6";

/// Largest framed message accepted on any stream (16 MiB). Bulk file bytes
/// never travel inside a frame, so only large directory pages or metadata
/// batches come near this.
pub const MAX_FRAME: usize = 16 << 20;
