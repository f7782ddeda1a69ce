//! Federation users: certificate name -> uid, gid, groups, admin flag.
//! Users listed in the config keep the ids given there; others are
//! registered on first contact with the next free uid (from 10000) and a
//! private group of the same number, or by an admin (`renkei user add`).
//! A user an admin removed is refused until added again, even where users
//! register themselves; groups have names an admin gives them. Every
//! request looks its caller up here, so a change applies to the next
//! request, with no restart.
//!
//! Hosts, in one place ([`Users::caller`], [`Users::file_server`]): a host
//! certificate acts in the namespace as nobody unless `admin_hosts` grants
//! it root (or `vpe_hosts` root under `/vpe`, which the meta service
//! decides per request: [`crate::service::MetaService::authorize`]); it
//! acts as a file server (under its own name only) if `file_servers` lists
//! it, or if that list is absent.

use crate::config::UserConfig;
use crate::keys::{TREE_GROUPS, TREE_REMOVED_USERS, TREE_USERS};
use crate::perm::Caller;
use crate::record::{self, GroupRecord, RemovedUserRecord, UserRecord};
use fs_proto::admin::{GroupInfo, UserInfo};
use fs_proto::{Cred, ErrorCode, Identity, RemoteError, Role, Timestamp};
use std::collections::BTreeMap;
use std::sync::Mutex;

const FIRST_AUTO_UID: u32 = 10_000;

/// The uid and gid a host without a grant acts as in the namespace.
pub const NOBODY: u32 = 65_534;

/// The user table.
pub struct Users {
    tree: crate::store::Tree,
    removed: crate::store::Tree,
    groups: crate::store::Tree,
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
    pub fn open(db: &crate::store::Store, configured: &[UserConfig], auto_register: bool) -> Result<Self, RemoteError> {
        let tree = db.open_tree(TREE_USERS).map_err(internal)?;
        let removed = db.open_tree(TREE_REMOVED_USERS).map_err(internal)?;
        let groups = db.open_tree(TREE_GROUPS).map_err(internal)?;
        for u in configured {
            let registered = tree.contains_key(u.name.as_bytes()).map_err(internal)?;
            if !registered && removed.contains_key(u.name.as_bytes()).map_err(internal)? {
                tracing::warn!(user = %u.name, "meta.toml lists a user an admin removed: left out (`renkei user add` lets them back)");
                continue;
            }
            let rec = UserRecord { uid: u.uid, gid: u.gid.unwrap_or(u.uid), groups: u.groups.clone(), admin: u.admin };
            tree.insert(u.name.as_bytes(), record::encode(&rec)).map_err(internal)?;
        }
        Ok(Users {
            tree,
            removed,
            groups,
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
        if self.removed.contains_key(name.as_bytes()).map_err(internal)? {
            return Err(RemoteError::new(
                ErrorCode::PermissionDenied,
                format!("user {name:?} was removed from the federation (an admin's `renkei user add` lets them back)"),
            ));
        }
        if !self.auto_register {
            return Err(RemoteError::new(ErrorCode::PermissionDenied, format!("user {name:?} is not registered")));
        }
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = self.tree.get(name.as_bytes()).map_err(internal)? {
            return record::decode(&v).map_err(internal);
        }
        let next = self.next_free_id()?;
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

/// The administration of users and groups (`renkei user`, `renkei
/// group`); the caller was checked to be an admin before any of these.
impl Users {
    /// Every user record, by name.
    fn all(&self) -> Result<BTreeMap<String, UserRecord>, RemoteError> {
        let mut out = BTreeMap::new();
        for kv in self.tree.iter() {
            let (k, v) = kv.map_err(internal)?;
            out.insert(String::from_utf8_lossy(&k).into_owned(), record::decode(&v).map_err(internal)?);
        }
        Ok(out)
    }

    /// Every named group, by name.
    fn all_groups(&self) -> Result<BTreeMap<String, u32>, RemoteError> {
        let mut out = BTreeMap::new();
        for kv in self.groups.iter() {
            let (k, v) = kv.map_err(internal)?;
            let g: GroupRecord = record::decode(&v).map_err(internal)?;
            out.insert(String::from_utf8_lossy(&k).into_owned(), g.gid);
        }
        Ok(out)
    }

    /// The next id from 10000 that no user (uid or gid) and no group uses,
    /// so a new user's private group is nobody else's.
    fn next_free_id(&self) -> Result<u32, RemoteError> {
        let mut next = FIRST_AUTO_UID;
        for r in self.all()?.values() {
            next = next.max(r.uid.saturating_add(1)).max(r.gid.saturating_add(1));
        }
        for gid in self.all_groups()?.values() {
            next = next.max(gid.saturating_add(1));
        }
        for kv in self.removed.iter() {
            let (_, v) = kv.map_err(internal)?;
            let r: RemovedUserRecord = record::decode(&v).map_err(internal)?;
            next = next.max(r.uid.saturating_add(1)).max(r.gid.saturating_add(1));
        }
        Ok(next)
    }

    fn put(&self, name: &str, rec: &UserRecord) -> Result<(), RemoteError> {
        self.tree.insert(name.as_bytes(), record::encode(rec)).map_err(internal)?;
        Ok(())
    }

    fn info(name: &str, r: &UserRecord) -> UserInfo {
        UserInfo { name: name.to_string(), uid: r.uid, gid: r.gid, groups: r.groups.clone(), admin: r.admin }
    }

    /// A group given by name (a named group) or by number.
    fn group_ref(&self, g: &str) -> Result<u32, RemoteError> {
        if let Some(v) = self.groups.get(g.as_bytes()).map_err(internal)? {
            return Ok(record::decode::<GroupRecord>(&v).map_err(internal)?.gid);
        }
        g.parse()
            .map_err(|_| RemoteError::new(ErrorCode::NotFound, format!("no group named {g:?} (`renkei group ls`)")))
    }

    fn group_refs(&self, gs: &[String]) -> Result<Vec<u32>, RemoteError> {
        let mut out = Vec::new();
        for g in gs {
            let gid = self.group_ref(g)?;
            if !out.contains(&gid) {
                out.push(gid);
            }
        }
        Ok(out)
    }

    fn must_get(&self, name: &str) -> Result<UserRecord, RemoteError> {
        self.get(name)?.ok_or_else(|| RemoteError::new(ErrorCode::NotFound, format!("user {name:?} is not registered")))
    }

    /// `user add`: register `name` (also one removed before).
    pub fn add(
        &self,
        name: &str,
        uid: Option<u32>,
        gid: Option<u32>,
        groups: &[String],
        admin: bool,
    ) -> Result<UserInfo, RemoteError> {
        if name.is_empty() || name.contains(['/', '\0']) {
            return Err(RemoteError::new(ErrorCode::InvalidArgument, format!("{name:?} is not a user name")));
        }
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let all = self.all()?;
        if all.contains_key(name) {
            return Err(RemoteError::new(ErrorCode::Exists, format!("user {name:?} is already registered")));
        }
        let uid = match uid {
            Some(u) => {
                if let Some((other, _)) = all.iter().find(|(_, r)| r.uid == u) {
                    return Err(RemoteError::new(ErrorCode::Exists, format!("uid {u} is {other:?}'s")));
                }
                u
            }
            None => self.next_free_id()?,
        };
        let rec = UserRecord { uid, gid: gid.unwrap_or(uid), groups: self.group_refs(groups)?, admin };
        // A removal record stays: its ids are never given to anyone else,
        // and a registered user is looked up before it.
        self.put(name, &rec)?;
        tracing::info!(user = name, uid, gid = rec.gid, admin, "user added");
        Ok(Self::info(name, &rec))
    }

    /// `user ls`: every registered user.
    pub fn list(&self) -> Result<Vec<UserInfo>, RemoteError> {
        Ok(self.all()?.iter().map(|(n, r)| Self::info(n, r)).collect())
    }

    /// `user rm`: remove `name`; refused from the next request on.
    pub fn remove(&self, name: &str) -> Result<(), RemoteError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let rec = self.must_get(name)?;
        let gone = RemovedUserRecord { uid: rec.uid, gid: rec.gid, since_ms: Timestamp::now().as_millis() };
        self.removed.insert(name.as_bytes(), record::encode(&gone)).map_err(internal)?;
        self.tree.remove(name.as_bytes()).map_err(internal)?;
        tracing::info!(user = name, "user removed");
        Ok(())
    }

    /// `user mod`: change the primary group, the groups or the admin flag.
    pub fn modify(
        &self,
        name: &str,
        gid: Option<u32>,
        groups: Option<&[String]>,
        admin: Option<bool>,
    ) -> Result<UserInfo, RemoteError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut rec = self.must_get(name)?;
        if let Some(g) = gid {
            rec.gid = g;
        }
        if let Some(gs) = groups {
            rec.groups = self.group_refs(gs)?;
        }
        if let Some(a) = admin {
            rec.admin = a;
        }
        self.put(name, &rec)?;
        tracing::info!(user = name, gid = rec.gid, groups = ?rec.groups, admin = rec.admin, "user changed");
        Ok(Self::info(name, &rec))
    }

    fn group_info(&self, name: &str, gid: u32, users: &BTreeMap<String, UserRecord>) -> GroupInfo {
        let members =
            users.iter().filter(|(_, r)| r.gid == gid || r.groups.contains(&gid)).map(|(n, _)| n.clone()).collect();
        GroupInfo { name: name.to_string(), gid, members }
    }

    /// Add (or remove) `gid` to the supplementary groups of `members`.
    fn set_membership(&self, gid: u32, members: &[String], member: bool) -> Result<(), RemoteError> {
        for m in members {
            let mut rec = self.must_get(m)?;
            if member && rec.gid != gid && !rec.groups.contains(&gid) {
                rec.groups.push(gid);
            } else if !member {
                if rec.gid == gid {
                    return Err(RemoteError::new(
                        ErrorCode::InvalidArgument,
                        format!("gid {gid} is {m:?}'s primary group (change it with `renkei user mod {m} --gid`)"),
                    ));
                }
                rec.groups.retain(|g| *g != gid);
            }
            self.put(m, &rec)?;
        }
        Ok(())
    }

    /// `group add`: name a group, optionally with members.
    pub fn group_add(&self, name: &str, gid: Option<u32>, members: &[String]) -> Result<GroupInfo, RemoteError> {
        if name.is_empty() || name.parse::<u32>().is_ok() || name.contains(['/', '\0']) {
            return Err(RemoteError::new(ErrorCode::InvalidArgument, format!("{name:?} is not a group name")));
        }
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let groups = self.all_groups()?;
        if groups.contains_key(name) {
            return Err(RemoteError::new(ErrorCode::Exists, format!("group {name:?} exists")));
        }
        let gid = match gid {
            Some(g) => {
                if let Some((other, _)) = groups.iter().find(|(_, v)| **v == g) {
                    return Err(RemoteError::new(ErrorCode::Exists, format!("gid {g} is named {other:?}")));
                }
                g
            }
            None => self.next_free_id()?,
        };
        self.groups.insert(name.as_bytes(), record::encode(&GroupRecord { gid })).map_err(internal)?;
        self.set_membership(gid, members, true)?;
        tracing::info!(group = name, gid, ?members, "group added");
        Ok(self.group_info(name, gid, &self.all()?))
    }

    /// `group ls`: every named group and its members.
    pub fn group_list(&self) -> Result<Vec<GroupInfo>, RemoteError> {
        let users = self.all()?;
        Ok(self.all_groups()?.iter().map(|(n, g)| self.group_info(n, *g, &users)).collect())
    }

    /// `group rm`: forget the name and take the gid out of every user's
    /// supplementary groups; refused while it is someone's primary group.
    pub fn group_remove(&self, name: &str) -> Result<(), RemoteError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let gid = self.group_gid(name)?;
        let users = self.all()?;
        let primary: Vec<&String> = users.iter().filter(|(_, r)| r.gid == gid).map(|(n, _)| n).collect();
        if !primary.is_empty() {
            return Err(RemoteError::new(
                ErrorCode::InvalidArgument,
                format!("group {name:?} (gid {gid}) is the primary group of {primary:?}"),
            ));
        }
        let members: Vec<String> =
            users.iter().filter(|(_, r)| r.groups.contains(&gid)).map(|(n, _)| n.clone()).collect();
        self.set_membership(gid, &members, false)?;
        self.groups.remove(name.as_bytes()).map_err(internal)?;
        tracing::info!(group = name, gid, "group removed");
        Ok(())
    }

    /// `group mod`: add and remove members.
    pub fn group_modify(&self, name: &str, add: &[String], remove: &[String]) -> Result<GroupInfo, RemoteError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let gid = self.group_gid(name)?;
        for m in add.iter().chain(remove) {
            self.must_get(m)?;
        }
        self.set_membership(gid, add, true)?;
        self.set_membership(gid, remove, false)?;
        tracing::info!(group = name, gid, ?add, ?remove, "group members changed");
        Ok(self.group_info(name, gid, &self.all()?))
    }

    fn group_gid(&self, name: &str) -> Result<u32, RemoteError> {
        match self.groups.get(name.as_bytes()).map_err(internal)? {
            Some(v) => Ok(record::decode::<GroupRecord>(&v).map_err(internal)?.gid),
            None => Err(RemoteError::new(ErrorCode::NotFound, format!("no group named {name:?}"))),
        }
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
        let db = crate::store::Store::temporary().unwrap();
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

    fn user(name: &str) -> Identity {
        Identity { name: name.into(), role: Role::User, site: None }
    }

    #[test]
    fn admins_add_remove_and_group_users_at_once() {
        let db = crate::store::Store::temporary().unwrap();
        let users = Users::open(&db, &[], true).unwrap();
        // Self-registered, then removed: refused even with auto-registration.
        let bob = users.caller(&user("bob"), None).unwrap().0;
        assert_eq!(bob.uid, FIRST_AUTO_UID);
        users.remove("bob").unwrap();
        let e = users.caller(&user("bob"), None).unwrap_err();
        assert!(e.message.contains("was removed"), "{e}");
        // Added back with fixed ids; an uid in use is refused.
        let b = users.add("bob", Some(2000), None, &[], false).unwrap();
        assert_eq!((b.uid, b.gid), (2000, 2000));
        assert_eq!(users.add("carol", Some(2000), None, &[], false).unwrap_err().code, ErrorCode::Exists);
        assert_eq!(users.caller(&user("bob"), None).unwrap().0.uid, 2000);
        // A new user's id is past every id in use or once used (bob's
        // first uid still owns his files).
        assert_eq!(users.add("carol", None, None, &[], false).unwrap().uid, FIRST_AUTO_UID + 1);
        // Groups: named, with members; the caller's groups follow at once.
        let g = users.group_add("lab", None, &["bob".into()]).unwrap();
        assert_eq!(g.gid, FIRST_AUTO_UID + 2);
        assert_eq!(users.caller(&user("bob"), None).unwrap().0.groups, vec![g.gid]);
        let g = users.group_modify("lab", &["carol".into()], &["bob".into()]).unwrap();
        assert_eq!(g.members, vec!["carol".to_string()]);
        let c = users.modify("carol", Some(g.gid), Some(&["lab".into(), "77".into()]), Some(true)).unwrap();
        assert_eq!((c.gid, c.groups.clone(), c.admin), (g.gid, vec![g.gid, 77], true));
        assert!(users.caller(&user("carol"), None).unwrap().1, "carol is an admin now");
        // A primary group cannot be removed; otherwise it leaves every list.
        assert!(users.group_remove("lab").unwrap_err().message.contains("primary group"));
        users.modify("carol", Some(c.uid), None, None).unwrap();
        users.group_remove("lab").unwrap();
        assert_eq!(users.get("carol").unwrap().unwrap().groups, vec![77]);
        assert!(users.group_list().unwrap().is_empty());
    }
}
