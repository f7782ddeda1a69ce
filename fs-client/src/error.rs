//! Client errors, and the one place where a remote [`ErrorCode`] becomes an
//! errno ([`to_errno`]).

use fs_proto::rpc::CallError;
use fs_proto::{ErrorCode, RemoteError};
use std::path::PathBuf;

/// What can go wrong in the client library.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The configuration is missing or wrong.
    #[error("{0}")]
    Config(String),
    /// TLS or QUIC setup failed.
    #[error(transparent)]
    Endpoint(#[from] fs_proto::endpoint::EndpointError),
    /// A peer could not be reached or the exchange failed.
    #[error("{0}")]
    Call(CallError),
    /// A peer answered with an error, about `path`.
    #[error("{path}: {error}")]
    Remote {
        /// The remote path involved.
        path: String,
        /// The peer's error.
        error: RemoteError,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Local {
        /// The local path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Data did not match its hash after every replica was tried.
    #[error("{0}")]
    Integrity(String),
    /// The peer said something the protocol does not allow here.
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

impl ClientError {
    /// The remote error code behind this error, if any.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Remote { error, .. } => Some(error.code),
            ClientError::Call(c) => c.code(),
            _ => None,
        }
    }

    /// Attach the remote path to an error from a call.
    pub fn at(path: &str, e: CallError) -> Self {
        match e {
            CallError::Remote(error) => ClientError::Remote { path: path.to_string(), error },
            other => ClientError::Call(other),
        }
    }

    /// The errno for this error.
    pub fn errno(&self) -> i32 {
        match self {
            ClientError::Remote { error, .. } => to_errno(error.code),
            ClientError::Call(CallError::Remote(e)) => to_errno(e.code),
            ClientError::Call(CallError::Timeout { .. }) => libc::ETIMEDOUT,
            ClientError::Call(_) => libc::EIO,
            ClientError::Local { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            ClientError::Integrity(_) => libc::EIO,
            _ => libc::EIO,
        }
    }
}

impl From<CallError> for ClientError {
    fn from(e: CallError) -> Self {
        ClientError::Call(e)
    }
}

/// The errno a remote error code stands for.
pub fn to_errno(code: ErrorCode) -> i32 {
    match code {
        ErrorCode::NotFound => libc::ENOENT,
        ErrorCode::Exists => libc::EEXIST,
        ErrorCode::PermissionDenied => libc::EACCES,
        ErrorCode::NotPermitted => libc::EPERM,
        ErrorCode::NotADirectory => libc::ENOTDIR,
        ErrorCode::IsADirectory => libc::EISDIR,
        ErrorCode::NotEmpty => libc::ENOTEMPTY,
        ErrorCode::InvalidArgument => libc::EINVAL,
        ErrorCode::NameTooLong => libc::ENAMETOOLONG,
        ErrorCode::NoSpace => libc::ENOSPC,
        ErrorCode::NoLocks => libc::ENOLCK,
        ErrorCode::QuotaExceeded => libc::EDQUOT,
        ErrorCode::BadCapability => libc::EACCES,
        ErrorCode::Corrupt => libc::EIO,
        ErrorCode::Stale => libc::ESTALE,
        ErrorCode::NoServer => libc::EIO,
        ErrorCode::Unavailable => libc::EAGAIN,
        ErrorCode::Loop => libc::ELOOP,
        ErrorCode::TooManyLinks => libc::EMLINK,
        ErrorCode::Unsupported => libc::EOPNOTSUPP,
        ErrorCode::Interrupted => libc::EIO,
        ErrorCode::NoAttr => libc::ENODATA,
        ErrorCode::TooLarge => libc::E2BIG,
        ErrorCode::Busy => libc::EBUSY,
        ErrorCode::Internal => libc::EIO,
    }
}
