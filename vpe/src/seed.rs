//! The per-VM seed: what the guest learns from the host at boot.
//!
//! The seed is a tar archive attached to the guest as a read-only raw virtio
//! disk with serial `renkei-seed`; the guest's init runs
//! `tar -x -f /dev/vdX -C /seed` (no root-side mount, no network). Files:
//!
//! | file | contents |
//! |---|---|
//! | `hostname` | the host name |
//! | `authorized_keys` | the user's SSH public keys, one per line |
//! | `net` | one line per NIC: `MAC ADDRESS/PREFIX SEGMENT` |
//! | `write-name`, `write-content` | optional: a file to write into `/renkei-marks` on the disk |
//!
//! Every value was validated by [`VmSpec::validate`], so none contains a
//! newline or shell metacharacters.

use std::fs;
use std::path::Path;

use crate::error::VmError;
use crate::network::nic_mac;
use crate::spec::VmSpec;

/// The tar bytes of the seed for `spec` (a multiple of 512 bytes, as a disk must be).
pub fn seed_archive(spec: &VmSpec) -> std::io::Result<Vec<u8>> {
    let mut files: Vec<(&str, String)> = vec![("hostname", format!("{}\n", spec.hostname()))];
    let keys: String = spec.ssh_keys.iter().map(|k| format!("{k}\n")).collect();
    files.push(("authorized_keys", keys));
    let net: String = spec
        .nics
        .iter()
        .enumerate()
        .map(|(i, nic)| format!("{} {} {}\n", nic_mac(&spec.name, i), nic.address, nic.segment))
        .collect();
    files.push(("net", net));
    if let Some(file) = &spec.write_file {
        files.push(("write-name", format!("{}\n", file.name)));
        files.push(("write-content", file.content.clone()));
    }
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    for (name, content) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        builder.append_data(&mut header, name, content.as_bytes())?;
    }
    let mut bytes = builder.into_inner()?;
    // tar ends on a 512-byte boundary already; round up to 4 KiB for the block layer.
    bytes.resize(bytes.len().div_ceil(4096) * 4096, 0);
    Ok(bytes)
}

/// Writes the seed disk for `spec` at `path`.
pub fn write_seed(spec: &VmSpec, path: &Path) -> Result<(), VmError> {
    let bytes = seed_archive(spec).map_err(VmError::io(path))?;
    fs::write(path, bytes).map_err(VmError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{NicSpec, SeedFile};
    use std::io::Read;

    #[test]
    fn archive_holds_every_seed_file() {
        let mut spec = VmSpec::new("vm1");
        spec.ssh_keys = vec!["ssh-ed25519 AAAA k1".into(), "ssh-rsa BBBB k2".into()];
        spec.nics = vec![
            NicSpec { segment: "a".into(), address: "10.1.0.5/24".parse().unwrap() },
            NicSpec { segment: "b".into(), address: "10.2.0.5/16".parse().unwrap() },
        ];
        spec.write_file = Some(SeedFile { name: "hello".into(), content: "hi".into() });
        let bytes = seed_archive(&spec).unwrap();
        assert_eq!(bytes.len() % 4096, 0);
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut got = std::collections::BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut s = String::new();
            entry.read_to_string(&mut s).unwrap();
            got.insert(name, s);
        }
        assert_eq!(got["hostname"], "vm1\n");
        assert_eq!(got["authorized_keys"], "ssh-ed25519 AAAA k1\nssh-rsa BBBB k2\n");
        let net: Vec<&str> = got["net"].lines().collect();
        assert_eq!(net.len(), 2);
        assert!(net[0].ends_with(" 10.1.0.5/24 a"), "{}", net[0]);
        assert!(net[1].starts_with(&nic_mac("vm1", 1)));
        assert_eq!(got["write-name"], "hello\n");
        assert_eq!(got["write-content"], "hi");
        assert_eq!(seed_archive(&spec).unwrap(), bytes, "seed is deterministic");
    }
}
