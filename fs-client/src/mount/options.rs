//! Mount options: what `renkei mount -o ...` accepts, parsed into one
//! [`MountOptions`] value. The names follow sshfs and mount.fuse where they
//! mean the same thing.

use std::path::PathBuf;
use std::time::Duration;

/// How local and federation user ids are mapped (see the crate docs of
/// [`crate::mount`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdMapMode {
    /// The certificate's federation user and primary group appear as the
    /// mounting local user and group; every other id is shown as is.
    User,
    /// Ids are shown and asserted unchanged (one uid space, as with NFS).
    None,
}

/// Everything `-o` can set, plus the positional arguments.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Remote directory to mount (default `/`).
    pub remote_dir: String,
    /// Local mount point.
    pub mountpoint: PathBuf,
    /// Read-only mount.
    pub read_only: bool,
    /// Let other local users (and root) use the mount.
    pub allow_other: bool,
    /// Pass each caller's uid, gid and groups to the meta server (needs an
    /// admin certificate).
    pub cred: bool,
    /// Id mapping.
    pub idmap: IdMapMode,
    /// How long the kernel may cache a name or attributes before asking the
    /// mount again (the mount itself answers from its lease-backed cache).
    pub kernel_ttl: Duration,
    /// Bound on one operation that needs the network before it fails with EIO.
    pub timeout: Duration,
    /// Bound on one metadata round trip.
    pub call_timeout: Duration,
    /// Largest FUSE write and read-ahead (bytes).
    pub max_io: u32,
    /// Directory for dirty data of files open for writing past
    /// [`super::dirty::IN_MEMORY`] bytes (spill files).
    pub spill_dir: PathBuf,
    /// File system name shown in the mount table.
    pub fsname: String,
    /// Bundle small-file creates under directory write leases (`-o
    /// nobundle` turns it off: every create goes to the meta server).
    pub bundle: bool,
    /// Open a file for reading without asking the meta server when the
    /// mount holds a read-ahead body and grant of its current generation
    /// under an unexpired, uninvalidated lease (AFS-style). Close-to-open
    /// still holds: a writer's close returns only once every mount leasing
    /// the file acknowledged the invalidation (or stopped trusting its
    /// cache, see `fs_proto::callback`). On by default; `-o noopenlease`
    /// makes every open ask the meta server.
    pub open_lease: bool,
    /// Read ahead the files of a listed directory read one after another,
    /// in bundles (`-o noprefetch` turns it off: one read request per file).
    pub prefetch: bool,
    /// Write-back of every namespace operation under directory write
    /// leases (unlink, rmdir, rename, link, chmod, chown, utimens are
    /// answered here and committed in order with the bundles); `-o
    /// nowriteback` sends each to the meta server and waits. Needs
    /// bundling.
    pub writeback: bool,
}

/// A bad `-o` option.
#[derive(Debug, thiserror::Error)]
#[error("mount option {option:?}: {reason}")]
pub struct OptionError {
    /// The option as given.
    pub option: String,
    /// What is wrong with it.
    pub reason: String,
}

impl MountOptions {
    /// Defaults for mounting `remote_dir` at `mountpoint`.
    pub fn new(remote_dir: String, mountpoint: PathBuf) -> Self {
        MountOptions {
            remote_dir,
            mountpoint,
            read_only: false,
            allow_other: false,
            cred: false,
            idmap: IdMapMode::User,
            kernel_ttl: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(5),
            max_io: 1 << 20,
            spill_dir: std::env::temp_dir(),
            fsname: String::new(),
            bundle: true,
            open_lease: true,
            prefetch: true,
            writeback: true,
        }
        .named()
    }

    fn named(mut self) -> Self {
        if self.fsname.is_empty() {
            self.fsname = format!("renkei:{}", self.remote_dir);
        }
        self
    }

    /// Apply a comma-separated `-o` list. `cred` switches the default id
    /// mapping to `none` unless `idmap=` is given too.
    pub fn apply(&mut self, list: &str) -> Result<(), OptionError> {
        let mut idmap_given = false;
        for opt in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let bad = |reason: &str| OptionError { option: opt.to_string(), reason: reason.to_string() };
            let secs = |v: &str| -> Result<Duration, OptionError> {
                v.parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e6)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| bad("expected seconds"))
            };
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            match (key, value) {
                ("ro", None) => self.read_only = true,
                ("rw", None) => self.read_only = false,
                ("allow_other", None) => self.allow_other = true,
                ("cred", None) => self.cred = true,
                ("idmap", Some("user")) => {
                    self.idmap = IdMapMode::User;
                    idmap_given = true;
                }
                ("idmap", Some("none")) => {
                    self.idmap = IdMapMode::None;
                    idmap_given = true;
                }
                ("idmap", _) => return Err(bad("expected idmap=user or idmap=none")),
                ("cache_timeout" | "attr_timeout" | "entry_timeout", Some(v)) => self.kernel_ttl = secs(v)?,
                ("timeout", Some(v)) => {
                    self.timeout = secs(v)?;
                    if self.timeout < Duration::from_millis(100) {
                        return Err(bad("at least 0.1 s"));
                    }
                    self.call_timeout = self.call_timeout.min(self.timeout);
                }
                ("max_write" | "max_read", Some(v)) => {
                    self.max_io = v.parse().ok().filter(|n| *n >= 4096).ok_or_else(|| bad("bytes, at least 4096"))?
                }
                ("spill_dir", Some(v)) => self.spill_dir = PathBuf::from(v),
                ("fsname", Some(v)) => self.fsname = v.to_string(),
                ("bundle", None) => self.bundle = true,
                ("nobundle", None) => self.bundle = false,
                ("openlease", None) => self.open_lease = true,
                ("noopenlease", None) => self.open_lease = false,
                ("prefetch", None) => self.prefetch = true,
                ("noprefetch", None) => self.prefetch = false,
                ("nowriteback", None) => self.writeback = false,
                ("writeback", None) => self.writeback = true,
                // Accepted for compatibility with fstab and sshfs habits.
                (
                    "default_permissions"
                    | "reconnect"
                    | "dev"
                    | "nodev"
                    | "suid"
                    | "nosuid"
                    | "exec"
                    | "noexec"
                    | "auto"
                    | "noauto"
                    | "user"
                    | "nouser"
                    | "_netdev"
                    | "nofail",
                    None,
                ) => {}
                _ => return Err(bad("unknown option (see `renkei mount --help`)")),
            }
        }
        if self.cred && !idmap_given {
            self.idmap = IdMapMode::None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let mut o = MountOptions::new("/".into(), "/mnt".into());
        o.apply("ro,allow_other,timeout=2.5,attr_timeout=0,max_write=65536").unwrap();
        assert!(o.read_only && o.allow_other);
        assert_eq!(o.timeout, Duration::from_millis(2500));
        assert_eq!(o.kernel_ttl, Duration::ZERO);
        assert_eq!(o.max_io, 65536);
        assert_eq!(o.idmap, IdMapMode::User);
        o.apply("cred").unwrap();
        assert_eq!(o.idmap, IdMapMode::None, "cred defaults to one uid space");
        assert!(o.bundle);
        o.apply("nobundle").unwrap();
        assert!(!o.bundle);
        assert!(o.apply("bogus").is_err());
        assert!(o.apply("timeout=-1").is_err());
        assert!(o.apply("idmap=root").is_err());
    }
}
