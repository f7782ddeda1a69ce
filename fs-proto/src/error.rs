//! Errors that cross the network ([`ErrorCode`], [`RemoteError`]) and local
//! framing errors ([`ProtoError`]).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The closed set of failures a remote peer may report. A client maps these to
/// errno values in exactly one place (`fs_client::error::to_errno`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// No such file, directory, replica or host.
    NotFound,
    /// The name exists already.
    Exists,
    /// Permission bits or ownership forbid the operation.
    PermissionDenied,
    /// The operation needs privileges the identity does not have (chown...).
    NotPermitted,
    /// A directory was expected.
    NotADirectory,
    /// A non-directory was expected.
    IsADirectory,
    /// The directory is not empty.
    NotEmpty,
    /// The request is malformed or names something invalid.
    InvalidArgument,
    /// A name component is too long.
    NameTooLong,
    /// The file server ran out of space.
    NoSpace,
    /// The capability is missing, forged, expired, or names another principal.
    BadCapability,
    /// Stored bytes do not match their BLAKE3 hash.
    Corrupt,
    /// The generation named is no longer current.
    Stale,
    /// No live file server can serve the request.
    NoServer,
    /// The peer is not ready (e.g. a file server that has not yet reached meta).
    Unavailable,
    /// A rename would move a directory under itself, or a link loop.
    Loop,
    /// Too many hard links.
    TooManyLinks,
    /// The operation is not supported.
    Unsupported,
    /// A data transfer ended early.
    Interrupted,
    /// The extended attribute does not exist.
    NoAttr,
    /// The value does not fit the caller's buffer or a protocol limit.
    TooLarge,
    /// The file is busy (e.g. a rename across a mount point in use).
    Busy,
    /// Something failed inside the peer (I/O, database).
    Internal,
    /// No lock can be taken (no callback session, or too many locks).
    NoLocks,
    /// The owner's quota (files or bytes, replicas counted) is used up.
    QuotaExceeded,
}

impl ErrorCode {
    /// A short English description used in messages.
    pub fn describe(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "no such file or directory",
            ErrorCode::Exists => "file exists",
            ErrorCode::PermissionDenied => "permission denied",
            ErrorCode::NotPermitted => "operation not permitted",
            ErrorCode::NotADirectory => "not a directory",
            ErrorCode::IsADirectory => "is a directory",
            ErrorCode::NotEmpty => "directory not empty",
            ErrorCode::InvalidArgument => "invalid argument",
            ErrorCode::NameTooLong => "file name too long",
            ErrorCode::NoSpace => "no space left on file server",
            ErrorCode::BadCapability => "capability rejected",
            ErrorCode::Corrupt => "replica failed its BLAKE3 check",
            ErrorCode::Stale => "stale generation",
            ErrorCode::NoServer => "no live file server available",
            ErrorCode::Unavailable => "service not ready",
            ErrorCode::Loop => "would create a loop",
            ErrorCode::TooManyLinks => "too many links",
            ErrorCode::Unsupported => "operation not supported",
            ErrorCode::Interrupted => "transfer interrupted",
            ErrorCode::NoAttr => "no such attribute",
            ErrorCode::TooLarge => "value too large",
            ErrorCode::Busy => "resource busy",
            ErrorCode::Internal => "internal error on the remote side",
            ErrorCode::NoLocks => "no locks available",
            ErrorCode::QuotaExceeded => "disk quota exceeded",
        }
    }
}

/// A failure reported by a remote peer: a code plus a human-readable context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct RemoteError {
    /// What went wrong, in the closed vocabulary.
    pub code: ErrorCode,
    /// Context for humans (which path, which host...). Never parsed.
    pub message: String,
}

impl RemoteError {
    /// Build an error with a context message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RemoteError { code, message: message.into() }
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code.describe())
        } else {
            write!(f, "{}: {}", self.code.describe(), self.message)
        }
    }
}

impl From<ErrorCode> for RemoteError {
    fn from(code: ErrorCode) -> Self {
        RemoteError { code, message: String::new() }
    }
}

/// Local errors of framing and stream handling.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// A length prefix larger than [`crate::version::MAX_FRAME`].
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The stream ended where a frame was expected.
    #[error("stream ended before a frame")]
    Eof,
    /// The bytes did not decode as the expected message.
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    /// A message holding more elements than its bound allows
    /// ([`crate::bounded`]).
    #[error("malformed frame: {0}")]
    OverBound(String),
    /// A compressed frame that does not decompress within
    /// [`crate::version::MAX_FRAME`].
    #[error("malformed compressed frame: {0}")]
    Compression(String),
    /// The QUIC stream failed while reading.
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// The QUIC stream failed while writing.
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// The stream was closed already.
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    /// The QUIC connection failed.
    #[error("connection failed: {0}")]
    Connection(#[from] quinn::ConnectionError),
}

impl ProtoError {
    /// True when the peer sent bytes that violate the protocol (as opposed to
    /// a transport failure); the right answer is to close the connection.
    pub fn is_protocol_violation(&self) -> bool {
        matches!(
            self,
            ProtoError::Oversized { .. }
                | ProtoError::Truncated
                | ProtoError::Malformed(_)
                | ProtoError::OverBound(_)
                | ProtoError::Compression(_)
        )
    }
}

/// QUIC application error codes used when closing connections or resetting
/// streams.
pub mod quic_codes {
    use quinn::VarInt;
    /// Normal close.
    pub const OK: VarInt = VarInt::from_u32(0);
    /// The peer violated the framing or sent an undecodable message.
    pub const PROTOCOL: VarInt = VarInt::from_u32(1);
    /// The peer's identity is not allowed to use this service.
    pub const FORBIDDEN: VarInt = VarInt::from_u32(2);
    /// The process is shutting down.
    pub const SHUTDOWN: VarInt = VarInt::from_u32(3);
    /// A stream was reset because stored bytes failed verification.
    pub const CORRUPT: VarInt = VarInt::from_u32(4);
    /// A stream was reset because of a local I/O failure.
    pub const IO: VarInt = VarInt::from_u32(5);
}
