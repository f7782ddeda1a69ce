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
use crate::image::{self, ImageManifest, ImageSource, Role};
use crate::lifecycle::{Action, Event, Lifecycle, VmState};
use crate::network::{network_name, network_xml, SegmentBacking};
use crate::seed;
use crate::spec::VmSpec;

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
                && self.hv.ensure_network(&network_name(segment), &network_xml(segment))?
            {
                info!(segment, "created isolated segment network");
            }
        }
        let def = DomainDef {
            vm: spec.name.clone(),
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

    /// Records a failure, performs its cleanup, and returns the original error.
    fn fail(&mut self, spec: &VmSpec, lifecycle: &mut Lifecycle, error: VmError) -> VmError {
        warn!(vm = %spec.name, %error, "VM failed; cleaning up");
        match lifecycle.on(Event::Fail(error.to_string()), Instant::now()) {
            Ok(actions) => {
                if let Err(cleanup) = self.perform(spec, &actions) {
                    warn!(vm = %spec.name, error = %cleanup, "cleanup after failure also failed");
                }
            }
            Err(e) => warn!(vm = %spec.name, error = %e, "no cleanup for this failure"),
        }
        error
    }

    /// Performs teardown actions. Every action is attempted; the first error is returned.
    fn perform(&self, spec: &VmSpec, actions: &[Action]) -> Result<(), VmError> {
        let mut first_error = None;
        for action in actions {
            let result = match action {
                Action::DestroyDomain => self.hv.destroy(&domain_name(&spec.name)).map_err(VmError::from),
                Action::RemoveFiles => {
                    let dir = self.vm_dir(&spec.name);
                    match fs::remove_dir_all(&dir) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(VmError::Io { path: dir, source: e }),
                        _ => Ok(()),
                    }
                }
                Action::ReleaseNetworks => self.release_networks(spec),
                Action::Stage | Action::StartDomain | Action::WatchConsole => Ok(()),
            };
            if let Err(e) = result {
                warn!(vm = %spec.name, ?action, error = %e, "teardown step failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Removes the isolated networks of `spec`'s segments that no other VM here uses.
    fn release_networks(&self, spec: &VmSpec) -> Result<(), VmError> {
        for nic in &spec.nics {
            if self.config.backing(&nic.segment) != SegmentBacking::Isolated {
                continue;
            }
            let in_use = self.vms.values().any(|vm| {
                vm.record.spec.name != spec.name && vm.record.spec.nics.iter().any(|n| n.segment == nic.segment)
            });
            if !in_use {
                self.hv.remove_network(&network_name(&nic.segment))?;
            }
        }
        Ok(())
    }

    /// Destroys VM `name` and removes every local file it had.
    pub fn stop(&mut self, name: &str) -> Result<(), VmError> {
        let mut vm = self.vms.remove(name).ok_or_else(|| VmError::Unknown(name.to_string()))?;
        let actions = vm.lifecycle.on(Event::Stop, Instant::now())?;
        match self.perform(&vm.record.spec, &actions) {
            Ok(()) => {
                vm.lifecycle.on(Event::Cleaned, Instant::now())?;
                info!(vm = name, "VM stopped and removed");
                Ok(())
            }
            Err(e) => {
                let _ = vm.lifecycle.on(Event::Fail(e.to_string()), Instant::now());
                vm.record.state = vm.lifecycle.state();
                self.vms.insert(name.to_string(), vm);
                Err(e)
            }
        }
    }

    /// Writes VM `name`'s current disk, flattened over its base, as a new
    /// sealed image in `dest` (kernel and initrd copied from the cache).
    /// The guest is paused while its disk is copied, then resumed.
    pub fn save(&mut self, name: &str, dest: &Path) -> Result<ImageManifest, VmError> {
        let vm = self.vms.get(name).ok_or_else(|| VmError::Unknown(name.to_string()))?;
        if !vm.lifecycle.can_save() {
            return Err(crate::error::TransitionError {
                state: vm.lifecycle.state().to_string(),
                event: "Save".into(),
            }
            .into());
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
        manifest.store(dest).map_err(crate::error::CacheError::from)?;
        let sealed = image::seal(dest).map_err(crate::error::CacheError::from)?;
        info!(vm = name, dest = %dest.display(), "disk saved as a new image");
        Ok(sealed)
    }

    /// The serial console log of VM `name`.
    pub fn console_log(&self, name: &str) -> Result<PathBuf, VmError> {
        self.get(name).map(|r| r.console_log.clone()).ok_or_else(|| VmError::Unknown(name.to_string()))
    }

    /// Removes what a crashed agent may have left: renkei domains and VM
    /// directories without a record, and segment networks no VM uses.
    /// Returns what was removed.
    pub fn reap_orphans(&mut self) -> Result<Vec<String>, VmError> {
        let mut removed = Vec::new();
        for domain in self.hv.list()? {
            let known = self.vms.keys().any(|name| domain_name(name) == domain);
            if !known {
                self.hv.destroy(&domain)?;
                removed.push(domain);
            }
        }
        let vms_dir = self.config.vms_dir();
        for entry in fs::read_dir(&vms_dir).map_err(VmError::io(&vms_dir))? {
            let entry = entry.map_err(VmError::io(&vms_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !self.vms.contains_key(&name) {
                fs::remove_dir_all(entry.path()).map_err(VmError::io(&entry.path()))?;
                removed.push(entry.path().display().to_string());
            }
        }
        for network in self.hv.list_networks()? {
            let used =
                self.vms.values().any(|vm| vm.record.spec.nics.iter().any(|n| network_name(&n.segment) == network));
            if !used {
                self.hv.remove_network(&network)?;
                removed.push(network);
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::error::{CacheError, HypervisorError};
    use crate::hypervisor::fake::{FakeHypervisor, Faults};
    use crate::image::{seal, LocalDirSource, MANIFEST_FILE};
    use crate::spec::NicSpec;

    struct Env {
        _dir: tempfile::TempDir,
        image: LocalDirSource,
        config: HostConfig,
    }

    fn env() -> Env {
        // Not a skip: these tests need the real qemu-img, which every PoP has.
        assert!(
            Command::new("qemu-img").arg("--version").output().is_ok(),
            "qemu-img is missing: apt-get install qemu-utils"
        );
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("image");
        fs::create_dir(&img).unwrap();
        fs::write(img.join("kernel"), b"k").unwrap();
        fs::write(img.join("initrd"), b"i").unwrap();
        fs::write(img.join("disk"), vec![0u8; 1 << 20]).unwrap();
        fs::write(
            img.join(MANIFEST_FILE),
            "name = \"t\"\ncmdline = \"console=ttyS0\"\n[files]\nkernel = \"kernel\"\ninitrd = \"initrd\"\ndisk = \"disk\"\n",
        )
        .unwrap();
        seal(&img).unwrap();
        let mut config = HostConfig::new(dir.path().join("state"));
        config.accel = crate::config::AccelMode::Tcg;
        config.boot_timeout_secs = 1;
        Env { image: LocalDirSource::open(&img).unwrap(), config, _dir: dir }
    }

    fn spec(name: &str, segments: &[&str]) -> VmSpec {
        let mut spec = VmSpec::new(name);
        spec.ssh_keys = vec!["ssh-ed25519 AAAA test".into()];
        spec.nics = segments
            .iter()
            .enumerate()
            .map(|(i, s)| NicSpec { segment: s.to_string(), address: format!("10.{i}.0.5/24").parse().unwrap() })
            .collect();
        spec
    }

    fn leftovers(host: &VmHost<FakeHypervisor>) -> (usize, usize, usize) {
        let s = host.hv.state.lock().unwrap();
        (s.domains.len(), s.networks.len(), fs::read_dir(host.config.vms_dir()).unwrap().count())
    }

    #[test]
    fn run_then_stop_leaves_nothing_and_reports_timings() {
        let env = env();
        let mut host = VmHost::open(env.config.clone(), FakeHypervisor::default()).unwrap();
        let report = host.run(&spec("a", &["s1", "s2"]), &env.image).unwrap();
        assert_eq!(report.record.state, VmState::Running);
        assert_eq!(report.record.timings.fetched_bytes, 2 + (1 << 20));
        assert_eq!(report.record.timings.guest_boot, Some(Duration::from_millis(1500)));
        let dir = host.vm_dir("a");
        for f in ["overlay.qcow2", "swap.raw", "seed.tar", "console.log", "domain.xml", "vm.toml"] {
            assert!(dir.join(f).exists(), "{f}");
        }
        assert_eq!(leftovers(&host), (1, 2, 1));
        // A second VM of the same image moves no bytes.
        let second = host.run(&spec("b", &["s1"]), &env.image).unwrap();
        assert_eq!(second.record.timings.fetched_bytes, 0);
        // A fresh host (agent restart) finds both VMs from their records.
        drop(host);
        let mut host = VmHost::open(env.config.clone(), FakeHypervisor::default()).unwrap();
        assert_eq!(host.list().len(), 2);
        host.hv.state.lock().unwrap().domains =
            ["renkei-a", "renkei-b"].iter().map(|n| (n.to_string(), (String::new(), DomainState::Running))).collect();
        host.hv.state.lock().unwrap().networks =
            ["renkei-seg-s1", "renkei-seg-s2"].iter().map(|n| (n.to_string(), String::new())).collect();
        host.stop("a").unwrap();
        // s1 is still used by b; s2 is released.
        assert_eq!(host.hv.list_networks().unwrap(), vec!["renkei-seg-s1"]);
        host.stop("b").unwrap();
        assert_eq!(leftovers(&host), (0, 0, 0));
        assert!(matches!(host.stop("b"), Err(VmError::Unknown(_))));
    }

    fn assert_failed_cleanly(faults: Faults, check: impl Fn(&VmError) -> bool) {
        let env = env();
        let mut host = VmHost::open(env.config.clone(), FakeHypervisor::with_faults(faults)).unwrap();
        let err = host.run(&spec("bad", &["s1"]), &env.image).unwrap_err();
        assert!(check(&err), "unexpected error: {err}");
        assert_eq!(leftovers(&host), (0, 0, 0), "left behind after: {err}");
        assert!(host.list().is_empty());
    }

    #[test]
    fn rejected_definition_leaves_nothing() {
        assert_failed_cleanly(Faults { reject_define: true, ..Faults::default() }, |e| {
            matches!(e, VmError::Hypervisor(HypervisorError::Definition { .. }))
        });
    }

    #[test]
    fn failed_start_leaves_nothing() {
        assert_failed_cleanly(Faults { fail_start: true, ..Faults::default() }, |e| {
            matches!(e, VmError::Hypervisor(HypervisorError::Operation { operation: "start", .. }))
        });
    }

    #[test]
    fn unreachable_libvirt_is_a_clear_error_and_leaves_nothing() {
        assert_failed_cleanly(Faults { unreachable: true, ..Faults::default() }, |e| {
            e.to_string().contains("is libvirtd running?")
        });
    }

    #[test]
    fn guest_that_never_boots_times_out_and_is_torn_down() {
        assert_failed_cleanly(Faults { silent_guest: true, ..Faults::default() }, |e| {
            matches!(e, VmError::Console(crate::error::ConsoleError::BootTimeout { .. }))
        });
    }

    #[test]
    fn guest_that_dies_is_noticed_before_the_boot_deadline() {
        let start = Instant::now();
        assert_failed_cleanly(Faults { guest_crashes: true, ..Faults::default() }, |e| {
            matches!(e, VmError::Console(crate::error::ConsoleError::GuestStopped { .. }))
        });
        assert!(start.elapsed() < Duration::from_millis(900), "waited for the deadline anyway");
    }

    #[test]
    fn corrupt_image_is_never_defined() {
        let env = env();
        fs::write(env.image.dir().join("disk"), vec![1u8; 1 << 20]).unwrap();
        let mut host = VmHost::open(env.config.clone(), FakeHypervisor::default()).unwrap();
        let err = host.run(&spec("c", &[]), &env.image).unwrap_err();
        assert!(matches!(err, VmError::Cache(CacheError::HashMismatch { .. })), "{err}");
        assert!(!host.hv.state.lock().unwrap().calls.iter().any(|c| c.starts_with("define")));
        assert_eq!(leftovers(&host), (0, 0, 0));
    }

    #[test]
    fn duplicate_names_and_bad_specs_are_refused_before_anything_happens() {
        let env = env();
        let mut host = VmHost::open(env.config.clone(), FakeHypervisor::default()).unwrap();
        host.run(&spec("dup", &[]), &env.image).unwrap();
        assert!(matches!(host.run(&spec("dup", &[]), &env.image), Err(VmError::Exists(_))));
        let mut bad = spec("x", &[]);
        bad.name = "../etc".into();
        assert!(matches!(host.run(&bad, &env.image), Err(VmError::Spec(_))));
        assert_eq!(fs::read_dir(host.config.vms_dir()).unwrap().count(), 1);
    }

    #[test]
    fn save_pauses_flattens_resumes_and_seals() {
        let env = env();
        let mut host = VmHost::open(env.config.clone(), FakeHypervisor::default()).unwrap();
        host.run(&spec("s", &[]), &env.image).unwrap();
        let dest = env.config.state_dir.join("saved");
        let manifest = host.save("s", &dest).unwrap();
        assert!(manifest.is_sealed());
        assert_eq!(fs::read(dest.join("disk")).unwrap(), vec![0u8; 1 << 20]);
        let calls = host.hv.state.lock().unwrap().calls.clone();
        let pause = calls.iter().position(|c| c == "pause renkei-s").unwrap();
        let resume = calls.iter().position(|c| c == "resume renkei-s").unwrap();
        assert!(pause < resume);
        assert!(LocalDirSource::open(&dest).is_ok());
        assert!(matches!(host.save("nope", &dest), Err(VmError::Unknown(_))));
    }

    #[test]
    fn orphans_of_a_crashed_agent_are_reaped() {
        let env = env();
        let mut host = VmHost::open(env.config.clone(), FakeHypervisor::default()).unwrap();
        host.hv.define("renkei-ghost", "<domain/>").unwrap();
        host.hv.ensure_network("renkei-seg-old", "<network/>").unwrap();
        fs::create_dir(host.config.vms_dir().join("half-staged")).unwrap();
        let removed = host.reap_orphans().unwrap();
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert_eq!(leftovers(&host), (0, 0, 0));
    }
}
