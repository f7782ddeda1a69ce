//! Unit tests of VmHost against the fake hypervisor (and the real qemu-img).

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
    let serial = |dir: &Path| {
        format!("<domain><serial type='file'><source path='{}/console.log'/></serial></domain>", dir.display())
    };
    host.hv.define("renkei-ghost", &serial(&host.config.vms_dir().join("ghost"))).unwrap();
    host.hv.ensure_network("renkei-seg-old", "<network/>").unwrap();
    fs::create_dir(host.config.vms_dir().join("half-staged")).unwrap();
    // Another PoP on the same libvirtd: its domain and its scoped network stay.
    host.hv.define("renkei-neighbour", &serial(Path::new("/srv/other-pop/vms/neighbour"))).unwrap();
    host.hv.ensure_network("renkei-seg-pop2:lab", "<network/>").unwrap();
    let removed = host.reap_orphans().unwrap();
    assert_eq!(removed.len(), 3, "{removed:?}");
    assert_eq!(leftovers(&host), (1, 1, 0));
    assert_eq!(host.hv.list().unwrap(), vec!["renkei-neighbour"]);
}

#[test]
fn scoped_pops_name_their_own_networks() {
    let env = env();
    let mut config = env.config.clone();
    config.scope = "pop7".into();
    let mut host = VmHost::open(config, FakeHypervisor::default()).unwrap();
    host.hv.ensure_network("renkei-seg-s1", "<network/>").unwrap();
    host.run(&spec("a", &["s1"]), &env.image).unwrap();
    let xml = fs::read_to_string(host.vm_dir("a").join("domain.xml")).unwrap();
    assert!(xml.contains("<source network='renkei-seg-pop7:s1'/>"), "{xml}");
    assert_eq!(host.hv.list_networks().unwrap(), vec!["renkei-seg-pop7:s1", "renkei-seg-s1"]);
    host.stop("a").unwrap();
    assert_eq!(host.hv.list_networks().unwrap(), vec!["renkei-seg-s1"], "an unscoped PoP's network was touched");
}
