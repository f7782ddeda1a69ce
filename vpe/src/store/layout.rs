//! Where vpe keeps things in the namespace (see [`crate::store`]).

/// The root of everything vpe keeps in the namespace.
pub const ROOT: &str = "/vpe";
/// Registered images.
pub const IMAGES: &str = "/vpe/images";
/// Uploads in progress (mode 1777).
pub const UPLOAD: &str = "/vpe/upload";
/// Where the manager takes an upload to check it (root's, 0700): nobody
/// else reaches it there, so what it checks is what it registers.
pub const STAGING: &str = "/vpe/staging";
/// Templates.
pub const TEMPLATES: &str = "/vpe/templates";
/// Each image's record, in its directory.
pub const INFO_FILE: &str = "info.toml";

/// `/vpe/images/NAME`.
pub fn image_dir(name: &str) -> String {
    format!("{IMAGES}/{name}")
}

/// `/vpe/images/NAME/info.toml`.
pub fn info_path(name: &str) -> String {
    format!("{IMAGES}/{name}/{INFO_FILE}")
}

/// `/vpe/images/NAME/GEN`.
pub fn generation_dir(name: &str, gen: u64) -> String {
    format!("{IMAGES}/{name}/{gen}")
}

/// `/vpe/templates/NAME.toml`.
pub fn template_path(name: &str) -> String {
    format!("{TEMPLATES}/{name}.toml")
}

/// True if `path` is a directory directly under [`UPLOAD`] (no `..`, no nesting).
pub fn is_upload_dir(path: &str) -> bool {
    match path.strip_prefix(UPLOAD).and_then(|rest| rest.strip_prefix('/')) {
        Some(name) => crate::spec::check_name("upload", name, 128).is_ok(),
        None => false,
    }
}

/// True if `path` is an upload directory of `user`: `UPLOAD/USER.NONCE`
/// with a nonce without dots (so user `bob` cannot claim `bob.x.NONCE` of
/// user `bob.x`). The name only says whose the upload claims to be; the
/// manager also checks who owns it and everything in it.
pub fn is_upload_of(user: &str, path: &str) -> bool {
    is_upload_dir(path)
        && path[UPLOAD.len() + 1..]
            .strip_prefix(user)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|nonce| !nonce.is_empty() && !nonce.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(generation_dir("deb", 3), "/vpe/images/deb/3");
        assert_eq!(info_path("deb"), "/vpe/images/deb/info.toml");
        assert!(is_upload_dir("/vpe/upload/alice.1a2b"));
        for bad in
            ["/vpe/upload", "/vpe/upload/", "/vpe/upload/a/b", "/vpe/upload/..", "/vpe/images/x", "/vpe/uploadx/a"]
        {
            assert!(!is_upload_dir(bad), "{bad}");
        }
    }

    #[test]
    fn uploads_are_named_for_their_user() {
        assert!(is_upload_of("alice", "/vpe/upload/alice.1a2b"));
        assert!(is_upload_of("bob.x", "/vpe/upload/bob.x.1a2b"));
        for (user, path) in [
            ("bob", "/vpe/upload/alice.1a2b"),
            ("bob", "/vpe/upload/bob.x.1a2b"),
            ("bob", "/vpe/upload/bob."),
            ("bob", "/vpe/upload/bob"),
            ("bob", "/vpe/upload/bobby.1a2b"),
            ("bob", "/vpe/upload/bob.1a2b/x"),
            ("bob", "/vpe/images/bob.1a2b"),
        ] {
            assert!(!is_upload_of(user, path), "{user} {path}");
        }
    }
}
