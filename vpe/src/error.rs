//! Every error the vpe library returns, one enum per family of operation.
//!
//! The agent and manager turn these into `fs_proto::ErrorCode`s at the wire;
//! here they carry enough context (paths, names, what to do) that a user
//! reading one line knows what failed and why.

use std::path::PathBuf;
use std::time::Duration;

/// Reading an image's manifest or bytes from an [`crate::ImageSource`].
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source's manifest could not be read or parsed.
    #[error("image manifest {path}: {reason}")]
    Manifest {
        /// Where the manifest was looked for.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The image's bytes could not be fetched from where they live.
    #[error("fetching image file {name}: {reason}")]
    Fetch {
        /// The file (e.g. `renkei:/vpe/images/NAME/GEN/disk`).
        name: String,
        /// Why it failed (e.g. a corrupt replica refused by its server).
        reason: String,
    },
    /// An I/O error while reading the image's bytes.
    #[error("reading image file {path}: {source}")]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Putting an image into, or taking one out of, the local content-addressed cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The image source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Bytes did not hash to what the manifest promised: the image is corrupt
    /// (in the source or in the cache) and is not used.
    #[error("image file {role} is corrupt: expected BLAKE3 {expected}, got {actual} ({size} bytes)")]
    HashMismatch {
        /// Which file of the image (kernel, initrd, disk).
        role: String,
        /// The hash the manifest promised.
        expected: String,
        /// The hash of the bytes actually read.
        actual: String,
        /// How many bytes were read.
        size: u64,
    },
    /// A local file-system error in the cache directory.
    #[error("image cache {path}: {source}")]
    Io {
        /// The cache path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Running an external tool (qemu-img, qemu) with a deadline.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The tool is not installed on this host.
    #[error("{program} is not installed on this host (install the Debian package {package})")]
    Missing {
        /// The program name.
        program: String,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// The tool could not be started for another reason.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program name.
        program: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The tool ran past its deadline and was killed.
    #[error("{program} did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The program name.
        program: String,
        /// The deadline it had.
        timeout: Duration,
    },
    /// The tool exited with a failure status.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program name.
        program: String,
        /// Its exit status.
        status: String,
        /// The last part of what it printed on stderr.
        stderr: String,
    },
    /// An I/O error around the child process (capturing its output).
    #[error("running {program}: {source}")]
    Io {
        /// The program name.
        program: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl CommandError {
    /// The error for a failed spawn: `Missing` (with its package) when the
    /// program does not exist, `Spawn` otherwise.
    pub fn spawn(program: &str, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            CommandError::Missing { program: program.to_string(), package: package_of(program) }
        } else {
            CommandError::Spawn { program: program.to_string(), source }
        }
    }
}

/// The Debian package providing one of the tools vpe runs.
pub fn package_of(program: &str) -> &'static str {
    let name = program.rsplit('/').next().unwrap_or(program);
    match name {
        "qemu-img" | "qemu-nbd" => "qemu-utils",
        n if n.starts_with("qemu-system-") => "qemu-system-x86",
        "virsh" => "libvirt-clients",
        "mke2fs" | "mkfs.ext4" => "e2fsprogs",
        "cpio" => "cpio",
        "busybox" => "busybox-static",
        "ssh" | "ssh-keygen" => "openssh-client",
        _ => "that provides it",
    }
}

/// Talking to the hypervisor (libvirt, or the unit tests' fake).
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    /// libvirtd could not be reached.
    #[error(
        "cannot connect to libvirt at {uri}: {message} (is libvirtd running? try `libvirtd -d` and `virtlogd -d`)"
    )]
    Unreachable {
        /// The connection URI.
        uri: String,
        /// libvirt's message.
        message: String,
    },
    /// libvirt rejected a domain or network definition.
    #[error("libvirt rejected the definition of {name}: {message}")]
    Definition {
        /// The domain or network name.
        name: String,
        /// libvirt's message.
        message: String,
    },
    /// No domain or network with that name.
    #[error("no libvirt object named {0}")]
    NotFound(String),
    /// Any other libvirt failure, with the operation that failed.
    #[error("libvirt {operation} of {name} failed: {message}")]
    Operation {
        /// What was attempted (start, destroy, ...).
        operation: &'static str,
        /// The domain or network name.
        name: String,
        /// libvirt's message.
        message: String,
    },
}

/// A VM request that is invalid before anything is done.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A field of the VM spec is not acceptable.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why it is not acceptable.
        reason: String,
    },
}

/// Watching a guest's serial console.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The boot marker did not appear in time.
    #[error("guest did not print {marker} on its console within {timeout:?} (console log: {path})")]
    BootTimeout {
        /// The marker looked for.
        marker: String,
        /// How long we waited.
        timeout: Duration,
        /// The console log to read.
        path: PathBuf,
    },
    /// The domain stopped before the marker appeared (guest panic, qemu crash).
    #[error("guest stopped before booting (console log: {path})")]
    GuestStopped {
        /// The console log to read.
        path: PathBuf,
    },
    /// The console log could not be read.
    #[error("reading console log {path}: {source}")]
    Io {
        /// The console log.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// An illegal lifecycle transition (a bug in the driver, or a racing request).
#[derive(Debug, thiserror::Error)]
#[error("VM in state {state} cannot handle {event}")]
pub struct TransitionError {
    /// The state the VM was in.
    pub state: String,
    /// The event it was given.
    pub event: String,
}

/// Choosing a PoP, or refusing to because of the user's limits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    /// The user may not run VMs at this site.
    #[error("user {user} may not run VMs at site {site} (allowed: {allowed})")]
    SiteNotAllowed {
        /// The user.
        user: String,
        /// The site asked for.
        site: String,
        /// The sites the user may use.
        allowed: String,
    },
    /// The user already runs as many VMs as allowed.
    #[error("user {user} already runs {running} VMs, the limit is {max}")]
    TooManyVms {
        /// The user.
        user: String,
        /// How many VMs they run.
        running: u32,
        /// Their limit.
        max: u32,
    },
    /// The site has no PoP that can take another VM.
    #[error("site {0} has no PoP with free capacity")]
    NoCapacity(String),
}

/// Anything that can go wrong running, stopping or saving a VM on this PoP.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The request was invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Staging the image failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// qemu-img or another tool failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// libvirt failed.
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    /// The guest did not boot.
    #[error(transparent)]
    Console(#[from] ConsoleError),
    /// The lifecycle refused the request.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// A VM of that name already exists on this PoP.
    #[error("a VM named {0} already exists on this PoP")]
    Exists(String),
    /// No VM of that name on this PoP.
    #[error("no VM named {0} on this PoP")]
    Unknown(String),
    /// A local file-system error in the PoP's state directory.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Starting or running the manager or an agent as a process.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// Certificates, keys or the QUIC endpoint.
    #[error(transparent)]
    Endpoint(#[from] fs_proto::endpoint::EndpointError),
    /// The namespace client.
    #[error(transparent)]
    Client(#[from] fs_client::ClientError),
    /// The PoP's VM host.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// A local file-system error.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

macro_rules! io_ctor {
    ($($ty:ident),*) => {$(
        impl $ty {
            /// Maps an `io::Error` on `path` into this error type.
            pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
                move |source| Self::Io { path: path.to_path_buf(), source }
            }
        }
    )*};
}
io_ctor!(SourceError, CacheError, VmError, ServiceError);
