//! What a VM image is: its manifest, its identity, and where its bytes come from.
//!
//! An image is a directory of three files plus a manifest (`image.toml`):
//! the kernel (booted directly by qemu), the initrd, and the root disk (raw).
//! The manifest names the file of each [`Role`], the kernel command line and,
//! once sealed, the size and BLAKE3 of every file. The image's identity
//! ([`ImageId`]) is the BLAKE3 of that sealed description, so two images with
//! the same bytes and command line are the same image wherever they come from.
//!
//! Bytes come through an [`ImageSource`]: [`LocalDirSource`] reads a local
//! directory; a source reading the renkei namespace through fs-client will
//! implement the same trait.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::SourceError;

/// The manifest's file name inside an image directory.
pub const MANIFEST_FILE: &str = "image.toml";

/// The part a file plays in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The Linux kernel, booted directly (`<kernel>` in the domain).
    Kernel,
    /// The initial ramdisk (`<initrd>`).
    Initrd,
    /// The raw root disk; VMs get a copy-on-write overlay over it.
    Disk,
}

impl Role {
    /// Every role an image must have, in canonical order.
    pub const ALL: [Role; 3] = [Role::Kernel, Role::Initrd, Role::Disk];

    /// The role's name as written in manifests and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Kernel => "kernel",
            Role::Initrd => "initrd",
            Role::Disk => "disk",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The content hash that names an image in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageId(pub blake3::Hash);

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_hex())
    }
}

/// `image.toml`: which file plays which role, how to boot, and (sealed) the hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// A human name (not part of the identity).
    pub name: String,
    /// The kernel command line the image boots with.
    pub cmdline: String,
    /// File name (relative to the image directory) of each role.
    pub files: BTreeMap<Role, String>,
    /// Size in bytes of each file; present once sealed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sizes: BTreeMap<Role, u64>,
    /// Hex BLAKE3 of each file; present once sealed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub blake3: BTreeMap<Role, String>,
}

impl ImageManifest {
    /// Parses a manifest and checks that every role names a plain file name.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SourceError> {
        let bad = |reason: String| SourceError::Manifest { path: path.to_path_buf(), reason };
        let manifest: ImageManifest = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        for role in Role::ALL {
            let name = manifest.files.get(&role).ok_or_else(|| bad(format!("no file for role {role}")))?;
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(bad(format!("file name {name:?} for {role} must be a plain name")));
            }
        }
        Ok(manifest)
    }

    /// Reads `dir/image.toml`.
    pub fn load(dir: &Path) -> Result<Self, SourceError> {
        let path = dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&path).map_err(SourceError::io(&path))?;
        Self::parse(&text, &path)
    }

    /// Writes `dir/image.toml`.
    pub fn store(&self, dir: &Path) -> Result<(), SourceError> {
        let path = dir.join(MANIFEST_FILE);
        let text =
            toml::to_string(self).map_err(|e| SourceError::Manifest { path: path.clone(), reason: e.to_string() })?;
        fs::write(&path, text).map_err(SourceError::io(&path))
    }

    /// The expected hash and size of a role's file, if the manifest is sealed.
    pub fn expected(&self, role: Role) -> Option<(blake3::Hash, u64)> {
        let hash = blake3::Hash::from_hex(self.blake3.get(&role)?).ok()?;
        Some((hash, *self.sizes.get(&role)?))
    }

    /// True when every role has a size and a valid hash.
    pub fn is_sealed(&self) -> bool {
        Role::ALL.iter().all(|r| self.expected(*r).is_some())
    }

    /// The image's identity: BLAKE3 of the command line and every file's size and hash.
    /// `None` until the manifest is sealed.
    pub fn id(&self) -> Option<ImageId> {
        let mut h = blake3::Hasher::new();
        h.update(b"renkei-image-v1\n");
        h.update(self.cmdline.as_bytes());
        h.update(b"\n");
        for role in Role::ALL {
            let (hash, size) = self.expected(role)?;
            h.update(format!("{role} {size} {hash}\n").as_bytes());
        }
        Some(ImageId(h.finalize()))
    }

    /// Total bytes of the image's files (0 for an unsealed manifest).
    pub fn total_size(&self) -> u64 {
        self.sizes.values().sum()
    }
}

/// Hashes a file with BLAKE3, returning the hash and the byte count.
pub fn hash_file(path: &Path) -> std::io::Result<(blake3::Hash, u64)> {
    let mut hasher = blake3::Hasher::new();
    let size = std::io::copy(&mut fs::File::open(path)?, &mut hasher)?;
    Ok((hasher.finalize(), size))
}

/// Seals the image in `dir`: hashes every file and writes sizes and hashes
/// into its `image.toml` (what registering an image does).
pub fn seal(dir: &Path) -> Result<ImageManifest, SourceError> {
    let mut manifest = ImageManifest::load(dir)?;
    for role in Role::ALL {
        let path = dir.join(&manifest.files[&role]);
        let (hash, size) = hash_file(&path).map_err(SourceError::io(&path))?;
        manifest.blake3.insert(role, hash.to_hex().to_string());
        manifest.sizes.insert(role, size);
    }
    manifest.store(dir)?;
    Ok(manifest)
}

/// Where an image's bytes come from. Implementations only move bytes: the
/// cache verifies them against the manifest, so a source need not be trusted.
///
/// The API is blocking; an implementation over an async client runs its own
/// `block_on` (callers run staging on a blocking thread).
pub trait ImageSource {
    /// A short description for logs and errors (a path or a namespace name).
    fn describe(&self) -> String;
    /// The sealed manifest: roles, command line, sizes and hashes.
    fn manifest(&self) -> Result<ImageManifest, SourceError>;
    /// Streams the bytes of `role`'s file into `sink`, returning the byte count.
    fn read(&self, role: Role, sink: &mut dyn Write) -> Result<u64, SourceError>;
}

/// An image in a local directory (as written by `scripts/vm-image/build.sh`
/// and sealed with [`seal`]).
#[derive(Debug, Clone)]
pub struct LocalDirSource {
    dir: PathBuf,
}

impl LocalDirSource {
    /// Opens the image in `dir`; its manifest must be sealed.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, SourceError> {
        let dir = dir.into();
        let manifest = ImageManifest::load(&dir)?;
        if !manifest.is_sealed() {
            return Err(SourceError::Manifest {
                path: dir.join(MANIFEST_FILE),
                reason: "not sealed (no sizes and BLAKE3 hashes); run `vpe image seal DIR`".into(),
            });
        }
        Ok(Self { dir })
    }

    /// The image directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl ImageSource for LocalDirSource {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn manifest(&self) -> Result<ImageManifest, SourceError> {
        ImageManifest::load(&self.dir)
    }

    fn read(&self, role: Role, sink: &mut dyn Write) -> Result<u64, SourceError> {
        let manifest = self.manifest()?;
        let path = self.dir.join(&manifest.files[&role]);
        let mut file = fs::File::open(&path).map_err(SourceError::io(&path))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(SourceError::io(&path))?;
            if n == 0 {
                return Ok(total);
            }
            sink.write_all(&buf[..n]).map_err(SourceError::io(&path))?;
            total += n as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_image(dir: &Path) {
        fs::write(dir.join("k"), b"kernel bytes").unwrap();
        fs::write(dir.join("i"), b"initrd bytes").unwrap();
        fs::write(dir.join("d"), b"disk bytes").unwrap();
        fs::write(
            dir.join(MANIFEST_FILE),
            "name = \"t\"\ncmdline = \"console=ttyS0\"\n[files]\nkernel = \"k\"\ninitrd = \"i\"\ndisk = \"d\"\n",
        )
        .unwrap();
    }

    #[test]
    fn unsealed_image_is_refused_and_sealing_gives_a_stable_id() {
        let dir = tempfile::tempdir().unwrap();
        write_image(dir.path());
        assert!(LocalDirSource::open(dir.path()).is_err());
        let sealed = seal(dir.path()).unwrap();
        let id = sealed.id().unwrap();
        assert_eq!(sealed.sizes[&Role::Kernel], 12);
        let again = LocalDirSource::open(dir.path()).unwrap().manifest().unwrap();
        assert_eq!(again.id(), Some(id));
        // Changing a byte, or the command line, changes the identity.
        fs::write(dir.path().join("d"), b"disk byteZ").unwrap();
        assert_ne!(seal(dir.path()).unwrap().id(), Some(id));
        let mut m = again.clone();
        m.cmdline.push_str(" quiet");
        assert_ne!(m.id(), Some(id));
    }

    #[test]
    fn manifest_rejects_missing_roles_and_path_names() {
        let p = Path::new("image.toml");
        let missing = "name = \"t\"\ncmdline = \"\"\n[files]\nkernel = \"k\"\ninitrd = \"i\"\n";
        assert!(ImageManifest::parse(missing, p).is_err());
        let escape = "name = \"t\"\ncmdline = \"\"\n[files]\nkernel = \"../k\"\ninitrd = \"i\"\ndisk = \"d\"\n";
        assert!(ImageManifest::parse(escape, p).is_err());
    }

    #[test]
    fn local_source_streams_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_image(dir.path());
        seal(dir.path()).unwrap();
        let src = LocalDirSource::open(dir.path()).unwrap();
        let mut out = Vec::new();
        assert_eq!(src.read(Role::Initrd, &mut out).unwrap(), 12);
        assert_eq!(out, b"initrd bytes");
    }
}
