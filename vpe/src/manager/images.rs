//! The manager's image requests: register an upload as a generation, list,
//! show, tag, remove. Records live in `/vpe/images/NAME/info.toml`.

use fs_proto::meta::SetAttr;
use fs_proto::vpe::{ImageRegister, ImageTag, VpeResponse};
use fs_proto::{hash_hex, Attr, ErrorCode, FileKind, RemoteError};
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
        // Only regular files are made root's (by inode, as listed: nothing
        // is followed to somewhere else).
        for e in &entries {
            if e.kind != FileKind::Regular {
                return Err(RemoteError::new(
                    ErrorCode::InvalidArgument,
                    format!("{dir}/{} is not a regular file", e.name),
                ));
            }
            self.ns.own_ino(e.ino, 0o444).await?;
        }
        let entries = self.ns.list(dir).await?;
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

    /// Takes `upload` from `user` into the manager's staging directory and
    /// returns where it is now, or refuses, with nothing moved or the upload
    /// given back as it was.
    ///
    /// The manager acts as root, so it must not be the deputy that hands one
    /// user's upload to another: an upload is taken only if it is named for
    /// the caller (`UPLOAD/USER.NONCE`, the user being the certificate's
    /// name), is a directory (not a link to one) writable by its owner
    /// alone, and it and every file in it belong to that owner, with no
    /// other names (no links to someone else's files). `/vpe/upload` is
    /// root's and sticky, and moving a directory to another parent needs
    /// write permission on it, so only its owner can have put such a
    /// directory under a name: another user's upload is never taken unless
    /// they named it for the caller themselves. The checks that matter are
    /// made on what was moved, where nobody but root reaches it: a name
    /// replaced after the first look is not registered.
    async fn take_upload(&self, user: &str, upload: &str) -> R<String> {
        let before = self
            .ns
            .stat(upload)
            .await?
            .ok_or_else(|| RemoteError::new(ErrorCode::NotFound, format!("{upload} does not exist")))?;
        if !layout::is_upload_of(user, upload) {
            return Err(RemoteError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "{upload} is not {user}'s upload: it is owned by uid {}, and {user} may register only \
                     {}/{user}.NONCE directories of {user}'s own",
                    before.uid,
                    layout::UPLOAD
                ),
            ));
        }
        if before.kind != FileKind::Directory {
            return Err(RemoteError::new(
                ErrorCode::InvalidArgument,
                format!("{upload} is a {:?}, not a directory", before.kind),
            ));
        }
        let name = &upload[layout::UPLOAD.len() + 1..];
        let staged = format!("{}/{name}.{}", layout::STAGING, now_ms());
        self.ns.rename(upload, &staged).await?;
        match self.check_taken(upload, &staged, &before).await {
            Ok(()) => Ok(staged),
            Err(e) => {
                self.give_back(&staged, upload, &before).await;
                Err(e)
            }
        }
    }

    /// Checks the upload taken to `staged` (`before`: what `upload` was when
    /// looked at) and makes its directory root's, so its owner can no longer
    /// add, remove or replace entries.
    async fn check_taken(&self, upload: &str, staged: &str, before: &Attr) -> R<()> {
        let now = self.ns.stat(staged).await?.ok_or_else(|| corrupt(format!("{staged} vanished")))?;
        if now.ino != before.ino || now.kind != before.kind || now.uid != before.uid {
            return Err(RemoteError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "{upload} was replaced while it was being taken (inode {} owned by uid {}, then inode {} \
                     owned by uid {}); nothing was registered",
                    before.ino, before.uid, now.ino, now.uid
                ),
            ));
        }
        if now.perm & 0o022 != 0 {
            return Err(RemoteError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "{upload} (owned by uid {}) is writable by others (mode {:o}): an upload must be its \
                     owner's alone",
                    now.uid, now.perm
                ),
            ));
        }
        self.ns.own_ino(now.ino, 0o700).await?;
        for e in self.ns.list(staged).await? {
            let path = format!("{upload}/{}", e.name);
            let a = e.attr.ok_or_else(|| corrupt(format!("no attributes for {path}")))?;
            if a.kind != FileKind::Regular {
                return Err(RemoteError::new(
                    ErrorCode::InvalidArgument,
                    format!("{path} is a {:?}, not a regular file", a.kind),
                ));
            }
            if a.uid != before.uid {
                return Err(RemoteError::new(
                    ErrorCode::PermissionDenied,
                    format!(
                        "{path} is owned by uid {}, but the upload {upload} by uid {}: an upload may hold only \
                         its uploader's own files",
                        a.uid, before.uid
                    ),
                ));
            }
            if a.nlink != 1 {
                return Err(RemoteError::new(
                    ErrorCode::PermissionDenied,
                    format!("{path} has {} names: an upload's files may have no other name", a.nlink),
                ));
            }
        }
        Ok(())
    }

    /// Puts a refused upload back where it was, as it was (best effort: it
    /// is logged if its name has been taken meanwhile).
    async fn give_back(&self, staged: &str, upload: &str, before: &Attr) {
        if let Ok(Some(now)) = self.ns.stat(staged).await {
            if now.ino == before.ino {
                let set = SetAttr {
                    uid: Some(before.uid),
                    gid: Some(before.gid),
                    perm: Some(before.perm),
                    ..SetAttr::default()
                };
                if let Err(e) = self.ns.setattr(now.ino, set).await {
                    warn!(staged, "cannot give a refused upload back its owner: {e}");
                }
            }
        }
        let fallback = format!("{upload}.refused-{}", now_ms());
        for to in [upload, fallback.as_str()] {
            match self.ns.rename(staged, to).await {
                Ok(()) => return,
                Err(e) => warn!(staged, to, "cannot give a refused upload back: {e}"),
            }
        }
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
        let staged = self.take_upload(user, &r.upload).await?;
        record.shared |= r.shared;
        let gen = record.next_gen();
        let dest = layout::generation_dir(&r.name, gen);
        let placed = async {
            self.ns.mkdir_p(&layout::image_dir(&r.name), if record.shared { 0o755 } else { 0o700 }).await?;
            self.ns.rename(&staged, &dest).await
        };
        if let Err(e) = placed.await {
            warn!(staged, dest, "cannot place a checked upload: {e}");
            let _ = self.ns.remove_tree(&staged).await;
            return Err(e);
        }
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
