//! Identity on the mount: which federation ids files show as locally, and
//! which credentials a request runs as.
//!
//! - `idmap=user` (default): the certificate's federation uid and primary
//!   gid appear as the mounting local user's uid and gid, like sshfs
//!   `idmap=user`; every other id is shown unchanged. chown/chgrp map back.
//! - `idmap=none`: ids are shown unchanged.
//! - `cred` (admin certificates only): each request asserts the FUSE
//!   caller's uid, gid and supplementary groups (read from
//!   `/proc/PID/status`), mapped through the same idmap, so the meta server
//!   checks permissions as that user (root stays root with `idmap=none`).
//!   Without `cred` every request runs as the certificate's user.

use super::options::IdMapMode;
use fs_proto::meta::WhoAmI;
use fs_proto::Cred;

/// The mapping between local and federation ids.
#[derive(Debug, Clone)]
pub struct IdMap {
    mode: IdMapMode,
    cred: bool,
    local_uid: u32,
    local_gid: u32,
    fed_uid: u32,
    fed_gid: u32,
}

impl IdMap {
    /// The mapping for a mount made by `local_uid:local_gid` as federation user `me`.
    pub fn new(mode: IdMapMode, cred: bool, local_uid: u32, local_gid: u32, me: &WhoAmI) -> Self {
        IdMap { mode, cred, local_uid, local_gid, fed_uid: me.uid, fed_gid: me.gid }
    }

    /// Federation uid as shown locally.
    pub fn uid_to_local(&self, uid: u32) -> u32 {
        match self.mode {
            IdMapMode::User if uid == self.fed_uid => self.local_uid,
            _ => uid,
        }
    }

    /// Federation gid as shown locally.
    pub fn gid_to_local(&self, gid: u32) -> u32 {
        match self.mode {
            IdMapMode::User if gid == self.fed_gid => self.local_gid,
            _ => gid,
        }
    }

    /// Local uid as the federation knows it.
    pub fn uid_to_fed(&self, uid: u32) -> u32 {
        match self.mode {
            IdMapMode::User if uid == self.local_uid => self.fed_uid,
            _ => uid,
        }
    }

    /// Local gid as the federation knows it.
    pub fn gid_to_fed(&self, gid: u32) -> u32 {
        match self.mode {
            IdMapMode::User if gid == self.local_gid => self.fed_gid,
            _ => gid,
        }
    }

    /// The credentials to assert for a request from local `uid`/`gid`
    /// (process `pid`), or None to act as the certificate's user.
    pub fn cred_for(&self, uid: u32, gid: u32, pid: u32) -> Option<Cred> {
        if !self.cred {
            return None;
        }
        let groups = groups_of(pid).unwrap_or_default().into_iter().map(|g| self.gid_to_fed(g)).collect();
        Some(Cred { uid: self.uid_to_fed(uid), gid: self.gid_to_fed(gid), groups })
    }
}

/// Supplementary groups of a process, from `/proc/PID/status`.
fn groups_of(pid: u32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Groups:"))?;
    Some(line["Groups:".len()..].split_whitespace().filter_map(|g| g.parse().ok()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> WhoAmI {
        WhoAmI { name: "alice".into(), uid: 10000, gid: 10000, groups: vec![], admin: true }
    }

    #[test]
    fn user_mapping_is_symmetric() {
        let m = IdMap::new(IdMapMode::User, false, 1000, 1000, &me());
        assert_eq!(m.uid_to_local(10000), 1000);
        assert_eq!(m.uid_to_local(0), 0);
        assert_eq!(m.uid_to_fed(1000), 10000);
        assert_eq!(m.gid_to_fed(m.gid_to_local(10000)), 10000);
        assert_eq!(m.cred_for(1000, 1000, std::process::id()), None, "no cred passing without -o cred");
    }

    #[test]
    fn cred_passes_caller_ids() {
        let m = IdMap::new(IdMapMode::None, true, 0, 0, &me());
        let c = m.cred_for(65534, 65533, std::process::id()).unwrap();
        assert_eq!((c.uid, c.gid), (65534, 65533));
        assert_eq!(m.uid_to_local(10000), 10000);
    }
}
