//! Errors of the WAN emulator: one enum for topology validation, one for bringing a test bed up,
//! using and tearing it down.

use std::path::PathBuf;

/// A topology file or preset that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read.
    #[error("reading topology {path}")]
    Read {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The TOML did not parse or render.
    #[error("topology TOML: {0}")]
    Parse(String),
    /// MTU outside 576..=65535.
    #[error("mtu {0} is outside 576..=65535")]
    BadMtu(u32),
    /// Fewer than two or more than 254 sites.
    #[error("a topology needs 2..=254 sites, this one has {0}")]
    SiteCount(usize),
    /// A site name that is not `[a-z0-9_]{1,16}`.
    #[error("site name {0:?} must be 1-16 characters of a-z, 0-9 and _")]
    BadSiteName(String),
    /// Two sites with one name.
    #[error("site {0:?} is defined twice")]
    DuplicateSite(String),
    /// A link names a site that does not exist.
    #[error("link refers to unknown site {0:?}")]
    UnknownSite(String),
    /// A directed link given twice.
    #[error("link {0} is defined twice")]
    DuplicateLink(String),
    /// An ordered pair without a link and no `[default_link]`.
    #[error("no link {0}: add a [[link]] for it or a [default_link]")]
    MissingLink(String),
    /// Link parameters out of range.
    #[error("link {link}: {reason}")]
    BadLink {
        /// Which link.
        link: String,
        /// What is wrong.
        reason: String,
    },
    /// Unknown preset name or bad preset argument.
    #[error("preset: {0}")]
    Preset(String),
}

/// Failure to bring up, use or tear down a test bed.
#[derive(Debug, thiserror::Error)]
pub enum WanError {
    /// The topology is invalid.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// Network namespaces and TUN devices need CAP_NET_ADMIN / CAP_SYS_ADMIN.
    #[error("the WAN emulator must run as root (network namespaces and TUN devices)")]
    NotRoot,
    /// An `ip` command failed.
    #[error("`ip {args}` failed: {stderr}")]
    Ip {
        /// Arguments given.
        args: String,
        /// What it printed.
        stderr: String,
    },
    /// A system call or file operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// No site of that name in this test bed.
    #[error("no site named {0:?}")]
    NoSuchSite(String),
    /// The state of a `wan up` daemon could not be used.
    #[error("WAN state: {0}")]
    State(String),
}

impl WanError {
    /// Wrap an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        WanError::Io { what: what.into(), source }
    }

    /// Wrap an errno from `nix` with what was being done.
    pub fn errno(what: impl Into<String>, errno: nix::errno::Errno) -> Self {
        WanError::Io { what: what.into(), source: std::io::Error::from(errno) }
    }
}
