//! Passing invalidations to the kernel (FUSE notify), on a thread of its
//! own: a notification may wait for locks the kernel holds while it waits
//! for one of our replies, so it must never run on a thread that replies.

use super::inodes::Inodes;
use fs_proto::callback::Invalidation;
use std::ffi::OsStr;
use std::sync::mpsc;

/// Sends invalidations towards the kernel.
#[derive(Clone)]
pub struct KernelNotes {
    tx: mpsc::Sender<Invalidation>,
}

/// The receiving side, until the FUSE session exists.
pub struct NotesPending {
    rx: mpsc::Receiver<Invalidation>,
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
            let _ = self.tx.send(inv.clone());
        }
    }
}

impl NotesPending {
    /// Start delivering through the session's notifier.
    pub fn start(self, notifier: fuser::Notifier, inodes: Inodes) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name("renkei-notify".into()).spawn(move || {
            while let Ok(inv) = self.rx.recv() {
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
