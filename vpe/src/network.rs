//! Network segments: how a VM's NICs reach other VMs of the same segment.
//!
//! A *segment* is a named layer-2 network a user asks for (`--net SEGMENT`).
//! On a PoP each segment is realised in one of two ways, chosen by the
//! agent's configuration ([`SegmentBacking`]):
//!
//! - `isolated` (the default for any segment not configured): a transient
//!   libvirt network `renkei-seg-<segment>` with its own bridge
//!   (`rk` + 10 hex digits of BLAKE3(segment), within the 15-byte limit of
//!   Linux interface names), no `<forward>` and no `<ip>`, so libvirt runs
//!   no DHCP or NAT: guests use the static addresses the user was assigned.
//!   It is created on demand by the first VM that needs it and removed when
//!   the last VM on it stops on this PoP. When several PoPs share one
//!   libvirtd (e.g. `renkei local up` on one machine), each has a *scope*
//!   (its name) and its networks are `renkei-seg-<scope>:<segment>`, so one
//!   PoP never removes or reaps another's network.
//! - `bridge`: an existing host bridge (e.g. one joined to a site VLAN or a
//!   VXLAN spanning PoPs); vpe only plugs NICs into it and never creates or
//!   removes it.
//!
//! Each NIC gets a MAC derived from the VM name and NIC index
//! (`52:54:00` + 3 bytes of BLAKE3), which is how the guest's init matches
//! seed lines to NICs.

use serde::{Deserialize, Serialize};

use crate::domain::xml_escape;

/// Prefix of every libvirt network vpe creates.
pub const NETWORK_PREFIX: &str = "renkei-seg-";

/// How a segment is realised on this PoP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SegmentBacking {
    /// A libvirt isolated network created on demand.
    Isolated,
    /// An existing host bridge.
    Bridge {
        /// The bridge's interface name.
        bridge: String,
    },
}

/// The libvirt network name of an isolated segment in `scope` ("" for a
/// PoP alone on its libvirtd). Segment names never contain `:`.
pub fn network_name(scope: &str, segment: &str) -> String {
    if scope.is_empty() {
        format!("{NETWORK_PREFIX}{segment}")
    } else {
        format!("{NETWORK_PREFIX}{scope}:{segment}")
    }
}

/// True if libvirt network `name` is an isolated segment of `scope`.
pub fn in_scope(scope: &str, name: &str) -> bool {
    match name.strip_prefix(NETWORK_PREFIX) {
        None => false,
        Some(rest) if scope.is_empty() => !rest.contains(':'),
        Some(rest) => rest.strip_prefix(scope).is_some_and(|r| r.starts_with(':')),
    }
}

/// The bridge interface name of an isolated segment (12 bytes).
pub fn bridge_name(scope: &str, segment: &str) -> String {
    let hash = blake3::hash(network_name(scope, segment).as_bytes()).to_hex();
    format!("rk{}", &hash[..10])
}

/// The libvirt network XML of an isolated segment.
pub fn network_xml(scope: &str, segment: &str) -> String {
    format!(
        "<network>\n  <name>{}</name>\n  <bridge name='{}' stp='off' delay='0'/>\n</network>\n",
        xml_escape(&network_name(scope, segment)),
        bridge_name(scope, segment)
    )
}

/// The MAC address of NIC `index` of VM `vm`.
pub fn nic_mac(vm: &str, index: usize) -> String {
    let hash = blake3::hash(format!("{vm}\0{index}").as_bytes());
    let b = hash.as_bytes();
    format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_and_libvirt_limits() {
        let b = bridge_name("a-long-pop-name", "a-very-long-segment-name-of-32-c");
        assert!(b.len() <= 15, "{b}");
        assert_ne!(bridge_name("", "a"), bridge_name("", "b"));
        assert_ne!(bridge_name("pop1", "a"), bridge_name("pop2", "a"));
        assert_eq!(network_name("", "lab"), "renkei-seg-lab");
        assert_eq!(network_name("pop1", "lab"), "renkei-seg-pop1:lab");
        let xml = network_xml("", "lab");
        assert!(xml.contains("<name>renkei-seg-lab</name>"));
        assert!(!xml.contains("<ip"), "isolated segments run no DHCP");
        assert!(!xml.contains("<forward"), "isolated segments have no NAT");
    }

    #[test]
    fn scopes_keep_pops_apart() {
        assert!(in_scope("", "renkei-seg-lab"));
        assert!(!in_scope("", "renkei-seg-pop1:lab"));
        assert!(in_scope("pop1", "renkei-seg-pop1:lab"));
        assert!(!in_scope("pop1", "renkei-seg-pop10:lab"));
        assert!(!in_scope("pop1", "renkei-seg-lab"));
        assert!(!in_scope("pop1", "default"));
    }

    #[test]
    fn macs_are_stable_distinct_and_local() {
        let m0 = nic_mac("vm", 0);
        assert_eq!(m0, nic_mac("vm", 0));
        assert_ne!(m0, nic_mac("vm", 1));
        assert_ne!(m0, nic_mac("vm2", 0));
        assert!(m0.starts_with("52:54:00:"));
        assert_eq!(m0.len(), 17);
    }
}
