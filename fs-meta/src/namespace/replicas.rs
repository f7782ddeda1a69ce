//! Dropping one replica on purpose: `renkei rm --replica HOST PATH` (the
//! owner's choice, never the last good copy) and the end of a move off a
//! draining host (the copy that replaces it is registered first).

use super::{err, load, replicas_of, Namespace, R};
use crate::keys;
use crate::perm::Caller;
use crate::record::{GcRecord, ReplicaRecord};
use fs_proto::{ErrorCode, FileKind, Gen, Ino, Timestamp};

impl Namespace {
    /// Drop `host`'s replica of `ino` for its owner (or root); its server
    /// deletes the file after the GC grace. Refused unless another good
    /// replica of the current generation stays on a host `usable` accepts
    /// (a live one), so no file loses its last readable copy this way.
    pub fn drop_one_replica(&self, c: &Caller, ino: Ino, host: &str, usable: &dyn Fn(&str) -> bool) -> R<()> {
        self.write(|t| {
            let i = load(t, ino)?;
            if i.kind != FileKind::Regular {
                return Err(err(ErrorCode::InvalidArgument, format!("inode {ino} is not a regular file")));
            }
            if !c.owns(&i) {
                return Err(err(ErrorCode::NotPermitted, "only the file's owner or an admin may drop a replica"));
            }
            let reps = replicas_of(t, ino)?;
            let Some((_, mine)) = reps.iter().find(|(h, _)| h == host) else {
                return Err(err(ErrorCode::NotFound, format!("{host} holds no replica of inode {ino}")));
            };
            let others = reps.iter().filter(|(h, r)| h != host && r.gen == i.gen && !r.bad && usable(h)).count();
            if others == 0 && mine.gen == i.gen && !mine.bad && i.size > 0 {
                return Err(err(
                    ErrorCode::InvalidArgument,
                    format!(
                        "{host} holds the last good copy of inode {ino} on a live server: \
                         make another first (`renkei rep -N 2`), or remove the file"
                    ),
                ));
            }
            t.del(keys::replica(ino, host));
            t.put(keys::gc(host, ino, mine.gen), &GcRecord { since_ms: Timestamp::now().as_millis() });
            Ok(())
        })
    }

    /// A copy of `(ino, gen)` to `to` replaced `from`'s replica (a draining
    /// host): drop `from`'s, but only if `to`'s is registered, good and of
    /// that generation. Whether it was dropped.
    pub fn finish_move(&self, ino: Ino, gen: Gen, from: &str, to: &str) -> R<bool> {
        self.write(|t| {
            match t.get::<ReplicaRecord>(&keys::replica(ino, to))? {
                Some(r) if r.gen == gen && !r.bad => {}
                _ => return Ok(false),
            }
            match t.get::<ReplicaRecord>(&keys::replica(ino, from))? {
                Some(r) if r.gen == gen => {}
                _ => return Ok(false),
            }
            t.del(keys::replica(ino, from));
            t.put(keys::gc(from, ino, gen), &GcRecord { since_ms: Timestamp::now().as_millis() });
            Ok(true)
        })
    }
}
