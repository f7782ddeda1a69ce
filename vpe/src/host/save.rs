//! `save`: a running VM's disk, flattened over its base, as a new image.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use tracing::info;

use super::VmHost;
use crate::disk;
use crate::domain::domain_name;
use crate::error::{CacheError, TransitionError, VmError};
use crate::hypervisor::Hypervisor;
use crate::image::{self, ImageManifest, Role};

impl<H: Hypervisor> VmHost<H> {
    /// Writes VM `name`'s current disk, flattened over its base, as a new
    /// sealed image in `dest` (kernel and initrd copied from the cache).
    /// The guest is paused while its disk is copied, then resumed.
    pub fn save(&mut self, name: &str, dest: &Path) -> Result<ImageManifest, VmError> {
        let vm = self.vms.get(name).ok_or_else(|| VmError::Unknown(name.to_string()))?;
        if !vm.lifecycle.can_save() {
            return Err(TransitionError { state: vm.lifecycle.state().to_string(), event: "Save".into() }.into());
        }
        let dir = self.vm_dir(name);
        let image_hex = vm.record.image.clone();
        let image = blake3::Hash::from_hex(&image_hex)
            .ok()
            .and_then(|h| self.cache.get(image::ImageId(h)))
            .ok_or_else(|| VmError::Io {
                path: self.cache.root().join(&image_hex),
                source: std::io::ErrorKind::NotFound.into(),
            })?;
        fs::create_dir_all(dest).map_err(VmError::io(dest))?;
        let domain = domain_name(name);
        self.hv.pause(&domain)?;
        let timeout = Duration::from_secs(self.config.save_timeout_secs);
        let flattened = disk::flatten(&dir.join("overlay.qcow2"), &dest.join("disk"), timeout);
        let resumed = self.hv.resume(&domain);
        flattened?;
        resumed?;
        for role in [Role::Kernel, Role::Initrd] {
            let to = dest.join(role.as_str());
            fs::copy(image.path(role), &to).map_err(VmError::io(&to))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(0o644)).map_err(VmError::io(&to))?;
        }
        let manifest = ImageManifest {
            name: format!("{}-saved-from-{name}", image.manifest.name),
            cmdline: image.manifest.cmdline.clone(),
            files: Role::ALL.iter().map(|r| (*r, r.as_str().to_string())).collect(),
            sizes: BTreeMap::new(),
            blake3: BTreeMap::new(),
        };
        manifest.store(dest).map_err(CacheError::from)?;
        let sealed = image::seal(dest).map_err(CacheError::from)?;
        info!(vm = name, dest = %dest.display(), "disk saved as a new image");
        Ok(sealed)
    }
}
