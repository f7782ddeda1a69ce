//! [`NamespaceSource`]: an image generation in the renkei namespace, read
//! through the fs-client library.
//!
//! The manifest must have the content id the manager recorded when the
//! generation was registered; each file is streamed in ranges that the file
//! server verifies chunk by chunk, and the PoP's cache hashes every byte
//! again against the manifest. A corrupt replica is refused by its server
//! (and reported to the meta server), and the fetch fails with that reason.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use fs_client::Client;
use tokio::runtime::Handle;

use crate::error::SourceError;
use crate::image::{ImageId, ImageManifest, ImageSource, Role, MANIFEST_FILE};

/// Bytes asked for per range read.
const PIECE: u64 = 16 << 20;

/// An image generation at `/vpe/images/NAME/GEN`.
pub struct NamespaceSource {
    client: Client,
    handle: Handle,
    dir: String,
    expected: ImageId,
    manifest: OnceLock<ImageManifest>,
    fetched: Arc<AtomicU64>,
}

impl NamespaceSource {
    /// The generation in namespace directory `dir`, which must have content
    /// id `expected`. Calls run on `handle`'s runtime; use it from a thread
    /// that is not one of that runtime's workers. Image bytes read are
    /// added to `fetched`.
    pub fn new(client: Client, handle: Handle, dir: String, expected: ImageId, fetched: Arc<AtomicU64>) -> Self {
        Self { client, handle, dir, expected, manifest: OnceLock::new(), fetched }
    }

    fn fetch_err(&self, what: &str, reason: impl std::fmt::Display) -> SourceError {
        SourceError::Fetch { name: format!("renkei:{}/{what}", self.dir), reason: reason.to_string() }
    }
}

impl ImageSource for NamespaceSource {
    fn describe(&self) -> String {
        format!("renkei:{}", self.dir)
    }

    fn manifest(&self) -> Result<ImageManifest, SourceError> {
        if let Some(m) = self.manifest.get() {
            return Ok(m.clone());
        }
        let path = format!("{}/{MANIFEST_FILE}", self.dir);
        let bytes = self.handle.block_on(self.client.get_bytes(&path)).map_err(|e| self.fetch_err(MANIFEST_FILE, e))?;
        let text = String::from_utf8(bytes).map_err(|e| self.fetch_err(MANIFEST_FILE, e))?;
        let manifest = ImageManifest::parse(&text, std::path::Path::new(&path))?;
        if manifest.id() != Some(self.expected) {
            return Err(SourceError::Manifest {
                path: path.into(),
                reason: format!(
                    "content id {} is not the registered {} (the generation was changed after registration)",
                    manifest.id().map(|i| i.to_string()).unwrap_or_else(|| "(unsealed)".into()),
                    self.expected
                ),
            });
        }
        Ok(self.manifest.get_or_init(|| manifest).clone())
    }

    fn read(&self, role: Role, sink: &mut dyn Write) -> Result<u64, SourceError> {
        let manifest = self.manifest()?;
        let name = &manifest.files[&role];
        let path = format!("{}/{name}", self.dir);
        let (client, fetched) = (&self.client, &self.fetched);
        self.handle.block_on(async {
            let attr = client.stat(&path).await.map_err(|e| self.fetch_err(name, e))?;
            let grant = client.meta().open_read(attr.ino).await.map_err(|e| self.fetch_err(name, e))?;
            let mut offset = 0u64;
            while offset < grant.attr.size {
                let len = PIECE.min(grant.attr.size - offset);
                let bytes = client.data().read_range(&grant, offset, len).await.map_err(|e| self.fetch_err(name, e))?;
                if bytes.is_empty() {
                    return Err(self.fetch_err(name, format!("no bytes at offset {offset} of {}", grant.attr.size)));
                }
                sink.write_all(&bytes).map_err(|e| SourceError::Io { path: name.into(), source: e })?;
                offset += bytes.len() as u64;
                fetched.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            Ok(offset)
        })
    }
}
