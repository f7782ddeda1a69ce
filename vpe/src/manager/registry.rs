//! The manager's VM registry and the decisions made over it, sans IO:
//! whose VM is whose, the user's limits, naming, static addresses and
//! placement. [`plan_run`] is a pure function of the registry, the user's
//! configuration and the PoPs' loads, so every refusal is unit-tested here.

use std::collections::BTreeMap;
use std::path::Path;

use fs_proto::vpe::{NicAddr, Timings, VmInfo, VmPhase};
use fs_proto::{ErrorCode, RemoteError};
use serde::{Deserialize, Serialize};

use crate::error::PlacementError;
use crate::manager::config::UserConfig;
use crate::placement::{check_limits, place, PopLoad, Strategy};
use crate::spec::{check_name, IpCidr};

/// One VM the manager placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmEntry {
    /// The user's name for it.
    pub name: String,
    /// Owner.
    pub owner: String,
    /// Its name on the PoP (unique in the federation).
    pub pop_name: String,
    /// Site.
    pub site: String,
    /// PoP.
    pub pop: String,
    /// State.
    pub phase: VmPhase,
    /// `NAME:GEN`.
    pub image: String,
    /// Content id (hex).
    pub image_id: String,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// NICs.
    pub nics: Vec<NicAddr>,
    /// `kvm` or `tcg`.
    pub accel: Option<String>,
    /// Boot timings.
    pub timings: Option<Timings>,
    /// When accepted (ms since the epoch).
    pub created_ms: u64,
}

impl VmEntry {
    /// The wire form.
    pub fn to_info(&self) -> VmInfo {
        VmInfo {
            name: self.name.clone(),
            owner: self.owner.clone(),
            pop_name: self.pop_name.clone(),
            site: self.site.clone(),
            pop: self.pop.clone(),
            phase: self.phase,
            image: self.image.clone(),
            image_id: self.image_id.clone(),
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            nics: self.nics.clone(),
            accel: self.accel.clone(),
            timings: self.timings,
            created_ms: self.created_ms,
        }
    }
}

/// Every VM the manager knows, by PoP name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// VMs by their PoP name.
    pub vms: BTreeMap<String, VmEntry>,
}

fn err(code: ErrorCode, msg: impl Into<String>) -> RemoteError {
    RemoteError::new(code, msg)
}

/// A PoP as placement sees it: its load and what it reports wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Name, site, VMs and capacity.
    pub load: PopLoad,
    /// Problems the agent reported (a PoP with problems is not chosen).
    pub problems: Vec<String>,
}

/// What a run asks for, after the template and defaults were applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAsk<'a> {
    /// The user.
    pub user: &'a str,
    /// Site.
    pub site: &'a str,
    /// The VM name asked for.
    pub name: Option<&'a str>,
    /// The image's name (for a default VM name).
    pub image_name: &'a str,
    /// Segments, in order.
    pub nets: &'a [String],
    /// A PoP asked for.
    pub pop: Option<&'a str>,
}

/// Where and as what a run goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPlan {
    /// The user's name for the VM.
    pub name: String,
    /// Its PoP name.
    pub pop_name: String,
    /// The chosen PoP.
    pub pop: String,
    /// NICs with the user's addresses.
    pub nics: Vec<NicAddr>,
}

/// The user-facing error of a placement refusal.
pub fn placement_error(e: PlacementError) -> RemoteError {
    let code = match e {
        PlacementError::SiteNotAllowed { .. } | PlacementError::TooManyVms { .. } => ErrorCode::PermissionDenied,
        PlacementError::NoCapacity(_) => ErrorCode::Unavailable,
    };
    err(code, e.to_string())
}

impl Registry {
    /// Loads `vms.json` (an absent file is an empty registry).
    pub fn load(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// After a restart: a VM left `Starting`, `Stopping` or `Saving` by the
    /// previous manager has no operation going on any more, and would
    /// refuse every later one as busy. It is `Lost` until its PoP's next
    /// report says whether it is there (then `Running`); `vpe stop` removes
    /// it either way. Returns the VMs changed.
    pub fn interrupted(&mut self) -> Vec<String> {
        let mut changed = Vec::new();
        for vm in self.vms.values_mut() {
            if matches!(vm.phase, VmPhase::Starting | VmPhase::Stopping | VmPhase::Saving) {
                vm.phase = VmPhase::Lost;
                changed.push(vm.pop_name.clone());
            }
        }
        changed
    }

    /// Writes `vms.json` atomically (temporary file, fsync, rename).
    pub fn store(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// The user's VMs, by name.
    pub fn of_user<'a>(&'a self, user: &'a str) -> impl Iterator<Item = &'a VmEntry> + 'a {
        self.vms.values().filter(move |v| v.owner == user)
    }

    /// The user's VM called `vm` (their name for it, or its PoP name).
    /// Other users' VMs are reported as absent.
    pub fn find(&self, user: &str, vm: &str) -> Result<&VmEntry, RemoteError> {
        self.vms
            .values()
            .find(|v| v.owner == user && (v.name == vm || v.pop_name == vm))
            .ok_or_else(|| err(ErrorCode::NotFound, format!("you have no VM named {vm} (see `vpe ls`)")))
    }

    /// Mutable [`Self::find`].
    pub fn find_mut(&mut self, user: &str, vm: &str) -> Result<&mut VmEntry, RemoteError> {
        let key = self.find(user, vm)?.pop_name.clone();
        self.vms.get_mut(&key).ok_or_else(|| err(ErrorCode::NotFound, vm.to_string()))
    }

    /// VMs on PoP `pop`.
    pub fn load_on(&self, pop: &str) -> u32 {
        self.vms.values().filter(|v| v.pop == pop).count() as u32
    }
}

/// Decides a run: limits, name, addresses, PoP. Nothing is changed; the
/// caller records the entry.
pub fn plan_run(
    reg: &Registry,
    ask: &RunAsk<'_>,
    user_cfg: Option<&UserConfig>,
    candidates: &[Candidate],
    strategy: Strategy,
    last: Option<&str>,
) -> Result<RunPlan, RemoteError> {
    let user = ask.user;
    let cfg = user_cfg.ok_or_else(|| {
        err(
            ErrorCode::PermissionDenied,
            format!("user {user} may not run VMs (no [users.{user}] in the manager's configuration)"),
        )
    })?;
    let running = reg.of_user(user).count() as u32;
    check_limits(user, &cfg.limits(), running, ask.site).map_err(placement_error)?;

    let name = match ask.name {
        Some(n) => n.to_string(),
        None => (1..=running + 1)
            .map(|i| format!("{}-{i}", ask.image_name))
            .find(|n| reg.of_user(user).all(|v| &v.name != n))
            .unwrap_or_else(|| format!("{}-{}", ask.image_name, running + 2)),
    };
    check_name("VM name", &name, 48).map_err(|e| err(ErrorCode::InvalidArgument, e.to_string()))?;
    if reg.of_user(user).any(|v| v.name == name) {
        return Err(err(ErrorCode::Exists, format!("you already have a VM named {name}")));
    }
    let pop_name = format!("{name}.{user}");
    check_name("VM name", &pop_name, 48).map_err(|_| {
        err(ErrorCode::NameTooLong, format!("VM name {name} with your user name ({pop_name}) is over 48 characters"))
    })?;
    if reg.vms.contains_key(&pop_name) {
        return Err(err(ErrorCode::Exists, format!("the name {pop_name} is taken; choose another --name")));
    }

    let nics = assign_addresses(reg, user, cfg, ask.nets)?;
    let pop = choose_pop(ask, candidates, strategy, last)?;
    Ok(RunPlan { name, pop_name, pop, nics })
}

/// The user's first free address on each segment, in order.
fn assign_addresses(
    reg: &Registry,
    user: &str,
    cfg: &UserConfig,
    nets: &[String],
) -> Result<Vec<NicAddr>, RemoteError> {
    let mut taken: Vec<(String, String)> =
        reg.of_user(user).flat_map(|v| v.nics.iter().map(|n| (n.segment.clone(), n.address.clone()))).collect();
    let mut nics = Vec::new();
    for segment in nets {
        check_name("segment", segment, 32).map_err(|e| err(ErrorCode::InvalidArgument, e.to_string()))?;
        let pool = cfg.addresses.get(segment).ok_or_else(|| {
            let known: Vec<&str> = cfg.addresses.keys().map(String::as_str).collect();
            err(
                ErrorCode::PermissionDenied,
                format!("user {user} has no address on segment {segment} (assigned segments: {})", known.join(", ")),
            )
        })?;
        let free = pool.iter().find(|a| !taken.iter().any(|(s, t)| s == segment && t == *a)).ok_or_else(|| {
            err(
                ErrorCode::PermissionDenied,
                format!("all {} of user {user}'s addresses on segment {segment} are in use by their VMs", pool.len()),
            )
        })?;
        free.parse::<IpCidr>()
            .map_err(|e| err(ErrorCode::Internal, format!("manager configuration, {user} on {segment}: {e}")))?;
        taken.push((segment.clone(), free.clone()));
        nics.push(NicAddr { segment: segment.clone(), address: free.clone() });
    }
    Ok(nics)
}

fn choose_pop(
    ask: &RunAsk<'_>,
    candidates: &[Candidate],
    strategy: Strategy,
    last: Option<&str>,
) -> Result<String, RemoteError> {
    let at_site: Vec<&Candidate> = candidates.iter().filter(|c| c.load.site == ask.site).collect();
    if at_site.is_empty() {
        return Err(err(ErrorCode::Unavailable, format!("site {} has no live PoP (see `vpe pops`)", ask.site)));
    }
    let healthy: Vec<PopLoad> = at_site.iter().filter(|c| c.problems.is_empty()).map(|c| c.load.clone()).collect();
    if healthy.is_empty() {
        let why: Vec<String> = at_site.iter().map(|c| format!("{}: {}", c.load.pop, c.problems.join("; "))).collect();
        return Err(err(
            ErrorCode::Unavailable,
            format!("no PoP of site {} can run VMs now ({})", ask.site, why.join(" | ")),
        ));
    }
    match ask.pop {
        Some(pop) => {
            let p = healthy.iter().find(|p| p.pop == pop).ok_or_else(|| {
                err(ErrorCode::NotFound, format!("site {} has no live, healthy PoP named {pop}", ask.site))
            })?;
            place(std::slice::from_ref(p), ask.site, strategy, None).map_err(placement_error)
        }
        None => place(&healthy, ask.site, strategy, last).map_err(placement_error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_cfg(max: u32, sites: Option<&[&str]>) -> UserConfig {
        UserConfig {
            allowed_sites: sites.map(|s| s.iter().map(|x| x.to_string()).collect()),
            max_vms: max,
            ssh_keys: vec![],
            addresses: [
                ("lab".to_string(), vec!["10.1.0.5/24".to_string(), "10.1.0.6/24".to_string()]),
                ("data".to_string(), vec!["10.2.0.5/16".to_string()]),
            ]
            .into(),
        }
    }

    fn cand(pop: &str, site: &str, vms: u32) -> Candidate {
        Candidate { load: PopLoad { pop: pop.into(), site: site.into(), vms, max_vms: 4 }, problems: vec![] }
    }

    fn ask<'a>(user: &'a str, site: &'a str, nets: &'a [String]) -> RunAsk<'a> {
        RunAsk { user, site, name: None, image_name: "deb", nets, pop: None }
    }

    fn record(reg: &mut Registry, plan: &RunPlan, user: &str, site: &str) {
        reg.vms.insert(
            plan.pop_name.clone(),
            VmEntry {
                name: plan.name.clone(),
                owner: user.into(),
                pop_name: plan.pop_name.clone(),
                site: site.into(),
                pop: plan.pop.clone(),
                phase: VmPhase::Running,
                image: "deb:1".into(),
                image_id: "00".into(),
                cpus: 1,
                memory_mib: 256,
                nics: plan.nics.clone(),
                accel: None,
                timings: None,
                created_ms: 0,
            },
        );
    }

    #[test]
    fn names_addresses_and_limits() {
        let mut reg = Registry::default();
        let cfg = user_cfg(2, Some(&["A"]));
        let pops = [cand("a1", "A", 0)];
        let nets = vec!["lab".to_string(), "data".to_string()];
        let p1 = plan_run(&reg, &ask("alice", "A", &nets), Some(&cfg), &pops, Strategy::LeastLoaded, None).unwrap();
        assert_eq!((p1.name.as_str(), p1.pop_name.as_str()), ("deb-1", "deb-1.alice"));
        assert_eq!(p1.nics[0], NicAddr { segment: "lab".into(), address: "10.1.0.5/24".into() });
        assert_eq!(p1.nics[1].address, "10.2.0.5/16");
        record(&mut reg, &p1, "alice", "A");
        // The data address is held by deb-1: a second VM on data is refused, on lab it gets the next one.
        let e = plan_run(&reg, &ask("alice", "A", &nets), Some(&cfg), &pops, Strategy::LeastLoaded, None).unwrap_err();
        assert!(e.message.contains("addresses on segment data are in use"), "{e}");
        let lab = vec!["lab".to_string()];
        let p2 = plan_run(&reg, &ask("alice", "A", &lab), Some(&cfg), &pops, Strategy::LeastLoaded, None).unwrap();
        assert_eq!((p2.name.as_str(), p2.nics[0].address.as_str()), ("deb-2", "10.1.0.6/24"));
        record(&mut reg, &p2, "alice", "A");
        // Over the VM count and at a forbidden site: clear refusals.
        let e = plan_run(&reg, &ask("alice", "A", &[]), Some(&cfg), &pops, Strategy::LeastLoaded, None).unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionDenied);
        assert!(e.message.contains("already runs 2 VMs, the limit is 2"), "{e}");
        let e = plan_run(
            &Registry::default(),
            &ask("alice", "B", &[]),
            Some(&cfg),
            &[cand("b1", "B", 0)],
            Strategy::LeastLoaded,
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("may not run VMs at site B"), "{e}");
        // Unknown users and unassigned segments.
        let e = plan_run(&reg, &ask("bob", "A", &[]), None, &pops, Strategy::LeastLoaded, None).unwrap_err();
        assert!(e.message.contains("user bob may not run VMs"), "{e}");
        let other = vec!["dmz".to_string()];
        let e =
            plan_run(&Registry::default(), &ask("alice", "A", &other), Some(&cfg), &pops, Strategy::LeastLoaded, None)
                .unwrap_err();
        assert!(e.message.contains("no address on segment dmz"), "{e}");
    }

    #[test]
    fn names_are_per_user_and_lookups_never_cross_users() {
        let mut reg = Registry::default();
        let cfg = user_cfg(4, None);
        let pops = [cand("a1", "A", 0)];
        let mut a = ask("alice", "A", &[]);
        a.name = Some("web");
        let pa = plan_run(&reg, &a, Some(&cfg), &pops, Strategy::LeastLoaded, None).unwrap();
        record(&mut reg, &pa, "alice", "A");
        assert_eq!(
            plan_run(&reg, &a, Some(&cfg), &pops, Strategy::LeastLoaded, None).unwrap_err().code,
            ErrorCode::Exists
        );
        let mut b = ask("bob", "A", &[]);
        b.name = Some("web");
        let pb = plan_run(&reg, &b, Some(&cfg), &pops, Strategy::LeastLoaded, None).unwrap();
        assert_eq!(pb.pop_name, "web.bob");
        record(&mut reg, &pb, "bob", "A");
        assert_eq!(reg.find("alice", "web").unwrap().pop_name, "web.alice");
        assert_eq!(reg.find("alice", "web.alice").unwrap().owner, "alice");
        assert_eq!(reg.find("bob", "web.alice").unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(reg.of_user("bob").count(), 1);
        let mut long = ask("alice", "A", &[]);
        let name = "x".repeat(45);
        long.name = Some(&name);
        assert_eq!(
            plan_run(&reg, &long, Some(&cfg), &pops, Strategy::LeastLoaded, None).unwrap_err().code,
            ErrorCode::NameTooLong
        );
    }

    #[test]
    fn placement_skips_unhealthy_pops_and_honours_a_pinned_pop() {
        let reg = Registry::default();
        let cfg = user_cfg(4, None);
        let mut sick = cand("a1", "A", 0);
        sick.problems.push("cannot connect to libvirt".into());
        let pops = [sick.clone(), cand("a2", "A", 3)];
        let p = plan_run(&reg, &ask("alice", "A", &[]), Some(&cfg), &pops, Strategy::LeastLoaded, None).unwrap();
        assert_eq!(p.pop, "a2", "the sick PoP is idle but must not be chosen");
        let e = plan_run(&reg, &ask("alice", "A", &[]), Some(&cfg), &[sick], Strategy::LeastLoaded, None).unwrap_err();
        assert!(e.message.contains("cannot connect to libvirt"), "{e}");
        let e = plan_run(&reg, &ask("alice", "Z", &[]), Some(&cfg), &pops, Strategy::LeastLoaded, None).unwrap_err();
        assert!(e.message.contains("site Z has no live PoP"), "{e}");
        let pops = [cand("a1", "A", 0), cand("a2", "A", 3)];
        let mut pinned = ask("alice", "A", &[]);
        pinned.pop = Some("a2");
        assert_eq!(plan_run(&reg, &pinned, Some(&cfg), &pops, Strategy::LeastLoaded, None).unwrap().pop, "a2");
        pinned.pop = Some("b9");
        assert!(plan_run(&reg, &pinned, Some(&cfg), &pops, Strategy::LeastLoaded, None).is_err());
    }

    #[test]
    fn registry_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vms.json");
        assert_eq!(Registry::load(&path).unwrap(), Registry::default());
        let mut reg = Registry::default();
        let plan = RunPlan { name: "w".into(), pop_name: "w.a".into(), pop: "p".into(), nics: vec![] };
        record(&mut reg, &plan, "a", "S");
        reg.store(&path).unwrap();
        assert_eq!(Registry::load(&path).unwrap(), reg);
        assert_eq!(reg.load_on("p"), 1);
    }

    #[test]
    fn a_restart_turns_interrupted_operations_into_lost_vms() {
        let mut reg = Registry::default();
        let plan =
            |name: &str| RunPlan { name: name.into(), pop_name: format!("{name}.a"), pop: "p".into(), nics: vec![] };
        for (name, phase) in [
            ("s", VmPhase::Starting),
            ("r", VmPhase::Running),
            ("v", VmPhase::Saving),
            ("x", VmPhase::Stopping),
            ("l", VmPhase::Lost),
        ] {
            record(&mut reg, &plan(name), "a", "S");
            reg.vms.get_mut(&format!("{name}.a")).unwrap().phase = phase;
        }
        let mut changed = reg.interrupted();
        changed.sort();
        assert_eq!(changed, ["s.a", "v.a", "x.a"]);
        let phase = |n: &str| reg.vms[n].phase;
        assert_eq!((phase("s.a"), phase("v.a"), phase("x.a")), (VmPhase::Lost, VmPhase::Lost, VmPhase::Lost));
        assert_eq!((phase("r.a"), phase("l.a")), (VmPhase::Running, VmPhase::Lost));
        assert!(reg.interrupted().is_empty(), "a second restart changes nothing");
    }
}
