//! Generating the libvirt domain XML of a VM.
//!
//! The domain boots the image's kernel and initrd directly, with:
//! - `vda`: the VM's qcow2 overlay over the cached base disk (serial `renkei-root`),
//! - `vdb`: a raw swap disk (serial `renkei-swap`), when swap was asked for,
//! - `vdc`: the read-only raw seed disk (serial `renkei-seed`, see [`crate::seed`]),
//! - one virtio NIC per requested segment, in order,
//! - the serial console (ttyS0) written to a log file,
//! - domain type `kvm` or `qemu` (TCG) as [`crate::accel`] decided.
//!
//! The guest finds disks by serial, never by probe order. Every value that
//! reaches the XML is escaped.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::accel::Accel;
use crate::network::{network_name, nic_mac, SegmentBacking};

/// Prefix of every libvirt domain vpe creates.
pub const DOMAIN_PREFIX: &str = "renkei-";

/// The libvirt domain name of VM `vm`.
pub fn domain_name(vm: &str) -> String {
    format!("{DOMAIN_PREFIX}{vm}")
}

/// One NIC as it goes into the domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainNic {
    /// The segment name.
    pub segment: String,
    /// How the segment is realised here.
    pub backing: SegmentBacking,
    /// The NIC's MAC address.
    pub mac: String,
}

/// Everything the domain XML is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainDef {
    /// The VM name (the domain is `renkei-<name>`).
    pub vm: String,
    /// The PoP's scope for isolated segment networks (see [`crate::network`]).
    pub scope: String,
    /// kvm or TCG.
    pub accel: Accel,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// The kernel to boot.
    pub kernel: PathBuf,
    /// The initrd.
    pub initrd: PathBuf,
    /// The kernel command line.
    pub cmdline: String,
    /// The qcow2 overlay (the guest's persistent disk).
    pub overlay: PathBuf,
    /// The raw swap disk, if any.
    pub swap: Option<PathBuf>,
    /// The raw seed disk.
    pub seed: PathBuf,
    /// NICs in order.
    pub nics: Vec<DomainNic>,
    /// Where the serial console is logged.
    pub console_log: PathBuf,
}

impl DomainDef {
    /// The NICs for `vm` plugged into `segments` (with their backings), in order.
    pub fn nics_for(vm: &str, segments: &[(String, SegmentBacking)]) -> Vec<DomainNic> {
        segments
            .iter()
            .enumerate()
            .map(|(i, (segment, backing))| DomainNic {
                segment: segment.clone(),
                backing: backing.clone(),
                mac: nic_mac(vm, i),
            })
            .collect()
    }

    /// The libvirt domain XML.
    pub fn to_xml(&self) -> String {
        let p = |path: &Path| xml_escape(&path.to_string_lossy());
        let mut x = String::new();
        let _ = writeln!(x, "<domain type='{}'>", self.accel.domain_type());
        let _ = writeln!(x, "  <name>{}</name>", xml_escape(&domain_name(&self.vm)));
        let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", self.memory_mib);
        let _ = writeln!(x, "  <vcpu>{}</vcpu>", self.cpus);
        x.push_str("  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n");
        let _ = writeln!(x, "    <kernel>{}</kernel>", p(&self.kernel));
        let _ = writeln!(x, "    <initrd>{}</initrd>", p(&self.initrd));
        let _ = writeln!(x, "    <cmdline>{}</cmdline>", xml_escape(&self.cmdline));
        x.push_str("  </os>\n  <features><acpi/></features>\n");
        if self.accel == Accel::Kvm {
            x.push_str("  <cpu mode='host-passthrough'/>\n");
        }
        x.push_str("  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>destroy</on_reboot>\n");
        x.push_str("  <on_crash>destroy</on_crash>\n  <devices>\n");
        disk(&mut x, &p(&self.overlay), "qcow2", "vda", "renkei-root", false);
        if let Some(swap) = &self.swap {
            disk(&mut x, &p(swap), "raw", "vdb", "renkei-swap", false);
        }
        disk(&mut x, &p(&self.seed), "raw", "vdc", "renkei-seed", true);
        for nic in &self.nics {
            let source = match &nic.backing {
                SegmentBacking::Isolated => {
                    format!(
                        "<interface type='network'>\n      <source network='{}'/>",
                        xml_escape(&network_name(&self.scope, &nic.segment))
                    )
                }
                SegmentBacking::Bridge { bridge } => {
                    format!("<interface type='bridge'>\n      <source bridge='{}'/>", xml_escape(bridge))
                }
            };
            let _ = writeln!(
                x,
                "    {source}\n      <mac address='{}'/>\n      <model type='virtio'/>\n      <rom enabled='no'/>\n    </interface>",
                xml_escape(&nic.mac)
            );
        }
        let _ = writeln!(
            x,
            "    <serial type='file'>\n      <source path='{}' append='off'/>\n      <target port='0'/>\n    </serial>",
            p(&self.console_log)
        );
        x.push_str("    <memballoon model='none'/>\n  </devices>\n</domain>\n");
        x
    }
}

fn disk(x: &mut String, path: &str, format: &str, dev: &str, serial: &str, readonly: bool) {
    let _ = writeln!(
        x,
        "    <disk type='file' device='disk'>\n      <driver name='qemu' type='{format}' cache='writeback'/>\n      \
         <source file='{path}'/>\n      <target dev='{dev}' bus='virtio'/>\n      <serial>{serial}</serial>{}\n    </disk>",
        if readonly { "\n      <readonly/>" } else { "" }
    );
}

/// Escapes the five XML special characters.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> DomainDef {
        DomainDef {
            vm: "vm1".into(),
            scope: String::new(),
            accel: Accel::Tcg,
            cpus: 2,
            memory_mib: 256,
            kernel: "/c/k".into(),
            initrd: "/c/i".into(),
            cmdline: "console=ttyS0 a<b".into(),
            overlay: "/v/overlay.qcow2".into(),
            swap: Some("/v/swap.raw".into()),
            seed: "/v/seed.tar".into(),
            nics: DomainDef::nics_for(
                "vm1",
                &[
                    ("a".into(), SegmentBacking::Isolated),
                    ("b".into(), SegmentBacking::Bridge { bridge: "br0".into() }),
                ],
            ),
            console_log: "/v/console.log".into(),
        }
    }

    #[test]
    fn xml_has_every_device_in_order() {
        let xml = def().to_xml();
        assert!(xml.starts_with("<domain type='qemu'>"));
        assert!(xml.contains("<name>renkei-vm1</name>"));
        assert!(xml.contains("<vcpu>2</vcpu>") && xml.contains("<memory unit='MiB'>256</memory>"));
        assert!(xml.contains("<cmdline>console=ttyS0 a&lt;b</cmdline>"));
        let order: Vec<usize> =
            ["renkei-root", "renkei-swap", "renkei-seed", "renkei-seg-a", "source bridge='br0'", "/v/console.log"]
                .iter()
                .map(|s| xml.find(s).unwrap_or_else(|| panic!("missing {s}")))
                .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{xml}");
        assert_eq!(xml.matches("<interface").count(), 2);
        assert_eq!(xml.matches("<readonly/>").count(), 1);
        assert!(xml.contains(&nic_mac("vm1", 1)));
    }

    #[test]
    fn kvm_and_no_swap() {
        let mut d = def();
        d.accel = Accel::Kvm;
        d.swap = None;
        let xml = d.to_xml();
        assert!(xml.starts_with("<domain type='kvm'>"));
        assert!(!xml.contains("renkei-swap"));
    }

    #[test]
    fn escapes_quotes() {
        assert_eq!(xml_escape("a'b\"c&"), "a&apos;b&quot;c&amp;");
    }
}
