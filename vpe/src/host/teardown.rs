//! Tearing a VM down: after a failure, on `stop`, and after an agent crash.
//!
//! Every teardown step is attempted even if an earlier one failed, and each
//! is idempotent (an absent domain, directory or network is fine), so a
//! failed stop can simply be retried.

use std::fs;
use std::time::Instant;

use tracing::{info, warn};

use super::VmHost;
use crate::domain::domain_name;
use crate::error::VmError;
use crate::hypervisor::Hypervisor;
use crate::lifecycle::{Action, Event, Lifecycle};
use crate::network::{in_scope, network_name, SegmentBacking};
use crate::spec::VmSpec;

impl<H: Hypervisor> VmHost<H> {
    /// Records a failure, performs its cleanup, and returns the original error.
    pub(super) fn fail(&mut self, spec: &VmSpec, lifecycle: &mut Lifecycle, error: VmError) -> VmError {
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
                self.hv.remove_network(&network_name(&self.config.scope, &nic.segment))?;
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

    /// Removes what a crashed agent may have left: renkei domains whose
    /// files are in this PoP's state directory and VM directories without a
    /// record, and this PoP's segment networks no VM uses. Domains and
    /// networks of other PoPs sharing the same libvirtd are left alone.
    /// Returns what was removed.
    pub fn reap_orphans(&mut self) -> Result<Vec<String>, VmError> {
        let mut removed = Vec::new();
        let vms_dir = self.config.vms_dir();
        for domain in self.hv.list()? {
            let known = self.vms.keys().any(|name| domain_name(name) == domain);
            let ours = || self.hv.console_log(&domain).ok().flatten().is_some_and(|log| log.starts_with(&vms_dir));
            if !known && ours() {
                self.hv.destroy(&domain)?;
                removed.push(domain);
            }
        }
        for entry in fs::read_dir(&vms_dir).map_err(VmError::io(&vms_dir))? {
            let entry = entry.map_err(VmError::io(&vms_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !self.vms.contains_key(&name) {
                fs::remove_dir_all(entry.path()).map_err(VmError::io(&entry.path()))?;
                removed.push(entry.path().display().to_string());
            }
        }
        let scope = &self.config.scope;
        for network in self.hv.list_networks()?.into_iter().filter(|n| in_scope(scope, n)) {
            let used = self
                .vms
                .values()
                .any(|vm| vm.record.spec.nics.iter().any(|n| network_name(scope, &n.segment) == network));
            if !used {
                self.hv.remove_network(&network)?;
                removed.push(network);
            }
        }
        Ok(removed)
    }
}
