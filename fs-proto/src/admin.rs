//! Site administration at the meta server, what Gfarm's `gfuser`,
//! `gfgroup` and `gfhost` give an admin: federation users, groups and file
//! servers. Every [`AdminRequest`] but the two listings (readable by every
//! user, as `/etc/passwd` and `/etc/group` are) is for admins only
//! ([`AdminRequest::admin_only`], through
//! [`crate::meta::MetaRequest::admin_only`], which the meta server checks in
//! its one place).
//!
//! A user is a certificate name mapped to a uid, a primary gid, supplementary
//! groups and an admin flag; a group is a name for a gid. Changes take effect
//! at the caller's next request, with no restart of any server.

use serde::{Deserialize, Serialize};

/// The administration requests (carried in
/// [`crate::meta::MetaRequest::Admin`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Register a user, or let a removed one back in. Answered
    /// [`crate::meta::MetaResponse::Users`] with the new record.
    UserAdd {
        /// Certificate name.
        name: String,
        /// uid (None: the next free one from 10000).
        uid: Option<u32>,
        /// Primary gid (None: a private group numbered like the uid).
        gid: Option<u32>,
        /// Supplementary groups: names of groups, or numbers.
        groups: Vec<String>,
        /// Root-equivalent in the namespace (may assert credentials).
        admin: bool,
    },
    /// Every registered user; answered `Users`.
    UserList,
    /// Remove a user: their next request is refused, even where unknown
    /// users register themselves (`auto_register_users`). Their files stay,
    /// owned by the uid. Answered `Done`.
    UserRemove {
        /// Certificate name.
        name: String,
    },
    /// Change a user; `None` leaves a field alone. Answered `Users`.
    UserModify {
        /// Certificate name.
        name: String,
        /// New primary gid.
        gid: Option<u32>,
        /// New supplementary groups (names or numbers), replacing the old.
        groups: Option<Vec<String>>,
        /// Admin or not.
        admin: Option<bool>,
    },
    /// Name a group. Answered [`crate::meta::MetaResponse::Groups`].
    GroupAdd {
        /// Group name.
        name: String,
        /// gid (None: the next free one from 10000).
        gid: Option<u32>,
        /// Users to add to it (as a supplementary group).
        members: Vec<String>,
    },
    /// Every named group with its members; answered `Groups`.
    GroupList,
    /// Remove a group's name and its gid from every user's supplementary
    /// groups; refused while it is a user's primary group. Answered `Done`.
    GroupRemove {
        /// Group name.
        name: String,
    },
    /// Add and remove members (supplementary). Answered `Groups`.
    GroupModify {
        /// Group name.
        name: String,
        /// Users to add.
        add: Vec<String>,
        /// Users to remove.
        remove: Vec<String>,
    },
    /// Drain a file server: it gets no new data (writes, bundles, copies),
    /// and the meta server's replication worker copies every replica it
    /// holds to other servers, then drops its own. Answered
    /// [`crate::meta::MetaResponse::Hosts`] with the host.
    HostDrain {
        /// Host name.
        host: String,
    },
    /// Take a host back into service. Answered `Hosts`.
    HostUndrain {
        /// Host name.
        host: String,
    },
    /// Forget a host: refused while it is alive or holds replicas (drain
    /// it, stop its server). Answered `Done`.
    HostRemove {
        /// Host name.
        host: String,
    },
}

impl AdminRequest {
    /// A stable name per variant, for request counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            AdminRequest::UserAdd { .. } => "user_add",
            AdminRequest::UserList => "user_list",
            AdminRequest::UserRemove { .. } => "user_remove",
            AdminRequest::UserModify { .. } => "user_modify",
            AdminRequest::GroupAdd { .. } => "group_add",
            AdminRequest::GroupList => "group_list",
            AdminRequest::GroupRemove { .. } => "group_remove",
            AdminRequest::GroupModify { .. } => "group_modify",
            AdminRequest::HostDrain { .. } => "host_drain",
            AdminRequest::HostUndrain { .. } => "host_undrain",
            AdminRequest::HostRemove { .. } => "host_remove",
        }
    }

    /// Whether only an admin may make it: everything but the listings.
    pub fn admin_only(&self) -> bool {
        !matches!(self, AdminRequest::UserList | AdminRequest::GroupList)
    }

    /// Whether it changes persistent state.
    pub fn is_mutation(&self) -> bool {
        !matches!(self, AdminRequest::UserList | AdminRequest::GroupList)
    }
}

/// One federation user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Certificate name.
    pub name: String,
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary gids.
    pub groups: Vec<u32>,
    /// Root-equivalent in the namespace.
    pub admin: bool,
}

/// One named group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// Group name.
    pub name: String,
    /// gid.
    pub gid: u32,
    /// Users whose primary or supplementary group it is, by name.
    pub members: Vec<String>,
}
