//! The manager's VM requests: run, stop, save, console, and reconciling
//! the registry with what agents report.

use std::time::{Duration, Instant};

use fs_proto::vpe::{ImageLocation, PopRequest, PopResponse, PopRun, RunRequest, Template, VmPhase, VpeResponse};
use fs_proto::{ErrorCode, RemoteError};
use tracing::{info, warn};

use super::registry::{plan_run, Registry, RunAsk, VmEntry};
use super::{now_ms, Manager, PopCallError, R};
use crate::store::catalog::{self, GenRecord, ImageRef};
use crate::store::layout;

/// Marks Running VMs of `pop` that it no longer reports as Lost, and Lost
/// ones it reports again as Running. Returns whether anything changed.
pub(super) fn reconcile(reg: &mut Registry, pop: &str, reported: &[String]) -> bool {
    let mut changed = false;
    for vm in reg.vms.values_mut().filter(|v| v.pop == pop) {
        let present = reported.contains(&vm.pop_name);
        let next = match (vm.phase, present) {
            (VmPhase::Running, false) => VmPhase::Lost,
            (VmPhase::Lost, true) => VmPhase::Running,
            (phase, _) => phase,
        };
        if next != vm.phase {
            warn!(vm = %vm.pop_name, pop, from = %vm.phase, to = %next, "VM state changed by its PoP's report");
            vm.phase = next;
            changed = true;
        }
    }
    changed
}

fn busy(vm: &VmEntry) -> RemoteError {
    RemoteError::new(ErrorCode::Busy, format!("VM {} is {} (try again when it is Running)", vm.name, vm.phase))
}

/// A run with the template's settings under the request's.
fn merged(req: RunRequest, template: Option<Template>) -> RunRequest {
    let Some(t) = template else { return req };
    RunRequest {
        site: req.site.or(t.site),
        image: req.image.or(t.image),
        cpus: req.cpus.or(t.cpus),
        memory_mib: req.memory_mib.or(t.memory_mib),
        nets: if req.nets.is_empty() { t.nets } else { req.nets },
        ..req
    }
}

impl Manager {
    /// The generation `image` names, if `user` may see it.
    pub(super) async fn resolve_image(&self, user: &str, image: &str) -> R<(ImageRef, GenRecord)> {
        let r = ImageRef::parse(image)?;
        let record = self
            .load_image(&r.name)
            .await?
            .filter(|rec| rec.visible_to(user))
            .ok_or_else(|| catalog::not_found(&r.name))?;
        let gen = record.resolve(&r.selector)?.clone();
        Ok((r, gen))
    }

    pub(super) async fn run_vm(&self, user: &str, req: RunRequest) -> R<VpeResponse> {
        let accepted = Instant::now();
        let template = match &req.template {
            Some(t) => Some(self.load_template(user, t).await?),
            None => None,
        };
        let req = merged(req, template);
        let site = req.site.clone().ok_or_else(|| {
            RemoteError::new(ErrorCode::InvalidArgument, "vpe run needs --site (or a template that names one)")
        })?;
        let image = req.image.clone().ok_or_else(|| {
            RemoteError::new(ErrorCode::InvalidArgument, "vpe run needs --image (or a template that names one)")
        })?;
        let cpus = req.cpus.unwrap_or(self.config.default_cpus);
        let memory_mib = req.memory_mib.unwrap_or(self.config.default_memory_mib);
        if cpus == 0 || cpus > self.config.max_cpus || memory_mib < 64 || memory_mib > self.config.max_memory_mib {
            return Err(RemoteError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "asked for {cpus} CPUs and {memory_mib} MiB; a VM may have 1-{} CPUs and 64-{} MiB",
                    self.config.max_cpus, self.config.max_memory_mib
                ),
            ));
        }
        let (iref, gen) = self.resolve_image(user, &image).await?;
        let user_cfg = self.config.user(user);
        let mut ssh_keys = user_cfg.map(|c| c.ssh_keys.clone()).unwrap_or_default();
        ssh_keys.extend(req.ssh_keys.iter().cloned());

        // Decide and record under the lock, so concurrent runs count each other.
        let entry = {
            let mut s = self.lock();
            let candidates = s.agents.candidates(&s.registry, self.config.agent_timeout(), Instant::now());
            let ask = RunAsk {
                user,
                site: &site,
                name: req.name.as_deref(),
                image_name: &iref.name,
                nets: &req.nets,
                pop: req.pop.as_deref(),
            };
            let last = s.last_pick.get(&site).cloned();
            let plan = plan_run(&s.registry, &ask, user_cfg, &candidates, self.config.strategy, last.as_deref())?;
            s.last_pick.insert(site.clone(), plan.pop.clone());
            let entry = VmEntry {
                name: plan.name,
                owner: user.to_string(),
                pop_name: plan.pop_name,
                site: site.clone(),
                pop: plan.pop,
                phase: VmPhase::Starting,
                image: format!("{}:{}", iref.name, gen.gen),
                image_id: gen.id.clone(),
                cpus,
                memory_mib,
                nics: plan.nics,
                accel: None,
                timings: None,
                created_ms: now_ms(),
            };
            s.registry.vms.insert(entry.pop_name.clone(), entry.clone());
            self.persist(&s);
            entry
        };
        info!(vm = %entry.pop_name, pop = %entry.pop, image = %entry.image, "placed");
        let run = PopRun {
            name: entry.pop_name.clone(),
            hostname: entry.name.clone(),
            cpus,
            memory_mib,
            swap_mib: self.config.swap_mib,
            nics: entry.nics.clone(),
            ssh_keys,
            user_file: req.user_file.clone(),
            image: ImageLocation { path: layout::generation_dir(&iref.name, gen.gen), id: gen.id.clone() },
        };
        let timeout = Duration::from_secs(self.config.run_timeout_secs);
        let answer = self.call_pop(&entry.pop, &PopRequest::Run(run), timeout).await;
        fs_proto::process::crash_point("vpe.manager.run.answered");
        let mut s = self.lock();
        let result = match answer {
            Ok(PopResponse::Started(started)) => {
                let mut timings = started.timings;
                timings.run_to_booted = accepted.elapsed();
                match s.registry.vms.get_mut(&entry.pop_name) {
                    Some(vm) => {
                        vm.phase = VmPhase::Running;
                        vm.accel = Some(started.accel);
                        vm.timings = Some(timings);
                        Ok(VpeResponse::Vm(vm.to_info()))
                    }
                    None => Err(RemoteError::new(ErrorCode::Internal, "VM vanished from the registry while booting")),
                }
            }
            Ok(other) => {
                s.registry.vms.remove(&entry.pop_name);
                Err(RemoteError::new(ErrorCode::Internal, format!("PoP {} answered {other:?}", entry.pop)))
            }
            Err(PopCallError::Refused(e)) => {
                // The agent cleaned up after the failure: nothing is left anywhere.
                s.registry.vms.remove(&entry.pop_name);
                Err(e)
            }
            Err(PopCallError::Unreachable(e)) => {
                if let Some(vm) = s.registry.vms.get_mut(&entry.pop_name) {
                    vm.phase = VmPhase::Lost;
                }
                Err(RemoteError::new(
                    e.code,
                    format!("{}; VM {} may exist there: `vpe stop {}` removes it", e.message, entry.name, entry.name),
                ))
            }
        };
        self.persist(&s);
        result
    }

    pub(super) async fn stop_vm(&self, user: &str, vm: &str) -> R<VpeResponse> {
        let (entry, before) = {
            let mut s = self.lock();
            let e = s.registry.find_mut(user, vm)?;
            if matches!(e.phase, VmPhase::Starting | VmPhase::Saving | VmPhase::Stopping) {
                return Err(busy(e));
            }
            let before = e.phase;
            e.phase = VmPhase::Stopping;
            (e.clone(), before)
        };
        let answer = self
            .call_pop(&entry.pop, &PopRequest::Stop { name: entry.pop_name.clone() }, Duration::from_secs(120))
            .await;
        let mut s = self.lock();
        let result = match answer {
            Ok(_) => Ok(()),
            // The PoP no longer has it (restarted without it): nothing to remove there.
            Err(PopCallError::Refused(e)) if e.code == ErrorCode::NotFound => Ok(()),
            Err(e) => Err(e.into_remote()),
        };
        match &result {
            Ok(()) => {
                s.registry.vms.remove(&entry.pop_name);
                s.agents.forget_vm(&entry.pop, &entry.pop_name);
                info!(vm = %entry.pop_name, pop = %entry.pop, "stopped");
            }
            Err(_) => {
                if let Some(v) = s.registry.vms.get_mut(&entry.pop_name) {
                    v.phase = before;
                }
            }
        }
        self.persist(&s);
        result.map(|()| VpeResponse::Done)
    }

    pub(super) async fn console(&self, user: &str, vm: &str, max_bytes: u64) -> R<VpeResponse> {
        let entry = self.lock().registry.find(user, vm)?.clone();
        let req = PopRequest::Console { name: entry.pop_name.clone(), max_bytes: max_bytes.min(8 << 20) };
        match self.call_pop(&entry.pop, &req, Duration::from_secs(30)).await.map_err(PopCallError::into_remote)? {
            PopResponse::Console(text) => Ok(VpeResponse::Console(text)),
            other => Err(RemoteError::new(ErrorCode::Internal, format!("PoP answered {other:?}"))),
        }
    }

    pub(super) async fn save_vm(&self, user: &str, vm: &str, as_name: Option<String>) -> R<VpeResponse> {
        let entry = {
            let mut s = self.lock();
            let e = s.registry.find_mut(user, vm)?;
            if e.phase != VmPhase::Running {
                return Err(busy(e));
            }
            e.phase = VmPhase::Saving;
            e.clone()
        };
        let result = self.save_locked(user, &entry, as_name).await;
        let mut s = self.lock();
        if let Some(v) = s.registry.vms.get_mut(&entry.pop_name) {
            if v.phase == VmPhase::Saving {
                v.phase = VmPhase::Running;
            }
        }
        self.persist(&s);
        result
    }

    async fn save_locked(&self, user: &str, entry: &VmEntry, as_name: Option<String>) -> R<VpeResponse> {
        self.ensure_layout().await?;
        let _records = self.records.lock().await;
        let source = ImageRef::parse(&entry.image)?;
        let name = as_name.unwrap_or(source.name);
        catalog::check("image name", &name)?;
        let mut record = match self.load_image(&name).await? {
            Some(r) => {
                r.check_owner(user).map_err(|e| {
                    RemoteError::new(e.code, format!("{}; save with --as NAME to make an image of your own", e.message))
                })?;
                r
            }
            None => catalog::ImageRecord::new(&name, user, false),
        };
        let gen = record.next_gen();
        let dest = layout::generation_dir(&name, gen);
        self.ns.mkdir_p(&layout::image_dir(&name), if record.shared { 0o755 } else { 0o700 }).await?;
        let req = PopRequest::Save { name: entry.pop_name.clone(), dest: dest.clone() };
        let answer = self.call_pop(&entry.pop, &req, Duration::from_secs(self.config.save_timeout_secs)).await;
        let saved = match answer {
            Ok(PopResponse::Saved(s)) => s,
            Ok(other) => return Err(RemoteError::new(ErrorCode::Internal, format!("PoP answered {other:?}"))),
            Err(e) => {
                let _ = self.ns.remove_tree(&dest).await;
                return Err(e.into_remote());
            }
        };
        let size = match self.seal_generation(&dest, Some(&saved.id)).await {
            Ok((_, size)) => size,
            Err(e) => {
                let _ = self.ns.remove_tree(&dest).await;
                return Err(e);
            }
        };
        record.add(GenRecord {
            gen,
            id: saved.id,
            size,
            created_ms: now_ms(),
            origin: format!("saved from VM {} ({})", entry.name, entry.image),
        });
        self.store_image(&record).await?;
        info!(vm = %entry.pop_name, image = %name, gen, "disk saved as a new generation");
        Ok(VpeResponse::Image(record.to_info()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, pop: &str, phase: VmPhase) -> VmEntry {
        VmEntry {
            name: name.into(),
            owner: "a".into(),
            pop_name: format!("{name}.a"),
            site: "S".into(),
            pop: pop.into(),
            phase,
            image: "i:1".into(),
            image_id: String::new(),
            cpus: 1,
            memory_mib: 256,
            nics: vec![],
            accel: None,
            timings: None,
            created_ms: 0,
        }
    }

    #[test]
    fn reports_mark_vanished_vms_lost_and_returning_ones_running() {
        let mut reg = Registry::default();
        for e in [
            entry("r", "p1", VmPhase::Running),
            entry("s", "p1", VmPhase::Starting),
            entry("o", "p2", VmPhase::Running),
        ] {
            reg.vms.insert(e.pop_name.clone(), e);
        }
        assert!(reconcile(&mut reg, "p1", &[]));
        assert_eq!(reg.vms["r.a"].phase, VmPhase::Lost);
        assert_eq!(reg.vms["s.a"].phase, VmPhase::Starting, "a VM being started is not judged by reports");
        assert_eq!(reg.vms["o.a"].phase, VmPhase::Running, "another PoP's report does not count");
        assert!(reconcile(&mut reg, "p1", &["r.a".into()]));
        assert_eq!(reg.vms["r.a"].phase, VmPhase::Running);
        assert!(!reconcile(&mut reg, "p1", &["r.a".into()]));
    }

    #[test]
    fn request_settings_override_the_template() {
        let t = Template {
            name: "t".into(),
            owner: "a".into(),
            shared: true,
            site: Some("S".into()),
            image: Some("deb:2".into()),
            cpus: Some(2),
            memory_mib: Some(512),
            nets: vec!["lab".into()],
        };
        let req = RunRequest { cpus: Some(1), ..RunRequest::default() };
        let m = merged(req, Some(t.clone()));
        assert_eq!(
            (m.site.as_deref(), m.image.as_deref(), m.cpus, m.memory_mib),
            (Some("S"), Some("deb:2"), Some(1), Some(512))
        );
        assert_eq!(m.nets, vec!["lab".to_string()]);
        let req = RunRequest { nets: vec!["data".into()], ..RunRequest::default() };
        assert_eq!(merged(req, Some(t)).nets, vec!["data".to_string()]);
    }
}
