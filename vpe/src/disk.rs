//! A VM's local disks: the qcow2 overlay over a cached base, the swap disk,
//! and flattening an overlay into a standalone raw image (for `save`).
//!
//! All qemu-img calls are bounded by a deadline.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::command;
use crate::error::{CommandError, VmError};

/// Deadline for creating an overlay (metadata only: milliseconds in practice).
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// The qemu-img binary.
const QEMU_IMG: &str = "qemu-img";

/// Creates `overlay` as a qcow2 whose backing file is the raw `base`; the
/// base is never written. The guest sees the base's size.
pub fn create_overlay(base: &Path, overlay: &Path) -> Result<(), CommandError> {
    command::run(
        Command::new(QEMU_IMG).args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"]).arg(base).arg(overlay),
        CREATE_TIMEOUT,
    )?;
    Ok(())
}

/// Creates a sparse raw swap disk of `mib` MiB (the guest runs mkswap on it).
pub fn create_swap(path: &Path, mib: u64) -> Result<(), VmError> {
    let file = fs::File::create(path).map_err(VmError::io(path))?;
    file.set_len(mib * 1024 * 1024).map_err(VmError::io(path))?;
    Ok(())
}

/// Writes the flattened contents of `overlay` (overlay + backing base) as a
/// standalone raw image at `dest`. `-U` lets it read an image a running qemu
/// holds open; callers pause the guest around this so the copy is consistent.
pub fn flatten(overlay: &Path, dest: &Path, timeout: Duration) -> Result<(), CommandError> {
    command::run(
        Command::new(QEMU_IMG).args(["convert", "-U", "-q", "-f", "qcow2", "-O", "raw"]).arg(overlay).arg(dest),
        timeout,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_reads_through_to_base_and_flattens() {
        assert!(
            Command::new(QEMU_IMG).arg("--version").output().is_ok(),
            "qemu-img is missing: apt-get install qemu-utils"
        );
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        let mut bytes = vec![0u8; 1 << 20];
        bytes[..5].copy_from_slice(b"hello");
        fs::write(&base, &bytes).unwrap();
        let overlay = dir.path().join("o.qcow2");
        create_overlay(&base, &overlay).unwrap();
        assert!(fs::metadata(&overlay).unwrap().len() < bytes.len() as u64);
        let flat = dir.path().join("flat.raw");
        flatten(&overlay, &flat, Duration::from_secs(30)).unwrap();
        assert_eq!(fs::read(&flat).unwrap(), bytes);
        assert!(create_overlay(&dir.path().join("missing"), &dir.path().join("x.qcow2")).is_err());
    }

    #[test]
    fn swap_is_sparse_and_sized() {
        let dir = tempfile::tempdir().unwrap();
        let swap = dir.path().join("swap");
        create_swap(&swap, 64).unwrap();
        assert_eq!(fs::metadata(&swap).unwrap().len(), 64 << 20);
    }
}
