//! The manager's image requests: register an upload as a generation, list,
//! show, tag, remove. Records live in `/vpe/images/NAME/info.toml`.

use fs_proto::vpe::{ImageRegister, ImageTag, VpeResponse};
use fs_proto::{hash_hex, ErrorCode, FileKind, RemoteError};
use tracing::{info, warn};

use super::{now_ms, Manager, R};
use crate::image::{ImageManifest, Role, MANIFEST_FILE};
use crate::store::catalog::{self, GenRecord, ImageRecord, ImageRef, Selector};
use crate::store::layout;

fn corrupt(msg: String) -> RemoteError {
    RemoteError::new(ErrorCode::Corrupt, msg)
}

impl Manager {
    /// The record of image `name`, if it exists.
    pub(super) async fn load_image(&self, name: &str) -> R<Option<ImageRecord>> {
        match self.ns.read(&layout::info_path(name)).await? {
            None => Ok(None),
            Some(bytes) => Ok(Some(ImageRecord::parse(&String::from_utf8_lossy(&bytes))?)),
        }
    }

    /// Writes an image's record and sets its directory's visibility.
    pub(super) async fn store_image(&self, record: &ImageRecord) -> R<()> {
        let dir = layout::image_dir(&record.name);
        self.ns.mkdir_p(&dir, if record.shared { 0o755 } else { 0o700 }).await?;
        self.ns.write(&layout::info_path(&record.name), record.to_toml().as_bytes(), 0o644).await
    }

    /// Checks the generation in namespace directory `dir` against its sealed
    /// manifest (every file's size and BLAKE3 as the namespace recorded them,
    /// no bytes read) and, if given, the content id it must have; makes every
    /// file root's and read-only. Returns the id and the image's size.
    pub(super) async fn seal_generation(&self, dir: &str, want_id: Option<&str>) -> R<(String, u64)> {
        let manifest_path = format!("{dir}/{MANIFEST_FILE}");
        // Root's first, so nobody can change the files between the check and the record.
        self.ns.own(dir, 0o755).await?;
        for name in [MANIFEST_FILE, "kernel", "initrd", "disk"] {
            if self.ns.stat(&format!("{dir}/{name}")).await?.is_some() {
                self.ns.own(&format!("{dir}/{name}"), 0o444).await?;
            }
        }
        let entries = self.ns.list(dir).await?;
        let mut expected: Vec<&str> = vec![MANIFEST_FILE, "disk", "initrd", "kernel"];
        expected.sort();
        let mut names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        names.sort();
        if names != expected {
            return Err(RemoteError::new(
                ErrorCode::InvalidArgument,
                format!("{dir} must hold exactly kernel, initrd, disk and image.toml; it holds {names:?}"),
            ));
        }
        let text = self.ns.read(&manifest_path).await?.unwrap_or_default();
        let manifest = ImageManifest::parse(&String::from_utf8_lossy(&text), std::path::Path::new(&manifest_path))
            .map_err(|e| RemoteError::new(ErrorCode::InvalidArgument, e.to_string()))?;
        let id = manifest.id().ok_or_else(|| {
            RemoteError::new(ErrorCode::InvalidArgument, format!("{manifest_path} is not sealed (no sizes and hashes)"))
        })?;
        for role in Role::ALL {
            if manifest.files[&role] != role.as_str() {
                return Err(RemoteError::new(
                    ErrorCode::InvalidArgument,
                    format!("{manifest_path}: the {role} file must be named {role}"),
                ));
            }
            let attr = entries.iter().find(|e| e.name == role.as_str()).and_then(|e| e.attr.clone());
            let attr = attr.filter(|a| a.kind == FileKind::Regular).ok_or_else(|| {
                RemoteError::new(ErrorCode::InvalidArgument, format!("{dir}/{role} is not a regular file"))
            })?;
            let (want_hash, want_size) =
                manifest.expected(role).ok_or_else(|| corrupt(format!("no hash for {role}")))?;
            let got = attr.hash.map(|h| hash_hex(&h)).unwrap_or_else(|| "(none)".into());
            if attr.size != want_size || attr.hash != Some(*want_hash.as_bytes()) {
                return Err(corrupt(format!(
                    "{dir}/{role} does not match the manifest: {} bytes with BLAKE3 {got}, expected {want_size} bytes with {}",
                    attr.size,
                    want_hash.to_hex()
                )));
            }
        }
        let id = id.to_string();
        if let Some(want) = want_id {
            if want != id {
                return Err(corrupt(format!("{dir} has content id {id}, the PoP reported {want}")));
            }
        }
        Ok((id, manifest.total_size()))
    }

    pub(super) async fn image_register(&self, user: &str, r: ImageRegister) -> R<VpeResponse> {
        self.ensure_layout().await?;
        catalog::check("image name", &r.name)?;
        if !layout::is_upload_dir(&r.upload) {
            return Err(RemoteError::new(
                ErrorCode::InvalidArgument,
                format!("{} is not an upload directory (expected {}/NAME)", r.upload, layout::UPLOAD),
            ));
        }
        let _records = self.records.lock().await;
        let mut record = match self.load_image(&r.name).await? {
            Some(rec) => {
                rec.check_owner(user)?;
                rec
            }
            None => ImageRecord::new(&r.name, user, r.shared),
        };
        record.shared |= r.shared;
        let gen = record.next_gen();
        let dest = layout::generation_dir(&r.name, gen);
        self.ns.mkdir_p(&layout::image_dir(&r.name), if record.shared { 0o755 } else { 0o700 }).await?;
        self.ns.rename(&r.upload, &dest).await?;
        let (id, size) = match self.seal_generation(&dest, None).await {
            Ok(v) => v,
            Err(e) => {
                warn!(dest, "refused upload: {e}");
                let _ = self.ns.remove_tree(&dest).await;
                return Err(e);
            }
        };
        record.add(GenRecord {
            gen,
            id: id.clone(),
            size,
            created_ms: now_ms(),
            origin: format!("registered by {user}"),
        });
        if let Some(tag) = &r.tag {
            record.set_tag(tag, gen)?;
        }
        self.store_image(&record).await?;
        info!(image = %r.name, gen, %id, size, "image registered");
        Ok(VpeResponse::Image(record.to_info()))
    }

    pub(super) async fn image_list(&self, user: &str) -> R<VpeResponse> {
        let mut out = Vec::new();
        for e in self.ns.list(layout::IMAGES).await? {
            if e.kind != FileKind::Directory {
                continue;
            }
            match self.load_image(&e.name).await {
                Ok(Some(rec)) if rec.visible_to(user) => out.push(rec.to_info()),
                Ok(_) => {}
                Err(err) => warn!(image = %e.name, "unreadable image record: {err}"),
            }
        }
        Ok(VpeResponse::Images(out))
    }

    pub(super) async fn image_show(&self, user: &str, name: &str) -> R<VpeResponse> {
        catalog::check("image name", name)?;
        let rec =
            self.load_image(name).await?.filter(|r| r.visible_to(user)).ok_or_else(|| catalog::not_found(name))?;
        Ok(VpeResponse::Image(rec.to_info()))
    }

    pub(super) async fn image_tag(&self, user: &str, t: ImageTag) -> R<VpeResponse> {
        let r = ImageRef::parse(&t.image)?;
        let _records = self.records.lock().await;
        let mut rec = self.load_image(&r.name).await?.ok_or_else(|| catalog::not_found(&r.name))?;
        rec.check_owner(user)?;
        if let Some(tag) = &t.tag {
            let gen = rec.resolve(&r.selector)?.gen;
            rec.set_tag(tag, gen)?;
        }
        if let Some(tag) = &t.untag {
            rec.tags
                .remove(tag)
                .ok_or_else(|| RemoteError::new(ErrorCode::NotFound, format!("image {} has no tag {tag}", rec.name)))?;
        }
        if let Some(shared) = t.shared {
            rec.shared = shared;
        }
        self.store_image(&rec).await?;
        Ok(VpeResponse::Image(rec.to_info()))
    }

    pub(super) async fn image_remove(&self, user: &str, image: &str) -> R<VpeResponse> {
        let r = ImageRef::parse(image)?;
        let _records = self.records.lock().await;
        let mut rec = self.load_image(&r.name).await?.ok_or_else(|| catalog::not_found(&r.name))?;
        rec.check_owner(user)?;
        if r.selector == Selector::Latest && !image.contains(':') {
            self.ns.remove_tree(&layout::image_dir(&r.name)).await?;
            info!(image = %r.name, "image removed");
            return Ok(VpeResponse::Done);
        }
        let gen = rec.resolve(&r.selector)?.gen;
        rec.remove_gen(gen)?;
        self.ns.remove_tree(&layout::generation_dir(&r.name, gen)).await?;
        self.store_image(&rec).await?;
        info!(image = %r.name, gen, "generation removed");
        Ok(VpeResponse::Image(rec.to_info()))
    }
}
