//! `renkei user`, `renkei group` and `renkei host`: site administration at
//! the meta server (what Gfarm's `gfuser`, `gfgroup` and `gfhost` do).
//! Everything that changes something is for admins; the meta server
//! decides, and says so when it refuses.

use super::info::print_hosts;
use super::output::print_json;
use crate::Client;
use clap::{Args, Subcommand};
use fs_proto::admin::{AdminRequest, GroupInfo, UserInfo};
use fs_proto::meta::MetaResponse;
use std::time::{Duration, Instant};

/// `renkei user`.
#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Register a user (a certificate name), or let a removed one back in.
    /// Takes effect at their next request; no restart.
    Add(UserAddArgs),
    /// List the registered users.
    Ls,
    /// Remove a user: every request of theirs is refused from the next one
    /// on (also where users register themselves). Their files stay.
    Rm {
        /// Certificate name.
        name: String,
    },
    /// Change a user's primary group, groups or admin right.
    Mod(UserModArgs),
}

/// `user add` arguments.
#[derive(Args, Debug)]
pub struct UserAddArgs {
    /// Certificate name (as `renkei ca issue --user NAME` made it).
    name: String,
    /// uid (default: the next free one from 10000).
    #[arg(long)]
    uid: Option<u32>,
    /// Primary gid (default: a private group numbered like the uid).
    #[arg(long)]
    gid: Option<u32>,
    /// Supplementary groups, names or numbers (comma-separated).
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// Root-equivalent in the namespace (may act as other uids).
    #[arg(long)]
    admin: bool,
}

/// `user mod` arguments.
#[derive(Args, Debug)]
pub struct UserModArgs {
    /// Certificate name.
    name: String,
    /// New primary gid.
    #[arg(long)]
    gid: Option<u32>,
    /// New supplementary groups, replacing the old (names or numbers,
    /// comma-separated; "" for none).
    #[arg(long, value_delimiter = ',')]
    groups: Option<Vec<String>>,
    /// Make an admin (true) or not (false).
    #[arg(long)]
    admin: Option<bool>,
}

/// `renkei group`.
#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Name a group (a gid), optionally with members.
    Add {
        /// Group name.
        name: String,
        /// gid (default: the next free one from 10000).
        #[arg(long)]
        gid: Option<u32>,
        /// Users to put in it (comma-separated).
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
    },
    /// List the named groups and their members.
    Ls,
    /// Remove a group's name and take it out of every user's groups.
    Rm {
        /// Group name.
        name: String,
    },
    /// Add or remove members.
    Mod {
        /// Group name.
        name: String,
        /// Users to add (comma-separated).
        #[arg(long, value_delimiter = ',')]
        add: Vec<String>,
        /// Users to remove (comma-separated).
        #[arg(long, value_delimiter = ',')]
        remove: Vec<String>,
    },
}

/// `renkei host`.
#[derive(Subcommand, Debug)]
pub enum HostCommand {
    /// Drain a file server (like `gfprep -M` then `gfhost -d`): it gets no
    /// new data, and the meta server moves every replica it holds to other
    /// servers, then has it delete its own.
    Drain {
        /// Host name (`renkei hosts`).
        host: String,
        /// Wait until the server holds no replica.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (e.g. 30m).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        timeout: Duration,
    },
    /// Take a drained server back into service.
    Undrain {
        /// Host name.
        host: String,
    },
    /// Forget a file server that holds no replica and is stopped.
    Rm {
        /// Host name.
        host: String,
    },
}

fn users_of(r: MetaResponse) -> anyhow::Result<Vec<UserInfo>> {
    match r {
        MetaResponse::Users(u) => Ok(u),
        other => anyhow::bail!("unexpected answer: {other:?}"),
    }
}

fn groups_of(r: MetaResponse) -> anyhow::Result<Vec<GroupInfo>> {
    match r {
        MetaResponse::Groups(g) => Ok(g),
        other => anyhow::bail!("unexpected answer: {other:?}"),
    }
}

fn print_users(users: &[UserInfo], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&users);
    }
    println!("{:<20} {:>8} {:>8} {:<5} groups", "user", "uid", "gid", "admin");
    for u in users {
        let groups: Vec<String> = u.groups.iter().map(u32::to_string).collect();
        println!(
            "{:<20} {:>8} {:>8} {:<5} {}",
            u.name,
            u.uid,
            u.gid,
            if u.admin { "yes" } else { "" },
            groups.join(",")
        );
    }
    Ok(())
}

fn print_groups(groups: &[GroupInfo], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&groups);
    }
    println!("{:<20} {:>8} members", "group", "gid");
    for g in groups {
        println!("{:<20} {:>8} {}", g.name, g.gid, g.members.join(","));
    }
    Ok(())
}

/// Run `renkei user ...`.
pub(crate) async fn user(client: &Client, c: &UserCommand, json: bool) -> anyhow::Result<()> {
    let meta = client.meta();
    let req = match c {
        UserCommand::Add(a) => AdminRequest::UserAdd {
            name: a.name.clone(),
            uid: a.uid,
            gid: a.gid,
            groups: a.groups.clone(),
            admin: a.admin,
        },
        UserCommand::Ls => AdminRequest::UserList,
        UserCommand::Rm { name } => AdminRequest::UserRemove { name: name.clone() },
        UserCommand::Mod(a) => AdminRequest::UserModify {
            name: a.name.clone(),
            gid: a.gid,
            groups: a.groups.as_ref().map(|g| g.iter().filter(|s| !s.is_empty()).cloned().collect()),
            admin: a.admin,
        },
    };
    match meta.admin(req).await? {
        MetaResponse::Done => Ok(()),
        r => print_users(&users_of(r)?, json),
    }
}

/// Run `renkei group ...`.
pub(crate) async fn group(client: &Client, c: &GroupCommand, json: bool) -> anyhow::Result<()> {
    let req = match c {
        GroupCommand::Add { name, gid, members } => {
            AdminRequest::GroupAdd { name: name.clone(), gid: *gid, members: members.clone() }
        }
        GroupCommand::Ls => AdminRequest::GroupList,
        GroupCommand::Rm { name } => AdminRequest::GroupRemove { name: name.clone() },
        GroupCommand::Mod { name, add, remove } => {
            AdminRequest::GroupModify { name: name.clone(), add: add.clone(), remove: remove.clone() }
        }
    };
    match client.meta().admin(req).await? {
        MetaResponse::Done => Ok(()),
        r => print_groups(&groups_of(r)?, json),
    }
}

/// Run `renkei host ...`.
pub(crate) async fn host(client: &Client, c: &HostCommand, json: bool) -> anyhow::Result<()> {
    let meta = client.meta();
    let (req, wait) = match c {
        HostCommand::Drain { host, wait, timeout } => {
            (AdminRequest::HostDrain { host: host.clone() }, wait.then_some((host, *timeout)))
        }
        HostCommand::Undrain { host } => (AdminRequest::HostUndrain { host: host.clone() }, None),
        HostCommand::Rm { host } => (AdminRequest::HostRemove { host: host.clone() }, None),
    };
    let answer = meta.admin(req).await?;
    let Some((host, timeout)) = wait else {
        return match answer {
            MetaResponse::Hosts(h) => print_hosts(h, json),
            MetaResponse::Done => Ok(()),
            other => anyhow::bail!("unexpected answer: {other:?}"),
        };
    };
    // Wait for the worker to move everything off: the host's replica count
    // (the meta server counts it at most every 2 s), polled, bounded.
    let start = Instant::now();
    let mut last = None;
    loop {
        let hosts = client.hosts().await?;
        let Some(h) = hosts.iter().find(|h| &h.host == host) else {
            anyhow::bail!("{host} is no longer listed");
        };
        if h.replicas == 0 {
            if !json {
                eprintln!("{host}: drained, no replica left");
            }
            return print_hosts(vec![h.clone()], json);
        }
        if last != Some(h.replicas) && !json {
            eprintln!("{host}: {} replicas still to move", h.replicas);
            last = Some(h.replicas);
        }
        if start.elapsed() > timeout {
            anyhow::bail!(
                "{host} still holds {} replicas after {timeout:?} (the replication worker's backlog and last \
                 error: `renkei ncopy --status`)",
                h.replicas
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
