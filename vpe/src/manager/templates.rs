//! VM templates: named, shareable run settings in `/vpe/templates/NAME.toml`.

use fs_proto::vpe::{Template, VpeResponse};
use fs_proto::{ErrorCode, FileKind, RemoteError};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{Manager, R};
use crate::store::catalog::{self, ImageRef};
use crate::store::layout;

/// A template as stored in the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TemplateRecord {
    name: String,
    owner: String,
    #[serde(default)]
    shared: bool,
    site: Option<String>,
    image: Option<String>,
    cpus: Option<u32>,
    memory_mib: Option<u64>,
    #[serde(default)]
    nets: Vec<String>,
}

impl TemplateRecord {
    fn from_wire(t: Template, owner: &str) -> Self {
        Self {
            name: t.name,
            owner: owner.to_string(),
            shared: t.shared,
            site: t.site,
            image: t.image,
            cpus: t.cpus,
            memory_mib: t.memory_mib,
            nets: t.nets,
        }
    }

    fn to_wire(&self) -> Template {
        Template {
            name: self.name.clone(),
            owner: self.owner.clone(),
            shared: self.shared,
            site: self.site.clone(),
            image: self.image.clone(),
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            nets: self.nets.clone(),
        }
    }

    fn visible_to(&self, user: &str) -> bool {
        self.shared || self.owner == user
    }
}

fn not_found(name: &str) -> RemoteError {
    RemoteError::new(ErrorCode::NotFound, format!("no template named {name} (see `vpe template ls`)"))
}

impl Manager {
    async fn read_template(&self, name: &str) -> R<Option<TemplateRecord>> {
        catalog::check("template name", name)?;
        match self.ns.read(&layout::template_path(name)).await? {
            None => Ok(None),
            Some(bytes) => toml::from_str(&String::from_utf8_lossy(&bytes))
                .map(Some)
                .map_err(|e| RemoteError::new(ErrorCode::Internal, format!("template {name}: {e}"))),
        }
    }

    /// Template `name`, if `user` may use it.
    pub(super) async fn load_template(&self, user: &str, name: &str) -> R<Template> {
        let t = self.read_template(name).await?.filter(|t| t.visible_to(user)).ok_or_else(|| not_found(name))?;
        Ok(t.to_wire())
    }

    pub(super) async fn template_create(&self, user: &str, t: Template) -> R<VpeResponse> {
        self.ensure_layout().await?;
        catalog::check("template name", &t.name)?;
        if let Some(image) = &t.image {
            ImageRef::parse(image)?;
        }
        for net in &t.nets {
            catalog::check("segment", net)?;
        }
        let _records = self.records.lock().await;
        if let Some(existing) = self.read_template(&t.name).await? {
            if existing.owner != user {
                return Err(RemoteError::new(
                    ErrorCode::Exists,
                    format!("template {} exists and belongs to {}", t.name, existing.owner),
                ));
            }
        }
        let record = TemplateRecord::from_wire(t, user);
        let text = toml::to_string(&record).map_err(|e| RemoteError::new(ErrorCode::Internal, e.to_string()))?;
        self.ns.write(&layout::template_path(&record.name), text.as_bytes(), 0o644).await?;
        Ok(VpeResponse::Templates(vec![record.to_wire()]))
    }

    pub(super) async fn template_list(&self, user: &str) -> R<VpeResponse> {
        let mut out = Vec::new();
        for e in self.ns.list(layout::TEMPLATES).await? {
            let Some(name) = e.name.strip_suffix(".toml").filter(|_| e.kind == FileKind::Regular) else { continue };
            match self.read_template(name).await {
                Ok(Some(t)) if t.visible_to(user) => out.push(t.to_wire()),
                Ok(_) => {}
                Err(err) => warn!(template = name, "unreadable template: {err}"),
            }
        }
        Ok(VpeResponse::Templates(out))
    }

    pub(super) async fn template_remove(&self, user: &str, name: &str) -> R<VpeResponse> {
        let _records = self.records.lock().await;
        let t = self.read_template(name).await?.filter(|t| t.visible_to(user)).ok_or_else(|| not_found(name))?;
        if t.owner != user {
            return Err(RemoteError::new(
                ErrorCode::PermissionDenied,
                format!("template {name} belongs to {}; only its owner may remove it", t.owner),
            ));
        }
        self.ns.remove_tree(&layout::template_path(name)).await?;
        Ok(VpeResponse::Done)
    }
}
