//! The `fuser::Filesystem` implementation: every callback takes what it
//! needs from the request, spawns the operation on the tokio runtime and
//! returns at once, so no FUSE request waits behind another's round trip.
//! The operation replies when it is done (replies may go out of order).

use super::fs::{Inner, Op};
use super::io::AttrChange;
use fs_proto::meta::RenameFlags as Flags;
use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The file system handed to fuser.
pub struct RenkeiFs(pub Arc<Inner>);

const GEN: Generation = Generation(0);

fn reply_entry(fs: &Inner, r: Op<(fs_proto::Attr, Duration)>, reply: ReplyEntry) {
    match r {
        Ok((a, ttl)) => reply.entry(&ttl, &fs.file_attr(&a), GEN),
        Err(e) => reply.error(e),
    }
}

/// The attributes of a negative entry (node id 0); only the id is read.
fn absent_attr() -> fuser::FileAttr {
    let t = SystemTime::UNIX_EPOCH;
    fuser::FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: fuser::FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

fn reply_empty(r: Op<()>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn reply_xattr(r: Op<Vec<u8>>, size: u32, reply: ReplyXattr) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(e),
    }
}

macro_rules! name_or_reply {
    ($name:expr, $reply:ident) => {
        match Inner::name($name) {
            Ok(n) => n,
            Err(e) => return $reply.error(e),
        }
    };
}

impl RenkeiFs {
    fn ino(&self, i: INodeNo) -> u64 {
        self.0.inodes.to_meta(i.0)
    }
}

impl Filesystem for RenkeiFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let max = self.0.opts.max_io;
        let _ = config.set_max_write(max);
        let _ = config.set_max_readahead(max);
        let _ = config.set_max_background(64);
        // FUSE_HANDLE_KILLPRIV: writes and truncations by non-root clear
        // set-user-id/set-group-id bits here (`Inner::kill_priv`); the
        // kernel would otherwise ask with a chmod as the writer, which the
        // meta server refuses to anyone but the owner.
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_AUTO_INVAL_DATA,
            InitFlags::FUSE_HANDLE_KILLPRIV,
            // Locks are taken at the meta server, across mounts.
            InitFlags::FUSE_POSIX_LOCKS,
            InitFlags::FUSE_FLOCK_LOCKS,
        ] {
            let _ = config.add_capabilities(flag);
        }
        Ok(())
    }

    fn destroy(&mut self) {
        let fs = self.0.clone();
        let rt = fs.rt.clone();
        // Commit whatever is still dirty before the session goes away.
        let _ = std::thread::spawn(move || rt.block_on(fs.commit_all())).join();
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let (fs, cred, parent) = (self.0.clone(), self.0.cred(req), self.ino(parent));
        let name = name_or_reply!(name, reply);
        self.0.spawn(async move {
            let r = fs.bounded(fs.lookup(cred.as_ref(), parent, &name)).await;
            if matches!(r, Err(e) if e.code() == libc::ENOENT) {
                if let Some(ttl) = fs.absent_ttl(parent, &name) {
                    // Node id 0: the kernel caches the name as absent.
                    fs.counters.bump("fuse.lookup_absent");
                    return reply.entry(&ttl, &absent_attr(), GEN);
                }
            }
            reply_entry(&fs, r, reply)
        });
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let (fs, cred, ino) = (self.0.clone(), self.0.cred(req), self.ino(ino));
        self.0.spawn(async move {
            match fs.bounded(fs.attr(cred.as_ref(), ino)).await {
                Ok((a, ttl)) => reply.attr(&ttl, &fs.file_attr(&a)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let (fs, cred, ino) = (self.0.clone(), self.0.cred(req), self.ino(ino));
        let kill_priv = size.is_some() && req.uid() != 0;
        let ch = AttrChange { mode, uid, gid, size, atime, mtime, kill_priv };
        self.0.spawn(async move {
            // A truncation may upload; it is bounded by the commit bound.
            match fs.setattr(cred.as_ref(), ino, ch).await {
                Ok((a, ttl)) => reply.attr(&ttl, &fs.file_attr(&a)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let (fs, cred, ino) = (self.0.clone(), self.0.cred(req), self.ino(ino));
        self.0.spawn(async move {
            match fs.bounded(fs.readlink(cred.as_ref(), ino)).await {
                Ok(t) => reply.data(t.as_bytes()),
                Err(e) => reply.error(e),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let (fs, cred, parent) = (self.0.clone(), self.0.cred(req), self.ino(parent));
        let name = name_or_reply!(name, reply);
        self.0.spawn(async move {
            let r = fs.bounded(fs.mknod(cred.as_ref(), parent, &name, mode, rdev, true)).await;
            reply_entry(&fs, r, reply)
        });
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        let (fs, cred, parent) = (self.0.clone(), self.0.cred(req), self.ino(parent));
        let name = name_or_reply!(name, reply);
        self.0.spawn(async move {
            let r = fs.bounded(fs.mkdir(cred.as_ref(), parent, &name, mode)).await;
            reply_entry(&fs, r, reply)
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (fs, cred, parent) = (self.0.clone(), self.0.cred(req), self.ino(parent));
        let name = name_or_reply!(name, reply);
        self.0
            .spawn(async move { reply_empty(fs.bounded(fs.remove(cred.as_ref(), parent, &name, false)).await, reply) });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (fs, cred, parent) = (self.0.clone(), self.0.cred(req), self.ino(parent));
        let name = name_or_reply!(name, reply);
        self.0
            .spawn(async move { reply_empty(fs.bounded(fs.remove(cred.as_ref(), parent, &name, true)).await, reply) });
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let (fs, cred, parent) = (self.0.clone(), self.0.cred(req), self.ino(parent));
        let name = name_or_reply!(link_name, reply);
        let target = match Inner::link_target(target.as_os_str()) {
            Ok(t) => t,
            Err(e) => return reply.error(e),
        };
        self.0.spawn(async move {
            let r = fs.bounded(fs.symlink(cred.as_ref(), parent, &name, &target)).await;
            reply_entry(&fs, r, reply)
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (fs, cred) = (self.0.clone(), self.0.cred(req));
        let (p, np) = (self.ino(parent), self.ino(newparent));
        let name = name_or_reply!(name, reply);
        let newname = name_or_reply!(newname, reply);
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let flags = Flags {
            noreplace: flags.contains(RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(RenameFlags::RENAME_EXCHANGE),
        };
        self.0.spawn(async move {
            let r = fs.bounded(fs.rename(cred.as_ref(), (p, &name), (np, &newname), flags)).await;
            reply_empty(r, reply)
        });
    }

    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let (fs, cred, ino, np) = (self.0.clone(), self.0.cred(req), self.ino(ino), self.ino(newparent));
        let name = name_or_reply!(newname, reply);
        self.0.spawn(async move {
            let r = fs.bounded(fs.link(cred.as_ref(), ino, np, &name)).await;
            reply_entry(&fs, r, reply)
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (fs, cred, ino) = (self.0.clone(), self.0.cred(req), self.ino(ino));
        let (read, write) = match flags.acc_mode() {
            OpenAccMode::O_RDONLY => (true, false),
            OpenAccMode::O_WRONLY => (false, true),
            OpenAccMode::O_RDWR => (true, true),
        };
        self.0.spawn(async move {
            match fs.bounded(fs.open(cred.as_ref(), ino, read, write)).await {
                Ok((fh, keep)) => {
                    if write && flags.0 & libc::O_SYNC == libc::O_SYNC {
                        fs.bundler.mark_sync(fh);
                    }
                    let f = if keep { FopenFlags::FOPEN_KEEP_CACHE } else { FopenFlags::empty() };
                    reply.opened(FileHandle(fh), f)
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let (fs, cred) = (self.0.clone(), self.0.cred(req));
        self.0.spawn(async move {
            match fs.bounded(fs.read(cred.as_ref(), fh.0, offset, size as u64)).await {
                Ok(b) => reply.data(&b),
                Err(e) => reply.error(e),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let (fs, cred) = (self.0.clone(), self.0.cred(req));
        let data = data.to_vec();
        let kill_priv = req.uid() != 0;
        self.0.spawn(async move {
            match fs.bounded(fs.write(cred.as_ref(), fh.0, offset, &data, kill_priv)).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(e),
            }
        });
    }

    fn flush(&self, _req: &Request, ino: INodeNo, fh: FileHandle, lock_owner: LockOwner, reply: ReplyEmpty) {
        let (fs, ino) = (self.0.clone(), self.ino(ino));
        self.0.spawn(async move {
            let r = fs.flush(fh.0).await;
            // POSIX: closing any descriptor of a file gives back the
            // process's locks on it (after its writes are out).
            fs.unlock_owner(ino, lock_owner.0).await;
            reply_empty(r, reply)
        });
    }

    fn getlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: fuser::ReplyLock,
    ) {
        let (fs, cred, ino) = (self.0.clone(), self.0.cred(req), self.ino(ino));
        let ask = super::locks::LockAsk { ino, fh: fh.0, owner: lock_owner.0, start, end, typ, pid };
        self.0.spawn(async move {
            match fs.bounded(fs.getlk(cred.as_ref(), ask)).await {
                Ok((start, end, typ, pid)) => reply.locked(start, end, typ, pid),
                Err(e) => reply.error(e),
            }
        });
    }

    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let (fs, cred, ino) = (self.0.clone(), self.0.cred(req), self.ino(ino));
        let ask = super::locks::LockAsk { ino, fh: fh.0, owner: lock_owner.0, start, end, typ, pid };
        self.0.spawn(async move {
            // A waiting lock may wait as long as its holder keeps it: not
            // bounded here (the meta server answers within its own bound,
            // and the loop asks again).
            let r = if sleep {
                fs.setlk(cred.as_ref(), ask, true).await
            } else {
                fs.bounded(fs.setlk(cred.as_ref(), ask, false)).await
            };
            reply_empty(r, reply)
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let (fs, ino) = (self.0.clone(), self.ino(ino));
        self.0.spawn(async move {
            let r = fs.release(fh.0).await;
            // A flock()ed file's last close gives its lock back (after
            // its writes are out).
            if let Some(owner) = lock_owner {
                fs.unlock_owner(ino, owner.0).await;
            }
            reply_empty(r, reply)
        });
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let fs = self.0.clone();
        self.0.spawn(async move {
            let work = {
                let fs = fs.clone();
                async move { fs.fsync(fh.0).await }
            };
            reply_empty(fs.bounded_detached("fsync", work).await, reply)
        });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let (fs, cred, ino) = (self.0.clone(), self.0.cred(req), self.ino(ino));
        self.0.spawn(async move {
            match fs.bounded(fs.opendir(cred.as_ref(), ino)).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(list) = self.0.dir(fh.0) else { return reply.error(Errno::EBADF) };
        for (i, item) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(item.attr.ino, (i + 1) as u64, item.attr.kind, &item.name) {
                break;
            }
        }
        reply.ok()
    }

    fn readdirplus(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let Some(list) = self.0.dir(fh.0) else { return reply.error(Errno::EBADF) };
        let ttl = if self.0.cache.is_live() { self.0.opts.kernel_ttl } else { Duration::ZERO };
        for (i, item) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(item.attr.ino, (i + 1) as u64, &item.name, &ttl, &item.attr, GEN) {
                break;
            }
        }
        reply.ok()
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.0.close_dir(fh.0);
        reply.ok()
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // Namespace changes through the meta server are durable before they
        // are acknowledged; entries bundled here are committed now.
        let (fs, ino) = (self.0.clone(), self.ino(ino));
        self.0.spawn(async move { reply_empty(fs.bounded(fs.fsyncdir(ino)).await, reply) });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let fs = self.0.clone();
        self.0.spawn(async move {
            match fs.bounded(fs.statfs()).await {
                Ok(s) => {
                    const BS: u64 = 4096;
                    let files = s.files.max(1);
                    reply.statfs(
                        s.capacity / BS,
                        s.free / BS,
                        s.free / BS,
                        files + 1_000_000_000,
                        1_000_000_000,
                        BS as u32,
                        255,
                        BS as u32,
                    )
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let (fs, cred, ino) = (self.0.clone(), self.0.cred(req), self.ino(ino));
        let name = name_or_reply!(name, reply);
        let value = value.to_vec();
        self.0.spawn(async move {
            reply_empty(fs.bounded(fs.setxattr(cred.as_ref(), ino, &name, &value, flags)).await, reply)
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let (fs, cred, ino) = (self.0.clone(), self.0.cred(req), self.ino(ino));
        let name = name_or_reply!(name, reply);
        // Counted: the kernel does not cache xattrs, so every probe is a
        // FUSE request (tests check that `ls -l` stops probing).
        fs.counters.bump("fuse.getxattr");
        self.0.spawn(async move { reply_xattr(fs.bounded(fs.getxattr(cred.as_ref(), ino, &name)).await, size, reply) });
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let (fs, cred, ino) = (self.0.clone(), self.0.cred(req), self.ino(ino));
        self.0.spawn(async move { reply_xattr(fs.bounded(fs.listxattr(cred.as_ref(), ino)).await, size, reply) });
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (fs, cred, ino) = (self.0.clone(), self.0.cred(req), self.ino(ino));
        let name = name_or_reply!(name, reply);
        self.0.spawn(async move { reply_empty(fs.bounded(fs.removexattr(cred.as_ref(), ino, &name)).await, reply) });
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The mount uses default_permissions: the kernel checks access
        // itself and never sends this; answer yes if it does.
        reply.ok()
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (fs, cred, parent) = (self.0.clone(), self.0.cred(req), self.ino(parent));
        let name = name_or_reply!(name, reply);
        let acc = flags & libc::O_ACCMODE;
        let (read, write) = (acc != libc::O_WRONLY, acc != libc::O_RDONLY);
        let exclusive = flags & libc::O_EXCL != 0;
        self.0.spawn(async move {
            let r = fs.bounded(fs.create(cred.as_ref(), parent, &name, mode, exclusive, read, write)).await;
            match r {
                Ok((a, ttl, fh)) if flags & libc::O_SYNC == libc::O_SYNC => {
                    fs.bundler.mark_sync(fh);
                    reply.created(&ttl, &fs.file_attr(&a), GEN, FileHandle(fh), FopenFlags::empty())
                }
                Ok((a, ttl, fh)) => reply.created(&ttl, &fs.file_attr(&a), GEN, FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(e),
            }
        });
    }
}
