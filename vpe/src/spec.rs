//! What a user asks for when running a VM on a PoP, and its validation.
//!
//! Everything here ends up in a libvirt domain or in the guest's seed, so it
//! is checked once, up front: names are restricted to characters that are
//! safe in XML, file names and the guest's shell, and addresses are parsed.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::SpecError;

/// An address with its prefix length, e.g. `10.1.0.5/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpCidr {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length (≤ 32 for IPv4, ≤ 128 for IPv6).
    pub prefix: u8,
}

impl FromStr for IpCidr {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let bad = |reason: &str| SpecError::Invalid { field: "address", reason: format!("{s:?}: {reason}") };
        let (addr, prefix) = s.split_once('/').ok_or_else(|| bad("expected ADDRESS/PREFIX"))?;
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("prefix is not a number"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad("prefix too long"));
        }
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One NIC: the network segment it plugs into and the user's static address on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSpec {
    /// The segment's name (see [`crate::network`]).
    pub segment: String,
    /// The static address the guest configures on this NIC.
    pub address: IpCidr,
}

/// A file the guest's init writes into the persistent disk's marker
/// directory at boot (used to test `save`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedFile {
    /// File name inside `/renkei-marks` on the disk.
    pub name: String,
    /// Its contents.
    pub content: String,
}

/// A request to run one VM on this PoP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// The VM's name, unique on the PoP; the domain is `renkei-<name>`.
    pub name: String,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Swap disk size in MiB (0: no swap disk).
    pub swap_mib: u64,
    /// NICs, in order; the guest sees one NIC per entry.
    pub nics: Vec<NicSpec>,
    /// SSH public keys injected into the guest.
    pub ssh_keys: Vec<String>,
    /// The guest's host name (defaults to the VM name).
    pub hostname: Option<String>,
    /// A file the guest writes to its disk at boot.
    pub write_file: Option<SeedFile>,
}

impl VmSpec {
    /// A spec with one CPU, 256 MiB, 64 MiB swap, and no NICs or keys.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            cpus: 1,
            memory_mib: 256,
            swap_mib: 64,
            nics: Vec::new(),
            ssh_keys: Vec::new(),
            hostname: None,
            write_file: None,
        }
    }

    /// The guest's host name.
    pub fn hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(&self.name)
    }

    /// Checks every field; nothing is done with a spec that fails this.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_name("name", &self.name, 48)?;
        check_name("hostname", self.hostname(), 63)?;
        if self.cpus == 0 {
            return Err(invalid("cpus", "must be at least 1"));
        }
        if self.memory_mib < 64 {
            return Err(invalid("memory", "must be at least 64 MiB"));
        }
        if self.nics.len() > 16 {
            return Err(invalid("nics", "at most 16 NICs"));
        }
        for nic in &self.nics {
            check_name("segment", &nic.segment, 32)?;
        }
        for key in &self.ssh_keys {
            let ok = key.split_whitespace().count() >= 2
                && !key.contains(['\n', '\r'])
                && key.chars().all(|c| c.is_ascii_graphic() || c == ' ');
            if !ok {
                return Err(invalid("ssh key", "expected one line \"TYPE BASE64 [COMMENT]\""));
            }
        }
        if let Some(file) = &self.write_file {
            check_name("write_file name", &file.name, 64)?;
        }
        Ok(())
    }
}

fn invalid(field: &'static str, reason: &str) -> SpecError {
    SpecError::Invalid { field, reason: reason.to_string() }
}

/// Names: 1..=max of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub(crate) fn check_name(field: &'static str, value: &str, max: usize) -> Result<(), SpecError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && !value.starts_with(['.', '-'])
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(SpecError::Invalid {
            field,
            reason: format!("{value:?} must be 1-{max} of [A-Za-z0-9._-], not starting with '.' or '-'"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cidrs() {
        let c: IpCidr = "10.1.2.3/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.1.2.3/24");
        assert!("fd00::1/64".parse::<IpCidr>().is_ok());
        for bad in ["10.1.2.3", "10.1.2.3/33", "x/24", "10.1.2.3/x", "fd00::1/129"] {
            assert!(bad.parse::<IpCidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_unsafe_names_and_keys() {
        let mut spec = VmSpec::new("vm-1");
        spec.ssh_keys.push("ssh-ed25519 AAAAC3Nz user@host".into());
        spec.validate().unwrap();
        for name in ["", "a/b", "../x", "-x", "a b", "a'b", "a<b"] {
            let mut s = spec.clone();
            s.name = name.into();
            assert!(s.validate().is_err(), "{name:?}");
        }
        let mut s = spec.clone();
        s.ssh_keys = vec!["ssh-ed25519 AAAA\nevil".into()];
        assert!(s.validate().is_err());
        let mut s = spec.clone();
        s.nics.push(NicSpec { segment: "seg;rm".into(), address: "10.0.0.1/24".parse().unwrap() });
        assert!(s.validate().is_err());
        let mut s = spec;
        s.cpus = 0;
        assert!(s.validate().is_err());
    }
}
