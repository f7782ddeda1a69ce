//! Capabilities a change of mode or owner voided (issue 12, finding 11):
//! what the meta server's heartbeat answers said ([`CapVoids`]), kept for
//! a capability lifetime, and the check every new read or write stream's
//! user capability passes ([`VoidList::check`]). Host capabilities
//! (replication, a writer's base) are not voided: they act for the
//! federation, not for a user.

use fs_proto::capability::{Access, CapVoids, Capability};
use fs_proto::{ErrorCode, Ino, RemoteError, Role};
use std::collections::HashMap;
use std::sync::Mutex;

/// Most files remembered (the meta server sends at most its own bound; a
/// list beyond this raises the floor, voiding more, never less).
const MAX_FILES: usize = 200_000;

/// The voidings a file server knows.
#[derive(Debug)]
pub struct VoidList {
    state: Mutex<State>,
    /// Moves on every heartbeat answer taken in: what a waiter for a
    /// voiding to arrive wakes on.
    changes: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    /// Per file: the latest voiding's stamp and the owner it spares.
    files: HashMap<Ino, (u64, Option<String>)>,
    /// Every user capability issued before this is void.
    floor: u64,
    /// Stamp up to which the meta server's voidings are here.
    upto: u64,
    /// Capability lifetime, ms (voidings older than this are forgotten).
    hold_ms: u64,
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

impl Default for VoidList {
    fn default() -> Self {
        VoidList { state: Default::default(), changes: tokio::sync::watch::channel(0).0 }
    }
}

impl VoidList {
    /// Wait until `cond` holds of this list, re-checking it at every
    /// heartbeat answer taken in (an event, not a timer), at most `bound`;
    /// whether it holds.
    pub async fn wait_until(&self, bound: std::time::Duration, cond: impl Fn(&Self) -> bool) -> bool {
        let mut changed = self.changes.subscribe();
        let until = tokio::time::Instant::now() + bound;
        loop {
            changed.borrow_and_update();
            if cond(self) {
                return true;
            }
            match tokio::time::timeout_at(until, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return cond(self),
            }
        }
    }

    /// What to report in the next heartbeat.
    pub fn seen(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).upto
    }

    /// Take in a heartbeat answer's voidings.
    pub fn apply(&self, v: CapVoids) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !v.entries.is_empty() {
            tracing::debug!(n = v.entries.len(), "capabilities voided by changes of mode or owner");
        }
        for e in v.entries {
            let slot = st.files.entry(e.ino).or_insert((0, None));
            if e.before >= slot.0 {
                *slot = (e.before, e.owner);
            }
        }
        st.floor = st.floor.max(v.floor);
        st.upto = v.upto;
        st.hold_ms = v.hold_ms;
        let old = now_us().saturating_sub(st.hold_ms.saturating_mul(1000));
        st.files.retain(|_, (before, _)| *before >= old);
        if st.files.len() > MAX_FILES {
            // Keep the newest; void everything older than what is dropped.
            let mut stamps: Vec<u64> = st.files.values().map(|(b, _)| *b).collect();
            stamps.sort_unstable();
            let cut = stamps[stamps.len() - MAX_FILES];
            st.floor = st.floor.max(cut);
            st.files.retain(|_, (before, _)| *before >= cut);
        }
        drop(st);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Refuse `cap` if a change of its file's mode or owner voided it: a
    /// user's read or write capability issued before the change, unless the
    /// user is the file's owner after it.
    pub fn check(&self, cap: &Capability) -> Result<(), RemoteError> {
        if cap.principal.role != Role::User || !matches!(cap.access, Access::Read | Access::Write) {
            return Ok(());
        }
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let voided = cap.issued < st.floor
            || st
                .files
                .get(&cap.ino)
                .is_some_and(|(before, owner)| cap.issued < *before && owner.as_deref() != Some(&cap.principal.name));
        if voided {
            return Err(RemoteError::new(
                ErrorCode::BadCapability,
                format!(
                    "the capability for inode {} was issued before the file's mode or owner changed: \
                     open the file again (access is checked anew)",
                    cap.ino
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fs_proto::capability::{CapVoid, Principal};

    fn cap(user: &str, issued: u64, access: Access) -> Capability {
        Capability {
            ino: 5,
            gen: 1,
            access,
            principal: Principal::user(user),
            expires_ms: u64::MAX,
            issued,
            base_gen: None,
            expect: None,
            inos: Vec::new(),
            room: None,
        }
    }

    #[test]
    fn a_voiding_refuses_earlier_user_capabilities_but_the_owners() {
        let list = VoidList::default();
        let t = now_us();
        assert!(list.check(&cap("bob", t, Access::Read)).is_ok());
        let entries = vec![CapVoid { ino: 5, before: t + 10, owner: Some("alice".into()) }];
        list.apply(CapVoids { entries, upto: t + 10, floor: 0, hold_ms: 600_000 });
        assert_eq!(list.seen(), t + 10);
        let e = list.check(&cap("bob", t, Access::Read)).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadCapability);
        assert!(e.message.contains("open the file again"), "{e}");
        assert!(list.check(&cap("bob", t, Access::Write)).is_err());
        assert!(list.check(&cap("alice", t, Access::Read)).is_ok(), "the owner's stay");
        assert!(list.check(&cap("bob", t + 11, Access::Read)).is_ok(), "issued after the change");
        let mut host = cap("pop1", t, Access::Read);
        host.principal = Principal::host("pop1");
        assert!(list.check(&host).is_ok(), "hosts' capabilities are not voided");
        // The floor voids every earlier user capability.
        list.apply(CapVoids { entries: vec![], upto: t + 20, floor: t + 20, hold_ms: 600_000 });
        assert!(list.check(&cap("alice", t + 15, Access::Read)).is_err());
        // Old voidings are forgotten after a capability lifetime.
        list.apply(CapVoids { entries: vec![], upto: t + 30, floor: 0, hold_ms: 0 });
        assert!(list.check(&cap("bob", t + 25, Access::Read)).is_ok());
    }
}
