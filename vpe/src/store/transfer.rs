//! Putting an image directory into the namespace: the user's upload before
//! `vpe image register`, and an agent writing a saved disk.
//!
//! Files are stored under their role names (`kernel`, `initrd`, `disk`)
//! with the sealed manifest (`image.toml`) written last, so a directory
//! whose manifest exists has all its files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fs_client::{Client, ClientError};

use crate::error::SourceError;
use crate::image::{hash_file, ImageManifest, Role, MANIFEST_FILE};

/// An image on local disk, hashed: its sealed manifest (files named by
/// role) and the local file of each role.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// The sealed manifest, files named after their roles.
    pub manifest: ImageManifest,
    /// The local file of each role.
    pub files: BTreeMap<Role, PathBuf>,
}

impl LocalImage {
    /// Hashes the files `manifest` names in `dir` (the manifest may be unsealed).
    pub fn from_dir(dir: &Path) -> Result<Self, SourceError> {
        let manifest = ImageManifest::load(dir)?;
        let files = Role::ALL.iter().map(|r| (*r, dir.join(&manifest.files[r]))).collect();
        Self::hash(manifest.name, manifest.cmdline, files)
    }

    /// Hashes the given files into a sealed manifest named `name`, booting with `cmdline`.
    pub fn hash(name: String, cmdline: String, files: BTreeMap<Role, PathBuf>) -> Result<Self, SourceError> {
        let mut manifest = ImageManifest {
            name,
            cmdline,
            files: Role::ALL.iter().map(|r| (*r, r.as_str().to_string())).collect(),
            sizes: BTreeMap::new(),
            blake3: BTreeMap::new(),
        };
        for role in Role::ALL {
            let path = files.get(&role).ok_or_else(|| SourceError::Manifest {
                path: PathBuf::from(role.as_str()),
                reason: format!("no file for role {role}"),
            })?;
            let (hash, size) = hash_file(path).map_err(SourceError::io(path))?;
            manifest.blake3.insert(role, hash.to_hex().to_string());
            manifest.sizes.insert(role, size);
        }
        Ok(Self { manifest, files })
    }

    /// The manifest as `image.toml` text.
    pub fn manifest_toml(&self) -> String {
        // A struct of strings and maps with string keys: cannot fail.
        toml::to_string(&self.manifest).unwrap_or_default()
    }

    /// Writes the image into namespace directory `dest` (created, `perm`):
    /// each file under its role name, then `image.toml`. Returns the bytes sent.
    pub async fn put(&self, client: &Client, dest: &str, perm: u32) -> Result<u64, ClientError> {
        client.mkdir(dest, false, perm).await?;
        let mut total = 0;
        for role in Role::ALL {
            let attr = client.put_file(&self.files[&role], &format!("{dest}/{role}"), &|_| {}).await?;
            total += attr.size;
        }
        let text = self.manifest_toml();
        let mut src = text.as_bytes();
        client.put_reader(&mut src, &format!("{dest}/{MANIFEST_FILE}"), 0o644, &|_| {}).await?;
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_seals_by_role_and_matches_seal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vmlinuz"), b"k").unwrap();
        std::fs::write(dir.path().join("initrd.gz"), b"ii").unwrap();
        std::fs::write(dir.path().join("root.img"), b"ddd").unwrap();
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            "name = \"t\"\ncmdline = \"c\"\n[files]\nkernel = \"vmlinuz\"\ninitrd = \"initrd.gz\"\ndisk = \"root.img\"\n",
        )
        .unwrap();
        let local = LocalImage::from_dir(dir.path()).unwrap();
        assert_eq!(local.manifest.files[&Role::Disk], "disk");
        assert_eq!(local.manifest.sizes[&Role::Disk], 3);
        let sealed = crate::image::seal(dir.path()).unwrap();
        assert_eq!(local.manifest.id(), sealed.id(), "same bytes and command line, same id");
        let back = ImageManifest::parse(&local.manifest_toml(), Path::new("x")).unwrap();
        assert_eq!(back, local.manifest);
    }
}
