//! Site administration requests ([`AdminRequest`]: `renkei user`, `renkei
//! group`, `renkei host`). The caller was checked to be an admin in
//! [`MetaService::handle`] before any of these runs; users and groups live
//! in [`crate::users`], the draining mark in [`crate::hosts`], and moving
//! replicas off a draining host is the replication worker's.

use crate::service::MetaService;
use fs_proto::admin::AdminRequest;
use fs_proto::meta::MetaResponse;
use fs_proto::{ErrorCode, HostInfo, Identity, RemoteError};
use tracing::info;

type R<T> = Result<T, RemoteError>;

/// Run one admin request for `id`.
pub(crate) fn handle(svc: &MetaService, id: &Identity, req: AdminRequest) -> R<MetaResponse> {
    use AdminRequest as A;
    use MetaResponse as Re;
    let users = &svc.users;
    Ok(match req {
        A::UserAdd { name, uid, gid, groups, admin } => Re::Users(vec![users.add(&name, uid, gid, &groups, admin)?]),
        A::UserList => Re::Users(users.list()?),
        A::UserRemove { name } => {
            if name == id.name {
                return Err(RemoteError::new(ErrorCode::InvalidArgument, "an admin may not remove themselves"));
            }
            users.remove(&name)?;
            Re::Done
        }
        A::UserModify { name, gid, groups, admin } => {
            Re::Users(vec![users.modify(&name, gid, groups.as_deref(), admin)?])
        }
        A::GroupAdd { name, gid, members } => Re::Groups(vec![users.group_add(&name, gid, &members)?]),
        A::GroupList => Re::Groups(users.group_list()?),
        A::GroupRemove { name } => {
            users.group_remove(&name)?;
            Re::Done
        }
        A::GroupModify { name, add, remove } => Re::Groups(vec![users.group_modify(&name, &add, &remove)?]),
        A::HostDrain { host } => {
            if !svc.config.replication_worker {
                return Err(RemoteError::new(
                    ErrorCode::Unavailable,
                    "draining moves replicas with the replication worker, which this meta server runs without \
                     (`replication_worker = false` in meta.toml)",
                ));
            }
            svc.hosts.set_draining(&host, true)?;
            info!(by = %id.name, %host, "host draining");
            svc.replication.nudge();
            Re::Hosts(vec![host_info(svc, &host)?])
        }
        A::HostUndrain { host } => {
            svc.hosts.set_draining(&host, false)?;
            info!(by = %id.name, %host, "host back in service");
            Re::Hosts(vec![host_info(svc, &host)?])
        }
        A::HostRemove { host } => {
            let held = svc.ns.all_replicas()?.iter().filter(|(h, _, _)| *h == host).count();
            if held > 0 {
                return Err(RemoteError::new(
                    ErrorCode::NotEmpty,
                    format!("{host} still holds {held} replicas: `renkei host drain --wait {host}` first"),
                ));
            }
            svc.hosts.remove(&host)?;
            info!(by = %id.name, %host, "host removed");
            Re::Done
        }
    })
}

fn host_info(svc: &MetaService, host: &str) -> R<HostInfo> {
    svc.hosts
        .list(&svc.replica_counts()?)
        .into_iter()
        .find(|h| h.host == host)
        .ok_or_else(|| RemoteError::new(ErrorCode::NotFound, format!("no file server named {host:?}")))
}
