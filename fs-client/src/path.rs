//! Remote paths: normalised to absolute form, split into parent and name.

use crate::error::ClientError;
use fs_proto::{ErrorCode, RemoteError};

/// Normalise a remote path: absolute, no `.`/empty components, `..` applied
/// lexically (never above the root).
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Split into (parent path, last component). The root has no parent.
pub fn split(path: &str) -> Result<(String, String), ClientError> {
    let norm = normalize(path);
    match norm.rsplit_once('/') {
        Some((_, "")) | None => Err(ClientError::Remote {
            path: path.to_string(),
            error: RemoteError::new(ErrorCode::InvalidArgument, "the root has no parent"),
        }),
        Some((parent, name)) => {
            Ok((if parent.is_empty() { "/".to_string() } else { parent.to_string() }, name.to_string()))
        }
    }
}

/// Join a directory path and a name.
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizing() {
        assert_eq!(normalize("a/b/../c/."), "/a/c");
        assert_eq!(normalize("/../.."), "/");
        assert_eq!(normalize(""), "/");
        assert_eq!(split("/a/b").unwrap(), ("/a".into(), "b".into()));
        assert_eq!(split("x").unwrap(), ("/".into(), "x".into()));
        assert!(split("/").is_err());
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }
}
