//! [`VmHost`]: one PoP's VMs — run, stop, save, list — driving the
//! [`Lifecycle`] state machine against a [`Hypervisor`].
//!
//! Per-VM files live in `<state>/vms/<name>/`:
//!
//! ```text
//! overlay.qcow2   copy-on-write over <state>/cache/<image>/disk
//! swap.raw        sparse swap disk (the guest runs mkswap)
//! seed.tar        the seed disk (see crate::seed)
//! console.log     the serial console
//! domain.xml      the domain as defined (for humans)
//! vm.toml         the VM's record, written once it runs
//! ```
//!
//! Stopping a VM, or any failure while starting one, destroys its domain,
//! removes that whole directory and removes segment networks no other VM
//! on this PoP uses. The API is blocking; an async agent calls it from a
//! blocking thread.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::accel::{self, Accel, AccelDecision, AccelProbe};
use crate::cache::{CachedImage, ImageCache};
use crate::config::{vm_dir, HostConfig};
use crate::console::{self, ConsoleReport};
use crate::disk;
use crate::domain::{domain_name, DomainDef};
use crate::error::VmError;
use crate::hypervisor::{DomainState, Hypervisor};
use crate::image::{ImageSource, Role};
use crate::lifecycle::{Event, Lifecycle, VmState};
use crate::network::{network_name, network_xml, SegmentBacking};
use crate::seed;
use crate::spec::VmSpec;

mod save;
mod teardown;
#[cfg(test)]
mod tests;

/// How long one boot took, and where the time went.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Timings {
    /// From the run request to the domain started (includes `fetch`).
    pub prepare: Duration,
    /// Fetching and verifying the image into the cache (≈0 when cached).
    pub fetch: Duration,
    /// From the domain started to the guest's boot marker.
    pub boot: Duration,
    /// The guest's own uptime at its boot marker (kernel + init).
    pub guest_boot: Option<Duration>,
    /// Image bytes moved from the source (0 when cached).
    pub fetched_bytes: u64,
}

/// A VM as recorded on the PoP (`vm.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmRecord {
    /// What was asked for.
    pub spec: VmSpec,
    /// The image's content id.
    pub image: String,
    /// The acceleration it runs with.
    pub accel: Accel,
    /// Its state when last recorded.
    pub state: VmState,
    /// Its boot timings.
    pub timings: Timings,
    /// Its serial console log.
    pub console_log: PathBuf,
}

/// What `run` returns.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The VM's record.
    pub record: VmRecord,
    /// What the guest printed on its console by the boot marker.
    pub console: ConsoleReport,
}

struct Vm {
    record: VmRecord,
    lifecycle: Lifecycle,
}

/// Local files being prepared for a VM.
struct Prepared {
    image: CachedImage,
    overlay: PathBuf,
    swap: Option<PathBuf>,
    seed: PathBuf,
    console_log: PathBuf,
    fetch: Duration,
    fetched_bytes: u64,
}

/// The VMs of one PoP.
pub struct VmHost<H: Hypervisor> {
    config: HostConfig,
    hv: H,
    cache: ImageCache,
    accel: Option<AccelDecision>,
    vms: BTreeMap<String, Vm>,
}

fn make_dir(path: &Path) -> Result<(), VmError> {
    fs::create_dir_all(path).map_err(VmError::io(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(VmError::io(path))
}

impl<H: Hypervisor> VmHost<H> {
    /// Opens the PoP's state directory and loads the records of VMs that run.
    pub fn open(config: HostConfig, hv: H) -> Result<Self, VmError> {
        make_dir(&config.state_dir)?;
        make_dir(&config.vms_dir())?;
        let cache = ImageCache::open(config.cache_dir())?;
        let mut vms = BTreeMap::new();
        let vms_dir = config.vms_dir();
        for entry in fs::read_dir(&vms_dir).map_err(VmError::io(&vms_dir))? {
            let path = entry.map_err(VmError::io(&vms_dir))?.path().join("vm.toml");
            let Ok(text) = fs::read_to_string(&path) else { continue };
            match toml::from_str::<VmRecord>(&text) {
                Ok(record) => {
                    // Re-enter the recorded state; its timings are in the record.
                    let mut lifecycle = Lifecycle::new(Instant::now());
                    for event in [Event::Run, Event::Staged, Event::Booted] {
                        let _ = lifecycle.on(event, Instant::now());
                    }
                    vms.insert(record.spec.name.clone(), Vm { record, lifecycle });
                }
                Err(e) => warn!(path = %path.display(), error = %e, "unreadable VM record ignored"),
            }
        }
        Ok(Self { config, hv, cache, accel: None, vms })
    }

    /// The image cache.
    pub fn cache(&self) -> &ImageCache {
        &self.cache
    }

    /// The hypervisor.
    pub fn hypervisor(&self) -> &H {
        &self.hv
    }

    /// The configuration.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// The acceleration decision, probing with `kernel` the first time.
    pub fn accel(&mut self, kernel: &Path) -> &AccelDecision {
        let config = &self.config;
        self.accel.get_or_insert_with(|| match config.accel.forced() {
            Some(accel) => AccelDecision { accel, reason: "forced by configuration".into(), boot_id: String::new() },
            None => accel::detect(&AccelProbe {
                qemu: config.qemu.clone(),
                kernel: kernel.to_path_buf(),
                timeout: Duration::from_secs(config.accel_probe_secs),
                cache_file: Some(config.accel_cache()),
            }),
        })
    }

    /// The records of every VM on this PoP.
    pub fn list(&self) -> Vec<VmRecord> {
        self.vms.values().map(|vm| vm.record.clone()).collect()
    }

    /// The record of VM `name`.
    pub fn get(&self, name: &str) -> Option<&VmRecord> {
        self.vms.get(name).map(|vm| &vm.record)
    }

    fn vm_dir(&self, name: &str) -> PathBuf {
        vm_dir(&self.config.vms_dir(), name)
    }

    /// Stages the image of `source`, starts a VM from it and waits (bounded)
    /// for the guest's boot marker. On any failure everything made so far is
    /// removed and the error says what failed.
    pub fn run(&mut self, spec: &VmSpec, source: &dyn ImageSource) -> Result<RunReport, VmError> {
        spec.validate()?;
        let domain = domain_name(&spec.name);
        if self.vms.contains_key(&spec.name) || self.hv.state(&domain)?.is_some() || self.vm_dir(&spec.name).exists() {
            return Err(VmError::Exists(spec.name.clone()));
        }
        let mut lifecycle = Lifecycle::new(Instant::now());
        lifecycle.on(Event::Run, Instant::now())?;
        let prepared = match self.prepare(spec, source) {
            Ok(p) => p,
            Err(e) => return Err(self.fail(spec, &mut lifecycle, e)),
        };
        let accel = self.accel(&prepared.image.path(Role::Kernel)).accel;
        lifecycle.on(Event::Staged, Instant::now())?;
        let booted = self.start_domain(spec, &prepared, accel).and_then(|()| {
            let hv = &self.hv;
            console::wait_for_boot(&prepared.console_log, self.config.boot_timeout(), || {
                matches!(hv.state(&domain), Ok(Some(DomainState::Running | DomainState::Paused)))
            })
            .map_err(VmError::from)
        });
        let console = match booted {
            Ok(report) => report,
            Err(e) => return Err(self.fail(spec, &mut lifecycle, e)),
        };
        lifecycle.on(Event::Booted, Instant::now())?;
        let timings = Timings {
            prepare: lifecycle.prepare_time().unwrap_or_default(),
            fetch: prepared.fetch,
            boot: lifecycle.boot_time().unwrap_or_default(),
            guest_boot: console.guest_boot,
            fetched_bytes: prepared.fetched_bytes,
        };
        let record = VmRecord {
            spec: spec.clone(),
            image: prepared.image.id.to_string(),
            accel,
            state: lifecycle.state(),
            timings,
            console_log: prepared.console_log.clone(),
        };
        let path = self.vm_dir(&spec.name).join("vm.toml");
        let written = toml::to_string(&record)
            .map_err(std::io::Error::other)
            .and_then(|text| fs::write(&path, text))
            .map_err(VmError::io(&path));
        if let Err(e) = written {
            return Err(self.fail(spec, &mut lifecycle, e));
        }
        info!(vm = %spec.name, image = %record.image, ?timings, "VM running");
        self.vms.insert(spec.name.clone(), Vm { record: record.clone(), lifecycle });
        Ok(RunReport { record, console })
    }

    /// Stage: image into the cache, then the VM's overlay, swap and seed.
    fn prepare(&mut self, spec: &VmSpec, source: &dyn ImageSource) -> Result<Prepared, VmError> {
        let staged = self.cache.stage(source)?;
        let dir = self.vm_dir(&spec.name);
        make_dir(&dir)?;
        let overlay = dir.join("overlay.qcow2");
        disk::create_overlay(&staged.image.path(Role::Disk), &overlay)?;
        let swap = if spec.swap_mib > 0 {
            let path = dir.join("swap.raw");
            disk::create_swap(&path, spec.swap_mib)?;
            Some(path)
        } else {
            None
        };
        let seed = dir.join("seed.tar");
        seed::write_seed(spec, &seed)?;
        Ok(Prepared {
            image: staged.image,
            overlay,
            swap,
            seed,
            console_log: dir.join("console.log"),
            fetch: staged.fetch_time,
            fetched_bytes: staged.fetched_bytes,
        })
    }

    fn start_domain(&self, spec: &VmSpec, p: &Prepared, accel: Accel) -> Result<(), VmError> {
        let segments: Vec<(String, SegmentBacking)> =
            spec.nics.iter().map(|n| (n.segment.clone(), self.config.backing(&n.segment))).collect();
        for (segment, backing) in &segments {
            if *backing == SegmentBacking::Isolated
                && self.hv.ensure_network(
                    &network_name(&self.config.scope, segment),
                    &network_xml(&self.config.scope, segment),
                )?
            {
                info!(segment, "created isolated segment network");
            }
        }
        let def = DomainDef {
            vm: spec.name.clone(),
            scope: self.config.scope.clone(),
            accel,
            cpus: spec.cpus,
            memory_mib: spec.memory_mib,
            kernel: p.image.path(Role::Kernel),
            initrd: p.image.path(Role::Initrd),
            cmdline: p.image.manifest.cmdline.clone(),
            overlay: p.overlay.clone(),
            swap: p.swap.clone(),
            seed: p.seed.clone(),
            nics: DomainDef::nics_for(&spec.name, &segments),
            console_log: p.console_log.clone(),
        };
        let xml = def.to_xml();
        let xml_path = self.vm_dir(&spec.name).join("domain.xml");
        fs::write(&xml_path, &xml).map_err(VmError::io(&xml_path))?;
        let domain = domain_name(&spec.name);
        self.hv.define(&domain, &xml)?;
        self.hv.start(&domain)?;
        Ok(())
    }

    /// The serial console log of VM `name`.
    pub fn console_log(&self, name: &str) -> Result<PathBuf, VmError> {
        self.get(name).map(|r| r.console_log.clone()).ok_or_else(|| VmError::Unknown(name.to_string()))
    }
}
