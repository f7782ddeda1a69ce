//! What a metadata request touches: the one place that says it, exhaustive
//! over [`MetaRequest`] so a new variant does not compile until it says.
//!
//! Three users read it, each for its own purpose:
//! - the meta server's callbacks: which cached attributes and entries a
//!   mutation invalidates at other mounts (`changes`, and every name a
//!   request adds, removes or moves);
//! - the meta server's directory write leases: which leased directories a
//!   request must wait for (everything it addresses, lists or names);
//! - the mount's write-back: which local (not yet committed) operations
//!   must reach the meta server before the request does.
//!
//! What the request names by number for the inode-number permission rule
//! is [`MetaRequest::named_inos`]; what it may do by role is
//! [`MetaRequest::admin_only`].

use crate::meta::MetaRequest;
use crate::Ino;

/// What a request does with a name in a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameUse {
    /// Looks it up.
    Look,
    /// Adds it (create, mkdir, symlink, link): it must be absent.
    Add,
    /// Removes it (unlink); what it named loses a link.
    Remove,
    /// Removes the directory it names (rmdir), which must be empty.
    RemoveDir,
    /// Moves it away or replaces it (either side of a rename); what it
    /// names may be a directory.
    Move,
}

impl NameUse {
    /// Whether the directory's entries change.
    pub fn changes_dir(self) -> bool {
        !matches!(self, NameUse::Look)
    }

    /// Whether what the name stood for before the request is changed by it
    /// (loses a link, is removed or moved).
    pub fn changes_child(self) -> bool {
        matches!(self, NameUse::Remove | NameUse::RemoveDir | NameUse::Move)
    }

    /// Whether what the name stood for may be a directory the request
    /// removes or moves (so leases on it matter).
    pub fn may_take_dir(self) -> bool {
        matches!(self, NameUse::RemoveDir | NameUse::Move)
    }
}

/// What one request touches (see the module doc). A batch or a bundle
/// touches what its parts do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Inodes it addresses by number to read or change them.
    pub addresses: Vec<Ino>,
    /// Inodes whose attributes (as mounts cache them) it changes.
    pub changes: Vec<Ino>,
    /// Directories it lists whole.
    pub lists: Vec<Ino>,
    /// Names in directories, and what it does with each.
    pub names: Vec<(Ino, String, NameUse)>,
    /// Paths it resolves from the root.
    pub walks: Vec<String>,
}

impl Footprint {
    fn add(&mut self, other: Footprint) {
        self.addresses.extend(other.addresses);
        self.changes.extend(other.changes);
        self.lists.extend(other.lists);
        self.names.extend(other.names);
        self.walks.extend(other.walks);
    }

    fn name(parent: Ino, name: &str, how: NameUse) -> Footprint {
        Footprint { names: vec![(parent, name.to_string(), how)], ..Default::default() }
    }

    fn at(ino: Ino) -> Footprint {
        Footprint { addresses: vec![ino], ..Default::default() }
    }

    fn changing(ino: Ino) -> Footprint {
        Footprint { addresses: vec![ino], changes: vec![ino], ..Default::default() }
    }
}

impl MetaRequest {
    /// What this request touches (see [`crate::footprint`]). Exhaustive on
    /// purpose: a new variant must say.
    pub fn footprint(&self) -> Footprint {
        use MetaRequest as Q;
        use NameUse::*;
        match self {
            // Nothing a mount caches or a directory lease covers.
            Q::WhoAmI
            | Q::StatFs
            | Q::ListHosts
            | Q::ReplicationStatus
            | Q::Subscribe
            | Q::Monitor(_)
            | Q::Heartbeat(_)
            | Q::ReportBadReplica { .. }
            | Q::Inventory { .. }
            | Q::GetQuota { .. }
            | Q::SetQuota { .. }
            | Q::Admin(_)
            // Replication planning reads replica records, which no lease
            // covers; locks live in their own table (a lock on a file in a
            // leased directory does not recall the lease); lease requests
            // are the lease protocol itself.
            | Q::PlanReplication(_)
            | Q::PlanCheck { .. }
            | Q::Lock(_)
            | Q::TestLock(_)
            | Q::LeaseDir(_)
            | Q::ReleaseDirs { .. }
            // A dropped replica changes no attribute a mount caches.
            | Q::DropReplica { .. } => Footprint::default(),
            Q::Resolve { path } => Footprint { walks: vec![path.clone()], ..Default::default() },
            Q::Lookup { parent, name } | Q::LookupPlus { parent, name } => Footprint::name(*parent, name, Look),
            Q::ReadDir { ino, .. } | Q::ListDir { ino, .. } => Footprint { lists: vec![*ino], ..Default::default() },
            Q::Create { parent, name, .. } | Q::Mkdir { parent, name, .. } | Q::Symlink { parent, name, .. } => {
                Footprint::name(*parent, name, Add)
            }
            Q::Link { ino, new_parent, new_name } => {
                let mut f = Footprint::changing(*ino);
                f.add(Footprint::name(*new_parent, new_name, Add));
                f
            }
            Q::Unlink { parent, name } => Footprint::name(*parent, name, Remove),
            Q::Rmdir { parent, name } => Footprint::name(*parent, name, RemoveDir),
            Q::Rename { parent, name, new_parent, new_name, .. } => {
                let mut f = Footprint::name(*parent, name, Move);
                f.add(Footprint::name(*new_parent, new_name, Move));
                f
            }
            Q::GetAttr { ino }
            | Q::ReadLink { ino }
            | Q::GetXattr { ino, .. }
            | Q::ListXattr { ino }
            | Q::OpenRead { ino }
            | Q::Where { ino }
            // Opening for write changes nothing until its data registers
            // (RegisterReplica) or commits.
            | Q::OpenWrite { ino, .. } => Footprint::at(*ino),
            Q::SetAttr { ino, .. } | Q::SetXattr { ino, .. } | Q::RemoveXattr { ino, .. } | Q::SetNcopy { ino, .. } => {
                Footprint::changing(*ino)
            }
            // A file server's registration changes the file's size and
            // generation, but waits for no directory lease: the writer's
            // own lease covers the file while it is written.
            Q::RegisterReplica { cap, .. } => {
                Footprint { changes: cap.peek().map(|c| c.ino).into_iter().collect(), ..Default::default() }
            }
            Q::Batch(reqs) => {
                let mut f = Footprint::default();
                for r in reqs {
                    f.add(r.footprint());
                }
                f
            }
            // Each operation touches what the request it stands for would.
            Q::CommitBundle(b) => {
                let mut f = Footprint::default();
                for o in &b.ops {
                    f.add(o.op.as_request().footprint());
                }
                f
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rename_moves_two_names_and_a_link_changes_its_inode() {
        let r = MetaRequest::Rename {
            parent: 1,
            name: "a".into(),
            new_parent: 2,
            new_name: "b".into(),
            flags: Default::default(),
        };
        let f = r.footprint();
        assert_eq!(f.names, vec![(1, "a".to_string(), NameUse::Move), (2, "b".to_string(), NameUse::Move)]);
        assert!(f.addresses.is_empty() && f.changes.is_empty());
        let l = MetaRequest::Link { ino: 7, new_parent: 2, new_name: "c".into() };
        let f = l.footprint();
        assert_eq!((f.addresses, f.changes), (vec![7], vec![7]));
        assert_eq!(f.names, vec![(2, "c".to_string(), NameUse::Add)]);
        let b = MetaRequest::Batch(vec![
            MetaRequest::GetAttr { ino: 3 },
            MetaRequest::Unlink { parent: 1, name: "x".into() },
        ]);
        let f = b.footprint();
        assert_eq!(f.addresses, vec![3]);
        assert_eq!(f.names, vec![(1, "x".to_string(), NameUse::Remove)]);
    }
}
