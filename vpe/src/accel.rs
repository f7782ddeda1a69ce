//! Choosing the domain type: `kvm` only where KVM guests really run, else `qemu` (TCG).
//!
//! `/dev/kvm` existing is not enough: on some hosts (nested virtualisation
//! without the right CPU features) KVM guests hang forever after the
//! firmware. So the probe boots the image's kernel under KVM for a bounded
//! time, with `earlyprintk` on a serial file, and accepts KVM only if the
//! kernel's first line (`Linux version`) appears. A working KVM prints it in
//! well under a second. The decision is cached in a file keyed by the host's
//! boot id, so it is made once per host boot, not once per VM.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::command::{die_with_parent, kill_and_reap};

/// What the kernel prints first on its console.
const KERNEL_BANNER: &str = "Linux version";

/// The hypervisor acceleration a domain runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
    /// qemu's software emulation (TCG).
    Tcg,
}

impl Accel {
    /// The libvirt `<domain type=...>` value.
    pub fn domain_type(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "qemu",
        }
    }
}

/// The choice of acceleration and why it was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelDecision {
    /// The acceleration to use.
    pub accel: Accel,
    /// Why (shown in logs and `vpe accel`).
    pub reason: String,
    /// The host boot id the decision is valid for.
    pub boot_id: String,
}

/// How to probe for KVM.
#[derive(Debug, Clone)]
pub struct AccelProbe {
    /// The qemu system emulator.
    pub qemu: PathBuf,
    /// A kernel to boot for the probe (any x86_64 bzImage, e.g. the test image's).
    pub kernel: PathBuf,
    /// How long a KVM guest gets to print its banner.
    pub timeout: Duration,
    /// Where the decision is cached (`None`: never cached).
    pub cache_file: Option<PathBuf>,
}

impl AccelProbe {
    /// A probe booting `kernel` with the default qemu and a 5 s budget.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            qemu: PathBuf::from("qemu-system-x86_64"),
            kernel: kernel.into(),
            timeout: Duration::from_secs(5),
            cache_file: None,
        }
    }
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Decides between KVM and TCG (see the module docs); never takes much longer than `probe.timeout`.
pub fn detect(probe: &AccelProbe) -> AccelDecision {
    let boot_id = boot_id();
    if let Some(cached) = probe.cache_file.as_deref().and_then(read_cache) {
        if cached.boot_id == boot_id {
            return cached;
        }
    }
    let (accel, reason) = probe_kvm(probe);
    let decision = AccelDecision { accel, reason, boot_id };
    info!(accel = ?decision.accel, reason = %decision.reason, "acceleration decided");
    if let Some(path) = &probe.cache_file {
        if let Err(e) = toml::to_string(&decision).map_err(std::io::Error::other).and_then(|t| fs::write(path, t)) {
            warn!(path = %path.display(), error = %e, "cannot cache the acceleration decision");
        }
    }
    decision
}

fn read_cache(path: &Path) -> Option<AccelDecision> {
    toml::from_str(&fs::read_to_string(path).ok()?).ok()
}

fn probe_kvm(probe: &AccelProbe) -> (Accel, String) {
    if let Err(e) = fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return (Accel::Tcg, format!("/dev/kvm is not usable: {e}"));
    }
    let serial = match tempfile::NamedTempFile::new() {
        Ok(f) => f,
        Err(e) => return (Accel::Tcg, format!("cannot create a probe log: {e}")),
    };
    let start = Instant::now();
    let mut cmd = Command::new(&probe.qemu);
    let child = die_with_parent(&mut cmd)
        .args(["-accel", "kvm", "-machine", "pc", "-m", "128", "-nodefaults", "-display", "none"])
        .args(["-monitor", "none", "-no-reboot", "-kernel"])
        .arg(&probe.kernel)
        .args(["-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1", "-serial"])
        .arg(format!("file:{}", serial.path().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (Accel::Tcg, format!("cannot run {}: {e}", probe.qemu.display())),
    };
    let outcome = loop {
        let log = fs::read(serial.path()).unwrap_or_default();
        if String::from_utf8_lossy(&log).contains(KERNEL_BANNER) {
            break (Accel::Kvm, format!("a KVM guest booted its kernel in {:?}", start.elapsed()));
        }
        if let Ok(Some(status)) = child.try_wait() {
            break (Accel::Tcg, format!("the KVM probe guest exited ({status}) before printing anything"));
        }
        if start.elapsed() >= probe.timeout {
            break (Accel::Tcg, format!("a KVM guest printed nothing in {:?}: KVM hangs here", probe.timeout));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    kill_and_reap(&mut child);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_decision_for_this_boot_is_reused_without_probing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("accel.toml");
        let cached = AccelDecision { accel: Accel::Kvm, reason: "cached".into(), boot_id: boot_id() };
        fs::write(&cache, toml::to_string(&cached).unwrap()).unwrap();
        // The kernel and qemu do not exist: only the cache can answer Kvm.
        let probe = AccelProbe {
            qemu: "/nonexistent/qemu".into(),
            kernel: "/nonexistent/kernel".into(),
            timeout: Duration::from_millis(100),
            cache_file: Some(cache.clone()),
        };
        assert_eq!(detect(&probe), cached);
        // A decision from another boot is stale: re-probed (and qemu is missing, so TCG).
        let stale = AccelDecision { boot_id: "other-boot".into(), ..cached };
        fs::write(&cache, toml::to_string(&stale).unwrap()).unwrap();
        let fresh = detect(&probe);
        assert_eq!(fresh.accel, Accel::Tcg);
        assert_eq!(read_cache(&cache).unwrap(), fresh);
    }

    #[test]
    fn domain_types() {
        assert_eq!(Accel::Kvm.domain_type(), "kvm");
        assert_eq!(Accel::Tcg.domain_type(), "qemu");
    }
}
