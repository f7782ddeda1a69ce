//! Federation users: certificate name -> uid, gid, groups, admin flag.
//! Users listed in the config keep the ids given there; others are
//! registered on first contact with the next free uid (from 10000) and a
//! private group of the same number.
//!
//! Hosts, in one place ([`Users::caller`], [`Users::file_server`]): a host
//! certificate acts in the namespace as nobody unless `admin_hosts` grants
//! it root (or `vpe_hosts` root under `/vpe`, which the meta service
//! decides per request: [`crate::service::MetaService::authorize`]); it
//! acts as a file server (under its own name only) if `file_servers` lists
//! it, or if that list is absent.

use crate::config::UserConfig;
use crate::keys::TREE_USERS;
use crate::perm::Caller;
use crate::record::{self, UserRecord};
use fs_proto::{Cred, ErrorCode, Identity, RemoteError, Role};
use std::sync::Mutex;

const FIRST_AUTO_UID: u32 = 10_000;

/// The uid and gid a host without a grant acts as in the namespace.
pub const NOBODY: u32 = 65_534;

/// The user table.
pub struct Users {
    tree: sled::Tree,
    lock: Mutex<()>,
    auto_register: bool,
    admin_hosts: std::collections::BTreeSet<String>,
    file_servers: Option<std::collections::BTreeSet<String>>,
    vpe_hosts: std::collections::BTreeSet<String>,
}

fn internal(e: impl std::fmt::Display) -> RemoteError {
    RemoteError::new(ErrorCode::Internal, e.to_string())
}

impl Users {
    /// Open the table and apply the configured users.
    pub fn open(db: &sled::Db, configured: &[UserConfig], auto_register: bool) -> Result<Self, RemoteError> {
        let tree = db.open_tree(TREE_USERS).map_err(internal)?;
        for u in configured {
            let rec = UserRecord { uid: u.uid, gid: u.gid.unwrap_or(u.uid), groups: u.groups.clone(), admin: u.admin };
            tree.insert(u.name.as_bytes(), record::encode(&rec)).map_err(internal)?;
        }
        Ok(Users {
            tree,
            lock: Mutex::new(()),
            auto_register,
            admin_hosts: Default::default(),
            file_servers: None,
            vpe_hosts: Default::default(),
        })
    }

    /// Grant `admin_hosts` root in the namespace; allow only `file_servers`
    /// (None: every host) to act as file servers.
    pub fn with_hosts(mut self, admin_hosts: &[String], file_servers: Option<&[String]>) -> Self {
        self.admin_hosts = admin_hosts.iter().cloned().collect();
        self.file_servers = file_servers.map(|f| f.iter().cloned().collect());
        self
    }

    /// Grant `vpe_hosts` root under `/vpe` only.
    pub fn with_vpe_hosts(mut self, vpe_hosts: &[String]) -> Self {
        self.vpe_hosts = vpe_hosts.iter().cloned().collect();
        self
    }

    /// Is `id` a host `vpe_hosts` lists (root under `/vpe` only)?
    pub fn vpe_host(&self, id: &Identity) -> bool {
        id.role == Role::Host && self.vpe_hosts.contains(&id.name)
    }

    /// May `id` act as a file server (`what`: the request, for the error)?
    /// Only a host, only under its own certificate's name (every file-server
    /// request is recorded under `id.name`), and only one `file_servers`
    /// lists when the list is configured.
    pub fn file_server(&self, id: &Identity, what: &str) -> Result<(), RemoteError> {
        if id.role != Role::Host {
            return Err(RemoteError::new(ErrorCode::NotPermitted, format!("{what} is reserved for file servers")));
        }
        match &self.file_servers {
            Some(list) if !list.contains(&id.name) => Err(RemoteError::new(
                ErrorCode::NotPermitted,
                format!(
                    "{what} is reserved for file servers, and {id} is not one (the meta server's `file_servers` does not list it)"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The record of a user, registering them if allowed.
    pub fn get_or_register(&self, name: &str) -> Result<UserRecord, RemoteError> {
        if let Some(v) = self.tree.get(name.as_bytes()).map_err(internal)? {
            return record::decode(&v).map_err(internal);
        }
        if !self.auto_register {
            return Err(RemoteError::new(ErrorCode::PermissionDenied, format!("user {name:?} is not registered")));
        }
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = self.tree.get(name.as_bytes()).map_err(internal)? {
            return record::decode(&v).map_err(internal);
        }
        let mut next = FIRST_AUTO_UID;
        for kv in self.tree.iter() {
            let (_, v) = kv.map_err(internal)?;
            let r: UserRecord = record::decode(&v).map_err(internal)?;
            if r.uid >= next {
                next = r.uid + 1;
            }
        }
        let rec = UserRecord { uid: next, gid: next, groups: Vec::new(), admin: false };
        self.tree.insert(name.as_bytes(), record::encode(&rec)).map_err(internal)?;
        tracing::info!(user = name, uid = next, "registered new federation user");
        Ok(rec)
    }

    /// Is `id` a host `admin_hosts` lists (`what`: the request, for the
    /// error)?
    pub fn admin_host(&self, id: &Identity, what: &str) -> Result<(), RemoteError> {
        if id.role == Role::Host && self.admin_hosts.contains(&id.name) {
            return Ok(());
        }
        Err(RemoteError::new(
            ErrorCode::NotPermitted,
            format!("{what} is reserved for the hosts in the meta server's `admin_hosts` (the VM manager), not {id}"),
        ))
    }

    /// The principal a request runs as, and whether it is an admin. A host
    /// listed in `admin_hosts` acts as root and may assert credentials;
    /// every other host acts as nobody and may not. Users act as themselves,
    /// and admin users may assert credentials.
    pub fn caller(&self, id: &Identity, cred: Option<&Cred>) -> Result<(Caller, bool), RemoteError> {
        match id.role {
            Role::Host if self.admin_hosts.contains(&id.name) => {
                let c = match cred {
                    Some(cr) => Caller { name: id.name.clone(), uid: cr.uid, gid: cr.gid, groups: cr.groups.clone() },
                    None => Caller { name: id.name.clone(), uid: 0, gid: 0, groups: vec![] },
                };
                Ok((c, true))
            }
            Role::Host => match cred {
                Some(_) => Err(RemoteError::new(
                    ErrorCode::NotPermitted,
                    format!("{id} may not assert credentials (only hosts in the meta server's `admin_hosts` may)"),
                )),
                None => Ok((Caller { name: id.name.clone(), uid: NOBODY, gid: NOBODY, groups: vec![] }, false)),
            },
            Role::User => {
                let rec = self.get_or_register(&id.name)?;
                let c = match cred {
                    Some(cr) if rec.admin => {
                        Caller { name: id.name.clone(), uid: cr.uid, gid: cr.gid, groups: cr.groups.clone() }
                    }
                    _ => Caller { name: id.name.clone(), uid: rec.uid, gid: rec.gid, groups: rec.groups.clone() },
                };
                Ok((c, rec.admin))
            }
        }
    }

    /// The record of a registered user (None: not registered).
    pub fn get(&self, name: &str) -> Result<Option<UserRecord>, RemoteError> {
        match self.tree.get(name.as_bytes()).map_err(internal)? {
            Some(v) => Ok(Some(record::decode(&v).map_err(internal)?)),
            None => Ok(None),
        }
    }

    /// The name of every registered user, by uid (the first name of a uid
    /// shared by several).
    pub fn names(&self) -> Result<std::collections::HashMap<u32, String>, RemoteError> {
        let mut out = std::collections::HashMap::new();
        for kv in self.tree.iter() {
            let (k, v) = kv.map_err(internal)?;
            let r: UserRecord = record::decode(&v).map_err(internal)?;
            out.entry(r.uid).or_insert_with(|| String::from_utf8_lossy(&k).into_owned());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> Identity {
        Identity { name: name.into(), role: Role::Host, site: Some("s".into()) }
    }

    #[test]
    fn hosts_have_their_functions_rights_only() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let users = Users::open(&db, &[], true).unwrap().with_hosts(&["vpe".into()], Some(&["pop1".into()]));
        let root = Cred { uid: 0, gid: 0, groups: vec![] };
        // A file server is nobody and asserts nothing.
        let (c, admin) = users.caller(&host("pop1"), None).unwrap();
        assert_eq!((c.uid, c.gid, admin), (NOBODY, NOBODY, false));
        let e = users.caller(&host("pop1"), Some(&root)).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotPermitted);
        // The admin host is root, and may assert.
        assert_eq!(users.caller(&host("vpe"), None).unwrap().0.uid, 0);
        assert_eq!(users.caller(&host("vpe"), Some(&Cred { uid: 5, gid: 5, groups: vec![] })).unwrap().0.uid, 5);
        // Only listed hosts are file servers; no user is.
        assert!(users.file_server(&host("pop1"), "heartbeat").is_ok());
        let e = users.file_server(&host("vpe"), "heartbeat").unwrap_err();
        assert!(e.message.contains("host vpe@s is not one"), "{e}");
        let alice = Identity { name: "alice".into(), role: Role::User, site: None };
        assert!(users.file_server(&alice, "heartbeat").is_err());
        assert!(users.admin_host(&alice, "reporting VMs").is_err());
        assert!(users.admin_host(&host("pop1"), "reporting VMs").is_err());
        assert!(users.admin_host(&host("vpe"), "reporting VMs").is_ok());
        // Without a list, every host may serve files.
        let open = Users::open(&db, &[], true).unwrap();
        assert!(open.file_server(&host("anyone"), "heartbeat").is_ok());
    }
}
