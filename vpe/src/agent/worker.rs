//! The thread that owns this PoP's [`VmHost`].
//!
//! `VmHost` is blocking and takes `&mut self`, so one dedicated thread owns
//! it and does jobs in order (a run stages and boots, which takes seconds;
//! a stop or save sent meanwhile waits its turn). Async callers send a
//! [`Job`] and await its answer. After each job the thread publishes a
//! [`Snapshot`] (VMs, cache, acceleration, problems) that heartbeats and
//! console reads use without waiting for the thread.
//!
//! libvirt is connected lazily: if libvirtd is down, the agent still runs,
//! reports the problem, and every job retries the connection and fails with
//! libvirt's error until it is back.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc};

use fs_client::Client;
use fs_proto::vpe::{PopRun, PopSaved, PopStarted, Timings};
use fs_proto::{ErrorCode, RemoteError};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use crate::accel::Accel;
use crate::error::{CacheError, CommandError, HypervisorError, SourceError, VmError};
use crate::image::{ImageId, Role};
use crate::store::transfer::LocalImage;
use crate::store::NamespaceSource;
use crate::{HostConfig, Libvirt, NicSpec, SeedFile, VmHost, VmSpec};

/// What the worker thread does.
pub(crate) enum Job {
    Run(Box<PopRun>, oneshot::Sender<Result<PopStarted, RemoteError>>),
    Stop(String, oneshot::Sender<Result<(), RemoteError>>),
    Save(String, String, oneshot::Sender<Result<PopSaved, RemoteError>>),
    StopAll(oneshot::Sender<()>),
    Refresh,
}

/// One VM as the snapshot shows it.
#[derive(Debug, Clone)]
pub(crate) struct VmView {
    pub(crate) name: String,
    pub(crate) state: String,
    pub(crate) console_log: PathBuf,
}

/// What the worker last published.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    pub(crate) vms: Vec<VmView>,
    pub(crate) accel: Option<String>,
    pub(crate) cached_images: Vec<String>,
    pub(crate) problems: Vec<String>,
}

/// The handle async code holds.
#[derive(Clone)]
pub(crate) struct Worker {
    jobs: mpsc::Sender<Job>,
    /// `None` until the thread has tried libvirt once and published.
    snapshot: watch::Receiver<Option<Snapshot>>,
    pub(crate) fetched: Arc<AtomicU64>,
}

fn gone() -> RemoteError {
    RemoteError::new(ErrorCode::Unavailable, "the PoP's VM worker has stopped")
}

/// The wire error for a VM failure: a code from the closed set, and the full message.
pub(crate) fn vm_error(e: &VmError) -> RemoteError {
    let code = match e {
        VmError::Spec(_) => ErrorCode::InvalidArgument,
        VmError::Cache(CacheError::HashMismatch { .. }) => ErrorCode::Corrupt,
        VmError::Cache(CacheError::Source(SourceError::Manifest { .. })) => ErrorCode::Corrupt,
        VmError::Cache(CacheError::Source(SourceError::Fetch { reason, .. })) if reason.contains("corrupt") => {
            ErrorCode::Corrupt
        }
        VmError::Cache(CacheError::Source(SourceError::Fetch { .. })) => ErrorCode::Unavailable,
        VmError::Hypervisor(HypervisorError::Unreachable { .. }) => ErrorCode::Unavailable,
        VmError::Hypervisor(HypervisorError::Definition { .. }) => ErrorCode::InvalidArgument,
        VmError::Exists(_) => ErrorCode::Exists,
        VmError::Unknown(_) => ErrorCode::NotFound,
        VmError::Transition(_) => ErrorCode::Busy,
        VmError::Command(CommandError::Missing { .. }) => ErrorCode::Unsupported,
        _ => ErrorCode::Internal,
    };
    RemoteError::new(code, e.to_string())
}

impl Worker {
    /// Starts the thread. `handle` runs the namespace client's calls.
    pub(crate) fn spawn(config: HostConfig, probe_kernel: Option<PathBuf>, client: Client, handle: Handle) -> Self {
        let (jobs, rx) = mpsc::channel();
        let (published, snapshot) = watch::channel(None);
        let fetched = Arc::new(AtomicU64::new(0));
        let mut thread = Thread {
            config,
            client,
            handle,
            host: None,
            accel: None,
            problem: None,
            published,
            fetched: fetched.clone(),
        };
        std::thread::Builder::new()
            .name("vpe-host".into())
            .spawn(move || thread.main(rx, probe_kernel))
            .expect("spawning the VM host thread");
        Self { jobs, snapshot, fetched }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, RemoteError>>) -> Job,
    ) -> Result<T, RemoteError> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(make(tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    pub(crate) async fn run(&self, run: PopRun) -> Result<PopStarted, RemoteError> {
        self.ask(|tx| Job::Run(Box::new(run), tx)).await
    }

    pub(crate) async fn stop(&self, name: String) -> Result<(), RemoteError> {
        self.ask(|tx| Job::Stop(name, tx)).await
    }

    pub(crate) async fn save(&self, name: String, dest: String) -> Result<PopSaved, RemoteError> {
        self.ask(|tx| Job::Save(name, dest, tx)).await
    }

    /// Stops every VM (bounded by the caller).
    pub(crate) async fn stop_all(&self) {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Job::StopAll(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Asks the thread to retry libvirt (if down) and republish its snapshot.
    pub(crate) fn refresh(&self) {
        let _ = self.jobs.send(Job::Refresh);
    }

    /// The last published snapshot (empty before the first).
    pub(crate) fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone().unwrap_or_default()
    }

    /// Waits until the thread has tried libvirt once and published what it
    /// found, so the first report a manager sees already names a missing
    /// libvirtd (a default snapshot would claim a healthy PoP).
    pub(crate) async fn first_snapshot(&self) {
        let mut rx = self.snapshot.clone();
        let _ = rx.wait_for(Option::is_some).await;
    }
}

struct Thread {
    config: HostConfig,
    client: Client,
    handle: Handle,
    host: Option<VmHost<Libvirt>>,
    accel: Option<Accel>,
    problem: Option<String>,
    published: watch::Sender<Option<Snapshot>>,
    fetched: Arc<AtomicU64>,
}

fn accel_name(a: Accel) -> String {
    match a {
        Accel::Kvm => "kvm".into(),
        Accel::Tcg => "tcg".into(),
    }
}

/// The first ancestor of `dir` that others (the qemu user) cannot traverse.
fn untraversable(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .skip(1)
        .find(|a| fs::metadata(a).map(|m| m.permissions().mode() & 0o001 == 0).unwrap_or(false))
        .map(Path::to_path_buf)
}

impl Thread {
    fn main(&mut self, rx: mpsc::Receiver<Job>, probe_kernel: Option<PathBuf>) {
        let saving = self.config.state_dir.join("saving");
        let _ = fs::remove_dir_all(&saving);
        // Publish what libvirt said before the (possibly slow) acceleration
        // probe: the agent registers with the manager only after this.
        let connected = self.host().is_ok();
        self.publish();
        if connected {
            if let Some(kernel) = probe_kernel {
                self.probe(&kernel);
                self.publish();
            }
        }
        while let Ok(job) = rx.recv() {
            match job {
                Job::Run(run, tx) => {
                    let r = self.run(&run);
                    fs_proto::process::crash_point("vpe.agent.run.started");
                    self.publish();
                    let _ = tx.send(r);
                }
                Job::Stop(name, tx) => {
                    let r = self.with_host(|h| h.stop(&name));
                    self.publish();
                    let _ = tx.send(r);
                }
                Job::Save(name, dest, tx) => {
                    let _ = tx.send(self.save(&name, &dest));
                }
                Job::StopAll(tx) => {
                    if let Some(host) = self.host.as_mut() {
                        for vm in host.list() {
                            match host.stop(&vm.spec.name) {
                                Ok(()) => info!(vm = %vm.spec.name, "stopped at agent exit"),
                                Err(e) => warn!(vm = %vm.spec.name, error = %e, "cannot stop at agent exit"),
                            }
                        }
                    }
                    self.publish();
                    let _ = tx.send(());
                }
                Job::Refresh => {
                    if self.host.is_none() {
                        let _ = self.host();
                    }
                    self.publish();
                }
            }
        }
    }

    /// The VM host, connecting to libvirt (and reaping orphans) if needed.
    fn host(&mut self) -> Result<&mut VmHost<Libvirt>, VmError> {
        if self.host.is_none() {
            let opened = Libvirt::connect(&self.config.libvirt_uri)
                .map_err(VmError::from)
                .and_then(|lv| VmHost::open(self.config.clone(), lv));
            match opened {
                Ok(mut host) => {
                    match host.reap_orphans() {
                        Ok(removed) if !removed.is_empty() => info!(?removed, "removed what a previous agent left"),
                        Ok(_) => {}
                        Err(e) => warn!(error = %e, "cannot reap orphans"),
                    }
                    self.problem = None;
                    self.host = Some(host);
                }
                Err(e) => {
                    warn!(error = %e, "VM host unavailable");
                    self.problem = Some(e.to_string());
                    return Err(e);
                }
            }
        }
        self.host.as_mut().ok_or_else(|| VmError::Unknown("host".into()))
    }

    /// Runs `f` on the host; an unreachable libvirt drops the connection so
    /// the next job reconnects.
    fn with_host<T>(&mut self, f: impl FnOnce(&mut VmHost<Libvirt>) -> Result<T, VmError>) -> Result<T, RemoteError> {
        let result = self.host().and_then(f);
        if let Err(VmError::Hypervisor(HypervisorError::Unreachable { .. })) = &result {
            self.host = None;
        }
        result.map_err(|e| vm_error(&e))
    }

    /// Decides KVM or TCG once, holding a lock on the decision's file so
    /// PoPs sharing a host (and its cache file) probe only once.
    fn probe(&mut self, kernel: &Path) {
        let cache = self.config.accel_cache();
        let lock = cache.with_extension("lock");
        let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock);
        if let Ok(f) = &file {
            // SAFETY: flock on a descriptor we own; released when `file` drops.
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        }
        if let Some(host) = self.host.as_mut() {
            let d = host.accel(kernel);
            info!(accel = ?d.accel, reason = %d.reason, "acceleration for this PoP");
            self.accel = Some(d.accel);
        }
        drop(file);
    }

    fn run(&mut self, run: &PopRun) -> Result<PopStarted, RemoteError> {
        let mut spec = VmSpec::new(run.name.clone());
        spec.hostname = Some(run.hostname.clone());
        spec.cpus = run.cpus;
        spec.memory_mib = run.memory_mib;
        spec.swap_mib = run.swap_mib;
        spec.ssh_keys = run.ssh_keys.clone();
        for nic in &run.nics {
            let address = nic.address.parse().map_err(|e: crate::error::SpecError| vm_error(&e.into()))?;
            spec.nics.push(NicSpec { segment: nic.segment.clone(), address });
        }
        spec.write_file = run.user_file.as_ref().map(|f| SeedFile { name: f.name.clone(), content: f.content.clone() });
        let id = blake3::Hash::from_hex(&run.image.id)
            .map_err(|_| RemoteError::new(ErrorCode::InvalidArgument, format!("bad image id {:?}", run.image.id)))?;
        let source = NamespaceSource::new(
            self.client.clone(),
            self.handle.clone(),
            run.image.path.clone(),
            ImageId(id),
            self.fetched.clone(),
        );
        let report = self.with_host(|h| h.run(&spec, &source))?;
        let t = report.record.timings;
        self.accel = Some(report.record.accel);
        Ok(PopStarted {
            accel: accel_name(report.record.accel),
            timings: Timings {
                prepare: t.prepare,
                fetch: t.fetch,
                boot: t.boot,
                guest_boot: t.guest_boot,
                fetched_bytes: t.fetched_bytes,
                run_to_booted: t.prepare + t.boot,
            },
        })
    }

    fn save(&mut self, name: &str, dest: &str) -> Result<PopSaved, RemoteError> {
        let local = self.config.state_dir.join("saving").join(name);
        let _ = fs::remove_dir_all(&local);
        let result = self.with_host(|h| h.save(name, &local)).and_then(|manifest| {
            let id = manifest.id().map(|i| i.to_string()).unwrap_or_default();
            let size = manifest.total_size();
            let files = Role::ALL.iter().map(|r| (*r, local.join(r.as_str()))).collect();
            let image = LocalImage { manifest, files };
            self.handle
                .block_on(image.put(&self.client, dest, 0o755))
                .map_err(crate::manager::ns::remote)
                .map(|_| PopSaved { id, size })
        });
        let _ = fs::remove_dir_all(&local);
        if let Ok(saved) = &result {
            info!(vm = name, dest, id = %saved.id, "disk written back to the namespace");
        }
        result
    }

    fn publish(&mut self) {
        let mut snap = Snapshot {
            accel: self.accel.map(accel_name),
            problems: self.problem.iter().cloned().collect(),
            ..Snapshot::default()
        };
        if let Some(dir) = untraversable(&self.config.state_dir) {
            snap.problems.push(format!(
                "qemu cannot reach {}: {} is not traversable by others (chmod o+x it)",
                self.config.state_dir.display(),
                dir.display()
            ));
        }
        if let Some(host) = &self.host {
            snap.vms = host
                .list()
                .into_iter()
                .map(|r| VmView { name: r.spec.name.clone(), state: r.state.to_string(), console_log: r.console_log })
                .collect();
            snap.cached_images = host.cache().list().unwrap_or_default().iter().map(|i| i.to_string()).collect();
        }
        self.published.send_replace(Some(snap));
    }
}
