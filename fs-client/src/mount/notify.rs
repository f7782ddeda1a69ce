//! Passing invalidations to the kernel (FUSE notify), on a thread of its
//! own: a notification may wait for locks the kernel holds while it waits
//! for one of our replies, so it must never run on a thread that replies.
//! A callback is acknowledged once its notifications reached the kernel
//! ([`KernelNotes::delivered`]), so another mount's change is not answered
//! from the kernel's stale entries here (the kernel decides some calls
//! alone: a rename whose cached source and target are the same inode is a
//! no-op). The wait is bounded: a notification blocked behind a call that
//! itself waits for that acknowledgement only delays it.

use super::inodes::Inodes;
use fs_proto::callback::Invalidation;
use std::ffi::OsStr;
use std::sync::mpsc;

/// Sends invalidations towards the kernel.
#[derive(Clone)]
pub struct KernelNotes {
    tx: mpsc::Sender<Note>,
}

enum Note {
    Inv(Invalidation),
    /// Everything queued before has been passed to the kernel.
    Mark(tokio::sync::oneshot::Sender<()>),
}

/// The receiving side, until the FUSE session exists.
pub struct NotesPending {
    rx: mpsc::Receiver<Note>,
}

/// A pair of ends.
pub fn channel() -> (KernelNotes, NotesPending) {
    let (tx, rx) = mpsc::channel();
    (KernelNotes { tx }, NotesPending { rx })
}

impl KernelNotes {
    /// Queue invalidations (dropped silently once the session is gone).
    pub fn send(&self, list: &[Invalidation]) {
        for inv in list {
            let _ = self.tx.send(Note::Inv(inv.clone()));
        }
    }

    /// Wait until everything queued so far reached the kernel, at most
    /// `bound` (false: not yet, or no session).
    pub async fn delivered(&self, bound: std::time::Duration) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Note::Mark(tx)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(bound, rx).await, Ok(Ok(())))
    }
}

impl NotesPending {
    /// Start delivering through the session's notifier.
    pub fn start(self, notifier: fuser::Notifier, inodes: Inodes) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name("renkei-notify".into()).spawn(move || {
            while let Ok(note) = self.rx.recv() {
                let inv = match note {
                    Note::Inv(inv) => inv,
                    Note::Mark(done) => {
                        let _ = done.send(());
                        continue;
                    }
                };
                // ENOENT (the kernel does not know the object) is expected.
                let r = match &inv {
                    Invalidation::Attr { ino } => notifier.inval_inode(fuser::INodeNo(inodes.to_fuse(*ino)), 0, 0),
                    Invalidation::Entry { parent, name } => {
                        notifier.inval_entry(fuser::INodeNo(inodes.to_fuse(*parent)), OsStr::new(name))
                    }
                    Invalidation::Leased { dir } => notifier.inval_inode(fuser::INodeNo(inodes.to_fuse(*dir)), 0, 0),
                    Invalidation::Reset | Invalidation::Recall { .. } => Ok(()),
                };
                if let Err(e) = r {
                    if e.raw_os_error() == Some(libc::EBADF) || e.raw_os_error() == Some(libc::ENODEV) {
                        return;
                    }
                    tracing::trace!(?inv, "kernel notification: {e}");
                }
            }
        })
    }
}
